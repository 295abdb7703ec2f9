"""Beat classification: synthetic ectopy with known classes, and real MIT-BIH records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import wfdb

from gateway.analysis.beats import BeatAnalyzer
from gateway.analysis.scoring import score_beats
from gateway.analysis.vocabulary import Beat
from tests.gateway.analysis.ecg_truth import Beat as TrueBeat
from tests.gateway.analysis.ecg_truth import feed, render, rhythm

MITDB = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mitdb"


def confusion(
    truth: list[TrueBeat], samples: np.ndarray, found: list[Beat], fs: float, after: float
) -> Counter[tuple[str, str]]:
    """(true kind, label) counts for beats after ``after`` seconds (nearest detection)."""
    got = np.array([b.sample for b in found])
    pairs: Counter[tuple[str, str]] = Counter()
    for beat, r in zip(truth, samples, strict=True):
        if beat.time < after:
            continue
        k = int(np.argmin(np.abs(got - r)))
        assert abs(int(got[k]) - int(r)) <= round(0.05 * fs), "beat not detected"
        pairs[beat.kind, found[k].label] += 1
    return pairs


@pytest.mark.parametrize("fs", [125.0, 360.0, 1000.0])
def test_pvcs_are_v_and_sinus_beats_n(fs: float) -> None:
    beats = rhythm(90.0, rr=0.8, pvc_every=7)
    x, truth = render(beats, fs, 90.0, noise=0.02)
    found = feed(BeatAnalyzer(fs), x, 0.25, fs)
    pairs = confusion(beats, truth, found, fs, after=10.0)
    assert pairs["V", "V"] >= 0.95 * sum(v for (k, _), v in pairs.items() if k == "V")
    assert pairs["N", "N"] >= 0.98 * sum(v for (k, _), v in pairs.items() if k == "N")
    assert pairs["N", "V"] == 0


def test_bigeminy_keeps_sinus_as_the_dominant_morphology() -> None:
    fs = 250.0
    beats = rhythm(90.0, rr=0.8, pvc_every=2)  # every other beat a PVC
    x, truth = render(beats, fs, 90.0, noise=0.02)
    pairs = confusion(beats, truth, feed(BeatAnalyzer(fs), x, 0.25, fs), fs, after=10.0)
    assert pairs["N", "N"] == sum(v for (k, _), v in pairs.items() if k == "N")
    assert pairs["V", "V"] == sum(v for (k, _), v in pairs.items() if k == "V")


def test_premature_normal_shaped_beats_are_s() -> None:
    fs = 360.0
    beats = rhythm(90.0, rr=0.8, apc_every=5, premature=0.65)
    x, truth = render(beats, fs, 90.0, noise=0.02)
    pairs = confusion(beats, truth, feed(BeatAnalyzer(fs), x, 0.25, fs), fs, after=10.0)
    s_total = sum(v for (k, _), v in pairs.items() if k == "S")
    assert pairs["S", "S"] >= 0.9 * s_total
    assert pairs["N", "N"] >= 0.98 * sum(v for (k, _), v in pairs.items() if k == "N")
    assert sum(v for (_, lab), v in pairs.items() if lab == "V") == 0


def test_beats_carry_rr_width_and_correlation_and_come_in_order() -> None:
    fs = 360.0
    x, _ = render(rhythm(30.0, rr=0.75, pvc_every=6), fs, 30.0)
    analyzer = BeatAnalyzer(fs, mains_hz=60.0)
    assert analyzer.latency == pytest.approx(0.3)
    found = feed(analyzer, x, 0.1, fs)
    assert [b.sample for b in found] == sorted(b.sample for b in found)
    assert found[0].rr is None and found[0].label == "Q"  # nothing learned yet
    later = [b for b in found if b.time > 5.0]
    assert all(b.rr is not None and 0.3 < b.rr < 1.2 for b in later)
    assert all(b.time == pytest.approx(b.sample / fs) for b in found)
    normal = [b for b in later if b.label == "N"]
    ventricular = [b for b in later if b.label == "V"]
    assert normal and ventricular
    assert all(b.correlation is not None and b.correlation > 0.95 for b in normal)
    assert all(b.correlation is not None and b.correlation < 0.9 for b in ventricular)
    # The synthetic PVC is about three times as wide as the sinus QRS.
    assert np.median([b.width for b in ventricular]) > 1.8 * np.median([b.width for b in normal])


def test_polarity_inversion_relearns_quickly() -> None:
    fs = 250.0
    beats = rhythm(120.0, rr=0.8)
    x, _ = render(beats, fs, 120.0, noise=0.01)
    x[x.size // 2 :] *= -1.0
    found = feed(BeatAnalyzer(fs), x, 0.25, fs)
    flip = x.size // 2 / fs
    after = [b for b in found if b.time > flip]
    assert len(after) >= 70
    # Inverted sinus beats come on time: a handful may be called V while the new
    # morphology takes over, then all are N again.
    assert sum(b.label == "V" for b in after) <= 12
    assert all(b.label == "N" for b in after[15:])


def test_reset_gives_identical_results() -> None:
    fs = 360.0
    x, _ = render(rhythm(30.0, rr=0.7, pvc_every=4), fs, 30.0, noise=0.02)
    analyzer = BeatAnalyzer(fs)
    first = feed(analyzer, x, 0.25, fs)
    analyzer.reset()
    assert feed(analyzer, x, 0.37, fs) == first


@pytest.mark.skipif(not MITDB.is_dir(), reason=f"MIT-BIH records not present at {MITDB}")
@pytest.mark.parametrize("record", ["119", "208"])
def test_real_ventricular_ectopy(record: str) -> None:
    rec = wfdb.rdrecord(str(MITDB / record))
    ann = wfdb.rdann(str(MITDB / record), "atr")
    x = rec.p_signal[:, rec.sig_name.index("MLII")]
    found = feed(BeatAnalyzer(rec.fs), x, 0.25, rec.fs)
    score = score_beats(
        ann.sample, ann.symbol, [b.sample for b in found], [b.label for b in found], rec.fs
    )
    assert score.v_ref > 300
    assert score.veb_se >= 95.0
    assert score.veb_ppv >= 95.0
