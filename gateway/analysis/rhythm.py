"""Rhythm analysis: beats, waveform and signal quality in; rhythm episodes and heart rate out.

Fed once per chunk with the chunk's samples (mV, raw: the VF detector filters them
itself), the beats decided during the chunk, and the chunk's :class:`Quality`. Time is the
stream axis of :mod:`gateway.analysis.vocabulary` (seconds since the first sample).

Episode times. ``onset`` is when the analyser declares the episode (the stream time of the
chunk, or of the beat, that confirmed it), not a back-dated guess, so an alarm's delay is
``onset`` minus the true start; ``end`` is likewise when it is declared over (for episodes
ended by a beat, that beat's time).

Rules (defaults in :class:`RhythmSettings`):

* **heart rate**: 60 / median of the last 8 RR intervals (any beat class), updated at
  every beat; the median ignores a single ectopic or missed beat. When no beat has come
  for longer than twice that median RR, the rate is 60 / time since the last beat (it
  falls during a pause); 0 in asystole; ``None`` in VF and while the signal cannot be
  analysed.
* **asystole**: no beat for ``asystole_s`` (4 s) of analysable signal. Declared when the
  QRS detector could already have reported a beat (its latency), so the alarm comes at most
  ``asystole_s`` + latency + one chunk after the last beat. Ends at the next beat.
* **VF/VFL**: from the waveform alone, every chunk, on the last 4 s of the 1-30 Hz band:
  little energy above 12 Hz (no sharp QRS: < 6 % of the band's power), energy
  concentrated in 2.5-9 Hz (> 65 %), rarely near the baseline (< 32 % of samples within
  10 % of the peak; an organised rhythm rests on its isoelectric line between beats) and
  at least 0.15 mV peak-to-peak (else asystole or fine VF below the noise). Declared
  after 1.5 s of such windows, over after 3 s without. While the window holds more than
  0.3 mV of such activity without the sharpness test passing yet, asystole is held off.
* **VT**: >= 3 consecutive V beats whose mean rate is >= 100 /min; declared at the third;
  ``detail`` becomes ``sustained`` once it has lasted 30 s; ends at the next non-V beat.
* **brady / tachy**: heart rate below ``brady_bpm`` (40) or above ``tachy_bpm`` (150) at
  4 consecutive beats; over after 4 consecutive beats back inside.
* **pause**: no beat for ``pause_s`` (2.5 s); ends at the next beat.
* **AF**: over the last 32 RR intervals between two supraventricular beats (N or S; an
  interval touching a V, F or Q beat is skipped, so isolated ectopics do not count as
  irregularity), the median absolute successive RR difference divided by the median RR.
  On above 0.15; off below 0.08 on that window or on the last 12 intervals alone.
* **ectopy**: PVCs per minute (V beats in the last 60 s); a couplet (exactly two V beats
  between non-V beats) as an instantaneous event; bigeminy while the last 6 beats
  alternate N-V; frequent PVCs while the count is above ``pvc_per_minute``.

Quality gating: while the signal cannot be analysed (quality says so for 1 s; good again
after 2 s) a ``noise`` episode is open, beats are not used, and no episode may start.
Gating never ends a life-threatening episode (asystole, VF, VT): a lead falling off during
VF must not silence the VF alarm.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import scipy.fft  # type: ignore[import-untyped]

from gateway.analysis.filters import bandpass
from gateway.analysis.quality import Quality, spread
from gateway.analysis.settings import RhythmSettings
from gateway.analysis.vocabulary import Beat, RhythmEvent, RhythmKind

EctopyKind = Literal["couplet", "bigeminy", "frequent_pvcs"]


@dataclass(frozen=True, slots=True)
class Ectopy:
    """A ventricular-ectopy condition switching on (``active``) or off at ``time`` (s).

    A couplet is instantaneous: reported once, ``active`` true.
    """

    kind: EctopyKind
    time: float
    active: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VfEvidence:
    """The VF detector's features on its last window (logged with every VF decision).

    When ``near_baseline`` alone rules VF out (at or above its maximum), ``high_freq``,
    ``vf_band`` and ``amplitude_mV`` are not computed and are NaN: they could not change
    the verdict, and skipping them is most of the detector's cost in an organised rhythm.
    """

    high_freq: float
    vf_band: float
    near_baseline: float
    amplitude_mV: float
    vf_like: bool
    #: Sizable continuous activity without the sharpness test: holds off asystole.
    suspected: bool = False


@dataclass(frozen=True, slots=True)
class RhythmOutput:
    """What one chunk produced: episode events, ectopy, and the state after it."""

    events: list[RhythmEvent]
    ectopy: list[Ectopy]
    heart_rate: float | None
    pvc_per_minute: float
    vf: VfEvidence | None


# --- episode state machine: one table for every kind -----------------------------------------
State = Literal["idle", "pending", "active", "clearing"]
Signal = Literal["evidence", "no_evidence", "confirm", "clear", "end"]

#: (state, signal) -> next state. ``confirm``/``clear`` come when evidence (or its absence)
#: has lasted the kind's on/off delay; ``end`` is a hard end (a beat ends asystole).
TRANSITIONS: Final[dict[tuple[State, Signal], State]] = {
    ("idle", "evidence"): "pending",
    ("pending", "no_evidence"): "idle",
    ("pending", "confirm"): "active",
    ("active", "no_evidence"): "clearing",
    ("active", "end"): "idle",
    ("clearing", "evidence"): "active",
    ("clearing", "clear"): "idle",
    ("clearing", "end"): "idle",
    ("pending", "end"): "idle",
}

#: Per kind: (seconds of evidence before onset, seconds without evidence before end).
#: Beat-driven kinds (VT, pause, asystole) decide on their own and use 0.
DELAYS: Final[dict[RhythmKind, tuple[float, float]]] = {
    "noise": (1.0, 2.0),
    "vf": (1.5, 3.0),
    "asystole": (0.0, 0.0),
    "pause": (0.0, 0.0),
    "vt": (0.0, 0.0),
    "brady": (0.0, 0.0),
    "tachy": (0.0, 0.0),
    "afib": (0.0, 0.0),
}

#: Episodes that quality gating never ends.
LIFE_THREATENING: Final[frozenset[RhythmKind]] = frozenset({"asystole", "vf", "vt"})


@dataclass(slots=True)
class Episode:
    """One kind's state machine; :meth:`step` returns the event to emit, if any."""

    kind: RhythmKind
    state: State = "idle"
    since: float = 0.0  # when the current evidence (or its absence) began
    onset: float = 0.0
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.state in ("active", "clearing")

    def _go(self, signal: Signal) -> bool:
        nxt = TRANSITIONS.get((self.state, signal))
        if nxt is None:
            return False
        self.state = nxt
        return True

    def step(self, evidence: bool, now: float, detail: str = "") -> RhythmEvent | None:
        """Feed the evidence at ``now`` (s); emits onset/end after the kind's delays."""
        on_delay, off_delay = DELAYS[self.kind]
        if evidence:
            if self.state == "idle":
                self._go("evidence")
                self.since = now
            elif self.state == "clearing":
                self._go("evidence")
            if self.state == "pending" and now - self.since >= on_delay:
                self._go("confirm")
                self.onset = now
                self.detail = detail
                return RhythmEvent(self.kind, now, None, detail)
            return None
        if self.state == "pending":
            self._go("no_evidence")
        elif self.state == "active":
            self._go("no_evidence")
            self.since = now
        if self.state == "clearing" and now - self.since >= off_delay:
            self._go("clear")
            return RhythmEvent(self.kind, self.onset, now, self.detail)
        return None

    def end(self, now: float) -> RhythmEvent | None:
        """End at once (``now`` s) if active."""
        was_active = self.active
        self._go("end")
        if was_active:
            # A beat that ends an episode may predate its declaration by the QRS latency.
            return RhythmEvent(self.kind, self.onset, max(now, self.onset), self.detail)
        return None

    def start(self, now: float, detail: str = "") -> RhythmEvent | None:
        """Start at once (beat-driven kinds), unless already active."""
        if self.active:
            return None
        self.state = "active"
        self.onset = now
        self.detail = detail
        return RhythmEvent(self.kind, now, None, detail)


# --- VF from the waveform --------------------------------------------------------------------
VF_WINDOW_S: Final = 4.0
VF_STEP_S: Final = 0.25
VF_HIGH_FREQ_MAX: Final = 0.06
VF_BAND_MIN: Final = 0.65
VF_NEAR_BASELINE_MAX: Final = 0.32
VF_AMPLITUDE_MIN_MV: Final = 0.15
VF_SUSPECT_AMPLITUDE_MV: Final = 0.3


class VfDetector:
    """Spectral and baseline-occupancy VF/VFL detector on the last 4 s (see module doc)."""

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self._filter = bandpass(fs, 1.0, 30.0)
        self._n = round(VF_WINDOW_S * fs)
        # The band and its magnitude, newest sample at ``_end``, the window the ``_n``
        # samples before it. The buffers hold several windows, so that samples move back
        # to the start only every few seconds instead of the window shifting every chunk,
        # and each sample's magnitude is taken once, not once per window it is in.
        self._buf = np.zeros(4 * self._n)
        self._abs = np.zeros(4 * self._n)
        self._end = self._n
        self._filled = 0
        freqs = np.fft.rfftfreq(self._n, 1.0 / fs)
        # Bins are ascending, so each band is one slice; slices within the 1-30 Hz band
        # keep the power spectrum to the bins any feature reads.
        self._band = _bins(freqs, 1.0, 30.0)
        self._high = _bins(freqs, 12.0, 30.0, within=self._band)
        self._vf = _bins(freqs, 2.5, 9.0, within=self._band)
        self._taper = np.hanning(self._n)
        self._tapered = np.empty(self._n)  # scratch, reused every window
        self.last: VfEvidence | None = None
        self._step = max(1, round(VF_STEP_S * fs))
        self._since = 0

    def reset(self) -> None:
        self._filter.reset()
        self._buf[:] = 0.0
        self._abs[:] = 0.0
        self._end = self._n
        self._filled = 0
        self._since = 0
        self.last = None

    def amplitude_at(self, ago_s: float) -> float:
        """Peak-to-peak (mV) of the 1-30 Hz band within 60 ms of ``ago_s`` seconds ago."""
        centre = self._n - 1 - round(ago_s * self.fs)
        half = max(1, round(0.06 * self.fs))
        lo, hi = max(0, centre - half), min(self._n, centre + half + 1)
        if centre < 0 or lo >= hi or self._n - lo > self._filled:
            return float("inf")  # outside what is held: do not judge
        offset = self._end - self._n  # window index 0 in the buffer
        w = self._buf[offset + lo : offset + hi]
        return float(np.maximum.reduce(w) - np.minimum.reduce(w))  # max - min, no wrappers

    def feed(
        self, samples_mV: npt.NDArray[np.float64], band: npt.NDArray[np.float64] | None = None
    ) -> VfEvidence | None:
        """Add a chunk; the evidence on the window ending with it (None until 4 s seen).

        ``band`` is the chunk already filtered to 1-30 Hz (the quality stage has it);
        without it the detector filters ``samples_mV`` itself. The features are computed
        at most every :data:`VF_STEP_S` of signal.
        """
        y = self._filter.feed(samples_mV) if band is None else band
        n, k, fed = self._n, len(y), len(y)
        if k >= n:
            y, k, self._end = y[-n:], n, 0
        elif self._end + k > len(self._buf):
            self._buf[:n] = self._buf[self._end - n : self._end]
            self._abs[:n] = self._abs[self._end - n : self._end]
            self._end = n
        end = self._end
        self._buf[end : end + k] = y
        np.abs(y, out=self._abs[end : end + k])
        self._end = end = end + k
        self._filled = min(n, self._filled + fed)
        self._since += fed
        if self._filled < n:
            return None
        if self._since < self._step and self.last is not None:
            return self.last
        self._since = 0
        w = self._buf[end - n : end]
        mag = self._abs[end - n : end]
        # ufunc reduce: what ndarray.max calls, minus a Python-level wrapper.
        near = np.count_nonzero(mag < 0.1 * (float(np.maximum.reduce(mag)) + 1e-12)) / n
        if near >= VF_NEAR_BASELINE_MAX:
            # Resting on the baseline rules out both verdicts whatever the spectrum: skip
            # the costly features (most of the time in an organised rhythm).
            self.last = VfEvidence(math.nan, math.nan, near, math.nan, False, False)
            return self.last
        np.multiply(w, self._taper, out=self._tapered)
        power = np.square(np.abs(scipy.fft.rfft(self._tapered)[self._band]))
        total = float(power.sum()) + 1e-12
        high = float(power[self._high].sum()) / total
        in_band = float(power[self._vf].sum()) / total
        amplitude = spread(w)
        vf_like = (
            high < VF_HIGH_FREQ_MAX
            and in_band > VF_BAND_MIN
            and near < VF_NEAR_BASELINE_MAX
            and amplitude > VF_AMPLITUDE_MIN_MV
        )
        suspected = (
            amplitude > VF_SUSPECT_AMPLITUDE_MV
            and in_band > VF_BAND_MIN
            and near < VF_NEAR_BASELINE_MAX
        )
        self.last = VfEvidence(high, in_band, near, amplitude, bool(vf_like), bool(suspected))
        return self.last


def _bins(
    freqs: npt.NDArray[np.floating[Any]], lo: float, hi: float, within: slice | None = None
) -> slice:
    """The slice of ascending ``freqs`` (Hz) inside ``lo..hi``, relative to ``within``."""
    idx = np.flatnonzero((freqs >= lo) & (freqs <= hi))
    offset = 0 if within is None else int(within.start)
    return slice(int(idx[0]) - offset, int(idx[-1]) + 1 - offset)


def _irregularity(rr: Iterable[float]) -> float:
    """Median absolute successive RR difference over the median RR (0 when regular)."""
    values = list(rr)
    return median(abs(b - a) for a, b in itertools.pairwise(values)) / median(values)


# --- the analyser ------------------------------------------------------------------------------
#: A detection whose 1-30 Hz peak-to-peak is below this (mV) is taken for noise, not a QRS.
MIN_QRS_MV: Final = 0.1
HR_BEATS: Final = 8
AF_INTERVALS: Final = 32
AF_ON: Final = 0.15
AF_OFF: Final = 0.08
AF_OFF_INTERVALS: Final = 12
RATE_CONFIRM_BEATS: Final = 4
BIGEMINY_BEATS: Final = 6


@dataclass(slots=True)
class _BeatHistory:
    times: deque[float] = field(default_factory=lambda: deque(maxlen=HR_BEATS + 1))
    labels: deque[str] = field(default_factory=lambda: deque(maxlen=BIGEMINY_BEATS))
    clean_rr: deque[float] = field(default_factory=lambda: deque(maxlen=AF_INTERVALS + 1))
    pvc_times: deque[float] = field(default_factory=deque)
    v_run: list[float] = field(default_factory=list)  # times of the current run of V beats
    last_time: float | None = None
    last_label: str = ""


class RhythmAnalyzer:
    """Streaming rhythm analysis for one ECG lead at ``fs`` Hz; see the module doc.

    ``beat_latency`` (s) is how long after its R peak the QRS detector reports a beat.
    """

    def __init__(
        self, fs: float, settings: RhythmSettings | None = None, *, beat_latency: float = 0.3
    ) -> None:
        self.fs = fs
        self.settings = settings or RhythmSettings()
        self.beat_latency = beat_latency
        self._vf = VfDetector(fs)
        self._episodes: dict[RhythmKind, Episode] = {k: Episode(k) for k in DELAYS}
        self._n = 0
        self._history = _BeatHistory()
        self._silence_from = 0.0  # last beat, or when analysable signal (re)started
        self._rate_beats: dict[str, int] = {"brady": 0, "tachy": 0}
        self._bigeminy = False
        self._frequent = False
        self.heart_rate: float | None = None
        self.ignored_beats = 0
        self._median_hr: float | None = None  # of the beat times now held

    def reset(self) -> None:
        """Forget everything (a gap in the stream); open episodes are closed by the caller."""
        self.__init__(self.fs, self.settings, beat_latency=self.beat_latency)  # type: ignore[misc]

    @property
    def active(self) -> list[RhythmKind]:
        return [k for k, e in self._episodes.items() if e.active]

    def close(self) -> list[RhythmEvent]:
        """End every open episode now (stream stopped or reset)."""
        now = self._n / self.fs
        return [ev for e in self._episodes.values() if (ev := e.end(now)) is not None]

    def feed(
        self,
        samples_mV: npt.NDArray[np.float64],
        beats: list[Beat],
        quality: Quality,
        band: npt.NDArray[np.float64] | None = None,
    ) -> RhythmOutput:
        """Analyse one chunk: raw samples (mV), the beats decided in it, its quality and,
        if the caller has it, the chunk's 1-30 Hz band (saves filtering twice)."""
        self._n += len(samples_mV)
        now = self._n / self.fs
        events: list[RhythmEvent] = []
        ectopy: list[Ectopy] = []
        ep = self._episodes

        vf = self._vf.feed(samples_mV, band) if len(samples_mV) else self._vf.last
        noise_event = ep["noise"].step(not quality.analysable, now, quality.problem)
        noisy = ep["noise"].active
        if noise_event is not None:
            events.append(noise_event)
            if noise_event.end is None:
                events += self._gate(now)
            else:
                self._silence_from = now  # silence before good signal returned is unknown

        for beat in beats:
            # In VF the detector's "beats" are fibrillation waves; in noise, artefact (the
            # chunk's own verdict counts before the noise episode is confirmed).
            if noisy or not quality.analysable or ep["vf"].active:
                continue
            if self._vf.amplitude_at(now - beat.time) < MIN_QRS_MV:
                self.ignored_beats += 1  # a detection in baseline noise is no QRS
                continue
            events += self._on_beat(beat, ectopy)

        vf_like = vf is not None and vf.vf_like
        # Unanalysable signal neither starts VF nor ends it: an open VF episode holds.
        hold = noisy and ep["vf"].active
        vf_event = None if hold else ep["vf"].step(vf_like and not noisy, now, "waveform")
        if vf_event is not None:
            events.append(vf_event)
            if vf_event.end is None:
                for kind in ("asystole", "pause", "vt", "afib", "brady", "tachy"):
                    if (ev := ep[kind].end(now)) is not None:
                        events.append(ev)
            else:
                self._silence_from = now

        # Large smooth activity that may be VF in the making is no asystole (yet).
        vf_suspected = vf is not None and vf.suspected
        if not noisy and not ep["vf"].active and not vf_suspected:
            events += self._silence(now)

        self.heart_rate = self._rate(now, noisy)
        self._expire_pvcs(now)
        pvc_rate = float(len(self._history.pvc_times))
        frequent = pvc_rate > self.settings.pvc_per_minute
        if frequent != self._frequent and not (noisy and frequent):
            self._frequent = frequent
            ectopy.append(Ectopy("frequent_pvcs", now, frequent, f"{pvc_rate:.0f} /min"))
        return RhythmOutput(events, ectopy, self.heart_rate, pvc_rate, vf)

    # -- pieces ----------------------------------------------------------------------------
    def _gate(self, now: float) -> list[RhythmEvent]:
        """The signal became unanalysable: end what gating may end."""
        out = []
        for kind, episode in self._episodes.items():
            gated = kind != "noise" and kind not in LIFE_THREATENING
            if gated and (ev := episode.end(now)) is not None:
                out.append(ev)
        self._history.clean_rr.clear()
        self._history.labels.clear()
        self._history.v_run.clear()
        self._history.last_time = None
        return out

    def _silence(self, now: float) -> list[RhythmEvent]:
        """Asystole and pause from the time since the last beat the detector could report."""
        s = self.settings
        quiet = now - self.beat_latency - self._silence_from
        out = []
        pause = self._episodes["pause"]
        if quiet >= s.pause_s and (ev := pause.start(now, f">= {s.pause_s:g} s")) is not None:
            out.append(ev)
        if quiet >= s.asystole_s:
            detail = f"no QRS since {self._silence_from:.2f} s"
            if (ev := self._episodes["asystole"].start(now, detail)) is not None:
                out.append(ev)
                for kind in ("vt", "afib", "tachy"):
                    if (end := self._episodes[kind].end(now)) is not None:
                        out.append(end)
        return out

    def _on_beat(self, beat: Beat, ectopy: list[Ectopy]) -> list[RhythmEvent]:
        s = self.settings
        h = self._history
        ep = self._episodes
        out: list[RhythmEvent] = []
        t = beat.time
        for kind in ("asystole", "pause"):
            if (ev := ep[kind].end(t)) is not None:
                out.append(ev)
        self._silence_from = t
        prev_time, prev_label = h.last_time, h.last_label
        h.times.append(t)
        self._median_hr = self._median_rate()
        # AF: intervals between two supraventricular beats only.
        if prev_time is not None and prev_label in ("N", "S") and beat.label in ("N", "S"):
            h.clean_rr.append(t - prev_time)
        h.last_time, h.last_label = t, beat.label

        # VT: runs of V beats.
        if beat.label == "V":
            h.pvc_times.append(t)
            h.v_run.append(t)
            run = h.v_run
            if len(run) >= s.vt_beats:
                rate = 60.0 * (len(run) - 1) / (run[-1] - run[0]) if run[-1] > run[0] else 0.0
                if rate >= s.vt_rate_bpm and not ep["vf"].active:
                    if (ev := ep["vt"].start(t, f"rate {rate:.0f} /min")) is not None:
                        out.append(ev)
                    elif (
                        ep["vt"].active
                        and t - ep["vt"].onset >= s.vt_sustained_s
                        and ep["vt"].detail != "sustained"
                    ):
                        ep["vt"].detail = "sustained"
                        out.append(RhythmEvent("vt", ep["vt"].onset, None, "sustained"))
        else:
            if len(h.v_run) == 2 and prev_label == "V" and self._before_run_was_not_v():
                ectopy.append(Ectopy("couplet", t, True))
            h.v_run.clear()
            if (ev := ep["vt"].end(t)) is not None:
                out.append(ev)
        h.labels.append(beat.label)
        self._bigeminy_check(t, ectopy)

        hr = self._median_hr
        if hr is not None:
            out += self._rate_limits(t, hr)
        out += self._af_check(t)
        return out

    def _before_run_was_not_v(self) -> bool:
        labels = list(self._history.labels)
        # labels holds the beats before this one; the run is its last two.
        return len(labels) < 3 or labels[-3] != "V"

    def _bigeminy_check(self, t: float, ectopy: list[Ectopy]) -> None:
        labels = tuple(self._history.labels)
        alternating = labels in (("N", "V") * 3, ("V", "N") * 3)
        if alternating and not self._bigeminy:
            self._bigeminy = True
            ectopy.append(Ectopy("bigeminy", t, True))
        elif self._bigeminy and len(labels) >= 2 and labels[-1] != "V" and labels[-2] != "V":
            self._bigeminy = False
            ectopy.append(Ectopy("bigeminy", t, False))

    def _median_rate(self) -> float | None:
        times = list(self._history.times)
        if len(times) < 2:
            return None
        # statistics.median: a few values, where numpy's call overhead dominates.
        return 60.0 / median(b - a for a, b in itertools.pairwise(times))

    def _rate_limits(self, t: float, rate: float) -> list[RhythmEvent]:
        s = self.settings
        ep = self._episodes
        out: list[RhythmEvent] = []
        if len(self._history.times) < RATE_CONFIRM_BEATS + 1:
            return out
        limits: tuple[tuple[RhythmKind, bool], ...] = (
            ("brady", rate < s.brady_bpm),
            ("tachy", rate > s.tachy_bpm),
        )
        for kind, outside in limits:
            episode = ep[kind]
            # Count consecutive beats that argue for a change of state.
            self._rate_beats[kind] = self._rate_beats[kind] + 1 if outside != episode.active else 0
            if self._rate_beats[kind] < RATE_CONFIRM_BEATS:
                continue
            self._rate_beats[kind] = 0
            ev = episode.start(t, f"rate {rate:.0f} /min") if outside else episode.end(t)
            if ev is not None:
                out.append(ev)
        return out

    def _af_check(self, t: float) -> list[RhythmEvent]:
        rr = self._history.clean_rr
        episode = self._episodes["afib"]
        if len(rr) < AF_INTERVALS // 2:
            return []
        irregularity = _irregularity(rr)

        # The last intervals alone decide leaving AF, so an episode does not outlast the
        # arrhythmia by half a window, and they must agree before one starts. Computed
        # only when the whole window leaves the decision open (most beats: it does not).
        def recent() -> float:
            return _irregularity(list(rr)[-AF_OFF_INTERVALS:])

        if episode.active:
            if irregularity < AF_OFF or recent() < AF_OFF:
                ev = episode.end(t)
                return [ev] if ev is not None else []
        elif irregularity > AF_ON and not self._episodes["vf"].active and recent() >= AF_OFF:
            ev = episode.start(t, f"irregularity {irregularity:.2f}")
            return [ev] if ev is not None else []
        return []

    def _rate(self, now: float, noisy: bool) -> float | None:
        ep = self._episodes
        if noisy or ep["vf"].active:
            return None
        if ep["asystole"].active:
            return 0.0
        rate = self._median_hr  # the beat times change only at a beat
        last = self._history.last_time
        if rate is None or last is None:
            return None
        since = now - self.beat_latency - last
        if since > 2.0 * 60.0 / rate:
            return 60.0 / since
        return rate

    def _expire_pvcs(self, now: float) -> None:
        times = self._history.pvc_times
        while times and times[0] < now - 60.0:
            times.popleft()
