"""What the analysis stages hand to each other and to the pipeline.

Positions are absolute sample indices counted from the first sample fed to the stage
(``0``); times are seconds on the same axis (``sample / fs``). The pipeline turns them
into wall time by adding the stream's start time, so the stages never see a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: EC57 beat classes: N normal (and bundle-branch, escape), S supraventricular ectopic,
#: V ventricular ectopic, F fusion of V and N, Q unclassifiable (paced, noise).
BeatLabel = Literal["N", "S", "V", "F", "Q"]

#: Rhythm and quality episodes, named as in ``ecg analyze``'s events.csv.
RhythmKind = Literal["asystole", "vf", "vt", "brady", "tachy", "pause", "afib", "noise"]


@dataclass(frozen=True, slots=True)
class Beat:
    """One detected QRS complex.

    ``sample`` is the R-peak position (absolute sample index), ``time`` the same in
    seconds. ``rr`` is the interval to the previous detected beat in seconds (``None``
    for the first). ``width`` is the QRS duration in seconds when measured.
    ``correlation`` is the similarity (-1..1) to the patient's running dominant
    template when one exists.
    """

    sample: int
    time: float
    label: BeatLabel
    rr: float | None = None
    width: float | None = None
    correlation: float | None = None


@dataclass(frozen=True, slots=True)
class RhythmEvent:
    """A rhythm (or noise) episode.

    Emitted once when it is recognised (``end`` is ``None``) and once when it ends
    (``end`` set). ``onset`` and ``end`` are seconds on the stream axis; ``detail`` is a
    short text such as ``"sustained"`` or ``"rate 182 bpm"``.
    """

    kind: RhythmKind
    onset: float
    end: float | None = None
    detail: str = ""
