"""ECG analysis in the daemon: waveforms on the hub in, HR and rhythm conditions back out."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import (
    Condition,
    DeviceEvent,
    MeasurementStatus,
    Numeric,
    Priority,
    Reading,
    Waveform,
)
from drivers.simulate.ecg_synth import EcgSynth, Segment
from gateway.analysis.service import EcgAnalysisService
from gateway.analysis.settings import AnalysisSettings, RhythmSettings
from gateway.config import ConfigError, load, parse
from gateway.daemon import Gateway
from gateway.hub import Hub
from gateway.supervisor import SdNotify

T0 = 1_767_225_600.0
BEDS = {"ecg-1": "bed-1", "ox-1": "bed-1", "ecg-2": "bed-2"}


class Bedside:
    """A hub with the service running on it, fed like a simulated ECG device feeds it."""

    def __init__(self, settings: AnalysisSettings | None = None) -> None:
        self.hub = Hub()
        self.clock = ManualClock()
        self.service = EcgAnalysisService(self.hub, self.clock, settings, bed_of=BEDS.get)
        self.out = self.hub.subscribe(
            "test", maxsize=100_000, accepts=lambda r: isinstance(r, Numeric | DeviceEvent)
        )
        self.sequences: dict[str, int] = {}

    def publish(
        self, source: str, code: codes.Code, fs: float, samples: np.ndarray, *, skip: int = 0
    ) -> None:
        seq = self.sequences.get(source, 0) + skip
        self.hub.publish(
            Waveform(source, code, codes.MILLIVOLT, fs, T0 + seq / fs, samples.copy(), sequence=seq)
        )
        self.sequences[source] = seq + len(samples)

    def readings(self) -> list[Reading]:
        got = []
        while (r := self.out.get_nowait()) is not None:
            got.append(r)
        return got


async def drive(bed: Bedside, feeds: Callable[[], None], chunks: int) -> None:
    sub = bed.hub.subscribe("analysis", maxsize=4096, accepts=EcgAnalysisService.accepts)
    task = asyncio.create_task(bed.service.run(sub))
    for _ in range(chunks):
        feeds()
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    bed.hub.unsubscribe(sub)
    await asyncio.wait_for(task, 5)


def events(readings: list[Reading], condition: Condition) -> list[DeviceEvent]:
    return [r for r in readings if isinstance(r, DeviceEvent) and r.condition is condition]


async def test_simulated_ecg_yields_heart_rate_and_asystole() -> None:
    fs = 250.0
    synth = EcgSynth(
        [Segment("sinus", 30.0, rate=72.0), Segment("asystole", 15.0), Segment("sinus", 15.0)],
        fs,
        seed=1,
    )
    bed = Bedside()
    await drive(
        bed,
        lambda: bed.publish("ecg-1", codes.ECG_LEAD_II, fs, synth.read(50)),
        round(60 * fs / 50),
    )
    got = bed.readings()
    hr = [r for r in got if isinstance(r, Numeric) and r.code == codes.ECG_HEART_RATE]
    assert all(r.source == "ecg-1" and r.unit == codes.BEATS_PER_MINUTE for r in hr)
    assert 55 <= len(hr) <= 61  # once per second of signal
    steady = [r.value for r in hr if T0 + 10 < r.time < T0 + 30 and r.value is not None]
    assert np.median(steady) == pytest.approx(72.0, abs=2.0)
    pvc = [r for r in got if isinstance(r, Numeric) and r.code == codes.ECG_PVC_RATE]
    assert len(pvc) == len(hr)
    assert all(r.value == 0.0 for r in pvc if T0 + 10 < r.time < T0 + 30)
    on, off = events(got, Condition.ASYSTOLE)
    last_beat = max(b.time for b in synth.truth.beats if b.time < 30.0)
    assert on.active and on.priority is Priority.HIGH
    assert on.time - (T0 + last_beat) <= 5.0
    assert not off.active and T0 + 45.0 <= off.time <= T0 + 46.5
    assert [r.value for r in hr if on.time < r.time < off.time] == [0.0] * len(
        [r for r in hr if on.time < r.time < off.time]
    )


async def test_lead_off_is_cannot_analyse_and_hr_unavailable() -> None:
    fs = 250.0
    synth = EcgSynth(
        [Segment("sinus", 15.0), Segment("lead_off", 15.0), Segment("sinus", 10.0)], fs
    )
    bed = Bedside()
    await drive(
        bed,
        lambda: bed.publish("ecg-1", codes.ECG_LEAD_I, fs, synth.read(125)),
        round(40 * fs / 125),
    )
    got = bed.readings()
    technical = events(got, Condition.ECG_CANNOT_ANALYSE)
    assert [e.active for e in technical] == [True, False]
    assert technical[0].priority is Priority.LOW
    assert not events(got, Condition.ASYSTOLE)
    unavailable = [
        r for r in got if isinstance(r, Numeric) and r.status is MeasurementStatus.UNAVAILABLE
    ]
    assert any(T0 + 20 < r.time < T0 + 30 for r in unavailable)


async def test_a_sequence_gap_restarts_the_analysis() -> None:
    fs = 250.0
    synth = EcgSynth([Segment("sinus", 10.0), Segment("asystole", 30.0)], fs)
    bed = Bedside()
    sent = 0

    def feed() -> None:
        nonlocal sent
        sent += 1
        bed.publish("ecg-1", codes.ECG_LEAD_II, fs, synth.read(125), skip=500 if sent == 60 else 0)

    await drive(bed, feed, 80)
    assert bed.service.resets == 1
    asystole = events(bed.readings(), Condition.ASYSTOLE)
    # Opened before the gap, closed at the gap; the restarted pipeline opens its own.
    assert [e.active for e in asystole] == [True, False, True]


async def test_pulsatile_pleth_vetoes_asystole_but_never_vf(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs, pleth_fs = 250.0, 75.0
    ecg = EcgSynth([Segment("sinus", 10.0), Segment("asystole", 20.0)], fs)
    ecg2 = EcgSynth([Segment("sinus", 10.0), Segment("vf", 20.0)], fs)
    t = np.arange(round(30 * pleth_fs)) / pleth_fs
    phase = (t * 1.2) % 1.0
    wave = 1000 + 300 * np.where(phase < 0.15, phase / 0.15, np.exp(-(phase - 0.15) / 0.3))
    step = round(0.25 * pleth_fs)
    bed = Bedside()
    i = 0

    def feed() -> None:
        nonlocal i
        bed.publish("ecg-1", codes.ECG_LEAD_II, fs, ecg.read(round(0.25 * fs)))
        bed.publish("ecg-2", codes.ECG_LEAD_II, fs, ecg2.read(round(0.25 * fs)))
        # The pleth is on bed-1 with ecg-1 only; bed-2's VF has no oximeter.
        bed.publish("ox-1", codes.PLETH, pleth_fs, wave[i * step : (i + 1) * step])
        i += 1

    with caplog.at_level(logging.WARNING):
        await drive(bed, feed, 119)
    got = bed.readings()
    assert not [e for e in events(got, Condition.ASYSTOLE) if e.source == "ecg-1"]
    vetoed = [e for e in events(got, Condition.ECG_CANNOT_ANALYSE) if e.source == "ecg-1"]
    assert vetoed and vetoed[0].active and "asystole vetoed" in vetoed[0].detail
    assert "pulsatile=True" in vetoed[0].detail
    assert bed.service.vetoes == 1
    vf = events(got, Condition.VENTRICULAR_FIBRILLATION)
    assert vf and vf[0].source == "ecg-2" and vf[0].active and vf[0].priority is Priority.HIGH


def test_analysis_section_in_config(tmp_path: Path) -> None:
    base = {"gateway": {"id": "g"}, "beds": [{"id": "b"}]}
    config = parse(base, path=tmp_path / "config.toml")
    assert config.analysis == AnalysisSettings()
    custom = {
        **base,
        "analysis": {"mains_hz": 60, "asystole_s": 5.0, "brady_bpm": 35.0, "afib_priority": "low"},
    }
    config = parse(custom, path=tmp_path / "config.toml")
    assert config.analysis.mains_hz == 60.0
    assert config.analysis.rhythm == RhythmSettings(asystole_s=5.0, brady_bpm=35.0)
    assert config.analysis.afib_priority is Priority.LOW
    with pytest.raises(ConfigError) as err:
        parse({**base, "analysis": {"mains_hz": 55}}, path=tmp_path / "config.toml")
    assert "analysis.mains_hz" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse({**base, "analysis": {"pause_s": 6.0}}, path=tmp_path / "config.toml")
    assert "pause_s must not exceed asystole_s" in str(err.value)


GATEWAY = """
[gateway]
id = "ecg-ward"
data_dir = "state"
listen = "127.0.0.1:8080"

[analysis]
mains_hz = 50

[[beds]]
id = "bed-1"

  [[beds.devices]]
  id = "ecg-1"
  driver = "openbci-cyton"
  leads = { 2 = "II" }
  simulate = "normal"
"""


async def test_daemon_turns_a_simulated_boards_ecg_into_heart_rate(tmp_path: Path) -> None:
    """Simulator -> pty -> OpenBCI driver -> hub -> analysis -> HR on the hub."""
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(GATEWAY))
    clock = ManualClock()
    gateway = Gateway(load(path), clock=clock, notify=SdNotify(), listen_port=0)
    hr = gateway.hub.subscribe(
        "test", accepts=lambda r: isinstance(r, Numeric) and r.code == codes.ECG_HEART_RATE
    )
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    try:
        await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
        values: list[float] = []
        for _ in range(1500):  # up to 60 s of device time in 40 ms steps
            await clock.advance(0.04)
            for _ in range(3):
                await asyncio.sleep(0)
            while (r := hr.get_nowait()) is not None:
                assert isinstance(r, Numeric) and r.source == "ecg-1"
                if r.value is not None:
                    values.append(r.value)
            if len(values) >= 5:
                break
        assert len(values) >= 5, "no heart rate from the analysis within 60 s of device time"
        assert np.median(values[-5:]) == pytest.approx(72.0, abs=4.0)
        assert gateway.supervisor.health["analysis"].restarts == 0
    finally:
        gateway.supervisor.stop()
        await asyncio.wait_for(runner, 5)
