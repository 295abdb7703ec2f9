"""Nonin serial pulse oximeters (OEM III module, Xpod, WristOx2 3150, Onyx II 9560).

Three of the device's serial data formats (``protocols.md`` section 4a):

* **DF2 and DF7**: 75 five-byte frames per second, grouped in packets of 25 frames (one
  packet every 1/3 s). Each frame carries a STATUS byte, one pleth sample and one FLOAT
  byte; the FLOAT bytes of a packet, by frame position, spell out heart rate, SpO2
  (several averages), firmware revision, a timer and STAT2.

  - DF2 frame: ``01 | STATUS | PLETH (8 bit) | FLOAT | CHK``
  - DF7 frame: ``STATUS | PLETH MSB | PLETH LSB | FLOAT | CHK``

  with ``CHK = sum(bytes 0..3) mod 256`` and STATUS bit 7 always set.
* **DF8**: one four-byte frame per second, ``STATUS | HR | SpO2 | STATUS2``, with no
  checksum and no pleth. Its STATUS bits are *not* those of DF2/DF7 (see :class:`Df8Status`).

DF13 (SmartPoint spot-check records) is not implemented: see :class:`NoninSettings`.

The module is sans-I/O: :class:`NoninCodec` (DF2/DF7) is fed bytes and returns
:class:`NoninPacket` objects, :class:`NoninDf8Codec` returns :class:`NoninDf8Frame`
objects; :func:`encode_packet` and :func:`encode_df8` are their inverses (used by the
simulator and the property tests); :class:`NoninOximeter` turns either into readings.
Nothing here touches a port.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias, get_args

import numpy as np

from drivers import codes
from drivers.conditions import ConditionTracker
from drivers.device import SerialSettings
from drivers.readings import (
    CodecCounters,
    Condition,
    Identity,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)
from drivers.registry import DriverSpec

#: Every data format the driver decodes (the ``data_format`` setting).
DataFormat: TypeAlias = Literal[2, 7, 8]
#: The formats made of 25-frame packets with a pleth sample per frame.
PacketFormat: TypeAlias = Literal[2, 7]

FRAME_LEN: Final = 5
FRAMES_PER_PACKET: Final = 25
PACKET_LEN: Final = FRAME_LEN * FRAMES_PER_PACKET
#: Frames (and pleth samples) per second, DF2 and DF7.
FRAME_RATE_HZ: Final = 75.0
#: Seconds covered by one packet (1/3 s).
PACKET_PERIOD_S: Final = FRAMES_PER_PACKET / FRAME_RATE_HZ
#: Missing-value sentinels (protocols.md 4a).
MISSING_HR: Final = 511
MISSING_SPO2: Final = 127
#: Largest pleth sample each packet format can carry (DF8 has no pleth).
PLETH_MAX: Final[dict[PacketFormat, int]] = {2: 0xFF, 7: 0xFFFF}

_DF2_LEAD: Final = 0x01
_HR_MAX: Final = 0x1FF  # 9-bit field
_SPO2_MAX: Final = 100  # %


class Status(enum.IntFlag):
    """STATUS byte bits, DF2 and DF7 alike (protocols.md 4a)."""

    SYNC = 0x01  # first frame of a packet
    GPRF = 0x02  # green perfusion (high amplitude); with RPRF: yellow
    RPRF = 0x04  # red perfusion (low amplitude)
    SNSA = 0x08  # sensor alarm: unusable data
    OOT = 0x10  # out of track: no consecutive good pulses
    ARTF = 0x20  # artifact: beat did not match the pulse interval
    SNSD = 0x40  # sensor disconnected or inoperable
    MARKER = 0x80  # always set: marks a STATUS byte


class Stat2(enum.IntFlag):
    """STAT2 (FLOAT byte of frame 8) bits known from public readers; the rest are [U]."""

    LOW_BATTERY = 0x01
    SMARTPOINT = 0x20


_PERFUSION_BITS: Final = Status.GPRF | Status.RPRF
# Plain ints for the decoders' hot paths: IntFlag arithmetic costs more than a frame check.
_MARKER_BIT: Final = 0x80
_SYNC_BIT: Final = 0x01
_PERFUSION_MASK: Final = int(_PERFUSION_BITS)
_RED_PERFUSION: Final = int(Status.RPRF)


class _Slot(enum.IntEnum):
    """0-based frame index whose FLOAT byte carries each field (the 4a FLOAT table)."""

    HR_MSB = 0
    HR_LSB = 1
    SPO2 = 2
    FIRMWARE = 3
    TIMER_MSB = 5
    TIMER_LSB = 6
    STAT2 = 7
    SPO2_DISPLAY = 8
    SPO2_FAST = 9
    SPO2_B2B = 10
    E_HR_MSB = 13
    E_HR_LSB = 14
    E_SPO2 = 15
    E_SPO2_DISPLAY = 16
    HR_DISPLAY_MSB = 19
    HR_DISPLAY_LSB = 20
    E_HR_DISPLAY_MSB = 21
    E_HR_DISPLAY_LSB = 22


# --- vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoninFrame:
    """One 5-byte frame, without its framing and checksum.

    ``status`` is the STATUS byte (0x80..0xFF, see :class:`Status`); ``pleth`` is the
    plethysmogram sample in device units (DF2 0..255, DF7 0..65535); ``float_byte``
    (0..255) is one byte of the packet's FLOAT table, meaning set by the frame's position.
    """

    status: int
    pleth: int
    float_byte: int

    def __post_init__(self) -> None:
        if not 0x80 <= self.status <= 0xFF:
            raise ValueError(f"status must be 0x80..0xFF (bit 7 set), got {self.status:#x}")
        if not 0 <= self.pleth <= 0xFFFF:
            raise ValueError(f"pleth must be 0..65535, got {self.pleth}")
        if not 0 <= self.float_byte <= 0xFF:
            raise ValueError(f"float_byte must be 0..255, got {self.float_byte}")


@dataclass(frozen=True, slots=True)
class NoninValues:
    """The numbers a packet's FLOAT bytes carry; ``None`` means the device's missing sentinel.

    Heart rates are in beats/min (0..510, sentinel 511); SpO2 values in percent (0..100,
    sentinel 127, anything else up to 126 passes through as sent). ``hr`` and ``spo2`` are
    4-beat averages, ``e_*`` 8-beat ("extended") averages, ``*_display`` the values the
    device shows, ``spo2_fast`` and ``spo2_b2b`` the fast and beat-to-beat SpO2.
    ``firmware`` is the revision byte, ``timer`` a 16-bit counter (meaning [U]) and
    ``stat2`` the STAT2 byte (:class:`Stat2`).
    """

    hr: int | None
    spo2: int | None
    spo2_display: int | None
    spo2_fast: int | None
    spo2_b2b: int | None
    e_hr: int | None
    e_spo2: int | None
    e_spo2_display: int | None
    hr_display: int | None
    e_hr_display: int | None
    firmware: int
    timer: int
    stat2: int

    @classmethod
    def steady(
        cls, hr: int | None, spo2: int | None, *, firmware: int, timer: int = 0, stat2: int = 0
    ) -> NoninValues:
        """Values of a settled reading: every average equals the 4-beat one."""
        return cls(
            hr=hr,
            spo2=spo2,
            spo2_display=spo2,
            spo2_fast=spo2,
            spo2_b2b=spo2,
            e_hr=hr,
            e_spo2=spo2,
            e_spo2_display=spo2,
            hr_display=hr,
            e_hr_display=hr,
            firmware=firmware,
            timer=timer,
            stat2=stat2,
        )

    @classmethod
    def from_float_bytes(cls, floats: Sequence[int]) -> NoninValues:
        """Decode the 25 FLOAT bytes of a packet, in frame order."""

        def hr(msb: _Slot, lsb: _Slot) -> int | None:
            # Only MSB bits 1-0 belong to HR (bits 8-7); Pufferfish's 0x18 mask is a bug.
            value = ((floats[msb] & 0x03) << 7) | (floats[lsb] & 0x7F)
            return None if value == MISSING_HR else value

        def spo2(slot: _Slot) -> int | None:
            return None if floats[slot] == MISSING_SPO2 else floats[slot]

        return cls(
            hr=hr(_Slot.HR_MSB, _Slot.HR_LSB),
            spo2=spo2(_Slot.SPO2),
            spo2_display=spo2(_Slot.SPO2_DISPLAY),
            spo2_fast=spo2(_Slot.SPO2_FAST),
            spo2_b2b=spo2(_Slot.SPO2_B2B),
            e_hr=hr(_Slot.E_HR_MSB, _Slot.E_HR_LSB),
            e_spo2=spo2(_Slot.E_SPO2),
            e_spo2_display=spo2(_Slot.E_SPO2_DISPLAY),
            hr_display=hr(_Slot.HR_DISPLAY_MSB, _Slot.HR_DISPLAY_LSB),
            e_hr_display=hr(_Slot.E_HR_DISPLAY_MSB, _Slot.E_HR_DISPLAY_LSB),
            firmware=floats[_Slot.FIRMWARE],
            timer=(floats[_Slot.TIMER_MSB] << 8) | floats[_Slot.TIMER_LSB],
            stat2=floats[_Slot.STAT2],
        )

    def to_float_bytes(self) -> tuple[int, ...]:
        """The 25 FLOAT bytes carrying these values; reserved positions are 0.

        Raises ``ValueError`` for a value the wire cannot carry.
        """
        floats = [0] * FRAMES_PER_PACKET

        def put_hr(msb: _Slot, lsb: _Slot, value: int | None) -> None:
            raw = MISSING_HR if value is None else value
            if not 0 <= raw <= _HR_MAX:
                raise ValueError(f"heart rate must be 0..{_HR_MAX}, got {raw}")
            floats[msb], floats[lsb] = raw >> 7, raw & 0x7F

        def put_byte(slot: _Slot, value: int | None, missing: int = MISSING_SPO2) -> None:
            raw = missing if value is None else value
            if not 0 <= raw <= 0xFF:
                raise ValueError(f"{slot.name} must be 0..255, got {raw}")
            floats[slot] = raw

        put_hr(_Slot.HR_MSB, _Slot.HR_LSB, self.hr)
        put_hr(_Slot.E_HR_MSB, _Slot.E_HR_LSB, self.e_hr)
        put_hr(_Slot.HR_DISPLAY_MSB, _Slot.HR_DISPLAY_LSB, self.hr_display)
        put_hr(_Slot.E_HR_DISPLAY_MSB, _Slot.E_HR_DISPLAY_LSB, self.e_hr_display)
        put_byte(_Slot.SPO2, self.spo2)
        put_byte(_Slot.SPO2_DISPLAY, self.spo2_display)
        put_byte(_Slot.SPO2_FAST, self.spo2_fast)
        put_byte(_Slot.SPO2_B2B, self.spo2_b2b)
        put_byte(_Slot.E_SPO2, self.e_spo2)
        put_byte(_Slot.E_SPO2_DISPLAY, self.e_spo2_display)
        put_byte(_Slot.FIRMWARE, self.firmware)
        put_byte(_Slot.STAT2, self.stat2)
        if not 0 <= self.timer <= 0xFFFF:
            raise ValueError(f"timer must be 0..65535, got {self.timer}")
        floats[_Slot.TIMER_MSB], floats[_Slot.TIMER_LSB] = self.timer >> 8, self.timer & 0xFF
        return tuple(floats)


@dataclass(frozen=True, slots=True)
class NoninPacket:
    """25 consecutive frames starting at the one with SYNC set: 1/3 s of data.

    ``frames`` is the whole truth (so packets round-trip byte for byte, reserved FLOAT
    bytes included); ``values`` is decoded from it once, at construction.
    """

    frames: tuple[NoninFrame, ...]
    values: NoninValues = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.frames) != FRAMES_PER_PACKET:
            raise ValueError(f"a packet has {FRAMES_PER_PACKET} frames, got {len(self.frames)}")
        syncs = [bool(f.status & _SYNC_BIT) for f in self.frames]
        if syncs != [True] + [False] * (FRAMES_PER_PACKET - 1):
            raise ValueError("SYNC must be set on the first frame of a packet and only there")
        values = NoninValues.from_float_bytes([f.float_byte for f in self.frames])
        object.__setattr__(self, "values", values)

    @classmethod
    def build(
        cls, values: NoninValues, statuses: Sequence[int], pleth: Sequence[int]
    ) -> NoninPacket:
        """Assemble a packet; SYNC is set on the first status and cleared on the others.

        ``statuses`` are STATUS bytes (bit 7 is forced on), ``pleth`` 25 samples.
        """
        if len(statuses) != FRAMES_PER_PACKET or len(pleth) != FRAMES_PER_PACKET:
            raise ValueError(f"need {FRAMES_PER_PACKET} statuses and pleth samples")
        # SYNC is positional, so it is derived here rather than trusted from the caller.
        sync = [Status.SYNC] + [Status(0)] * (FRAMES_PER_PACKET - 1)
        floats = values.to_float_bytes()
        frames = tuple(
            NoninFrame(int((s & ~int(Status.SYNC)) | Status.MARKER | y), pleth=p, float_byte=f)
            for s, y, p, f in zip(statuses, sync, pleth, floats, strict=True)
        )
        return cls(frames)

    @property
    def statuses(self) -> tuple[int, ...]:
        """The 25 STATUS bytes in frame order."""
        return tuple(f.status for f in self.frames)

    @property
    def pleth(self) -> tuple[int, ...]:
        """The 25 pleth samples in frame order (device units, 75 Hz)."""
        return tuple(f.pleth for f in self.frames)

    @property
    def status_union(self) -> Status:
        """STATUS bits set in any frame of the packet."""
        union = 0
        for f in self.frames:
            union |= f.status
        return Status(union)


# --- encoder -------------------------------------------------------------------------------


def _checksum(head: bytes) -> int:
    return sum(head) & 0xFF


def encode_frame(frame: NoninFrame, data_format: PacketFormat) -> bytes:
    """The 5 wire bytes of ``frame``; ``ValueError`` if DF2 cannot carry its pleth."""
    if frame.pleth > PLETH_MAX[data_format]:
        raise ValueError(f"DF{data_format} pleth must be 0..{PLETH_MAX[data_format]}")
    if data_format == 2:
        head = bytes((_DF2_LEAD, frame.status, frame.pleth, frame.float_byte))
    else:
        head = bytes((frame.status, frame.pleth >> 8, frame.pleth & 0xFF, frame.float_byte))
    return head + bytes((_checksum(head),))


def encode_packet(packet: NoninPacket, data_format: PacketFormat) -> bytes:
    """The 125 wire bytes of ``packet``."""
    return b"".join(encode_frame(f, data_format) for f in packet.frames)


def decode_frame(
    data: bytes | bytearray, data_format: PacketFormat, offset: int = 0
) -> NoninFrame | None:
    """The frame in ``data[offset : offset + 5]``, or ``None`` unless it is a valid frame.

    Valid means: checksum right, STATUS bit 7 set and, in DF2, the leading 0x01. Too few
    bytes also give ``None``.
    """
    if not 0 <= offset <= len(data) - FRAME_LEN:
        return None
    b0, b1, b2, b3, chk = data[offset : offset + FRAME_LEN]
    if (b0 + b1 + b2 + b3) & 0xFF != chk:
        return None
    if data_format == 2:
        if b0 != _DF2_LEAD or not b1 & _MARKER_BIT:
            return None
        return NoninFrame(status=b1, pleth=b2, float_byte=b3)
    if not b0 & _MARKER_BIT:
        return None
    return NoninFrame(status=b0, pleth=(b1 << 8) | b2, float_byte=b3)


def _packet_start(data_format: PacketFormat) -> re.Pattern[bytes]:
    """The bytes a SYNC frame opens with: a STATUS byte with MARKER and SYNC set, after the
    lead byte in DF2. No packet can start anywhere else."""
    statuses = bytes(b for b in range(256) if b & (_MARKER_BIT | _SYNC_BIT) == 0x81)
    lead = bytes((_DF2_LEAD,)) if data_format == 2 else b""
    return re.compile(re.escape(lead) + b"[" + re.escape(statuses) + b"]")


_PACKET_START: Final[dict[PacketFormat, re.Pattern[bytes]]] = {
    2: _packet_start(2),
    7: _packet_start(7),
}


#: Set-format option bits (protocols.md 4a "Commands"). The base bit is what OpenICE sends
#: on every real device; Bluetooth-on keeps a 9560 reachable over SPP after its next power
#: cycle and is meaningless on wired modules. Spot-check mode (0x40) is never sent: it would
#: stop the continuous stream (75 Hz in DF2/DF7, 1 Hz in DF8) the gateway monitors.
OPTION_BASE: Final = 0x01
OPTION_BLUETOOTH_ON: Final = 0x20
OPTION_SPOT_CHECK: Final = 0x40
DEFAULT_FORMAT_OPTION: Final = OPTION_BASE | OPTION_BLUETOOTH_ON

_STX: Final = 0x02
_ETX: Final = 0x03
_OP_SET_FORMAT: Final = 0x70


def set_format_command(data_format: DataFormat, option: int = DEFAULT_FORMAT_OPTION) -> bytes:
    """The long-form "set data format" command: ``02 70 04 02 <fmt> <opt> <chk> 03``.

    ``chk`` is the low byte of opcode + length + data bytes; ``<fmt>`` is 0x02, 0x07 or
    0x08. Only selects what the device streams; it changes no clinical setting, but it
    does store the option byte (see :class:`NoninSettings`). ``ValueError`` for a format
    the driver cannot decode, or if ``option`` asks for spot-check mode or does not fit a
    byte.
    """
    if data_format not in get_args(DataFormat):
        raise ValueError(f"data format must be one of {get_args(DataFormat)}, got {data_format!r}")
    if not 0 <= option <= 0xFF or option & OPTION_SPOT_CHECK:
        raise ValueError(f"option {option:#x} is not a continuous-streaming option byte")
    data = bytes((0x02, data_format, option))
    body = bytes((_OP_SET_FORMAT, len(data) + 1)) + data
    return bytes((_STX,)) + body + bytes((_checksum(body), _ETX))


# --- decoder -------------------------------------------------------------------------------


class NoninCodec:
    """Sans-I/O decoder for DF2/DF7: feed bytes, get whole packets.

    A packet is accepted only as 25 valid frames in a row starting at a SYNC frame; a bad
    frame or a SYNC inside a packet aborts it. After an abort the search restarts one byte
    after the aborted packet's first byte, so garbage costs at most the bytes it overlaps
    and every intact packet after it still decodes. DF7 needs this care most: a frame is
    only "bit 7 set + checksum", which random bytes pass once in 512 tries. While hunting,
    the search jumps straight to the next byte that can open a SYNC frame (found by the
    regex engine, in C): the bytes before it could start no packet and are dropped unread.

    Counters (``counters``, shared across :meth:`reset` so they add up over reconnects)
    obey ``bytes_received == FRAME_LEN * frames_decoded + bytes_dropped + buffered``:

    * ``frames_decoded`` counts frames delivered inside packets; valid frames that never
      became part of a packet (the tail of a packet when joining mid-stream) are dropped
      bytes;
    * ``checksum_errors`` counts frames that failed their checksum where a frame was due
      (right after a valid frame) and whose marker bits looked right; garbage scanned while
      hunting is not counted;
    * ``resyncs`` counts packets delivered after bytes were dropped since the previous
      packet (hunting for the first packet after a reset is not a resync).

    The buffer is bounded by construction: between calls it holds at most one unfinished
    packet (``PACKET_LEN - 1`` bytes); everything else was decoded or dropped.
    """

    def __init__(
        self, data_format: PacketFormat = 7, counters: CodecCounters | None = None
    ) -> None:
        if data_format not in PLETH_MAX:
            raise ValueError(
                f"NoninCodec decodes data format 2 or 7 (DF8: NoninDf8Codec), got {data_format!r}"
            )
        self.data_format: Final[PacketFormat] = data_format
        self.counters = counters if counters is not None else CodecCounters()
        self._buf = bytearray()
        self._start = _PACKET_START[data_format]
        self._start_len = 2 if data_format == 2 else 1  # bytes a packet start matches
        # Frames already checked of the unfinished packet at buf[0]: small reads (a serial
        # port returns a few bytes at a time) then cost one frame check each, not 25.
        self._checked = 0
        self._in_step = False  # buf[0] sits where a frame is due after a valid frame
        self._had_packet = False
        self._lost = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a packet (< ``PACKET_LEN``)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget alignment and buffered bytes (counted as dropped) for a fresh link."""
        self.counters.bytes_dropped += len(self._buf)
        self._buf.clear()
        self._checked = 0
        self._in_step = False
        self._had_packet = False
        self._lost = False

    def feed(self, data: bytes) -> list[NoninPacket]:
        """Decode ``data``; returns the packets completed by it, oldest first. Never raises."""
        counters = self.counters
        counters.bytes_received += len(data)
        buf = self._buf
        buf += data
        packets: list[NoninPacket] = []
        pos = 0
        last = len(buf) - FRAME_LEN  # the last position a whole frame fits
        while pos <= last:
            if not self._in_step:
                # Hunting: only a SYNC frame with a right checksum can open a packet, and
                # with no frame due there is no checksum error to count, so every byte
                # before the next such frame is dropped as is.
                skip_to = last + 1
                for found in self._start.finditer(buf, pos, last + self._start_len):
                    at = found.start()
                    if (buf[at] + buf[at + 1] + buf[at + 2] + buf[at + 3]) & 0xFF == buf[at + 4]:
                        skip_to = at
                        break
                if skip_to > pos:
                    counters.bytes_dropped += skip_to - pos
                    self._lost = self._had_packet
                    pos = skip_to
                    continue
            outcome = self._packet_at(buf, pos)
            if outcome is None:  # a packet has started but its end has not arrived yet
                break
            if isinstance(outcome, NoninPacket):
                packets.append(outcome)
                counters.frames_decoded += FRAMES_PER_PACKET
                if self._lost:
                    counters.resyncs += 1
                self._had_packet, self._lost, self._in_step = True, False, True
                pos += PACKET_LEN
                continue
            # No packet starts at pos: slide one byte, since any later byte may start one.
            if outcome:
                counters.checksum_errors += 1
            counters.bytes_dropped += 1
            self._lost = self._had_packet
            self._in_step = False
            pos += 1
        del buf[:pos]
        return packets

    def _packet_at(self, buf: bytearray, pos: int) -> NoninPacket | bool | None:
        """Try to read a packet at ``buf[pos]`` (a whole frame is there).

        Returns the packet; ``None`` if it is valid so far but incomplete (the count of its
        frames checked is then kept in ``_checked``); or, when no packet starts here,
        whether a checksum error was seen where a frame was due.
        """
        k, self._checked = (self._checked if pos == 0 else 0), 0
        df2 = self.data_format == 2
        if k == 0:
            b0, b1, b2, b3, chk = buf[pos : pos + FRAME_LEN]
            status = b1 if df2 else b0
            markers = bool(status & _MARKER_BIT) and (b0 == _DF2_LEAD or not df2)
            if not markers or (b0 + b1 + b2 + b3) & 0xFF != chk:
                # A frame is due here only right after a packet; else this was hunting.
                return markers and self._in_step
            if not status & _SYNC_BIT:
                return False
            k = 1
        # Frames 1..24 must be valid and without SYNC: STATUS & 0x81 == 0x80.
        whole = min(FRAMES_PER_PACKET, (len(buf) - pos) // FRAME_LEN)
        for at in range(pos + FRAME_LEN * k, pos + FRAME_LEN * whole, FRAME_LEN):
            b0, b1, b2, b3, chk = buf[at : at + FRAME_LEN]
            if df2:
                if b0 == _DF2_LEAD and b1 & 0x81 == 0x80 and (1 + b1 + b2 + b3) & 0xFF == chk:
                    continue
                markers = b0 == _DF2_LEAD and bool(b1 & _MARKER_BIT)
            else:
                if b0 & 0x81 == 0x80 and (b0 + b1 + b2 + b3) & 0xFF == chk:
                    continue
                markers = bool(b0 & _MARKER_BIT)
            # A checksum error if the markers are right; a SYNC inside the packet is not.
            return markers and (b0 + b1 + b2 + b3) & 0xFF != chk
        if whole < FRAMES_PER_PACKET:
            # feed() keeps buf[pos:] and this packet's start becomes buf[0].
            self._checked = whole
            return None
        return NoninPacket(_frames(buf, pos, df2))


_new_object = object.__new__
_set_slot = object.__setattr__
#: The 25 frames of a packet as (STATUS, pleth, FLOAT) triples, by data format.
_PACKET_FIELDS: Final[dict[bool, struct.Struct]] = {
    True: struct.Struct("<" + "xBBBx" * FRAMES_PER_PACKET),  # DF2: lead, STATUS, PLETH, FLOAT, CHK
    False: struct.Struct(">" + "BHBx" * FRAMES_PER_PACKET),  # DF7: 16-bit big-endian pleth
}


def _trusted_frame(status: int, pleth: int, float_byte: int) -> NoninFrame:
    """A frame from bytes the decoder has already checked (STATUS bit 7 set, every field a
    byte or two), without re-validating them: the packet's 25 frames are its hot path."""
    frame: NoninFrame = _new_object(NoninFrame)
    _set_slot(frame, "status", status)
    _set_slot(frame, "pleth", pleth)
    _set_slot(frame, "float_byte", float_byte)
    return frame


def _frames(buf: bytearray, pos: int, df2: bool) -> tuple[NoninFrame, ...]:
    """The 25 frames of the packet checked at ``buf[pos]``."""
    fields = _PACKET_FIELDS[df2].unpack_from(buf, pos)
    return tuple(map(_trusted_frame, fields[0::3], fields[1::3], fields[2::3]))


# --- data format 8 -------------------------------------------------------------------------

#: Bytes in a DF8 frame: ``STATUS | HR | SpO2 | STATUS2`` (protocols.md 4a).
DF8_FRAME_LEN: Final = 4
#: Seconds between DF8 frames: the device sends one frame per second.
DF8_FRAME_PERIOD_S: Final = 1.0
#: After dropped bytes, this many frames come out unconfirmed (see :class:`NoninDf8Codec`).
DF8_CONFIRM_FRAMES: Final = 2


class Df8Status(enum.IntFlag):
    """DF8 STATUS byte bits (protocols.md 4a "Data Format 8").

    Careful, this is **not** the DF2/DF7 layout (:class:`Status`): OOT is bit 5 here (ARTF
    there), ARTF bit 2 (RPRF there), LPRF bit 4 (OOT there), MPRF bit 3 (SNSA there), and
    bits 1-0 carry heart-rate bits 8-7 instead of perfusion and SYNC. DF8 has no SYNC, no
    SNSA and no green-perfusion bit. Mattjlewis and drphrozen describe both perfusion bits
    as holding for the whole condition, not only during a pulse as in DF2/DF7 [S].
    """

    HR_BIT7 = 0x01  # heart rate bit 7
    HR_BIT8 = 0x02  # heart rate bit 8
    ARTF = 0x04  # artifact
    MPRF = 0x08  # marginal perfusion (medium amplitude, DF2/DF7's "yellow")
    LPRF = 0x10  # low perfusion (low amplitude, DF2/DF7's "red")
    OOT = 0x20  # out of track: no consecutive good pulses
    SNSD = 0x40  # sensor disconnected
    MARKER = 0x80  # always set: marks the STATUS byte, the frame's first


#: The STATUS bits that are flags (the rest are the marker and heart-rate bits 8-7).
DF8_FLAG_BITS: Final = (
    Df8Status.SNSD | Df8Status.OOT | Df8Status.LPRF | Df8Status.MPRF | Df8Status.ARTF
)
_DF8_HR_HIGH: Final = Df8Status.HR_BIT8 | Df8Status.HR_BIT7
# Plain-int twins for the hot paths (IntFlag arithmetic costs more than a frame decode).
_DF8_FLAG_MASK: Final = int(DF8_FLAG_BITS)
_DF8_HR_MASK: Final = int(_DF8_HR_HIGH)
#: ``Df8Status`` of every STATUS byte's flag bits, made once: frames carry the flag type.
_DF8_FLAGS: Final = tuple(Df8Status(b & _DF8_FLAG_MASK) for b in range(0x100))


class Df8Status2(enum.IntFlag):
    """DF8 STATUS2 bits the driver relies on: only bit 0, low battery, is agreed on.

    The other bits are [U] in protocols.md 4a and deliberately left unnamed, so nothing
    maps them: bit 1 critical battery and bit 2 spot-check mode (drphrozen only), bit 3
    "sensor alarm" (mattjlewis) or "sensor faulty/unusable" (drphrozen), bit 5 SmartPoint
    algorithm (mattjlewis only). They stay available raw in
    :attr:`NoninDf8Frame.status2`.
    """

    LOW_BATTERY = 0x01


@dataclass(frozen=True, slots=True)
class NoninDf8Frame:
    """One DF8 frame: one second of numerics and status, no pleth.

    ``flags`` are the STATUS flag bits (:data:`DF8_FLAG_BITS` of :class:`Df8Status`; the
    marker and heart-rate bits are wire detail); ``hr`` is the pulse rate in beats/min
    (0..510) and ``spo2`` the saturation in percent (0..100), ``None`` where the device
    sent its missing sentinel (HR 511, SpO2 127); ``status2`` is the STATUS2 byte
    (0..0x7F, :class:`Df8Status2`).

    ``confirmed`` is not on the wire and takes no part in equality: the decoder clears it
    on the first :data:`DF8_CONFIRM_FRAMES` frames after dropped bytes, whose alignment
    nothing confirms (see :class:`NoninDf8Codec`).
    """

    flags: int
    hr: int | None
    spo2: int | None
    status2: int = 0
    confirmed: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.flags & ~_DF8_FLAG_MASK:
            raise ValueError(f"flags must be DF8 STATUS flag bits, got {self.flags:#x}")
        if self.hr is not None and not 0 <= self.hr < MISSING_HR:
            raise ValueError(f"heart rate must be 0..{MISSING_HR - 1} or None, got {self.hr}")
        if self.spo2 is not None and not 0 <= self.spo2 <= _SPO2_MAX:
            raise ValueError(f"DF8 SpO2 must be 0..{_SPO2_MAX} or None, got {self.spo2}")
        if not 0 <= self.status2 <= 0x7F:
            raise ValueError(f"status2 must be 0..0x7F (bit 7 clear), got {self.status2:#x}")

    @property
    def status(self) -> Df8Status:
        """The STATUS byte's flags (without the marker and heart-rate bits)."""
        return Df8Status(self.flags)


def encode_df8(frame: NoninDf8Frame) -> bytes:
    """The 4 wire bytes of ``frame``: ``STATUS | HR bits 6-0 | SpO2 | STATUS2``."""
    hr = MISSING_HR if frame.hr is None else frame.hr
    spo2 = MISSING_SPO2 if frame.spo2 is None else frame.spo2
    return bytes((Df8Status.MARKER | frame.flags | hr >> 7, hr & 0x7F, spo2, frame.status2))


def decode_df8(data: bytes | bytearray, offset: int = 0) -> NoninDf8Frame | None:
    """The DF8 frame in ``data[offset : offset + 4]``, or ``None`` unless it passes the
    codec's rules (see :class:`NoninDf8Codec`); too few bytes also give ``None``."""
    return _df8_at(data, offset, confirmed=True)


def _df8_at(data: bytes | bytearray, offset: int, *, confirmed: bool) -> NoninDf8Frame | None:
    if not 0 <= offset <= len(data) - DF8_FRAME_LEN:
        return None
    status, hr_low, spo2, status2 = data[offset : offset + DF8_FRAME_LEN]
    # Rule 1 (structure): bit 7 set on STATUS and only there.
    if not status & _MARKER_BIT or (hr_low | spo2 | status2) & _MARKER_BIT:
        return None
    # Rule 2 (plausibility): a saturation is a percentage, or the missing sentinel.
    if spo2 > _SPO2_MAX and spo2 != MISSING_SPO2:
        return None
    hr = ((status & _DF8_HR_MASK) << 7) | hr_low
    return NoninDf8Frame(
        flags=_DF8_FLAGS[status],
        hr=None if hr == MISSING_HR else hr,
        spo2=None if spo2 == MISSING_SPO2 else spo2,
        status2=status2,
        confirmed=confirmed,
    )


_DF8_STATUS_BYTE: Final = re.compile(rb"[\x80-\xff]")


class NoninDf8Codec:
    """Sans-I/O decoder for DF8: feed bytes, get frames.

    DF8 has no checksum and no packet structure, and its once-per-second cadence is not
    in the bytes (reads batch frames, and a codec never sees time), so a frame is
    recognised by two rules alone:

    1. **Structure**: byte 0 (STATUS) has bit 7 set and bytes 1-3 have it clear. For
       byte 1 (HR bits 6-0) and byte 2 (SpO2 0..100 or 127) that is their content; for
       byte 3 (STATUS2) it is an inference: no reader assigns its bit 7 and drphrozen's
       reader finds frames by "the byte with bit 7 set" [S]; check it on a device [U].
    2. **Plausibility**: SpO2 is 0..100 or the 127 sentinel; 101..126 is no saturation.

    Rule 1 makes alignment unambiguous on a clean line: STATUS is the only byte of a frame
    with bit 7 set, so every window straddling two real frames has a STATUS byte in
    position 1-3 and is refused. Hence joining mid-stream costs only the tail of the frame
    in progress, and garbage *between* frames never costs an intact frame: a window that
    starts in the garbage and reaches the next real STATUS byte is refused, so the search
    always reaches that byte. The search jumps straight from a refused byte to the next
    byte with bit 7 set.

    **Residual risk**, which no rule can remove without a checksum (a flipped bit other
    than bit 7 always goes unnoticed):

    * garbage can itself look like a frame: random bytes pass both rules at about 1
      position in 20 (1/2 for the marker, 1/8 for three clear bits 7, 102/128 for SpO2),
      so a burst of noise typically yields a forged frame or two;
    * noise spliced *inside* a frame whose last byte has bit 7 set joins the real frame's
      last three bytes into one with the real SpO2 and STATUS2 but the noise's flags and
      heart-rate bits 8-7 (a rate off by a multiple of 128);
    * noise spliced inside a frame whose first bytes have bit 7 clear completes the real
      frame's first bytes into a frame with the noise's SpO2 and/or STATUS2 (likely when
      the split is late in the frame: 1 in 2 for a split before the last byte).

    The mitigation: after any dropped bytes the next :data:`DF8_CONFIRM_FRAMES` frames
    come out with ``confirmed=False``; the model publishes their numbers as questionable
    and lets them change no condition. That catches the first two cases unless garbage
    passes both rules in more than two windows in a row. It cannot catch the third (the
    gap comes *after* the forged frame, and confirming a frame by the one after it would
    delay every DF8 value by a second), nor garbage that sits exactly between two frames
    without a byte dropped, which is indistinguishable from a frame. The price is two
    seconds of questionable numbers after each gap, including when joining mid-stream.

    Counters (``counters``, shared across :meth:`reset`) obey
    ``bytes_received == DF8_FRAME_LEN * frames_decoded + bytes_dropped + buffered``.
    ``checksum_errors`` stays 0 (there is no checksum: refused windows are dropped bytes);
    ``resyncs`` counts frames delivered after bytes were dropped since the previous frame
    (hunting for the first frame after a reset is not a resync). Between calls the buffer
    holds at most an unfinished frame (3 bytes) whose bytes so far pass rule 1.
    """

    def __init__(self, counters: CodecCounters | None = None) -> None:
        self.counters = counters if counters is not None else CodecCounters()
        self._buf = bytearray()
        self._unconfirmed = 0  # frames still to come out unconfirmed after a drop
        self._had_frame = False
        self._lost = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (< ``DF8_FRAME_LEN``)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget alignment and buffered bytes (counted as dropped) for a fresh link."""
        self.counters.bytes_dropped += len(self._buf)
        self._buf.clear()
        self._unconfirmed = 0
        self._had_frame = False
        self._lost = False

    def feed(self, data: bytes) -> list[NoninDf8Frame]:
        """Decode ``data``; returns the frames completed by it, oldest first. Never raises."""
        self.counters.bytes_received += len(data)
        buf = self._buf
        buf += data
        frames: list[NoninDf8Frame] = []
        pos, end = 0, len(buf)
        while pos < end:
            if buf[pos] & _MARKER_BIT:
                # A later byte with bit 7 inside the window: this one cannot start a frame.
                clash = _DF8_STATUS_BYTE.search(buf, pos + 1, min(pos + DF8_FRAME_LEN, end))
                if clash is not None:
                    skip_to = clash.start()
                elif end - pos < DF8_FRAME_LEN:
                    break  # a frame has started; the rest has not arrived yet
                else:
                    frame = _df8_at(buf, pos, confirmed=not self._unconfirmed)
                    if frame is not None:
                        frames.append(frame)
                        self.counters.frames_decoded += 1
                        if self._lost:
                            self.counters.resyncs += 1
                        self._had_frame, self._lost = True, False
                        self._unconfirmed = max(0, self._unconfirmed - 1)
                        pos += DF8_FRAME_LEN
                        continue
                    skip_to = pos + 1  # implausible: the next byte with bit 7 is further on
            else:
                found = _DF8_STATUS_BYTE.search(buf, pos)
                skip_to = end if found is None else found.start()
            self.counters.bytes_dropped += skip_to - pos
            self._unconfirmed, self._lost = DF8_CONFIRM_FRAMES, self._had_frame
            pos = skip_to
        del buf[:pos]
        return frames


# --- device model --------------------------------------------------------------------------


class NoninSettings(SerialSettings):
    """Serial settings (9600 8N1 by default), the data format the device streams, and
    whether to select that format at connect.

    ``data_format`` is 2, 7 (the default) or 8; it must match what the device sends,
    unless ``select_format`` is on. DF13 (SmartPoint spot-check records) is not offered:
    a device sends those only in spot-check mode, which would stop the continuous stream
    a monitoring gateway needs (the set-format command here never selects it), and 4a
    marks its field order [U] on a single source.

    ``select_format`` is off by default: the set-format command also rewrites the device's
    stored option byte (for example Bluetooth at power-up on a 9560), so sending it changes
    a device setting, and the gateway only reads from medical devices unless a technician
    opts in for a device that must be switched to ``data_format`` (any of 2, 7, 8).
    """

    data_format: DataFormat = 7
    select_format: bool = False


#: Conditions raised straight from a STATUS bit set in any frame of a packet.
_STATUS_CONDITIONS: Final[tuple[tuple[Condition, Status], ...]] = (
    (Condition.SENSOR_OFF, Status.SNSD),
    (Condition.OUT_OF_TRACK, Status.OOT),
    (Condition.ARTIFACT, Status.ARTF),
    (Condition.SENSOR_ALARM, Status.SNSA),
)
_STATUS_CONDITION_BITS: Final = tuple((c, int(bit)) for c, bit in _STATUS_CONDITIONS)
_ARTF_OOT: Final = int(Status.ARTF | Status.OOT)
#: Every condition this driver reports, in the order events are emitted.
CONDITIONS: Final[tuple[Condition, ...]] = (
    *(c for c, _ in _STATUS_CONDITIONS),
    Condition.LOW_PERFUSION,
    Condition.LOW_BATTERY,
)
_CONDITION_DETAIL: Final[dict[Condition, str]] = {
    Condition.SENSOR_OFF: "Nonin STATUS bit 6 (SNSD)",
    Condition.OUT_OF_TRACK: "Nonin STATUS bit 4 (OOT)",
    Condition.ARTIFACT: "Nonin STATUS bit 5 (ARTF)",
    Condition.SENSOR_ALARM: "Nonin STATUS bit 3 (SNSA)",
    Condition.LOW_PERFUSION: "Nonin red perfusion on the last pulse",
    Condition.LOW_BATTERY: "Nonin STAT2 bit 0",
}
#: DF8: conditions raised straight from a STATUS bit of the frame (DF8 bit positions).
_DF8_STATUS_CONDITIONS: Final[tuple[tuple[Condition, Df8Status], ...]] = (
    (Condition.SENSOR_OFF, Df8Status.SNSD),
    (Condition.OUT_OF_TRACK, Df8Status.OOT),
    (Condition.ARTIFACT, Df8Status.ARTF),
)
_DF8_STATUS_CONDITION_BITS: Final = tuple((c, int(bit)) for c, bit in _DF8_STATUS_CONDITIONS)
_DF8_ARTF_OOT: Final = int(Df8Status.ARTF | Df8Status.OOT)
#: Every condition the driver reports in DF8 (no sensor alarm: DF8 STATUS has no SNSA and
#: the STATUS2 bit said to carry it is [U]), in the order events are emitted.
DF8_CONDITIONS: Final[tuple[Condition, ...]] = (
    *(c for c, _ in _DF8_STATUS_CONDITIONS),
    Condition.LOW_PERFUSION,
    Condition.LOW_BATTERY,
)
_DF8_CONDITION_DETAIL: Final[dict[Condition, str]] = {
    Condition.SENSOR_OFF: "Nonin DF8 STATUS bit 6 (SNSD)",
    Condition.OUT_OF_TRACK: "Nonin DF8 STATUS bit 5 (OOT)",
    Condition.ARTIFACT: "Nonin DF8 STATUS bit 2 (ARTF)",
    Condition.LOW_PERFUSION: "Nonin DF8 STATUS bit 4 (LPRF)",
    Condition.LOW_BATTERY: "Nonin DF8 STATUS2 bit 0",
}


class NoninOximeter:
    """Device model for a Nonin oximeter streaming DF2, DF7 or DF8 (a ``SerialDeviceModel``).

    **Which value is published, and so alarmed on.** The gateway's alarms work on the
    numerics a driver publishes, so the choice below is the choice of alarm input.

    * DF2/DF7 send several versions of each number per packet, all decoded and kept apart
      in :class:`NoninValues`: 4-beat averages (``hr``, ``spo2``), 8-beat "extended"
      averages (``e_hr``, ``e_spo2``), the values the device displays (``hr_display``,
      ``e_hr_display``, ``spo2_display``, ``e_spo2_display``), and a fast and a
      beat-to-beat SpO2 (``spo2_fast``, ``spo2_b2b``). The driver publishes the **4-beat
      averages** only: the 8-beat and display values are smoother but lag a real
      desaturation or rate change by several beats, and the design puts delays in the
      alarm engine, not in averaging; the fast and beat-to-beat values are too noisy to
      alarm on.
    * DF8 sends one pulse rate and one SpO2 per second and no other version, so there is
      nothing to keep apart: those are published and alarmed on. Which averaging the
      device applies to them is not in protocols.md 4a [U] (the OEM specification would
      say).

    **DF2/DF7**, per packet (every 1/3 s):

    * ``Numeric`` SpO2 (%, 0..100) from FLOAT frame 3 and ``Numeric`` pulse rate (/min)
      from FLOAT frames 1-2, both 4-beat averages.
    * ``Waveform`` pleth, 25 samples at 75 Hz in device units (DF2 0..255, DF7 0..65535).
      ``sequence`` is the index of the chunk's first sample among the samples emitted since
      connect. A chunk ends at ``now``; several packets decoded from one read are laid
      back to back before it.
    * ``DeviceEvent`` when a condition changes (edge-triggered, evaluated per packet). A
      STATUS bit counts for a packet if it is set in any of its frames.

    Perfusion is special in DF2/DF7: the device asserts its colour bits only for about
    160 ms of each pulse, so most packets carry none. The model therefore latches the
    colour of the most recent pulse (red alone = low perfusion; green, or green+red
    "yellow", = adequate) until another pulse shows a colour or the sensor comes off;
    otherwise the condition would flicker at the heart rate.

    **DF8**, per frame (every second): ``Numeric`` SpO2 (%) and pulse rate (/min), and
    ``DeviceEvent`` when a condition changes. No ``Waveform``: DF8 carries no pleth. Its
    perfusion bits hold for the whole condition, so they map directly, per frame: LPRF
    (low, DF2/DF7's red) raises low perfusion; MPRF (marginal, DF2/DF7's yellow) raises
    nothing, exactly as yellow is adequate in DF2/DF7, so switching a device's format does
    not change what alarms. STATUS2 bit 0 is low battery; its other bits are [U] and
    unmapped (:class:`Df8Status2`). DF8 has no checksum, so a frame the codec could not
    confirm (one of the first two after dropped bytes, possibly forged by line noise: see
    :class:`NoninDf8Codec`) has its numerics published as ``QUESTIONABLE`` and changes no
    condition: noise must not flicker "sensor off" on and off. The limit of that choice:
    a device that put stray bytes between *every* frame would get questionable numerics
    (still unavailable whenever a frame says the sensor is off) but no condition changes;
    no public source describes such a device, and ``bytes_dropped`` would climb every
    second.

    **Every format.** Numerics carry value ``None`` with ``UNAVAILABLE`` when the device
    sends its missing sentinel (HR 511, SpO2 127) or reports the sensor off; a sentinel is
    never a number. SpO2 above 100 becomes ``None`` with ``INVALID`` (DF8 frames cannot
    carry one: the codec refuses them). Otherwise the status flags are ``QUESTIONABLE``
    for artifact or out-of-track, ``INVALID`` for the DF2/DF7 sensor alarm ("unusable
    data"), ``LOW_PERFUSION`` for low perfusion. Identity (manufacturer "Nonin"; in
    DF2/DF7 the firmware revision from FLOAT frame 4, which DF8 does not carry) is
    published once per connection, with the first packet or frame. No format carries a
    perfusion index, so none is emitted.
    """

    def __init__(self, device_id: str, settings: NoninSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self._codec: NoninCodec | NoninDf8Codec
        if settings.data_format == 8:
            self._codec = NoninDf8Codec()
            conditions, details = DF8_CONDITIONS, _DF8_CONDITION_DETAIL
        else:
            self._codec = NoninCodec(settings.data_format)
            conditions, details = CONDITIONS, _CONDITION_DETAIL
        self.counters: CodecCounters = self._codec.counters
        self._conditions = ConditionTracker(device_id, conditions, details)
        self._low_perfusion = False
        self._identified = False
        self._samples_emitted = 0

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
        """Reset for a fresh link; returns the set-format command (only when the settings
        opt in with ``select_format``) and no readings.

        Conditions left raised by a link that ended without :meth:`on_disconnect` are
        cleared here, so every connection starts from a clean slate.
        """
        cleared = self._clear_all(now)
        self._codec.reset()
        self._low_perfusion = False
        self._identified = False
        self._samples_emitted = 0
        command = (
            set_format_command(self.settings.data_format) if self.settings.select_format else b""
        )
        return command, cleared

    def feed(self, data: bytes, now: float) -> Sequence[Reading]:
        """Decode ``data`` received at wall time ``now`` (UTC s) into readings."""
        readings: list[Reading] = []
        if isinstance(self._codec, NoninDf8Codec):
            for frame in self._codec.feed(data):
                readings.extend(self._df8_readings(frame, now))
            return readings
        packets = self._codec.feed(data)
        for i, packet in enumerate(packets):
            end_time = now - (len(packets) - 1 - i) * PACKET_PERIOD_S
            readings.extend(self._readings(packet, now, end_time))
        return readings

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear every raised condition (the link, not the patient, ended them)."""
        return self._clear_all(now)

    def _clear_all(self, now: float) -> list[Reading]:
        return list(self._conditions.clear(now))

    def _identity(self, now: float, firmware: str = "") -> list[Reading]:
        if self._identified:
            return []
        self._identified = True
        return [Identity(self.device_id, now, manufacturer="Nonin", firmware=firmware)]

    def _numerics(
        self,
        spo2: int | None,
        hr: int | None,
        sensor_off: bool,
        quality: MeasurementStatus,
        now: float,
    ) -> list[Reading]:
        readings: list[Reading] = []
        for code, unit, value, limit in (
            (codes.SPO2, codes.PERCENT, spo2, _SPO2_MAX),
            (codes.PULSE_RATE, codes.BEATS_PER_MINUTE, hr, _HR_MAX - 1),
        ):
            number, status = _judge(value, limit, sensor_off, quality)
            readings.append(Numeric(self.device_id, code, number, unit, now, status=status))
        return readings

    def _readings(self, packet: NoninPacket, now: float, end_time: float) -> list[Reading]:
        values = packet.values
        readings = self._identity(now, firmware=f"0x{values.firmware:02X}")

        union = int(packet.status_union)  # int: IntFlag tests cost more than the packet
        sensor_off = bool(union & Status.SNSD.value)
        self._update_perfusion(packet, sensor_off)
        state = {c: bool(union & bit) for c, bit in _STATUS_CONDITION_BITS}
        state[Condition.LOW_PERFUSION] = self._low_perfusion
        state[Condition.LOW_BATTERY] = bool(values.stat2 & Stat2.LOW_BATTERY.value)
        readings.extend(self._conditions.update(state, now))

        quality = MeasurementStatus.NONE
        if union & _ARTF_OOT:
            quality |= MeasurementStatus.QUESTIONABLE
        if union & Status.SNSA.value:
            quality |= MeasurementStatus.INVALID
        if self._low_perfusion:
            quality |= MeasurementStatus.LOW_PERFUSION
        readings.extend(self._numerics(values.spo2, values.hr, sensor_off, quality, now))

        samples = np.asarray(packet.pleth, dtype=np.float64)
        readings.append(
            Waveform(
                source=self.device_id,
                code=codes.PLETH,
                unit=codes.DIMENSIONLESS,
                sample_rate=FRAME_RATE_HZ,
                start_time=end_time - PACKET_PERIOD_S,
                samples=samples,
                sequence=self._samples_emitted,
            )
        )
        self._samples_emitted += len(samples)
        return readings

    def _update_perfusion(self, packet: NoninPacket, sensor_off: bool) -> None:
        if sensor_off:
            self._low_perfusion = False
            return
        for frame in packet.frames:
            colour = frame.status & _PERFUSION_MASK
            if colour:
                self._low_perfusion = colour == _RED_PERFUSION

    def _df8_readings(self, frame: NoninDf8Frame, now: float) -> list[Reading]:
        readings = self._identity(now)
        status = int(frame.flags)  # int: IntFlag tests cost more than the frame
        sensor_off = bool(status & Df8Status.SNSD.value)
        low_perfusion = bool(status & Df8Status.LPRF.value) and not sensor_off
        if frame.confirmed:
            state = {c: bool(status & bit) for c, bit in _DF8_STATUS_CONDITION_BITS}
            state[Condition.LOW_PERFUSION] = low_perfusion
            state[Condition.LOW_BATTERY] = bool(frame.status2 & Df8Status2.LOW_BATTERY.value)
            readings.extend(self._conditions.update(state, now))

        quality = MeasurementStatus.NONE
        if not frame.confirmed or status & _DF8_ARTF_OOT:
            quality |= MeasurementStatus.QUESTIONABLE
        if low_perfusion:
            quality |= MeasurementStatus.LOW_PERFUSION
        readings.extend(self._numerics(frame.spo2, frame.hr, sensor_off, quality, now))
        return readings


def _judge(
    value: int | None, limit: int, sensor_off: bool, quality: MeasurementStatus
) -> tuple[float | None, MeasurementStatus]:
    """A device number as (value, status): missing or sensor off is UNAVAILABLE, a value
    above ``limit`` INVALID, anything else the packet's ``quality``."""
    if value is None or sensor_off:
        return None, MeasurementStatus.UNAVAILABLE
    if value > limit:
        return None, MeasurementStatus.INVALID
    return float(value), quality


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.nonin implements each).
SCENARIOS: Final = ("normal", "desaturation", "probe_off", "noise", "unplug")


SPEC = DriverSpec.typed(
    name="nonin",
    description=(
        "Nonin pulse oximeter (OEM III, Xpod, WristOx2, Onyx II) on a serial port, data "
        "format 7, 2 (SpO2, pulse rate, pleth at 75 Hz) or 8 (SpO2 and pulse rate once a "
        "second, no pleth); sensor, perfusion and battery conditions"
    ),
    settings=NoninSettings,
    make_model=NoninOximeter,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.nonin:NoninSimulator",
    # DF8 is left out of probing: at 4 bytes a second a few seconds of listening hold only
    # a few frames, and without a checksum a handful of frames is weak evidence.
    probe_variants=({"data_format": 7}, {"data_format": 2}),
)
