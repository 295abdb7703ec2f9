"""IEEE-11073 SFLOAT and FLOAT: the special values, the traps of protocols.md 1.2, and
round trips over every 16-bit word."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ieee11073 import (
    FLOAT,
    SFLOAT,
    MedFloat,
    NoValue,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    read_sfloat,
    sfloat_bytes,
)

# protocols.md 1.2, table of reserved raw values.
SFLOAT_SPECIALS = {
    0x07FF: NoValue.NAN,
    0x0800: NoValue.NRES,
    0x07FE: NoValue.POSITIVE_INFINITY,
    0x0802: NoValue.NEGATIVE_INFINITY,
    0x0801: NoValue.RESERVED,
}
FLOAT_SPECIALS = {
    0x007FFFFF: NoValue.NAN,
    0x00800000: NoValue.NRES,
    0x007FFFFE: NoValue.POSITIVE_INFINITY,
    0x00800002: NoValue.NEGATIVE_INFINITY,
    0x00800001: NoValue.RESERVED,
}


@pytest.mark.parametrize(("raw", "reason"), SFLOAT_SPECIALS.items())
def test_every_sfloat_special_is_a_reason_not_a_number(raw: int, reason: NoValue) -> None:
    decoded = decode_sfloat(raw)
    assert decoded is reason
    assert encode_sfloat(reason) == raw


@pytest.mark.parametrize(("raw", "reason"), FLOAT_SPECIALS.items())
def test_every_float_special_is_a_reason_not_a_number(raw: int, reason: NoValue) -> None:
    assert decode_float(raw) is reason
    assert encode_float(reason) == raw


def test_only_the_five_reserved_words_are_special() -> None:
    specials = {raw for raw in range(0x10000) if isinstance(decode_sfloat(raw), NoValue)}
    assert specials == set(SFLOAT_SPECIALS)


def test_traps_of_section_1_2() -> None:
    # 0x0FFF is -1 (exponent 0, mantissa -1), not NaN; 0x8000 is 0 (exponent -8).
    assert decode_sfloat(0x0FFF) == MedFloat(-1, 0)
    assert decode_sfloat(0x8000) == MedFloat(0, -8)
    assert decode_sfloat(0x8000) != NoValue.NAN
    # 100 % arrives as 0x0064 or normalised 0xF3E8 = 1000 x 10^-1.
    assert decode_sfloat(0x0064) == MedFloat(100, 0)
    assert decode_sfloat(0xF3E8) == MedFloat(1000, -1)
    for raw in (0x0064, 0xF3E8):
        value = decode_sfloat(raw)
        assert isinstance(value, MedFloat) and value.value == 100.0


def test_worked_values_from_section_1_7() -> None:
    assert decode_sfloat(0xF057) == MedFloat(87, -1)  # PAI 8.7 %
    assert decode_sfloat(0xE37A) == MedFloat(890, -2)  # PAI 8.90 %
    assert decode_sfloat(0xF55A) == MedFloat(1370, -1)  # 137 bpm
    value = decode_sfloat(0xF057)
    assert isinstance(value, MedFloat) and value.value == 8.7
    assert read_sfloat(bytes([0x00, 0x57, 0xF0]), 1) == MedFloat(87, -1)


def test_extremes_of_the_format() -> None:
    assert decode_sfloat(0x07FD) == MedFloat(2045, 0)
    assert decode_sfloat(0x0803) == MedFloat(-2045, 0)
    assert decode_sfloat(0x77FF) == MedFloat(2047, 7)  # exponent 7 is a number
    assert decode_sfloat(0x8800) == MedFloat(-2048, -8)
    big = decode_sfloat(0x77FF)
    assert isinstance(big, MedFloat) and big.value == 2047e7


def test_every_sfloat_word_round_trips() -> None:
    for raw in range(0x10000):
        assert encode_sfloat(decode_sfloat(raw)) == raw


@given(st.integers(0, 0xFFFFFFFF))
def test_float_words_round_trip(raw: int) -> None:
    assert encode_float(decode_float(raw)) == raw


@given(st.integers(-2048, 2047), st.integers(-8, 7))
def test_sfloat_pairs_round_trip(mantissa: int, exponent: int) -> None:
    value = MedFloat(mantissa, exponent)
    if exponent == 0 and mantissa in (2046, 2047, -2048, -2047, -2046):
        with pytest.raises(ValueError):
            encode_sfloat(value)  # these words are the special values
    else:
        assert decode_sfloat(encode_sfloat(value)) == value


def test_pairs_that_do_not_fit_are_refused() -> None:
    for bad in (MedFloat(2048, 1), MedFloat(-2049, 1), MedFloat(1, 8), MedFloat(1, -9)):
        with pytest.raises(ValueError):
            encode_sfloat(bad)
    assert encode_float(MedFloat(2048, 1)) == (1 << 24) | 2048


def test_of_picks_the_plain_form() -> None:
    assert MedFloat.of(98.0) == MedFloat(98, 0)
    assert MedFloat.of(8.7) == MedFloat(87, -1)
    assert MedFloat.of(8.9) == MedFloat(89, -1)
    assert MedFloat.of(30000.0) == MedFloat(300, 2)
    assert MedFloat.of(-1.0) == MedFloat(-1, 0)
    # Not exact anywhere: the most digits that fit (3142 x 10^-3 is too wide).
    assert MedFloat.of(3.14159) == MedFloat(314, -2)
    assert MedFloat.of(2046.0) == MedFloat(205, 1)  # 2046 x 10^0 is the +INF word
    assert sfloat_bytes(98.0) == b"\x62\x00"


def test_of_refuses_what_it_cannot_carry() -> None:
    for bad in (math.nan, math.inf, 1e12):
        with pytest.raises(ValueError):
            MedFloat.of(bad)


def test_non_finite_floats_encode_as_specials() -> None:
    assert encode_sfloat(math.nan) == 0x07FF
    assert encode_sfloat(math.inf) == 0x07FE
    assert encode_sfloat(-math.inf) == 0x0802
    assert encode_float(math.nan) == 0x007FFFFF


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-2e10, max_value=2e10))
def test_of_is_close_and_encodable(number: float) -> None:
    value = MedFloat.of(number)
    decoded = decode_sfloat(encode_sfloat(value))
    assert decoded == value
    # Three significant digits at worst (a mantissa of at least 205 when the exponent
    # is above the minimum), absolutely 10^-8 at the small end.
    assert abs(value.value - number) <= max(abs(number) * 5e-3, 1e-8)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30))
def test_float_of_is_close(number: float) -> None:
    value = MedFloat.of(number, FLOAT)
    assert decode_float(encode_float(value)) == value
    assert abs(value.value - number) <= max(abs(number) * 1e-6, 1e-128)


def test_format_ranges() -> None:
    assert (SFLOAT.mantissa_min, SFLOAT.mantissa_max) == (-2048, 2047)
    assert (SFLOAT.exponent_min, SFLOAT.exponent_max) == (-8, 7)
    assert (FLOAT.exponent_min, FLOAT.exponent_max) == (-128, 127)
