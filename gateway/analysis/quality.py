"""Per-chunk ECG signal quality: is the signal fit for arrhythmia analysis?

Each chunk is judged on the last :data:`WINDOW_S` seconds of signal (the chunk and what
came before it), so a judgement does not depend on how the stream is cut:

* **flat**: peak-to-peak below :data:`FLAT_MV` (0.02 mV). A heart in asystole still
  shows amplifier noise and baseline drift above this; a disconnected or shorted input
  does not. Index 0.
* **saturated**: a quarter or more of the window sits exactly on its own maximum or
  minimum (an amplifier at its rail), or the baseline-free signal spans more than
  :data:`RANGE_MV` (10 mV, electrode motion). Index 0.
* **noise**: muscle and mains-like noise measured as the RMS of the signal above
  :data:`HF_CUTOFF_HZ` (40 Hz, or 0.3 x the rate when that is lower; mains
  frequency and harmonics notched out first, as the QRS front end removes them too) relative to the
  spread (5th-95th percentile) of the 1-30 Hz ECG band. A clean ECG's sharpest QRS puts
  little energy there; EMG puts most of its energy there. The index falls linearly from 1
  at ratio 0 to 0 at twice :data:`NOISE_RATIO`; at or above :data:`NOISE_RATIO` the chunk
  is not analysable.

``Quality.index`` is 0..1 (1 clean); ``analysable`` is what rhythm analysis obeys.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from gateway.analysis.filters import StreamingFilter, bandpass, highpass, mains_filter

WINDOW_S: Final = 1.0
FLAT_MV: Final = 0.02
RANGE_MV: Final = 10.0
RAIL_FRACTION: Final = 0.25
HF_CUTOFF_HZ: Final = 40.0
NOISE_RATIO: Final = 0.3
#: Judge at most this often (s); shorter chunks in between get the last judgement.
STEP_S: Final = 0.1
#: High-frequency RMS (mV) below which noise never makes a chunk unanalysable.
NOISE_FLOOR_MV: Final = 0.03

Problem = Literal["", "flat", "saturated", "noise"]


@dataclass(frozen=True, slots=True)
class Quality:
    """Signal quality of one chunk: ``index`` 0..1, ``analysable`` and, if not, why."""

    index: float
    analysable: bool
    problem: Problem = ""
    #: The noise ratio (high-frequency RMS / ECG-band spread) behind the index.
    noise_ratio: float = 0.0


class SignalQuality:
    """Streaming quality judge for one ECG lead sampled at ``fs`` Hz (125-1000)."""

    def __init__(self, fs: float, *, mains_hz: float = 50.0) -> None:
        self.fs = fs
        self._window = max(2, round(WINDOW_S * fs))
        self._band = bandpass(fs, 1.0, 30.0)
        # Mains interference is removed by the front end before QRS detection, so it is
        # not noise that stops analysis: notch it out of the noise band too.
        self._hf = StreamingFilter.chain(
            mains_filter(fs, mains_hz), highpass(fs, min(HF_CUTOFF_HZ, 0.3 * fs))
        )
        self._step = max(1, round(STEP_S * fs))
        self.reset()

    def reset(self) -> None:
        """Forget the past; the next chunk starts a new signal."""
        self._band.reset()
        self._hf.reset()
        # Raw, band and noise signal, newest at ``_end``; the window is the ``_filled``
        # samples before it. The block holds several windows so that the samples move
        # back to its start only once every few windows, not at every chunk.
        self._windows = np.zeros((3, 4 * self._window))
        self._end = 0
        self._filled = 0
        self._since = 0
        self._last = Quality(1.0, True)
        self.band = np.zeros(0)
        self.clean = np.zeros(0)

    def feed(self, samples_mV: npt.NDArray[np.float64]) -> Quality:
        """Judge the window ending with this chunk (samples in mV).

        A chunk shorter than :data:`STEP_S` after the last judgement gets that judgement
        (the window has barely moved); :attr:`band` is always this chunk's 1-30 Hz band
        (read it before the next ``feed``: it may be a view of the window buffer) and
        :attr:`clean` the chunk with non-finite samples set to 0 mV.
        """
        x = np.asarray(samples_mV, dtype=np.float64)
        if len(x) == 0:
            self.band = self.clean = np.zeros(0)
            return self._last
        # A finite sum means every sample is finite (one reduction instead of two); an
        # overflowing sum of finite samples falls through to the exact test.
        finite = math.isfinite(np.add.reduce(x)) or bool(np.isfinite(x).all())
        clean = x if finite else np.where(np.isfinite(x), x, 0.0)
        self.clean = clean
        if len(x) < self._window:
            # The band and noise filters write straight into the windows; ``band`` is a
            # view of this chunk's part, valid until the next ``feed``.
            block = self._place(len(x))
            block[...] = clean  # raw, and the input of both filters, in one copy
            _, band, hf = block
            self._band.feed_in_place(band)
            self._hf.feed_in_place(hf)
            self.band = band
        else:
            self.band = self._band.feed(clean)
            self._push(clean, self.band, self._hf.feed(clean))
        if not finite:
            self._since = 0
            self._last = Quality(0.0, False, "saturated")
            return self._last
        self._since += len(x)
        if self._since >= self._step or not self._last.analysable:
            self._since = 0
            self._last = judge(self._windows[:, self._end - self._filled : self._end])
        return self._last

    def _place(self, k: int) -> npt.NDArray[np.float64]:
        """Room for the next ``k`` (<= window) samples of raw, band and noise signal."""
        buf = self._windows
        if self._end + k > buf.shape[1]:
            kept = self._filled  # <= w, and the block is 4 w long: no overlap
            buf[:, :kept] = buf[:, self._end - kept : self._end]
            self._end = kept
        end = self._end
        self._end = end + k
        self._filled = min(self._window, self._filled + k)
        return buf[:, end : end + k]

    def _push(self, *signals: npt.NDArray[np.float64]) -> None:
        """Append a chunk at least a window long (only its last window counts)."""
        self._end = self._filled = 0
        for row, y in zip(self._place(self._window), signals, strict=True):
            row[:] = y[-self._window :]


@functools.cache
def _ranks(n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], int, int]:
    """For ``n`` samples: the ranks ``partition`` needs for the 5th and 95th percentiles
    (nearest rank), the same with the extremes (0 and ``n - 1``), and the two percentile
    ranks. Built once per length instead of converted from tuples at every call."""
    lo, hi = int(0.05 * (n - 1)), int(0.95 * (n - 1))
    kth = np.array((lo, hi), dtype=np.intp)
    ranks = np.array((0, lo, hi, n - 1), dtype=np.intp)
    kth.flags.writeable = ranks.flags.writeable = False
    return kth, ranks, lo, hi


def spread(x: npt.NDArray[np.float64]) -> float:
    """5th to 95th percentile distance (nearest rank), by partial sort."""
    kth, _, lo, hi = _ranks(len(x))
    part = x.copy()  # np.partition's copy, without its Python wrapper
    part.partition(kth)
    return float(part[hi] - part[lo])


def judge(window: npt.NDArray[np.float64]) -> Quality:
    """Quality of one window, shape (3, n): raw mV, its 1-30 Hz band, its noise band."""
    raw, _, hf = window
    n = window.shape[1]
    _, ranks, lo, hi = _ranks(n)
    # One partial sort of raw and band gives the extremes of both and the band's spread
    # (numpy's per-call cost, not the sorting, dominates at these sizes).
    part = window[:2].copy()
    part.partition(ranks, axis=1)
    (bottom, raw_lo, raw_hi, top), (ecg_bottom, ecg_lo, ecg_hi, ecg_top) = part[:, ranks].tolist()
    if top - bottom < FLAT_MV:
        return Quality(0.0, False, "flat")
    # Samples on a rail sort beyond the percentiles: while neither percentile is on its
    # extreme, at most (n - 1 - hi) + lo samples (about a tenth) can be on a rail, fewer
    # than RAIL_FRACTION, and counting them cannot change the verdict.
    railed = 0.0
    if raw_hi == top or raw_lo == bottom or (n - 1 - hi + lo) / n >= RAIL_FRACTION:
        railed = (np.count_nonzero(raw == top) + np.count_nonzero(raw == bottom)) / n
    if railed >= RAIL_FRACTION or ecg_top - ecg_bottom > RANGE_MV:
        return Quality(0.0, False, "saturated")
    # sum / n is what np.mean computes, without its Python-level dispatch.
    noise_rms = math.sqrt(float(np.add.reduce(np.square(hf))) / len(hf))
    ratio = noise_rms / max(ecg_hi - ecg_lo, 1e-6)  # spread(band)
    # Below the floor, noise is amplifier hiss on a quiet signal (asystole): no penalty.
    effective = ratio * min(1.0, noise_rms / NOISE_FLOOR_MV)
    index = min(1.0, max(0.0, 1.0 - effective / (2.0 * NOISE_RATIO)))
    if ratio >= NOISE_RATIO and noise_rms >= NOISE_FLOOR_MV:
        return Quality(index, False, "noise", ratio)
    return Quality(index, True, "", ratio)
