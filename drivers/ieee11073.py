"""IEEE 11073-20601 medical floats: the 16-bit SFLOAT and the 32-bit FLOAT.

Both are a base-10 exponent and a two's complement mantissa packed in one little-endian
word, value = mantissa x 10^exponent (``protocols.md`` 1.2):

* SFLOAT: exponent in the top 4 bits (-8..7), mantissa in the low 12 (-2048..2047);
* FLOAT: exponent in the top 8 bits (-128..127), mantissa in the low 24 (-2^23..2^23-1).

Five words with exponent 0 are not numbers but reasons there is no number (NaN, NRes,
+INF, -INF, reserved): :func:`decode_sfloat` returns them as :class:`NoValue`, never as a
value, so a "no finger" reading can never turn into 0 % or 2047 %. Several words can mean
the same number (100 % arrives as 0x0064 or as 0xF3E8, 1000 x 10^-1); :class:`MedFloat`
keeps the mantissa and exponent as sent, so decoding and encoding round-trip word for word.

Pure functions on integers and bytes. Decoding never raises, whatever the word; encoding
raises ``ValueError`` for a number the format cannot carry.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final, TypeAlias


class NoValue(enum.Enum):
    """Why a medical float carries no number (the reserved words of ``protocols.md`` 1.2)."""

    #: Not a number: the device has no value (e.g. no finger in the sensor).
    NAN = "nan"
    #: Not at this resolution: the value exists but this format cannot carry it.
    NRES = "nres"
    #: Above the range the device can report.
    POSITIVE_INFINITY = "+inf"
    #: Below the range the device can report.
    NEGATIVE_INFINITY = "-inf"
    #: Reserved for future use: treated as invalid.
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class _Format:
    """Bit layout of one medical-float format and its reserved mantissas (exponent 0)."""

    name: str
    mantissa_bits: int
    exponent_bits: int
    specials: dict[int, NoValue]

    @property
    def mantissa_min(self) -> int:
        return -(1 << (self.mantissa_bits - 1))

    @property
    def mantissa_max(self) -> int:
        return (1 << (self.mantissa_bits - 1)) - 1

    @property
    def exponent_min(self) -> int:
        return -(1 << (self.exponent_bits - 1))

    @property
    def exponent_max(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def width_bytes(self) -> int:
        return (self.mantissa_bits + self.exponent_bits) // 8


def _specials(mantissa_bits: int) -> dict[int, NoValue]:
    top = 1 << (mantissa_bits - 1)  # 0x800 for SFLOAT, 0x800000 for FLOAT
    return {
        top - 1: NoValue.NAN,
        top - 2: NoValue.POSITIVE_INFINITY,
        top: NoValue.NRES,
        top + 1: NoValue.RESERVED,
        top + 2: NoValue.NEGATIVE_INFINITY,
    }


SFLOAT: Final = _Format("SFLOAT", mantissa_bits=12, exponent_bits=4, specials=_specials(12))
FLOAT: Final = _Format("FLOAT", mantissa_bits=24, exponent_bits=8, specials=_specials(24))

#: The raw 16-bit words of the SFLOAT special values (protocols.md 1.2 table).
SFLOAT_NAN: Final = 0x07FF
SFLOAT_NRES: Final = 0x0800
SFLOAT_POSITIVE_INFINITY: Final = 0x07FE
SFLOAT_NEGATIVE_INFINITY: Final = 0x0802
SFLOAT_RESERVED: Final = 0x0801


@dataclass(frozen=True, slots=True)
class MedFloat:
    """A number as ``mantissa`` x 10^``exponent``, exactly as a device sent it.

    Construct with :meth:`of` from a Python number, or directly when the exact wire form
    matters (a normalised 1000 x 10^-1). Whether a pair fits a format is checked when it
    is encoded (a FLOAT mantissa does not fit an SFLOAT).
    """

    mantissa: int
    exponent: int

    @property
    def value(self) -> float:
        """The number as a float (the nearest double to mantissa x 10^exponent)."""
        scale: int = 10 ** abs(self.exponent)
        if self.exponent >= 0:
            return float(self.mantissa * scale)
        # Dividing two exact integers rounds once: 87 / 10 is the double nearest 8.7.
        return self.mantissa / scale

    @classmethod
    def of(cls, number: float, fmt: _Format = SFLOAT) -> MedFloat:
        """The shortest exact form of ``number`` in ``fmt`` (98.0 -> 98 x 10^0, 8.7 -> 87 x
        10^-1), or else the most precise rounded one (3.14159 -> 3142 x 10^-3 is too wide
        for SFLOAT, so 314 x 10^-2).

        ``ValueError`` for NaN, infinities (use :class:`NoValue`) and numbers beyond the
        format's range.
        """
        if not math.isfinite(number):
            raise ValueError(f"{number!r} is not a finite number: use NoValue")
        fitting = [
            cls(mantissa, exponent)
            for exponent in range(fmt.exponent_min, fmt.exponent_max + 1)
            if (mantissa := _scaled(number, exponent)) is not None
            and _fits(fmt, mantissa, exponent)
        ]
        if not fitting:
            raise ValueError(f"{number!r} is beyond the range of {fmt.name}")
        exact = [c for c in fitting if c.value == number]
        if exact:
            return min(exact, key=lambda c: (abs(c.exponent), c.exponent))
        # Not exact anywhere: the smallest exponent that fits keeps the most digits.
        return fitting[0]


def _scaled(number: float, exponent: int) -> int | None:
    """``number`` / 10^``exponent`` rounded to an integer (``None`` if that overflows),
    scaling by exact integer powers of ten."""
    scale: int = 10 ** abs(exponent)
    scaled = number / scale if exponent >= 0 else number * scale
    return round(scaled) if math.isfinite(scaled) else None


#: What a medical float decodes to: a number or the reason there is none.
MedValue: TypeAlias = MedFloat | NoValue


def _fits(fmt: _Format, mantissa: int, exponent: int) -> bool:
    if not fmt.mantissa_min <= mantissa <= fmt.mantissa_max:
        return False
    if not fmt.exponent_min <= exponent <= fmt.exponent_max:
        return False
    # Exponent 0 with a reserved mantissa is a special value, not this number.
    return not (exponent == 0 and (mantissa & ((1 << fmt.mantissa_bits) - 1)) in fmt.specials)


def _decode(fmt: _Format, raw: int) -> MedValue:
    width = fmt.mantissa_bits + fmt.exponent_bits
    raw &= (1 << width) - 1
    mantissa_mask = (1 << fmt.mantissa_bits) - 1
    mantissa_raw = raw & mantissa_mask
    exponent_raw = raw >> fmt.mantissa_bits
    if exponent_raw == 0 and mantissa_raw in fmt.specials:
        return fmt.specials[mantissa_raw]
    mantissa = (
        mantissa_raw - (1 << fmt.mantissa_bits) if mantissa_raw > fmt.mantissa_max else mantissa_raw
    )
    exponent = (
        exponent_raw - (1 << fmt.exponent_bits) if exponent_raw > fmt.exponent_max else exponent_raw
    )
    return MedFloat(mantissa, exponent)


def _encode(fmt: _Format, value: MedValue | float) -> int:
    if isinstance(value, NoValue):
        return next(raw for raw, reason in fmt.specials.items() if reason is value)
    if not isinstance(value, MedFloat):
        if math.isnan(value):
            return _encode(fmt, NoValue.NAN)
        if math.isinf(value):
            return _encode(
                fmt, NoValue.POSITIVE_INFINITY if value > 0 else NoValue.NEGATIVE_INFINITY
            )
        value = MedFloat.of(value, fmt)
    if not _fits(fmt, value.mantissa, value.exponent):
        raise ValueError(f"{value} does not fit {fmt.name}")
    mantissa_mask = (1 << fmt.mantissa_bits) - 1
    exponent_mask = (1 << fmt.exponent_bits) - 1
    return ((value.exponent & exponent_mask) << fmt.mantissa_bits) | (
        value.mantissa & mantissa_mask
    )


def decode_sfloat(raw: int) -> MedValue:
    """The number or :class:`NoValue` a 16-bit SFLOAT word carries (bits above 16 ignored)."""
    return _decode(SFLOAT, raw)


def encode_sfloat(value: MedValue | float) -> int:
    """The 16-bit SFLOAT word for ``value``.

    A float is converted with :meth:`MedFloat.of` (NaN and infinities become the special
    words). ``ValueError`` if the number does not fit.
    """
    return _encode(SFLOAT, value)


def decode_float(raw: int) -> MedValue:
    """The number or :class:`NoValue` a 32-bit FLOAT word carries."""
    return _decode(FLOAT, raw)


def encode_float(value: MedValue | float) -> int:
    """The 32-bit FLOAT word for ``value`` (as :func:`encode_sfloat`)."""
    return _encode(FLOAT, value)


def read_sfloat(data: bytes, offset: int) -> MedValue:
    """Decode the little-endian SFLOAT at ``data[offset:offset + 2]`` (caller checks length)."""
    return decode_sfloat(data[offset] | (data[offset + 1] << 8))


def sfloat_bytes(value: MedValue | float) -> bytes:
    """The two little-endian wire bytes of ``value`` as an SFLOAT."""
    return encode_sfloat(value).to_bytes(2, "little")
