"""Rhythm analysis on beats of known truth: the synthetic generator's and the experts'."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from drivers.simulate.ecg_synth import EcgSynth, Segment
from gateway.analysis.quality import SignalQuality
from gateway.analysis.rhythm import DELAYS, TRANSITIONS, Ectopy, Episode, RhythmAnalyzer
from gateway.analysis.settings import RhythmSettings
from gateway.analysis.vocabulary import Beat, RhythmEvent
from tests.support.ecg_data import load, needs_data, reference_beats, reference_episodes

LATENCY = 0.3


class Run:
    """Feeds a signal and its true beats (released ``LATENCY`` after each R peak)."""

    def __init__(self, fs: float, settings: RhythmSettings | None = None) -> None:
        self.fs = fs
        self.analyzer = RhythmAnalyzer(fs, settings, beat_latency=LATENCY)
        self.quality = SignalQuality(fs)
        self.events: list[RhythmEvent] = []
        self.ectopy: list[Ectopy] = []
        self.rates: list[tuple[float, float | None]] = []
        self.pvc_per_minute = 0.0
        self.still_open: list[RhythmEvent] | None = None
        self.n = 0

    def feed(self, x: np.ndarray, beats: Sequence[Beat], chunk_s: float = 0.25) -> None:
        step = round(chunk_s * self.fs)
        pending = sorted(beats, key=lambda b: b.sample)
        i = 0
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            end = self.n + len(chunk)
            due = []
            while i < len(pending) and pending[i].sample + LATENCY * self.fs < end:
                due.append(pending[i])
                i += 1
            out = self.analyzer.feed(chunk, due, self.quality.feed(chunk))
            self.n = end
            self.events += out.events
            self.ectopy += out.ectopy
            self.rates.append((end / self.fs, out.heart_rate))
            self.pvc_per_minute = out.pvc_per_minute

    def episodes(self, kind: str) -> list[tuple[float, float | None]]:
        """Episodes of ``kind``; those still open at the end have ``None`` as end."""
        if self.still_open is None:
            self.still_open = self.analyzer.close()
        closed = [(e.onset, e.end) for e in self.events if e.kind == kind and e.end is not None]
        return closed + [(e.onset, None) for e in self.still_open if e.kind == kind]


def synthetic(script: list[Segment], fs: float = 250.0, seed: int = 2) -> Run:
    synth = EcgSynth(script, fs, seed=seed)
    x = synth.read(round(sum(s.duration for s in script) * fs))
    beats = [Beat(b.sample, b.time, b.label) for b in synth.truth.beats]
    run = Run(fs)
    run.feed(x, beats)
    return run


def test_state_machine_table_is_complete() -> None:
    states = {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert states == {"idle", "pending", "active", "clearing"}
    episode = Episode("vf")
    on, off = DELAYS["vf"]
    assert episode.step(True, 0.0) is None
    assert episode.state == "pending"
    onset = episode.step(True, on)
    assert onset == RhythmEvent("vf", on, None, "")
    assert episode.step(False, on + 1.0) is None and episode.state == "clearing"
    assert episode.step(True, on + 1.5) is None and episode.state == "active"
    assert episode.step(False, on + 2.0) is None
    end = episode.step(False, on + 2.0 + off)
    assert end == RhythmEvent("vf", on, on + 2.0 + off, "")


def test_sinus_heart_rate_is_the_median_rr() -> None:
    run = synthetic([Segment("sinus", 40.0, rate=75.0)])
    rates = [r for t, r in run.rates if t > 10 and r is not None]
    assert np.median(rates) == pytest.approx(75.0, abs=2.0)
    assert not run.events


def test_asystole_within_five_seconds_of_the_last_beat_and_ends_at_the_next() -> None:
    fs = 250.0
    synth = EcgSynth(
        [Segment("sinus", 20.0), Segment("asystole", 10.0), Segment("sinus", 10.0)], fs, seed=3
    )
    x = synth.read(round(40 * fs))
    beats = [Beat(b.sample, b.time, b.label) for b in synth.truth.beats]
    run = Run(fs)
    run.feed(x, beats)
    last = max(b.time for b in beats if b.time < 20.0)
    after = min(b.time for b in beats if b.time > 30.0)
    asystole = run.episodes("asystole")
    assert len(asystole) == 1
    onset, end = asystole[0]
    assert 4.0 <= onset - last <= 5.0
    assert end == pytest.approx(after, abs=0.01)
    pauses = run.episodes("pause")
    assert pauses and 2.5 <= pauses[0][0] - last <= 3.5
    assert all(r == 0.0 for t, r in run.rates if onset + 0.25 <= t <= 30.0)


def test_configurable_asystole_limit() -> None:
    fs = 250.0
    synth = EcgSynth([Segment("sinus", 10.0), Segment("asystole", 10.0)], fs, seed=3)
    x = synth.read(round(20 * fs))
    beats = [Beat(b.sample, b.time, b.label) for b in synth.truth.beats]
    run = Run(fs, RhythmSettings(asystole_s=6.0, pause_s=3.0))
    run.feed(x, beats)
    last = max(b.time for b in beats)
    ((onset, _),) = run.episodes("asystole")
    assert 6.0 <= onset - last <= 7.0


def test_vf_from_the_waveform_alone() -> None:
    run = synthetic([Segment("sinus", 20.0), Segment("vf", 20.0), Segment("sinus", 20.0)])
    ((onset, end),) = run.episodes("vf")
    assert 20.0 < onset <= 25.0
    assert end is not None and 40.0 < end <= 45.0
    assert not run.episodes("asystole")
    assert all(r is None for t, r in run.rates if onset < t < 40.0)


def test_vt_run_and_sustained() -> None:
    run = synthetic(
        [Segment("sinus", 15.0), Segment("vt", 35.0, rate=120.0), Segment("sinus", 10.0)]
    )
    vt = run.episodes("vt")
    assert len(vt) == 1
    onset, end = vt[0]
    assert 15.0 < onset < 17.0 and end is not None and 50.0 <= end < 51.5
    assert any(e.kind == "vt" and e.detail == "sustained" for e in run.events)


def test_slow_ventricular_run_is_not_vt() -> None:
    run = synthetic([Segment("sinus", 10.0), Segment("vt", 10.0, rate=80.0), Segment("sinus", 5.0)])
    assert not run.episodes("vt")


def test_af_detected_and_ends() -> None:
    run = synthetic([Segment("sinus", 30.0), Segment("af", 120.0), Segment("sinus", 60.0)])
    af = run.episodes("afib")
    assert len(af) == 1
    onset, end = af[0]
    assert 30.0 < onset < 60.0 and end is not None and 150.0 < end < 180.0


def test_isolated_pvcs_are_not_af_but_are_counted() -> None:
    run = synthetic([Segment("sinus", 120.0, pvc_every=7)])
    assert not run.episodes("afib")
    assert not run.episodes("vt")
    assert run.pvc_per_minute >= 8


def test_bigeminy_couplets_and_frequent_pvcs() -> None:
    run = synthetic(
        [Segment("sinus", 30.0, pvc_every=2), Segment("sinus", 40.0, pvc_every=5, pvc_run=2)]
    )
    kinds = [(e.kind, e.active) for e in run.ectopy]
    assert ("bigeminy", True) in kinds and ("bigeminy", False) in kinds
    assert kinds.count(("couplet", True)) >= 5
    assert ("frequent_pvcs", True) in kinds
    assert not run.episodes("vt")


def test_extreme_brady_and_tachy() -> None:
    run = synthetic(
        [
            Segment("sinus", 20.0),
            Segment("sinus", 30.0, rate=32.0),
            Segment("sinus", 30.0, rate=175.0),
        ]
    )
    ((b_on, b_end),) = run.episodes("brady")
    assert 20.0 < b_on < 40.0 and b_end is not None and 50.0 < b_end < 55.0
    tachy = run.episodes("tachy")
    assert len(tachy) == 1 and 50.0 < tachy[0][0] < 55.0


def test_lead_off_and_noise_give_noise_not_arrhythmia() -> None:
    run = synthetic(
        [
            Segment("sinus", 20.0),
            Segment("lead_off", 15.0, rail_mV=0.0),
            Segment("sinus", 20.0),
            Segment("noise", 20.0),
            Segment("sinus", 20.0),
        ]
    )
    noise = run.episodes("noise")
    assert len(noise) == 2
    assert 20.0 < noise[0][0] < 23.0 and 55.0 < noise[1][0] < 58.0
    for kind in ("asystole", "vf", "vt", "afib", "pause", "brady", "tachy"):
        assert not run.episodes(kind), kind


def test_gating_never_ends_vf() -> None:
    run = synthetic(
        [Segment("sinus", 10.0), Segment("vf", 15.0), Segment("lead_off", 15.0, rail_mV=0.0)]
    )
    vf = run.episodes("vf")
    assert len(vf) == 1 and vf[0][1] is None  # still open when the lead fell off
    assert run.episodes("noise")


# --- real records ------------------------------------------------------------------------------


def overlaps(found: list[tuple[float, float | None]], onset: float, end: float) -> list[float]:
    return [a for a, b in found if a < end and (b is None or b > onset)]


@needs_data
def test_vf_episodes_of_vfdb_422() -> None:
    x, fs = load("vfdb", "422")
    run = Run(fs)
    start = round(1300 * fs)
    run.feed(x[start : round(2100 * fs)], [])
    found = [(a + 1300, None if b is None else b + 1300) for a, b in run.episodes("vf")]
    refs = [(a, b) for k, a, b in reference_episodes("vfdb", "422") if k in ("VF", "VFIB", "VFL")]
    assert len(refs) == 3
    delays = []
    for onset, end in refs:
        hits = overlaps(found, onset, end)
        assert hits, (onset, end)
        delays.append(max(0.0, min(hits) - onset))
    assert np.median(delays) <= 5.0


@needs_data
def test_af_of_mitdb_201_from_reference_beats() -> None:
    x, fs = load("mitdb", "201")
    run = Run(fs)
    run.feed(x, reference_beats("mitdb", "201", fs))
    found = run.episodes("afib")
    refs = [(a, b) for k, a, b in reference_episodes("mitdb", "201") if k == "AFIB"]
    assert all(overlaps(found, a, b) for a, b in refs)


@needs_data
def test_vt_of_mitdb_205_from_reference_beats() -> None:
    x, fs = load("mitdb", "205")
    beats = reference_beats("mitdb", "205", fs)
    run = Run(fs)
    run.feed(x, beats)
    found = run.episodes("vt")
    refs = []
    for kind, a, b in reference_episodes("mitdb", "205"):
        run_times = [bt.time for bt in beats if a - 0.05 <= bt.time < b and bt.label == "V"]
        fast = len(run_times) >= 3 and 60 * (len(run_times) - 1) / np.ptp(run_times) >= 100
        if kind == "VT" and fast:  # the annotators also call slower ventricular runs VT
            refs.append((a, b))
    assert len(refs) >= 4
    assert all(overlaps(found, a, b) for a, b in refs)
    assert not run.episodes("afib")
