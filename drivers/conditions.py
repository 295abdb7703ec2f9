"""Edge-triggered technical conditions: one home for every driver.

Devices report their status on every frame or line; the gateway wants an event only when a
condition changes. :class:`ConditionTracker` holds which conditions a device has raised,
turns a full picture of "what is on now" into on/off :class:`DeviceEvent` edges, and clears
everything when the link ends (the link, not the patient, ended those conditions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drivers.readings import Condition, DeviceEvent


class ConditionTracker:
    """Raised conditions of one device, in a fixed order of reporting.

    ``conditions`` lists every condition the driver can report (events come out in this
    order); ``details`` gives each a short technician-facing origin (the status bit).
    """

    def __init__(
        self,
        device_id: str,
        conditions: Sequence[Condition],
        details: Mapping[Condition, str] | None = None,
    ) -> None:
        self.device_id = device_id
        self._order = tuple(conditions)
        self._details = dict(details or {})
        self._active: set[Condition] = set()

    @property
    def active(self) -> frozenset[Condition]:
        """Conditions raised (an active event sent) and not yet cleared."""
        return frozenset(self._active)

    def update(self, state: Mapping[Condition, bool], now: float) -> list[DeviceEvent]:
        """Events for the conditions whose state in ``state`` differs from what was raised.

        Conditions missing from ``state`` keep their current state. ``now`` is UTC seconds.
        """
        events = []
        for condition in self._order:
            if condition not in state:
                continue
            on = state[condition]
            if on != (condition in self._active):
                (self._active.add if on else self._active.discard)(condition)
                events.append(self._event(condition, on, now))
        return events

    def clear(self, now: float) -> list[DeviceEvent]:
        """Inactive events for every raised condition, which are then forgotten."""
        events = [self._event(c, False, now) for c in self._order if c in self._active]
        self._active.clear()
        return events

    def _event(self, condition: Condition, active: bool, now: float) -> DeviceEvent:
        return DeviceEvent(self.device_id, condition, active, now, self._details.get(condition, ""))
