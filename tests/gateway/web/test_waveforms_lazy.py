"""Lazy thinning: a bed nobody views costs a queued chunk, not per-sample work, and what a
viewer then gets equals what a viewer polling all along got (cursors, gaps, samples)."""

from __future__ import annotations

import numpy as np

from drivers.codes import ECG_LEAD_II, MILLIVOLT, PERCENT, PLETH
from drivers.readings import Waveform
from gateway.web.waveforms import LAZY_MARGIN_S, WaveformBuffer

BED_OF = {"ecg-1": "bed-1", "ox-1": "bed-1"}.get


def ward_stream(seconds: int) -> list[Waveform]:
    """ECG at 500 Hz (thinned by 4) and pleth at 75 Hz in 0.1 s chunks, noise with spikes,
    two sequence gaps and a NaN."""
    rng = np.random.default_rng(7)
    chunks = []
    ecg_seq = ox_seq = 0
    for i in range(seconds * 10):
        t = i / 10
        if i in (33, 34, 401):
            ecg_seq += 17  # samples the device lost
        ecg = rng.standard_normal(50)
        ecg[i % 50] += 5.0
        if i == 250:
            ecg[7] = np.nan
        chunks.append(Waveform("ecg-1", ECG_LEAD_II, MILLIVOLT, 500.0, t, ecg, sequence=ecg_seq))
        ecg_seq += 50
        if i == 120:
            ox_seq += 3
        pleth = rng.standard_normal(8) + 50.0
        chunks.append(Waveform("ox-1", PLETH, PERCENT, 75.0, t, pleth, sequence=ox_seq))
        ox_seq += 8
    return chunks


def test_an_unviewed_bed_then_viewed_gets_what_a_constant_viewer_got() -> None:
    watched = WaveformBuffer(BED_OF, seconds=4.0)
    unwatched = WaveformBuffer(BED_OF, seconds=4.0)
    for chunk in ward_stream(60):
        watched.add(chunk)
        watched.recent("bed-1")  # the page polls after every chunk
        unwatched.add(chunk)
    # Far more than window + margin went by unviewed: the oldest chunks were only counted.
    queue, _ = unwatched._queued["bed-1"][ECG_LEAD_II.refid]
    assert sum(len(w.samples) for w in queue) < 60 * 500 / 2
    assert unwatched.recent("bed-1") == watched.recent("bed-1")
    cursors = {ECG_LEAD_II.refid: 7000, PLETH.refid: 4700}
    assert unwatched.recent("bed-1", cursors) == watched.recent("bed-1", cursors)


def test_the_queue_of_an_unviewed_bed_stays_bounded() -> None:
    buffer = WaveformBuffer(BED_OF, seconds=4.0)
    stream = ward_stream(60)
    for chunk in stream:
        buffer.add(chunk)
    queued = {
        code: sum(len(w.samples) for w in queue)
        for code, (queue, _) in buffer._queued["bed-1"].items()
    }
    assert queued[ECG_LEAD_II.refid] <= (4.0 + LAZY_MARGIN_S) * 500.0
    assert queued[PLETH.refid] <= (4.0 + LAZY_MARGIN_S) * 75.0 + 8
    (ecg, pleth) = buffer.recent("bed-1")["channels"]
    # Cursors count every kept sample since the start, gaps included: a gap breaks the
    # trace (one null) and drops the partial group before it. ECG runs between its gaps
    # are 33, 1, 367 and 199 chunks of 50 samples, thinned by 4.
    ecg_end = sum(chunks * 50 // 4 for chunks in (33, 1, 367, 199)) + 3
    assert ecg["end"] == ecg_end and pleth["end"] == 60 * 10 * 8 + 1
