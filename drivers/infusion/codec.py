"""Register blocks <-> pump values, for one register-map profile. Sans-I/O.

:class:`PumpCodec` is fed the register blocks of one poll (what the read requests of
:meth:`~drivers.infusion.profile.Profile.plan` returned) and gives a :class:`PumpFrame`,
or ``None`` when the poll cannot be trusted (a block missing or short, a register out of
range, or the map's magic value wrong: the device is not speaking this map). It never
raises on bad input and counts what it drops in :class:`~drivers.readings.CodecCounters`
(two bytes per register).

:func:`encode` is the inverse, used by the simulator: a frame to the registers a pump
speaking the profile would hold. ``decode(encode(frame)) == frame`` within one LSB of each
field's scale.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from drivers.infusion.profile import AlarmBit, Field, Profile, PumpState, ReadBlock, Role, Table
from drivers.readings import CodecCounters

#: Registers of one poll, by (table, start address) of each read block.
Blocks = Mapping[tuple[Table, int], Sequence[int]]

_RANGES = {
    "u16": (0, 0xFFFF),
    "s16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFFFFFF),
    "s32": (-0x80000000, 0x7FFFFFFF),
}


@dataclass(frozen=True, slots=True)
class PumpFrame:
    """What one poll said. Numerics are in each role's canonical unit (mL/h, mL, %, mg/mL);
    a value the pump marks missing (a sentinel) is ``None``. ``state`` is ``None`` when the
    map has no state or the raw value is not in its enumeration (then ``state_raw`` says
    what came)."""

    numerics: Mapping[Role, float | None] = field(default_factory=dict)
    state: PumpState | None = None
    state_raw: int | None = None
    alarms: tuple[AlarmBit, ...] = ()
    drug_name: str | None = None
    serial: str | None = None


# -- registers <-> raw values ---------------------------------------------------------------


def _ordered(registers: Sequence[int], f: Field) -> bytes:
    """Big-endian bytes of the value, after undoing the field's word and byte order."""
    regs = list(registers)
    if f.type != "string" and f.word_order == "little":
        regs.reverse()
    data = b"".join(r.to_bytes(2, "big") for r in regs)
    if f.byte_order == "little":
        data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    return data


def _to_registers(data: bytes, f: Field) -> list[int]:
    if f.byte_order == "little":
        data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if f.type != "string" and f.word_order == "little":
        regs.reverse()
    return regs


def raw_value(registers: Sequence[int], f: Field) -> int | float:
    """The field's raw number: an integer, or a float for f32."""
    data = _ordered(registers, f)
    if f.type == "f32":
        value: float = struct.unpack(">f", data)[0]
        # The shortest decimal that is this float32 (12.5, not 12.50000000000001...):
        # the digits a widened float32 shows beyond those are conversion noise.
        return float(str(np.float32(value))) if math.isfinite(value) else value
    return int.from_bytes(data, "big", signed=f.type in ("s16", "s32"))


def raw_bits(registers: Sequence[int], f: Field) -> int:
    """The field's registers as an unsigned integer (sentinels compare against this)."""
    return int.from_bytes(_ordered(registers, f), "big")


def raw_registers(value: int | float, f: Field) -> list[int]:
    """Registers holding raw ``value`` (clamped to the type's range)."""
    if f.type == "f32":
        return _to_registers(struct.pack(">f", float(value)), f)
    lo, hi = _RANGES[f.type]
    number = min(hi, max(lo, int(value)))
    size = 2 * f.words
    return _to_registers(number.to_bytes(size, "big", signed=f.type in ("s16", "s32")), f)


def text_of(registers: Sequence[int], f: Field) -> str:
    """ASCII, two characters per register, NUL-padded; anything else becomes '?'."""
    data = _ordered(registers, f).split(b"\0", 1)[0]
    return "".join(chr(b) if 32 <= b < 127 else "?" for b in data).strip()


def text_registers(text: str, f: Field) -> list[int]:
    data = text.encode("ascii", "replace")[: 2 * f.words].ljust(2 * f.words, b"\0")
    return _to_registers(data, f)


# -- decoding -------------------------------------------------------------------------------


class PumpCodec:
    """Decode polls of one profile. ``plan`` lists the reads a poll consists of."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.plan: tuple[ReadBlock, ...] = profile.plan()
        self.counters = CodecCounters()
        #: Polls refused because the map's magic value did not match.
        self.wrong_map = 0

    def decode(self, blocks: Blocks) -> PumpFrame | None:
        """The frame of one poll, or ``None`` (counted) when it cannot be trusted."""
        c = self.counters
        got = sum(len(regs) for regs in blocks.values())
        c.bytes_received += 2 * got
        image: dict[tuple[Table, int], int] = {}
        complete = True
        for block in self.plan:
            regs = blocks.get((block.table, block.address))
            if regs is None or len(regs) != block.count:
                complete = False
                continue
            for i, r in enumerate(regs):
                if type(r) is not int or not 0 <= r <= 0xFFFF:
                    complete = False
                image[(block.table, block.address + i)] = r
        if not complete:
            c.bytes_dropped += 2 * got
            return None
        p = self.profile

        def regs_of(f: Field) -> list[int]:
            return [image[(f.table, a)] for a in range(f.address, f.end)]

        if raw_bits(regs_of(p.magic), p.magic) != p.magic_value & ((1 << 16 * p.magic.words) - 1):
            self.wrong_map += 1
            c.bytes_dropped += 2 * got
            return None
        numerics: dict[Role, float | None] = {}
        for role, f in p.numerics.items():
            regs = regs_of(f)
            raw = raw_value(regs, f)
            if raw_bits(regs, f) in f.missing or not math.isfinite(raw):
                numerics[role] = None
            else:
                numerics[role] = raw * f.scale * f.factor
        state = state_raw = None
        if p.state is not None:
            state_raw = int(raw_value(regs_of(p.state), p.state))
            state = p.states.get(state_raw)
        alarms: tuple[AlarmBit, ...] = ()
        if p.alarms is not None:
            word = raw_bits(regs_of(p.alarms), p.alarms)
            alarms = tuple(b for b in p.alarm_bits if word >> b.bit & 1)
        drug = text_of(regs_of(p.drug_name), p.drug_name) if p.drug_name else None
        serial = text_of(regs_of(p.serial), p.serial) if p.serial else None
        c.frames_decoded += 1
        return PumpFrame(numerics, state, state_raw, alarms, drug or None, serial or None)


# -- encoding (simulator) --------------------------------------------------------------------


def encode(profile: Profile, frame: PumpFrame) -> dict[tuple[Table, int], list[int]]:
    """Registers of every block of ``profile.plan()`` holding ``frame``; unused registers
    inside a block are 0."""
    image: dict[tuple[Table, int], int] = {}

    def put(f: Field, regs: list[int]) -> None:
        for i, r in enumerate(regs):
            image[(f.table, f.address + i)] = r

    put(profile.magic, raw_registers(profile.magic_value, profile.magic))
    for role, f in profile.numerics.items():
        value = frame.numerics.get(role)
        if value is None:
            raw: int | float = min(f.missing) if f.missing else 0
        else:
            raw = value / f.factor / f.scale
            raw = raw if f.type == "f32" else round(raw)
        put(f, raw_registers(raw, f))
    if profile.state is not None:
        raw_state = frame.state_raw
        if frame.state is not None:
            raw_state = next((k for k, v in profile.states.items() if v is frame.state), 0)
        put(profile.state, raw_registers(raw_state or 0, profile.state))
    if profile.alarms is not None:
        word = 0
        for bit in profile.alarm_bits:
            if any(a.condition is bit.condition for a in frame.alarms):
                word |= 1 << bit.bit
        put(profile.alarms, raw_registers(word, profile.alarms))
    if profile.drug_name is not None:
        put(profile.drug_name, text_registers(frame.drug_name or "", profile.drug_name))
    if profile.serial is not None:
        put(profile.serial, text_registers(frame.serial or "", profile.serial))
    return {
        (b.table, b.address): [image.get((b.table, a), 0) for a in range(b.address, b.end)]
        for b in profile.plan()
    }
