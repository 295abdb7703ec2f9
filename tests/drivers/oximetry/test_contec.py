"""Contec CMS50D+/CMS50E legacy live protocol: codec, device model and settings.

Byte-exact vectors come from protocols.md section 4b ("4b. Contec CMS50D+ / CMS50E",
legacy live protocol table and its two "(checked)" examples).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import codes
from drivers.device import DeviceUnavailable, SerialSettings
from drivers.oximetry.contec import (
    MIN_FLAGGED_PACKETS,
    PACKET_LEN,
    PACKET_RATE_HZ,
    PACKETS_PER_WINDOW,
    SPEC,
    WINDOW_PERIOD_S,
    ContecCodec,
    ContecOximeter,
    ContecPacket,
    ContecSettings,
    decode_packet,
    encode_packet,
    judge_pulse_rate,
    judge_spo2,
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
from drivers.serial_device import open_serial
from drivers.simulate.pty import PtyLink

T = TypeVar("T")

NOW = 1_767_225_600.0

# protocols.md 4b, examples "(checked)".
EXAMPLE_1 = bytes.fromhex("E8 32 06 48 61")  # strength 8, beep, pleth 50, bar 6, PR 72, SpO2 97
EXAMPLE_2 = bytes.fromhex("80 00 40 14 62")  # PR = 0x80 | 0x14 = 148, SpO2 98
# protocols.md 4b: invalid readings are PR 0xFF / SpO2 0x7F with byte 1 bit 4 set.
INVALID = bytes.fromhex("90 00 40 7F 7F")
# Garbage with sync bytes that start packets the next sync byte aborts (FF, 81, E8) and
# clear bytes where a sync is due; no five bytes of it frame as a packet. It ends with a
# packet start, which a following sync byte aborts or, at the end, stays buffered.
GARBAGE = bytes.fromhex("00 7F FF 12 81 00 00 E8 32 06")

PACKET_1 = ContecPacket(
    signal_strength=8,
    pleth=50,
    bargraph=6,
    pulse_rate=72,
    spo2=97,
    beat=True,
    spo2_dropping=True,  # 0xE8 has bit 5 set, though 4b's example text does not name it
)


def of_type(readings: Iterable[Reading], kind: type[T]) -> list[T]:
    return [r for r in readings if isinstance(r, kind)]


def feed_all(codec: ContecCodec, chunks: Iterable[bytes]) -> list[ContecPacket]:
    return [p for chunk in chunks for p in codec.feed(chunk)]


#: How a test splits a byte stream into reads: whole, byte by byte, odd-sized pieces.
CHUNK_SIZES = pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytes", "sevens"])


def split(data: bytes, chunk: int | None) -> list[bytes]:
    if chunk is None:
        return [data]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def assert_counters_consistent(codec: ContecCodec, total: int) -> None:
    c = codec.counters
    assert c.bytes_received == total
    assert PACKET_LEN * c.frames_decoded + c.bytes_dropped + codec.buffered == total
    assert codec.buffered < PACKET_LEN
    assert c.checksum_errors == 0  # the protocol has no checksum


# --- byte-exact vectors (protocols.md 4b) -------------------------------------------------


def test_example_1_decodes_to_the_documented_values() -> None:
    packet = decode_packet(EXAMPLE_1)
    assert packet == PACKET_1
    assert packet is not None
    assert (packet.signal_strength, packet.beat, packet.pleth, packet.bargraph) == (8, True, 50, 6)
    assert (packet.pulse_rate, packet.spo2) == (72, 97)
    assert not (packet.finger_out or packet.probe_error or packet.searching)
    assert encode_packet(PACKET_1) == EXAMPLE_1


def test_example_2_pulse_rate_takes_bit_7_from_byte_3() -> None:
    packet = decode_packet(EXAMPLE_2)
    assert packet == ContecPacket(signal_strength=0, pleth=0, bargraph=0, pulse_rate=148, spo2=98)
    assert encode_packet(ContecPacket(0, 0, 0, 148, 98)) == EXAMPLE_2


def test_invalid_reading_vector() -> None:
    packet = ContecPacket(0, 0, 0, pulse_rate=0xFF, spo2=0x7F, finger_out=True)
    assert encode_packet(packet) == INVALID
    assert decode_packet(INVALID) == packet


@pytest.mark.parametrize(
    ("field", "byte", "mask"),
    [
        ("beat", 0, 0x40),
        ("spo2_dropping", 0, 0x20),
        ("finger_out", 0, 0x10),
        ("searching", 2, 0x20),
        ("probe_error", 2, 0x10),
    ],
)
def test_each_flag_is_its_own_bit(field: str, byte: int, mask: int) -> None:
    # protocols.md 4b table: one bit per flag; nothing else moves.
    base = ContecPacket(3, 10, 2, 60, 95)
    flagged = replace(base, **{field: True})
    diff = bytes(a ^ b for a, b in zip(encode_packet(base), encode_packet(flagged), strict=True))
    assert diff == bytes(mask if i == byte else 0 for i in range(PACKET_LEN))


def test_decode_packet_checks_the_framing() -> None:
    assert decode_packet(b"\x00" + EXAMPLE_1, 1) == PACKET_1
    assert decode_packet(EXAMPLE_1[:4]) is None  # too short
    assert decode_packet(bytes.fromhex("68 32 06 48 61")) is None  # no sync bit
    for i in range(1, PACKET_LEN):  # a sync bit where a data byte is due
        damaged = bytearray(EXAMPLE_1)
        damaged[i] |= 0x80
        assert decode_packet(damaged) is None
    assert decode_packet(EXAMPLE_1, 1) is None and decode_packet(EXAMPLE_1, -1) is None


def test_packet_fields_are_range_checked() -> None:
    for field, value in (
        ("signal_strength", 16),
        ("pleth", 128),
        ("bargraph", -1),
        ("pulse_rate", 256),
        ("spo2", 128),
    ):
        change: dict[str, Any] = {field: value}
        with pytest.raises(ValueError, match=field):
            replace(ContecPacket(0, 0, 0, 0, 0), **change)


# --- h11-style feeding --------------------------------------------------------------------

STREAM = EXAMPLE_1 + EXAMPLE_2 + INVALID


@CHUNK_SIZES
def test_every_split_gives_the_same_packets(chunk: int | None) -> None:
    codec = ContecCodec()
    got = feed_all(codec, split(STREAM, chunk))
    assert [encode_packet(p) for p in got] == [EXAMPLE_1, EXAMPLE_2, INVALID]
    assert codec.counters == CodecCounters(bytes_received=15, frames_decoded=3)
    assert_counters_consistent(codec, len(STREAM))


def test_a_packet_is_delivered_as_soon_as_its_fifth_byte_arrives() -> None:
    codec = ContecCodec()
    assert codec.feed(EXAMPLE_1[:4]) == [] and codec.buffered == 4
    assert codec.feed(EXAMPLE_1[4:]) == [PACKET_1] and codec.buffered == 0


@pytest.mark.parametrize("where", ["before", "between", "after", "everywhere"])
@CHUNK_SIZES
def test_garbage_costs_only_itself(where: str, chunk: int | None) -> None:
    g = {w: GARBAGE if where in (w, "everywhere") else b"" for w in ("before", "between", "after")}
    data = g["before"] + EXAMPLE_1 + g["between"] + EXAMPLE_2 + g["after"]
    codec = ContecCodec()
    got = feed_all(codec, split(data, chunk))
    assert [encode_packet(p) for p in got] == [EXAMPLE_1, EXAMPLE_2]
    assert codec.counters.bytes_dropped + codec.buffered == len(data) - 2 * PACKET_LEN
    assert codec.counters.resyncs == (1 if where in ("between", "everywhere") else 0)
    assert_counters_consistent(codec, len(data))


@pytest.mark.parametrize("data_byte", [1, 2, 3, 4])
@CHUNK_SIZES
def test_a_sync_bit_on_a_data_byte_costs_that_packet(data_byte: int, chunk: int | None) -> None:
    bad = bytearray(EXAMPLE_2)
    bad[data_byte] |= 0x80
    codec = ContecCodec()
    got = feed_all(codec, split(EXAMPLE_1 + bytes(bad) + EXAMPLE_1, chunk))
    assert got == [PACKET_1, PACKET_1]
    assert codec.counters.bytes_dropped == PACKET_LEN
    assert codec.counters.resyncs == 1
    assert_counters_consistent(codec, 3 * PACKET_LEN)


@CHUNK_SIZES
def test_a_lost_sync_bit_costs_that_packet(chunk: int | None) -> None:
    bad = bytes((EXAMPLE_2[0] & 0x7F,)) + EXAMPLE_2[1:]
    codec = ContecCodec()
    assert feed_all(codec, split(EXAMPLE_1 + bad + EXAMPLE_1, chunk)) == [PACKET_1, PACKET_1]
    assert (codec.counters.bytes_dropped, codec.counters.resyncs) == (PACKET_LEN, 1)


@pytest.mark.parametrize("lost", [1, 2, 3, 4])
def test_a_lost_data_byte_costs_only_the_truncated_packet(lost: int) -> None:
    truncated = EXAMPLE_2[:lost] + EXAMPLE_2[lost + 1 :]
    codec = ContecCodec()
    assert codec.feed(EXAMPLE_1 + truncated + EXAMPLE_1) == [PACKET_1, PACKET_1]
    assert (codec.counters.bytes_dropped, codec.counters.resyncs) == (PACKET_LEN - 1, 1)


def test_a_low_bit_flip_is_undetectable_by_design() -> None:
    # No checksum: a flipped bit 0-6 frames fine. The model's per-window vote and flag
    # threshold are what keep one such packet out of the readings (tested below).
    flipped = bytearray(EXAMPLE_1)
    flipped[4] ^= 0x01
    [packet] = ContecCodec().feed(bytes(flipped))
    assert packet.spo2 == 96


def test_joining_mid_stream_drops_the_partial_packet_without_a_resync() -> None:
    codec = ContecCodec()
    assert codec.feed((EXAMPLE_1 * 3)[2:]) == [PACKET_1, PACKET_1]
    assert (codec.counters.bytes_dropped, codec.counters.resyncs) == (3, 0)


def test_buffer_stays_bounded() -> None:
    codec = ContecCodec()
    codec.feed(bytes(1 << 16))  # a long run of clear bytes: nothing can start a packet
    assert codec.buffered == 0 and codec.counters.bytes_dropped == 1 << 16
    codec.feed(b"\x80\x01\x02\x03")
    assert codec.buffered == 4
    codec.feed(b"\x81")  # the next sync byte aborts the unfinished packet
    assert codec.buffered == 1


def test_reset_drops_buffered_bytes_but_keeps_counting() -> None:
    codec = ContecCodec()
    codec.feed(EXAMPLE_1 + EXAMPLE_2[:3])
    counters = codec.counters
    codec.reset()
    assert codec.counters is counters and counters.bytes_dropped == 3
    assert codec.feed(EXAMPLE_2[3:]) == []  # the rest of a packet is no packet
    assert codec.feed(EXAMPLE_2) == [decode_packet(EXAMPLE_2)]
    assert counters.resyncs == 0  # hunting after a reset is not a resync
    assert_counters_consistent(codec, 2 * PACKET_LEN + PACKET_LEN)


# --- properties ---------------------------------------------------------------------------

contec_packets = st.builds(
    ContecPacket,
    signal_strength=st.integers(0, 15),
    pleth=st.integers(0, 127),
    bargraph=st.integers(0, 15),
    pulse_rate=st.integers(0, 255),
    spo2=st.integers(0, 127),
    beat=st.booleans(),
    spo2_dropping=st.booleans(),
    finger_out=st.booleans(),
    probe_error=st.booleans(),
    searching=st.booleans(),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_decode_encode_round_trip(data: st.DataObject) -> None:
    sent = data.draw(st.lists(contec_packets, min_size=1, max_size=30))
    wire = b"".join(map(encode_packet, sent))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    codec = ContecCodec()
    assert feed_all(codec, chunked(wire, cuts)) == sent
    assert codec.counters.bytes_dropped == 0 and codec.buffered == 0


@settings(max_examples=200)
@given(
    st.tuples(st.integers(0x80, 0xFF), *[st.integers(0, 0x7F)] * 4).map(bytes),
)
def test_every_framed_packet_round_trips_byte_for_byte(wire: bytes) -> None:
    # Every bit of the 4b table is a field, so packets and framed bytes are one to one.
    packet = decode_packet(wire)
    assert packet is not None and encode_packet(packet) == wire


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_garbage_between_packets_costs_only_itself(data: st.DataObject) -> None:
    sent = data.draw(st.lists(contec_packets, min_size=1, max_size=6))
    gaps = data.draw(st.lists(st.binary(max_size=40), min_size=len(sent) + 1))
    gaps = gaps[: len(sent) + 1]
    wire = gaps[0] + b"".join(encode_packet(p) + gap for p, gap in zip(sent, gaps[1:], strict=True))
    # Garbage may itself frame as packets (there is no checksum); each gap decodes as it
    # would alone, because every real packet's sync byte ends whatever the gap began.
    expected: list[ContecPacket] = []
    garbage_packets = 0
    for i, gap in enumerate(gaps):
        alone = ContecCodec().feed(gap)
        garbage_packets += len(alone)
        expected += alone
        if i < len(sent):
            expected.append(sent[i])
    codec = ContecCodec()
    assert codec.feed(wire) == expected
    garbage = sum(map(len, gaps)) - PACKET_LEN * garbage_packets
    assert codec.counters.bytes_dropped + codec.buffered == garbage
    assert_counters_consistent(codec, len(wire))


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    codec = ContecCodec()
    for p in feed_all(codec, chunks):
        assert decode_packet(encode_packet(p)) == p
    assert_counters_consistent(codec, sum(map(len, chunks)))


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=400), max_size=6))
def test_model_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    model = ContecOximeter("ox", ContecSettings())
    model.on_connect(NOW)
    for chunk in chunks:
        for r in model.feed(chunk, NOW):
            if isinstance(r, Numeric) and r.value is not None:
                assert 1 <= r.value <= 254 and r.status is not MeasurementStatus.UNAVAILABLE
    model.on_disconnect(NOW)
    assert model.counters.bytes_received == sum(map(len, chunks))


def test_random_damage_loses_only_the_damaged_packets() -> None:
    # A long stream with random bit-7 damage: every undamaged packet must come out, and
    # nothing else. Damage is never put in two packets in a row: the tail of one (a sync
    # bit gained late) and the head of the next (its sync bit lost) could frame as a
    # spurious packet, which no checksum could catch; the model's vote is the guard there.
    rng = random.Random(7)
    sent = [ContecPacket(8, i % 128, i % 9, 60 + i % 40, 90 + i % 10) for i in range(600)]
    wire = bytearray()
    intact = []
    damaged_last = False
    for p in sent:
        chunk = bytearray(encode_packet(p))
        damaged_last = not damaged_last and rng.random() < 0.3
        if damaged_last:
            chunk[rng.randrange(PACKET_LEN)] ^= 0x80
        else:
            intact.append(p)
        wire += chunk
    codec = ContecCodec()
    assert codec.feed(bytes(wire)) == intact
    assert codec.counters.bytes_dropped + codec.buffered == PACKET_LEN * (len(sent) - len(intact))


# --- judging values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value", "status"),
    [
        (0x7F, None, MeasurementStatus.UNAVAILABLE),  # the device's "no value"
        (0, None, MeasurementStatus.UNAVAILABLE),
        (101, None, MeasurementStatus.INVALID),
        (126, None, MeasurementStatus.INVALID),
        (1, 1.0, MeasurementStatus.NONE),
        (100, 100.0, MeasurementStatus.NONE),
    ],
)
def test_judge_spo2(raw: int, value: float | None, status: MeasurementStatus) -> None:
    assert judge_spo2(raw) == (value, status)


@pytest.mark.parametrize(
    ("raw", "value", "status"),
    [
        (0xFF, None, MeasurementStatus.UNAVAILABLE),  # the device's "no value"
        (0, None, MeasurementStatus.UNAVAILABLE),
        (1, 1.0, MeasurementStatus.NONE),
        (127, 127.0, MeasurementStatus.NONE),
        (128, 128.0, MeasurementStatus.NONE),  # the first rate that needs bit 7
        (254, 254.0, MeasurementStatus.NONE),
    ],
)
def test_judge_pulse_rate(raw: int, value: float | None, status: MeasurementStatus) -> None:
    assert judge_pulse_rate(raw) == (value, status)


# --- device model -------------------------------------------------------------------------


def connected() -> ContecOximeter:
    model = ContecOximeter("ox1", ContecSettings())
    model.on_connect(NOW)
    return model


def window(packet: ContecPacket | bytes, n: int = PACKETS_PER_WINDOW) -> bytes:
    wire = packet if isinstance(packet, bytes) else encode_packet(packet)
    return wire * n


def feed(model: ContecOximeter, packets: Sequence[ContecPacket], now: float = NOW) -> list[Reading]:
    return list(model.feed(b"".join(map(encode_packet, packets)), now))


def numerics(readings: Iterable[Reading]) -> dict[str, Numeric]:
    return {n.code.refid: n for n in of_type(readings, Numeric)}


def spo2(readings: Iterable[Reading]) -> Numeric:
    return numerics(readings)["MDC_PULS_OXIM_SAT_O2"]


def pulse(readings: Iterable[Reading]) -> Numeric:
    return numerics(readings)["MDC_PULS_OXIM_PULS_RATE"]


def events(readings: Iterable[Reading]) -> list[tuple[Condition, bool]]:
    return [(e.condition, e.active) for e in of_type(readings, DeviceEvent)]


GOOD = ContecPacket(8, 40, 3, 72, 97)


def test_on_connect_writes_nothing_and_publishes_nothing() -> None:
    # Legacy firmware streams by itself; the gateway never writes device settings.
    model = ContecOximeter("ox1", ContecSettings())
    assert model.on_connect(NOW) == (b"", [])


def test_example_1_window_becomes_readings() -> None:
    model = connected()
    readings = model.feed(window(EXAMPLE_1), NOW)
    [identity] = of_type(readings, Identity)
    assert identity == Identity("ox1", NOW, manufacturer="Contec")
    assert spo2(readings) == Numeric("ox1", codes.SPO2, 97.0, codes.PERCENT, NOW)
    assert pulse(readings) == Numeric("ox1", codes.PULSE_RATE, 72.0, codes.BEATS_PER_MINUTE, NOW)
    [wave] = of_type(readings, Waveform)
    assert wave == Waveform(
        source="ox1",
        code=codes.PLETH,
        unit=codes.DIMENSIONLESS,
        sample_rate=60.0,
        start_time=NOW - WINDOW_PERIOD_S,
        samples=np.full(PACKETS_PER_WINDOW, 50.0),
        sequence=0,
        resolution=1.0,
    )
    assert wave.duration == pytest.approx(1 / 3)
    assert events(readings) == []
    assert [type(r) for r in readings] == [Identity, Numeric, Numeric, Waveform]


def test_example_2_window_reads_pulse_148_and_flags_weak_signal() -> None:
    readings = connected().feed(window(EXAMPLE_2), NOW)
    # Signal strength 0 in every packet: the device's only perfusion hint says weak.
    assert pulse(readings).value == 148.0
    assert spo2(readings).value == 98.0
    assert spo2(readings).status == pulse(readings).status == MeasurementStatus.LOW_PERFUSION


def test_numerics_are_decimated_to_three_a_second() -> None:
    model = connected()
    assert model.feed(window(GOOD, PACKETS_PER_WINDOW - 1), NOW) == []  # not a window yet
    assert len(of_type(model.feed(window(GOOD, 1), NOW), Numeric)) == 2
    second = model.feed(window(GOOD, int(PACKET_RATE_HZ)), NOW + 1)
    assert len([n for n in of_type(second, Numeric) if n.code == codes.SPO2]) == 3
    waves = of_type(second, Waveform)
    assert [w.sequence for w in waves] == [20, 40, 60]
    # Windows completed by one read are laid back to back, ending at the read's time.
    assert [w.start_time for w in waves] == pytest.approx(
        [NOW + 1 - 3 * WINDOW_PERIOD_S, NOW + 1 - 2 * WINDOW_PERIOD_S, NOW + 1 - WINDOW_PERIOD_S]
    )
    assert {n.time for n in of_type(second, Numeric)} == {NOW + 1}


def test_identity_once_per_connection_and_a_partial_window_is_dropped_on_reconnect() -> None:
    model = connected()
    first = model.feed(window(GOOD), NOW)
    assert len(of_type(first, Identity)) == 1
    assert of_type(model.feed(window(GOOD), NOW), Identity) == []
    model.feed(window(GOOD, 7), NOW)  # part of a window, then the link drops
    model.on_disconnect(NOW + 1)
    model.on_connect(NOW + 2)
    again = model.feed(window(GOOD), NOW + 3)
    assert len(of_type(again, Identity)) == 1
    assert of_type(again, Waveform)[0].sequence == 0


def test_counters_live_across_connections() -> None:
    model = connected()
    counters = model.counters
    model.feed(window(GOOD), NOW)
    model.on_disconnect(NOW)
    model.on_connect(NOW)
    model.feed(window(GOOD), NOW)
    assert model.counters is counters and counters.frames_decoded == 2 * PACKETS_PER_WINDOW


@pytest.mark.parametrize(
    ("pr", "sp", "pr_value", "sp_value", "pr_status", "sp_status"),
    [
        (0xFF, 97, None, 97.0, MeasurementStatus.UNAVAILABLE, MeasurementStatus.NONE),
        (72, 0x7F, 72.0, None, MeasurementStatus.NONE, MeasurementStatus.UNAVAILABLE),
        (72, 101, 72.0, None, MeasurementStatus.NONE, MeasurementStatus.INVALID),
        (0, 0, None, None, MeasurementStatus.UNAVAILABLE, MeasurementStatus.UNAVAILABLE),
        (254, 100, 254.0, 100.0, MeasurementStatus.NONE, MeasurementStatus.NONE),
        (128, 1, 128.0, 1.0, MeasurementStatus.NONE, MeasurementStatus.NONE),
    ],
)
def test_sentinels_and_edges_reach_the_numerics(
    pr: int,
    sp: int,
    pr_value: float | None,
    sp_value: float | None,
    pr_status: MeasurementStatus,
    sp_status: MeasurementStatus,
) -> None:
    readings = connected().feed(window(ContecPacket(8, 40, 3, pr, sp)), NOW)
    assert (pulse(readings).value, pulse(readings).status) == (pr_value, pr_status)
    assert (spo2(readings).value, spo2(readings).status) == (sp_value, sp_status)


def test_finger_out_raises_sensor_off_and_makes_values_unavailable_even_if_sent() -> None:
    model = connected()
    readings = model.feed(window(replace(GOOD, finger_out=True)), NOW)
    assert events(readings) == [(Condition.SENSOR_OFF, True)]
    for n in numerics(readings).values():
        assert n.value is None and n.status == MeasurementStatus.UNAVAILABLE
    assert of_type(readings, DeviceEvent)[0].detail == "Contec byte 1 bit 4 (finger out)"
    # The documented invalid packet: finger out with both sentinels.
    assert events(model.feed(window(INVALID), NOW)) == []
    assert model.active_conditions == {Condition.SENSOR_OFF}


@pytest.mark.parametrize(
    ("flag", "condition", "quality"),
    [
        ("finger_out", Condition.SENSOR_OFF, MeasurementStatus.UNAVAILABLE),
        ("probe_error", Condition.SENSOR_FAULT, MeasurementStatus.INVALID),
        ("searching", Condition.PULSE_SEARCH, MeasurementStatus.QUESTIONABLE),
    ],
)
def test_status_conditions_are_edge_triggered(
    flag: str, condition: Condition, quality: MeasurementStatus
) -> None:
    model = connected()
    flagged = replace(GOOD, **{flag: True})
    raised = model.feed(window(flagged), NOW)
    assert events(raised) == [(condition, True)]
    assert spo2(raised).status == pulse(raised).status == quality
    if quality is not MeasurementStatus.UNAVAILABLE:
        assert spo2(raised).value == 97.0  # a doubtful value keeps its number, flagged
    assert events(model.feed(window(flagged, 3 * PACKETS_PER_WINDOW), NOW)) == []
    assert events(model.feed(window(GOOD), NOW)) == [(condition, False)]
    assert model.active_conditions == frozenset()


def test_a_status_bit_needs_several_packets_of_a_window() -> None:
    # Line noise can frame as a packet with any bits set: a few packets are not the device.
    model = connected()
    few = [replace(GOOD, finger_out=True)] * (MIN_FLAGGED_PACKETS - 1)
    readings = feed(model, [GOOD] * (PACKETS_PER_WINDOW - len(few)) + few)
    assert events(readings) == [] and spo2(readings).value == 97.0
    enough = [replace(GOOD, searching=True)] * MIN_FLAGGED_PACKETS
    readings = feed(model, enough + [GOOD] * (PACKETS_PER_WINDOW - len(enough)))
    assert events(readings) == [(Condition.PULSE_SEARCH, True)]


def test_numerics_are_the_windows_majority_so_one_bad_packet_cannot_reach_them() -> None:
    model = connected()
    corrupt = replace(GOOD, spo2=42, pulse_rate=200)
    readings = feed(model, [GOOD] * (PACKETS_PER_WINDOW - 1) + [corrupt])
    assert (spo2(readings).value, pulse(readings).value) == (97.0, 72.0)
    # A real change mid-window: equal counts go to the newer value.
    half = PACKETS_PER_WINDOW // 2
    readings = feed(model, [GOOD] * half + [replace(GOOD, spo2=96, pulse_rate=75)] * half)
    assert (spo2(readings).value, pulse(readings).value) == (96.0, 75.0)


@pytest.mark.parametrize(
    ("strengths", "low"),
    [
        ([0] * 20, True),
        ([1] * 20, True),
        ([1] * 19 + [5], False),  # a strong packet in the window: not weak
        ([2] * 20, False),
        ([15] * 20, False),  # 0x0F: no strength reported, no hint
        ([15] * 10 + [1] * 10, True),
    ],
)
def test_signal_strength_is_a_low_perfusion_hint(strengths: list[int], low: bool) -> None:
    readings = feed(connected(), [replace(GOOD, signal_strength=s) for s in strengths])
    expected = MeasurementStatus.LOW_PERFUSION if low else MeasurementStatus.NONE
    assert spo2(readings).status == pulse(readings).status == expected
    assert events(readings) == []  # a hint on the values, not a technical condition


def test_beat_dropping_and_bargraph_bits_change_no_reading() -> None:
    plain = connected().feed(window(GOOD), NOW)
    busy = connected().feed(window(replace(GOOD, beat=True, spo2_dropping=True, bargraph=15)), NOW)
    assert plain == busy


def test_on_disconnect_clears_every_active_condition_once() -> None:
    model = connected()
    model.feed(window(replace(GOOD, finger_out=True, probe_error=True, searching=True)), NOW)
    assert model.active_conditions == {
        Condition.SENSOR_OFF,
        Condition.SENSOR_FAULT,
        Condition.PULSE_SEARCH,
    }
    cleared = model.on_disconnect(NOW + 5)
    assert events(cleared) == [
        (Condition.SENSOR_OFF, False),
        (Condition.SENSOR_FAULT, False),
        (Condition.PULSE_SEARCH, False),
    ]
    assert all(e.time == NOW + 5 and e.source == "ox1" for e in of_type(cleared, DeviceEvent))
    assert model.on_disconnect(NOW + 6) == []
    assert model.active_conditions == frozenset()


def test_reconnect_without_disconnect_still_clears() -> None:
    model = connected()
    model.feed(window(replace(GOOD, probe_error=True)), NOW)
    command, readings = model.on_connect(NOW + 1)
    assert command == b""
    assert events(readings) == [(Condition.SENSOR_FAULT, False)]


def test_noise_between_packets_does_not_disturb_the_readings() -> None:
    model = connected()
    clean = model.feed(window(GOOD), NOW)
    noisy_wire = b"".join(encode_packet(GOOD) + (GARBAGE if i % 4 == 0 else b"") for i in range(20))
    noisy = model.feed(noisy_wire, NOW)
    assert numerics(noisy) == numerics(clean)
    assert np.array_equal(of_type(noisy, Waveform)[0].samples, of_type(clean, Waveform)[0].samples)
    assert model.counters.resyncs == 5


# --- settings and registration ------------------------------------------------------------


def test_settings_defaults_are_the_devices_and_validated() -> None:
    s = ContecSettings()
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits) == (19200, 8, "O", 1)
    assert ContecSettings(baudrate=4800, parity="N").parity == "N"  # the translated sheet's
    with pytest.raises(ValidationError):
        ContecSettings(parity="X")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ContecSettings(xonxoff=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ContecSettings(baudrate="19200")  # type: ignore[arg-type]


def test_open_serial_configures_19200_8o1() -> None:
    transport = open_serial(ContecSettings(port="/dev/ttyUSB0"))
    assert transport.line_settings == "19200 8O1"


async def test_odd_parity_reaches_pyserial(link: PtyLink, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    real = serial.serial_for_url

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(serial, "serial_for_url", recording)
    transport = open_serial(ContecSettings(), link.link_path)
    # A pty cannot do parity: the transport reads the framing back and refuses the port,
    # which is the proof that odd parity was asked of the line (on a real USB-serial
    # adapter the same call succeeds).
    with pytest.raises(DeviceUnavailable, match=r"parity O .*19200 8O1"):
        await transport.open()
    (port,) = made
    assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (19200, 8, "O", 1)
    assert port.xonxoff is False  # see ContecSettings: XON/XOFF would eat data bytes
    assert not port.is_open


def test_spec() -> None:
    assert SPEC.name == "contec-cms50"
    assert SPEC.settings is ContecSettings
    model = SPEC.make_model("ox9", ContecSettings())
    assert isinstance(model, ContecOximeter) and model.device_id == "ox9"
    assert SPEC.scenarios == ("normal", "desaturation", "probe_off", "noise", "unplug")
    with pytest.raises(TypeError, match="ContecSettings"):
        SPEC.make_model("ox9", SerialSettings())
