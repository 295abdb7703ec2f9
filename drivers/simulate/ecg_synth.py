"""Synthetic ECG with scripted rhythms and known truth, streamed in chunks.

A sum-of-Gaussians beat model (P, Q, R, S and T waves as Gaussian bumps, in the spirit of
McSharry's ECGSYN without its ODE) placed at R-peak times drawn from each rhythm's RR
process, plus respiratory baseline wander and white noise. Continuous activity that has
no beats (ventricular fibrillation, atrial f-waves) is a phase-integrated sinusoid whose
frequency and amplitude drift slowly. Everything is in mV of lead II, at any sample rate
from 125 to 1000 Hz.

A :class:`Script` is a list of :class:`Segment` (a rhythm for some seconds); an
:class:`EcgSynth` plays it: :meth:`EcgSynth.read` returns the next ``n`` samples, so a
simulator can generate exactly what its clock asks for. The generator records the truth
as it goes: every beat (sample index of its R peak and its EC57 label, N or V) and every
episode (kind as in ``ecg analyze``'s events.csv, onset and end in seconds).

Rhythms (``Segment.rhythm``):

``sinus``
    Sinus rhythm at ``rate`` /min with respiratory RR variation and 1 % jitter. With
    ``pvc_every = k`` every k-th beat is a PVC (premature at 60 % of the RR, followed by a
    full compensatory pause); ``pvc_run`` PVCs in a row make couplets (2) or runs.
    ``pvc_every = 2`` is ventricular bigeminy.
``af``
    Atrial fibrillation: no P waves, 4-8 Hz f-waves of 0.05 mV, RR intervals irregularly
    irregular around ``rate`` (coefficient of variation 0.25).
``vt``
    Monomorphic ventricular tachycardia: wide V beats at ``rate`` (default 150 /min).
``vf``
    Ventricular fibrillation: a 4-6 Hz (``rate`` /min / 60) undulation of 0.3-1 mV with
    drifting frequency and amplitude, no beats.
``asystole``
    No ventricular activity: baseline wander and amplifier noise only.
``noise``
    Sinus rhythm under heavy muscle noise (1 mV rms above ~20 Hz) and motion artefact.
``lead_off``
    The electrode is off: the amplifier sits at its rail, ``rail_mV`` (default 5 mV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

Rhythm = Literal["sinus", "af", "vt", "vf", "asystole", "noise", "lead_off"]
BeatKind = Literal["N", "V"]

#: Episode kind (as in ``ecg analyze``'s events.csv) each rhythm counts as; sinus has none.
EPISODE_OF: Final[dict[str, str]] = {
    "af": "afib",
    "vt": "vt",
    "vf": "vf",
    "asystole": "asystole",
    "noise": "noise",
    "lead_off": "noise",
}

# Waves relative to the R peak: (amplitude mV, centre s, width s). Normal conducted beat.
_P_WAVE: Final = (0.15, -0.16, 0.022)
_Q_WAVE: Final = (-0.10, -0.03, 0.008)
_R_WAVE: Final = (1.20, 0.0, 0.010)
_S_WAVE: Final = (-0.25, 0.03, 0.010)
_T_AMPLITUDE: Final = 0.30
_T_CENTRE_PER_SQRT_RR: Final = 0.27  # s: T peak at 0.27 * sqrt(RR), Bazett-like
_T_WIDTH_PER_SQRT_RR: Final = 0.05
# Ventricular beat: wide, no P, discordant T.
_V_R_WAVE: Final = (1.50, 0.0, 0.030)
_V_S_WAVE: Final = (-0.45, 0.075, 0.025)
_V_T_WAVE: Final = (-0.45, 0.32, 0.07)

_BEFORE_S: Final = 0.25  # a beat contributes from this long before its R peak
_AFTER_S: Final = 0.7  # ... to this long after

_WANDER_MV: Final = 0.05
_RESP_PERIOD_S: Final = 4.0
_NOISE_MV: Final = 0.010
_EMG_MV: Final = 1.0
_MOTION_MV: Final = 1.0


@dataclass(frozen=True, slots=True)
class Segment:
    """``duration`` seconds of one rhythm; ``rate`` in /min (beats, or VF cycles)."""

    rhythm: Rhythm
    duration: float
    rate: float | None = None
    pvc_every: int = 0
    pvc_run: int = 1
    rail_mV: float = 5.0

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise ValueError(f"segment duration must be positive, got {self.duration}")
        if self.rate is not None and not 10.0 <= self.rate <= 600.0:
            raise ValueError(f"rate {self.rate} /min is outside 10..600")
        if self.pvc_every < 0 or self.pvc_run < 1:
            raise ValueError("pvc_every must be >= 0 and pvc_run >= 1")

    @property
    def beats_per_minute(self) -> float:
        default = {"vt": 150.0, "vf": 300.0, "af": 110.0}.get(self.rhythm, 72.0)
        return self.rate if self.rate is not None else default


Script = Sequence[Segment]


@dataclass(frozen=True, slots=True)
class TruthBeat:
    """A generated beat: R-peak ``sample`` (absolute index), ``time`` (s) and label."""

    sample: int
    time: float
    label: BeatKind


@dataclass(frozen=True, slots=True)
class TruthEpisode:
    """A scripted episode: ``kind`` as in events.csv, ``onset``/``end`` in seconds."""

    kind: str
    onset: float
    end: float


@dataclass(slots=True)
class Truth:
    """What the generator has produced so far (grows as samples are read)."""

    beats: list[TruthBeat] = field(default_factory=list)
    episodes: list[TruthEpisode] = field(default_factory=list)


@dataclass(slots=True)
class _Beat:
    time: float
    label: BeatKind
    rr: float
    p_wave: bool


def normal_beat(
    dt: npt.NDArray[np.float64], rr: float, *, p_wave: bool = True
) -> npt.NDArray[np.float64]:
    """Lead II potential (mV) of a conducted beat ``dt`` seconds after its R peak, for a
    beat interval of ``rr`` seconds (the T wave moves with it)."""
    sqrt_rr = math.sqrt(rr)
    waves = [_Q_WAVE, _R_WAVE, _S_WAVE]
    if p_wave:
        waves.append(_P_WAVE)
    waves.append((_T_AMPLITUDE, _T_CENTRE_PER_SQRT_RR * sqrt_rr, _T_WIDTH_PER_SQRT_RR * sqrt_rr))
    return _gaussians(dt, waves)


def ventricular_beat(dt: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Lead II potential (mV) of a ventricular ectopic beat (wide QRS, no P, discordant T)."""
    return _gaussians(dt, [_V_R_WAVE, _V_S_WAVE, _V_T_WAVE])


def pqrst(dt: float, rr: float) -> float:
    """Scalar form of :func:`normal_beat` (mV) for per-sample simulators."""
    sqrt_rr = math.sqrt(rr)
    t_wave = (_T_AMPLITUDE, _T_CENTRE_PER_SQRT_RR * sqrt_rr, _T_WIDTH_PER_SQRT_RR * sqrt_rr)
    return sum(
        a * math.exp(-0.5 * ((dt - c) / w) ** 2)
        for a, c, w in (_P_WAVE, _Q_WAVE, _R_WAVE, _S_WAVE, t_wave)
    )


def _gaussians(
    dt: npt.NDArray[np.float64], waves: Sequence[tuple[float, float, float]]
) -> npt.NDArray[np.float64]:
    out = np.zeros_like(dt)
    for amplitude, centre, width in waves:
        out += amplitude * np.exp(-0.5 * ((dt - centre) / width) ** 2)
    return out


class EcgSynth:
    """Plays a :class:`Script` at ``fs`` Hz (125-1000); the last segment repeats forever
    unless ``loop`` replays the whole script. Deterministic for a given ``seed``."""

    def __init__(self, script: Script, fs: float, *, seed: int = 0, loop: bool = False) -> None:
        if not 125.0 <= fs <= 1000.0:
            raise ValueError(f"sample rate {fs} Hz is outside 125..1000")
        if not script:
            raise ValueError("the script needs at least one segment")
        self.fs = float(fs)
        self.script = tuple(script)
        self.loop = loop
        self.truth = Truth()
        self._rng = np.random.default_rng(seed)
        self._index = 0  # next sample
        self._beats: list[_Beat] = []  # scheduled, not yet fully drawn
        self._next_beat = 0.3  # s
        self._beat_count = 0  # beats in the current sinus segment (for pvc_every)
        self._run_left = 0
        self._last_label: BeatKind = "N"
        self._vf_phase = 0.0
        self._f_phase = 0.0
        self._vf_amp = 0.6
        self._vf_freq = 5.0
        self._recorded_segments = 0

    # -- the script ------------------------------------------------------------------------
    def segment_at(self, t: float) -> tuple[Segment, float]:
        """The segment playing at ``t`` seconds and the time it started."""
        total = sum(s.duration for s in self.script)
        base = 0.0
        if self.loop and t >= total:
            base = math.floor(t / total) * total
            t -= base
        start = 0.0
        for seg in self.script:
            if t < start + seg.duration:
                return seg, base + start
            start += seg.duration
        last = self.script[-1]
        return last, base + start - last.duration

    def _record_episodes(self, until: float) -> None:
        """Add scripted episodes whose onset is before ``until`` (as time reaches them)."""
        while True:
            seg, start = self._nth_segment(self._recorded_segments)
            if seg is None or start > until:
                return
            kind = EPISODE_OF.get(seg.rhythm)
            end = start + seg.duration
            is_last = not self.loop and self._recorded_segments == len(self.script) - 1
            if is_last:
                end = math.inf
            if kind is not None:
                prev = self.truth.episodes[-1] if self.truth.episodes else None
                if prev is not None and prev.kind == kind and prev.end == start:
                    self.truth.episodes[-1] = TruthEpisode(kind, prev.onset, end)
                else:
                    self.truth.episodes.append(TruthEpisode(kind, float(start), float(end)))
            self._recorded_segments += 1
            if is_last:
                return

    def _nth_segment(self, n: int) -> tuple[Segment | None, float]:
        count = len(self.script)
        if not self.loop and n >= count:
            return None, math.inf
        total = sum(s.duration for s in self.script)
        base = (n // count) * total
        start = base + sum(s.duration for s in self.script[: n % count])
        return self.script[n % count], start

    # -- beats -----------------------------------------------------------------------------
    def _schedule(self, until: float) -> None:
        while self._next_beat <= until + _BEFORE_S:
            t = self._next_beat
            seg, _ = self.segment_at(t)
            bpm = seg.beats_per_minute
            rr = 60.0 / bpm
            if seg.rhythm in ("vf", "asystole", "lead_off"):
                # No beats: look again when the next segment might start.
                self._next_beat = t + 0.05
                self._beat_count = 0
                continue
            if seg.rhythm == "vt":
                beat = _Beat(t, "V", rr, False)
                step = rr * (1.0 + 0.02 * self._rng.standard_normal())
            elif seg.rhythm == "af":
                beat = _Beat(t, "N", rr, False)
                step = rr * float(np.clip(self._rng.normal(1.0, 0.25), 0.5, 1.7))
            else:
                resp = 0.03 * math.sin(2.0 * math.pi * t / _RESP_PERIOD_S)
                step = rr * (1.0 + resp + 0.01 * self._rng.standard_normal())
                label: BeatKind = "N"
                self._beat_count += 1
                if self._run_left > 0:
                    label = "V"
                    self._run_left -= 1
                elif seg.pvc_every and self._beat_count % seg.pvc_every == 0:
                    label = "V"
                    self._run_left = seg.pvc_run - 1
                beat = _Beat(t, label, rr, label == "N")
                if label == "V" and self._run_left > 0:
                    step = 0.6 * rr  # the run goes on at the ectopic rate
                elif label == "V":
                    step = 1.4 * rr  # compensatory pause: N-V-N spans two cycles
                elif seg.pvc_every and (self._beat_count + 1) % seg.pvc_every == 0:
                    step = 0.6 * rr  # the next beat comes early
            self._beats.append(beat)
            self._last_label = beat.label
            self._next_beat = t + step

    # -- samples ---------------------------------------------------------------------------
    def read(self, n: int) -> npt.NDArray[np.float64]:
        """The next ``n`` samples (mV)."""
        if n <= 0:
            return np.zeros(0)
        first = self._index
        idx = np.arange(first, first + n)
        t = idx / self.fs
        t0, t1 = float(t[0]), float(t[-1])
        self._record_episodes(t1)
        self._schedule(t1)
        x = np.zeros(n)
        for beat in self._beats:
            if beat.time - _BEFORE_S > t1 or beat.time + _AFTER_S < t0:
                continue
            dt = t - beat.time
            if beat.label == "V":
                x += ventricular_beat(dt)
            else:
                x += normal_beat(dt, beat.rr, p_wave=beat.p_wave)
        for beat in self._beats:
            sample = round(beat.time * self.fs)
            if first <= sample < first + n:
                seg, _ = self.segment_at(beat.time)
                if seg.rhythm not in ("vf", "asystole", "lead_off"):
                    self.truth.beats.append(TruthBeat(sample, sample / self.fs, beat.label))
        self._beats = [b for b in self._beats if b.time + _AFTER_S >= t1]
        x += self._continuous(t)
        x += _WANDER_MV * np.sin(2.0 * math.pi * t / _RESP_PERIOD_S)
        x += self._rng.normal(0.0, _NOISE_MV, n)
        self._index += n
        return self._overrides(t, x)

    def _continuous(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """VF undulation and AF f-waves, sample by sample through their phase."""
        out = np.zeros_like(t)
        rhythm = self._rhythms(t)
        if np.any(rhythm == "vf") or np.any(rhythm == "af"):
            dt = 1.0 / self.fs
            # Slow drift, once per chunk: VF frequency +-1 Hz, amplitude 0.3..1 mV.
            seg = self.segment_at(float(t[0]))[0]
            target = seg.beats_per_minute / 60.0 if seg.rhythm == "vf" else 5.0
            self._vf_freq = float(
                np.clip(
                    self._vf_freq
                    + 0.05 * self._rng.standard_normal()
                    + 0.02 * (target - self._vf_freq),
                    target - 1.0,
                    target + 1.0,
                )
            )
            self._vf_amp = float(
                np.clip(self._vf_amp + 0.03 * self._rng.standard_normal(), 0.3, 1.0)
            )
            vf_phase = self._vf_phase + 2.0 * math.pi * self._vf_freq * dt * np.arange(
                1, len(t) + 1
            )
            f_phase = self._f_phase + 2.0 * math.pi * 6.0 * dt * np.arange(1, len(t) + 1)
            vf_wave = self._vf_amp * (np.sin(vf_phase) + 0.25 * np.sin(2.0 * vf_phase + 0.7))
            f_wave = 0.05 * np.sin(f_phase + 0.6 * np.sin(0.9 * f_phase))
            out = np.where(rhythm == "vf", vf_wave, 0.0) + np.where(rhythm == "af", f_wave, 0.0)
            self._vf_phase = float(vf_phase[-1] % (2.0 * math.pi))
            self._f_phase = float(f_phase[-1] % (2.0 * math.pi))
        return out

    def _overrides(
        self, t: npt.NDArray[np.float64], x: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Noise and lead-off, which replace or swamp the heart's signal."""
        rhythm = self._rhythms(t)
        noisy = rhythm == "noise"
        if np.any(noisy):
            motion = _MOTION_MV * np.sin(2.0 * math.pi * 1.3 * t) * np.sin(2.0 * math.pi * 0.21 * t)
            # Muscle noise is broadband above ~20 Hz: differenced white noise.
            white = self._rng.normal(0.0, _EMG_MV / math.sqrt(2.0), len(t) + 1)
            emg = np.diff(white)
            x = np.where(noisy, x + emg + motion, x)
        off = rhythm == "lead_off"
        if np.any(off):
            rails = np.array([self.segment_at(float(ti))[0].rail_mV for ti in t[off]])
            x = x.copy()
            x[off] = rails
        return x

    def _rhythms(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.str_]:
        """The rhythm name playing at each time in ``t``."""
        durations = np.array([s.duration for s in self.script])
        ends = np.cumsum(durations)
        total = float(ends[-1])
        names = np.array([s.rhythm for s in self.script])
        tt = np.mod(t, total) if self.loop else t
        which = np.minimum(np.searchsorted(ends, tt, side="right"), len(self.script) - 1)
        return names[which]


def generate(
    script: Script, fs: float, seconds: float, *, seed: int = 0
) -> tuple[npt.NDArray[np.float64], Truth]:
    """``seconds`` of ``script`` at ``fs`` Hz in one go, with its truth (for tests)."""
    synth = EcgSynth(script, fs, seed=seed)
    samples = synth.read(round(seconds * fs))
    return samples, synth.truth
