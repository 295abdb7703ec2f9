"""NoninCodec (DF2/DF7) against a plain reference of its framing rules, on any bytes read
in any pieces: same packets, same counters, same buffered bytes after every read.

The reference is the decoder as it was before its hunting was made to jump between
candidate SYNC frames: at every byte position it tries a whole packet, frame by frame
with :func:`decode_frame`, and slides one byte on failure. The codec must agree with it
exactly, on garbage, on damaged streams and on clean ones.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.oximetry.nonin import (
    FRAME_LEN,
    FRAMES_PER_PACKET,
    PACKET_LEN,
    NoninCodec,
    NoninFrame,
    NoninPacket,
    NoninValues,
    PacketFormat,
    Status,
    decode_frame,
    encode_packet,
)
from drivers.readings import CodecCounters


class ReferenceCodec:
    """Slide one byte at a time; at each position try all 25 frames afresh."""

    def __init__(self, data_format: PacketFormat) -> None:
        self.data_format = data_format
        self.counters = CodecCounters()
        self.buf = bytearray()
        self.in_step = self.had_packet = self.lost = False

    def markers(self, at: int) -> bool:
        if self.data_format == 2:
            return self.buf[at] == 0x01 and bool(self.buf[at + 1] & 0x80)
        return bool(self.buf[at] & 0x80)

    def attempt(self, pos: int) -> NoninPacket | bool | None:
        frames: list[NoninFrame] = []
        for k in range(FRAMES_PER_PACKET):
            at = pos + k * FRAME_LEN
            if len(self.buf) - at < FRAME_LEN:
                return None
            frame = decode_frame(self.buf, self.data_format, at)
            if frame is None:
                return self.markers(at) and (k > 0 or self.in_step)
            if bool(frame.status & Status.SYNC) != (k == 0):
                return False
            frames.append(frame)
        return NoninPacket(tuple(frames))

    def feed(self, data: bytes) -> list[NoninPacket]:
        self.counters.bytes_received += len(data)
        self.buf += data
        packets, pos = [], 0
        while len(self.buf) - pos >= FRAME_LEN:
            outcome = self.attempt(pos)
            if outcome is None:
                break
            if isinstance(outcome, NoninPacket):
                packets.append(outcome)
                self.counters.frames_decoded += FRAMES_PER_PACKET
                self.counters.resyncs += self.lost
                self.had_packet, self.lost, self.in_step = True, False, True
                pos += PACKET_LEN
                continue
            self.counters.checksum_errors += outcome
            self.counters.bytes_dropped += 1
            self.lost, self.in_step = self.had_packet, False
            pos += 1
        del self.buf[:pos]
        return packets


def packet_bytes(rng: random.Random, data_format: PacketFormat) -> bytes:
    values = NoninValues.steady(rng.randrange(30, 200), rng.randrange(70, 101), firmware=5)
    statuses = [0x80 | rng.randrange(0x80) for _ in range(FRAMES_PER_PACKET)]
    top = 0xFF if data_format == 2 else 0xFFFF
    pleth = [rng.randrange(top + 1) for _ in range(FRAMES_PER_PACKET)]
    return encode_packet(NoninPacket.build(values, statuses, pleth), data_format)


def damaged_stream(seed: int, data_format: PacketFormat) -> bytes:
    """Packets with bit flips, cuts, insertions, garbage and runs of SYNC-looking bytes."""
    rng = random.Random(seed)
    out = bytearray()
    for _ in range(rng.randint(0, 6)):
        out += packet_bytes(rng, data_format)
    for _ in range(rng.randint(0, 8)):
        i = rng.randrange(len(out) + 1)
        kind = rng.randrange(5)
        if kind == 0 and i < len(out):
            out[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[i : i + rng.randint(1, 9)]
        elif kind == 2:
            out[i:i] = rng.randbytes(rng.randint(1, 40))
        elif kind == 3:
            out[i:i] = bytes([rng.choice((0x01, 0x81, 0x83, 0xFF))]) * rng.randint(2, 30)
        else:
            out[i:i] = packet_bytes(rng, data_format)[: rng.randrange(PACKET_LEN)]
    return bytes(out)


def compare(data_format: PacketFormat, stream: bytes, cuts: list[int]) -> None:
    codec, reference = NoninCodec(data_format), ReferenceCodec(data_format)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        assert codec.feed(stream[a:b]) == reference.feed(stream[a:b])
        assert codec.counters == reference.counters
        assert codec.buffered == len(reference.buf)


formats = st.sampled_from([2, 7])
cuts = st.lists(st.integers(min_value=0, max_value=4000), max_size=40)


@settings(max_examples=300, deadline=None)
@given(data_format=formats, seed=st.integers(0, 2**32), cuts=cuts)
def test_damaged_streams_decode_as_the_reference_does(
    data_format: PacketFormat, seed: int, cuts: list[int]
) -> None:
    compare(data_format, damaged_stream(seed, data_format), cuts)


@settings(max_examples=300, deadline=None)
@given(data_format=formats, stream=st.binary(max_size=800), cuts=cuts)
def test_garbage_decodes_as_the_reference_does(
    data_format: PacketFormat, stream: bytes, cuts: list[int]
) -> None:
    compare(data_format, stream, cuts)


@settings(max_examples=200, deadline=None)
@given(
    data_format=formats,
    stream=st.lists(st.sampled_from([0x00, 0x01, 0x80, 0x81, 0x82, 0xFF]), max_size=600),
    cuts=cuts,
)
def test_sync_looking_bytes_decode_as_the_reference_does(
    data_format: PacketFormat, stream: list[int], cuts: list[int]
) -> None:
    compare(data_format, bytes(stream), cuts)


def test_the_damaged_corpus_exercises_every_outcome() -> None:
    """The streams above really do resync, hit checksum errors and deliver packets."""
    formats: tuple[PacketFormat, ...] = (2, 7)
    for data_format in formats:
        total = CodecCounters()
        for seed in range(200):
            reference = ReferenceCodec(data_format)
            reference.feed(damaged_stream(seed, data_format))
            for name, value in reference.counters.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        assert total.frames_decoded > 0
        assert total.resyncs > 0
        assert total.checksum_errors > 0
        assert total.bytes_dropped > 0
