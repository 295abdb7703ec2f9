"""Scoring detections against expert annotations the ANSI/AAMI EC57 way.

Used by ``bench/ec57.py`` and by the tests. Pure functions on sample indices.

Conventions (EC57, as implemented here):

* A detection matches a reference beat within +-``MATCH_WINDOW`` (150 ms); matching
  pairs each reference beat, in time order, with the nearest unmatched detection.
* Beats before ``LEARNING_PERIOD`` (5 min) are not scored; neither are detections inside
  ventricular flutter/fibrillation segments (between ``[`` and ``]`` annotations), where
  the reference annotates flutter waves, not beats.
* Reference classes: N (N L R e j), S (A a J S), V (V E), F (F), Q (/ f Q ?).
* VEB Se = reference V labelled V / all scored reference V (missed ones included);
  VEB +P = detections labelled V that match a reference V / detections labelled V that
  match a reference N, S or V or match nothing (a V call on an F or Q beat is neither
  right nor wrong, as in EC57).
* Episodes (AF, VT, VF): a reference episode is detected if a detected episode of the
  same kind overlaps it; episode +P counts detected episodes overlapping any reference
  one. Duration Se/+P are overlap time over reference / detected time. Alarm delay is
  the time from the reference onset to when the overlapping detection was first reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

MATCH_WINDOW = 0.150
LEARNING_PERIOD = 300.0

#: Reference beat symbol -> EC57 class.
BEAT_CLASS: dict[str, str] = {
    **dict.fromkeys("NLRej", "N"),
    **dict.fromkeys("AaJS", "S"),
    **dict.fromkeys("VE", "V"),
    "F": "F",
    **dict.fromkeys("/fQ?", "Q"),
}

#: Rhythm annotation (``aux_note`` of ``+``) -> episode kind scored.
RHYTHM_KIND: dict[str, str] = {
    "(AFIB": "afib",
    "(VT": "vt",
    "(VFL": "vf",
    "(VF": "vf",
    "(VFIB": "vf",
}


@dataclass
class BeatScore:
    """Counts for one record (or pooled over records)."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    v_ref: int = 0
    v_true: int = 0
    v_called: int = 0
    v_called_right: int = 0

    def __iadd__(self, other: BeatScore) -> BeatScore:
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp
        self.v_ref += other.v_ref
        self.v_true += other.v_true
        self.v_called += other.v_called
        self.v_called_right += other.v_called_right
        return self

    @property
    def se(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def veb_se(self) -> float:
        return _ratio(self.v_true, self.v_ref)

    @property
    def veb_ppv(self) -> float:
        return _ratio(self.v_called_right, self.v_called)


def _ratio(num: float, den: float) -> float:
    return float("nan") if den == 0 else 100.0 * num / den


def match_beats(
    reference: NDArray[np.int64], detected: NDArray[np.int64], tolerance: int
) -> NDArray[np.int64]:
    """For each reference beat, the index of its matched detection or -1.

    Both arrays are sorted sample indices; ``tolerance`` is in samples.
    """
    out = np.full(reference.size, -1, dtype=np.int64)
    used = np.zeros(detected.size, dtype=bool)
    lo_all = np.searchsorted(detected, reference - tolerance, side="left")
    hi_all = np.searchsorted(detected, reference + tolerance, side="right")
    for k in range(reference.size):
        best = -1
        best_dist = tolerance + 1
        for m in range(int(lo_all[k]), int(hi_all[k])):
            if used[m]:
                continue
            dist = abs(int(detected[m]) - int(reference[k]))
            if dist < best_dist:
                best, best_dist = m, dist
        if best >= 0:
            used[best] = True
            out[k] = best
    return out


def excluded_segments(samples: Sequence[int], symbols: Sequence[str]) -> list[tuple[int, int]]:
    """Ventricular flutter/fibrillation segments marked ``[`` ... ``]`` (samples)."""
    segments: list[tuple[int, int]] = []
    start: int | None = None
    for s, sym in zip(samples, symbols, strict=True):
        if sym == "[":
            start = int(s)
        elif sym == "]" and start is not None:
            segments.append((start, int(s)))
            start = None
    if start is not None:
        segments.append((start, int(samples[-1]) if len(samples) else start))
    return segments


def score_beats(
    ref_samples: Sequence[int],
    ref_symbols: Sequence[str],
    det_samples: Sequence[int],
    det_labels: Sequence[str],
    fs: float,
    *,
    learning: float = LEARNING_PERIOD,
) -> BeatScore:
    """EC57 beat-by-beat counts for one record (see the module docstring)."""
    beats = [
        (int(s), BEAT_CLASS[y])
        for s, y in zip(ref_samples, ref_symbols, strict=True)
        if y in BEAT_CLASS
    ]
    ref = np.array([b[0] for b in beats], dtype=np.int64)
    ref_cls = [b[1] for b in beats]
    det = np.asarray(det_samples, dtype=np.int64)
    order = np.argsort(det, kind="stable")
    det = det[order]
    labels = [det_labels[i] for i in order]
    start = round(learning * fs)
    matched = match_beats(ref, det, round(MATCH_WINDOW * fs))
    det_ref = np.full(det.size, -1, dtype=np.int64)
    det_ref[matched[matched >= 0]] = np.flatnonzero(matched >= 0)
    det_scored = det >= start
    for lo, hi in excluded_segments(ref_samples, ref_symbols):
        det_scored &= ~((det >= lo) & (det <= hi))

    score = BeatScore()
    for k in range(ref.size):
        if ref[k] < start:
            continue
        hit = matched[k] >= 0
        if hit:
            score.tp += 1
        else:
            score.fn += 1
        if ref_cls[k] == "V":
            score.v_ref += 1
            if hit and labels[matched[k]] == "V":
                score.v_true += 1
    for m in range(det.size):
        k = int(det_ref[m])
        if k >= 0:
            if ref[k] < start:
                continue
        elif not det_scored[m]:
            continue
        else:
            score.fp += 1
        if labels[m] == "V":
            cls = ref_cls[k] if k >= 0 else None
            if cls in ("F", "Q"):
                continue
            score.v_called += 1
            if cls == "V":
                score.v_called_right += 1
    return score


# --- rhythm episodes ---------------------------------------------------------------


@dataclass
class EpisodeScore:
    """Episode and duration counts for one kind (times in seconds)."""

    ref_episodes: int = 0
    ref_detected: int = 0
    det_episodes: int = 0
    det_true: int = 0
    ref_duration: float = 0.0
    det_duration: float = 0.0
    overlap: float = 0.0
    delays: list[float] = field(default_factory=list)

    def __iadd__(self, other: EpisodeScore) -> EpisodeScore:
        self.ref_episodes += other.ref_episodes
        self.ref_detected += other.ref_detected
        self.det_episodes += other.det_episodes
        self.det_true += other.det_true
        self.ref_duration += other.ref_duration
        self.det_duration += other.det_duration
        self.overlap += other.overlap
        self.delays.extend(other.delays)
        return self

    @property
    def se(self) -> float:
        return _ratio(self.ref_detected, self.ref_episodes)

    @property
    def ppv(self) -> float:
        return _ratio(self.det_true, self.det_episodes)

    @property
    def duration_se(self) -> float:
        return _ratio(self.overlap, self.ref_duration)

    @property
    def duration_ppv(self) -> float:
        return _ratio(self.overlap, self.det_duration)

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else float("nan")


def reference_episodes(
    samples: Sequence[int], symbols: Sequence[str], aux_notes: Sequence[str], fs: float, end: float
) -> dict[str, list[tuple[float, float]]]:
    """Episodes per kind from rhythm-change annotations (``+`` with ``aux_note``), seconds."""
    episodes: dict[str, list[tuple[float, float]]] = {}
    current: str | None = None
    onset = 0.0
    for s, sym, note in zip(samples, symbols, aux_notes, strict=True):
        if sym != "+" or not note:
            continue
        rhythm = note.rstrip("\x00").strip()
        t = int(s) / fs
        if current is not None:
            episodes.setdefault(current, []).append((onset, t))
        current = RHYTHM_KIND.get(rhythm)
        onset = t
    if current is not None:
        episodes.setdefault(current, []).append((onset, end))
    return episodes


def _clip(
    episodes: Iterable[tuple[float, float]], lo: float, hi: float
) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in episodes if min(b, hi) > max(a, lo)]


def score_episodes(
    reference: Sequence[tuple[float, float]],
    detected: Sequence[tuple[float, float, float]],
    *,
    start: float,
    end: float,
) -> EpisodeScore:
    """Score detected ``(onset, end, reported_at)`` against reference ``(onset, end)``.

    Only the part of each episode within ``start``..``end`` seconds is scored.
    """
    ref = _clip(reference, start, end)
    det_kept = [(a, b, t) for a, b, t in detected if min(b, end) > max(a, start)]
    det = [(max(a, start), min(b, end)) for a, b, _ in det_kept]
    score = EpisodeScore(ref_episodes=len(ref), det_episodes=len(det))
    score.ref_duration = sum(b - a for a, b in ref)
    score.det_duration = sum(b - a for a, b in det)
    for ra, rb in ref:
        hits = [
            (t, min(rb, db) - max(ra, da))
            for (da, db), (_, _, t) in zip(det, det_kept, strict=True)
            if min(rb, db) > max(ra, da)
        ]
        if hits:
            score.ref_detected += 1
            score.delays.append(max(0.0, min(t for t, _ in hits) - ra))
    for da, db in det:
        if any(min(rb, db) > max(ra, da) for ra, rb in ref):
            score.det_true += 1
    score.overlap = sum(max(0.0, min(rb, db) - max(ra, da)) for ra, rb in ref for da, db in det)
    return score
