"""Filter designs are computed once per (rate, parameters): a stream gap that rebuilds a
bed's pipelines must not design them again; each filter still has its own state."""

from __future__ import annotations

import numpy as np

from gateway.analysis import filters


def test_a_second_pipeline_reuses_the_designs_and_filters_the_same() -> None:
    filters.ecg_clean_filter(500.0, 60.0)
    before = (filters._butter_design.cache_info(), filters._mains_design.cache_info())
    first = filters.ecg_clean_filter(500.0, 60.0)
    second = filters.ecg_clean_filter(500.0, 60.0)
    after = (filters._butter_design.cache_info(), filters._mains_design.cache_info())
    assert [a.misses for a in after] == [b.misses for b in before]  # nothing designed again
    assert after[0].hits >= before[0].hits + 2 and after[1].hits >= before[1].hits + 2
    np.testing.assert_array_equal(first.sos, second.sos)
    assert first.sos is not second.sos and first.sos.flags.writeable

    x = np.sin(np.linspace(0, 20, 1000)) + 0.3
    out_first = first.feed(x)
    # A fresh filter from the cache starts from its own state, not the first one's.
    np.testing.assert_array_equal(second.feed(x), out_first)


def test_cached_designs_match_scipys_design() -> None:
    from scipy import signal  # type: ignore[import-untyped]

    band = filters.bandpass(250.0, 5.0, 15.0)
    expected = signal.butter(2, [5.0, 15.0], btype="bandpass", fs=250.0, output="sos")
    np.testing.assert_array_equal(band.sos, expected)
    high = filters.highpass(250.0, 0.5)
    expected = signal.butter(2, 0.5, btype="highpass", fs=250.0, output="sos")
    np.testing.assert_array_equal(high.sos, expected)
