"""Streaming, causal QRS detection with a fixed decision latency.

The detector is a Pan-Tompkins energy detector reorganised for chunks:

1. ``clean``: baseline-wander high-pass (0.5 Hz) and mains notch; the signal R peaks are
   located on and that beat morphology is read from.
2. ``energy``: 5-15 Hz band-pass of ``clean``, first difference, squared (polarity does
   not matter), moving-window integral over ``WINDOW`` s.
3. Candidates are local maxima of the root of the envelope (RMS slope, so levels scale
   with amplitude rather than its square). One is screened once the envelope is known
   ``LOOKAHEAD`` s past it: no larger maximum within ``REFRACTORY`` before or
   ``LOOKAHEAD`` after it, and above an adaptive threshold ``THRESHOLD`` of the way from
   the running noise-peak level to the signal-peak level (Pan-Tompkins' SPKI/NPKI). Instead
   of a search back, which would break the fixed latency, the threshold halves once a beat
   is overdue (1.5 running RR intervals) and again for every further RR, and a beat found
   that way pulls the signal level down fast: this recovers from a sudden amplitude drop.
   A maximum within ``T_WAVE_WINDOW`` of the last beat whose steepest slope is under half
   that beat's is a T wave.
4. A screened candidate is held until the rest of the latency budget (at most
   ``LOOKAHEAD_MAX``) has passed; a larger maximum in that time wins (a tall P wave is
   followed by its QRS).
5. The R peak is the largest deviation of ``clean`` from its local mean in the window the
   envelope maximum implies, so polarity (and inverted leads) does not matter.

Every detection is released when the sample ``LATENCY`` s after its R peak has been fed:
a fixed, documented decision latency (in the rare very wide complex whose envelope peaks
more than ``LATENCY - LOOKAHEAD`` after the R peak the decision comes up to that much
later; ``late`` counts them). The first ``LEARNING`` s only set the levels: beats in them
are reported when learning ends. The per-sample work is vectorised per chunk; Python runs
once per envelope maximum, a handful per beat.

Positions are absolute sample indices from the first sample fed (see ``vocabulary``).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

import numpy as np
from numpy.typing import NDArray

from gateway.analysis.filters import StreamingFilter, ecg_clean_filter, qrs_bandpass

try:
    # What np.convolve calls once it has validated its arguments, which costs as much as
    # the moving sum of a 0.25 s chunk itself. Same function, same result.
    from numpy._core.multiarray import correlate as _correlate
except ImportError:  # pragma: no cover - depends on the installed numpy
    _correlate = np.convolve

#: Moving-window integration length (s): about one QRS duration.
WINDOW = 0.10
#: How far past an envelope maximum the detector looks before deciding it (s).
LOOKAHEAD = 0.15
#: Longest look-ahead (s) when the latency budget allows it.
LOOKAHEAD_MAX = 0.25
#: Refractory period (s): an envelope maximum this close after a larger one is not a beat.
REFRACTORY = 0.20
#: Where the threshold sits between the noise-peak and signal-peak levels (0..1), on the
#: root of the envelope (RMS slope), so the levels scale with amplitude, not its square.
THRESHOLD = 0.25
#: Fixed decision latency (s): a beat is reported once the sample this long after its R
#: peak has been fed.
LATENCY = 0.30
#: Envelope maxima this close after a beat must also match its slope, or they are T waves.
T_WAVE_WINDOW = 0.36
#: Signal collected before the thresholds are first set (s).
LEARNING = 2.0
#: How much filtered history is kept for localisation and morphology (s).
HISTORY = 2.5


def _moving_sum(x: NDArray[np.float64], ones: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.convolve(x, ones, "valid")`` (``ones`` is symmetric, so no reversal needed)."""
    return _correlate(x, ones, "valid")


class _History:
    """The last ``size`` samples of a stream, addressed by absolute sample index."""

    __slots__ = ("_buf", "_fill", "_size", "start")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buf = np.zeros(4 * size, dtype=np.float64)
        self._fill = 0
        self.start = 0  # absolute index of _buf[0]

    def reserve(self, n: int) -> NDArray[np.float64]:
        """The next ``n`` samples' place in the buffer, to be written by the caller.

        Lets a filter write its output straight into the history (no temporary array).
        """
        if self._fill + n > self._buf.size:
            keep = min(self._size, self._fill)
            old = self._buf[self._fill - keep : self._fill]
            if keep + n > self._buf.size:
                self._buf = np.zeros(2 * (keep + n), dtype=np.float64)
            self._buf[:keep] = old  # overlapping copy is safe: numpy buffers it
            self.start += self._fill - keep
            self._fill = keep
        place = self._buf[self._fill : self._fill + n]
        self._fill += n
        return place

    def view(self, start: int, stop: int) -> NDArray[np.float64]:
        """Samples ``start``..``stop`` (absolute), clipped to what is kept."""
        lo = max(start - self.start, 0)
        hi = max(min(stop - self.start, self._fill), lo)
        return self._buf[lo:hi]


@dataclass(frozen=True, slots=True)
class QrsDetection:
    """One detected QRS complex.

    ``sample`` is the R peak (absolute sample index); ``peak`` the energy-envelope maximum
    that triggered it; ``energy`` that maximum's height (arbitrary units, mV^2 scale);
    ``decided_at`` the first sample index at which the detector knew of it.
    """

    sample: int
    peak: int
    energy: float
    decided_at: int


class QrsDetector:
    """Feed raw ECG in mV in chunks of any length; get QRS detections after ``latency``.

    ``fs`` is the sampling rate in Hz (125..1000). ``clean_history`` gives access to the
    recent baseline-removed, notch-filtered signal, which the beat classifier reads.
    """

    def __init__(self, fs: float, *, mains_hz: float = 50.0) -> None:
        self.fs = float(fs)
        self.latency = LATENCY
        self._clean = ecg_clean_filter(self.fs, mains_hz)
        # Band-pass then first difference (the FIR 1 - z^-1 as one more section).
        self._band = StreamingFilter.chain(
            qrs_bandpass(self.fs), StreamingFilter(np.array([[1.0, -1.0, 0.0, 1.0, 0.0, 0.0]]))
        )
        self._window = max(2, round(WINDOW * self.fs))
        self._ones = np.ones(self._window, dtype=np.float64)
        self._lookahead = round(LOOKAHEAD * self.fs)
        self._refractory = round(REFRACTORY * self.fs)
        self._lookahead_max = round(LOOKAHEAD_MAX * self.fs)
        self._latency = round(LATENCY * self.fs)
        self._t_wave = round(T_WAVE_WINDOW * self.fs)
        self._learning = round(LEARNING * self.fs)
        self._history = round(HISTORY * self.fs)
        # Where to look for the R peak relative to the envelope peak (samples before it).
        self._r_before = round((WINDOW + 0.10) * self.fs)
        self._r_after = round(0.02 * self.fs)
        self._slope_half = round(0.06 * self.fs)
        self.reset()

    def reset(self) -> None:
        """Forget everything; the next sample fed is sample 0 again."""
        self._clean.reset()
        self._band.reset()
        self._n = 0
        self._energy_tail = np.zeros(self._window - 1, dtype=np.float64)
        self._env_tail = np.zeros(2, dtype=np.float64)
        self._y = _History(self._history)
        self._slope = _History(self._history)
        self._hist_start = 0
        self._candidates: list[tuple[int, float]] = []
        self._decided = 0
        self._hold: tuple[int, int] | None = None
        self._lowered = False
        self._slope_now = 0.0
        self._learn_max = 0.0
        self._learn_sum = 0.0
        self._spk = 0.0
        self._npk = 0.0
        self._ready = False
        self._last_peak: int | None = None
        self._last_slope = 0.0
        self._last_r: int | None = None
        self._rr: list[int] = []
        self._rr_median = 0.0  # of _rr, kept with it: read at every screened peak
        self._outbox: list[QrsDetection] = []
        self.late = 0

    @property
    def samples_fed(self) -> int:
        """How many samples have been fed since the start (or ``reset``)."""
        return self._n

    def clean_history(self, start: int, stop: int) -> NDArray[np.float64]:
        """The clean signal (mV) for absolute samples ``start``..``stop`` (clipped to history)."""
        return self._y.view(start, stop)

    @property
    def history_start(self) -> int:
        """Absolute index of the oldest sample still in ``clean_history``."""
        return self._hist_start

    def feed(self, samples: NDArray[np.float64]) -> list[QrsDetection]:
        """Process the next chunk (mV); return detections whose latency has elapsed."""
        x = np.asarray(samples, dtype=np.float64).ravel()
        if x.size == 0:
            return []
        start = self._n
        # Filtered straight into the history (decisions in this chunk read it there).
        y = self._y.reserve(x.size)
        y[:] = x
        self._clean.feed_in_place(y)
        slope = self._slope.reserve(x.size)
        slope[:] = y
        self._band.feed_in_place(slope)  # band-passed first difference
        self._hist_start = self._y.start
        energy = np.concatenate((self._energy_tail, slope * slope))
        env = _moving_sum(energy, self._ones)  # over WINDOW
        self._energy_tail = energy[1 - self._window :]
        self._n = start + x.size

        # Local maxima of the envelope; ext[0] is sample start-2.
        ext = np.concatenate((self._env_tail, env))
        mid = ext[1:-1]
        # ndarray.nonzero, not np.flatnonzero: the same indices without its Python wrapper.
        idx = ((mid > ext[:-2]) & (mid >= ext[2:])).nonzero()[0]
        if idx.size:
            positions = (idx + (start - 1)).tolist()
            values = np.sqrt(mid[idx]).tolist()
            self._candidates.extend(zip(positions, values, strict=True))
        self._env_tail = ext[-2:]

        if not self._ready:
            first = max(0, min(self._learning - start, x.size))
            if first:
                self._learn_max = max(self._learn_max, float(np.sqrt(env[:first].max())))
                self._learn_sum += float(np.sqrt(env[:first]).sum())
            if self._n >= self._learning:
                self._spk = 0.5 * self._learn_max
                self._npk = 0.5 * self._learn_sum / self._learning
                self._ready = True
        if self._ready:
            self._decide()
        return self._release()

    def _decide(self) -> None:
        """Decide every candidate whose look-ahead window is complete."""
        cands = self._candidates
        last = self._n - 2  # the last sample whose envelope maximum status is known
        horizon = last - self._lookahead
        la = self._lookahead
        i = self._decided
        while i < len(cands):
            pos, value = cands[i]
            if pos > horizon:
                break
            if self._hold is None:
                if self._suppressed(i, pos - self._refractory, pos + la):
                    i += 1
                    continue
                r = self._screen(pos, value)
                if r is None:
                    i += 1
                    continue
                # Spend the rest of the latency budget looking for a larger maximum (a
                # tall P wave is followed by its QRS within ~0.25 s).
                # (Maxima up to sample d are known once sample d + 1 is in: hence the -1,
                # which makes the decision land exactly on sample r + latency.)
                self._hold = (r, min(r + self._latency - 1, pos + self._lookahead_max))
            r, deadline = self._hold
            if deadline > last:
                break
            self._hold = None
            if self._suppressed(i, pos, deadline):
                self._npk += 0.125 * (value - self._npk)
            else:
                self._accept(pos, value, r)
            i += 1
        # Keep decided candidates still needed as left neighbours for suppression.
        keep_from = i
        while keep_from > 0 and cands[keep_from - 1][0] >= horizon - self._refractory:
            keep_from -= 1
        del cands[:keep_from]
        self._decided = i - keep_from

    def _suppressed(self, i: int, lo: int, hi: int) -> bool:
        """Is a larger envelope maximum than candidate ``i`` within ``lo``..``hi``?"""
        cands = self._candidates
        value = cands[i][1]
        j = i - 1
        while j >= 0 and cands[j][0] >= lo:
            if cands[j][1] > value:
                return True
            j -= 1
        j = i + 1
        while j < len(cands) and cands[j][0] <= hi:
            if cands[j][1] > value:
                return True
            j += 1
        return False

    def _screen(self, pos: int, value: float) -> int | None:
        """Threshold one envelope peak; the R peak if it may be a QRS, else ``None``."""
        threshold = self._npk + THRESHOLD * (self._spk - self._npk)
        self._lowered = False
        if self._last_peak is not None and self._rr:
            rr = self._rr_median
            overdue = (pos - self._last_peak) / rr - 1.5
            if overdue > 0:
                # Halve once a beat is overdue, and again for every further RR interval.
                threshold *= 0.5 ** (1.0 + overdue)
                self._lowered = True
        if value <= threshold:
            self._npk += 0.125 * (value - self._npk)
            return None
        slope = self._peak_slope(pos)
        if (
            self._last_peak is not None
            and pos - self._last_peak < self._t_wave
            and slope < 0.5 * self._last_slope
        ):
            self._npk += 0.125 * (value - self._npk)
            return None
        self._slope_now = slope
        r = self._locate_r(pos)
        if self._last_r is not None and r <= self._last_r:
            return None
        return r

    def _accept(self, pos: int, value: float, r: int) -> None:
        # A beat found below the usual threshold means the amplitude fell: adapt fast.
        # Large peaks count at most 3x the level, so one artefact cannot blind the
        # detector for long.
        weight = 0.5 if self._lowered else 0.125
        self._spk += weight * (min(value, 3.0 * self._spk) - self._spk)
        if self._last_peak is not None:
            self._rr.append(pos - self._last_peak)
            if len(self._rr) > 8:
                del self._rr[0]
            self._rr_median = median(self._rr)
        self._last_peak = pos
        self._last_slope = self._slope_now
        self._last_r = r
        if pos + self._lookahead + 2 > r + self._latency:
            # The look-ahead ends after the promised latency (very wide complexes).
            self.late += 1
        self._outbox.append(QrsDetection(r, pos, value, self._n))

    def _peak_slope(self, pos: int) -> float:
        seg = self._slope.view(pos - self._window - self._slope_half, pos + 1)
        # (ufunc reduce: what ndarray.max calls, minus a Python-level wrapper.)
        return float(np.maximum.reduce(np.abs(seg))) if seg.size else 0.0

    def _locate_r(self, pos: int) -> int:
        lo = pos - self._r_before
        seg = self._y.view(lo, pos + self._r_after)
        if seg.size == 0:
            return pos
        lo = max(lo, self._y.start)
        mean = np.add.reduce(seg) / seg.size  # what seg.mean() computes, minus its wrapper
        return int(np.abs(seg - mean).argmax()) + lo

    def _release(self) -> list[QrsDetection]:
        """Hand out detections whose R peak is at least ``latency`` old."""
        out = self._outbox
        if not out:
            return []
        due = self._n - 1 - self._latency
        k = 0
        while k < len(out) and out[k].sample <= due:
            k += 1
        released = out[:k]
        del out[:k]
        return released
