"""Alarm limits: default sets per patient group, per-bed overrides, and what is sane.

A :class:`Limits` holds, for one metric, a low and a high limit (medium priority) and an
extreme low and high (high priority), each optional, and the condition delay in seconds.
A value strictly beyond a limit meets the condition ("SpO2 89 % is below 90 %").

Every limit is checked against the metric's sane range before it is used, whether it comes
from ``config.toml`` or from a nurse at the page: a limit outside it, a low above its high,
an extreme limit inside the ordinary one, or a delay outside 0-60 s is refused with a reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from drivers import codes

#: Seconds a limit condition may be delayed at most (a longer delay hides a real event).
MAX_DELAY = 60.0


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric the engine checks against limits. ``sane_low``/``sane_high`` bound every
    limit (in ``unit``); ``label`` is what a nurse reads."""

    name: str
    refid: str
    unit: str
    label: str
    sane_low: float
    sane_high: float


#: Pump metrics will join here when the pump drivers land (their codes are not in
#: drivers.codes yet); limits apply to any metric listed.
METRICS: Mapping[str, Metric] = {
    m.name: m
    for m in (
        Metric("spo2", codes.SPO2.refid, "%", "SpO2", 50.0, 100.0),
        Metric("pulse_rate", codes.PULSE_RATE.refid, "/min", "Pulse", 15.0, 300.0),
        Metric("heart_rate", codes.ECG_HEART_RATE.refid, "/min", "HR", 15.0, 300.0),
    )
}
METRIC_OF_REFID: Mapping[str, Metric] = {m.refid: m for m in METRICS.values()}


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one metric, in its unit; ``None`` means no such limit. ``delay`` in s."""

    low: float | None = None
    high: float | None = None
    extreme_low: float | None = None
    extreme_high: float | None = None
    delay: float = 10.0

    def as_dict(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


LIMIT_FIELDS = tuple(f.name for f in fields(Limits))

#: Default sets. Adult after common monitor defaults; neonatal SpO2 has a high limit
#: against hyperoxia. Extreme limits are high priority ("desat", extreme brady/tachy).
PROFILES: Mapping[str, Mapping[str, Limits]] = {
    "adult": {
        "spo2": Limits(low=90, extreme_low=80, delay=10),
        "pulse_rate": Limits(low=50, high=120, extreme_low=40, extreme_high=150, delay=10),
        "heart_rate": Limits(low=50, high=120, extreme_low=40, extreme_high=150, delay=10),
    },
    "paediatric": {
        "spo2": Limits(low=90, extreme_low=80, delay=10),
        "pulse_rate": Limits(low=70, high=150, extreme_low=55, extreme_high=180, delay=10),
        "heart_rate": Limits(low=70, high=150, extreme_low=55, extreme_high=180, delay=10),
    },
    "neonatal": {
        "spo2": Limits(low=88, high=95, extreme_low=80, delay=10),
        "pulse_rate": Limits(low=100, high=190, extreme_low=80, extreme_high=210, delay=10),
        "heart_rate": Limits(low=100, high=190, extreme_low=80, extreme_high=210, delay=10),
    },
}


class LimitError(ValueError):
    """A limit change or configuration that is not sane; the message says why."""


def check(metric: Metric, limits: Limits) -> None:
    """Raise :class:`LimitError` if ``limits`` are not sane for ``metric``."""
    for name in ("low", "high", "extreme_low", "extreme_high"):
        value = getattr(limits, name)
        if value is None:
            continue
        if not math.isfinite(value) or not metric.sane_low <= value <= metric.sane_high:
            raise LimitError(
                f"{metric.name}.{name} = {value!r} {metric.unit} is outside the sane range "
                f"{metric.sane_low:g}-{metric.sane_high:g} {metric.unit}"
            )
    if not (math.isfinite(limits.delay) and 0.0 <= limits.delay <= MAX_DELAY):
        raise LimitError(f"{metric.name}.delay = {limits.delay!r} s is outside 0-{MAX_DELAY:g} s")
    ordered = [
        ("extreme_low", limits.extreme_low),
        ("low", limits.low),
        ("high", limits.high),
        ("extreme_high", limits.extreme_high),
    ]
    present = [(n, v) for n, v in ordered if v is not None]
    for (n1, v1), (n2, v2) in itertools.pairwise(present):
        if v1 >= v2:
            raise LimitError(
                f"{metric.name}: {n1} ({v1:g}) must be below {n2} ({v2:g}); "
                "order is extreme_low < low < high < extreme_high"
            )


def profile(name: str) -> dict[str, Limits]:
    try:
        return dict(PROFILES[name])
    except KeyError:
        raise LimitError(
            f"unknown limit profile {name!r}; use one of: {', '.join(PROFILES)}"
        ) from None


def apply_changes(
    current: Mapping[str, Limits], changes: Mapping[str, Mapping[str, Any]]
) -> dict[str, Limits]:
    """``current`` with ``changes`` ({metric: {field: value or None}}) applied and checked.

    Nothing is applied unless everything is sane: the result is all-or-nothing.
    """
    result = dict(current)
    for name, fields_ in changes.items():
        metric = METRICS.get(name)
        if metric is None:
            raise LimitError(f"unknown metric {name!r}; use one of: {', '.join(METRICS)}")
        if not isinstance(fields_, Mapping):
            raise LimitError(f"{name}: expected an object of limits, got {fields_!r}")
        update: dict[str, float | None] = {}
        for key, value in fields_.items():
            if key not in LIMIT_FIELDS:
                raise LimitError(f"{name}.{key}: unknown field; use {', '.join(LIMIT_FIELDS)}")
            if value is None and key != "delay":
                update[key] = None
            elif isinstance(value, int | float) and not isinstance(value, bool):
                update[key] = float(value)
            else:
                raise LimitError(f"{name}.{key}: expected a number or null, got {value!r}")
        merged = replace(result.get(name, Limits()), **update)  # type: ignore[arg-type]
        check(metric, merged)
        result[name] = merged
    return result
