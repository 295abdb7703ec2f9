"""How each condition is rated by default: kind, priority, delay, and what a nurse reads.

Physiological conditions from the ECG analysis: asystole, VF and VT are always high (not
configurable down); extreme brady/tachycardia high; the rest configurable (``[alarms]
priorities``), ``"off"`` to ignore one. Technical conditions from devices: a device's own
priority (a pump's occlusion) is a floor, never lowered. Gateway conditions: store trouble,
an unreachable sync destination, the alarm-path self-check.
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.readings import PHYSIOLOGICAL, Condition, Priority
from gateway.alarms.model import Kind, Rule

_H, _M, _L = Priority.HIGH, Priority.MEDIUM, Priority.LOW
_P, _T = Kind.PHYSIOLOGICAL, Kind.TECHNICAL

#: Never configurable below high: a missed one can kill within minutes.
ALWAYS_HIGH = frozenset(
    {Condition.ASYSTOLE, Condition.VENTRICULAR_FIBRILLATION, Condition.VENTRICULAR_TACHYCARDIA}
)

#: Device and analysis conditions -> rule. Delays in seconds: 0 where the device or the
#: analysis has already waited (its own detection delay); a few seconds for conditions that
#: flicker while a patient moves (probe, leads), longer for signal-quality hints.
EVENT_RULES: Mapping[Condition, Rule] = {
    Condition.ASYSTOLE: Rule(_P, _H, 0.0, "Asystole"),
    Condition.VENTRICULAR_FIBRILLATION: Rule(_P, _H, 0.0, "VF"),
    Condition.VENTRICULAR_TACHYCARDIA: Rule(_P, _H, 0.0, "VT"),
    Condition.EXTREME_BRADYCARDIA: Rule(_P, _H, 0.0, "Extreme brady"),
    Condition.EXTREME_TACHYCARDIA: Rule(_P, _H, 0.0, "Extreme tachy"),
    Condition.PAUSE: Rule(_P, _M, 0.0, "Pause"),
    Condition.ATRIAL_FIBRILLATION: Rule(_P, _M, 0.0, "AFib"),
    Condition.COUPLET: Rule(_P, _L, 0.0, "Couplet"),
    Condition.BIGEMINY: Rule(_P, _L, 0.0, "Bigeminy"),
    Condition.FREQUENT_PVCS: Rule(_P, _L, 0.0, "Frequent PVCs"),
    Condition.DISCONNECTED: Rule(_T, _M, 3.0, "Device disconnected"),
    Condition.SENSOR_OFF: Rule(_T, _M, 5.0, "Probe off"),
    Condition.NO_SENSOR: Rule(_T, _M, 5.0, "No sensor"),
    Condition.SENSOR_FAULT: Rule(_T, _M, 5.0, "Sensor fault"),
    Condition.SENSOR_ALARM: Rule(_T, _M, 5.0, "Sensor unusable"),
    Condition.LEAD_OFF: Rule(_T, _M, 5.0, "ECG lead off"),
    Condition.ECG_CANNOT_ANALYSE: Rule(_T, _M, 5.0, "ECG cannot analyse"),
    Condition.NO_DATA: Rule(_T, _M, 0.0, "No data from device"),
    Condition.OUT_OF_TRACK: Rule(_T, _L, 10.0, "Signal lost"),
    Condition.PULSE_SEARCH: Rule(_T, _L, 10.0, "Searching for pulse"),
    Condition.ARTIFACT: Rule(_T, _L, 10.0, "Artifact"),
    Condition.INTERFERENCE: Rule(_T, _L, 10.0, "Interference"),
    Condition.LOW_PERFUSION: Rule(_T, _L, 10.0, "Low perfusion"),
    Condition.LOW_SIGNAL_QUALITY: Rule(_T, _L, 10.0, "Low signal quality"),
    Condition.LOW_BATTERY: Rule(_T, _L, 0.0, "Low battery"),
    Condition.DEVICE_ALARM_SILENCED: Rule(_T, _L, 0.0, "Device alarms silenced"),
    Condition.SAMPLES_LOST: Rule(_T, _L, 0.0, "Samples lost"),
    Condition.CLOCK_SKEW: Rule(_T, _L, 0.0, "Device clock wrong"),
    Condition.OCCLUSION: Rule(_T, _H, 0.0, "Pump occlusion"),
    Condition.AIR_IN_LINE: Rule(_T, _H, 0.0, "Pump air in line"),
    Condition.RESERVOIR_EMPTY: Rule(_T, _H, 0.0, "Pump empty"),
    Condition.NEAR_EMPTY: Rule(_T, _L, 0.0, "Pump nearly empty"),
    Condition.DOOR_OPEN: Rule(_T, _M, 0.0, "Pump door open"),
    Condition.INFUSION_COMPLETE: Rule(_T, _M, 0.0, "Infusion complete"),
    Condition.PUMP_IDLE: Rule(_T, _M, 0.0, "Pump idle"),
    Condition.DEVICE_MALFUNCTION: Rule(_T, _H, 0.0, "Device malfunction"),
}

#: Gateway-wide and derived technical conditions, by name.
STALE_DATA = "stale_data"
SYNC_UNREACHABLE = "sync_unreachable"
SYNC_DEAD_LETTERS = "sync_dead_letters"
SYNC_LAGGING = "sync_lagging"
ALARM_PATH_FAILED = "alarm_path_failed"
ALARM_LOG_FAILING = "alarm_log_failing"
ALARM_FORWARDING_FAILED = "alarm_forwarding_failed"
GATEWAY_RULES: Mapping[str, Rule] = {
    STALE_DATA: Rule(_T, _M, 0.0, "Data stale"),
    "store_full": Rule(_T, _M, 0.0, "Store full"),
    "store_failing": Rule(_T, _M, 0.0, "Store failing"),
    "store_space_low": Rule(_T, _L, 0.0, "Store space low"),
    "store_wal_not_purged": Rule(_T, _L, 0.0, "Store log not purged"),
    "store_file_lost": Rule(_T, _M, 0.0, "Store file deleted"),
    ALARM_LOG_FAILING: Rule(_T, _H, 0.0, "Alarm log not recording"),
    SYNC_UNREACHABLE: Rule(_T, _M, 0.0, "Central system unreachable"),
    # Data reaches no one until a technician acts, but nothing at the bedside is wrong.
    SYNC_DEAD_LETTERS: Rule(_T, _L, 0.0, "Central system refused messages"),
    SYNC_LAGGING: Rule(_T, _L, 0.0, "Central system falling behind"),
    ALARM_PATH_FAILED: Rule(_T, _H, 0.0, "Alarm display not confirming"),
    ALARM_FORWARDING_FAILED: Rule(_T, _H, 0.0, "High alarm not confirmed by central system"),
}
#: A store condition the writer may add later still becomes an alarm.
UNKNOWN_STORE_RULE = Rule(_T, _M, 0.0, "Store trouble")

PRIORITY_NAMES: Mapping[str, Priority | None] = {
    "high": _H,
    "medium": _M,
    "low": _L,
    "off": None,
}


class RuleError(ValueError):
    pass


def event_rules(overrides: Mapping[str, str]) -> dict[Condition, Rule]:
    """The default event rules with ``{condition name: "high"|"medium"|"low"|"off"}``.

    Only physiological conditions other than :data:`ALWAYS_HIGH` may be overridden: a
    technical condition's rating protects the whole chain and is not a ward preference.
    """
    rules = dict(EVENT_RULES)
    for name, level in overrides.items():
        try:
            condition = Condition(name)
        except ValueError:
            raise RuleError(f"unknown condition {name!r}") from None
        if condition not in PHYSIOLOGICAL or condition in ALWAYS_HIGH:
            allowed = sorted(c.value for c in PHYSIOLOGICAL - ALWAYS_HIGH)
            raise RuleError(f"{name!r} cannot be re-rated; only {', '.join(allowed)} can")
        if level not in PRIORITY_NAMES:
            raise RuleError(f"{name}: {level!r} is not one of high, medium, low, off")
        old = rules[condition]
        rules[condition] = Rule(old.kind, PRIORITY_NAMES[level], old.delay, old.label)
    return rules
