"""BLE capture files: recorded GATT notifications, for ``decode`` and for bug reports.

The serial capture format (``drivers.capture``) with the characteristic added; one
notification or indication per line, in arrival order::

    {"t": 1767225600.125, "char": "00002a5f-0000-1000-8000-00805f9b34fb", "rx": "1c 61 00 ..."}

``t`` is gateway wall time in UTC seconds, ``char`` the characteristic's full 128-bit UUID
(lower case), ``rx`` the payload in hex (spaces optional).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from drivers.ble_device import record_notifications
from drivers.capture import CaptureError
from drivers.clock import Clock
from drivers.device import BleDeviceModel
from drivers.readings import Reading
from drivers.transport.ble import BleTransport

__all__ = ["ble_capture_line", "decode_ble", "read_ble_capture", "record_ble"]

Notification = tuple[float, str, bytes]


def ble_capture_line(t: float, uuid: str, payload: bytes) -> str:
    return json.dumps({"t": round(t, 6), "char": uuid.lower(), "rx": payload.hex(" ")})


def read_ble_capture(path: Path) -> Iterator[Notification]:
    """Yield ``(t, uuid, payload)`` per line; raise :class:`CaptureError` naming a bad line."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                t = float(record["t"])
                if not math.isfinite(t):
                    raise ValueError("t is not a finite number")
                uuid = str(record["char"]).lower()
                if len(uuid) != 36:
                    raise ValueError(f"char {uuid!r} is not a 128-bit UUID")
                yield t, uuid, bytes.fromhex(record["rx"])
            except (ValueError, KeyError, TypeError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                raise CaptureError(
                    f"{path}:{number}: not a BLE capture line ({reason}); expected "
                    '{"t": seconds, "char": "128-bit uuid", "rx": "hex bytes"}'
                ) from None


def decode_ble(model: BleDeviceModel, notifications: Iterable[Notification]) -> Iterator[Reading]:
    """Replay notifications through a device model as if one connection delivered them."""
    started = False
    for t, uuid, payload in notifications:
        if not started:
            _, readings = model.on_connect(t)
            yield from readings
            started = True
        yield from model.feed(uuid, payload, t)


async def record_ble(
    transport: BleTransport, model: BleDeviceModel, clock: Clock, seconds: float, out: TextIO
) -> int:
    """Write the notifications of ``model``'s characteristics during ``seconds`` to ``out``.

    Performs only the model's stream-start writes (the H10's ECG start; never a clinical
    setting). Returns the notifications recorded; a lost link ends early and re-raises.
    """
    recorded = 0

    def write(uuid: str, payload: bytes) -> None:
        nonlocal recorded
        out.write(ble_capture_line(clock.wall(), uuid, payload) + "\n")
        recorded += 1

    try:
        await record_notifications(transport, model, clock, seconds, write)
    finally:
        out.flush()
    return recorded
