"""Causal IIR filters whose state survives chunk boundaries.

A waveform arrives in chunks of any length; a filter that restarted at every chunk would
ring at each boundary. ``StreamingFilter`` keeps scipy's second-order-section state
(``sosfilt`` with ``zi``) between calls, so feeding a signal in pieces gives exactly the
output of one call on the whole signal.

The factories cover the ECG front end at any rate from 125 to 1000 Hz:
``baseline_filter`` (wander removal), ``mains_filter`` (50/60 Hz and harmonics),
``qrs_bandpass`` (the QRS energy band) and a generic ``bandpass``. All inputs and outputs
are in the signal's own unit (mV for ECG); frequencies are in Hz.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray
from scipy import signal  # type: ignore[import-untyped]

try:
    # scipy's compiled kernel behind ``sosfilt``. The public wrapper validates and
    # reshapes on every call, which costs ~100 us: 30x the filtering itself for a
    # 0.25 s chunk. Fall back to the public function if a scipy release moves it.
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the installed scipy
    _sosfilt_kernel = None

#: Input rates the factories are designed and tested for (Hz).
MIN_RATE = 125.0
MAX_RATE = 1000.0

#: Notch quality factor: -3 dB width = f0 / Q, so about 1.7 Hz at 50 Hz. Narrow enough to
#: leave the QRS band alone, wide enough to cover mains drifting by +-0.5 Hz.
NOTCH_Q = 30.0


def _check_rate(fs: float) -> None:
    if not MIN_RATE <= fs <= MAX_RATE:
        raise ValueError(f"sampling rate {fs} Hz is outside {MIN_RATE:g}..{MAX_RATE:g} Hz")


# Filter designs are cached: a stream gap rebuilds a bed's pipelines, and designing their
# filters again took ~15 ms of the event loop each time (scipy's filter design), more under
# load, when gaps are likelier. The cached arrays are read-only; callers get copies,
# because the compiled sosfilt kernel wants writable coefficients.


@functools.lru_cache(maxsize=64)
def _butter_design(
    order: int, edges: float | tuple[float, float], btype: str, fs: float
) -> NDArray[np.float64]:
    sos = np.asarray(signal.butter(order, edges, btype=btype, fs=fs, output="sos"))
    sos.setflags(write=False)
    return sos


@functools.lru_cache(maxsize=64)
def _steady_state(sos_bytes: bytes, sections: int) -> NDArray[np.float64]:
    """``sosfilt_zi`` of the (sections, 6) float64 coefficients in ``sos_bytes``."""
    sos = np.frombuffer(sos_bytes, dtype=np.float64).reshape(sections, 6)
    zi = np.asarray(signal.sosfilt_zi(sos), dtype=np.float64)
    zi.setflags(write=False)
    return zi


class StreamingFilter:
    """A causal SOS filter carrying its state across ``feed`` calls.

    ``feed`` takes a 1-D chunk ``(n,)`` or a channel block ``(channels, n)``; the channel
    count is fixed by the first chunk after construction or ``reset``. The state starts
    at the filter's steady state for the first sample (``sosfilt_zi * x[0]``), so a DC
    offset at switch-on does not produce a step transient.
    """

    __slots__ = ("_shape", "_zi", "_zi_unit", "sos")

    def __init__(self, sos: NDArray[np.float64]) -> None:
        sos = np.atleast_2d(np.asarray(sos, dtype=np.float64))
        if sos.ndim != 2 or sos.shape[1] != 6:
            raise ValueError(f"sos must have shape (sections, 6), got {sos.shape}")
        self.sos = sos
        self._zi_unit = _steady_state(sos.tobytes(), sos.shape[0])
        self._zi: NDArray[np.float64] | None = None
        self._shape: tuple[int, ...] = ()

    @classmethod
    def chain(cls, *filters: StreamingFilter) -> StreamingFilter:
        """One filter equal to applying ``filters`` in order (one ``sosfilt`` call)."""
        if not filters:
            raise ValueError("chain needs at least one filter")
        return cls(np.vstack([f.sos for f in filters]))

    def feed(self, chunk: NDArray[np.float64]) -> NDArray[np.float64]:
        """Filter the next chunk; returns an array of the same shape (float64)."""
        if (
            self._zi is not None
            and not self._shape
            and _sosfilt_kernel is not None
            and isinstance(chunk, np.ndarray)
            and chunk.ndim == 1
        ):
            # The streaming case (one lead, state running): skip the shape checks, which
            # cost as much as the filtering of a 0.25 s chunk.
            row = np.array(chunk, dtype=np.float64, ndmin=2)  # a C-contiguous copy, (1, n)
            _sosfilt_kernel(self.sos, row, self._zi)
            return row.ravel()  # a view: row is contiguous
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim not in (1, 2):
            raise ValueError(f"chunk must be 1-D or (channels, n), got shape {x.shape}")
        lead_shape = x.shape[:-1]
        if self._zi is None:
            if x.shape[-1] == 0:
                return x.copy()
            self._shape = lead_shape
            first = x.reshape(-1, x.shape[-1])[:, 0]
            # (channels, sections, 2), the layout of the compiled kernel.
            self._zi = np.ascontiguousarray(self._zi_unit[None, :, :] * first[:, None, None])
        elif lead_shape != self._shape:
            raise ValueError(
                f"chunk has {lead_shape or 'no'} channels, the filter was started with "
                f"{self._shape or 'no'} channels; reset() to change"
            )
        block = np.array(x.reshape(-1, x.shape[-1]), dtype=np.float64, order="C")
        if _sosfilt_kernel is not None:
            _sosfilt_kernel(self.sos, block, self._zi)  # in place, state updated
        else:  # pragma: no cover - depends on the installed scipy
            zi = self._zi.transpose(1, 0, 2)
            block, zf = signal.sosfilt(self.sos, block, axis=-1, zi=zi)
            self._zi = np.ascontiguousarray(np.asarray(zf).transpose(1, 0, 2))
        return block.reshape(x.shape)

    def feed_in_place(self, chunk: NDArray[np.float64]) -> None:
        """Filter the next chunk in place: a 1-D float64 array, e.g. a slice of a buffer.

        Saves the allocation and a copy when the caller keeps the output in a buffer of
        its own; the result is the one :meth:`feed` returns.
        """
        if chunk.ndim != 1 or chunk.dtype != np.float64:
            raise ValueError(f"need a 1-D float64 chunk, got {chunk.dtype} {chunk.shape}")
        running = self._zi is not None and not self._shape and chunk.flags.c_contiguous
        if _sosfilt_kernel is None or not running:
            chunk[:] = self.feed(chunk)
        else:
            _sosfilt_kernel(self.sos, chunk[None, :], self._zi)  # state updated

    def reset(self) -> None:
        """Forget the state; the next chunk starts a new signal."""
        self._zi = None
        self._shape = ()


def bandpass(fs: float, low: float, high: float, order: int = 2) -> StreamingFilter:
    """Butterworth band-pass ``low``..``high`` Hz (``order`` per edge, so 2*order poles)."""
    _check_rate(fs)
    if not 0 < low < high < fs / 2:
        raise ValueError(f"band {low}..{high} Hz must lie inside 0..{fs / 2:g} Hz")
    return StreamingFilter(_butter_design(order, (low, high), "bandpass", fs).copy())


def highpass(fs: float, cutoff: float, order: int = 2) -> StreamingFilter:
    """Butterworth high-pass at ``cutoff`` Hz."""
    _check_rate(fs)
    if not 0 < cutoff < fs / 2:
        raise ValueError(f"cutoff {cutoff} Hz must lie inside 0..{fs / 2:g} Hz")
    return StreamingFilter(_butter_design(order, cutoff, "highpass", fs).copy())


def baseline_filter(fs: float, cutoff: float = 0.5) -> StreamingFilter:
    """Baseline-wander removal: 2nd-order Butterworth high-pass at ``cutoff`` (0.5 Hz).

    0.5 Hz keeps the ST segment and T wave shape usable for morphology while removing
    respiration and electrode drift; group delay in the QRS band is under 1 ms.
    """
    return highpass(fs, cutoff, order=2)


def mains_filter(fs: float, mains_hz: float = 50.0, q: float = NOTCH_Q) -> StreamingFilter:
    """Notch at the mains frequency (50 or 60 Hz) and each harmonic below Nyquist.

    A harmonic is kept while its notch (width ``f0 / q``) fits below Nyquist: at 125 Hz
    a 60 Hz notch is kept (Nyquist 62.5 Hz); a harmonic on or next to Nyquist is left
    out because a notch there is undefined.
    """
    _check_rate(fs)
    if mains_hz not in (50.0, 60.0):
        raise ValueError(f"mains_hz must be 50 or 60, got {mains_hz}")
    return StreamingFilter(_mains_design(fs, mains_hz, q).copy())


@functools.lru_cache(maxsize=16)
def _mains_design(fs: float, mains_hz: float, q: float) -> NDArray[np.float64]:
    sections = []
    harmonic = mains_hz
    while harmonic < fs / 2 - harmonic / q:
        b, a = signal.iirnotch(harmonic, q, fs=fs)
        sections.append(signal.tf2sos(b, a))
        harmonic += mains_hz
    if not sections:
        raise ValueError(f"{mains_hz} Hz is above the Nyquist frequency of {fs} Hz")
    sos = np.vstack(sections)
    sos.setflags(write=False)
    return sos


def qrs_bandpass(fs: float) -> StreamingFilter:
    """The QRS energy band, 5-15 Hz (Pan-Tompkins): passes QRS, damps P/T waves and EMG."""
    return bandpass(fs, 5.0, 15.0, order=2)


def ecg_clean_filter(fs: float, mains_hz: float = 50.0) -> StreamingFilter:
    """Baseline removal then mains notch in one filter: the signal used for morphology."""
    return StreamingFilter.chain(baseline_filter(fs), mains_filter(fs, mains_hz))
