"""Settings of ECG analysis (``[analysis]`` in config.toml), free of numeric imports.

Kept apart from the analysis stages so that loading a config does not load scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.readings import Condition, Priority


@dataclass(frozen=True, slots=True)
class RhythmSettings:
    """Limits for rhythm analysis; seconds and beats per minute."""

    asystole_s: float = 4.0
    pause_s: float = 2.5
    brady_bpm: float = 40.0
    tachy_bpm: float = 150.0
    vt_rate_bpm: float = 100.0
    vt_beats: int = 3
    vt_sustained_s: float = 30.0
    pvc_per_minute: float = 10.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.asystole_s <= 15.0:
            raise ValueError("asystole_s must be 1..15 s")
        if not 1.0 <= self.pause_s <= self.asystole_s:
            raise ValueError("pause_s must be 1 s .. asystole_s")
        if not 15.0 <= self.brady_bpm < self.tachy_bpm <= 300.0:
            raise ValueError("need 15 <= brady_bpm < tachy_bpm <= 300")


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """``[analysis]`` of config.toml: mains frequency, rhythm limits, alarm priorities."""

    mains_hz: float = 50.0
    rhythm: RhythmSettings = field(default_factory=RhythmSettings)
    brady_priority: Priority = Priority.HIGH
    tachy_priority: Priority = Priority.HIGH
    pause_priority: Priority = Priority.MEDIUM
    afib_priority: Priority = Priority.MEDIUM
    ectopy_priority: Priority = Priority.LOW
    cannot_analyse_priority: Priority = Priority.LOW

    def priority(self, condition: Condition) -> Priority:
        fixed = {
            Condition.ASYSTOLE: Priority.HIGH,
            Condition.VENTRICULAR_FIBRILLATION: Priority.HIGH,
            Condition.VENTRICULAR_TACHYCARDIA: Priority.HIGH,
            Condition.EXTREME_BRADYCARDIA: self.brady_priority,
            Condition.EXTREME_TACHYCARDIA: self.tachy_priority,
            Condition.PAUSE: self.pause_priority,
            Condition.ATRIAL_FIBRILLATION: self.afib_priority,
            Condition.ECG_CANNOT_ANALYSE: self.cannot_analyse_priority,
        }
        return fixed.get(condition, self.ectopy_priority)
