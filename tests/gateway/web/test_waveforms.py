"""The page's waveform buffer: thinning, cursors, gaps; and its endpoint over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
from aiohttp import ClientSession

from drivers.clock import ManualClock
from drivers.codes import ECG_LEAD_II, MILLIVOLT, PERCENT, PLETH
from drivers.readings import Waveform
from gateway.twin.state import BedSpec, Twin
from gateway.web.server import WebServer
from gateway.web.waveforms import WaveformBuffer

BED_OF = {"ecg-1": "bed-1", "ox-1": "bed-1"}


def ecg(samples: np.ndarray, sequence: int = 0, t: float = 100.0) -> Waveform:
    return Waveform("ecg-1", ECG_LEAD_II, MILLIVOLT, 250.0, t, samples, sequence=sequence)


def test_a_fast_channel_is_thinned_and_keeps_its_spikes() -> None:
    buffer = WaveformBuffer(BED_OF.get, max_rate=125.0, seconds=4.0)
    samples = np.zeros(500)
    samples[101] = 1.5  # a one-sample spike: plain decimation by 2 would step over it
    buffer.add(ecg(samples))
    (channel,) = buffer.recent("bed-1")["channels"]
    assert channel["code"] == ECG_LEAD_II.refid and channel["unit"] == "mV"
    assert channel["rate"] == 125.0
    assert len(channel["samples"]) == 250 and channel["end"] == 250
    assert max(channel["samples"]) == 1.5
    assert channel["end_time"] == 102.0


def test_a_cursor_returns_only_newer_samples_and_old_ones_roll_off() -> None:
    buffer = WaveformBuffer(BED_OF.get, max_rate=125.0, seconds=2.0)
    buffer.add(Waveform("ox-1", PLETH, PERCENT, 75.0, 0.0, np.arange(75.0)))
    first = buffer.recent("bed-1")["channels"][0]
    assert first["rate"] == 75.0 and first["samples"] == list(np.arange(75.0))
    buffer.add(Waveform("ox-1", PLETH, PERCENT, 75.0, 1.0, np.arange(75.0, 150.0), sequence=75))
    newer = buffer.recent("bed-1", {PLETH.refid: first["end"]})["channels"][0]
    assert newer["samples"] == list(np.arange(75.0, 150.0)) and newer["end"] == 150
    buffer.add(Waveform("ox-1", PLETH, PERCENT, 75.0, 2.0, np.arange(150.0, 225.0), sequence=150))
    # 2 s kept: a cursor older than that gets what is left, from the oldest kept sample.
    stale = buffer.recent("bed-1", {PLETH.refid: 10})["channels"][0]
    assert stale["samples"][0] == 75.0 and len(stale["samples"]) == 150


def test_a_sequence_gap_is_kept_as_a_break() -> None:
    buffer = WaveformBuffer(BED_OF.get)
    buffer.add(Waveform("ox-1", PLETH, PERCENT, 75.0, 0.0, np.ones(3)))
    buffer.add(Waveform("ox-1", PLETH, PERCENT, 75.0, 1.0, np.ones(2), sequence=10))
    samples = buffer.recent("bed-1")["channels"][0]["samples"]
    assert samples == [1.0, 1.0, 1.0, None, 1.0, 1.0]


def test_unknown_devices_and_bad_rates_are_ignored() -> None:
    buffer = WaveformBuffer(BED_OF.get)
    buffer.add(Waveform("stranger", PLETH, PERCENT, 75.0, 0.0, np.ones(3)))
    buffer.add(Waveform("ox-1", PLETH, PERCENT, float("nan"), 0.0, np.ones(3)))
    assert buffer.recent("bed-1") == {"channels": []}
    with pytest.raises(ValueError):
        WaveformBuffer(BED_OF.get, max_rate=0)


async def test_the_endpoint_serves_a_beds_waveforms_after_cursors() -> None:
    clock = ManualClock()
    twin = Twin([BedSpec("bed-1", "Bed 1")], clock)
    buffer = WaveformBuffer(BED_OF.get)
    buffer.add(Waveform("ox-1", PLETH, PERCENT, 75.0, 0.0, np.arange(10.0)))
    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=twin.snapshot,
        health=dict,
        version=lambda: twin.version,
        wait_changed=twin.wait_changed,
        clock=clock,
        waveforms=buffer,
    )
    await server.start()
    base = f"http://127.0.0.1:{server.port}/api/beds"
    try:
        async with ClientSession() as http:
            async with http.get(f"{base}/bed-1/waveforms?{PLETH.refid}=7") as response:
                assert response.status == 200
                assert response.headers["Cache-Control"] == "no-store"
                (channel,) = (await response.json())["channels"]
            assert channel["samples"] == [7.0, 8.0, 9.0] and channel["end"] == 10
            async with http.get(f"{base}/bed-9/waveforms") as response:
                assert response.status == 404
            async with http.get(f"{base}/bed-1/waveforms?{PLETH.refid}=x") as response:
                assert response.status == 400
    finally:
        await server.stop()
