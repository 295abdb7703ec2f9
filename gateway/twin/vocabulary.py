"""Small values that cross from configuration and commands into the store.

Kept apart from ``store.py`` so that reading a config file or running a quick command does
not import SQLite tooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Patient:
    """Identifiers bound to an admission; stored sealed, never logged."""

    # Kept out of repr so that no log line or traceback can show them.
    name: str = field(repr=False)
    mrn: str = field(repr=False)
    birth_date: str = field(repr=False)  # ISO 8601 date


@dataclass(frozen=True, slots=True)
class Destination:
    """A sync destination and the kinds of row it carries (alarm, event, numeric, ...)."""

    name: str
    carries: frozenset[str]


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each class is kept, in seconds, once synced."""

    numerics: float = 30 * 86400.0
    waveforms: float = 72 * 3600.0
    alarms: float = 365 * 86400.0
    discharged: float = 30 * 86400.0
