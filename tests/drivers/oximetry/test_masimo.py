"""Masimo ASCII 1 codec and device model.

Byte-exact vectors are the three example lines of protocols.md section 4c ("4c. Masimo
Radical-5/-7, Rad-8, Rad-87"): the Radical-7 and Radical-5 lines from MD PnP and the real
Radical-7 "color" firmware line, each followed by the CR LF the section specifies.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import replace
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import codes
from drivers.device import SerialSettings
from drivers.oximetry.masimo import (
    CONDITIONS,
    MAX_LINE,
    SPEC,
    Alarm,
    Exc,
    HexFormat,
    MasimoCodec,
    MasimoLine,
    MasimoOximeter,
    MasimoSettings,
    MasimoValues,
    NumberFormat,
    Variant,
    build_line,
    decode_line,
    device_time,
    encode_line,
    parse_value,
)
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)

T = TypeVar("T")

# protocols.md 4c, "Example lines (facts, as published)", each with its CR LF.
RADICAL_7 = (
    b"12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% SPCO=01.0% SPMET=00.5% "
    b"DESAT=01 PIDELTA=-02 PVI=027 ALARM=0000 EXC=000820\r\n"
)
RADICAL_5 = b"09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=20 EXC=800\r\n"
RADICAL_7_COLOR = (
    b"03/17/16 19:19:36 SN=---------- SPO2=098% BPM=123 PI=00.55 SPCO=--% SPMET=--.-% "
    b"SPHB=--.- SPOC=-- RESVD=--- DESAT=-- PIDELTA=+-- PVI=--- ALARM=000000 EXC=0000C00 "
    b"EXC1=00000000\r\n"
)
VECTORS = {
    Variant.RADICAL_7: RADICAL_7,
    Variant.RADICAL_5: RADICAL_5,
    Variant.RADICAL_7_COLOR: RADICAL_7_COLOR,
}
ALL_VECTORS = RADICAL_7 + RADICAL_5 + RADICAL_7_COLOR
# Non-ASCII, control bytes, a stray '=' and a half date: things a noisy RS-232 line makes.
GARBAGE = b"\x00\xff\x8012/0\x1b=PI=\xfe--"
NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
NOW_DT = dt.datetime(2026, 1, 1)


def split(data: bytes, chunk: int | None) -> list[bytes]:
    if chunk is None:
        return [data]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


#: How a test splits a byte stream into reads: whole, byte by byte, odd-sized pieces.
CHUNK_SIZES = pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytes", "sevens"])


def feed_all(codec: MasimoCodec, chunks: Iterable[bytes]) -> list[MasimoLine]:
    return [line for chunk in chunks for line in codec.feed(chunk)]


def assert_counters_consistent(codec: MasimoCodec, total: int) -> None:
    c = codec.counters
    assert c.bytes_received == total
    assert codec.bytes_decoded + c.bytes_dropped + codec.buffered == total
    assert codec.buffered <= MAX_LINE
    assert c.checksum_errors == 0  # ASCII 1 has no checksum


def of_type(readings: Iterable[Reading], kind: type[T]) -> list[T]:
    return [r for r in readings if isinstance(r, kind)]


def line_at(time: dt.datetime = NOW_DT, **fields: str) -> bytes:
    """A line with the given fields (``NAME=value`` text), in keyword order, with CR LF."""
    return encode_line(MasimoLine(time, tuple(fields.items())))


def raw_line(**fields: str) -> bytes:
    """Line bytes with the given fields, unchecked (for malformed ones)."""
    text = " ".join(["01/01/26 00:00:00", *(f"{k}={v}" for k, v in fields.items())])
    return text.encode("ascii") + b"\r\n"


# --- byte-exact vectors (protocols.md 4c) -------------------------------------------------


def test_radical_7_line_decodes_to_the_checked_values() -> None:
    [line] = MasimoCodec().feed(RADICAL_7)
    assert line.time == dt.datetime(2005, 12, 1, 11, 56, 29)
    assert line.values == MasimoValues(
        serial="0123456789",
        spo2=98.0,
        pulse_rate=240.0,
        pi=20.0,
        spco=1.0,
        spmet=0.5,
        desat=1.0,
        pi_delta=-2.0,
        pvi=27.0,
        alarm=0,
        exc=0x000820,
    )
    assert Exc(0x000820) == Exc.SENSOR_OFF | Exc.MASIMO_SET


def test_radical_5_line_has_no_sn_and_short_bit_fields() -> None:
    [line] = MasimoCodec().feed(RADICAL_5)
    assert line.time == dt.datetime(2010, 9, 15, 15, 10, 29)
    assert not line.has("SN") and not line.has("SPCO")
    assert line.values == MasimoValues(spo2=97.0, pulse_rate=64.0, pi=11.82, alarm=0x20, exc=0x800)
    assert Alarm(0x20) == Alarm.ALARM_SILENCED and Exc(0x800) == Exc.MASIMO_SET


def test_radical_7_color_line_pi_without_percent_and_dashes() -> None:
    [line] = MasimoCodec().feed(RADICAL_7_COLOR)
    assert line.time == dt.datetime(2016, 3, 17, 19, 19, 36)
    assert line.values == MasimoValues(
        spo2=98.0, pulse_rate=123.0, pi=0.55, alarm=0, exc=0xC00, exc1=0
    )
    assert Exc(0xC00) == Exc.LOW_SIGNAL_IQ | Exc.MASIMO_SET
    # Present but dashed, as opposed to absent:
    assert line.has("SPCO") and line.get("SPCO") == "--%"
    assert line.get("PIDELTA") == "+--" and line.get("SN") == "----------"
    # Fields without a meaning here are kept verbatim.
    assert (line.get("SPHB"), line.get("SPOC"), line.get("RESVD")) == ("--.-", "--", "---")


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
def test_vectors_reencode_byte_for_byte(variant: Variant) -> None:
    wire = VECTORS[variant]
    [line] = MasimoCodec().feed(wire)
    assert encode_line(line) == wire
    # The encoder prints the device's own format from the values alone.
    assert encode_line(build_line(line.time, line.values, variant)) == wire
    assert build_line(line.time, line.values, variant) == line


def test_counters_after_the_vectors() -> None:
    codec = MasimoCodec()
    assert len(codec.feed(ALL_VECTORS)) == 3
    assert codec.counters == CodecCounters(bytes_received=len(ALL_VECTORS), frames_decoded=3)
    assert codec.bytes_decoded == len(ALL_VECTORS)


# --- feeding ------------------------------------------------------------------------------


@CHUNK_SIZES
def test_every_split_gives_the_same_lines(chunk: int | None) -> None:
    whole = MasimoCodec().feed(ALL_VECTORS)
    codec = MasimoCodec()
    assert feed_all(codec, split(ALL_VECTORS, chunk)) == whole
    assert codec.counters.bytes_dropped == 0 and codec.counters.resyncs == 0
    assert_counters_consistent(codec, len(ALL_VECTORS))


@pytest.mark.parametrize("where", ["before", "between", "after", "everywhere"])
@CHUNK_SIZES
def test_garbage_costs_only_itself(where: str, chunk: int | None) -> None:
    g = {w: GARBAGE if where in (w, "everywhere") else b"" for w in ("before", "between", "after")}
    data = g["before"] + RADICAL_7 + g["between"] + RADICAL_5 + g["after"]
    codec = MasimoCodec()
    got = feed_all(codec, split(data, chunk))
    assert [encode_line(line) for line in got] == [RADICAL_7, RADICAL_5]
    assert codec.counters.bytes_dropped + codec.buffered == len(data) - len(RADICAL_7 + RADICAL_5)
    assert codec.counters.resyncs == (1 if where in ("between", "everywhere") else 0)
    assert_counters_consistent(codec, len(data))


@CHUNK_SIZES
def test_garbage_with_terminators_inside_costs_only_itself(chunk: int | None) -> None:
    garbage = b"\xff\r\n\r\x00junk\nPI=\r"
    data = RADICAL_5 + garbage + RADICAL_7 + garbage + RADICAL_5
    codec = MasimoCodec()
    assert len(feed_all(codec, split(data, chunk))) == 3
    assert codec.counters.bytes_dropped == 2 * len(garbage)
    assert codec.counters.resyncs == 2
    assert_counters_consistent(codec, len(data))


@CHUNK_SIZES
def test_damaged_line_is_dropped_whole(chunk: int | None) -> None:
    damaged = RADICAL_7[:40] + b"\xb3\x07" + RADICAL_7[40:]
    data = RADICAL_5 + damaged + RADICAL_5
    codec = MasimoCodec()
    got = feed_all(codec, split(data, chunk))
    assert [encode_line(line) for line in got] == [RADICAL_5, RADICAL_5]
    assert codec.counters.bytes_dropped == len(damaged)
    assert codec.lines_dropped == 1 and codec.counters.resyncs == 1


@CHUNK_SIZES
def test_line_that_lost_its_terminator_costs_only_itself(chunk: int | None) -> None:
    data = RADICAL_5[:-2] + RADICAL_7 + RADICAL_5
    codec = MasimoCodec()
    got = feed_all(codec, split(data, chunk))
    assert [encode_line(line) for line in got] == [RADICAL_7, RADICAL_5]
    assert codec.counters.bytes_dropped == len(RADICAL_5) - 2


def test_a_printable_field_spliced_into_a_line_cannot_be_told_from_data() -> None:
    # No checksum: a well-formed unknown field is kept, a damaged known one drops the line.
    [line] = MasimoCodec().feed(RADICAL_5.replace(b" BPM", b" X=1 BPM"))
    assert line.get("X") == "1" and line.values.pulse_rate == 64.0
    assert MasimoCodec().feed(RADICAL_5.replace(b"BPM=064", b"BPM=0x4")) == []


@CHUNK_SIZES
def test_bare_cr_and_bare_lf_also_end_lines(chunk: int | None) -> None:
    data = RADICAL_5[:-2] + b"\r" + RADICAL_5[:-2] + b"\n" + RADICAL_5
    codec = MasimoCodec()
    assert len(feed_all(codec, split(data, chunk))) == 3
    assert codec.counters.bytes_dropped == 0
    assert_counters_consistent(codec, len(data))


def test_cr_lf_split_across_reads_is_one_terminator() -> None:
    codec = MasimoCodec()
    assert len(codec.feed(RADICAL_5[:-1])) == 1  # the line is out at the CR already
    assert codec.feed(b"\n") == []
    assert codec.counters.bytes_dropped == 0 and codec.bytes_decoded == len(RADICAL_5)
    # A blank line is not a line: its terminator is dropped.
    assert codec.feed(b"\r\n") == [] and codec.counters.bytes_dropped == 2


@CHUNK_SIZES
def test_overlong_line_is_cut_and_counted(chunk: int | None) -> None:
    noise = b"A" * 3 * MAX_LINE
    data = RADICAL_5 + noise + RADICAL_7 + noise + b"\r\n" + RADICAL_5
    codec = MasimoCodec()
    got = feed_all(codec, split(data, chunk))
    # Unterminated garbage of any length does not cost the line after it.
    assert [encode_line(line) for line in got] == [RADICAL_5, RADICAL_7, RADICAL_5]
    assert codec.overlong_lines == 2
    assert codec.counters.bytes_dropped == 2 * len(noise) + 2
    assert_counters_consistent(codec, len(data))


def test_buffer_stays_bounded_without_terminators() -> None:
    codec = MasimoCodec()
    for _ in range(100):
        assert codec.feed(b"01/01/26 00:00:00 SPO2=097%" * 7) == []
        assert codec.buffered <= MAX_LINE
    assert codec.overlong_lines == 1


def test_joining_mid_line_is_not_a_resync() -> None:
    codec = MasimoCodec()
    assert len(codec.feed(RADICAL_7[30:] + RADICAL_5 + RADICAL_5)) == 2
    assert codec.counters.resyncs == 0
    assert codec.counters.bytes_dropped == len(RADICAL_7) - 30


def test_reset_drops_the_unfinished_line_but_keeps_counting() -> None:
    codec = MasimoCodec()
    codec.feed(RADICAL_7[:50])
    counters = codec.counters
    codec.reset()
    assert codec.counters is counters and counters.bytes_dropped == 50
    assert codec.feed(RADICAL_7[50:]) == []
    assert len(codec.feed(RADICAL_5)) == 1
    assert_counters_consistent(codec, len(RADICAL_7) + len(RADICAL_5))


# --- fields: by name, dashes, signs, decimals ---------------------------------------------


def test_fields_are_found_by_name_not_column() -> None:
    shuffled = b"09/15/10 15:10:29 EXC=800  BPM=064 ALARM=20 PI=11.82% SPO2=097%\r\n"
    [line] = MasimoCodec().feed(shuffled)
    [reference] = MasimoCodec().feed(RADICAL_5)
    assert line.values == reference.values


def test_names_are_case_insensitive() -> None:
    [line] = MasimoCodec().feed(b"09/21/08 09:56:12 SpO2=097 bpm=069 PI=04.69\r\n")
    assert (line.values.spo2, line.values.pulse_rate, line.values.pi) == (97.0, 69.0, 4.69)
    assert line.has("SPO2") and line.has("BPM")


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("SPO2", "---%", None),
        ("SPO2", "---", None),
        ("SPO2", "100%", 100.0),
        ("BPM", "---", None),
        ("PI", "--.--%", None),
        ("PI", "--.--", None),
        ("PI", "00.02", 0.02),
        ("PI", "20.00%", 20.0),
        ("SPCO", "--%", None),
        ("SPCO", "--.-%", None),
        ("SPCO", "12.5%", 12.5),
        ("SPMET", "--.-%", None),
        ("SPMET", "00.5%", 0.5),
        ("DESAT", "--", None),
        ("DESAT", "07", 7.0),
        ("PIDELTA", "+--", None),
        ("PIDELTA", "-02", -2.0),
        ("PIDELTA", "+05", 5.0),
        ("PIDELTA", "+00", 0.0),
        ("PIDELTA", "12", 12.0),
        ("PVI", "---", None),
        ("PVI", "027", 27.0),
        ("ALARM", "0020", 0x20),
        ("ALARM", "20", 0x20),
        ("EXC", "0000C00", 0xC00),
        ("EXC", "00000c00", 0xC00),
        ("EXC1", "00000000", 0),
        ("SN", "----------", None),
        ("SN", "0123456789", "0123456789"),
    ],
)
def test_field_values(name: str, text: str, value: float | int | str | None) -> None:
    assert parse_value(name, text) == value
    [line] = MasimoCodec().feed(line_at(**{name: text}))
    assert line.get(name) == text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("SPO2", "-98"),  # a sign on an unsigned field: damage, not a number
        ("SPO2", "9x%"),
        ("SPO2", ""),
        ("PI", "1.2.3"),
        ("BPM", "%"),
        ("PIDELTA", "--2"),
        ("ALARM", "00G0"),
        ("EXC", "800:SET"),  # the Rad-8 trend printout, not ASCII 1
        ("EXC", "123456789"),
    ],
)
def test_malformed_known_field_drops_the_line(name: str, text: str) -> None:
    with pytest.raises(ValueError):
        parse_value(name, text)
    codec = MasimoCodec()
    assert codec.feed(raw_line(**{name: text})) == []
    assert codec.lines_dropped == 1


@pytest.mark.parametrize(
    "wire",
    [
        b"02/30/20 10:00:00 SPO2=097%\r\n",  # no such date
        b"01/01/20 24:00:00 SPO2=097%\r\n",
        b"01/01/20 10:00:00SPO2=097%\r\n",  # no space after the time
        b"01/01/20 10:00:00 SPO2=097% SPO2=096%\r\n",  # a name twice
        b"01/01/20 10:00:00 SPO2=097% word\r\n",  # not NAME=value
        b"01/01/20 10:00:00 SPO2=097%\tBPM=060\r\n",  # control byte
        b"SPO2=097% BPM=060\r\n",  # no date
    ],
)
def test_malformed_lines_are_dropped(wire: bytes) -> None:
    codec = MasimoCodec()
    assert codec.feed(wire) == []
    assert codec.counters.bytes_dropped == len(wire)


def test_date_only_line_is_a_line() -> None:
    [line] = MasimoCodec().feed(b"01/01/20 10:00:00\r\n")
    assert line.fields == () and line.values == MasimoValues()


def test_number_formats() -> None:
    assert NumberFormat(2, 2, percent=True).format(0.55) == "00.55%"
    assert NumberFormat(2, 2, percent=True).format(None) == "--.--%"
    assert NumberFormat(2, signed=True).format(-2.0) == "-02"
    assert NumberFormat(2, signed=True).format(0.0) == "+00"
    assert NumberFormat(2, signed=True).format(None) == "+--"
    assert HexFormat(7).format(0xC00) == "0000C00"
    with pytest.raises(ValueError, match="sign"):
        NumberFormat(3).format(-1.0)
    with pytest.raises(ValueError, match="decimals"):
        NumberFormat(2, 1).format(0.25)
    with pytest.raises(ValueError, match="decimals"):
        NumberFormat(3).format(97.5)


def test_build_line_refuses_what_the_variant_cannot_print() -> None:
    with pytest.raises(ValueError, match="SPCO"):
        build_line(NOW_DT, MasimoValues(spco=1.0), Variant.RADICAL_5)
    with pytest.raises(ValueError, match="serial"):
        build_line(NOW_DT, MasimoValues(serial="----"), Variant.RADICAL_7)
    with pytest.raises(ValueError, match="serial"):
        build_line(NOW_DT, MasimoValues(serial="A B"), Variant.RADICAL_7)


def test_line_invariants_are_enforced() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        MasimoLine(NOW_DT, (("SPO2", "097%"), ("SPO2", "097%")))
    with pytest.raises(ValueError, match="bad field"):
        MasimoLine(NOW_DT, (("spo2", "097%"),))
    with pytest.raises(ValueError, match="whole seconds"):
        MasimoLine(NOW_DT.replace(microsecond=5), ())
    with pytest.raises(ValueError, match=r"2000\.\.2099"):
        MasimoLine(dt.datetime(1999, 12, 31), ())
    with pytest.raises(ValueError, match="not a number"):
        MasimoLine(NOW_DT, (("BPM", "abc"),))


def test_decode_line_needs_the_date_first() -> None:
    assert decode_line(RADICAL_5[:-2]) is not None
    assert decode_line(b"x" + RADICAL_5[:-2]) is None


# --- properties ---------------------------------------------------------------------------

times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0)
)


def _fixed(digits: int, decimals: int = 0, signed: bool = False) -> st.SearchStrategy[float]:
    top = 10 ** (digits + decimals) - 1
    low = -top if signed else 0
    return st.integers(low, top).map(lambda n: n / 10**decimals)


def _maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


serials = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1).filter(
    lambda s: "=" not in s and "-" not in s
)


@st.composite
def variant_values(draw: st.DrawFn, variant: Variant) -> MasimoValues:
    """Any values the variant prints exactly, fields it lacks left None."""
    color = variant is Variant.RADICAL_7_COLOR
    values = MasimoValues(
        serial=draw(_maybe(serials)),
        spo2=draw(_maybe(_fixed(3))),
        pulse_rate=draw(_maybe(_fixed(3))),
        pi=draw(_maybe(_fixed(2, 2))),
        spco=draw(_maybe(_fixed(2, 0 if color else 1))),
        spmet=draw(_maybe(_fixed(2, 1))),
        desat=draw(_maybe(_fixed(2))),
        pi_delta=draw(_maybe(_fixed(2, signed=True))),
        pvi=draw(_maybe(_fixed(3))),
        alarm=draw(_maybe(st.integers(0, 0xFFFFFFFF))),
        exc=draw(_maybe(st.integers(0, 0xFFFFFFFF))),
        exc1=draw(_maybe(st.integers(0, 0xFFFFFFFF))),
    )
    kept = {
        name: getattr(values, name) if name in variant.carries else None
        for name in MasimoValues.__dataclass_fields__
    }
    return MasimoValues(**kept)


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_values_round_trip_through_the_wire(variant: Variant, data: st.DataObject) -> None:
    time = data.draw(times)
    values = data.draw(variant_values(variant))
    line = build_line(time, values, variant)
    [decoded] = MasimoCodec().feed(encode_line(line))
    assert decoded == line
    assert decoded.values == values and decoded.time == time


_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "=")
unknown_fields = st.lists(
    st.tuples(
        st.text(_NAME_CHARS, max_size=6).map(lambda s: "X" + s),
        st.text(_VALUE_CHARS, max_size=12),
    ),
    max_size=4,
    unique_by=lambda f: f[0],
)


@st.composite
def lines(draw: st.DrawFn) -> MasimoLine:
    """Any line: a variant's known fields plus unknown ones, in a shuffled order."""
    variant = draw(st.sampled_from(list(Variant)))
    base = build_line(draw(times), draw(variant_values(variant)), variant)
    fields = draw(st.permutations(base.fields + tuple(draw(unknown_fields))))
    return MasimoLine(base.time, tuple(fields))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=100, deadline=None)
@given(sent=st.lists(lines(), min_size=1, max_size=5), cuts=st.lists(st.integers(0, 5000)))
def test_decode_encode_round_trip(sent: list[MasimoLine], cuts: list[int]) -> None:
    wire = b"".join(map(encode_line, sent))
    codec = MasimoCodec()
    assert feed_all(codec, chunked(wire, cuts)) == sent
    assert codec.counters.bytes_dropped == 0
    assert_counters_consistent(codec, len(wire))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_garbage_between_lines_costs_only_itself(data: st.DataObject) -> None:
    sent = data.draw(st.lists(lines(), min_size=1, max_size=4))
    gaps = data.draw(st.lists(st.binary(max_size=80), min_size=len(sent) + 1))
    wire = gaps[0] + b"".join(
        encode_line(line) + gap for line, gap in zip(sent, gaps[1:], strict=False)
    )
    cuts = data.draw(st.lists(st.integers(0, 5000), max_size=10))
    codec = MasimoCodec()
    assert feed_all(codec, chunked(wire, cuts)) == sent
    garbage = len(wire) - sum(len(encode_line(line)) for line in sent)
    assert codec.counters.bytes_dropped + codec.buffered == garbage


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=400), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    codec = MasimoCodec()
    for line in feed_all(codec, chunks):
        assert isinstance(line, MasimoLine)
    assert_counters_consistent(codec, sum(map(len, chunks)))


printable_noise = st.binary(max_size=300).map(
    lambda b: bytes(c if c in b"\r\n" else 0x20 + c % 0x5F for c in b)
)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(printable_noise | st.sampled_from([RADICAL_5, RADICAL_7]), max_size=8))
def test_printable_noise_never_raises(chunks: list[bytes]) -> None:
    codec = MasimoCodec()
    feed_all(codec, chunks)
    assert_counters_consistent(codec, sum(map(len, chunks)))


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200) | st.just(RADICAL_7), max_size=6))
def test_model_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    model = MasimoOximeter("ox", MasimoSettings())
    model.on_connect(NOW)
    for chunk in chunks:
        model.feed(chunk, NOW)
    model.on_disconnect(NOW)
    assert model.counters.bytes_received == sum(map(len, chunks))


def test_random_noise_stream_keeps_every_intact_line() -> None:
    rng = random.Random(7)
    sent = [
        build_line(
            NOW_DT + dt.timedelta(seconds=i),
            MasimoValues(spo2=float(90 + i % 10), pulse_rate=float(60 + i), exc=0x800),
            Variant.RADICAL_5,
        )
        for i in range(60)
    ]
    wire = bytearray()
    intact = []
    for line in sent:
        chunk = bytearray(encode_line(line))
        if rng.random() < 0.3:
            chunk[rng.randrange(len(chunk) - 2)] = rng.choice(b"\x00\xff=\x1b")
        else:
            intact.append(line)
        wire += chunk
    assert MasimoCodec().feed(bytes(wire)) == intact


# --- device model -------------------------------------------------------------------------


def connected(**settings: float) -> MasimoOximeter:
    model = MasimoOximeter("ox1", MasimoSettings(**settings))  # type: ignore[arg-type]
    model.on_connect(NOW)
    return model


def numerics(readings: Iterable[Reading]) -> dict[str, Numeric]:
    return {n.code.refid: n for n in of_type(readings, Numeric)}


def events(readings: Iterable[Reading]) -> list[tuple[Condition, bool]]:
    return [(e.condition, e.active) for e in of_type(readings, DeviceEvent)]


def now_line(
    values: MasimoValues, variant: Variant = Variant.RADICAL_7, at: dt.datetime = NOW_DT
) -> bytes:
    """A line stamped with gateway time ``NOW`` (device clock in UTC), so no skew."""
    return encode_line(build_line(at, values, variant))


GOOD = MasimoValues(
    serial="0123456789",
    spo2=97.0,
    pulse_rate=72.0,
    pi=3.5,
    spco=1.0,
    spmet=0.5,
    desat=0.0,
    pi_delta=-2.0,
    pvi=14.0,
    alarm=0,
    exc=Exc.MASIMO_SET,
)
SPO2 = codes.SPO2.refid


def test_on_connect_sends_nothing() -> None:
    model = MasimoOximeter("ox1", MasimoSettings())
    assert model.on_connect(NOW) == (b"", [])


def test_good_line_becomes_readings_with_device_time() -> None:
    model = connected()
    readings = model.feed(now_line(GOOD), NOW + 0.4)
    [identity] = of_type(readings, Identity)
    assert identity == Identity("ox1", NOW + 0.4, manufacturer="Masimo", serial="0123456789")
    assert events(readings) == []
    n = numerics(readings)
    expected = [
        (codes.SPO2, 97.0, codes.PERCENT),
        (codes.PULSE_RATE, 72.0, codes.BEATS_PER_MINUTE),
        (codes.PERFUSION_INDEX, 3.5, codes.PERCENT),
        (codes.SPCO, 1.0, codes.PERCENT),
        (codes.SPMET, 0.5, codes.PERCENT),
        (codes.PVI, 14.0, codes.PERCENT),
        (codes.DESAT_INDEX, 0.0, codes.DIMENSIONLESS),
        (codes.PI_DELTA, -2.0, codes.PERCENT),
    ]
    assert [(r.code, r.value, r.unit) for r in of_type(readings, Numeric)] == expected
    assert all(r.device_time == NOW and r.time == NOW + 0.4 for r in n.values())
    assert all(r.status == MeasurementStatus.NONE for r in n.values())
    assert of_type(readings, Waveform) == []  # ASCII 1 has no waveform


def test_radical_7_vector_sensor_off_makes_values_unavailable() -> None:
    model = connected(max_clock_skew=1e10)
    readings = model.feed(RADICAL_7, NOW)
    assert events(readings) == [(Condition.SENSOR_OFF, True)]
    n = numerics(readings)
    assert len(n) == 8
    for numeric in n.values():  # EXC says sensor off: 98 % is not shown as current
        assert numeric.value is None and numeric.status == MeasurementStatus.UNAVAILABLE
        assert (
            numeric.device_time
            == dt.datetime(2005, 12, 1, 11, 56, 29).replace(tzinfo=dt.UTC).timestamp()
        )
    assert of_type(readings, Identity)[0].serial == "0123456789"


def test_radical_5_vector_silenced_and_only_fields_sent() -> None:
    readings = connected(max_clock_skew=1e10).feed(RADICAL_5, NOW)
    assert events(readings) == [(Condition.DEVICE_ALARM_SILENCED, True)]
    n = numerics(readings)
    assert sorted(n) == sorted(
        [codes.SPO2.refid, codes.PULSE_RATE.refid, codes.PERFUSION_INDEX.refid]
    )
    assert (n[SPO2].value, n[codes.PERFUSION_INDEX.refid].value) == (97.0, 11.82)
    assert of_type(readings, Identity)[0].serial == ""


def test_radical_7_color_vector_low_iq_and_dashes() -> None:
    readings = connected(max_clock_skew=1e10).feed(RADICAL_7_COLOR, NOW)
    assert events(readings) == [(Condition.LOW_SIGNAL_QUALITY, True)]
    n = numerics(readings)
    assert n[SPO2].value == 98.0 and n[SPO2].status == MeasurementStatus.QUESTIONABLE
    assert n[codes.PERFUSION_INDEX.refid].value == 0.55
    for code in (codes.SPCO, codes.SPMET, codes.PVI, codes.DESAT_INDEX, codes.PI_DELTA):
        assert n[code.refid].value is None  # dashes: never a number
        assert n[code.refid].status == MeasurementStatus.UNAVAILABLE


def test_dashes_are_unavailable_never_numbers() -> None:
    dashed = MasimoValues(serial="0123456789", alarm=0, exc=Exc.MASIMO_SET)
    readings = connected().feed(now_line(dashed), NOW)
    assert len(numerics(readings)) == 8
    for numeric in numerics(readings).values():
        assert numeric.value is None and numeric.status == MeasurementStatus.UNAVAILABLE


def test_percent_above_100_is_invalid() -> None:
    line = line_at(SPO2="120%", PVI="101", BPM="250")
    n = numerics(connected().feed(line, NOW))
    assert n[SPO2].value is None and n[SPO2].status == MeasurementStatus.INVALID
    assert n[codes.PVI.refid].status == MeasurementStatus.INVALID
    assert n[codes.PULSE_RATE.refid].value == 250.0  # no limit but the wire's


@pytest.mark.parametrize(
    ("bit", "condition", "quality"),
    [
        (Exc.NO_SENSOR, Condition.NO_SENSOR, MeasurementStatus.UNAVAILABLE),
        (Exc.NO_CABLE, Condition.NO_SENSOR, MeasurementStatus.UNAVAILABLE),
        (Exc.SENSOR_OFF, Condition.SENSOR_OFF, MeasurementStatus.UNAVAILABLE),
        (Exc.DEFECTIVE_SENSOR, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.UNRECOGNISED_SENSOR, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.INCOMPATIBLE_SENSOR, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.CABLE_LIFE_EXPIRED, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.INCOMPATIBLE_CABLE, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.UNRECOGNISED_CABLE, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.DEFECTIVE_CABLE, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.SENSOR_LIFE_EXPIRED, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.EMITTER_TEMPERATURE, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.SENSOR_CURRENT_LIMIT, Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        (Exc.LOW_PERFUSION, Condition.LOW_PERFUSION, MeasurementStatus.LOW_PERFUSION),
        (Exc.PULSE_SEARCH, Condition.PULSE_SEARCH, MeasurementStatus.QUESTIONABLE),
        (Exc.INTERFERENCE, Condition.INTERFERENCE, MeasurementStatus.QUESTIONABLE),
        (Exc.AMBIENT_LIGHT, Condition.INTERFERENCE, MeasurementStatus.QUESTIONABLE),
        (Exc.LOW_SIGNAL_IQ, Condition.LOW_SIGNAL_QUALITY, MeasurementStatus.QUESTIONABLE),
    ],
)
def test_exc_bits_are_edge_triggered_conditions(
    bit: Exc, condition: Condition, quality: MeasurementStatus
) -> None:
    model = connected()
    flagged = now_line(MasimoValues(spo2=97.0, exc=Exc.MASIMO_SET | bit), Variant.RADICAL_5)
    raised = model.feed(flagged, NOW)
    assert events(raised) == [(condition, True)]
    assert numerics(raised)[SPO2].status == quality
    assert events(model.feed(flagged * 3, NOW)) == []
    assert events(model.feed(now_line(GOOD), NOW)) == [(condition, False)]
    assert model.active_conditions == frozenset()


@pytest.mark.parametrize(
    "bit",
    [Exc.MASIMO_SET, Exc.RESERVED_000200, Exc.SENSOR_CALIBRATING, Exc.SPCO_LOW_CONFIDENCE],
)
def test_informational_exc_bits_raise_nothing(bit: Exc) -> None:
    assert events(connected().feed(now_line(replace(GOOD, exc=bit)), NOW)) == []


def test_quality_only_bits() -> None:
    calibrating = replace(GOOD, exc=Exc.SENSOR_CALIBRATING)
    assert numerics(connected().feed(now_line(calibrating), NOW))[SPO2].status == (
        MeasurementStatus.EARLY
    )
    low = replace(GOOD, exc=Exc.SPCO_LOW_CONFIDENCE | Exc.SPMET_LOW_CONFIDENCE)
    n = numerics(connected().feed(now_line(low), NOW))
    assert n[codes.SPCO.refid].status == MeasurementStatus.QUESTIONABLE
    assert n[codes.SPMET.refid].status == MeasurementStatus.QUESTIONABLE
    assert n[SPO2].status == MeasurementStatus.NONE


@pytest.mark.parametrize(
    ("bit", "condition"),
    [
        (Alarm.ALARM_SILENCED, Condition.DEVICE_ALARM_SILENCED),
        (Alarm.LOW_BATTERY, Condition.LOW_BATTERY),
    ],
)
def test_alarm_bits_to_conditions(bit: Alarm, condition: Condition) -> None:
    model = connected()
    assert events(model.feed(now_line(replace(GOOD, alarm=bit)), NOW)) == [(condition, True)]
    assert events(model.feed(now_line(GOOD), NOW)) == [(condition, False)]


def test_physiological_alarm_bits_are_not_technical_conditions() -> None:
    physiological = Alarm.ALARM_ACTIVE | Alarm.SPO2_LOW | Alarm.PR_HIGH | Alarm.SPCO_HIGH
    assert events(connected().feed(now_line(replace(GOOD, alarm=physiological)), NOW)) == []


def test_a_line_without_exc_keeps_the_exc_conditions() -> None:
    model = connected()
    model.feed(now_line(replace(GOOD, exc=Exc.SENSOR_OFF)), NOW)
    assert events(model.feed(line_at(SPO2="---%"), NOW)) == []
    assert model.active_conditions == {Condition.SENSOR_OFF}


@pytest.mark.parametrize(
    ("skew", "offset", "raised"),
    [(0, 0, False), (120, 0, False), (121, 0, True), (-121, 0, True), (3600, 60, False)],
)
def test_clock_skew(skew: int, offset: int, raised: bool) -> None:
    model = connected(device_utc_offset_minutes=offset)
    at = NOW_DT + dt.timedelta(seconds=skew)
    readings = model.feed(now_line(GOOD, at=at), NOW)
    assert events(readings) == ([(Condition.CLOCK_SKEW, True)] if raised else [])
    assert numerics(readings)[SPO2].device_time == NOW + skew - 60 * offset
    if raised:
        assert events(model.feed(now_line(GOOD), NOW)) == [(Condition.CLOCK_SKEW, False)]


def test_device_time_reads_the_offset() -> None:
    [line] = MasimoCodec().feed(RADICAL_5)
    utc = dt.datetime(2010, 9, 15, 15, 10, 29, tzinfo=dt.UTC).timestamp()
    assert device_time(line) == utc
    assert device_time(line, -300) == utc + 300 * 60  # device on UTC-5: its 15:10 is 20:10 UTC


def test_identity_per_connection_and_on_serial_change() -> None:
    model = connected()
    assert len(of_type(model.feed(now_line(GOOD), NOW), Identity)) == 1
    assert of_type(model.feed(now_line(GOOD), NOW), Identity) == []
    swapped = model.feed(now_line(replace(GOOD, serial="9999999999")), NOW)
    assert [i.serial for i in of_type(swapped, Identity)] == ["9999999999"]
    model.on_disconnect(NOW)
    model.on_connect(NOW)
    assert len(of_type(model.feed(now_line(replace(GOOD, serial="9999999999")), NOW), Identity))


def test_on_disconnect_clears_every_active_condition_once() -> None:
    model = connected()
    everything = replace(
        GOOD, exc=sum(int(b) for b in Exc), alarm=Alarm.ALARM_SILENCED | Alarm.LOW_BATTERY
    )
    model.feed(now_line(everything, at=NOW_DT.replace(year=2030)), NOW)
    assert model.active_conditions == set(CONDITIONS)
    cleared = model.on_disconnect(NOW + 5)
    assert events(cleared) == [(c, False) for c in CONDITIONS]
    assert all(e.time == NOW + 5 and e.source == "ox1" for e in of_type(cleared, DeviceEvent))
    assert model.on_disconnect(NOW + 6) == []


def test_reconnect_without_disconnect_still_clears() -> None:
    model = connected()
    model.feed(now_line(replace(GOOD, exc=Exc.PULSE_SEARCH)), NOW)
    command, readings = model.on_connect(NOW + 1)
    assert command == b"" and events(readings) == [(Condition.PULSE_SEARCH, False)]


def test_counters_live_across_connections() -> None:
    model = connected(max_clock_skew=1e10)
    counters = model.counters
    model.feed(RADICAL_5, NOW)
    model.on_disconnect(NOW)
    model.on_connect(NOW)
    model.feed(RADICAL_5, NOW)
    assert model.counters is counters and counters.frames_decoded == 2
    assert model.codec.counters is counters


# --- settings and registration ------------------------------------------------------------


def test_settings_defaults_and_validation() -> None:
    s = MasimoSettings()
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits) == (9600, 8, "N", 1)
    assert (s.device_utc_offset_minutes, s.max_clock_skew) == (0, 120.0)
    assert MasimoSettings(max_clock_skew=30).max_clock_skew == 30.0
    for bad in (
        {"device_utc_offset_minutes": 900},
        {"device_utc_offset_minutes": 1.5},
        {"max_clock_skew": 0},
        {"timezone": "UTC"},
    ):
        with pytest.raises(ValidationError):
            MasimoSettings(**bad)  # type: ignore[arg-type]


def test_spec() -> None:
    assert SPEC.name == "masimo-ascii"
    assert SPEC.settings is MasimoSettings
    model = SPEC.make_model("ox9", MasimoSettings(device_utc_offset_minutes=60))
    assert isinstance(model, MasimoOximeter) and model.settings.device_utc_offset_minutes == 60
    assert SPEC.scenarios == ("normal", "desaturation", "probe_off", "noise", "unplug")
    with pytest.raises(TypeError):
        SPEC.make_model("ox9", SerialSettings())
