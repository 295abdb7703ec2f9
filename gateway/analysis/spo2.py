"""Pulse detection on the plethysmogram, and the ECG/pleth cross-check rules.

:class:`PulseDetector` is causal and works at any rate from 50 to 500 Hz: the pleth is
band-passed 0.5-8 Hz (pulse fundamental and first harmonics, no DC or drift), and a pulse
is the steepest point of each upstroke: a local maximum of the first difference, the
largest in the next 0.25 s, that exceeds 0.4 x the median slope of the last 8 pulses (the
bar halves each second after 2 s without a pulse), at least 0.25 s (240 /min) after the
previous pulse. A pulse is reported when the sample
one refractory period later has been seen, so the detector's latency is 0.25 s.

``pulse_rate`` is 60 / median of the last 8 pulse intervals (/min). ``pulsatile`` is
true when at least :data:`MIN_PULSES` pulses came in the last :data:`PULSATILE_WINDOW_S`
seconds with intervals of 0.25-2 s (30-240 /min), alike in shape (median correlation of
successive pulses >= 0.8) and steadily spaced (interval coefficient of variation < 0.3):
a perfusing rhythm is reaching the finger.

:func:`cross_check` states the rules the analysis service applies (see there).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import signal  # type: ignore[import-untyped]

from gateway.analysis.filters import StreamingFilter

MIN_RATE_HZ: Final = 50.0
MAX_RATE_HZ: Final = 500.0
REFRACTORY_S: Final = 0.25
PULSATILE_WINDOW_S: Final = 8.0
MIN_PULSES: Final = 4
RATE_PULSES: Final = 8
#: A pulse is an upstroke at least this fraction of the median recent upstroke slope.
SLOPE_FRACTION: Final = 0.4
#: Seconds without a pulse after which the slope threshold halves (then every second).
SEARCH_AFTER_S: Final = 2.0
#: Pulsatile means steady: successive pulse shapes (0.1 s before to 0.25 s after the
#: upstroke) correlate at least this well (median), intervals vary less than this (std/mean).
MIN_SHAPE_MATCH: Final = 0.8
MAX_INTERVAL_CV: Final = 0.3
SHAPE_BEFORE_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class PulseState:
    """The pleth's state after a chunk: pulses found in it (s on the stream axis)."""

    pulses: list[float]
    pulse_rate: float | None
    pulsatile: bool


class PulseDetector:
    """Causal pulse detection on one plethysmogram sampled at ``fs`` Hz (50-500)."""

    def __init__(self, fs: float) -> None:
        if not MIN_RATE_HZ <= fs <= MAX_RATE_HZ:
            raise ValueError(f"pleth rate {fs} Hz is outside {MIN_RATE_HZ:g}..{MAX_RATE_HZ:g}")
        self.fs = float(fs)
        high = min(8.0, 0.4 * fs)
        self._filter = StreamingFilter(
            signal.butter(2, [0.5, high], btype="bandpass", fs=fs, output="sos")
        )
        self._refractory = max(1, round(REFRACTORY_S * fs))
        self._tail = np.zeros(0)  # filtered samples not yet decided (plus one before)
        self._tail_start = 0  # absolute index of _tail[0]
        self._n = 0
        self._slopes: deque[float] = deque(maxlen=8)
        self._last_pulse: int | None = None
        self._pulses: deque[float] = deque()
        self._shape_match: deque[float] = deque(maxlen=16)
        self._shape: npt.NDArray[np.float64] | None = None
        self._before = max(1, round(SHAPE_BEFORE_S * fs))
        self._scan_from = 0
        self._next_decay = 0

    def reset(self) -> None:
        self.__init__(self.fs)  # type: ignore[misc]

    def feed(self, samples: npt.NDArray[np.float64]) -> PulseState:
        """Add a chunk of pleth samples (any unit: only the shape matters)."""
        x = np.asarray(samples, dtype=np.float64)
        found: list[float] = []
        if len(x):
            y = self._filter.feed(np.nan_to_num(x))
            self._tail = np.concatenate([self._tail, y])
            self._n += len(x)
            found = self._decide()
        now = self._n / self.fs
        while self._pulses and self._pulses[0] < now - PULSATILE_WINDOW_S:
            self._pulses.popleft()
        return PulseState(found, self._rate(), self._pulsatile(now))

    def _decide(self) -> list[float]:
        d = np.diff(self._tail)
        found: list[float] = []
        # Candidates need a full refractory period of later samples before they are final;
        # the tail also keeps SHAPE_BEFORE_S of history so each pulse's shape can be cut.
        last = len(d) - self._refractory
        i = max(1, self._scan_from - self._tail_start)
        while i < last:
            if d[i] > 0 and d[i] > d[i - 1] and d[i] >= d[i + 1]:
                pos = self._tail_start + i
                self._decay(pos)
                due = self._last_pulse is None or pos - self._last_pulse >= self._refractory
                steepest = d[i] >= d[i : i + self._refractory].max()
                if due and steepest and d[i] >= self._threshold():
                    self._slopes.append(float(d[i]))
                    self._last_pulse = pos
                    self._pulses.append(pos / self.fs)
                    self._shape_match.append(self._match(i))
                    found.append(pos / self.fs)
                    i += self._refractory
                    continue
            i += 1
        self._scan_from = self._tail_start + max(i, last)
        keep = max(0, last - self._before)
        self._tail = self._tail[keep:]
        self._tail_start += keep
        return found

    def _match(self, i: int) -> float:
        """Correlation of this pulse's shape with the previous pulse's (0 for the first)."""
        shape = self._tail[max(0, i - self._before) : i + self._refractory]
        previous, self._shape = self._shape, shape
        if previous is None or len(previous) != len(shape) or len(shape) < 3:
            return 0.0
        a, b = shape - shape.mean(), previous - previous.mean()
        denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum()) / denom if denom > 0 else 0.0

    def _threshold(self) -> float:
        return SLOPE_FRACTION * float(np.median(self._slopes)) if self._slopes else 0.0

    def _decay(self, pos: int) -> None:
        """No pulse for :data:`SEARCH_AFTER_S`: lower the bar (weaker pulse, new site)."""
        if self._last_pulse is None or not self._slopes:
            return
        if pos - self._last_pulse > SEARCH_AFTER_S * self.fs and pos >= self._next_decay:
            self._slopes = deque((v * 0.5 for v in self._slopes), maxlen=8)
            self._next_decay = pos + round(self.fs)

    def _rate(self) -> float | None:
        times = list(self._pulses)[-(RATE_PULSES + 1) :]
        if len(times) < 3:
            return None
        return 60.0 / float(np.median(np.diff(times)))

    def _pulsatile(self, now: float) -> bool:
        times = [t for t in self._pulses if t >= now - PULSATILE_WINDOW_S]
        if len(times) < MIN_PULSES:
            return False
        gaps = np.diff(times)
        if not np.all((gaps >= REFRACTORY_S) & (gaps <= 2.0)):
            return False
        # Noise makes "pulses" of random shape at random intervals; a pulse train does not.
        matches = list(self._shape_match)[-(len(times) - 1) :]
        alike = float(np.median(matches)) >= MIN_SHAPE_MATCH
        return alike and float(np.std(gaps) / np.mean(gaps)) < MAX_INTERVAL_CV


Verdict = Literal["confirmed", "vetoed", "unchecked"]


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """The outcome of checking an ECG rhythm alarm against the pleth, with its evidence."""

    verdict: Verdict
    reason: str


def cross_check(kind: str, pleth: PulseState | None, pleth_age_s: float | None) -> CrossCheck:
    """Rules for an ECG ``asystole`` or ``vf`` onset given the bed's pleth state.

    * **VF is never vetoed.** Without a pulse the alarm stands; with a pulsatile pleth the
      alarm stands too and the evidence is logged, because motion can fake a pleth pulse
      and a missed VF kills.
    * **Asystole** is vetoed (reported as ECG technical problem "cannot analyse" instead)
      only when a fresh pleth (updated within 2 s) is clearly pulsatile: >= 4 regular
      pulses in the last 8 s. A stale, absent or non-pulsatile pleth leaves it standing.
    """
    if pleth is None or pleth_age_s is None or pleth_age_s > 2.0:
        return CrossCheck("unchecked", "no fresh pleth")
    rate = "none" if pleth.pulse_rate is None else f"{pleth.pulse_rate:.0f} /min"
    evidence = f"pleth pulsatile={pleth.pulsatile}, pulse rate {rate}, age {pleth_age_s:.1f} s"
    if kind == "asystole" and pleth.pulsatile:
        return CrossCheck("vetoed", evidence)
    return CrossCheck("confirmed" if not pleth.pulsatile else "unchecked", evidence)
