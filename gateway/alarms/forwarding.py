"""Confirmed forwarding of high-priority alarms to central systems.

When alarms are forwarded to destinations that must confirm them (an alert manager over
HL7: ``confirm_alarms_within`` in its ``[[destinations]]`` table), every high-priority
alarm (raised high, or escalated to high) is expected to be confirmed by each of them
within ``within`` seconds (the shortest configured): an HL7 AA for the log record of its
raise or escalation. If confirmation is late the alarm engine raises
``alarm_forwarding_failed`` at that bed, a high-priority technical alarm, and ends an audio
pause there: the nurses at the
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
    waiting_for: set[str]  # destinations yet to confirm
    overdue: bool = False


class ForwardingWatch:
    """Alarms awaiting confirmation; pure bookkeeping on monotonic time.

    ``destinations`` maps each destination that must confirm to its time limit (s); empty:
    nothing is watched.
    """

    def __init__(self, destinations: dict[str, float] | None = None) -> None:
        self.destinations = dict(destinations or {})
        self._expected: dict[str, _Expected] = {}

    @property
    def active(self) -> bool:
        return bool(self.destinations)

    @property
    def within(self) -> float | None:
        return min(self.destinations.values()) if self.destinations else None

    def expect(self, alarm_id: str, bed: str, now: float) -> None:
        within = self.within
        if within is not None and alarm_id not in self._expected:
            self._expected[alarm_id] = _Expected(bed, now + within, set(self.destinations))

    def confirmed(self, alarm_id: str, destination: str) -> str | None:
        """``destination`` confirmed ``alarm_id``. Once every destination has, the alarm is
        forgotten; returns its bed if it was overdue (its condition may end)."""
        found = self._expected.get(alarm_id)
        if found is None:
            return None
        found.waiting_for.discard(destination)
        if found.waiting_for:
            return None
        del self._expected[alarm_id]
        return found.bed if found.overdue else None

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
