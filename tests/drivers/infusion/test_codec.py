"""Register blocks <-> pump values: every data type, word and byte order, scale, sentinel.

Byte-exact vectors are those of protocols.md 6.4 ("Proposed Modbus map"): the word-order
test pattern 0x01020304 read as 0x0102, 0x0304; IEEE-754 12.5 as 0x4148, 0x0000 (ABCD);
and the example reply ``01 04 04 00 00 04 E2`` for the current rate: 0x000004E2 = 12.50 mL/h.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.infusion.codec import (
    PumpCodec,
    PumpFrame,
    encode,
    raw_registers,
    raw_value,
    text_of,
    text_registers,
)
from drivers.infusion.profile import (
    DATA_TYPES,
    Field,
    PumpState,
    Role,
    Table,
    load_profile,
    parse_profile,
)
from drivers.readings import Condition

ORDERS = ("big", "little")


def field(kind: str, word: str = "big", byte: str = "big", words: int = 0) -> Field:
    width = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "f32": 2}.get(kind, words)
    return Field("f", Table.INPUT, 0, kind, width, word, byte)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("word", "byte", "registers"),
    [
        ("big", "big", [0x0102, 0x0304]),  # ABCD
        ("little", "big", [0x0304, 0x0102]),  # CDAB
        ("big", "little", [0x0201, 0x0403]),  # BADC
        ("little", "little", [0x0403, 0x0201]),  # DCBA
    ],
)
def test_word_order_test_pattern_in_all_four_orders(
    word: str, byte: str, registers: list[int]
) -> None:
    f = field("u32", word, byte)
    assert raw_value(registers, f) == 0x01020304
    assert raw_registers(0x01020304, f) == registers


def test_float_test_vector_abcd_and_cdab() -> None:
    assert raw_value([0x4148, 0x0000], field("f32")) == 12.5
    assert raw_value([0x0000, 0x4148], field("f32", "little")) == 12.5
    assert raw_registers(12.5, field("f32")) == [0x4148, 0x0000]


def test_signed_types_and_ranges() -> None:
    assert raw_value([0xFFFF], field("s16")) == -1
    assert raw_value([0x8000], field("s16")) == -32768
    assert raw_value([0xFFFF], field("u16")) == 65535
    assert raw_value([0xFFFF, 0xFFFE], field("s32")) == -2
    assert raw_value([0xFFFE, 0xFFFF], field("s32", "little")) == -2
    assert raw_registers(-2, field("s32")) == [0xFFFF, 0xFFFE]
    assert raw_registers(70000, field("u16")) == [0xFFFF]  # clamped, never wraps


def test_strings_two_characters_per_register_nul_padded() -> None:
    f = field("string", words=4)
    assert text_registers("Heparin", f) == [0x4865, 0x7061, 0x7269, 0x6E00]
    assert text_of([0x4865, 0x7061, 0x7269, 0x6E00], f) == "Heparin"
    swapped = field("string", byte="little", words=2)
    assert text_of([0x6548, 0x0070], swapped) == "Hep"
    assert text_of([0x48FF, 0x0000], f) == "H?"  # non-ASCII shown, not trusted


@given(
    kind=st.sampled_from([k for k in DATA_TYPES if k != "string"]),
    word=st.sampled_from(ORDERS),
    byte=st.sampled_from(ORDERS),
    data=st.data(),
)
def test_every_numeric_type_round_trips(kind: str, word: str, byte: str, data: Any) -> None:
    f = field(kind, word, byte)
    if kind == "f32":
        value: float = data.draw(st.floats(width=32, allow_nan=False))
    else:
        lo, hi = {
            "u16": (0, 0xFFFF),
            "s16": (-0x8000, 0x7FFF),
            "u32": (0, 2**32 - 1),
            "s32": (-(2**31), 2**31 - 1),
        }[kind]
        value = data.draw(st.integers(lo, hi))
    got = raw_value(raw_registers(value, f), f)
    if kind == "f32":  # the same float32, shown by its shortest decimal
        assert struct.pack(">f", got) == struct.pack(">f", value)
    else:
        assert got == value


def test_example_reply_of_protocols_md_decodes_to_12_50_ml_per_h() -> None:
    # 01 04 04 | 00 00 04 E2: registers 0x0000, 0x04E2 at address 11 of the generic map.
    profile = load_profile("generic")
    rate = profile.numerics[Role.RATE]
    assert raw_value([0x0000, 0x04E2], rate) * rate.scale == pytest.approx(12.50)


FRAME = PumpFrame(
    numerics={
        Role.RATE: 12.5,
        Role.VOLUME_INFUSED: 230.47,
        Role.VTBI: 500.0,
        Role.VTBI_REMAINING: 269.53,
        Role.BATTERY: 87.0,
        Role.CONCENTRATION: 2.5,
        Role.HEARTBEAT: 17.0,
    },
    state=PumpState.RUNNING,
    state_raw=3,
    drug_name="Dopamine",
    serial="SN-42",
)


@pytest.mark.parametrize("name", ["generic", "cdab-tenths"])
def test_frame_round_trips_through_each_shipped_profile_within_one_lsb(name: str) -> None:
    profile = load_profile(name)
    codec = PumpCodec(profile)
    frame = codec.decode(encode(profile, FRAME))
    assert frame is not None and codec.counters.frames_decoded == 1
    for role, f in profile.numerics.items():
        expected = FRAME.numerics[role]
        assert expected is not None
        lsb = abs(f.scale * f.factor) if f.type != "f32" else abs(expected) * 1e-6
        assert frame.numerics[role] == pytest.approx(expected, abs=lsb), role
    assert frame.state is PumpState.RUNNING
    assert frame.drug_name == "Dopamine"
    if profile.serial is not None:
        assert frame.serial == "SN-42"


def test_same_registers_mean_different_values_under_each_profile() -> None:
    generic, cdab = load_profile("generic"), load_profile("cdab-tenths")
    blocks = encode(generic, FRAME)
    assert PumpCodec(cdab).decode(blocks) is None  # not its map: refused, counted
    codec = PumpCodec(generic)
    assert codec.decode(encode(cdab, FRAME)) is None  # blocks it never asked for
    regs = list(blocks[(Table.INPUT, 0)])
    regs[0], regs[1] = regs[1], regs[0]  # the magic low word first: another map's order
    assert codec.decode({(Table.INPUT, 0): regs}) is None
    assert codec.wrong_map == 1 and codec.counters.bytes_dropped == 2 * (23 + 61)


def test_sentinels_mean_no_value() -> None:
    profile = load_profile("generic")
    frame = PumpFrame({Role.RATE: 0.0, Role.VTBI: None, Role.BATTERY: None}, PumpState.STOPPED)
    decoded = PumpCodec(profile).decode(encode(profile, frame))
    assert decoded is not None
    assert decoded.numerics[Role.VTBI] is None
    assert decoded.numerics[Role.BATTERY] is None  # 0xFFFF: mains only
    assert decoded.numerics[Role.RATE] == 0.0


def test_alarm_bits_and_unknown_state() -> None:
    profile = load_profile("generic")
    blocks = encode(profile, FRAME)
    regs = list(blocks[(Table.INPUT, 0)])
    regs[29:31] = [0x0000, 0b100101]  # bits 0, 2, 5: occlusion, air in line, door open
    regs[9] = 77  # not in the enumeration
    frame = PumpCodec(profile).decode({(Table.INPUT, 0): regs})
    assert frame is not None
    assert {a.condition for a in frame.alarms} == {
        Condition.OCCLUSION,
        Condition.AIR_IN_LINE,
        Condition.DOOR_OPEN,
    }
    assert frame.state is None and frame.state_raw == 77


def test_missing_short_or_out_of_range_blocks_are_dropped_and_counted() -> None:
    profile = load_profile("cdab-tenths")
    codec = PumpCodec(profile)
    good = encode(profile, FRAME)
    only_first = {(Table.HOLDING, 100): good[(Table.HOLDING, 100)]}
    assert codec.decode(only_first) is None
    short = {**good, (Table.HOLDING, 200): good[(Table.HOLDING, 200)][:-1]}
    assert codec.decode(short) is None
    wild = {**good, (Table.HOLDING, 200): [70000] * 10}
    assert codec.decode(wild) is None
    assert codec.counters.frames_decoded == 0
    assert codec.counters.bytes_dropped == 2 * (13 + 22 + 23)
    assert codec.decode(good) is not None


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.tuples(st.sampled_from(list(Table)), st.integers(0, 300)),
        st.lists(st.integers(-5, 0x1FFFF), max_size=130),
        max_size=4,
    )
)
def test_arbitrary_blocks_never_raise(blocks: dict[tuple[Table, int], list[int]]) -> None:
    for name in ("generic", "cdab-tenths"):
        codec = PumpCodec(load_profile(name))
        frame = codec.decode(blocks)
        assert frame is None or all(v is None or math.isfinite(v) for v in frame.numerics.values())


@given(st.lists(st.integers(0, 0xFFFF), min_size=61, max_size=61))
def test_any_register_image_with_the_magic_decodes_without_raising(regs: list[int]) -> None:
    profile = load_profile("generic")
    regs[0:2] = [0x5055, 0x4D50]
    frame = PumpCodec(profile).decode({(Table.INPUT, 0): regs})
    assert frame is not None


def test_float_sentinel_nan_is_no_value() -> None:
    raw = {
        "profile": {"name": "f"},
        "identify": {"address": 0, "type": "u16", "value": 7},
        "values": {"rate": {"address": 1, "type": "f32"}},
    }
    profile = parse_profile(raw)
    frame = PumpCodec(profile).decode({(Table.INPUT, 0): [7, 0x7FC0, 0x0000]})
    assert frame is not None and frame.numerics[Role.RATE] is None
