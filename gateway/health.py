"""Is the gateway well? The verdict behind ``GET /healthz`` and ``bedside-gateway status``.

``/healthz`` answers 200 only when the three things a ward depends on work:

* **loop**: the asyncio loop keeps its schedule (:class:`LoopLag` is late by less than
  ``LAG_LIMIT`` seconds and has ticked recently) and every essential task (twin, page) runs;
* **store**: a store is configured, its writer task runs (not backing off after a crash) and
  it raises neither ``store_failing`` nor ``store_full`` (``store_space_low`` is only a
  warning: waveforms are being evicted, nothing is lost);
* **alarm path**: when an alarm engine is wired into ``health()`` (key ``alarms``), it has no
  open gateway alarm about itself (``alarm_path_failed``, alarm log trouble) and its
  self-check does not report failing. Without an engine the check says so and passes: there
  is no alarm path to be unhealthy.

Otherwise 503 with the same JSON, whose ``reasons`` name what failed. A device that is
unplugged or silent does not fail ``/healthz`` (it is a technical alarm at its bed, and a
restart would not bring it back); it is listed under ``devices`` with the reason a technician
needs, and makes ``status`` exit 1 (degraded).

Everything here reads the JSON views the daemon already serves (``health()``, ``beds()``),
so ``status`` computes the same verdict on its side of the API.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from drivers.clock import Clock

#: Seconds the loop may run late before the gateway is unhealthy. Device reads and page pushes
#: are paced in fractions of a second; a loop a whole second late is starving them.
LAG_LIMIT = 1.0

#: Seconds between two ticks of :class:`LoopLag`.
LAG_INTERVAL = 0.5

#: Store conditions that fail ``/healthz``; others are reported as warnings.
FAILING_STORE_CONDITIONS = frozenset({"store_failing", "store_full", "store_file_lost"})

#: Gateway-level alarm conditions that mean the alarm path itself is broken (the names of
#: ``ALARM_PATH_FAILED`` and ``ALARM_LOG_FAILING`` in gateway/alarms/rules.py; spelled out so
#: the verdict works in a gateway built without the alarm engine).
ALARM_PATH_CONDITIONS = frozenset({"alarm_path_failed", "alarm_log_failing"})


class LoopLag:
    """Measures how late the event loop wakes: sleeps ``interval`` on the injected clock and
    records by how many seconds it overslept (0 on a loop with time to spare).

    ``lag`` is the last measurement, ``max_lag`` the largest since start, ``last_tick`` the
    clock's monotonic time of the last wake (None before the first).
    """

    def __init__(self, clock: Clock, interval: float = LAG_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0 s")
        self.clock = clock
        self.interval = interval
        self.lag = 0.0
        self.max_lag = 0.0
        self.ticks = 0
        self.last_tick: float | None = None

    async def run(self) -> None:
        while True:
            before = self.clock.monotonic()
            await self.clock.sleep(self.interval)
            now = self.clock.monotonic()
            self.note(max(0.0, now - before - self.interval), now)

    def note(self, lag: float, now: float) -> None:
        self.lag = lag
        self.max_lag = max(self.max_lag, lag)
        self.ticks += 1
        self.last_tick = now

    def silent_for(self) -> float | None:
        """Seconds since the last tick, or None before the first."""
        return None if self.last_tick is None else self.clock.monotonic() - self.last_tick


@dataclass(frozen=True, slots=True)
class Check:
    """One part of the verdict: ``ok``, a one-line ``detail``, and ``warnings``."""

    ok: bool
    detail: str
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "warnings": list(self.warnings)}


@dataclass(frozen=True, slots=True)
class Verdict:
    loop: Check
    store: Check
    alarm_path: Check
    devices: tuple[tuple[str, str], ...] = ()  # (device id, reason) of degraded devices
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.loop.ok and self.store.ok and self.alarm_path.ok

    @property
    def degraded(self) -> bool:
        """Healthy, but something a technician should look at (a device, a warning)."""
        warnings = self.loop.warnings + self.store.warnings + self.alarm_path.warnings
        return self.healthy and bool(self.devices or warnings)

    @property
    def reasons(self) -> list[str]:
        parts = (("loop", self.loop), ("store", self.store), ("alarm path", self.alarm_path))
        return [f"{name}: {check.detail}" for name, check in parts if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "failing",
            "reasons": self.reasons,
            "checks": {
                "loop": self.loop.as_dict(),
                "store": self.store.as_dict(),
                "alarm_path": self.alarm_path.as_dict(),
            },
            "devices": [{"id": d, "reason": r} for d, r in self.devices],
            **self.extra,
        }


def check_loop(
    health: Mapping[str, Any], lag: float | None, silent_for: float | None, limit: float = LAG_LIMIT
) -> Check:
    """``lag`` and ``silent_for`` in seconds from :class:`LoopLag` (None: not measured)."""
    dead = [
        t.get("name", "?")
        for t in _tasks(health)
        if t.get("essential") and t.get("state") not in ("running", "starting")
    ]
    if dead:
        return Check(False, f"essential task(s) not running: {', '.join(sorted(dead))}")
    if lag is not None and lag >= limit:
        return Check(False, f"event loop {lag:.3f} s late (limit {limit:g} s)")
    if silent_for is not None and silent_for >= limit + 2 * LAG_INTERVAL:
        return Check(False, f"event loop monitor silent for {silent_for:.3f} s")
    shown = "not measured" if lag is None else f"{lag:.3f} s late"
    return Check(True, f"running, {shown}")


def check_store(health: Mapping[str, Any]) -> Check:
    store = health.get("store")
    if not isinstance(store, Mapping):
        return Check(False, "no store: readings are not being kept")
    task = next((t for t in _tasks(health) if t.get("name") == "store"), None)
    if task is not None and task.get("state") == "backing_off":
        error = task.get("last_error") or "stopped"
        return Check(False, f"store writer restarting after an error: {error}")
    conditions = store.get("conditions") or {}
    failing = sorted(c for c in conditions if c in FAILING_STORE_CONDITIONS)
    warnings = tuple(f"{c}: {conditions[c]}" for c in sorted(conditions) if c not in failing)
    key = health.get("key")
    if isinstance(key, Mapping) and key.get("rotation_pending"):
        warnings += ("a key rotation was interrupted; finish it with: bedside-gateway keys rotate",)
    if failing:
        return Check(False, "; ".join(f"{c}: {conditions[c]}" for c in failing), warnings)
    return Check(
        True, f"{store.get('commits', 0)} commits, backlog {store.get('backlog', 0)}", warnings
    )


def check_alarm_path(health: Mapping[str, Any]) -> Check:
    alarms = health.get("alarms")
    if not isinstance(alarms, Mapping):
        return Check(True, "no alarm engine in this gateway")
    broken = [
        str(a.get("condition"))
        for a in alarms.get("gateway_alarms") or []
        if isinstance(a, Mapping) and a.get("condition") in ALARM_PATH_CONDITIONS
    ]
    log = alarms.get("log")
    if isinstance(log, Mapping) and log.get("trouble"):
        broken.append(f"alarm log: {log['trouble']}")
    self_check = alarms.get("self_check")
    if isinstance(self_check, Mapping) and self_check.get("failing"):
        broken.append(f"self-check: {self_check['failing']}")
    if broken:
        return Check(False, "; ".join(dict.fromkeys(broken)))
    return Check(True, f"{alarms.get('open', 0)} open alarms")


def device_reason(device: Mapping[str, Any]) -> str | None:
    """Why a device needs a technician, in their words, or None when it is fine.

    The transports already phrase open failures for people ("no such device (not plugged in,
    or wrong path)", "permission denied (... dialout group)", "adapter off"): those are kept.
    """
    state = device.get("state")
    error = str(device.get("last_error") or "")
    conditions = [str(c) for c in device.get("conditions") or []]
    if state != "connected":
        if error:
            return f"{state}: {error}"
        return f"{state}: {device.get('detail') or 'waiting for the device'}"
    if "no_data" in conditions:
        age = device.get("last_data_age")
        since = "" if age is None else f" for {age:.0f} s"
        return f"no answer: connected but no data{since} (device off, wrong baud rate or cable)"
    checksum = int(device.get("checksum_errors") or 0)
    if checksum:
        return (
            f"{checksum} checksum errors (wrong baud rate or data format, a long or damaged "
            "cable, interference)"
        )
    if conditions:
        return "technical condition: " + ", ".join(conditions)
    return None


def degraded_devices(beds: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    out = []
    for bed in beds:
        for device in bed.get("devices") or []:
            reason = device_reason(device)
            if reason is not None:
                out.append((str(device.get("id")), reason))
    return tuple(out)


def verdict(
    health: Mapping[str, Any],
    beds: Sequence[Mapping[str, Any]],
    *,
    lag: float | None = None,
    silent_for: float | None = None,
    lag_limit: float = LAG_LIMIT,
) -> Verdict:
    loop = health.get("loop")
    if lag is None and isinstance(loop, Mapping):  # the API's view, read by `status`
        lag, silent_for = loop.get("lag"), loop.get("silent_for")
    return Verdict(
        loop=check_loop(health, lag, silent_for, lag_limit),
        store=check_store(health),
        alarm_path=check_alarm_path(health),
        devices=degraded_devices(beds),
        extra={"gateway": health.get("gateway"), "version": health.get("version")},
    )


def _tasks(health: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tasks = health.get("tasks")
    return [t for t in tasks if isinstance(t, Mapping)] if isinstance(tasks, list) else []


class GatewayView(Protocol):
    """What the ops endpoints read from the running gateway."""

    loop_lag: LoopLag

    def health(self) -> dict[str, Any]: ...

    def beds(self) -> list[dict[str, Any]]: ...


def loop_health(monitor: LoopLag) -> dict[str, Any]:
    """The loop part of ``health()``: seconds, rounded for JSON."""
    silent = monitor.silent_for()
    return {
        "lag": round(monitor.lag, 6),
        "max_lag": round(monitor.max_lag, 6),
        "silent_for": None if silent is None else round(silent, 6),
        "ticks": monitor.ticks,
    }


def current_verdict(view: GatewayView) -> Verdict:
    monitor = view.loop_lag
    return verdict(view.health(), view.beds(), lag=monitor.lag, silent_for=monitor.silent_for())


def install_healthz(app: web.Application, view: GatewayView) -> None:
    """``GET /healthz``: 200 with the verdict when healthy, 503 with it otherwise. No login:
    it is for probes, and carries no patient data."""

    async def handler(request: web.Request) -> web.Response:
        result = current_verdict(view)
        return web.Response(
            text=json.dumps(result.as_dict(), separators=(",", ":")),
            status=200 if result.healthy else 503,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get("/healthz", handler)


def key_status(
    key_file: Path, credential: str, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Where the running daemon's key-encryption key comes from, for ``status``; never the
    key itself. Mirrors :func:`gateway.twin.crypto.load_kek`: a systemd credential wins."""
    creds = environ.get("CREDENTIALS_DIRECTORY", "")
    if creds and os.path.lexists(os.path.join(creds, credential)):
        source = f"systemd credential {credential}"
    else:
        source = f"key file {key_file}"
    pending = key_file.with_name(key_file.name + ".new")
    return {"source": source, "rotation_pending": pending.exists()}


def finite_or_none(value: Any) -> float | None:
    """A number for JSON or a metric, or None for missing, NaN and infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
