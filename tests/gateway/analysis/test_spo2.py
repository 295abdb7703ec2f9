"""Pleth pulse detection and the ECG/pleth cross-check rules."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.analysis.spo2 import PulseDetector, PulseState, cross_check


def pleth(
    fs: float, seconds: float, bpm: float, *, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """A pleth-like wave: fast upstroke, slow decay, dicrotic notch; and its upstroke times."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * fs)) / fs
    x = np.zeros_like(t)
    onsets = []
    beat = 0.2
    while beat < seconds:
        onsets.append(beat)
        dt = t - beat
        rise = np.clip(dt / 0.12, 0, 1)
        decay = np.exp(-np.clip(dt - 0.12, 0, None) / 0.35)
        x += np.where(dt >= 0, rise * decay, 0) + 0.15 * np.exp(-0.5 * ((dt - 0.4) / 0.04) ** 2)
        beat += 60.0 / bpm * (1 + 0.02 * rng.standard_normal())
    x += 0.3 * np.sin(2 * np.pi * 0.2 * t) + rng.normal(0, 0.01, len(t))
    return 1000 + 200 * x, onsets


def run(x: np.ndarray, fs: float, chunk: int) -> tuple[list[float], PulseState]:
    d = PulseDetector(fs)
    pulses: list[float] = []
    state = d.feed(x[:0])
    for i in range(0, len(x), chunk):
        state = d.feed(x[i : i + chunk])
        pulses += state.pulses
    return pulses, state


@pytest.mark.parametrize("fs", [50.0, 75.0, 100.0, 300.0, 500.0])
@pytest.mark.parametrize("bpm", [45.0, 80.0, 150.0])
def test_pulses_and_rate_at_any_rate(fs: float, bpm: float) -> None:
    x, onsets = pleth(fs, 30.0, bpm)
    pulses, state = run(x, fs, max(1, round(0.2 * fs)))
    # Every true pulse found once, at its upstroke (within 150 ms), nothing else.
    matched = sum(any(abs(p - o - 0.06) < 0.15 for p in pulses) for o in onsets[2:-2])
    assert matched == len(onsets) - 4
    assert len(pulses) <= len(onsets)
    assert state.pulse_rate == pytest.approx(bpm, rel=0.05)
    assert state.pulsatile


def test_chunking_does_not_change_the_pulses() -> None:
    x, _ = pleth(100.0, 20.0, 70.0)
    a, _ = run(x, 100.0, 7)
    b, _ = run(x, 100.0, 100)
    assert a == pytest.approx(b)


def test_flat_or_noisy_pleth_is_not_pulsatile() -> None:
    fs = 100.0
    _, state = run(np.full(2000, 1234.0), fs, 25)
    assert not state.pulsatile and state.pulse_rate is None
    noise = np.random.default_rng(1).normal(0, 50, 2000)
    _, state = run(noise, fs, 25)
    assert not state.pulsatile  # white noise gives intervals far too short to be pulses


def test_pulses_stop_then_pulsatile_goes_false() -> None:
    fs = 100.0
    x, _ = pleth(fs, 20.0, 75.0)
    x = np.concatenate([x, np.full(round(10 * fs), x[-1])])
    _, state = run(x, fs, 20)
    assert not state.pulsatile


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match=r"50\.\.500"):
        PulseDetector(25.0)


def test_cross_check_rules() -> None:
    pulsing = PulseState([], 72.0, True)
    silent = PulseState([], None, False)
    vetoed = cross_check("asystole", pulsing, 0.5)
    assert vetoed.verdict == "vetoed" and "72 /min" in vetoed.reason
    assert cross_check("asystole", silent, 0.5).verdict == "confirmed"
    assert cross_check("asystole", pulsing, 5.0).verdict == "unchecked"  # stale pleth
    assert cross_check("asystole", None, None).verdict == "unchecked"
    # VF is never vetoed, however pulsatile the pleth looks.
    assert cross_check("vf", pulsing, 0.1).verdict != "vetoed"
