"""Streaming QRS detector: synthetic rhythms with exact truth, and real MIT-BIH records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb
from numpy.typing import NDArray

from gateway.analysis.qrs import LATENCY, QrsDetection, QrsDetector
from gateway.analysis.scoring import score_beats
from tests.gateway.analysis.ecg_truth import feed, render, rhythm

MITDB = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mitdb"
RATES = [125.0, 250.0, 360.0, 500.0, 1000.0]


def match(
    truth: NDArray[np.int64], found: list[QrsDetection], fs: float
) -> tuple[int, int, NDArray[np.int64]]:
    """(missed, extra, signed errors in samples) with a 150 ms window."""
    got = np.array([d.sample for d in found], dtype=np.int64)
    window = round(0.15 * fs)
    errors = []
    missed = 0
    used: set[int] = set()
    for t in truth:
        k = int(np.argmin(np.abs(got - t))) if got.size else -1
        if k < 0 or abs(int(got[k]) - int(t)) > window or k in used:
            missed += 1
            continue
        used.add(k)
        errors.append(int(got[k]) - int(t))
    return missed, got.size - len(used), np.array(errors)


@pytest.mark.parametrize("fs", RATES)
def test_every_beat_found_at_the_r_peak_at_any_rate(fs: float) -> None:
    beats = rhythm(60.0, rr=0.75, pvc_every=6)
    x, truth = render(beats, fs, 60.0)
    found = feed(QrsDetector(fs), x, 0.25, fs)
    missed, extra, errors = match(truth, found, fs)
    assert (missed, extra) == (0, 0)
    # R-peak time within 5 ms (2 samples at 360 Hz) for normal and ventricular beats.
    assert np.abs(errors).max() <= max(1, round(0.005 * fs))


def test_decision_latency_is_fixed() -> None:
    fs = 360.0
    x, truth = render(rhythm(30.0, rr=0.9, pvc_every=4), fs, 30.0)
    detector = QrsDetector(fs)
    assert detector.latency == LATENCY <= 0.3
    lag = round(LATENCY * fs)
    seen: list[tuple[int, int]] = []
    for i in range(x.size):  # one sample at a time: the exact moment of each decision
        for d in detector.feed(x[i : i + 1]):
            seen.append((d.sample, i))
    assert len(seen) == truth.size
    # Learning ends at 2 s; from then on each beat comes exactly LATENCY after its R peak.
    steady = [(r, i) for r, i in seen if r > 2.0 * fs]
    assert steady and all(i - r == lag for r, i in steady)
    assert detector.late == 0


def test_chunking_does_not_change_detections() -> None:
    fs = 250.0
    x, _ = render(rhythm(40.0, rr=0.7, pvc_every=5), fs, 40.0, noise=0.03)
    one = [d.sample for d in QrsDetector(fs).feed(x)]
    rng = np.random.default_rng(3)
    det = QrsDetector(fs)
    got: list[int] = []
    for piece in np.split(x, np.sort(rng.choice(np.arange(1, x.size), 300, replace=False))):
        got.extend(d.sample for d in det.feed(piece))
    got.extend(d.sample for d in det.feed(np.zeros(round(fs))))  # flush the latency
    assert got[: len(one)] == one


def test_polarity_inversion_and_amplitude_changes() -> None:
    fs = 360.0
    beats = rhythm(90.0, rr=0.8)
    x, truth = render(beats, fs, 90.0, noise=0.01)
    third = x.size // 3
    x[third : 2 * third] *= -1.0  # electrodes swapped
    x[2 * third :] *= 0.2  # then the amplitude drops to a fifth
    missed, extra, _ = match(truth, feed(QrsDetector(fs), x, 0.25, fs), fs)
    assert extra == 0
    assert missed <= 2  # at most a beat or two while the threshold adapts down


def test_amplitude_rise_adds_no_false_beats() -> None:
    fs = 360.0
    x, truth = render(rhythm(60.0, rr=0.8), fs, 60.0, noise=0.01)
    x[x.size // 2 :] *= 5.0
    missed, extra, _ = match(truth, feed(QrsDetector(fs), x, 0.25, fs), fs)
    assert (missed, extra) == (0, 0)


def test_baseline_wander_muscle_noise_and_mains() -> None:
    fs = 500.0
    x, truth = render(rhythm(60.0, rr=0.8, pvc_every=9), fs, 60.0)
    t = np.arange(x.size) / fs
    rng = np.random.default_rng(7)
    x = x + 1.5 * np.sin(2 * np.pi * 0.3 * t) + 0.4 * t / 60.0  # wander and drift
    x = x + 0.3 * np.sin(2 * np.pi * 50.0 * t)  # mains
    emg = np.convolve(rng.normal(0, 0.08, x.size), np.ones(3) / 3, "same")  # broadband EMG
    x = x + emg
    missed, extra, errors = match(truth, feed(QrsDetector(fs, mains_hz=50.0), x, 0.25, fs), fs)
    assert (missed, extra) == (0, 0)
    assert np.abs(errors).max() <= round(0.015 * fs)  # 15 ms in heavy noise


def test_tall_t_waves_are_not_beats() -> None:
    fs = 250.0
    x, truth = render(rhythm(60.0, rr=0.9), fs, 60.0, t_wave=1.1)  # T taller than R
    missed, extra, _ = match(truth, feed(QrsDetector(fs), x, 0.25, fs), fs)
    assert (missed, extra) == (0, 0)


def test_pacemaker_spikes_do_not_double_count() -> None:
    fs = 1000.0
    beats = rhythm(60.0, rr=0.85)
    x, truth = render(beats, fs, 60.0)
    for r in truth:  # a 1 ms, 4 mV pacing spike 40 ms before each QRS
        x[r - 40 : r - 39] += 4.0
    missed, extra, errors = match(truth, feed(QrsDetector(fs), x, 0.25, fs), fs)
    assert (missed, extra) == (0, 0)
    assert np.abs(errors).max() <= 45  # at worst the spike itself is taken as the R peak


def test_flat_line_gives_no_beats_and_reset_restarts() -> None:
    fs = 250.0
    detector = QrsDetector(fs)
    assert feed(detector, np.zeros(round(20 * fs)), 0.25, fs) == []
    x, _ = render(rhythm(20.0), fs, 20.0)
    detector.reset()
    assert detector.samples_fed == 0
    first = feed(detector, x, 0.25, fs)
    detector.reset()
    assert feed(detector, x, 0.25, fs) == first


@pytest.mark.skipif(not MITDB.is_dir(), reason=f"MIT-BIH records not present at {MITDB}")
@pytest.mark.parametrize(("record", "minimum"), [("119", 99.9), ("208", 99.0), ("203", 98.5)])
def test_real_records(record: str, minimum: float) -> None:
    rec = wfdb.rdrecord(str(MITDB / record))
    ann = wfdb.rdann(str(MITDB / record), "atr")
    x = rec.p_signal[:, rec.sig_name.index("MLII")]
    found = feed(QrsDetector(rec.fs), x, 0.25, rec.fs)
    score = score_beats(
        ann.sample, ann.symbol, [d.sample for d in found], ["N"] * len(found), rec.fs
    )
    assert score.se >= minimum
    assert score.ppv >= minimum
