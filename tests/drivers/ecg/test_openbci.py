"""OpenBCI Cyton codec and ECG device model.

Byte-exact vectors come from protocols.md section 5a ("5a. OpenBCI Cyton"): the worked
example packet, the scale (4.5 V / gain / (2^23 - 1)) and the footer resync rule. Lead codes
are from section 7.2.
"""

from __future__ import annotations

import itertools
import random
import tomllib
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import codes, registry
from drivers.device import SerialSettings
from drivers.ecg.openbci import (
    CHANNELS,
    COUNT_MAX,
    COUNT_MIN,
    MAX_TIMING_ERROR_S,
    PACKET_LEN,
    SAMPLES_LOST_CLEAR_S,
    SPEC,
    START_STREAMING,
    CytonCodec,
    CytonEcg,
    CytonPacket,
    OpenBCISettings,
    counts_of,
    encode_packet,
    millivolts_per_count,
)
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    Reading,
    Waveform,
)

T = TypeVar("T")

NOW = 1_767_225_600.0
RATE = 250.0

# protocols.md 5a, worked example (checked): sample 5; ch1 = 1, ch2 = -1, ch3 = 8 388 607,
# ch4 = -8 388 608, ch8 = 65 536 counts = 1464.844 uV at gain 24; accel zero.
VECTOR = bytes.fromhex(
    "A0 05 000001 FFFFFF 7FFFFF 800000 000000 000000 000000 010000 000000000000 C0"
)
VECTOR_CHANNELS = (1, -1, 8_388_607, -8_388_608, 0, 0, 0, 65_536)
# Garbage with stray headers: none of its 0xA0 bytes has a footer 32 bytes on, wherever it
# sits next to VECTOR-like packets (checked by the tests that use it).
GARBAGE = bytes.fromhex("A0 06 C0 A0 FF 00 A0 C5 A0 00 11 22 33 CF A0")


def packet(
    number: int, channels: Sequence[int] = VECTOR_CHANNELS, footer: int = 0xC0
) -> CytonPacket:
    return CytonPacket.build(number % 256, channels, bytes(6), footer)


def stream(first: int, n: int, channels: Sequence[int] = VECTOR_CHANNELS) -> list[CytonPacket]:
    """``n`` consecutively numbered packets starting at sample number ``first``."""
    return [packet(first + i, channels) for i in range(n)]


def wire(packets_: Iterable[CytonPacket]) -> bytes:
    return b"".join(encode_packet(p) for p in packets_)


def feed_all(codec: CytonCodec, chunks: Iterable[bytes]) -> list[CytonPacket]:
    return [p for chunk in chunks for p in codec.feed(chunk)]


#: How a test splits a byte stream into reads: whole, byte by byte, odd-sized pieces.
CHUNK_SIZES = pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytes", "sevens"])


def split(data: bytes, chunk: int | None) -> list[bytes]:
    if chunk is None:
        return [data]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def assert_counters_consistent(codec: CytonCodec, total: int) -> None:
    c = codec.counters
    assert c.bytes_received == total
    assert PACKET_LEN * c.frames_decoded + c.bytes_dropped + codec.buffered == total
    assert codec.buffered <= PACKET_LEN
    assert c.checksum_errors == 0


def of_type(readings: Iterable[Reading], kind: type[T]) -> list[T]:
    return [r for r in readings if isinstance(r, kind)]


# --- byte-exact vectors (protocols.md 5a) -------------------------------------------------


def test_worked_example_decodes_to_the_documented_values() -> None:
    codec = CytonCodec()
    [p] = codec.feed(VECTOR)
    assert p.sample_number == 5
    assert p.channels == VECTOR_CHANNELS
    assert p.footer == 0xC0 and p.accel == (0, 0, 0)
    assert codec.counters == CodecCounters(bytes_received=PACKET_LEN, frames_decoded=1)


def test_worked_example_reencodes_byte_for_byte() -> None:
    [p] = CytonCodec().feed(VECTOR)
    assert encode_packet(p) == VECTOR
    assert packet(5) == p
    assert encode_packet(packet(5)) == VECTOR


def test_worked_example_scale_at_gain_24() -> None:
    # 5a: 0.02235 uV per count at the default gain; ch8 = 65 536 counts = 1464.844 uV.
    assert millivolts_per_count(24) * 1000 == pytest.approx(0.02235, abs=5e-6)
    assert 65_536 * millivolts_per_count(24) * 1000 == pytest.approx(1464.844, abs=5e-4)
    assert millivolts_per_count(24) == 4.5 / 24 / (2**23 - 1) * 1000
    with pytest.raises(ValueError, match="gain"):
        millivolts_per_count(3)


def test_worked_example_becomes_millivolts() -> None:
    settings = OpenBCISettings(leads={1: "I", 4: "III", 8: "II"}, chunk_samples=1)
    model = CytonEcg("ecg1", settings)
    model.on_connect(NOW)
    waves = {w.code.refid: w for w in of_type(model.feed(VECTOR, NOW), Waveform)}
    lsb = 4.5 / 24 / (2**23 - 1) * 1000
    assert waves["MDC_ECG_ELEC_POTL_II"].samples[0] == pytest.approx(1.464844, abs=5e-7)
    assert waves["MDC_ECG_ELEC_POTL_I"].samples[0] == pytest.approx(lsb)
    assert waves["MDC_ECG_ELEC_POTL_III"].samples[0] == pytest.approx(-8_388_608 * lsb)
    assert waves["MDC_ECG_ELEC_POTL_III"].samples[0] == pytest.approx(-187.5, rel=1e-6)
    for w in waves.values():
        assert w.unit == codes.MILLIVOLT and w.resolution == lsb
        assert w.samples.dtype == np.float64


def test_accel_aux_bytes() -> None:
    p = CytonPacket.build(9, [0] * CHANNELS, bytes.fromhex("0001 FFFF 1F40"), 0xC0)
    assert p.accel == (1, -1, 8000)
    assert CytonPacket.build(9, [0] * CHANNELS, bytes(6), 0xC1).accel is None


def test_counts_of_decodes_many_packets_at_once() -> None:
    ps = [packet(i, [COUNT_MIN + i, COUNT_MAX - i, -i, i, 0, 1, -1, 0x123456]) for i in range(5)]
    counts = counts_of(b"".join(p.raw_channels for p in ps))
    assert counts.shape == (5, CHANNELS) and counts.dtype == np.int32
    assert [tuple(row) for row in counts.tolist()] == [p.channels for p in ps]


def test_packet_invariants_are_enforced() -> None:
    with pytest.raises(ValueError, match="8 channels"):
        CytonPacket.build(0, [0] * 7)
    with pytest.raises(ValueError, match="channel count"):
        CytonPacket.build(0, [COUNT_MAX + 1] + [0] * 7)
    with pytest.raises(ValueError, match="sample number"):
        CytonPacket.build(256, [0] * 8)
    with pytest.raises(ValueError, match="footer"):
        CytonPacket.build(0, [0] * 8, footer=0xB0)
    with pytest.raises(ValueError, match="aux"):
        CytonPacket.build(0, [0] * 8, aux=b"\x00")
    with pytest.raises(ValueError, match="raw_channels"):
        CytonPacket(0, b"\x00" * 23)


# --- feeding and resynchronisation ----------------------------------------------------------


@CHUNK_SIZES
def test_every_split_gives_the_same_packets(chunk: int | None) -> None:
    data = wire(stream(250, 10))  # wraps 255 -> 0
    codec = CytonCodec()
    assert feed_all(codec, split(data, chunk)) == stream(250, 10)
    assert codec.counters.bytes_dropped == 0 and codec.counters.resyncs == 0
    assert_counters_consistent(codec, len(data))


@pytest.mark.parametrize("where", ["before", "between", "after", "everywhere"])
@CHUNK_SIZES
def test_garbage_with_stray_headers_costs_only_itself(where: str, chunk: int | None) -> None:
    g = {w: GARBAGE if where in (w, "everywhere") else b"" for w in ("before", "between", "after")}
    sent = stream(5, 4)
    data = g["before"] + wire(sent[:2]) + g["between"] + wire(sent[2:]) + g["after"]
    codec = CytonCodec()
    assert feed_all(codec, split(data, chunk)) == sent
    assert codec.counters.bytes_dropped + codec.buffered == len(data) - 4 * PACKET_LEN
    assert codec.counters.resyncs == (1 if where in ("between", "everywhere") else 0)
    assert_counters_consistent(codec, len(data))


@CHUNK_SIZES
def test_a_stray_header_with_a_footer_32_bytes_on_is_not_taken(chunk: int | None) -> None:
    # The stray 0xA0 sits 8 bytes before the next packet, so byte 33 from it is byte 25 of
    # that packet: the middle byte of channel 8, here 0xC3, a footer look-alike. The stray's
    # "sample number" 0x42 does not follow 5 and no header follows its "footer": refused.
    channels = [0, 0, 0, 0, 0, 0, 0, 0x00C300]
    sent = [packet(5, channels), packet(6, channels), packet(7, channels)]
    stray = bytes.fromhex("A0 42 00 00 00 00 00 00")
    data = encode_packet(sent[0]) + stray + wire(sent[1:])
    assert data[PACKET_LEN + 32] == 0xC3
    codec = CytonCodec()
    assert feed_all(codec, split(data, chunk)) == sent
    assert codec.counters.bytes_dropped == len(stray)


def test_a_stray_that_looks_like_the_next_packet_costs_that_packet_only() -> None:
    # Same, but the stray carries the expected sample number 6: it passes for the packet
    # itself (the limit the codec documents); the real packet 6 is lost, 7 decodes.
    channels = [0, 0, 0, 0, 0, 0, 0, 0x00C300]
    sent = [packet(5, channels), packet(6, channels), packet(7, channels)]
    stray = bytes.fromhex("A0 06 00 00 00 00 00 00")
    got = CytonCodec().feed(encode_packet(sent[0]) + stray + wire(sent[1:]))
    assert [p.sample_number for p in got] == [5, 6, 7]
    assert got[1] != sent[1] and got[2] == sent[2]


@CHUNK_SIZES
def test_bad_footer_loses_that_packet_and_the_next_resyncs(chunk: int | None) -> None:
    sent = stream(10, 4)
    data = bytearray(wire(sent))
    data[2 * PACKET_LEN - 1] = 0x00  # footer of packet 11
    codec = CytonCodec()
    got = feed_all(codec, split(bytes(data), chunk))
    assert got == [sent[0], sent[2], sent[3]]
    assert codec.counters.bytes_dropped == PACKET_LEN and codec.counters.resyncs == 1
    assert_counters_consistent(codec, len(data))


@CHUNK_SIZES
def test_a_byte_lost_inside_a_packet_costs_that_packet(chunk: int | None) -> None:
    sent = stream(10, 4)
    data = bytearray(wire(sent))
    del data[PACKET_LEN + 10]  # a UART overrun eats one byte of packet 11
    codec = CytonCodec()
    assert feed_all(codec, split(bytes(data), chunk)) == [sent[0], sent[2], sent[3]]
    assert codec.counters.bytes_dropped == PACKET_LEN - 1


def test_after_a_gap_in_numbering_the_next_header_confirms_the_packet() -> None:
    # After garbage, packet 20 does not follow 10: it is held until the byte after its
    # footer shows the next packet's header.
    codec = CytonCodec()
    assert codec.feed(encode_packet(packet(10)) + GARBAGE) == [packet(10)]
    assert codec.feed(encode_packet(packet(20))) == []
    assert codec.buffered == PACKET_LEN
    assert codec.feed(encode_packet(packet(21))[:1]) == [packet(20)]
    assert codec.feed(encode_packet(packet(21))[1:]) == [packet(21)]
    # Alone between garbage, such a packet cannot be told from garbage and is dropped.
    codec = CytonCodec()
    data = encode_packet(packet(10)) + GARBAGE + encode_packet(packet(20)) + b"\x00" + GARBAGE
    assert codec.feed(data) == [packet(10)]


def test_joining_mid_stream_drops_the_partial_packet_without_a_resync() -> None:
    data = wire(stream(0, 3))
    codec = CytonCodec()
    assert codec.feed(data[12:]) == stream(1, 2)
    assert codec.counters.resyncs == 0
    assert codec.counters.bytes_dropped == PACKET_LEN - 12


def test_reset_drops_buffered_bytes_but_keeps_counting() -> None:
    codec = CytonCodec()
    codec.feed(VECTOR[:20])
    assert codec.buffered == 20
    counters = codec.counters
    codec.reset()
    assert codec.counters is counters and counters.bytes_dropped == 20
    assert codec.feed(VECTOR[20:]) == []
    assert codec.feed(VECTOR) == [packet(5)]
    assert_counters_consistent(codec, 2 * PACKET_LEN)


def test_noisy_capture_decodes_every_intact_packet() -> None:
    # A long stream with random damage: headers and footers destroyed, garbage (ending in a
    # stray header) spliced after packets. Every undamaged packet must come out, except
    # the one case the codec documents: after a lost packet, a packet followed by garbage
    # cannot be told from garbage.
    rng = random.Random(7)
    sent = [packet(i, [rng.randint(-5000, 5000) for _ in range(CHANNELS)]) for i in range(600)]
    data = bytearray()
    intact: list[bool] = []
    header_ok: list[bool] = []
    garbage_after: list[bool] = []
    for p in sent:
        chunk = bytearray(encode_packet(p))
        roll = rng.random()
        if roll < 0.1:
            chunk[0] = rng.choice((0x00, 0xA1, 0x20))
        elif roll < 0.2:
            chunk[PACKET_LEN - 1] = rng.choice((0x00, 0xB0, 0xD0))
        intact.append(roll >= 0.2)
        header_ok.append(roll >= 0.1)
        garbage_after.append(rng.random() < 0.1)
        if garbage_after[-1]:
            chunk += rng.randbytes(rng.randint(1, 40)) + b"\xa0"
        data += chunk
    expected: list[CytonPacket] = []
    decoded = False
    for i, p in enumerate(sent):
        header_follows = not garbage_after[i] and i + 1 < len(sent) and header_ok[i + 1]
        decoded = intact[i] and (i == 0 or decoded or header_follows)
        if decoded:
            expected.append(p)
    codec = CytonCodec()
    assert len(expected) >= 0.9 * sum(intact)
    assert feed_all(codec, split(bytes(data), 61)) == expected
    assert_counters_consistent(codec, len(data))


# --- properties -----------------------------------------------------------------------------

channel_counts = st.lists(st.integers(COUNT_MIN, COUNT_MAX), min_size=CHANNELS, max_size=CHANNELS)


@st.composite
def packets(draw: st.DrawFn, number: int | None = None) -> CytonPacket:
    """Any packet the wire can carry; ``number`` fixes the sample number."""
    return CytonPacket.build(
        draw(st.integers(0, 255)) if number is None else number % 256,
        draw(channel_counts),
        draw(st.binary(min_size=6, max_size=6)),
        draw(st.integers(0xC0, 0xCF)),
    )


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_decode_encode_round_trip(data: st.DataObject) -> None:
    first = data.draw(st.integers(0, 255))
    sent = [data.draw(packets(first + i)) for i in range(data.draw(st.integers(1, 6)))]
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    codec = CytonCodec()
    assert feed_all(codec, chunked(wire(sent), cuts)) == sent
    assert codec.counters.bytes_dropped == 0


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip_with_any_numbering_once_the_next_header_shows(data: st.DataObject) -> None:
    # Jumps in numbering (lost packets) make a packet wait for the next one's header byte.
    sent = data.draw(st.lists(packets(), min_size=1, max_size=6))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    codec = CytonCodec()
    assert feed_all(codec, chunked(wire(sent) + b"\xa0", cuts)) == sent
    assert codec.counters.bytes_dropped == 0 and codec.buffered == 1


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_garbage_without_headers_costs_exactly_itself(data: st.DataObject) -> None:
    # Nothing can start inside garbage free of 0xA0.
    first = data.draw(st.integers(0, 255))
    sent = [data.draw(packets(first + i)) for i in range(data.draw(st.integers(1, 4)))]
    no_header = st.binary(max_size=70).map(lambda b: b.replace(b"\xa0", b"\x00"))
    gaps = data.draw(st.lists(no_header, min_size=len(sent) + 1, max_size=len(sent) + 1))
    stream_ = gaps[0] + b"".join(encode_packet(p) + g for p, g in zip(sent, gaps[1:], strict=True))
    codec = CytonCodec()
    assert codec.feed(stream_) == sent
    assert codec.counters.bytes_dropped + codec.buffered == len(stream_) - len(sent) * PACKET_LEN


def _looks_like_a_start(data: bytes, at: int, expected: int | None) -> bool:
    """What the codec documents it cannot refuse while hunting: an 0xA0 with a footer 32
    bytes on, and the expected sample number or a header right after (or nothing to
    compare with)."""
    if at + PACKET_LEN > len(data) or not 0xC0 <= data[at + PACKET_LEN - 1] <= 0xCF:
        return False
    if expected is None or data[at + 1] == expected:
        return True
    return at + PACKET_LEN < len(data) and data[at + PACKET_LEN] == 0xA0


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_arbitrary_garbage_between_packets_costs_only_itself(data: st.DataObject) -> None:
    first = data.draw(st.integers(0, 255))
    n = data.draw(st.integers(1, 4))
    sent = [data.draw(packets(first + i)) for i in range(n)]
    # Every run of garbage holds at least one stray header.
    gaps = [data.draw(st.binary(max_size=60).map(lambda b: b"\xa0" + b)) for _ in range(n + 1)]
    # Skip the draws where garbage forms a packet start the codec documents it cannot tell
    # from a real one (hypothesis finds them: it favours zeros, and 0xC0 is a footer).
    for i, gap in enumerate(gaps):
        after = encode_packet(sent[i]) + gaps[i + 1][:1] if i < n else b""
        expected = None if i == 0 else (sent[i - 1].sample_number + 1) % 256
        assume(not any(_looks_like_a_start(gap + after, j, expected) for j in range(len(gap))))
    stream_ = gaps[0] + b"".join(encode_packet(p) + g for p, g in zip(sent, gaps[1:], strict=True))
    codec = CytonCodec()
    assert codec.feed(stream_) == sent
    assert codec.counters.bytes_dropped + codec.buffered == len(stream_) - n * PACKET_LEN


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    codec = CytonCodec()
    for p in feed_all(codec, chunks):
        assert isinstance(p, CytonPacket)
    assert_counters_consistent(codec, sum(map(len, chunks)))


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=6))
def test_model_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    model = CytonEcg("ecg", OpenBCISettings(leads={1: "I", 2: "II", 3: "III"}, chunk_samples=3))
    model.on_connect(NOW)
    for i, chunk in enumerate(chunks):
        model.feed(chunk, NOW + i * 0.05)
    model.on_disconnect(NOW + 1)
    assert model.counters.bytes_received == sum(map(len, chunks))


# --- device model: commands, chunks, leads ---------------------------------------------------


def connected(**kwargs: Any) -> CytonEcg:
    model = CytonEcg("ecg1", OpenBCISettings(**kwargs))
    assert model.on_connect(NOW) == (START_STREAMING, [])
    return model


def waves(readings: Iterable[Reading], refid: str = "MDC_ECG_ELEC_POTL_II") -> list[Waveform]:
    return [w for w in of_type(readings, Waveform) if w.code.refid == refid]


def events(readings: Iterable[Reading]) -> list[tuple[Condition, bool]]:
    return [(e.condition, e.active) for e in of_type(readings, DeviceEvent)]


def ramp(first: int, n: int, number0: int | None = None) -> list[CytonPacket]:
    """``n`` packets whose channel 2 counts the sample index (``first``...); numbered from
    ``number0`` (default: ``first``)."""
    n0 = first if number0 is None else number0
    return [packet(n0 + i, [0, first + i, 0, 0, 0, 0, 0, 0]) for i in range(n)]


def test_on_connect_sends_only_the_start_command() -> None:
    # b starts streaming and changes nothing; v (soft reset) would reset channel settings.
    model = CytonEcg("ecg1", OpenBCISettings())
    command, readings = model.on_connect(NOW)
    assert command == b"b" and readings == []


def test_identity_once_per_connection() -> None:
    model = connected()
    first = model.feed(VECTOR, NOW)
    assert of_type(first, Identity) == [
        Identity("ecg1", NOW, manufacturer="OpenBCI", model="Cyton")
    ]
    assert of_type(model.feed(encode_packet(packet(6)), NOW), Identity) == []
    model.on_disconnect(NOW + 1)
    model.on_connect(NOW + 2)
    assert len(of_type(model.feed(VECTOR, NOW + 3), Identity)) == 1


def test_chunks_of_25_samples_with_exact_contiguous_timing() -> None:
    model = connected()
    readings: list[Reading] = []
    # 100 samples in reads of 4 packets arriving every 16 ms.
    for k in range(25):
        readings += model.feed(wire(ramp(4 * k, 4)), NOW + (4 * k + 4) / RATE)
    got = waves(readings)
    assert [w.sequence for w in got] == [0, 25, 50, 75]
    assert all(len(w.samples) == 25 and w.sample_rate == RATE for w in got)
    assert [w.start_time for w in got] == pytest.approx(
        [NOW + s / RATE for s in (0, 25, 50, 75)], abs=1e-6
    )
    counts = np.rint(np.concatenate([w.samples for w in got]) / model.resolution)
    assert np.array_equal(counts, np.arange(100))
    assert waves(readings, "MDC_ECG_ELEC_POTL_I") == []  # only configured leads


def test_several_packets_in_one_read_are_laid_back_to_back() -> None:
    model = connected(chunk_samples=5)
    got = waves(model.feed(wire(ramp(0, 10)), NOW))
    assert [w.start_time for w in got] == pytest.approx([NOW - 10 / RATE, NOW - 5 / RATE])


@pytest.mark.parametrize("gain", [1, 2, 4, 6, 8, 12, 24])
def test_scaling_per_gain_is_exact_in_counts(gain: int) -> None:
    model = connected(gain=gain, chunk_samples=4)
    values = [COUNT_MIN, -1, 1, COUNT_MAX]
    ps = [packet(i, [0, v, 0, 0, 0, 0, 0, 0]) for i, v in enumerate(values)]
    [w] = waves(model.feed(wire(ps), NOW))
    lsb = 4.5 / gain / (2**23 - 1) * 1000
    assert w.resolution == lsb == model.resolution
    assert w.samples.tolist() == pytest.approx([v * lsb for v in values], rel=1e-12)
    counts = np.rint(w.samples / w.resolution)
    assert counts.tolist() == values
    assert np.max(np.abs(counts * w.resolution - w.samples)) <= lsb * 1e-9
    assert w.samples[-1] == pytest.approx(4500.0 / gain, rel=1e-9)  # full scale, mV


def test_leads_map_channels_to_their_codes() -> None:
    model = connected(leads={3: "I", 1: "II", 6: "III"}, chunk_samples=1)
    readings = model.feed(encode_packet(packet(0, [11, 22, 33, 44, 55, 66, 77, 88])), NOW)
    got = {w.code.cf_code: round(w.samples[0] / w.resolution) for w in of_type(readings, Waveform)}
    assert got == {131329: 33, 131330: 11, 131389: 66}
    assert codes.BY_REFID["MDC_ECG_ELEC_POTL_I"] is codes.ECG_LEAD_I
    assert codes.BY_REFID["MDC_ECG_ELEC_POTL_III"] is codes.ECG_LEAD_III


# --- gaps -----------------------------------------------------------------------------------


def test_gap_advances_the_sequence_and_raises_samples_lost() -> None:
    model = connected()
    before = model.feed(wire(ramp(0, 30)), NOW + 30 / RATE)
    assert [w.sequence for w in waves(before)] == [0]
    # Packets 30..34 are lost: 35.. arrive when they would have.
    after = model.feed(wire(ramp(35, 25)), NOW + 60 / RATE)
    got = waves(after)
    assert [(w.sequence, len(w.samples)) for w in got] == [(25, 5), (35, 25)]
    assert np.array_equal(np.rint(got[1].samples / got[1].resolution), np.arange(35, 60))
    assert got[1].start_time == pytest.approx(NOW + 35 / RATE, abs=1e-6)
    [raised] = of_type(after, DeviceEvent)
    assert (raised.condition, raised.active) == (Condition.SAMPLES_LOST, True)
    assert raised.detail == "5 samples lost (sample number 35 after 29)"
    assert raised.time == NOW + 60 / RATE
    assert model.samples_lost == 5
    assert model.active_conditions == {Condition.SAMPLES_LOST}


def test_samples_lost_clears_after_a_run_without_gaps_and_sums_up() -> None:
    model = connected()
    model.feed(wire(ramp(0, 10)), NOW + 10 / RATE)
    model.feed(wire(ramp(12, 10)), NOW + 22 / RATE)  # 2 lost: raised
    assert events(model.feed(wire(ramp(25, 10)), NOW + 35 / RATE)) == []  # 3 more, silent
    clear_after = round(SAMPLES_LOST_CLEAR_S * RATE)
    index, readings = 35, list[Reading]()
    while index < 25 + clear_after + 10:
        readings += model.feed(wire(ramp(index, 10)), NOW + (index + 10) / RATE)
        index += 10
    [cleared] = of_type(readings, DeviceEvent)
    assert (cleared.condition, cleared.active) == (Condition.SAMPLES_LOST, False)
    assert cleared.detail == "no samples lost for 5 s; 5 lost in 2 gap(s) while raised"
    assert model.samples_lost == 5 and model.active_conditions == frozenset()


def test_sample_numbers_wrap_without_a_gap() -> None:
    model = connected(chunk_samples=10)
    readings = model.feed(wire(ramp(0, 20, number0=250)), NOW)
    assert events(readings) == [] and model.samples_lost == 0
    assert [w.sequence for w in waves(readings)] == [0, 10]


@pytest.mark.parametrize("lost", [255, 256, 300, 600])
def test_gaps_of_a_wrap_or_more_are_counted_from_arrival_times(lost: int) -> None:
    model = connected(chunk_samples=10)
    model.feed(wire(ramp(0, 20)), NOW + 20 / RATE)
    after = model.feed(wire(ramp(20 + lost, 10)), NOW + (30 + lost) / RATE)
    assert model.samples_lost == lost
    assert [w.sequence for w in waves(after)] == [20 + lost]


def test_gap_inference_tolerates_late_arrival() -> None:
    # 10 lost, but the read after the gap comes 0.5 s late: still 10, not 266.
    model = connected(chunk_samples=10)
    model.feed(wire(ramp(0, 20)), NOW + 20 / RATE)
    model.feed(wire(ramp(30, 10)), NOW + 40 / RATE + 0.5)
    assert model.samples_lost == 10


# --- timing -----------------------------------------------------------------------------------


def play(
    model: CytonEcg,
    seconds: float,
    *,
    rate_error: float = 0.0,
    latency: tuple[float, float] = (0.002, 0.03),
    seed: int = 1,
) -> list[tuple[float, Waveform]]:
    """Stream ``seconds`` of samples in reads of 1..12 packets with random latency; the
    board's clock runs ``rate_error`` fast. Returns (true time of each chunk's first
    sample, chunk) for lead II."""
    rng = random.Random(seed)
    true_period = 1.0 / (RATE * (1.0 + rate_error))
    total = round(seconds * RATE)
    index = 0
    out: list[tuple[float, Waveform]] = []
    while index < total:
        n = rng.randint(1, 12)
        now = NOW + (index + n) * true_period + rng.uniform(*latency)
        for w in waves(model.feed(wire(ramp(index, n)), now)):
            out.append((NOW + w.sequence * true_period, w))
        index += n
    return out


def test_arrival_jitter_never_moves_the_timeline() -> None:
    model = connected()
    got = play(model, 60)
    assert model.reanchors == 0
    first = got[0][1].start_time
    for _, w in got:
        assert w.start_time == pytest.approx(first + w.sequence / RATE, abs=1e-6)
    assert abs(first - NOW) <= 0.03  # anchored by the first arrival
    for (_, a), (_, b) in itertools.pairwise(got):
        assert b.start_time == pytest.approx(a.start_time + a.duration, abs=1e-6)


@pytest.mark.parametrize("rate_error", [0.005, -0.005, 0.02])
def test_board_clock_drift_is_reanchored_within_bounds(rate_error: float) -> None:
    model = connected()
    got = play(model, 120, rate_error=rate_error)
    assert model.reanchors >= 1
    for true_time, w in got:
        # Never further from the truth than the tolerance, plus jitter and a window's drift.
        assert abs(w.start_time - true_time) <= MAX_TIMING_ERROR_S + 0.03 + 2.0 * abs(rate_error)
    # Between re-anchorings chunks still join exactly.
    joins = [
        b.start_time - (a.start_time + a.duration) for (_, a), (_, b) in itertools.pairwise(got)
    ]
    assert sum(1 for j in joins if abs(j) > 1e-6) <= model.reanchors


def test_a_late_first_read_is_corrected_by_the_next_prompt_one() -> None:
    model = connected(chunk_samples=10)
    # 100 samples buffered before the first read: they arrive 0.4 s after the last was taken.
    first = waves(model.feed(wire(ramp(0, 100)), NOW + 100 / RATE + 0.4))
    assert first[0].start_time == pytest.approx(NOW + 0.4, abs=1e-6)
    later = waves(model.feed(wire(ramp(100, 10)), NOW + 110 / RATE + 0.002))
    assert model.reanchors == 1
    assert later[0].start_time == pytest.approx(NOW + 100 / RATE + 0.002, abs=1e-6)


# --- lead off, disconnect ---------------------------------------------------------------------


def test_a_railed_lead_raises_lead_off_until_it_comes_back() -> None:
    model = connected(leads={1: "I", 2: "II"})
    railed = [packet(i, [100, COUNT_MAX, 0, 0, 0, 0, 0, 0]) for i in range(25)]
    raised = model.feed(wire(railed), NOW)
    [event] = of_type(raised, DeviceEvent)
    assert (event.condition, event.active) == (Condition.LEAD_OFF, True)
    assert event.detail == "railed: lead II (channel 2)"
    negative = [packet(25 + i, [COUNT_MIN, COUNT_MIN + 5, 0, 0, 0, 0, 0, 0]) for i in range(25)]
    assert events(model.feed(wire(negative), NOW + 0.1)) == []  # still off (now both)
    cleared = model.feed(wire(stream(50, 25)), NOW + 0.2)
    assert events(cleared) == [(Condition.LEAD_OFF, False)]
    assert len(waves(raised)) == 1  # railed samples are still published


def test_a_single_excursion_to_full_scale_is_not_lead_off() -> None:
    model = connected()
    ps = [packet(i, [0, COUNT_MAX if i % 2 else 1000, 0, 0, 0, 0, 0, 0]) for i in range(25)]
    assert events(model.feed(wire(ps), NOW)) == []


def test_disconnect_publishes_pending_samples_and_clears_conditions() -> None:
    model = connected()
    model.feed(wire(ramp(0, 10)), NOW + 10 / RATE)
    model.feed(wire(ramp(20, 10)), NOW + 30 / RATE)  # a gap: SAMPLES_LOST raised
    readings = list(model.on_disconnect(NOW + 1))
    [tail] = waves(readings)
    assert (tail.sequence, len(tail.samples)) == (20, 10)
    assert events(readings) == [(Condition.SAMPLES_LOST, False)]
    assert model.on_disconnect(NOW + 2) == []


def test_reconnect_restarts_the_sequence_and_keeps_the_counters() -> None:
    model = connected(chunk_samples=10)
    counters = model.counters
    model.feed(wire(ramp(0, 10)), NOW + 10 / RATE)
    model.feed(wire(ramp(15, 2)), NOW + 17 / RATE)
    _, leftovers = model.on_connect(NOW + 5)  # no on_disconnect: still cleaned up
    assert [(w.sequence, len(w.samples)) for w in waves(leftovers)] == [(15, 2)]
    assert events(leftovers) == [(Condition.SAMPLES_LOST, False)]
    again = waves(model.feed(wire(ramp(100, 10, number0=0)), NOW + 6))
    assert [w.sequence for w in again] == [0]
    assert model.counters is counters and counters.frames_decoded == 22
    assert model.samples_lost == 5


# --- settings and registration ----------------------------------------------------------------


def test_settings_defaults() -> None:
    s = OpenBCISettings()
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits) == (115200, 8, "N", 1)
    assert (s.gain, s.sample_rate, s.leads, s.chunk_samples) == (24, 250, {2: "II"}, 25)


def test_leads_from_a_toml_table() -> None:
    raw = tomllib.loads('leads = { 1 = "I", 2 = "II", 3 = "III" }\ngain = 12\n')
    s = OpenBCISettings.model_validate(raw)
    assert s.leads == {1: "I", 2: "II", 3: "III"} and s.gain == 12


@pytest.mark.parametrize(
    ("leads", "message"),
    [
        ({2: "aVR"}, "Input should be 'I', 'II' or 'III'"),
        ({"2": "IV"}, "Input should be 'I', 'II' or 'III'"),
        ({9: "II"}, "less than or equal to 8"),
        ({0: "II"}, "greater than or equal to 1"),
        ({"two": "II"}, "'two' is not a channel number"),
        ({1: "II", 2: "II"}, "lead II is given to channels 1 and 2"),
        ({}, "name at least one ECG lead"),
        ({2: 2}, "Input should be 'I', 'II' or 'III'"),
    ],
)
def test_bad_leads_are_refused_clearly(leads: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        OpenBCISettings.model_validate({"leads": leads})
    assert err.value.errors()[0]["loc"][0] == "leads"


@pytest.mark.parametrize(
    "bad",
    [
        {"gain": 3},
        {"gain": 24.0},
        {"gain": True},
        {"sample_rate": 300},
        {"chunk_samples": 0},
        {"lead": {2: "II"}},
        {"sample_rate": 250.0},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OpenBCISettings.model_validate(bad)


def test_spec() -> None:
    assert SPEC.name == "openbci-cyton"
    assert SPEC.settings is OpenBCISettings
    model = SPEC.make_model("ecg9", OpenBCISettings(gain=8))
    assert isinstance(model, CytonEcg) and model.settings.gain == 8
    assert set(SPEC.scenarios) == {
        "normal",
        "tachycardia",
        "noise",
        "dropped_packets",
        "lead_off",
        "unplug",
    }
    with pytest.raises(TypeError):
        SPEC.make_model("ecg9", SerialSettings())


def test_registered_in_the_registry() -> None:
    assert "openbci-cyton" in registry.names()
    assert registry.get("openbci-cyton") is SPEC
