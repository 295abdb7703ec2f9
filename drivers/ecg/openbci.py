"""OpenBCI Cyton (TI ADS1299, 8 channels) as a serial ECG source.

Wire protocol (``protocols.md`` section 5a): the RFduino USB dongle is an FTDI serial port
at 115200 8N1. After the ASCII command ``b`` the board streams one 33-byte packet per
sample (250 Hz by default) until ``s``:

=========  =====================================================================
Byte       Content
=========  =====================================================================
1          0xA0 header
2          sample number, 0..255, wrapping; a jump means packets were lost
3-26       8 channels, each a 24-bit two's complement count, MSB first
27-32      6 aux bytes, meaning set by the footer (0xC0: accelerometer X, Y, Z
           as int16 big-endian)
33         footer 0xC0..0xCF
=========  =====================================================================

A count is ``4.5 V / gain / (2**23 - 1)`` volts (0.02235 uV at the default gain 24). The
stream has no checksum and no lead-off status.

The module is sans-I/O: :class:`CytonCodec` is fed bytes and returns
:class:`CytonPacket` objects; :func:`encode_packet` is its inverse (used by the simulator
and the property tests); :class:`CytonEcg` turns packets into ECG waveforms. Nothing here
touches a port. 16-channel Daisy streams (board and daisy samples on alternate packets)
are not supported.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from drivers import codes
from drivers.conditions import ConditionTracker
from drivers.device import SerialSettings
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    Reading,
    Waveform,
)
from drivers.registry import DriverSpec

# --- wire constants (protocols.md 5a) ------------------------------------------------------

PACKET_LEN: Final = 33
HEADER: Final = 0xA0
#: Footers a packet may end with (0xC0..0xCF); only 0xC0 (accelerometer) is decoded.
FOOTER_MIN: Final = 0xC0
FOOTER_MAX: Final = 0xCF
FOOTER_ACCEL: Final = 0xC0
CHANNELS: Final = 8
#: Bytes per channel sample on the wire.
SAMPLE_BYTES: Final = 3
CHANNEL_BYTES: Final = CHANNELS * SAMPLE_BYTES
AUX_LEN: Final = 6
#: Sample numbers wrap modulo this.
SAMPLE_NUMBER_MODULUS: Final = 256
#: Range of a channel count (24-bit two's complement).
COUNT_MIN: Final = -(1 << 23)
COUNT_MAX: Final = (1 << 23) - 1

#: ASCII commands (protocols.md 5a). Only :data:`START_STREAMING` is ever sent by the driver.
START_STREAMING: Final = b"b"
STOP_STREAMING: Final = b"s"
SOFT_RESET: Final = b"v"

#: ADS1299 reference span: volts per count = VREF_SPAN_V / gain / COUNT_MAX.
VREF_SPAN_V: Final = 4.5
#: Accelerometer scale (footer 0xC0 aux bytes), g per count.
ACCEL_G_PER_COUNT: Final = 0.002 / 16

Gain: TypeAlias = Literal[1, 2, 4, 6, 8, 12, 24]
#: ADS1299 programmable gains; the board's power-up default is 24.
GAINS: Final[tuple[int, ...]] = (1, 2, 4, 6, 8, 12, 24)
#: ADS1299 output data rates, Hz. Over the RFduino dongle the board streams at 250 Hz.
SampleRate: TypeAlias = Literal[250, 500, 1000, 2000, 4000, 8000, 16000]
LeadName: TypeAlias = Literal["I", "II", "III"]
#: The ECG leads a channel can be declared as, with their MDC codes (protocols.md 7.2).
#: Only the limb leads whose codes the project has verified are offered.
LEAD_CODES: Final[Mapping[str, codes.Code]] = {
    "I": codes.ECG_LEAD_I,
    "II": codes.ECG_LEAD_II,
    "III": codes.ECG_LEAD_III,
}

_ACCEL: Final = struct.Struct(">hhh")


def millivolts_per_count(gain: int) -> float:
    """Size of one count in mV at ``gain`` (one of :data:`GAINS`): 4.5 V / gain / (2^23-1).

    At gain 24 this is 2.235e-5 mV (0.02235 uV); full scale is then +-187.5 mV.
    """
    if gain not in GAINS:
        raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
    return VREF_SPAN_V * 1000.0 / gain / COUNT_MAX


# --- vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CytonPacket:
    """One 33-byte packet without its header: one sample of all 8 channels.

    ``sample_number`` is 0..255; ``raw_channels`` the 24 channel bytes exactly as on the
    wire (keeping them raw makes decoding cheap and round-trips byte for byte; see
    :attr:`channels` for the counts); ``aux`` the 6 aux bytes; ``footer`` 0xC0..0xCF.
    Build one from counts with :meth:`build`.
    """

    sample_number: int
    raw_channels: bytes
    aux: bytes = bytes(AUX_LEN)
    footer: int = FOOTER_ACCEL

    def __post_init__(self) -> None:
        if not 0 <= self.sample_number < SAMPLE_NUMBER_MODULUS:
            raise ValueError(f"sample number must be 0..255, got {self.sample_number}")
        if len(self.raw_channels) != CHANNEL_BYTES:
            raise ValueError(f"raw_channels must be {CHANNEL_BYTES} bytes")
        if len(self.aux) != AUX_LEN:
            raise ValueError(f"aux must be {AUX_LEN} bytes, got {len(self.aux)}")
        if not FOOTER_MIN <= self.footer <= FOOTER_MAX:
            raise ValueError(f"footer must be 0xC0..0xCF, got {self.footer:#x}")

    @classmethod
    def build(
        cls,
        sample_number: int,
        channels: Sequence[int],
        aux: bytes = bytes(AUX_LEN),
        footer: int = FOOTER_ACCEL,
    ) -> CytonPacket:
        """A packet from 8 channel counts (each ``COUNT_MIN..COUNT_MAX``).

        ``ValueError`` for a count the wire cannot carry or a wrong number of channels.
        """
        if len(channels) != CHANNELS:
            raise ValueError(f"a packet has {CHANNELS} channels, got {len(channels)}")
        raw = bytearray()
        for count in channels:
            if not COUNT_MIN <= count <= COUNT_MAX:
                raise ValueError(f"channel count must be {COUNT_MIN}..{COUNT_MAX}, got {count}")
            raw += (count & 0xFFFFFF).to_bytes(SAMPLE_BYTES, "big")
        return cls(sample_number, bytes(raw), bytes(aux), footer)

    @property
    def channels(self) -> tuple[int, ...]:
        """The 8 channel counts (``COUNT_MIN..COUNT_MAX``), channel 1 first."""
        raw = self.raw_channels
        return tuple(
            int.from_bytes(raw[i : i + SAMPLE_BYTES], "big", signed=True)
            for i in range(0, CHANNEL_BYTES, SAMPLE_BYTES)
        )

    @property
    def accel(self) -> tuple[int, int, int] | None:
        """Accelerometer X, Y, Z counts (int16; times :data:`ACCEL_G_PER_COUNT` for g) when
        the footer is 0xC0, else ``None``. The board sends zeros between new readings."""
        if self.footer != FOOTER_ACCEL:
            return None
        x, y, z = _ACCEL.unpack(self.aux)
        return x, y, z


def counts_of(raw: bytes | bytearray) -> npt.NDArray[np.int32]:
    """Counts of consecutive packets' ``raw_channels`` joined: shape (packets, 8), int32."""
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CHANNELS, SAMPLE_BYTES).astype(np.int32)
    unsigned = (b[..., 0] << 16) | (b[..., 1] << 8) | b[..., 2]
    # Sign-extend bit 23: values 0x800000.. map to -2^23..
    return (unsigned ^ 0x800000) - 0x800000


# --- encoder -------------------------------------------------------------------------------


def encode_packet(packet: CytonPacket) -> bytes:
    """The 33 wire bytes of ``packet``."""
    return (
        bytes((HEADER, packet.sample_number))
        + packet.raw_channels
        + packet.aux
        + bytes((packet.footer,))
    )


# --- codec ---------------------------------------------------------------------------------


_new_object = object.__new__
_set_slot = object.__setattr__


def _trusted_packet(number: int, raw: bytes, aux: bytes, footer: int) -> CytonPacket:
    """A packet from fields the decoder has already checked, without re-validating them
    (about a fifth of the cost of the checked constructor, on the decoder's hot path)."""
    packet: CytonPacket = _new_object(CytonPacket)
    _set_slot(packet, "sample_number", number)
    _set_slot(packet, "raw_channels", raw)
    _set_slot(packet, "aux", aux)
    _set_slot(packet, "footer", footer)
    return packet


class CytonCodec:
    """Sans-I/O decoder for the Cyton stream: feed bytes, get packets.

    Alignment follows the documented rule (protocols.md 5a): a 0xA0 starts a packet only
    if the byte 32 later is a footer 0xC0..0xCF. That rule alone lets a stray 0xA0 (in
    garbage, or in channel data after a lost byte) pass one time in 16, and the stream has
    no checksum to catch it, so a candidate must also show one of:

    * the sample number that follows the last packet's (the normal case), or
    * the next packet's header, an 0xA0 right after its footer: after packets were lost
      the number jumps, and the codec then waits for that one byte (4 ms at 250 Hz), or
    * nothing to compare with: the first packet since :meth:`reset`, so that a single
      packet decodes on its own.

    Garbage holding no 0xA0 therefore costs exactly itself, and a stray 0xA0 one byte. A
    packet is lost only to garbage that happens to look like a packet with the right
    sample number (or followed by a header), or if it arrives alone between two runs of
    garbage after a jump in numbering, when nothing tells it from garbage. The decisions
    never depend on how the bytes were split into reads.

    Counters (``counters``, shared across :meth:`reset` so they add up over reconnects)
    obey ``bytes_received == PACKET_LEN * frames_decoded + bytes_dropped + buffered``;
    ``frames_decoded`` counts packets. ``checksum_errors`` stays 0: the protocol has no
    checksum. ``resyncs`` counts packets delivered after bytes were dropped since the
    previous packet (hunting for the first packet after a reset is not a resync).

    The buffer is bounded: between calls it holds at most one packet and the byte after
    it (``PACKET_LEN`` bytes); everything else was decoded or dropped.
    """

    def __init__(self, counters: CodecCounters | None = None) -> None:
        self.counters = counters if counters is not None else CodecCounters()
        self._buf = bytearray()
        self._expected: int | None = None  # sample number the next packet should carry
        self._lost = False  # bytes dropped since the last packet

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a packet (at most ``PACKET_LEN``)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget alignment and buffered bytes (counted as dropped) for a fresh link."""
        self.counters.bytes_dropped += len(self._buf)
        self._buf.clear()
        self._expected = None
        self._lost = False

    def feed(self, data: bytes) -> list[CytonPacket]:
        """Decode ``data``; returns the packets completed by it, oldest first. Never raises."""
        counters = self.counters
        counters.bytes_received += len(data)
        self._buf += data
        # One immutable copy per call: slices of it are the packets' bytes, copied once.
        buf = bytes(self._buf)
        end = len(buf)
        packets: list[CytonPacket] = []
        pos = 0
        while pos < end:
            if buf[pos] != HEADER:
                start = buf.find(HEADER, pos)
                nxt = end if start < 0 else start
                self._drop(nxt - pos)
                pos = nxt
                continue
            if end - pos < PACKET_LEN:
                break  # wait for the rest of this candidate
            footer = buf[pos + PACKET_LEN - 1]
            number = buf[pos + 1]
            accept = footer & 0xF0 == FOOTER_MIN  # 0xC0..0xCF
            if accept and number != self._expected and self._expected is not None:
                if end - pos == PACKET_LEN:
                    break  # wait for the byte after the footer
                accept = buf[pos + PACKET_LEN] == HEADER
            if not accept:
                self._drop(1)
                pos += 1
                continue
            packets.append(
                _trusted_packet(
                    number,
                    buf[pos + 2 : pos + 2 + CHANNEL_BYTES],
                    buf[pos + 2 + CHANNEL_BYTES : pos + PACKET_LEN - 1],
                    footer,
                )
            )
            counters.frames_decoded += 1
            if self._lost:
                counters.resyncs += 1
                self._lost = False
            self._expected = (number + 1) % SAMPLE_NUMBER_MODULUS
            pos += PACKET_LEN
        del self._buf[:pos]
        return packets

    def _drop(self, n: int) -> None:
        if n <= 0:
            return
        self.counters.bytes_dropped += n
        self._lost = self._expected is not None


# --- device model --------------------------------------------------------------------------

#: A channel number on the board, 1..8.
ChannelNumber: TypeAlias = Annotated[int, Field(ge=1, le=CHANNELS)]


def _default_leads() -> dict[int, LeadName]:
    return {2: "II"}


class OpenBCISettings(SerialSettings):
    """Serial settings (115200 8N1 by default) and how the board is set up and wired.

    The gateway never changes the board's settings, so these must describe it:

    * ``gain``: the ADS1299 channel gain the board runs at (1, 2, 4, 6, 8, 12 or 24;
      24 is the board's power-up default). It sets the scale: 4.5 V / gain / (2^23 - 1)
      per count.
    * ``sample_rate``: samples per second the board streams, Hz (250 over the dongle).
    * ``leads``: which channel carries which ECG lead, channel number (1..8) to lead name
      ("I", "II" or "III"); in ``config.toml`` a table such as
      ``leads = { 1 = "I", 2 = "II" }``. Channels not listed are not published. Each lead
      comes from one channel.
    * ``chunk_samples``: samples per published waveform chunk (1..1000; 25 = 0.1 s at
      250 Hz).
    """

    baudrate: int = Field(default=115200, gt=0, description="bits per second")
    gain: Gain = 24
    sample_rate: SampleRate = 250
    leads: dict[ChannelNumber, LeadName] = Field(default_factory=_default_leads)
    chunk_samples: int = Field(default=25, ge=1, le=1000)

    @field_validator("gain", "sample_rate", mode="before")
    @classmethod
    def _exact_integer(cls, value: object) -> object:
        # Literal matching would take 24.0 for 24 (and True for 1): refuse anything not an int.
        if type(value) is not int:
            raise ValueError(f"expected a whole number, got {value!r}")
        return value

    @field_validator("leads", mode="before")
    @classmethod
    def _channel_keys(cls, value: object) -> object:
        # TOML table keys are always strings ("2"); Python callers may use ints.
        if not isinstance(value, Mapping):
            return value
        leads: dict[object, object] = {}
        for key, lead in value.items():
            if isinstance(key, str) and key.isascii() and key.isdigit():
                leads[int(key)] = lead
            elif type(key) is int:
                leads[key] = lead
            else:
                raise ValueError(
                    f"leads maps channel numbers 1..{CHANNELS} to lead names, "
                    f'as in {{ 2 = "II" }}; {key!r} is not a channel number'
                )
        return leads

    @field_validator("leads")
    @classmethod
    def _one_channel_per_lead(cls, value: dict[int, str]) -> dict[int, str]:
        if not value:
            raise ValueError('name at least one ECG lead, as in leads = { 2 = "II" }')
        seen: dict[str, int] = {}
        for channel, lead in sorted(value.items()):
            if lead in seen:
                raise ValueError(
                    f"lead {lead} is given to channels {seen[lead]} and {channel}; "
                    "each lead comes from one channel"
                )
            seen[lead] = channel
        return value


#: Conditions this driver reports, in the order events are emitted.
CONDITIONS: Final[tuple[Condition, ...]] = (Condition.SAMPLES_LOST, Condition.LEAD_OFF)
_CONDITION_DETAIL: Final[dict[Condition, str]] = {
    Condition.SAMPLES_LOST: "Cyton sample-number gap",
    Condition.LEAD_OFF: "Cyton railed-channel check (the stream has no lead-off status)",
}

#: SAMPLES_LOST clears after this many seconds of samples arrive without a gap.
SAMPLES_LOST_CLEAR_S: Final = 5.0
#: A channel is railed (saturated, the usual sign of an electrode off) when every sample
#: of a whole chunk is beyond this fraction of full scale, either sign.
RAIL_FRACTION: Final = 0.9
_RAIL_COUNTS: Final = math.ceil(RAIL_FRACTION * COUNT_MAX)
#: Timing: re-anchor when samples arrive more than this much earlier than their anchored
#: time (impossible for a right anchor: the anchor was set on a slow arrival, or the
#: board's clock runs fast), or when, over a whole :data:`TIMING_WINDOW_S`, even the
#: promptest arrival is later than this (the board's clock runs slow).
MAX_TIMING_ERROR_S: Final = 0.1
TIMING_WINDOW_S: Final = 2.0
#: A gap of 256 samples or more wraps the sample number; it is recognised from arrival
#: times when the delay the wrapped count does not explain exceeds this many samples'
#: worth (0.75 of a wrap: 0.77 s at 250 Hz).
_WRAP_THRESHOLD: Final = 0.75


class CytonEcg:
    """Device model for an OpenBCI Cyton streaming ECG (a ``SerialDeviceModel``).

    **Commands.** :meth:`on_connect` sends ``b`` (start streaming) and nothing else. The
    board does not stream until told, and ``b`` changes no setting. The soft reset ``v``
    is never sent: it re-initialises the board, which would undo channel settings (gain,
    input mode, bias) a technician made, and the gateway never changes a device's
    settings; ``gain`` in the settings says what the board runs at instead. ``s`` (stop)
    is not sent either: the runner has no hook for a link that is ending, and a board
    that streams into a closed port is harmless.

    **Waveforms.** One ``Waveform`` per configured lead (code from :data:`LEAD_CODES`),
    in mV, every ``chunk_samples`` samples, with ``resolution`` = mV per count at the
    configured gain, so every sample is a whole multiple of it. ``sequence`` is the index
    of the chunk's first sample since connect, counting lost samples too, so a gap shows
    as a jump. Timing: the first sample is placed by its arrival time (packets in one
    read laid back to back, the last ending at ``now``); every later sample is the anchor
    plus its index over ``sample_rate``, so arrival jitter never moves the timeline and
    consecutive chunks join exactly. The anchor is set again after a gap (from the arrival
    time), and when the timeline strays from arrival times by more than
    :data:`MAX_TIMING_ERROR_S` (a board whose clock runs off its nominal rate, or a
    first read that came late); each re-anchoring is counted in
    :attr:`reanchors`. A chunk never spans a gap or a re-anchoring: the samples pending
    then are published as a shorter chunk, and so are those pending at disconnect.

    **Lost samples.** A jump in the sample number (modulo 256) means packets were lost.
    The number lost is the jump, plus whole wraps of 256 when the arrival time shows that
    much more delay (see :data:`_WRAP_THRESHOLD`). ``SAMPLES_LOST`` is raised at the first
    gap, with the count in ``detail``; gaps while it is raised add up silently (the
    ``sequence`` jumps still show each) and are summarised in the clearing event's detail;
    it clears after :data:`SAMPLES_LOST_CLEAR_S` of samples arrive with no gap. The
    running total is :attr:`samples_lost`.

    **Lead off.** The stream carries no lead-off status. A configured lead whose whole
    chunk sits beyond :data:`RAIL_FRACTION` of full scale is railed, which is what an
    electrode off the skin does to an ADS1299 input; ``LEAD_OFF`` is raised while any
    lead is railed, naming it. This is a heuristic; a research board is a test source
    (protocols.md 5a, "Limits for clinical use").

    Identity (manufacturer "OpenBCI", model "Cyton", as the packet format says; the
    stream names no serial or firmware) is published once per connection, with the first
    packet. Accelerometer data is decoded by the codec but not published.
    """

    def __init__(self, device_id: str, settings: OpenBCISettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self._codec = CytonCodec()
        self.counters: CodecCounters = self._codec.counters
        self._conditions = ConditionTracker(device_id, CONDITIONS, _CONDITION_DETAIL)
        self._rate = float(settings.sample_rate)
        self._resolution = millivolts_per_count(settings.gain)
        self._leads = [
            (channel - 1, LEAD_CODES[lead]) for channel, lead in sorted(settings.leads.items())
        ]
        self._lead_names = {
            channel - 1: f"lead {lead} (channel {channel})"
            for channel, lead in sorted(settings.leads.items())
        }
        self._clear_after = max(1, round(SAMPLES_LOST_CLEAR_S * self._rate))
        self._window = max(1, round(TIMING_WINDOW_S * self._rate))
        #: Samples known lost since this model was built (all connections).
        self.samples_lost = 0
        #: Times the timeline was re-anchored to arrival times for drift (all connections).
        self.reanchors = 0
        self._start_connection()

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    @property
    def resolution(self) -> float:
        """mV per count at the configured gain."""
        return self._resolution

    def _start_connection(self) -> None:
        self._identified = False
        self._last_number: int | None = None
        self._next_index = 0  # index of the next sample to arrive, lost ones counted
        self._anchor_time = 0.0
        self._anchor_index = 0
        self._pending: list[bytes] = []
        self._pending_start = 0
        self._since_gap = 0  # samples received since the last gap
        self._raised_gaps = 0  # gaps and samples lost while SAMPLES_LOST is raised
        self._raised_lost = 0
        self._window_start = 0
        self._window_min = math.inf

    def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
        """Reset for a fresh link; returns ``b`` (start streaming) and the readings left
        by a link that ended without :meth:`on_disconnect` (its pending samples, then its
        conditions cleared), so every connection starts from a clean slate."""
        readings = self._end_connection(now)
        self._codec.reset()
        self._start_connection()
        return START_STREAMING, readings

    def feed(self, data: bytes, now: float) -> Sequence[Reading]:
        """Decode ``data`` received at wall time ``now`` (UTC s) into readings."""
        packets = self._codec.feed(data)
        if not packets:
            return []
        readings: list[Reading] = []
        if not self._identified:
            self._identified = True
            readings.append(Identity(self.device_id, now, manufacturer="OpenBCI", model="Cyton"))
        period = 1.0 / self._rate
        count = len(packets)
        chunk = self.settings.chunk_samples
        for i, packet in enumerate(packets):
            number = packet.sample_number
            if self._last_number is None:
                self._anchor(now - (count - i) * period)
            elif number != (self._last_number + 1) % SAMPLE_NUMBER_MODULUS or i == 0:
                # Packets of one read are laid back to back ending at ``now``; those
                # arrival times cannot show lost wraps inside a read, so only the first
                # packet of a read is checked against the clock.
                arrival = now - (count - i) * period
                lost = self._lost_before(number, arrival if i == 0 else None)
                if lost:
                    readings.extend(self._on_gap(lost, number, arrival, now))
                elif i == 0:
                    # Packets of one read share their timing error: check the first, so
                    # a correction already applies to the chunks this read completes.
                    readings.extend(self._check_timing(arrival, now))
            self._last_number = number
            self._pending.append(packet.raw_channels)
            self._next_index += 1
            self._since_gap += 1
            if len(self._pending) >= chunk:
                readings.extend(self._flush(now, whole=True))
            if self._since_gap == self._clear_after:
                readings.extend(self._clear_samples_lost(now))
        return readings

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Publish the samples still pending, then clear every raised condition (the link,
        not the patient, ended them)."""
        return self._end_connection(now)

    # --- internals -------------------------------------------------------------------------

    def _end_connection(self, now: float) -> list[Reading]:
        readings = self._flush(now, whole=False)
        readings.extend(self._conditions.clear(now))
        self._raised_gaps = self._raised_lost = 0
        return readings

    def _time_of(self, index: int) -> float:
        return self._anchor_time + (index - self._anchor_index) / self._rate

    def _anchor(self, time: float) -> None:
        """Place the next sample at ``time``; later samples follow at the sample rate."""
        self._anchor_time = time
        self._anchor_index = self._next_index
        self._window_start = self._next_index
        self._window_min = math.inf

    def _lost_before(self, number: int, arrival: float | None) -> int:
        """Samples lost between the last packet and one numbered ``number`` that arrived
        (by the read's timing) at ``arrival``; with no ``arrival``, only the jump in
        numbers counts."""
        assert self._last_number is not None
        jump = (number - self._last_number - 1) % SAMPLE_NUMBER_MODULUS
        if arrival is None:
            return jump
        unexplained = (arrival - self._time_of(self._next_index)) * self._rate - jump
        wraps = max(0, math.floor(unexplained / SAMPLE_NUMBER_MODULUS + 1 - _WRAP_THRESHOLD))
        return jump + wraps * SAMPLE_NUMBER_MODULUS

    def _on_gap(self, lost: int, number: int, arrival: float, now: float) -> list[Reading]:
        readings = self._flush(now, whole=False)
        self._next_index += lost
        self._pending_start = self._next_index
        self._anchor(arrival)
        self.samples_lost += lost
        self._since_gap = 0
        previous = (number - lost - 1) % SAMPLE_NUMBER_MODULUS
        raised = self._conditions.update({Condition.SAMPLES_LOST: True}, now)
        self._raised_gaps += 1
        self._raised_lost += lost
        readings.extend(
            dataclasses.replace(
                e,
                detail=f"{lost} samples lost (sample number {number} after {previous})",
            )
            for e in raised
        )
        return readings

    def _clear_samples_lost(self, now: float) -> list[DeviceEvent]:
        cleared = self._conditions.update({Condition.SAMPLES_LOST: False}, now)
        detail = (
            f"no samples lost for {SAMPLES_LOST_CLEAR_S:g} s; {self._raised_lost} lost in "
            f"{self._raised_gaps} gap(s) while raised"
        )
        self._raised_gaps = self._raised_lost = 0
        return [dataclasses.replace(e, detail=detail) for e in cleared]

    def _check_timing(self, arrival: float, now: float) -> list[Reading]:
        """Compare the next sample's ``arrival`` with its anchored time; re-anchor if the
        timeline has strayed (see :data:`MAX_TIMING_ERROR_S`)."""
        error = arrival - self._time_of(self._next_index)  # > 0: later than anchored
        self._window_min = min(self._window_min, error)
        shift = 0.0
        if error < -MAX_TIMING_ERROR_S:
            shift = error
        elif self._next_index - self._window_start >= self._window:
            if self._window_min > MAX_TIMING_ERROR_S:
                shift = self._window_min
            else:
                self._window_start = self._next_index
                self._window_min = math.inf
        if not shift:
            return []
        readings = self._flush(now, whole=False)
        self.reanchors += 1
        anchor_time = self._time_of(self._next_index) + shift
        self._anchor(anchor_time)
        return readings

    def _flush(self, now: float, *, whole: bool) -> list[Reading]:
        """Publish the pending samples as one chunk per lead; ``whole`` when the chunk is
        full-length (only those are judged for railing)."""
        if not self._pending:
            return []
        counts = counts_of(b"".join(self._pending))
        start = self._pending_start
        start_time = self._time_of(start)
        self._pending = []
        self._pending_start = start + len(counts)
        readings: list[Reading] = []
        railed: list[str] = []
        for channel, code in self._leads:
            column = counts[:, channel]
            if whole and bool(np.all(np.abs(column) >= _RAIL_COUNTS)):
                railed.append(self._lead_names[channel])
            readings.append(
                Waveform(
                    source=self.device_id,
                    code=code,
                    unit=codes.MILLIVOLT,
                    sample_rate=self._rate,
                    start_time=start_time,
                    samples=column.astype(np.float64) * self._resolution,
                    sequence=start,
                    resolution=self._resolution,
                )
            )
        if whole:
            events = self._conditions.update({Condition.LEAD_OFF: bool(railed)}, now)
            detail = f"railed: {', '.join(railed)}" if railed else "no lead railed"
            readings.extend(dataclasses.replace(e, detail=detail) for e in events)
        return readings


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.openbci implements each).
SCENARIOS: Final = ("normal", "tachycardia", "noise", "dropped_packets", "lead_off", "unplug")


SPEC = DriverSpec.typed(
    name="openbci-cyton",
    description=(
        "OpenBCI Cyton (ADS1299) on its USB dongle's serial port as an ECG source: "
        "configured channels as leads I/II/III in mV at 250 Hz, sample gaps and railed leads"
    ),
    settings=OpenBCISettings,
    make_model=CytonEcg,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.openbci:CytonSimulator",
    # Silent until it is sent "b": a listen-only probe cannot recognise it.
    probe_variants=(),
)
