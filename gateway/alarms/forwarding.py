"""Confirmed forwarding of high-priority alarms to central systems.

When the gateway forwards alarms (a sync destination carries them), every high-priority
alarm (raised high, or escalated to high) is expected to be confirmed by a destination
within ``within`` seconds: an HL7 AA, an HTTP 2xx, an MQTT PUBACK for the log record of its
raise. If confirmation is late the alarm engine raises ``alarm_forwarding_failed`` at that
bed, a high-priority technical alarm, and ends an audio pause there: the nurses at the
bedside must not rely on a central system that never heard of the alarm. The condition ends
when every overdue alarm of the bed has been confirmed (or has cleared and been confirmed
since).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Expected:
    bed: str
    due: float  # monotonic
    overdue: bool = False


class ForwardingWatch:
    """Alarms awaiting a destination's confirmation; pure bookkeeping on monotonic time."""

    def __init__(self, within: float | None = None) -> None:
        #: Seconds a destination has to confirm; ``None``: nothing is forwarded, no watch.
        self.within = within
        self._expected: dict[str, _Expected] = {}

    @property
    def active(self) -> bool:
        return self.within is not None

    def expect(self, alarm_id: str, bed: str, now: float) -> None:
        if self.within is not None and alarm_id not in self._expected:
            self._expected[alarm_id] = _Expected(bed, now + self.within)

    def confirmed(self, alarm_id: str) -> str | None:
        """Forget ``alarm_id``; returns its bed if it was overdue (its condition may end)."""
        found = self._expected.pop(alarm_id, None)
        return found.bed if found is not None and found.overdue else None

    def newly_overdue(self, now: float) -> list[tuple[str, str]]:
        """(alarm id, bed) of alarms whose confirmation just became late."""
        late = []
        for alarm_id, expected in self._expected.items():
            if not expected.overdue and now >= expected.due:
                expected.overdue = True
                late.append((alarm_id, expected.bed))
        return late

    def overdue_at(self, bed: str) -> int:
        return sum(1 for e in self._expected.values() if e.overdue and e.bed == bed)

    def next_due(self) -> float | None:
        pending = [e.due for e in self._expected.values() if not e.overdue]
        return min(pending) if pending else None

    def pending(self) -> dict[str, int]:
        """For health: alarms awaiting confirmation, and how many are late."""
        late = sum(1 for e in self._expected.values() if e.overdue)
        return {"awaiting": len(self._expected) - late, "overdue": late}
