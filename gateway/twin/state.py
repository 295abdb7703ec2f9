"""Live state of every bed: latest value of every metric with its age, device links, conditions.

The twin is the single place that decides whether a value is *stale*: a vital is stale when
it is older than ``stale_after`` seconds, when the device that produced it is not connected,
or when the device reported no value, marked it invalid, or reported ``no_data`` itself. A
connected device from which nothing arrived for ``stale_after`` seconds carries the derived
condition ``no_data``. Consumers (page, API, alarms) read staleness from here rather than guessing.

Device link states and their transitions, in one place::

    CONNECTING --connected--> CONNECTED --lost--> DISCONNECTED --connected--> CONNECTED
    CONNECTING --failed----> DISCONNECTED

Each transition is logged once (not every retry), with the technician-facing reason.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from drivers.clock import Clock
from drivers.codes import Code, Unit
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)

log = structlog.get_logger(__name__)

#: Seconds after which a vital is shown as stale unless refreshed.
DEFAULT_STALE_AFTER = 5.0
#: A value the device itself marks unusable is never shown as current.
_NOT_CURRENT = MeasurementStatus.INVALID | MeasurementStatus.UNAVAILABLE


class Link(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


#: (state, link is now up?) -> next state. A missing entry is a bug.
LINK_TRANSITIONS: Mapping[tuple[Link, bool], Link] = {
    (Link.CONNECTING, True): Link.CONNECTED,
    (Link.CONNECTING, False): Link.DISCONNECTED,
    (Link.CONNECTED, True): Link.CONNECTED,
    (Link.CONNECTED, False): Link.DISCONNECTED,
    (Link.DISCONNECTED, True): Link.CONNECTED,
    (Link.DISCONNECTED, False): Link.DISCONNECTED,
}


@dataclass(slots=True)
class Vital:
    """Latest value of one metric at one bed."""

    code: Code
    value: float | None
    unit: Unit
    status: MeasurementStatus
    source: str
    time: float
    received: float  # twin clock monotonic seconds


@dataclass(slots=True)
class DeviceState:
    id: str
    driver: str
    counters: CodecCounters
    link: Link = Link.CONNECTING
    since: float = 0.0  # monotonic seconds of the last link change
    detail: str = ""
    conditions: set[Condition] = field(default_factory=set)
    identity: Identity | None = None
    last_data: float | None = None  # monotonic seconds of the last reading
    waveform_samples: int = 0


@dataclass(slots=True)
class BedState:
    id: str
    label: str
    vitals: dict[str, Vital] = field(default_factory=dict)
    devices: dict[str, DeviceState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BedSpec:
    """What the twin needs to know about a configured bed."""

    id: str
    label: str


class Twin:
    """Live picture of every bed, updated from the hub."""

    def __init__(
        self, beds: Iterable[BedSpec], clock: Clock, stale_after: float = DEFAULT_STALE_AFTER
    ):
        self._clock = clock
        self.stale_after = stale_after
        self.beds: dict[str, BedState] = {b.id: BedState(b.id, b.label) for b in beds}
        self._bed_of: dict[str, str] = {}
        self.version = 0
        self._changed = asyncio.Event()

    def register_device(
        self, bed_id: str, device_id: str, driver: str, counters: CodecCounters
    ) -> None:
        if device_id in self._bed_of:
            raise ValueError(f"device {device_id!r} registered twice")
        self._bed_of[device_id] = bed_id
        self.beds[bed_id].devices[device_id] = DeviceState(
            device_id, driver, counters, since=self._clock.monotonic()
        )

    # -- updates -----------------------------------------------------------------------
    def apply(self, reading: Reading) -> None:
        bed_id = self._bed_of.get(reading.source)
        if bed_id is None:
            log.warning("reading from unregistered device", device=reading.source)
            return
        bed = self.beds[bed_id]
        device = bed.devices[reading.source]
        now = self._clock.monotonic()
        if isinstance(reading, Numeric):
            bed.vitals[reading.code.refid] = Vital(
                reading.code,
                reading.value,
                reading.unit,
                reading.status,
                reading.source,
                reading.time,
                now,
            )
            device.last_data = now
        elif isinstance(reading, Waveform):
            device.waveform_samples += len(reading.samples)
            device.last_data = now
        elif isinstance(reading, DeviceEvent):
            self._apply_event(device, reading, now)
        else:
            device.identity = reading
        self.version += 1
        self._changed.set()

    def _apply_event(self, device: DeviceState, event: DeviceEvent, now: float) -> None:
        if event.condition is Condition.DISCONNECTED:
            new = LINK_TRANSITIONS[(device.link, not event.active)]
            if new is not device.link:
                device.link, device.since = new, now
                log.info(
                    "device link changed",
                    device=device.id,
                    driver=device.driver,
                    link=new.value,
                    detail=event.detail,
                )
            device.detail = event.detail
            if new is Link.DISCONNECTED:
                device.conditions.clear()
            return
        if event.active:
            device.conditions.add(event.condition)
        else:
            device.conditions.discard(event.condition)

    async def wait_changed(self, seen_version: int) -> int:
        """Return the current version once it differs from ``seen_version``."""
        while self.version == seen_version:
            self._changed.clear()
            await self._changed.wait()
        return self.version

    async def consume(self, subscription: Any) -> None:
        """Apply every reading from a hub subscription, forever."""
        async for reading in subscription:
            self.apply(reading)

    # -- views -------------------------------------------------------------------------
    def is_stale(self, bed: BedState, vital: Vital, now: float) -> bool:
        """Whether ``vital`` must not be shown as a current value."""
        device = bed.devices.get(vital.source)
        return (
            vital.value is None
            or bool(vital.status & _NOT_CURRENT)
            or now - vital.received > self.stale_after
            or device is None
            or device.link is not Link.CONNECTED
            # The device itself says its data stopped (a pump that fails its polls, a
            # strap whose stream stopped): stale now, even when its own limit is shorter
            # than ours.
            or Condition.NO_DATA in device.conditions
        )

    def _silent(self, device: DeviceState, now: float) -> bool:
        """Connected, but nothing arrived for longer than ``stale_after``."""
        last = device.since if device.last_data is None else max(device.last_data, device.since)
        return device.link is Link.CONNECTED and now - last > self.stale_after

    def snapshot(
        self, extra_device_fields: Callable[[str], Mapping[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """JSON-ready picture of every bed, ages computed now."""
        now = self._clock.monotonic()
        out = []
        for bed in self.beds.values():
            vitals = {
                refid: {
                    "value": v.value,
                    "unit": v.unit.ucum,
                    "age": round(now - v.received, 3),
                    "stale": self.is_stale(bed, v, now),
                    "status": v.status.names(),
                    "source": v.source,
                    "time": v.time,
                }
                for refid, v in bed.vitals.items()
            }
            devices = []
            for d in bed.devices.values():
                entry: dict[str, Any] = {
                    "id": d.id,
                    "driver": d.driver,
                    "state": d.link.value,
                    "state_age": round(now - d.since, 3),
                    "detail": d.detail,
                    "conditions": sorted(
                        [c.value for c in d.conditions]
                        + (["no_data"] if self._silent(d, now) else [])
                    ),
                    "last_data_age": None if d.last_data is None else round(now - d.last_data, 3),
                    "waveform_samples": d.waveform_samples,
                    **d.counters.as_dict(),
                }
                if d.identity is not None:
                    entry["identity"] = {
                        "manufacturer": d.identity.manufacturer,
                        "model": d.identity.model,
                        "serial": d.identity.serial,
                        "firmware": d.identity.firmware,
                    }
                if extra_device_fields is not None:
                    entry.update(extra_device_fields(d.id))
                devices.append(entry)
            out.append({"id": bed.id, "label": bed.label, "vitals": vitals, "devices": devices})
        return out
