"""Masimo Radical-5/-7, Rad-8 and Rad-87 pulse CO-oximeters, RS-232 "ASCII 1" output.

Facts from ``protocols.md`` section 4c. The device (set to ASCII 1, 9600 8N1) sends one
line of ASCII text about once per second, terminated by CR LF::

    12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% ... ALARM=0000 EXC=000820

A line is the device's date and time (``MM/DD/YY HH:MM:SS``, device local time) followed
by space-separated ``NAME=value`` fields. Models and firmware differ in which fields they
send and how wide they are (with or without SN, PI with or without ``%``, 2/4/6-digit
ALARM, 3/6/7-digit EXC, EXC1 on newer firmware), so fields are found by name, never by
column. A value whose digits are dashes (``---``, ``--.-``, ``+--``) is unavailable.
There is no checksum. ASCII 1 carries **no waveform**: the Radical gives its pleth only on
the analog output.

The module is sans-I/O: :class:`MasimoCodec` is fed bytes and returns :class:`MasimoLine`
objects; :func:`encode_line` and :func:`build_line` are its inverse (used by the simulator
and the property tests); :class:`MasimoOximeter` turns lines into readings.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from pydantic import Field

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
)
from drivers.registry import DriverSpec

#: Seconds between lines: "a rate of 1-Hz" (protocols.md 4c).
LINE_PERIOD_S: Final = 1.0
#: Longest line content (bytes, terminator excluded) the codec keeps. The longest published
#: line is under 200 bytes; anything that runs past this without a terminator is cut.
MAX_LINE: Final = 512
#: ``MM/DD/YY HH:MM:SS``: the device's clock opens every line.
TIME_FORMAT: Final = "%m/%d/%y %H:%M:%S"
#: Two-digit years are read as 2000..2099.
CENTURY: Final = 2000

_CR: Final = 0x0D
_LF: Final = 0x0A
_TERMINATOR = re.compile(rb"[\r\n]")
_DATE = re.compile(rb"(\d\d)/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)")
_DATE_LEN: Final = 17
_PRINTABLE = re.compile(rb"[ -~]*")
#: A field: a name, ``=`` and a value of printable characters other than space and ``=``.
_FIELD_BYTES = re.compile(rb"([A-Za-z][A-Za-z0-9]*)=([!-<>-~]*)")
_NAME = re.compile(r"[A-Z][A-Z0-9]*")
_VALUE = re.compile(r"[!-<>-~]*")
#: Unavailable: dashes (and the point of a decimal field), maybe after a ``+`` sign. The MD
#: PnP reader's rule is "'-' as the second character", which ``-02`` (a real negative
#: PIDELTA) does not meet and this pattern does not match either.
_DASHES = re.compile(r"\+?[-.]*-[-.]*")
_UNSIGNED = re.compile(r"\d+(\.\d+)?")
_SIGNED = re.compile(r"[+-]?\d+(\.\d+)?")
_HEX = re.compile(r"[0-9A-Fa-f]{1,8}")


class Alarm(enum.IntFlag):
    """ALARM field bits (hex). Source for all: MD PnP ``poxrad_discrete.h`` ``alarmmessage``
    [S]; bits 0-5 also confirmed by experiment on a Rad-8 (``masimo-capture.py``) [S], the
    higher ones rest on that one header ("confirm per model/firmware", protocols.md 8).

    Only ``ALARM_SILENCED`` and ``LOW_BATTERY`` become technical conditions. The limit
    alarms are the device's physiological alarms: the gateway's alarm engine raises its own
    from the numerics, so they are kept on the line but not turned into readings.
    """

    SPO2_HIGH = 0x0001
    SPO2_LOW = 0x0002
    PR_HIGH = 0x0004
    PR_LOW = 0x0008
    ALARM_ACTIVE = 0x0010
    ALARM_SILENCED = 0x0020  # -> DEVICE_ALARM_SILENCED [S, two sources]
    LOW_BATTERY = 0x0040  # -> LOW_BATTERY [S, one source]
    RESERVED_0080 = 0x0080
    SPCO_HIGH = 0x0100
    SPCO_LOW = 0x0200
    SPMET_HIGH = 0x0400
    SPMET_LOW = 0x0800
    DESAT_INDEX = 0x1000
    PI_DELTA = 0x2000


class Exc(enum.IntFlag):
    """EXC (exception) field bits (hex). Source: MD PnP ``poxrad_discrete.h``
    ``exceptionmessage`` [S]; the 12 low bits (up to ``MASIMO_SET``) also in the Rad-8
    operator's manual [S, two sources]; the bits above rest on the one header [S, one
    source] and are marked so below.

    EXC1 (newer firmware) has no published bit meanings [U]: it is kept, never mapped.
    """

    NO_SENSOR = 0x000001  # -> NO_SENSOR
    DEFECTIVE_SENSOR = 0x000002  # -> SENSOR_FAULT
    LOW_PERFUSION = 0x000004  # -> LOW_PERFUSION
    PULSE_SEARCH = 0x000008  # -> PULSE_SEARCH
    INTERFERENCE = 0x000010  # -> INTERFERENCE
    SENSOR_OFF = 0x000020  # -> SENSOR_OFF
    AMBIENT_LIGHT = 0x000040  # -> INTERFERENCE
    UNRECOGNISED_SENSOR = 0x000080  # -> SENSOR_FAULT
    INCOMPATIBLE_SENSOR = 0x000100  # -> SENSOR_FAULT (reserved on Rad-8)
    RESERVED_000200 = 0x000200  # not mapped
    LOW_SIGNAL_IQ = 0x000400  # -> LOW_SIGNAL_QUALITY
    MASIMO_SET = 0x000800  # normal SET mode: informational, not mapped
    NO_CABLE = 0x001000  # -> NO_SENSOR [one source]
    CABLE_LIFE_EXPIRED = 0x002000  # -> SENSOR_FAULT [one source]
    INCOMPATIBLE_CABLE = 0x004000  # -> SENSOR_FAULT [one source]
    UNRECOGNISED_CABLE = 0x008000  # -> SENSOR_FAULT [one source]
    DEFECTIVE_CABLE = 0x010000  # -> SENSOR_FAULT [one source]
    SENSOR_CALIBRATING = 0x020000  # values flagged EARLY [one source]
    SENSOR_LIFE_EXPIRED = 0x040000  # -> SENSOR_FAULT [one source]
    EMITTER_TEMPERATURE = 0x080000  # -> SENSOR_FAULT [one source]
    SENSOR_CURRENT_LIMIT = 0x100000  # -> SENSOR_FAULT [one source]
    SPCO_LOW_CONFIDENCE = 0x200000  # SpCO flagged QUESTIONABLE [one source]
    SPMET_LOW_CONFIDENCE = 0x400000  # SpMet flagged QUESTIONABLE [one source]


# --- field formats -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NumberFormat:
    """How a device prints one number: ``digits`` zero-padded integer digits, ``decimals``
    after the point, an explicit sign (``+05``/``-02``) if ``signed``, and a trailing ``%``
    if ``percent``. Unavailable prints the same shape in dashes (``--.-%``, ``+--``)."""

    digits: int
    decimals: int = 0
    signed: bool = False
    percent: bool = False

    @property
    def dashes(self) -> str:
        text = "-" * self.digits + ("." + "-" * self.decimals if self.decimals else "")
        return ("+" if self.signed else "") + text + ("%" if self.percent else "")

    def format(self, value: float | None) -> str:
        """The field text for ``value``; ``ValueError`` if this format cannot carry it
        exactly (negative without a sign, more decimals than printed)."""
        if value is None:
            return self.dashes
        if value < 0 and not self.signed:
            raise ValueError(f"{value} needs a sign this field does not print")
        width = self.digits + (self.decimals + 1 if self.decimals else 0) + int(self.signed)
        sign = "+" if self.signed else ""
        text = f"{value:{sign}0{width}.{self.decimals}f}"
        if float(text) != value:
            raise ValueError(f"{value} is not exact with {self.decimals} decimals")
        return text + ("%" if self.percent else "")


@dataclass(frozen=True, slots=True)
class HexFormat:
    """A bit field in upper-case hex, zero-padded to ``digits``; unavailable is dashes [U]."""

    digits: int

    @property
    def dashes(self) -> str:
        return "-" * self.digits

    def format(self, value: int | None) -> str:
        if value is None:
            return self.dashes
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"bit field must be 0..0xFFFFFFFF, got {value:#x}")
        return f"{value:0{self.digits}X}"


@dataclass(frozen=True, slots=True)
class TextFormat:
    """A text field (the serial number): ``width`` dashes when unavailable."""

    width: int

    @property
    def dashes(self) -> str:
        return "-" * self.width

    def format(self, value: str | None) -> str:
        if value is None:
            return self.dashes
        if not value or not _VALUE.fullmatch(value) or _DASHES.fullmatch(value):
            raise ValueError(f"serial {value!r} is empty, all dashes or not printable")
        return value


@dataclass(frozen=True, slots=True)
class Constant:
    """A field a variant always sends with the same text (``RESVD=---``)."""

    text: str


FieldFormat = NumberFormat | HexFormat | TextFormat | Constant


# --- vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MasimoValues:
    """What the known fields of a line say; ``None`` when the field is unavailable
    (dashes) **or absent** (:meth:`MasimoLine.has` tells which).

    ``spo2``, ``spco``, ``spmet`` and ``pvi`` are in % (0..100 when valid), ``pi`` is the
    perfusion index in % (device range about 0.02..20), ``pulse_rate`` in /min,
    ``desat`` the device's desaturation index (a count), ``pi_delta`` the signed change of
    PI in % [U]. ``alarm``, ``exc`` and ``exc1`` are the bit fields (:class:`Alarm`,
    :class:`Exc`; EXC1 meanings [U]); ``serial`` the SN field.
    """

    serial: str | None = None
    spo2: float | None = None
    pulse_rate: float | None = None
    pi: float | None = None
    spco: float | None = None
    spmet: float | None = None
    desat: float | None = None
    pi_delta: float | None = None
    pvi: float | None = None
    alarm: int | None = None
    exc: int | None = None
    exc1: int | None = None


#: Wire name -> MasimoValues attribute, for the fields this module understands.
FIELD_ATTRS: Final[Mapping[str, str]] = {
    "SN": "serial",
    "SPO2": "spo2",
    "BPM": "pulse_rate",
    "PI": "pi",
    "SPCO": "spco",
    "SPMET": "spmet",
    "DESAT": "desat",
    "PIDELTA": "pi_delta",
    "PVI": "pvi",
    "ALARM": "alarm",
    "EXC": "exc",
    "EXC1": "exc1",
}
_SIGNED_FIELDS: Final = frozenset({"PIDELTA"})
_HEX_FIELDS: Final = frozenset({"ALARM", "EXC", "EXC1"})
_TEXT_FIELDS: Final = frozenset({"SN"})


def parse_value(name: str, text: str) -> float | int | str | None:
    """The value of known field ``name`` from its wire ``text``; ``None`` for dashes.

    Numbers may carry one trailing ``%``; PIDELTA alone may carry a sign. ``ValueError``
    for text the field cannot hold (a damaged line).
    """
    if name in _TEXT_FIELDS:
        return None if _DASHES.fullmatch(text) else text
    if name in _HEX_FIELDS:
        if _DASHES.fullmatch(text):
            return None
        if not _HEX.fullmatch(text):
            raise ValueError(f"{name}={text!r} is not a hex bit field")
        return int(text, 16)
    number = text[:-1] if text.endswith("%") else text
    if _DASHES.fullmatch(number):
        return None
    if not (_SIGNED if name in _SIGNED_FIELDS else _UNSIGNED).fullmatch(number):
        raise ValueError(f"{name}={text!r} is not a number")
    return float(number)


@dataclass(frozen=True, slots=True)
class MasimoLine:
    """One ASCII 1 line, without its terminator.

    ``time`` is the device's clock as printed (naive, device local time, whole seconds,
    years 2000..2099); ``fields`` the ``(NAME, value text)`` pairs in line order, names
    upper case and unique. ``fields`` is the whole truth (lines round-trip byte for byte,
    unknown fields included); ``values`` is decoded from it at construction, and a line
    whose known fields do not parse cannot be built (``ValueError``).
    """

    time: dt.datetime
    fields: tuple[tuple[str, str], ...]
    values: MasimoValues = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        t = self.time
        if t.tzinfo is not None or t.microsecond or not CENTURY <= t.year < CENTURY + 100:
            raise ValueError(f"line time must be naive whole seconds in 2000..2099, got {t!r}")
        names = [name for name, _ in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field in {names}")
        decoded: dict[str, object] = {}
        for name, text in self.fields:
            if not _NAME.fullmatch(name) or not _VALUE.fullmatch(text):
                raise ValueError(f"bad field {name}={text!r}")
            if name in FIELD_ATTRS:
                decoded[FIELD_ATTRS[name]] = parse_value(name, text)
        object.__setattr__(self, "values", MasimoValues(**decoded))  # type: ignore[arg-type]

    def has(self, name: str) -> bool:
        """Whether the line carries field ``name`` at all (dashes or not)."""
        return any(n == name for n, _ in self.fields)

    def get(self, name: str) -> str | None:
        """The raw text of field ``name``, or ``None`` if the line has no such field."""
        return next((text for n, text in self.fields if n == name), None)

    def text(self) -> str:
        """The line as the device prints it, without CR LF."""
        parts = [self.time.strftime(TIME_FORMAT)]
        parts += [f"{name}={value}" for name, value in self.fields]
        return " ".join(parts)


class Variant(enum.Enum):
    """Published line layouts (protocols.md 4c), for the encoder. The decoder needs none."""

    #: Radical-7, MD PnP example: SN, SpO2 ... PVI, 4-digit ALARM, 6-digit EXC.
    RADICAL_7 = "radical-7"
    #: Radical-5: no SN, SpO2/BPM/PI only, 2-digit ALARM, 3-digit EXC.
    RADICAL_5 = "radical-5"
    #: Radical-7 "color" firmware (real capture): PI without %, integer SpCO, SpHb/SpOC/
    #: RESVD (always dashes here), 6-digit ALARM, 7-digit EXC, EXC1.
    RADICAL_7_COLOR = "radical-7-color"

    @property
    def layout(self) -> tuple[tuple[str, FieldFormat], ...]:
        """The fields of this variant in wire order, with their formats."""
        return _LAYOUTS[self]

    @property
    def carries(self) -> frozenset[str]:
        """MasimoValues attributes this variant can carry."""
        return frozenset(FIELD_ATTRS[n] for n, f in self.layout if not isinstance(f, Constant))


_PCT3 = NumberFormat(3, percent=True)
_INT3 = NumberFormat(3)
_INT2 = NumberFormat(2)
_PI_PCT = NumberFormat(2, 2, percent=True)
_DELTA = NumberFormat(2, signed=True)
_SN = TextFormat(10)
_LAYOUTS: Final[dict[Variant, tuple[tuple[str, FieldFormat], ...]]] = {
    Variant.RADICAL_7: (
        ("SN", _SN),
        ("SPO2", _PCT3),
        ("BPM", _INT3),
        ("PI", _PI_PCT),
        ("SPCO", NumberFormat(2, 1, percent=True)),
        ("SPMET", NumberFormat(2, 1, percent=True)),
        ("DESAT", _INT2),
        ("PIDELTA", _DELTA),
        ("PVI", _INT3),
        ("ALARM", HexFormat(4)),
        ("EXC", HexFormat(6)),
    ),
    Variant.RADICAL_5: (
        ("SPO2", _PCT3),
        ("BPM", _INT3),
        ("PI", _PI_PCT),
        ("ALARM", HexFormat(2)),
        ("EXC", HexFormat(3)),
    ),
    Variant.RADICAL_7_COLOR: (
        ("SN", _SN),
        ("SPO2", _PCT3),
        ("BPM", _INT3),
        ("PI", NumberFormat(2, 2)),
        ("SPCO", NumberFormat(2, percent=True)),
        ("SPMET", NumberFormat(2, 1, percent=True)),
        ("SPHB", Constant("--.-")),
        ("SPOC", Constant("--")),
        ("RESVD", Constant("---")),
        ("DESAT", _INT2),
        ("PIDELTA", _DELTA),
        ("PVI", _INT3),
        ("ALARM", HexFormat(6)),
        ("EXC", HexFormat(7)),
        ("EXC1", HexFormat(8)),
    ),
}


# --- encoder -------------------------------------------------------------------------------


def build_line(
    time: dt.datetime, values: MasimoValues, variant: Variant = Variant.RADICAL_7
) -> MasimoLine:
    """The line a ``variant`` device prints for ``values`` at device time ``time``.

    ``ValueError`` if ``values`` sets a field the variant does not carry, or a value its
    format cannot print exactly (too many decimals, a sign where none is printed).
    """
    extra = {
        name
        for name, attr in FIELD_ATTRS.items()
        if getattr(values, attr) is not None and attr not in variant.carries
    }
    if extra:
        raise ValueError(f"{variant.value} does not carry {sorted(extra)}")
    fields = []
    for name, fmt in variant.layout:
        if isinstance(fmt, Constant):
            fields.append((name, fmt.text))
        else:
            fields.append((name, fmt.format(getattr(values, FIELD_ATTRS[name]))))
    return MasimoLine(time, tuple(fields))


def encode_line(line: MasimoLine) -> bytes:
    """The wire bytes of ``line``: its text and CR LF."""
    return line.text().encode("ascii") + b"\r\n"


def decode_line(content: bytes) -> MasimoLine | None:
    """The line in ``content`` (one line, terminator removed, date first), or ``None``
    unless it is a well-formed line: printable ASCII, a real calendar date, then only
    ``NAME=value`` fields, no name twice, every known field parseable."""
    if not _PRINTABLE.fullmatch(content):
        return None
    date = _DATE.match(content)
    if date is None:
        return None
    rest = content[_DATE_LEN:]
    if rest and rest[:1] != b" ":
        return None
    fields = []
    for token in rest.split(b" "):
        if not token:
            continue
        match = _FIELD_BYTES.fullmatch(token)
        if match is None:
            return None
        fields.append((match[1].decode("ascii").upper(), match[2].decode("ascii")))
    month, day, year, hour, minute, second = map(int, date.groups())
    try:
        time = dt.datetime(CENTURY + year, month, day, hour, minute, second)
        return _checked_line(time, tuple(fields))
    except ValueError:
        return None


#: Field texts repeat from line to line (a steady SpO2 prints the same text each second),
#: so their parsed values are kept; a damaged text raises and is not kept.
_parse_cached: Final = functools.lru_cache(maxsize=4096)(parse_value)
_new_object = object.__new__
_set_slot = object.__setattr__


def _checked_line(time: dt.datetime, fields: tuple[tuple[str, str], ...]) -> MasimoLine:
    """``MasimoLine(time, fields)`` for what :func:`decode_line` has already checked (a
    naive whole-second time in the century, names and values matching ``_NAME`` and
    ``_VALUE``), without checking that again; ``ValueError`` as the constructor gives it
    for a repeated name or a known field that does not parse."""
    names = {name for name, _ in fields}
    if len(names) != len(fields):
        raise ValueError(f"duplicate field in {[name for name, _ in fields]}")
    decoded = {FIELD_ATTRS[n]: _parse_cached(n, text) for n, text in fields if n in FIELD_ATTRS}
    line: MasimoLine = _new_object(MasimoLine)
    _set_slot(line, "time", time)
    _set_slot(line, "fields", fields)
    _set_slot(line, "values", MasimoValues(**decoded))  # type: ignore[arg-type]
    return line


def _last_line_start(record: bytes) -> int | None:
    """The last offset in ``record`` where a date could open a line (overlapping matches
    considered), or ``None``."""
    last = None
    pos = 0
    while (match := _DATE.search(record, pos)) is not None:
        last = match.start()
        pos = last + 1
    return last


# --- decoder -------------------------------------------------------------------------------


class MasimoCodec:
    """Sans-I/O decoder for ASCII 1: feed bytes, get whole lines.

    Framing: a line ends at CR LF; a bare CR or a bare LF also ends one (a CR LF split
    across two reads still counts as one terminator). Within a line, the decoder starts at
    the **last** place a date (``MM/DD/YY HH:MM:SS``) begins, so garbage before a line, or a
    line whose terminator was lost, costs only itself: the bytes before that date are
    dropped. A line that then fails :func:`decode_line` (non-ASCII or control bytes, a
    malformed field, an impossible date) is dropped whole.

    The buffer is bounded: at most :data:`MAX_LINE` bytes of an unfinished line are kept;
    older bytes of a longer one are dropped (once per over-long line, ``overlong_lines``
    counts it), so a real line after any amount of unterminated garbage still decodes.

    Counters (``counters``, shared across :meth:`reset`) obey
    ``bytes_received == bytes_decoded + bytes_dropped + buffered``:

    * ``frames_decoded`` counts lines; ``bytes_decoded`` their bytes with terminators;
    * ``bytes_dropped`` counts every other byte (garbage, damaged or cut lines, blank
      terminators); ``lines_dropped`` the dropped lines;
    * ``checksum_errors`` stays 0: ASCII 1 has no checksum;
    * ``resyncs`` counts lines decoded after bytes were dropped since the previous line
      (dropping the partial line met on joining a stream is not a resync).
    """

    def __init__(self, counters: CodecCounters | None = None) -> None:
        self.counters = counters if counters is not None else CodecCounters()
        self.bytes_decoded = 0
        self.lines_dropped = 0
        self.overlong_lines = 0
        self._buf = bytearray()
        self._overlong = False  # the unfinished line has already been cut
        self._after_cr: bool | None = None  # last byte was a CR ending a line: was it good?
        self._had_line = False
        self._lost = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held back (at most :data:`MAX_LINE`)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget the unfinished line (counted as dropped) for a fresh link."""
        self.counters.bytes_dropped += len(self._buf)
        self._buf.clear()
        self._overlong = False
        self._after_cr = None
        self._had_line = False
        self._lost = False

    def feed(self, data: bytes) -> list[MasimoLine]:
        """Decode ``data``; returns the lines it completed, oldest first. Never raises."""
        self.counters.bytes_received += len(data)
        lines: list[MasimoLine] = []
        pos = 0
        if self._after_cr is not None and data:
            if data[0] == _LF:  # the LF of a CR LF split across reads
                self._account(1, self._after_cr)
                pos = 1
            self._after_cr = None
        end = len(data)
        while (match := _TERMINATOR.search(data, pos)) is not None:
            at = match.start()
            terminator = 1
            if data[at] == _CR and at + 1 < end and data[at + 1] == _LF:
                terminator = 2
            if self._buf:
                record = bytes(self._buf) + data[pos:at]
                self._buf.clear()
            else:
                record = data[pos:at]
            good = self._record(record, terminator, lines)
            if data[at] == _CR and at + 1 == end:
                self._after_cr = good
            pos = at + terminator
        self._buf += data[pos:]
        if len(self._buf) > MAX_LINE:
            self._cut(len(self._buf) - MAX_LINE)
            del self._buf[: len(self._buf) - MAX_LINE]
        return lines

    def _record(self, record: bytes, terminator: int, lines: list[MasimoLine]) -> bool:
        """Decode one terminated line; account for its bytes. Returns whether it decoded."""
        if len(record) > MAX_LINE:
            self._cut(len(record) - MAX_LINE)
            record = record[-MAX_LINE:]
        self._overlong = False
        start = _last_line_start(record)
        line = decode_line(record[start:]) if start is not None else None
        if line is None:
            self.lines_dropped += bool(record)  # a blank terminator is not a line
            self._drop(len(record) + terminator)
            return False
        if start:
            self._drop(start)
        self._account(len(record) - (start or 0) + terminator, True)
        self.counters.frames_decoded += 1
        if self._lost:
            self.counters.resyncs += 1
        self._had_line, self._lost = True, False
        lines.append(line)
        return True

    def _account(self, n: int, good: bool) -> None:
        if good:
            self.bytes_decoded += n
        else:
            self._drop(n)

    def _drop(self, n: int) -> None:
        if n:
            self.counters.bytes_dropped += n
            self._lost = self._had_line

    def _cut(self, n: int) -> None:
        if not self._overlong:
            self.overlong_lines += 1
            self._overlong = True
        self._drop(n)


# --- device model --------------------------------------------------------------------------


class MasimoSettings(SerialSettings):
    """Serial settings (9600 8N1 by default) and how to read the device's clock.

    ``device_utc_offset_minutes``: the device prints local time with no zone, so the line
    time is taken as UTC plus this offset (minutes, -720..840; default 0 = the device clock
    is set to UTC). A fixed offset: it does not follow daylight-saving changes.
    ``max_clock_skew``: seconds (> 0) the device clock may differ from the gateway's before
    the CLOCK_SKEW condition is raised (default 120).
    """

    device_utc_offset_minutes: int = Field(default=0, ge=-720, le=840)
    max_clock_skew: float = Field(default=120.0, gt=0)


@dataclass(frozen=True, slots=True)
class Metric:
    """A numeric field the driver publishes: wire name, MasimoValues attribute, code,
    unit, and the largest valid value (``None``: whatever the wire can carry)."""

    name: str
    attr: str
    code: codes.Code
    unit: codes.Unit
    limit: float | None


#: Published numerics, in emission order. SpHb, SpOC and RESVD are kept on the line but not
#: published: no verified code or unit, and no published sample with a value.
METRICS: Final[tuple[Metric, ...]] = (
    Metric("SPO2", "spo2", codes.SPO2, codes.PERCENT, 100.0),
    Metric("BPM", "pulse_rate", codes.PULSE_RATE, codes.BEATS_PER_MINUTE, None),
    Metric("PI", "pi", codes.PERFUSION_INDEX, codes.PERCENT, 100.0),
    Metric("SPCO", "spco", codes.SPCO, codes.PERCENT, 100.0),
    Metric("SPMET", "spmet", codes.SPMET, codes.PERCENT, 100.0),
    Metric("PVI", "pvi", codes.PVI, codes.PERCENT, 100.0),
    Metric("DESAT", "desat", codes.DESAT_INDEX, codes.DIMENSIONLESS, None),
    Metric("PIDELTA", "pi_delta", codes.PI_DELTA, codes.PERCENT, None),  # unit [U]
)

_SENSOR_FAULT_BITS: Final = (
    Exc.DEFECTIVE_SENSOR
    | Exc.UNRECOGNISED_SENSOR
    | Exc.INCOMPATIBLE_SENSOR
    | Exc.CABLE_LIFE_EXPIRED
    | Exc.INCOMPATIBLE_CABLE
    | Exc.UNRECOGNISED_CABLE
    | Exc.DEFECTIVE_CABLE
    | Exc.SENSOR_LIFE_EXPIRED
    | Exc.EMITTER_TEMPERATURE
    | Exc.SENSOR_CURRENT_LIMIT
)
#: Conditions raised from EXC bits (any of the bits raises the condition).
_EXC_CONDITIONS: Final[tuple[tuple[Condition, Exc], ...]] = (
    (Condition.SENSOR_OFF, Exc.SENSOR_OFF),
    (Condition.NO_SENSOR, Exc.NO_SENSOR | Exc.NO_CABLE),
    (Condition.SENSOR_FAULT, _SENSOR_FAULT_BITS),
    (Condition.LOW_PERFUSION, Exc.LOW_PERFUSION),
    (Condition.PULSE_SEARCH, Exc.PULSE_SEARCH),
    (Condition.INTERFERENCE, Exc.INTERFERENCE | Exc.AMBIENT_LIGHT),
    (Condition.LOW_SIGNAL_QUALITY, Exc.LOW_SIGNAL_IQ),
)
#: Conditions raised from ALARM bits.
_ALARM_CONDITIONS: Final[tuple[tuple[Condition, Alarm], ...]] = (
    (Condition.DEVICE_ALARM_SILENCED, Alarm.ALARM_SILENCED),
    (Condition.LOW_BATTERY, Alarm.LOW_BATTERY),
)
#: Every condition this driver reports, in the order events are emitted.
CONDITIONS: Final[tuple[Condition, ...]] = (
    *(c for c, _ in _EXC_CONDITIONS),
    *(c for c, _ in _ALARM_CONDITIONS),
    Condition.CLOCK_SKEW,
)
_CONDITION_DETAIL: Final[dict[Condition, str]] = {
    Condition.SENSOR_OFF: "Masimo EXC 0x000020 (sensor off)",
    Condition.NO_SENSOR: "Masimo EXC 0x000001 (no sensor) or 0x001000 (no cable)",
    Condition.SENSOR_FAULT: (
        "Masimo EXC sensor/cable fault bits (defective, unrecognised, incompatible, "
        "expired, emitter temperature, current limit)"
    ),
    Condition.LOW_PERFUSION: "Masimo EXC 0x000004 (low perfusion)",
    Condition.PULSE_SEARCH: "Masimo EXC 0x000008 (pulse search)",
    Condition.INTERFERENCE: "Masimo EXC 0x000010 (interference) or 0x000040 (ambient light)",
    Condition.LOW_SIGNAL_QUALITY: "Masimo EXC 0x000400 (low signal IQ)",
    Condition.DEVICE_ALARM_SILENCED: "Masimo ALARM 0x0020 (alarm silenced)",
    Condition.LOW_BATTERY: "Masimo ALARM 0x0040 (low battery)",
    Condition.CLOCK_SKEW: "Masimo line date/time differs from the gateway clock",
}
_EPOCH: Final = dt.datetime(1970, 1, 1)


def device_time(line: MasimoLine, utc_offset_minutes: int = 0) -> float:
    """UTC seconds since the epoch of the line's date/time, read as UTC + the offset."""
    return (line.time - _EPOCH).total_seconds() - 60.0 * utc_offset_minutes


class MasimoOximeter:
    """Device model for a Masimo Radical/Rad-x on ASCII 1 (a ``SerialDeviceModel``).

    Per line (about once per second) it emits:

    * ``Identity`` (manufacturer "Masimo", serial from SN when sent) with the first line of
      each connection and again whenever SN changes.
    * ``DeviceEvent`` when a condition changes, from the EXC and ALARM bits (see
      :class:`Exc` and :class:`Alarm` for each bit's mapping and source) and from the clock:
      CLOCK_SKEW is on while ``|device time - gateway time| > max_clock_skew``. A line
      without EXC (or ALARM) leaves the conditions from that field as they were.
    * ``Numeric`` for each field of :data:`METRICS` the line carries (a field the model
      never sends gives no reading at all), with ``time`` = gateway time of arrival and
      ``device_time`` = the line's own date/time as UTC.

    Values are ``None`` with ``UNAVAILABLE`` when dashed or while the sensor is off or
    absent (EXC sensor off, no sensor, no cable), whatever digits the line carries;
    a percentage above 100 is ``None`` with ``INVALID``. Otherwise the status is
    ``INVALID`` for a sensor/cable fault, ``QUESTIONABLE`` for pulse search, interference
    or low signal IQ (and for SpCO/SpMet on their low-confidence bits), ``LOW_PERFUSION``
    for low perfusion, ``EARLY`` while the sensor calibrates. ASCII 1 has no waveform.
    """

    def __init__(self, device_id: str, settings: MasimoSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self._codec = MasimoCodec()
        self.counters: CodecCounters = self._codec.counters
        self._conditions = ConditionTracker(device_id, CONDITIONS, _CONDITION_DETAIL)
        self._serial: str | None = None
        self._identified = False

    @property
    def codec(self) -> MasimoCodec:
        """The line decoder (for its extra counters)."""
        return self._codec

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
        """Reset for a fresh link. Sends nothing: ASCII 1 streams on its own, and the
        gateway never changes a device setting. Conditions left over are cleared."""
        cleared = list(self._conditions.clear(now))
        self._codec.reset()
        self._identified = False
        self._serial = None
        return b"", cleared

    def feed(self, data: bytes, now: float) -> Sequence[Reading]:
        """Decode ``data`` received at wall time ``now`` (UTC s) into readings."""
        readings: list[Reading] = []
        for line in self._codec.feed(data):
            readings.extend(self._readings(line, now))
        return readings

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear every raised condition (the link, not the patient, ended them)."""
        return list(self._conditions.clear(now))

    def _readings(self, line: MasimoLine, now: float) -> list[Reading]:
        readings: list[Reading] = []
        values = line.values
        if not self._identified or values.serial != self._serial:
            self._identified, self._serial = True, values.serial
            readings.append(
                Identity(self.device_id, now, manufacturer="Masimo", serial=values.serial or "")
            )

        stamp = device_time(line, self.settings.device_utc_offset_minutes)
        state: dict[Condition, bool] = {
            Condition.CLOCK_SKEW: abs(stamp - now) > self.settings.max_clock_skew
        }
        exc = Exc(values.exc) if values.exc is not None else None
        if exc is not None:
            state.update((c, bool(exc & bits)) for c, bits in _EXC_CONDITIONS)
        if values.alarm is not None:
            state.update((c, bool(values.alarm & bits)) for c, bits in _ALARM_CONDITIONS)
        readings.extend(self._conditions.update(state, now))

        for metric in METRICS:
            if not line.has(metric.name):
                continue
            value, status = _judge(getattr(values, metric.attr), metric, exc)
            readings.append(
                Numeric(
                    self.device_id,
                    metric.code,
                    value,
                    metric.unit,
                    now,
                    device_time=stamp,
                    status=status,
                )
            )
        return readings


def _judge(
    value: float | None, metric: Metric, exc: Exc | None
) -> tuple[float | None, MeasurementStatus]:
    """A field's value as (value, status) given the line's EXC bits (``None``: not sent)."""
    bits = exc if exc is not None else Exc(0)
    if value is None or bits & (Exc.SENSOR_OFF | Exc.NO_SENSOR | Exc.NO_CABLE):
        return None, MeasurementStatus.UNAVAILABLE
    if metric.limit is not None and value > metric.limit:
        return None, MeasurementStatus.INVALID
    status = MeasurementStatus.NONE
    if bits & _SENSOR_FAULT_BITS:
        status |= MeasurementStatus.INVALID
    questionable = Exc.PULSE_SEARCH | Exc.INTERFERENCE | Exc.AMBIENT_LIGHT | Exc.LOW_SIGNAL_IQ
    if metric.name == "SPCO":
        questionable |= Exc.SPCO_LOW_CONFIDENCE
    elif metric.name == "SPMET":
        questionable |= Exc.SPMET_LOW_CONFIDENCE
    if bits & questionable:
        status |= MeasurementStatus.QUESTIONABLE
    if bits & Exc.LOW_PERFUSION:
        status |= MeasurementStatus.LOW_PERFUSION
    if bits & Exc.SENSOR_CALIBRATING:
        status |= MeasurementStatus.EARLY
    return value, status


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.masimo implements each; same meanings as Nonin's).
SCENARIOS: Final = ("normal", "desaturation", "probe_off", "noise", "unplug")


SPEC = DriverSpec.typed(
    name="masimo-ascii",
    description=(
        "Masimo Radical-5/-7, Rad-8, Rad-87 on RS-232 in ASCII 1 mode (9600 8N1): SpO2, "
        "pulse rate, PI, SpCO, SpMet, PVI, desat index, PI delta once a second, sensor and "
        "device conditions, device clock skew; no waveform"
    ),
    settings=MasimoSettings,
    make_model=MasimoOximeter,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.masimo:MasimoSimulator",
)
