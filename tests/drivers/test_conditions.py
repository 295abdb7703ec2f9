"""ConditionTracker: edges only on change, in declared order, cleared when the link ends."""

from __future__ import annotations

from drivers.conditions import ConditionTracker
from drivers.readings import Condition, DeviceEvent

ORDER = (Condition.SENSOR_OFF, Condition.ARTIFACT, Condition.LOW_BATTERY)


def test_events_only_when_a_condition_changes() -> None:
    tracker = ConditionTracker("ox", ORDER, {Condition.SENSOR_OFF: "bit 6"})
    on = tracker.update({Condition.ARTIFACT: True, Condition.SENSOR_OFF: True}, 1.0)
    assert on == [
        DeviceEvent("ox", Condition.SENSOR_OFF, True, 1.0, "bit 6"),
        DeviceEvent("ox", Condition.ARTIFACT, True, 1.0, ""),
    ]
    assert tracker.update({Condition.ARTIFACT: True, Condition.SENSOR_OFF: True}, 2.0) == []
    assert tracker.update({Condition.ARTIFACT: False}, 3.0) == [
        DeviceEvent("ox", Condition.ARTIFACT, False, 3.0, "")
    ]
    assert tracker.active == {Condition.SENSOR_OFF}  # absent from the update: unchanged


def test_clear_ends_every_raised_condition_once() -> None:
    tracker = ConditionTracker("ox", ORDER)
    tracker.update({Condition.LOW_BATTERY: True, Condition.SENSOR_OFF: True}, 1.0)
    cleared = tracker.clear(5.0)
    assert [(e.condition, e.active) for e in cleared] == [
        (Condition.SENSOR_OFF, False),
        (Condition.LOW_BATTERY, False),
    ]
    assert tracker.clear(6.0) == [] and tracker.active == frozenset()
