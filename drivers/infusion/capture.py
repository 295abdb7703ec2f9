"""Modbus capture files: what a pump's registers said, poll by poll, and their decoding.

A Modbus capture is JSON Lines, one read per line, in the order read::

    {"t": 1767225600.125, "unit": 1, "fc": 4, "address": 0, "rx": "50 55 4d 50 ..."}

``t`` is gateway wall time (UTC seconds), ``unit`` the Modbus unit id, ``fc`` the read
function code (3 holding, 4 input registers), ``address`` the first register, and ``rx`` the
register bytes as on the wire (each register high byte first), in hex. The reads of one poll
are consecutive lines; a poll ends when the next line names a block already seen, or
another unit. ``bedside-gateway capture --modbus`` writes them; ``decode`` replays them
through the pump model with a chosen profile.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from drivers.capture import CaptureError
from drivers.clock import Clock
from drivers.infusion.profile import Table
from drivers.infusion.pump import InfusionPump
from drivers.readings import Reading
from drivers.transport.modbus import ModbusTransport, ReadTable


@dataclass(frozen=True, slots=True)
class ModbusRecord:
    t: float
    unit: int
    fc: int
    address: int
    registers: tuple[int, ...]


def capture_line(t: float, unit: int, fc: int, address: int, registers: Sequence[int]) -> str:
    rx = b"".join(r.to_bytes(2, "big") for r in registers).hex(" ")
    return json.dumps({"t": round(t, 6), "unit": unit, "fc": fc, "address": address, "rx": rx})


def read_modbus_capture(path: Path) -> Iterator[ModbusRecord]:
    """Records of a Modbus capture; :class:`CaptureError` names a bad line."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw.decode("utf-8"))
                t = float(item["t"])
                unit, fc, address = int(item["unit"]), int(item["fc"]), int(item["address"])
                data = bytes.fromhex(item["rx"])
                if not math.isfinite(t) or fc not in (3, 4) or len(data) % 2:
                    raise ValueError("t, fc (3 or 4) or the register bytes are wrong")
            except (ValueError, KeyError, TypeError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                raise CaptureError(
                    f"{path}:{number}: not a Modbus capture line ({reason}); expected "
                    '{"t": seconds, "unit": id, "fc": 3 or 4, "address": n, "rx": "hex"}'
                ) from None
            regs = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
            yield ModbusRecord(t, unit, fc, address, regs)


def polls(
    records: Iterable[ModbusRecord],
) -> Iterator[tuple[float, int, dict[tuple[Table, int], Sequence[int]]]]:
    """Group records into polls: (time of the last read, unit, blocks)."""
    blocks: dict[tuple[Table, int], Sequence[int]] = {}
    unit, t = -1, 0.0
    for record in records:
        key = (Table(record.fc), record.address)
        if blocks and (record.unit != unit or key in blocks):
            yield t, unit, blocks
            blocks = {}
        unit, t = record.unit, record.t
        blocks[key] = record.registers
    if blocks:
        yield t, unit, blocks


def decode(
    model: InfusionPump, records: Iterable[ModbusRecord], unit: int | None = None
) -> Iterator[Reading]:
    """Replay a capture's polls (of ``unit``, or of every unit) through ``model``."""
    for t, polled, blocks in polls(records):
        if unit is None or polled == unit:
            yield from model.on_poll(blocks, t)


async def record(
    transport: ModbusTransport,
    clock: Clock,
    unit: int,
    model: InfusionPump,
    *,
    seconds: float,
    interval: float,
    out: TextIO,
    answer_within: float = 0.5,
) -> int:
    """Poll ``unit`` for ``seconds`` (read requests only) and write every read as a capture
    line. Returns the number of polls answered; a poll that gets no answer is skipped."""
    from drivers.transport.modbus import ExceptionReply, NoResponse

    answered = 0
    end = clock.monotonic() + seconds
    next_poll = clock.monotonic()
    try:
        while clock.monotonic() < end:
            try:
                blocks = await transport.read_blocks(
                    unit,
                    [(ReadTable(b.table), b.address, b.count) for b in model.plan],
                    answer_within=answer_within,
                )
            except (NoResponse, ExceptionReply):
                blocks = []
            now = clock.wall()
            for block, regs in zip(model.plan, blocks, strict=False):
                out.write(capture_line(now, unit, int(block.table), block.address, regs) + "\n")
            answered += bool(blocks)
            next_poll += interval
            await clock.sleep(max(0.0, next_poll - clock.monotonic()))
    finally:
        out.flush()
        await transport.close()
    return answered
