"""Capture files: recorded device traffic, and readings as JSON.

A capture is JSON Lines, one received chunk per line, in arrival order::

    {"t": 1767225600.125, "rx": "01 81 43 00 c5"}

``t`` is gateway wall time in UTC seconds; ``rx`` is the received bytes in hex (spaces
optional). Later transports add their own fields (BLE characteristic, Modbus unit and
address); readers ignore fields they do not know. Raw binary dumps are accepted too, with
times derived from the line rate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from drivers.clock import Clock
from drivers.device import SerialDeviceModel
from drivers.readings import DeviceEvent, Identity, Numeric, Reading, Waveform

if TYPE_CHECKING:
    from drivers.transport.serial import SerialTransport


class CaptureError(ValueError):
    """A capture line that cannot be read; the message names the line."""


def read_capture(path: Path) -> Iterator[tuple[float, bytes]]:
    """Yield ``(t, bytes)`` per line; raise :class:`CaptureError` naming a bad line."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                t = float(record["t"])
                if not math.isfinite(t):
                    raise ValueError("t is not a finite number")
                yield t, bytes.fromhex(record["rx"])
            except (ValueError, KeyError, TypeError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                raise CaptureError(
                    f"{path}:{number}: not a capture line ({reason}); "
                    'expected {"t": seconds, "rx": "hex bytes"} (raw bytes need --raw)'
                ) from None


def read_raw(path: Path, bytes_per_second: float, chunk: int = 64) -> Iterator[tuple[float, bytes]]:
    """Split a raw binary dump into chunks timed as if they arrived at the line rate."""
    data = path.read_bytes()
    for offset in range(0, len(data), chunk):
        yield offset / bytes_per_second, data[offset : offset + chunk]


def capture_line(t: float, rx: bytes) -> str:
    return json.dumps({"t": round(t, 6), "rx": rx.hex(" ")})


def decode(model: SerialDeviceModel, chunks: Iterable[tuple[float, bytes]]) -> Iterator[Reading]:
    """Replay chunks through a device model as if one connection delivered them."""
    started = False
    for t, data in chunks:
        if not started:
            _, readings = model.on_connect(t)
            yield from readings
            started = True
        yield from model.feed(data, t)


def reading_to_json(reading: Reading) -> dict[str, Any]:
    """One reading as a JSON-ready object: ``type``, ``code``, ``value``, ``unit``, ``t``."""
    if isinstance(reading, Numeric):
        return {
            "type": "numeric",
            "source": reading.source,
            "code": reading.code.refid,
            "value": reading.value,
            "unit": reading.unit.ucum,
            "t": reading.time,
            "status": reading.status.names(),
        }
    if isinstance(reading, Waveform):
        return {
            "type": "waveform",
            "source": reading.source,
            "code": reading.code.refid,
            "value": reading.samples.tolist(),
            "unit": reading.unit.ucum,
            "t": reading.start_time,
            "sample_rate": reading.sample_rate,
            "sequence": reading.sequence,
        }
    if isinstance(reading, DeviceEvent):
        return {
            "type": "event",
            "source": reading.source,
            "code": None,
            "value": reading.active,
            "unit": None,
            "t": reading.time,
            "condition": reading.condition.value,
            "active": reading.active,
            "detail": reading.detail,
            "priority": None if reading.priority is None else reading.priority.value,
        }
    assert isinstance(reading, Identity)
    return {
        "type": "identity",
        "source": reading.source,
        "code": None,
        "value": {
            "manufacturer": reading.manufacturer,
            "model": reading.model,
            "serial": reading.serial,
            "firmware": reading.firmware,
        },
        "unit": None,
        "t": reading.time,
    }


async def record(transport: SerialTransport, clock: Clock, seconds: float, out: TextIO) -> int:
    """Write what ``transport`` receives during ``seconds`` to ``out`` as capture lines.

    Only reads: nothing is ever sent to the device. Returns the bytes recorded; a link
    lost midway ends the recording early (what arrived is kept) and re-raises.
    """
    from drivers.serial_device import listen

    recorded = 0

    def write(data: bytes) -> None:
        nonlocal recorded
        out.write(capture_line(clock.wall(), data) + "\n")
        recorded += len(data)

    await transport.open()
    try:
        await listen(transport, clock, seconds, write)
    finally:
        out.flush()
    return recorded
