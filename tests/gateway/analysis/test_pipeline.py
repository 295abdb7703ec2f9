"""The whole streaming pipeline (beats + quality + rhythm) on synthetic and real ECG."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulate.ecg_synth import EcgSynth, Segment
from gateway.analysis.pipeline import EcgPipeline, PipelineOutput
from gateway.analysis.vocabulary import RhythmEvent
from tests.support.ecg_data import load, needs_data, reference_episodes


def play(
    script: list[Segment], fs: float = 250.0, chunk_s: float = 0.25, seed: int = 7
) -> tuple[list[PipelineOutput], list[RhythmEvent], EcgSynth]:
    synth = EcgSynth(script, fs, seed=seed)
    pipeline = EcgPipeline(fs)
    n = round(chunk_s * fs)
    outs = [
        pipeline.feed(synth.read(n))
        for _ in range(round(sum(s.duration for s in script) / (n / fs)))
    ]
    events = [e for o in outs for e in o.events] + pipeline.close()
    return outs, events, synth


def episodes(events: list[RhythmEvent], kind: str) -> list[tuple[float, float | None]]:
    return [(e.onset, e.end) for e in events if e.kind == kind and e.end is not None]


@pytest.mark.parametrize("fs", [125.0, 360.0, 1000.0])
def test_sinus_beats_and_heart_rate(fs: float) -> None:
    outs, events, synth = play([Segment("sinus", 40.0, rate=66.0)], fs)
    beats = [b for o in outs for b in o.beats]
    truth = synth.truth.beats
    assert abs(len(beats) - len(truth)) <= 2
    rates = [o.heart_rate for o in outs[80:] if o.heart_rate is not None]
    assert np.median(rates) == pytest.approx(66.0, abs=2.0)
    assert all(o.quality > 0.5 and o.analysable for o in outs[8:])
    assert not [e for e in events if e.kind != "noise"]


def test_asystole_alarm_within_five_seconds_of_the_last_beat() -> None:
    _, events, synth = play(
        [Segment("sinus", 30.0), Segment("asystole", 12.0), Segment("sinus", 10.0)]
    )
    last = max(b.time for b in synth.truth.beats if b.time < 30.0)
    ((onset, end),) = episodes(events, "asystole")
    assert onset - last <= 5.0
    assert end is not None and 42.0 <= end <= 43.5
    assert not episodes(events, "vf")


def test_vf_alarm_delay_and_no_asystole() -> None:
    _, events, _ = play([Segment("sinus", 30.0), Segment("vf", 30.0), Segment("sinus", 20.0)])
    vf = episodes(events, "vf")
    assert vf and 30.0 < vf[0][0] <= 35.0
    assert not episodes(events, "asystole")


def test_lead_off_and_noise_are_technical_not_arrhythmia() -> None:
    script = [
        Segment("sinus", 20.0),
        Segment("lead_off", 20.0, rail_mV=0.0),
        Segment("sinus", 20.0),
        Segment("lead_off", 10.0, rail_mV=6.0),
        Segment("sinus", 20.0),
        Segment("noise", 20.0),
        Segment("sinus", 20.0),
    ]
    outs, events, _ = play(script)
    assert len(episodes(events, "noise")) == 3
    assert {e.kind for e in events} == {"noise"}
    assert all(o.heart_rate is None for o in outs[4 * 24 : 4 * 40])


def test_chunk_size_does_not_change_the_result() -> None:
    script = [Segment("sinus", 20.0, pvc_every=4), Segment("asystole", 8.0), Segment("sinus", 10.0)]
    fs = 250.0
    x = EcgSynth(script, fs, seed=3).read(round(38 * fs))
    results = []
    for n in (62, 10):
        pipeline = EcgPipeline(fs)
        outs = [pipeline.feed(x[i : i + n]) for i in range(0, len(x), n)]
        events = [e for o in outs for e in o.events]
        results.append(([b.sample for o in outs for b in o.beats], events))
    (beats_a, ev_a), (beats_b, ev_b) = results
    assert beats_a == beats_b
    # Episode times move by at most one chunk: decisions are made at chunk ends.
    assert [e.kind for e in ev_a] == [e.kind for e in ev_b]
    for u, v in zip(ev_a, ev_b, strict=True):
        assert abs(u.onset - v.onset) <= 0.25


def test_reset_closes_open_episodes() -> None:
    synth = EcgSynth([Segment("sinus", 10.0), Segment("asystole", 20.0)], 250.0, seed=1)
    pipeline = EcgPipeline(250.0)
    for _ in range(4 * 20):
        pipeline.feed(synth.read(round(0.25 * 250)))
    closed = pipeline.reset()
    assert [e.kind for e in closed] == ["pause", "asystole"] or {e.kind for e in closed} == {
        "pause",
        "asystole",
    }
    assert pipeline.samples_fed == 0


@needs_data
def test_real_vf_through_the_whole_pipeline() -> None:
    x, fs = load("vfdb", "418")
    pipeline = EcgPipeline(fs, mains_hz=60.0)
    n = round(0.25 * fs)
    start, stop = round(380 * fs), round(420 * fs)
    events = []
    for i in range(start, stop, n):
        events += pipeline.feed(x[i : i + n]).events
    events += pipeline.close()
    refs = [
        (a, b)
        for k, a, b in reference_episodes("vfdb", "418")
        if k == "VFL" and a > 380 and b < 420
    ]
    assert refs
    vf = [(380 + e.onset, 380 + e.end) for e in events if e.kind == "vf" and e.end is not None]
    for onset, end in refs:
        hits = [a for a, b in vf if a < end and b > onset]
        assert hits and min(hits) <= onset + 5.0
