"""The alarm vocabulary: kinds, priority order, the rule that rates a condition.

An alarm *condition* is what is wrong (SpO2 below its limit, the probe is off); an alarm
*signal* is how the gateway makes it known (an entry in the bed's ``alarms``, the bed's
``audio`` priority, the page's flashing and sound). The engine turns conditions into alarms;
the page turns alarms into signals. Conditions that concern the gateway itself rather than
a bed (store trouble, an unreachable sync destination, the self-check) belong to the
pseudo-bed :data:`GATEWAY`, an id no configured bed can have.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.readings import Priority

#: Pseudo-bed of gateway-wide conditions (configured bed ids start with a letter or digit).
GATEWAY = "_gateway"


class Kind(enum.Enum):
    """BICEPS alert kind: about the patient, or about the equipment."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


#: Larger is more urgent; ``None`` (no priority, nothing sounding) ranks below all.
_RANK: dict[Priority | None, int] = {
    None: 0,
    Priority.LOW: 1,
    Priority.MEDIUM: 2,
    Priority.HIGH: 3,
}


def rank(priority: Priority | None) -> int:
    """Order of urgency: 0 (none) < low < medium < high."""
    return _RANK[priority]


def highest(priorities: list[Priority | None]) -> Priority | None:
    return max(priorities, key=rank, default=None)


@dataclass(frozen=True, slots=True)
class Rule:
    """How the engine rates one condition.

    ``delay`` is the condition delay in seconds (0-60): the condition must hold that long
    before it becomes an alarm; it is disclosed with every alarm. ``priority`` ``None``
    means the condition is configured off (never an alarm).
    """

    kind: Kind
    priority: Priority | None
    delay: float
    label: str  # nurse-readable name, e.g. "SpO2 low", "Probe off"


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    """The ``[alarms]`` section of ``config.toml``, validated. Times in seconds.

    ``stale_data_after``: a connected device that delivered nothing for this long raises
    ``stale_data``. ``escalate_after``: an unacknowledged medium alarm becomes high after
    this long (``None``: never). ``sync_unreachable_after``: a sync destination reported
    unreachable for this long raises ``sync_unreachable``. ``priorities``: physiological
    conditions re-rated (``{"afib": "low"}``; see :mod:`gateway.alarms.rules`).
    ``self_check_interval``/``self_check_timeout``: how often a heartbeat goes to the page
    and how long a confirmation may take; ``expect_page``: a page must always be connected
    (a ward display), so no page at all is also a failure. ``sound``: the local sound output
    when the self-check fails: ``"none"``, ``"bell"`` (the console bell on stderr) or a
    command line (run with ``start`` / ``stop`` appended, e.g. a GPIO buzzer script).
    """

    stale_data_after: float = 30.0
    escalate_after: float | None = 120.0
    sync_unreachable_after: float = 300.0
    priorities: tuple[tuple[str, str], ...] = ()
    self_check_interval: float = 2.0
    self_check_timeout: float = 5.0
    expect_page: bool = False
    sound: str = "bell"
