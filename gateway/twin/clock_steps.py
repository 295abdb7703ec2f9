"""Seeing the system clock stepped: the wall clock (UTC) jumping while monotonic time runs on.

An NTP correction or a wrong real-time clock at boot moves ``wall`` by minutes or hours in
one go. Records keep the UTC the system gives when they arrive (nothing is rewritten), so a
reader needs to know where the clock jumped: the offset ``wall - monotonic`` is constant
while the clocks agree, and a change of it beyond a tolerance between two consecutive
commits is a step. Pure: fed times, returns what it saw.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds of change in (wall - monotonic) between two commits taken as a step. NTP slews
#: small errors at most 0.5 ms/s, so legitimate drift between commits stays far below this.
STEP_TOLERANCE = 2.0


@dataclass(frozen=True, slots=True)
class ClockStep:
    """A step of the wall clock seen between two commits.

    ``wall_before``: the wall time (UTC seconds) the old offset gives at the moment of
    detection, i.e. what the clock would read had it not stepped; ``wall_after``: what it
    reads; ``step``: ``wall_after - wall_before`` in seconds (negative: stepped back).
    """

    wall_before: float
    wall_after: float
    step: float


class ClockStepDetector:
    """Compares each commit's (wall, monotonic) pair with the previous one."""

    def __init__(self, tolerance: float = STEP_TOLERANCE) -> None:
        if tolerance <= 0:
            raise ValueError("the tolerance must be a positive number of seconds")
        self.tolerance = tolerance
        self._offset: float | None = None

    def observe(self, wall: float, monotonic: float) -> ClockStep | None:
        """The step since the last call, if the offset moved by more than the tolerance."""
        offset = wall - monotonic
        previous, self._offset = self._offset, offset
        if previous is None or abs(offset - previous) <= self.tolerance:
            return None
        before = monotonic + previous
        return ClockStep(wall_before=before, wall_after=wall, step=wall - before)
