"""Nonin DF2/DF7/DF8 codecs and device model.

Byte-exact vectors come from protocols.md section 4a ("4a. Nonin"): the real DF2 capture
(Nonin 9560 over SPP), the synthetic DF7 frame, the two DF8 worked examples and the
long-form set-format command. The DF8 tests are grouped at the end.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import codes, registry
from drivers.device import SerialSettings
from drivers.oximetry.nonin import (
    DF8_FLAG_BITS,
    DF8_FRAME_LEN,
    FRAME_LEN,
    FRAMES_PER_PACKET,
    PACKET_LEN,
    PACKET_PERIOD_S,
    PLETH_MAX,
    SPEC,
    DataFormat,
    Df8Status,
    Df8Status2,
    NoninCodec,
    NoninDf8Codec,
    NoninDf8Frame,
    NoninFrame,
    NoninOximeter,
    NoninPacket,
    NoninSettings,
    NoninValues,
    PacketFormat,
    Stat2,
    Status,
    decode_df8,
    decode_frame,
    encode_df8,
    encode_frame,
    encode_packet,
    set_format_command,
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

FORMATS: tuple[PacketFormat, ...] = (2, 7)
NOW = 1_767_225_600.0

# protocols.md 4a, "Real capture, one packet (Nonin 9560 over SPP)", re-ordered to start
# at the SYNC frame; "x3" in the table is three identical frames.
CAPTURE_DF2 = bytes.fromhex(
    "01 81 43 00 C5  01 80 43 4A 0E  01 80 43 60 24  01 80 43 94 58  01 80 43 00 C4"
    "01 80 41 00 C2  01 80 3E 17 D6  01 80 3C 04 C1  01 80 39 60 1A  01 80 36 60 17"
    "01 80 35 60 16  01 80 34 00 B5  01 80 34 00 B5  01 80 34 00 B5  01 80 35 4A 00"
    "01 80 36 60 17  01 80 37 60 18  01 80 3A 00 BB  01 80 40 00 C1  01 80 4A 00 CB"
    "01 80 57 4A 22  01 80 69 00 EA  01 80 7C 4A 47  01 80 90 00 11  01 80 A1 00 22"
)
CAPTURE_PLETH = tuple(CAPTURE_DF2[2::FRAME_LEN])
# protocols.md 4a, DF7 synthetic example: SYNC frame, pleth 0x1234, HR-MSB 0.
DF7_FRAME = bytes.fromhex("81 12 34 00 C7")
# Garbage chosen to look like frame starts in both formats (0x01 leads, bit-7 bytes).
GARBAGE = bytes.fromhex("01 81 FF 00 01 80 80 81 12 34 55 00 C7 01")


def make_packet(
    *,
    hr: int | None = 74,
    spo2: int | None = 96,
    status: int = Status.MARKER,
    statuses: Sequence[int] | None = None,
    stat2: int = 0,
    pleth: Sequence[int] | None = None,
    firmware: int = 0x94,
) -> NoninPacket:
    """A packet with every frame's STATUS = ``status`` unless ``statuses`` is given."""
    values = NoninValues.steady(hr, spo2, firmware=firmware, stat2=stat2)
    return NoninPacket.build(
        values,
        statuses if statuses is not None else [status] * FRAMES_PER_PACKET,
        pleth if pleth is not None else range(100, 100 + FRAMES_PER_PACKET),
    )


def df7_vector_packet() -> NoninPacket:
    """A DF7 packet whose first frame is the 4a synthetic frame ``81 12 34 00 C7``."""
    return make_packet(pleth=[0x1234] + [0x2000 + i for i in range(1, FRAMES_PER_PACKET)])


def vector(data_format: PacketFormat) -> bytes:
    return CAPTURE_DF2 if data_format == 2 else encode_packet(df7_vector_packet(), 7)


def feed_all(codec: NoninCodec, chunks: Iterable[bytes]) -> list[NoninPacket]:
    return [p for chunk in chunks for p in codec.feed(chunk)]


#: How a test splits a byte stream into reads: whole, byte by byte, odd-sized pieces.
CHUNK_SIZES = pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytes", "sevens"])


def split(data: bytes, chunk: int | None) -> list[bytes]:
    if chunk is None:
        return [data]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def assert_counters_consistent(codec: NoninCodec, total: int) -> None:
    c = codec.counters
    assert c.bytes_received == total
    assert FRAME_LEN * c.frames_decoded + c.bytes_dropped + codec.buffered == total
    assert codec.buffered < PACKET_LEN


def of_type(readings: Iterable[Reading], kind: type[T]) -> list[T]:
    return [r for r in readings if isinstance(r, kind)]


# --- byte-exact vectors (protocols.md 4a) -------------------------------------------------


def test_real_df2_capture_decodes_to_the_documented_values() -> None:
    codec = NoninCodec(2)
    [packet] = codec.feed(CAPTURE_DF2)
    v = packet.values
    assert (v.hr, v.spo2, v.firmware, v.timer) == (74, 96, 0x94, 0x0017)
    assert v.spo2_display == v.spo2_fast == v.spo2_b2b == v.e_spo2 == v.e_spo2_display == 96
    assert v.e_hr == v.hr_display == v.e_hr_display == 74
    assert not v.stat2 & Stat2.LOW_BATTERY
    assert packet.statuses == (0x81,) + (0x80,) * 24
    assert packet.pleth == CAPTURE_PLETH
    assert CAPTURE_PLETH[:3] == (0x43, 0x43, 0x43) and CAPTURE_PLETH[-1] == 0xA1
    assert codec.counters == CodecCounters(
        bytes_received=PACKET_LEN, frames_decoded=FRAMES_PER_PACKET
    )


def test_real_df2_capture_reencodes_byte_for_byte() -> None:
    [packet] = NoninCodec(2).feed(CAPTURE_DF2)
    assert encode_packet(packet, 2) == CAPTURE_DF2


def test_df7_synthetic_frame() -> None:
    frame = NoninFrame(status=0x81, pleth=0x1234, float_byte=0x00)
    assert encode_frame(frame, 7) == DF7_FRAME
    assert decode_frame(DF7_FRAME, 7) == frame
    assert encode_packet(df7_vector_packet(), 7)[:FRAME_LEN] == DF7_FRAME
    [packet] = NoninCodec(7).feed(vector(7))
    assert packet.frames[0] == frame
    assert packet.values.hr == 74


@pytest.mark.parametrize(
    ("data_format", "expected"),
    [
        (7, "02 70 04 02 07 21 9E 03"),
        (2, "02 70 04 02 02 21 99 03"),
        (8, "02 70 04 02 08 21 9F 03"),  # 0x70+0x04+0x02+0x08+0x21 = 0x9F
    ],
)
def test_set_format_command(data_format: DataFormat, expected: str) -> None:
    # 4a "Commands": checksum = low byte of 0x70 + 0x04 + data; 0x70+0x04+0x02+0x07+0x21 = 0x9E.
    assert set_format_command(data_format) == bytes.fromhex(expected)


def test_set_format_command_refuses_spot_check_mode() -> None:
    with pytest.raises(ValueError, match="streaming"):
        set_format_command(7, option=0x41)
    with pytest.raises(ValueError, match="data format"):
        set_format_command(13)  # type: ignore[arg-type]  # DF13 spot-check: not offered


def test_decode_frame_rejects_bad_frames() -> None:
    assert decode_frame(CAPTURE_DF2, 2) == NoninFrame(0x81, 0x43, 0x00)
    assert decode_frame(CAPTURE_DF2, 7) is None  # 0x01 lacks bit 7
    assert decode_frame(bytes.fromhex("01 81 43 00 C6"), 2) is None  # checksum
    assert decode_frame(bytes.fromhex("02 81 43 00 C6"), 2) is None  # lead byte
    assert decode_frame(bytes.fromhex("01 01 43 00 45"), 2) is None  # status bit 7
    assert decode_frame(DF7_FRAME[:4], 7) is None  # too short


def test_hr_uses_msb_bits_1_0_not_the_pufferfish_mask() -> None:
    # HR 300 = MSB 0b10, LSB 0x2C; a 0x18 mask on the shifted MSB would give 44.
    packet = make_packet(hr=300)
    assert (packet.frames[0].float_byte, packet.frames[1].float_byte) == (0x02, 0x2C)
    assert NoninCodec(7).feed(encode_packet(packet, 7))[0].values.hr == 300


def test_missing_sentinels_decode_to_none() -> None:
    packet = make_packet(hr=None, spo2=None)
    assert (packet.frames[0].float_byte, packet.frames[1].float_byte) == (0x03, 0x7F)
    assert packet.frames[2].float_byte == 127
    [decoded] = NoninCodec(2).feed(encode_packet(packet, 2))
    assert (decoded.values.hr, decoded.values.spo2, decoded.values.e_hr_display) == (
        None,
        None,
        None,
    )


def test_packet_invariants_are_enforced() -> None:
    frames = make_packet().frames
    with pytest.raises(ValueError, match="25 frames"):
        NoninPacket(frames[:-1])
    with pytest.raises(ValueError, match="SYNC"):
        NoninPacket((frames[1], *frames[1:]))
    with pytest.raises(ValueError, match="pleth"):
        encode_frame(NoninFrame(0x80, 256, 0), 2)
    with pytest.raises(ValueError, match="heart rate"):
        NoninValues.steady(512, 96, firmware=0).to_float_bytes()


# --- h11-style feeding --------------------------------------------------------------------


@pytest.mark.parametrize("data_format", FORMATS)
@CHUNK_SIZES
def test_every_split_gives_the_same_packet(data_format: PacketFormat, chunk: int | None) -> None:
    data = vector(data_format)
    [whole] = NoninCodec(data_format).feed(data)
    codec = NoninCodec(data_format)
    got = feed_all(codec, split(data, chunk))
    assert got == [whole]
    assert codec.counters.frames_decoded == FRAMES_PER_PACKET
    assert codec.counters.bytes_dropped == 0
    assert_counters_consistent(codec, len(data))


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("where", ["before", "between", "after", "everywhere"])
@CHUNK_SIZES
def test_garbage_costs_only_itself(
    data_format: PacketFormat, where: str, chunk: int | None
) -> None:
    packet = vector(data_format)
    g = {w: GARBAGE if where in (w, "everywhere") else b"" for w in ("before", "between", "after")}
    data = g["before"] + packet + g["between"] + packet + g["after"]
    codec = NoninCodec(data_format)
    got = feed_all(codec, split(data, chunk))
    assert len(got) == 2 and encode_packet(got[0], data_format) == packet
    assert got[0] == got[1]
    assert codec.counters.bytes_dropped + codec.buffered == len(data) - 2 * PACKET_LEN
    assert codec.counters.resyncs == (1 if where in ("between", "everywhere") else 0)
    assert_counters_consistent(codec, len(data))


@pytest.mark.parametrize("data_format", FORMATS)
@CHUNK_SIZES
def test_bad_checksum_aborts_the_packet_and_is_counted(
    data_format: PacketFormat, chunk: int | None
) -> None:
    good = vector(data_format)
    bad = bytearray(good)
    bad[10 * FRAME_LEN + 4] ^= 0x01  # checksum of frame 11
    codec = NoninCodec(data_format)
    got = feed_all(codec, split(good + bytes(bad) + good, chunk))
    assert len(got) == 2
    assert codec.counters.checksum_errors == 1
    assert codec.counters.resyncs == 1
    assert codec.counters.bytes_dropped == PACKET_LEN
    assert_counters_consistent(codec, 3 * PACKET_LEN)


@pytest.mark.parametrize("data_format", FORMATS)
@CHUNK_SIZES
def test_sync_inside_a_packet_aborts_it(data_format: PacketFormat, chunk: int | None) -> None:
    good = vector(data_format)
    truncated = good[: 12 * FRAME_LEN]  # device restarted mid-packet
    codec = NoninCodec(data_format)
    assert len(feed_all(codec, split(truncated + good, chunk))) == 1
    assert codec.counters.checksum_errors == 0
    assert codec.counters.bytes_dropped == len(truncated)


def test_joining_mid_stream_drops_the_partial_packet_without_a_resync() -> None:
    stream = CAPTURE_DF2 * 3
    codec = NoninCodec(2)
    assert len(codec.feed(stream[7 * FRAME_LEN + 2 :])) == 2
    assert codec.counters.resyncs == 0
    assert codec.counters.bytes_dropped == 18 * FRAME_LEN - 2


def test_reset_drops_buffered_bytes_but_keeps_counting() -> None:
    codec = NoninCodec(2)
    codec.feed(CAPTURE_DF2[:60])
    assert codec.buffered == 60
    counters = codec.counters
    codec.reset()
    assert codec.counters is counters and counters.bytes_dropped == 60
    assert codec.feed(CAPTURE_DF2[60:]) == []
    assert len(codec.feed(CAPTURE_DF2)) == 1
    assert_counters_consistent(codec, 2 * PACKET_LEN)


def test_codec_refuses_unknown_format() -> None:
    with pytest.raises(ValueError, match="2 or 7"):
        NoninCodec(8)  # type: ignore[arg-type]  # DF8 has its own codec


# --- properties ---------------------------------------------------------------------------


@st.composite
def packets(draw: st.DrawFn, data_format: PacketFormat) -> NoninPacket:
    """Any packet the format can carry, reserved FLOAT bytes included."""
    n = FRAMES_PER_PACKET
    statuses = draw(st.lists(st.integers(0x80, 0xFF), min_size=n, max_size=n))
    pleth = draw(st.lists(st.integers(0, PLETH_MAX[data_format]), min_size=n, max_size=n))
    floats = draw(st.lists(st.integers(0, 0xFF), min_size=n, max_size=n))
    statuses = [statuses[0] | 0x01] + [s & 0xFE for s in statuses[1:]]  # SYNC is positional
    return NoninPacket(tuple(map(NoninFrame, statuses, pleth, floats)))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("data_format", FORMATS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_decode_encode_round_trip(data_format: PacketFormat, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(data_format), min_size=1, max_size=4))
    wire = b"".join(encode_packet(p, data_format) for p in sent)
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    codec = NoninCodec(data_format)
    assert feed_all(codec, chunked(wire, cuts)) == sent
    assert codec.counters.bytes_dropped == 0


values_hr = st.none() | st.integers(0, 510)
values_spo2 = st.none() | st.integers(0, 255).filter(lambda v: v != 127)


@settings(max_examples=200)
@given(
    st.builds(
        NoninValues,
        hr=values_hr,
        spo2=values_spo2,
        spo2_display=values_spo2,
        spo2_fast=values_spo2,
        spo2_b2b=values_spo2,
        e_hr=values_hr,
        e_spo2=values_spo2,
        e_spo2_display=values_spo2,
        hr_display=values_hr,
        e_hr_display=values_hr,
        firmware=st.integers(0, 255),
        timer=st.integers(0, 0xFFFF),
        stat2=st.integers(0, 255),
    )
)
def test_values_round_trip_through_float_bytes(values: NoninValues) -> None:
    assert NoninValues.from_float_bytes(values.to_float_bytes()) == values


@pytest.mark.parametrize("data_format", FORMATS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_garbage_between_packets_costs_only_itself(
    data_format: PacketFormat, data: st.DataObject
) -> None:
    sent = data.draw(st.lists(packets(data_format), min_size=1, max_size=3))
    gaps = data.draw(st.lists(st.binary(max_size=60), min_size=len(sent) + 1))
    wire = gaps[0] + b"".join(
        encode_packet(p, data_format) + gap for p, gap in zip(sent, gaps[1:], strict=False)
    )
    codec = NoninCodec(data_format)
    assert codec.feed(wire) == sent
    assert codec.counters.bytes_dropped + codec.buffered == len(wire) - len(sent) * PACKET_LEN


@pytest.mark.parametrize("data_format", FORMATS)
@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise(data_format: PacketFormat, chunks: list[bytes]) -> None:
    codec = NoninCodec(data_format)
    for p in feed_all(codec, chunks):
        assert isinstance(p, NoninPacket)
    assert_counters_consistent(codec, sum(map(len, chunks)))


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=6))
def test_model_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    model = NoninOximeter("ox", NoninSettings())
    model.on_connect(NOW)
    for chunk in chunks:
        model.feed(chunk, NOW)
    model.on_disconnect(NOW)
    assert model.counters.bytes_received == sum(map(len, chunks))


# --- device model -------------------------------------------------------------------------


def connected(data_format: DataFormat = 7) -> NoninOximeter:
    model = NoninOximeter("ox1", NoninSettings(data_format=data_format))
    model.on_connect(NOW)
    return model


def feed_packets(
    model: NoninOximeter, packets_: Sequence[NoninPacket], now: float = NOW
) -> list[Reading]:
    data_format = model.settings.data_format
    assert data_format != 8
    return list(model.feed(b"".join(encode_packet(p, data_format) for p in packets_), now))


def numerics(readings: Iterable[Reading]) -> dict[str, Numeric]:
    return {n.code.refid: n for n in of_type(readings, Numeric)}


def events(readings: Iterable[Reading]) -> list[tuple[Condition, bool]]:
    return [(e.condition, e.active) for e in of_type(readings, DeviceEvent)]


def test_on_connect_writes_nothing_to_the_device_by_default() -> None:
    # The set-format command rewrites a stored device option: reading only, unless opted in.
    model = NoninOximeter("ox1", NoninSettings())
    assert model.on_connect(NOW) == (b"", [])


def test_on_connect_sends_set_format_when_opted_in_and_publishes_nothing() -> None:
    model = NoninOximeter("ox1", NoninSettings(select_format=True))
    assert model.on_connect(NOW) == (bytes.fromhex("02 70 04 02 07 21 9E 03"), [])
    df2 = NoninOximeter("ox1", NoninSettings(data_format=2, select_format=True))
    assert df2.on_connect(NOW)[0] == set_format_command(2)


def test_capture_becomes_readings() -> None:
    model = connected(2)
    readings = model.feed(CAPTURE_DF2, NOW)
    [identity] = of_type(readings, Identity)
    assert identity == Identity("ox1", NOW, manufacturer="Nonin", firmware="0x94")
    n = numerics(readings)
    assert n["MDC_PULS_OXIM_SAT_O2"] == Numeric("ox1", codes.SPO2, 96.0, codes.PERCENT, NOW)
    assert n["MDC_PULS_OXIM_PULS_RATE"] == Numeric(
        "ox1", codes.PULSE_RATE, 74.0, codes.BEATS_PER_MINUTE, NOW
    )
    assert codes.PERFUSION_INDEX.refid not in n
    [wave] = of_type(readings, Waveform)
    assert wave == Waveform(
        source="ox1",
        code=codes.PLETH,
        unit=codes.DIMENSIONLESS,
        sample_rate=75.0,
        start_time=NOW - 25 / 75,
        samples=np.array(CAPTURE_PLETH, dtype=np.float64),
        sequence=0,
    )
    assert wave.samples.dtype == np.float64 and wave.duration == pytest.approx(PACKET_PERIOD_S)
    assert events(readings) == []


def test_identity_once_per_connection_and_sequence_counts_samples() -> None:
    model = connected(2)
    first = model.feed(CAPTURE_DF2, NOW)
    second = model.feed(CAPTURE_DF2, NOW + 1 / 3)
    assert len(of_type(first, Identity)) == 1 and of_type(second, Identity) == []
    assert of_type(second, Waveform)[0].sequence == 25
    model.on_disconnect(NOW + 1)
    model.on_connect(NOW + 2)
    again = model.feed(CAPTURE_DF2, NOW + 3)
    assert len(of_type(again, Identity)) == 1
    assert of_type(again, Waveform)[0].sequence == 0


def test_packets_in_one_read_are_laid_back_to_back() -> None:
    model = connected()
    waves = of_type(feed_packets(model, [make_packet()] * 3), Waveform)
    assert [w.sequence for w in waves] == [0, 25, 50]
    assert [w.start_time for w in waves] == pytest.approx(
        [NOW - 3 * PACKET_PERIOD_S, NOW - 2 * PACKET_PERIOD_S, NOW - PACKET_PERIOD_S]
    )
    assert all(n.time == NOW for n in of_type(feed_packets(model, [make_packet()] * 2), Numeric))


def test_counters_live_across_connections() -> None:
    model = connected(2)
    counters = model.counters
    model.feed(CAPTURE_DF2, NOW)
    model.on_disconnect(NOW)
    model.on_connect(NOW)
    model.feed(CAPTURE_DF2, NOW)
    assert model.counters is counters and counters.frames_decoded == 50


@pytest.mark.parametrize(
    ("hr", "spo2"), [(None, 96), (74, None), (None, None)], ids=["hr", "spo2", "both"]
)
def test_missing_sentinels_give_unavailable(hr: int | None, spo2: int | None) -> None:
    n = numerics(feed_packets(connected(), [make_packet(hr=hr, spo2=spo2)]))
    for refid, value in (("MDC_PULS_OXIM_PULS_RATE", hr), ("MDC_PULS_OXIM_SAT_O2", spo2)):
        if value is None:
            assert n[refid].value is None
            assert n[refid].status == MeasurementStatus.UNAVAILABLE
        else:
            assert n[refid].value == value and n[refid].status == MeasurementStatus.NONE


def test_sensor_off_makes_values_unavailable_even_if_sent() -> None:
    readings = feed_packets(connected(), [make_packet(status=0x80 | Status.SNSD)])
    for n in numerics(readings).values():
        assert n.value is None and n.status == MeasurementStatus.UNAVAILABLE
    assert events(readings) == [(Condition.SENSOR_OFF, True)]


def test_spo2_above_100_is_invalid() -> None:
    n = numerics(feed_packets(connected(), [make_packet(spo2=120)]))
    assert n["MDC_PULS_OXIM_SAT_O2"].value is None
    assert n["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.INVALID


def one_frame(bits: int, frame: int = 12) -> list[int]:
    statuses = [0x80] * FRAMES_PER_PACKET
    statuses[frame] |= bits
    return statuses


@pytest.mark.parametrize(
    ("bit", "condition", "quality"),
    [
        (Status.SNSD, Condition.SENSOR_OFF, MeasurementStatus.UNAVAILABLE),
        (Status.OOT, Condition.OUT_OF_TRACK, MeasurementStatus.QUESTIONABLE),
        (Status.ARTF, Condition.ARTIFACT, MeasurementStatus.QUESTIONABLE),
        (Status.SNSA, Condition.SENSOR_ALARM, MeasurementStatus.INVALID),
    ],
)
def test_status_conditions_are_edge_triggered(
    bit: Status, condition: Condition, quality: MeasurementStatus
) -> None:
    model = connected()
    flagged = make_packet(statuses=one_frame(bit))  # one frame of 25 is enough
    raised = feed_packets(model, [flagged])
    assert events(raised) == [(condition, True)]
    assert numerics(raised)["MDC_PULS_OXIM_SAT_O2"].status == quality
    assert events(feed_packets(model, [flagged, flagged])) == []
    assert events(feed_packets(model, [make_packet(), make_packet()])) == [(condition, False)]
    assert model.active_conditions == frozenset()


def test_low_perfusion_latches_the_last_pulse_colour() -> None:
    model = connected()
    red = make_packet(statuses=one_frame(Status.RPRF))
    raised = feed_packets(model, [red])
    assert events(raised) == [(Condition.LOW_PERFUSION, True)]
    assert numerics(raised)["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.LOW_PERFUSION
    # Between pulses no colour bits: the state holds, no flicker.
    between = feed_packets(model, [make_packet()] * 3)
    assert events(between) == []
    assert numerics(between)["MDC_PULS_OXIM_PULS_RATE"].status == MeasurementStatus.LOW_PERFUSION
    # Yellow (green + red) is adequate perfusion.
    yellow = make_packet(statuses=one_frame(Status.GPRF | Status.RPRF))
    assert events(feed_packets(model, [yellow])) == [(Condition.LOW_PERFUSION, False)]
    # The last coloured frame in a packet wins.
    statuses = one_frame(Status.GPRF, frame=3)
    statuses[20] |= Status.RPRF
    assert events(feed_packets(model, [make_packet(statuses=statuses)])) == [
        (Condition.LOW_PERFUSION, True)
    ]
    assert events(feed_packets(model, [make_packet(statuses=one_frame(Status.GPRF))])) == [
        (Condition.LOW_PERFUSION, False)
    ]


def test_sensor_off_ends_low_perfusion() -> None:
    model = connected()
    feed_packets(model, [make_packet(statuses=one_frame(Status.RPRF))])
    off = feed_packets(model, [make_packet(status=0x80 | Status.SNSD)])
    assert events(off) == [(Condition.SENSOR_OFF, True), (Condition.LOW_PERFUSION, False)]


def test_low_battery_from_stat2() -> None:
    model = connected()
    assert events(feed_packets(model, [make_packet(stat2=Stat2.LOW_BATTERY)])) == [
        (Condition.LOW_BATTERY, True)
    ]
    # Other STAT2 bits (the real capture has 0x04) are not low battery.
    assert events(feed_packets(model, [make_packet(stat2=0x04)])) == [
        (Condition.LOW_BATTERY, False)
    ]


def test_on_disconnect_clears_every_active_condition_once() -> None:
    model = connected()
    bits = Status.SNSD | Status.OOT | Status.ARTF | Status.SNSA
    feed_packets(model, [make_packet(status=0x80 | bits, stat2=Stat2.LOW_BATTERY)])
    assert len(model.active_conditions) == 5
    cleared = model.on_disconnect(NOW + 5)
    assert {(c, a) for c, a in events(cleared)} == {
        (c, False)
        for c in (
            Condition.SENSOR_OFF,
            Condition.OUT_OF_TRACK,
            Condition.ARTIFACT,
            Condition.SENSOR_ALARM,
            Condition.LOW_BATTERY,
        )
    }
    assert all(e.time == NOW + 5 and e.source == "ox1" for e in of_type(cleared, DeviceEvent))
    assert model.on_disconnect(NOW + 6) == []
    assert model.active_conditions == frozenset()


def test_reconnect_without_disconnect_still_clears() -> None:
    model = connected()
    feed_packets(model, [make_packet(status=0x80 | Status.ARTF)])
    _, readings = model.on_connect(NOW + 1)
    assert events(readings) == [(Condition.ARTIFACT, False)]


def test_readings_carry_source_and_time() -> None:
    readings = connected().feed(encode_packet(make_packet(), 7), NOW + 7)
    assert {r.source for r in readings} == {"ox1"}
    assert {r.time for r in readings if not isinstance(r, Waveform)} == {NOW + 7}


# --- settings and registration ------------------------------------------------------------


def test_settings_defaults_and_validation() -> None:
    s = NoninSettings()
    assert (s.data_format, s.baudrate, s.bytesize, s.parity, s.stopbits) == (7, 9600, 8, "N", 1)
    assert not s.select_format
    assert NoninSettings(data_format=8).data_format == 8
    for bad in (1, 13, "8"):  # DF13 is not offered; strict settings refuse a string
        with pytest.raises(ValidationError):
            NoninSettings(data_format=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        NoninSettings(format=2)  # type: ignore[call-arg]


def test_registered_in_the_registry() -> None:
    assert registry.get("nonin") is SPEC
    assert SPEC.settings is NoninSettings
    model = SPEC.make_model("ox9", NoninSettings(data_format=2))
    assert isinstance(model, NoninOximeter) and model.settings.data_format == 2
    assert set(SPEC.scenarios) == {"normal", "desaturation", "probe_off", "noise", "unplug"}
    with pytest.raises(TypeError):
        SPEC.make_model("ox9", SerialSettings())


def test_random_noise_stream_is_survivable() -> None:
    # A long stream with random damage: every undamaged packet must come out.
    rng = random.Random(7)
    sent = [make_packet(hr=60 + i % 40, spo2=90 + i % 10) for i in range(60)]
    wire = bytearray()
    intact = []
    for p in sent:
        chunk = bytearray(encode_packet(p, 7))
        if rng.random() < 0.3:
            chunk[rng.randrange(len(chunk))] ^= 1 << rng.randrange(8)
        else:
            intact.append(p)
        wire += chunk
    codec = NoninCodec(7)
    assert codec.feed(bytes(wire)) == intact


# === data format 8 =========================================================================

# protocols.md 4a "Data Format 8", worked examples (checked):
#: ``80 48 61 00``: HR 72, SpO2 97, no flags.
DF8_NORMAL = bytes.fromhex("80 48 61 00")
#: ``C3 7F 7F 00``: SNSD set; HR 511 and SpO2 127 are the missing sentinels.
DF8_SENSOR_OFF = bytes.fromhex("C3 7F 7F 00")
#: Garbage built to look like DF8 frame starts without ever being a whole plausible frame:
#: marker bytes followed too soon by another marker, and a dangling marker at the end.
DF8_GARBAGE = bytes.fromhex("C3 7F 81 80 48 61 80 FF 00 06")


def df8_stream(n: int = 5) -> tuple[list[NoninDf8Frame], bytes]:
    """``n`` in-step frames (rates 70.., SpO2 95..) and their wire bytes."""
    frames = [NoninDf8Frame(flags=0, hr=70 + i, spo2=95 + i % 5) for i in range(n)]
    return frames, b"".join(map(encode_df8, frames))


def feed_df8(codec: NoninDf8Codec, chunks: Iterable[bytes]) -> list[NoninDf8Frame]:
    return [f for chunk in chunks for f in codec.feed(chunk)]


def assert_df8_counters_consistent(codec: NoninDf8Codec, total: int) -> None:
    c = codec.counters
    assert c.bytes_received == total
    assert DF8_FRAME_LEN * c.frames_decoded + c.bytes_dropped + codec.buffered == total
    assert codec.buffered < DF8_FRAME_LEN
    assert c.checksum_errors == 0  # DF8 has no checksum


def is_subsequence(sub: Sequence[T], seq: Sequence[T]) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


# --- byte-exact vectors (protocols.md 4a "Data Format 8") --------------------------------


def test_df8_worked_examples() -> None:
    normal = decode_df8(DF8_NORMAL)
    assert normal == NoninDf8Frame(flags=0, hr=72, spo2=97, status2=0)
    assert encode_df8(normal) == DF8_NORMAL
    off = decode_df8(DF8_SENSOR_OFF)
    assert off == NoninDf8Frame(flags=Df8Status.SNSD, hr=None, spo2=None, status2=0)
    assert off is not None and off.status == Df8Status.SNSD
    assert encode_df8(off) == DF8_SENSOR_OFF
    codec = NoninDf8Codec()
    assert codec.feed(DF8_NORMAL + DF8_SENSOR_OFF) == [normal, off]
    assert codec.counters == CodecCounters(bytes_received=8, frames_decoded=2)


@pytest.mark.parametrize(
    ("status", "flag"),
    [
        (0xC0, Df8Status.SNSD),  # bit 6, as in DF2/DF7
        (0xA0, Df8Status.OOT),  # bit 5: ARTF in DF2/DF7
        (0x90, Df8Status.LPRF),  # bit 4: OOT in DF2/DF7
        (0x88, Df8Status.MPRF),  # bit 3: SNSA in DF2/DF7
        (0x84, Df8Status.ARTF),  # bit 2: RPRF in DF2/DF7
    ],
)
def test_df8_status_bits_are_not_the_df2_bits(status: int, flag: Df8Status) -> None:
    frame = decode_df8(bytes((status, 0x48, 0x61, 0x00)))
    assert frame is not None and frame.flags == flag and frame.hr == 72


def test_df8_heart_rate_uses_status_bits_1_0_as_bits_8_7() -> None:
    # 300 = 0b10_0101100: STATUS bits 1-0 = 0b10, byte 2 = 0x2C. drphrozen's "&" would give 0.
    assert decode_df8(bytes.fromhex("82 2C 60 00")) == NoninDf8Frame(0, hr=300, spo2=96)
    assert encode_df8(NoninDf8Frame(0, hr=300, spo2=96)) == bytes.fromhex("82 2C 60 00")
    assert decode_df8(bytes.fromhex("81 00 60 00")) == NoninDf8Frame(0, hr=128, spo2=96)
    assert decode_df8(bytes.fromhex("83 7E 60 00")) == NoninDf8Frame(0, hr=510, spo2=96)
    # 511 only with all nine bits set; SpO2 127 independently missing.
    assert decode_df8(bytes.fromhex("83 7F 60 00")) == NoninDf8Frame(0, hr=None, spo2=96)
    assert decode_df8(bytes.fromhex("80 48 7F 00")) == NoninDf8Frame(0, hr=72, spo2=None)


def test_decode_df8_rules() -> None:
    assert decode_df8(bytes.fromhex("00 48 61 00")) is None  # STATUS bit 7 clear
    for i in (1, 2, 3):  # bit 7 set anywhere else
        window = bytearray(DF8_NORMAL)
        window[i] |= 0x80
        assert decode_df8(window) is None
    assert decode_df8(bytes.fromhex("80 48 65 00")) is None  # SpO2 101
    assert decode_df8(bytes.fromhex("80 48 7E 00")) is None  # SpO2 126
    assert decode_df8(bytes.fromhex("80 48 64 00")) == NoninDf8Frame(0, hr=72, spo2=100)
    assert decode_df8(DF8_NORMAL[:3]) is None  # too short
    assert decode_df8(b"\x00" + DF8_NORMAL, offset=1) == decode_df8(DF8_NORMAL)


def test_df8_frame_invariants() -> None:
    with pytest.raises(ValueError, match="flags"):
        NoninDf8Frame(flags=0x01, hr=72, spo2=97)  # an HR bit, not a flag
    with pytest.raises(ValueError, match="flags"):
        NoninDf8Frame(flags=0x80, hr=72, spo2=97)  # the marker is wire detail
    with pytest.raises(ValueError, match="heart rate"):
        NoninDf8Frame(flags=0, hr=511, spo2=97)  # the sentinel is None, never a number
    with pytest.raises(ValueError, match="SpO2"):
        NoninDf8Frame(flags=0, hr=72, spo2=127)
    with pytest.raises(ValueError, match="SpO2"):
        NoninDf8Frame(flags=0, hr=72, spo2=101)
    with pytest.raises(ValueError, match="status2"):
        NoninDf8Frame(flags=0, hr=72, spo2=97, status2=0x80)


def test_df8_confirmed_is_not_part_of_equality() -> None:
    assert NoninDf8Frame(0, 72, 97, confirmed=False) == NoninDf8Frame(0, 72, 97)
    assert NoninDf8Frame(0, 72, 97).confirmed


# --- feeding (whole, byte by byte, odd pieces, garbage) -----------------------------------


@CHUNK_SIZES
def test_df8_every_split_gives_the_same_frames(chunk: int | None) -> None:
    frames, wire = df8_stream()
    codec = NoninDf8Codec()
    got = feed_df8(codec, split(wire, chunk))
    assert got == frames
    assert all(f.confirmed for f in got)
    assert codec.counters.frames_decoded == len(frames)
    assert codec.counters.bytes_dropped == 0 and codec.counters.resyncs == 0
    assert_df8_counters_consistent(codec, len(wire))


@pytest.mark.parametrize("where", ["before", "between", "after", "everywhere"])
@CHUNK_SIZES
def test_df8_garbage_costs_only_itself(where: str, chunk: int | None) -> None:
    frames, wire = df8_stream(4)
    first, rest = wire[:DF8_FRAME_LEN], wire[DF8_FRAME_LEN:]
    g = {
        w: DF8_GARBAGE if where in (w, "everywhere") else b""
        for w in ("before", "between", "after")
    }
    data = g["before"] + first + g["between"] + rest + g["after"]
    codec = NoninDf8Codec()
    got = feed_df8(codec, split(data, chunk))
    assert got == frames
    # The two frames after dropped bytes are unconfirmed: nothing proves their alignment.
    confirmed = {
        "before": [False, False, True, True],
        "between": [True, False, False, True],
        "after": [True] * 4,
        "everywhere": [False, False, False, True],
    }
    assert [f.confirmed for f in got] == confirmed[where]
    assert codec.counters.bytes_dropped + codec.buffered == len(data) - len(wire)
    assert codec.counters.resyncs == (1 if g["between"] else 0)
    assert_df8_counters_consistent(codec, len(data))


def test_df8_joining_mid_frame_costs_only_the_tail() -> None:
    frames, wire = df8_stream(4)
    codec = NoninDf8Codec()
    got = codec.feed(wire[2:])
    assert got == frames[1:]
    assert [f.confirmed for f in got] == [False, False, True]
    assert codec.counters.bytes_dropped == 2 and codec.counters.resyncs == 0


def test_df8_a_byte_between_frames_costs_one_byte() -> None:
    # e.g. the device's ACK (0x06) to the set-format command, between two frames.
    frames, wire = df8_stream(2)
    codec = NoninDf8Codec()
    assert codec.feed(wire[:4] + b"\x06" + wire[4:]) == frames
    assert codec.counters.bytes_dropped == 1 and codec.counters.resyncs == 1


def test_df8_implausible_spo2_is_dropped_and_the_search_goes_on() -> None:
    frames, wire = df8_stream(1)
    codec = NoninDf8Codec()
    assert codec.feed(bytes.fromhex("80 48 70 00") + wire) == frames  # SpO2 112
    assert codec.counters.bytes_dropped == 4


def test_df8_noise_inside_a_frame_can_forge_one_unconfirmed_frame() -> None:
    # The residual risk NoninDf8Codec documents: noise splits a frame after its STATUS
    # byte and ends in a byte with bit 7 set, which then heads the real frame's last three
    # bytes. Nothing can tell the result from a frame, except that it follows a gap.
    codec = NoninDf8Codec()
    noisy = DF8_NORMAL[:1] + bytes.fromhex("05 93") + DF8_NORMAL[1:]
    got = codec.feed(DF8_NORMAL + noisy + DF8_NORMAL * 2)
    forged = NoninDf8Frame(flags=Df8Status.LPRF, hr=(0b11 << 7) | 0x48, spo2=97)
    assert got == [decode_df8(DF8_NORMAL), forged, decode_df8(DF8_NORMAL), decode_df8(DF8_NORMAL)]
    assert [f.confirmed for f in got] == [True, False, False, True]
    assert codec.counters.bytes_dropped == 2 and codec.counters.resyncs == 1


def test_df8_noise_late_in_a_frame_can_forge_a_confirmed_frame() -> None:
    # The limit NoninDf8Codec documents: noise spliced before a frame's last byte whose
    # first byte has bit 7 clear completes the frame with a forged STATUS2. The gap comes
    # after the forged frame, so only the frames after the gap are unconfirmed.
    codec = NoninDf8Codec()
    noisy = DF8_NORMAL[:3] + bytes.fromhex("01 99") + DF8_NORMAL[3:]
    got = codec.feed(DF8_NORMAL + noisy + DF8_NORMAL * 3)
    assert got[1] == NoninDf8Frame(0, hr=72, spo2=97, status2=0x01)  # "low battery"
    assert [f.confirmed for f in got] == [True, True, False, False, True]
    assert codec.counters.bytes_dropped == 2


def test_df8_a_chain_of_forged_frames_stays_unconfirmed() -> None:
    # Garbage passing the rules twice in a row (seen in the noise scenario): both forged
    # frames are unconfirmed, and so is the real frame right after them.
    codec = NoninDf8Codec()
    garbage = bytes.fromhex("06 85 10 20 30 86 11 21 31")
    got = codec.feed(DF8_NORMAL + garbage + DF8_NORMAL * 2)
    assert [f.hr for f in got] == [72, (1 << 7) | 0x10, (2 << 7) | 0x11, 72, 72]
    assert [f.confirmed for f in got] == [True, False, False, True, True]


def test_df8_reset_drops_buffered_bytes_but_keeps_counting() -> None:
    codec = NoninDf8Codec()
    assert codec.feed(DF8_NORMAL[:3]) == []
    assert codec.buffered == 3
    counters = codec.counters
    codec.reset()
    assert codec.counters is counters and counters.bytes_dropped == 3
    assert codec.feed(DF8_NORMAL[3:]) == []  # a lone tail byte
    [frame] = codec.feed(DF8_NORMAL)
    assert not frame.confirmed and counters.resyncs == 0  # hunting after reset: no resync
    assert_df8_counters_consistent(codec, 8)


def test_df8_buffer_is_bounded() -> None:
    codec = NoninDf8Codec()
    codec.feed(bytes(1000))  # zeros: nothing can start a frame
    assert codec.buffered == 0 and codec.counters.bytes_dropped == 1000
    codec.feed(b"\xff" * 1000)  # markers only: each refuses the one before
    assert codec.buffered == 1


# --- properties ---------------------------------------------------------------------------


df8_frames = st.builds(
    NoninDf8Frame,
    flags=st.integers(0, 0x7F).map(lambda v: v & DF8_FLAG_BITS),
    hr=st.none() | st.integers(0, 510),
    spo2=st.none() | st.integers(0, 100),
    status2=st.integers(0, 0x7F),
)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_df8_decode_encode_round_trip(data: st.DataObject) -> None:
    sent = data.draw(st.lists(df8_frames, min_size=1, max_size=8))
    wire = b"".join(map(encode_df8, sent))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    codec = NoninDf8Codec()
    got = feed_df8(codec, chunked(wire, cuts))
    assert got == sent and all(f.confirmed for f in got)
    assert codec.counters.bytes_dropped == 0 and codec.buffered == 0


@settings(max_examples=300)
@given(window=st.binary(min_size=4, max_size=4))
def test_df8_every_accepted_window_reencodes_byte_for_byte(window: bytes) -> None:
    frame = decode_df8(window)
    if frame is not None:
        assert encode_df8(frame) == window


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_df8_garbage_between_frames_never_costs_a_frame(data: st.DataObject) -> None:
    # Without a checksum garbage may decode as extra frames, but every sent frame still
    # comes out, in order, and garbage costs exactly its own bytes (dropped, or forged).
    sent = data.draw(st.lists(df8_frames, min_size=1, max_size=5))
    gaps = data.draw(st.lists(st.binary(max_size=40), min_size=len(sent) + 1))
    wire = gaps[0] + b"".join(encode_df8(f) + gap for f, gap in zip(sent, gaps[1:], strict=False))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=6))
    codec = NoninDf8Codec()
    got = feed_df8(codec, chunked(wire, cuts))
    assert is_subsequence(sent, got)
    forged = len(got) - len(sent)
    garbage = len(wire) - DF8_FRAME_LEN * len(sent)
    assert DF8_FRAME_LEN * forged + codec.counters.bytes_dropped + codec.buffered == garbage
    assert_df8_counters_consistent(codec, len(wire))


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_df8_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    codec = NoninDf8Codec()
    for frame in feed_df8(codec, chunks):
        assert decode_df8(encode_df8(frame)) == frame
    assert_df8_counters_consistent(codec, sum(map(len, chunks)))


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=6))
def test_df8_model_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    model = NoninOximeter("ox", NoninSettings(data_format=8))
    model.on_connect(NOW)
    for chunk in chunks:
        for reading in model.feed(chunk, NOW):
            assert not isinstance(reading, Waveform)
    model.on_disconnect(NOW)
    assert model.counters.bytes_received == sum(map(len, chunks))


# --- device model -------------------------------------------------------------------------


def feed_df8_frames(
    model: NoninOximeter, frames: Sequence[NoninDf8Frame], now: float = NOW
) -> list[Reading]:
    return list(model.feed(b"".join(map(encode_df8, frames)), now))


def df8(
    flags: int = 0, hr: int | None = 72, spo2: int | None = 97, status2: int = 0
) -> NoninDf8Frame:
    return NoninDf8Frame(flags=flags, hr=hr, spo2=spo2, status2=status2)


def test_df8_on_connect_sends_set_format_8_only_when_opted_in() -> None:
    assert NoninOximeter("ox1", NoninSettings(data_format=8)).on_connect(NOW) == (b"", [])
    opted = NoninOximeter("ox1", NoninSettings(data_format=8, select_format=True))
    assert opted.on_connect(NOW) == (bytes.fromhex("02 70 04 02 08 21 9F 03"), [])


def test_df8_worked_examples_become_readings() -> None:
    model = connected(8)
    readings = model.feed(DF8_NORMAL, NOW)
    assert of_type(readings, Identity) == [Identity("ox1", NOW, manufacturer="Nonin")]
    n = numerics(readings)
    assert n["MDC_PULS_OXIM_SAT_O2"] == Numeric("ox1", codes.SPO2, 97.0, codes.PERCENT, NOW)
    assert n["MDC_PULS_OXIM_PULS_RATE"] == Numeric(
        "ox1", codes.PULSE_RATE, 72.0, codes.BEATS_PER_MINUTE, NOW
    )
    assert of_type(readings, Waveform) == []  # DF8 carries no pleth
    assert events(readings) == []

    off = model.feed(DF8_SENSOR_OFF, NOW + 1)
    assert of_type(off, Identity) == []  # once per connection
    for numeric in numerics(off).values():
        assert numeric.value is None and numeric.status == MeasurementStatus.UNAVAILABLE
    assert events(off) == [(Condition.SENSOR_OFF, True)]
    [event] = of_type(off, DeviceEvent)
    assert event.detail == "Nonin DF8 STATUS bit 6 (SNSD)"


def test_df8_one_pair_of_numerics_per_frame() -> None:
    model = connected(8)
    readings = feed_df8_frames(model, [df8(hr=70), df8(hr=71), df8(hr=72)])
    rates = [n.value for n in of_type(readings, Numeric) if n.code == codes.PULSE_RATE]
    assert rates == [70.0, 71.0, 72.0]
    assert len(of_type(readings, Numeric)) == 6
    assert model.counters.frames_decoded == 3


@pytest.mark.parametrize(
    ("hr", "spo2"), [(None, 96), (74, None), (None, None)], ids=["hr", "spo2", "both"]
)
def test_df8_missing_sentinels_give_unavailable(hr: int | None, spo2: int | None) -> None:
    n = numerics(feed_df8_frames(connected(8), [df8(hr=hr, spo2=spo2)]))
    for refid, value in (("MDC_PULS_OXIM_PULS_RATE", hr), ("MDC_PULS_OXIM_SAT_O2", spo2)):
        if value is None:
            assert n[refid].value is None
            assert n[refid].status == MeasurementStatus.UNAVAILABLE
        else:
            assert n[refid].value == value and n[refid].status == MeasurementStatus.NONE


@pytest.mark.parametrize(
    ("bit", "condition", "quality", "detail"),
    [
        (Df8Status.SNSD, Condition.SENSOR_OFF, MeasurementStatus.UNAVAILABLE, "bit 6 (SNSD)"),
        (Df8Status.OOT, Condition.OUT_OF_TRACK, MeasurementStatus.QUESTIONABLE, "bit 5 (OOT)"),
        (Df8Status.ARTF, Condition.ARTIFACT, MeasurementStatus.QUESTIONABLE, "bit 2 (ARTF)"),
        (
            Df8Status.LPRF,
            Condition.LOW_PERFUSION,
            MeasurementStatus.LOW_PERFUSION,
            "bit 4 (LPRF)",
        ),
    ],
)
def test_df8_status_conditions_are_edge_triggered(
    bit: Df8Status, condition: Condition, quality: MeasurementStatus, detail: str
) -> None:
    model = connected(8)
    raised = feed_df8_frames(model, [df8(flags=bit)])
    assert events(raised) == [(condition, True)]
    assert of_type(raised, DeviceEvent)[0].detail.endswith(detail)
    assert numerics(raised)["MDC_PULS_OXIM_SAT_O2"].status == quality
    assert events(feed_df8_frames(model, [df8(flags=bit)] * 2)) == []
    assert events(feed_df8_frames(model, [df8()])) == [(condition, False)]
    assert model.active_conditions == frozenset()


def test_df8_marginal_perfusion_is_adequate_like_df2_yellow() -> None:
    model = connected(8)
    readings = feed_df8_frames(model, [df8(flags=Df8Status.MPRF)])
    assert events(readings) == []
    assert numerics(readings)["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.NONE
    # Low then marginal: low perfusion ends.
    feed_df8_frames(model, [df8(flags=Df8Status.LPRF)])
    assert events(feed_df8_frames(model, [df8(flags=Df8Status.MPRF)])) == [
        (Condition.LOW_PERFUSION, False)
    ]


def test_df8_sensor_off_is_not_low_perfusion() -> None:
    model = connected(8)
    feed_df8_frames(model, [df8(flags=Df8Status.LPRF)])
    off = feed_df8_frames(model, [df8(flags=Df8Status.SNSD | Df8Status.LPRF, hr=None, spo2=None)])
    assert events(off) == [(Condition.SENSOR_OFF, True), (Condition.LOW_PERFUSION, False)]


def test_df8_low_battery_is_status2_bit_0_and_nothing_else_is_mapped() -> None:
    model = connected(8)
    raised = feed_df8_frames(model, [df8(status2=Df8Status2.LOW_BATTERY)])
    assert events(raised) == [(Condition.LOW_BATTERY, True)]
    assert of_type(raised, DeviceEvent)[0].detail == "Nonin DF8 STATUS2 bit 0"
    # Bits 1, 2, 3 and 5 are [U] in 4a: none raises anything (bit 3 is not a sensor alarm).
    unverified = feed_df8_frames(model, [df8(status2=0x02 | 0x04 | 0x08 | 0x20)])
    assert events(unverified) == [(Condition.LOW_BATTERY, False)]
    assert numerics(unverified)["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.NONE


def test_df8_unconfirmed_frames_are_questionable_and_change_no_condition() -> None:
    model = connected(8)
    clean = model.feed(DF8_NORMAL, NOW)
    assert numerics(clean)["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.NONE
    # Noise, then a frame claiming the sensor is off (as a forged one may): no event.
    noise = model.feed(b"\x13\x37" + DF8_SENSOR_OFF, NOW + 1)
    assert events(noise) == []
    assert numerics(noise)["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.UNAVAILABLE
    second = model.feed(DF8_NORMAL, NOW + 2)
    assert events(second) == []
    for numeric in numerics(second).values():
        assert numeric.value is not None and numeric.status == MeasurementStatus.QUESTIONABLE
    # Confirmed again: numbers plain, conditions follow the frames.
    third = feed_df8_frames(model, [df8(flags=Df8Status.ARTF)], NOW + 3)
    assert events(third) == [(Condition.ARTIFACT, True)]
    assert numerics(third)["MDC_PULS_OXIM_PULS_RATE"].status == MeasurementStatus.QUESTIONABLE
    assert numerics(model.feed(DF8_NORMAL, NOW + 4))["MDC_PULS_OXIM_PULS_RATE"].status == (
        MeasurementStatus.NONE
    )
    assert model.counters.resyncs == 1 and model.counters.bytes_dropped == 2


def test_df8_disconnect_clears_conditions_and_reconnect_identifies_again() -> None:
    model = connected(8)
    flags = Df8Status.SNSD | Df8Status.OOT | Df8Status.ARTF
    feed_df8_frames(model, [df8(flags=flags, hr=None, spo2=None, status2=1)])
    assert model.active_conditions == {
        Condition.SENSOR_OFF,
        Condition.OUT_OF_TRACK,
        Condition.ARTIFACT,
        Condition.LOW_BATTERY,
    }
    cleared = model.on_disconnect(NOW + 5)
    assert {c for c, active in events(cleared) if not active} == {
        Condition.SENSOR_OFF,
        Condition.OUT_OF_TRACK,
        Condition.ARTIFACT,
        Condition.LOW_BATTERY,
    }
    model.on_connect(NOW + 6)
    assert len(of_type(model.feed(DF8_NORMAL, NOW + 7), Identity)) == 1


def test_df8_registered_model() -> None:
    model = SPEC.make_model("ox9", NoninSettings(data_format=8))
    assert isinstance(model, NoninOximeter)
    model.on_connect(NOW)
    assert len(model.feed(DF8_NORMAL, NOW)) == 3  # identity + two numerics
