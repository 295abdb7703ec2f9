"""Signal quality: clean ECG is analysable; lead-off, rails and heavy noise are not."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulate.ecg_synth import EcgSynth, Segment
from gateway.analysis.quality import Quality, SignalQuality, judge
from tests.support.ecg_data import load, needs_data


def judge_all(x: np.ndarray, fs: float, chunk_s: float = 0.25) -> list[Quality]:
    q = SignalQuality(fs)
    n = max(1, round(chunk_s * fs))
    return [q.feed(x[i : i + n]) for i in range(0, len(x), n)]


def synth(rhythm: str, fs: float, seconds: float = 20.0, **kw: float) -> np.ndarray:
    return EcgSynth([Segment(rhythm, seconds, **kw)], fs, seed=4).read(round(seconds * fs))  # type: ignore[arg-type]


@pytest.mark.parametrize("fs", [125.0, 250.0, 360.0, 1000.0])
@pytest.mark.parametrize("rhythm", ["sinus", "af", "vt", "vf", "asystole"])
def test_real_rhythms_are_analysable(fs: float, rhythm: str) -> None:
    judged = judge_all(synth(rhythm, fs), fs)[4:]
    assert all(q.analysable for q in judged), [q for q in judged if not q.analysable][:3]
    assert min(q.index for q in judged) > 0.3


@pytest.mark.parametrize("fs", [125.0, 250.0, 500.0])
def test_heavy_noise_is_not_analysable(fs: float) -> None:
    judged = judge_all(synth("noise", fs), fs)[4:]
    bad = [q for q in judged if not q.analysable]
    assert len(bad) >= 0.9 * len(judged)
    assert {q.problem for q in bad} == {"noise"}
    assert max(q.index for q in bad) < 0.5


def test_lead_off_flat_and_railed() -> None:
    fs = 250.0
    flat = judge_all(synth("lead_off", fs, rail_mV=0.0), fs)
    assert all(q.problem == "flat" and q.index == 0.0 for q in flat[4:])
    railed = np.concatenate([synth("sinus", fs, 5.0), np.full(round(3 * fs), 7.5)])
    judged = judge_all(railed, fs)
    assert judged[-1].problem == "flat"  # a rail is flat over the window
    # Half the window on the rail, half real ECG: still not analysable.
    half = np.concatenate(
        [synth("sinus", fs, 5.0)[-round(0.6 * fs) :], np.full(round(0.5 * fs), 7.5)]
    )
    q = SignalQuality(fs)
    assert q.feed(half).problem == "saturated"


def test_non_finite_samples_are_not_analysable() -> None:
    q = SignalQuality(250.0)
    x = synth("sinus", 250.0, 2.0)
    q.feed(x[:250])
    x = x[250:].copy()
    x[10] = np.nan
    assert q.feed(x).problem == "saturated"


def test_judgement_does_not_depend_on_chunking() -> None:
    x = np.concatenate([synth("sinus", 360.0, 10.0), synth("noise", 360.0, 10.0)])
    whole = SignalQuality(360.0)
    a = [whole.feed(x[i : i + 90]).analysable for i in range(0, len(x), 90)]
    pieces = SignalQuality(360.0)
    b = []
    for i in range(0, len(x), 90):
        pieces.feed(x[i : i + 30])
        pieces.feed(x[i + 30 : i + 60])
        b.append(pieces.feed(x[i + 60 : i + 90]).analysable)
    assert a == b


@needs_data
@pytest.mark.parametrize("record", ["101", "119", "203", "208"])
def test_clean_mitdb_records_are_analysable(record: str) -> None:
    x, fs = load("mitdb", record)
    judged = judge_all(x[: round(300 * fs)], fs)
    assert np.mean([q.analysable for q in judged]) > 0.98


def reference_judgement(window: np.ndarray) -> tuple[bool, str]:
    """The quality rules written out directly (no shortcuts): analysable, problem."""
    raw, ecg, hf = window
    top, bottom = raw.max(), raw.min()
    if top - bottom < 0.02:
        return False, "flat"
    railed = (np.count_nonzero(raw == top) + np.count_nonzero(raw == bottom)) / raw.size
    if railed >= 0.25 or ecg.max() - ecg.min() > 10.0:
        return False, "saturated"
    rms = np.sqrt(np.mean(hf**2))
    lo, hi = np.sort(ecg)[[int(0.05 * (ecg.size - 1)), int(0.95 * (ecg.size - 1))]]
    if rms / max(hi - lo, 1e-6) >= 0.3 and rms >= 0.03:
        return False, "noise"
    return True, ""


@pytest.mark.parametrize("n", [2, 9, 125, 360])
def test_judge_follows_the_rules_whatever_the_share_on_the_rails(n: int) -> None:
    rng = np.random.default_rng(n)
    for share in np.linspace(0.0, 0.5, 21):
        window = np.round(rng.normal(0, 0.5, (3, n)), 2)
        on_rail = rng.random(n) < share
        window[0, on_rail] = np.where(rng.random(on_rail.sum()) < 0.5, 5.0, -5.0)
        q = judge(window)
        assert (q.analysable, q.problem) == reference_judgement(window), share
