"""Streaming filters: frequency response at any rate, and chunking never changes output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import signal

from gateway.analysis.filters import (
    StreamingFilter,
    bandpass,
    baseline_filter,
    ecg_clean_filter,
    mains_filter,
    qrs_bandpass,
)

RATES = [125.0, 250.0, 360.0, 500.0, 1000.0]


def gain_db(f: StreamingFilter, fs: float, freq: float) -> float:
    """Steady-state gain of a sine through the streaming filter (dB)."""
    t = np.arange(round(40 * fs)) / fs
    y = f.feed(np.sin(2 * np.pi * freq * t))
    tail = y[-round(10 * fs) :]
    return float(20 * np.log10(np.sqrt(2) * tail.std() + 1e-12))


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_mains_notch_removes_mains_and_keeps_the_qrs_band(fs: float, mains: float) -> None:
    assert gain_db(mains_filter(fs, mains), fs, mains) < -30
    assert abs(gain_db(mains_filter(fs, mains), fs, 10.0)) < 0.5
    assert abs(gain_db(mains_filter(fs, mains), fs, 0.7 * mains)) < 1.0
    if 2 * mains < fs / 2 - 2:
        assert gain_db(mains_filter(fs, mains), fs, 2 * mains) < -30


@pytest.mark.parametrize("fs", RATES)
def test_baseline_filter_removes_wander_and_keeps_ecg(fs: float) -> None:
    assert gain_db(baseline_filter(fs), fs, 0.05) < -30
    assert gain_db(baseline_filter(fs), fs, 0.5) == pytest.approx(-3.0, abs=0.3)
    assert abs(gain_db(baseline_filter(fs), fs, 5.0)) < 0.1


@pytest.mark.parametrize("fs", RATES)
def test_qrs_band(fs: float) -> None:
    assert gain_db(qrs_bandpass(fs), fs, 9.0) > -1.0
    assert gain_db(qrs_bandpass(fs), fs, 0.5) < -30
    assert gain_db(qrs_bandpass(fs), fs, 50.0) < -15
    assert gain_db(bandpass(fs, 1.0, 40.0, order=3), fs, 45.0 if fs > 100 else 40) < 0


@pytest.mark.parametrize("fs", RATES)
def test_chunked_output_equals_one_shot(fs: float) -> None:
    rng = np.random.default_rng(int(fs))
    x = rng.normal(0, 1, (2, round(7 * fs))) + 3.0  # DC offset: the initial state matters
    one = ecg_clean_filter(fs, 60.0).feed(x)
    # The same as scipy's own one-shot filter started in steady state.
    f = ecg_clean_filter(fs, 60.0)
    zi = signal.sosfilt_zi(f.sos)
    ref = np.stack([signal.sosfilt(f.sos, ch, zi=zi * ch[0])[0] for ch in x])
    np.testing.assert_allclose(one, ref, rtol=0, atol=1e-12)
    for trial in range(5):
        cuts = np.sort(rng.choice(np.arange(1, x.shape[1]), size=1 + 7 * trial, replace=False))
        pieces = np.split(x, cuts, axis=1)
        chunked = np.concatenate([f.feed(p) for p in pieces], axis=1)
        np.testing.assert_allclose(chunked, one, rtol=0, atol=1e-12)
        f.reset()


def test_one_sample_chunks_and_empty_chunks() -> None:
    x = np.random.default_rng(1).normal(0, 1, 500)
    f = qrs_bandpass(250.0)
    one = f.feed(x)
    f.reset()
    assert f.feed(np.zeros(0)).size == 0
    step = np.concatenate([f.feed(x[i : i + 1]) for i in range(x.size)])
    np.testing.assert_allclose(step, one, rtol=0, atol=1e-12)


def test_no_step_transient_from_a_dc_offset() -> None:
    y = baseline_filter(360.0).feed(np.full(3600, -1.2))
    assert np.abs(y).max() < 1e-9


def test_chain_equals_filters_in_sequence() -> None:
    x = np.random.default_rng(2).normal(0, 1, 2000)
    a, b = baseline_filter(500.0), mains_filter(500.0, 50.0)
    chained = StreamingFilter.chain(baseline_filter(500.0), mains_filter(500.0, 50.0)).feed(x)
    np.testing.assert_allclose(chained, b.feed(a.feed(x)), rtol=0, atol=1e-12)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="outside 125"):
        baseline_filter(100.0)
    with pytest.raises(ValueError, match="outside 125"):
        qrs_bandpass(2000.0)
    with pytest.raises(ValueError, match="mains_hz must be 50 or 60"):
        mains_filter(250.0, 55.0)
    with pytest.raises(ValueError, match="band"):
        bandpass(250.0, 20.0, 10.0)
    f = baseline_filter(250.0)
    f.feed(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="channels"):
        f.feed(np.zeros(10))
    with pytest.raises(ValueError, match="sos must have shape"):
        StreamingFilter(np.zeros((2, 5)))


@pytest.mark.parametrize("fs", [125.0, 360.0])
def test_filtering_in_place_equals_feed(fs: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, round(5 * fs)) + 2.0
    one = ecg_clean_filter(fs, 60.0).feed(x)
    f = ecg_clean_filter(fs, 60.0)
    buf = np.zeros(x.size + 7)  # chunks land in a bigger buffer, as in the QRS history
    cuts = [0, *np.sort(rng.choice(np.arange(1, x.size), size=40, replace=False)), x.size]
    for a, b in itertools.pairwise(cuts):
        buf[a + 7 : b + 7] = x[a:b]
        f.feed_in_place(buf[a + 7 : b + 7])
    np.testing.assert_array_equal(buf[7:], one)  # bit for bit
    with pytest.raises(ValueError, match="1-D float64"):
        f.feed_in_place(np.zeros((2, 3)))
