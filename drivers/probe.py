"""Which protocol is this port speaking? Listen, never talk.

A probe opens a port at each distinct line setting the drivers use, reads for a while, and
feeds the same bytes to every driver variant that uses that setting; the variant that
decodes frames with few bytes dropped is the answer. Probing only reads: devices that stay
silent until commanded (they need a start command) cannot be probed this way, and the
result says so by listing nothing for them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from drivers import registry
from drivers.clock import Clock
from drivers.device import DeviceError, SerialDeviceModel, SerialSettings
from drivers.serial_device import listen, open_serial

#: A variant is recognised when it decoded at least this many frames ...
MIN_FRAMES = 3
#: ... and dropped no more than this share of the bytes.
MAX_DROPPED_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one driver variant made of the port's traffic at one line setting."""

    port: str
    driver: str
    variant: dict[str, Any]
    line: str  # e.g. "9600 8N1"
    bytes_received: int
    frames_decoded: int
    bytes_dropped: int
    error: str = ""

    @property
    def recognised(self) -> bool:
        if self.error or self.frames_decoded < MIN_FRAMES:
            return False
        return self.bytes_dropped <= MAX_DROPPED_SHARE * max(1, self.bytes_received)


def _candidates(
    drivers: Iterable[str] | None,
) -> dict[tuple[int, int, str, float], list[tuple[str, dict[str, Any], SerialSettings]]]:
    groups: dict[tuple[int, int, str, float], list[tuple[str, dict[str, Any], SerialSettings]]]
    groups = defaultdict(list)
    for name in drivers if drivers is not None else registry.names():
        spec = registry.get(name)
        if spec.transport != "serial":
            continue
        for variant in spec.probe_variants:
            try:
                settings = spec.settings.model_validate(dict(variant))
            except ValidationError:
                continue
            if isinstance(settings, SerialSettings):
                key = (settings.baudrate, settings.bytesize, settings.parity, settings.stopbits)
                groups[key].append((name, dict(variant), settings))
    return groups


async def probe_port(
    port: str,
    clock: Clock,
    *,
    seconds: float = 3.0,
    drivers: Iterable[str] | None = None,
) -> list[ProbeResult]:
    """Listen on ``port`` at every line setting in turn; one result per driver variant."""
    results: list[ProbeResult] = []
    for (baud, bytesize, parity, stopbits), members in _candidates(drivers).items():
        line = f"{baud} {bytesize}{parity}{stopbits:g}"
        models: list[tuple[str, dict[str, Any], SerialDeviceModel]] = [
            (name, variant, cast(SerialDeviceModel, registry.get(name).make_model("probe", s)))
            for name, variant, s in members
        ]
        for _, _, model in models:
            model.on_connect(clock.wall())  # what it would send is never sent
        error = await _listen(port, members[0][2], clock, seconds, models)
        for name, variant, model in models:
            c = model.counters
            results.append(
                ProbeResult(
                    port,
                    name,
                    variant,
                    line,
                    c.bytes_received,
                    c.frames_decoded,
                    c.bytes_dropped,
                    error,
                )
            )
    return results


async def _listen(
    port: str,
    settings: BaseModel,
    clock: Clock,
    seconds: float,
    models: list[tuple[str, dict[str, Any], SerialDeviceModel]],
) -> str:
    transport = open_serial(settings, port)  # type: ignore[arg-type]
    try:
        await transport.open()
    except DeviceError as exc:
        await transport.close()
        return str(exc)

    def feed(data: bytes) -> None:
        for _, _, model in models:
            model.feed(data, clock.wall())

    try:
        await listen(transport, clock, seconds, feed)
    except DeviceError as exc:
        return str(exc)
    return ""
