"""Contec CMS50D+ / CMS50E pulse oximeters, legacy live protocol (firmware up to about 4.5).

``protocols.md`` section 4b. Over the USB-serial cable (19200 baud, 8 data bits, odd parity,
1 stop bit) the device streams one 5-byte packet per pleth sample, about 60 a second, by
itself: nothing has to be sent to start or keep it going.

======  ======  ==================================================================
Byte    Bits    Meaning
======  ======  ==================================================================
1       7       1: sync (the only byte of a packet with bit 7 set)
1       6       pulse beep (beat marker)
1       5       SpO2 dropping
1       4       finger out / probe off
1       3-0     signal strength, 0..8 (0x0F seen)
2       6-0     pleth waveform, 0..127
3       6       pulse rate bit 7
3       5       searching for pulse
3       4       probe (sensor) error
3       3-0     pulse bar graph
4       6-0     pulse rate bits 6-0
5       6-0     SpO2 %
======  ======  ==================================================================

Rates: the device samples at 60 Hz (atbrask ``README``: "In live data mode the device will
sample at 60 Hz"; 4b: "~60 packets/s"), so the line carries 60 x 5 = 300 B/s. At 8O1 a byte
is 11 bits on the wire, so 19200 baud could carry 1745 B/s: the stream uses about 17 % of it.

The module is sans-I/O: :class:`ContecCodec` is fed bytes and returns
:class:`ContecPacket` objects; :func:`encode_packet` is its inverse (simulator and property
tests); :class:`ContecOximeter` turns packets into readings. Nothing here touches a port.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from pydantic import Field

from drivers import codes
from drivers.conditions import ConditionTracker
from drivers.device import Parity, SerialSettings
from drivers.readings import (
    CodecCounters,
    Condition,
    Identity,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)
from drivers.registry import DriverSpec

PACKET_LEN: Final = 5
#: Packets (and pleth samples) per second.
PACKET_RATE_HZ: Final = 60.0
#: Seconds between packets.
PACKET_PERIOD_S: Final = 1.0 / PACKET_RATE_HZ
#: Packets the model gathers into one set of readings: one pleth chunk, one SpO2 and one
#: pulse rate per window, i.e. 3 per second (see :class:`ContecOximeter`).
PACKETS_PER_WINDOW: Final = 20
#: Seconds covered by one window (1/3 s).
WINDOW_PERIOD_S: Final = PACKETS_PER_WINDOW / PACKET_RATE_HZ

#: "No value" sentinels (4b: "Invalid readings are commonly PR 0xFF/SpO2 0x7F").
MISSING_PR: Final = 0xFF
MISSING_SPO2: Final = 0x7F
#: Largest value of each field the wire can carry.
PLETH_MAX: Final = 0x7F
PR_MAX: Final = 0xFF
SPO2_RAW_MAX: Final = 0x7F
NIBBLE_MAX: Final = 0x0F
#: Top of the documented signal-strength scale (4b: "0-8"); 9..15 (0x0F is seen) are read
#: as "strength not reported".
SIGNAL_STRENGTH_MAX: Final = 8
#: Signal strength at or below which numerics are flagged LOW_PERFUSION. A gateway choice
#: (Contec publishes no threshold): 0 or 1 of 8 bars is the weakest signal the device shows.
LOW_SIGNAL_STRENGTH: Final = 1

_SYNC: Final = 0x80
_LOW7: Final = 0x7F


class Byte1(enum.IntFlag):
    """Flag bits of byte 1; bits 3-0 are the signal strength."""

    FINGER_OUT = 0x10
    SPO2_DROPPING = 0x20
    BEAT = 0x40
    SYNC = 0x80


class Byte3(enum.IntFlag):
    """Flag bits of byte 3; bits 3-0 are the pulse bar graph."""

    PROBE_ERROR = 0x10
    SEARCHING = 0x20
    PR_BIT7 = 0x40


_BEAT: Final = int(Byte1.BEAT)
_SPO2_DROPPING: Final = int(Byte1.SPO2_DROPPING)
_FINGER_OUT: Final = int(Byte1.FINGER_OUT)
_PROBE_ERROR: Final = int(Byte3.PROBE_ERROR)
_SEARCHING: Final = int(Byte3.SEARCHING)
_PR_BIT7: Final = int(Byte3.PR_BIT7)


# --- vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContecPacket:
    """One live packet, every wire bit of it, as raw device values.

    ``signal_strength`` (0..15; the device's scale is 0..8), ``pleth`` (0..127, device
    units), ``bargraph`` (0..15, the beat-synchronous pulse bar of the display),
    ``pulse_rate`` (0..255 /min, 255 = no value) and ``spo2`` (0..127 %, 127 = no value)
    are exactly as sent: judging them is the model's job. The flags are the single bits
    of the 4b table. Packets and valid 5-byte wire packets correspond one to one.
    """

    signal_strength: int
    pleth: int
    bargraph: int
    pulse_rate: int
    spo2: int
    beat: bool = False
    spo2_dropping: bool = False
    finger_out: bool = False
    probe_error: bool = False
    searching: bool = False

    def __post_init__(self) -> None:
        # One chained test first: the decoder builds 60 of these a second per device.
        if (
            0 <= self.signal_strength <= NIBBLE_MAX
            and 0 <= self.pleth <= PLETH_MAX
            and 0 <= self.bargraph <= NIBBLE_MAX
            and 0 <= self.pulse_rate <= PR_MAX
            and 0 <= self.spo2 <= SPO2_RAW_MAX
        ):
            return
        for name, value, top in (
            ("signal_strength", self.signal_strength, NIBBLE_MAX),
            ("pleth", self.pleth, PLETH_MAX),
            ("bargraph", self.bargraph, NIBBLE_MAX),
            ("pulse_rate", self.pulse_rate, PR_MAX),
            ("spo2", self.spo2, SPO2_RAW_MAX),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"{name} must be 0..{top}, got {value}")


# --- encoder and single-packet decoder -----------------------------------------------------


def encode_packet(packet: ContecPacket) -> bytes:
    """The 5 wire bytes of ``packet``."""
    b1 = _SYNC | packet.signal_strength
    if packet.beat:
        b1 |= _BEAT
    if packet.spo2_dropping:
        b1 |= _SPO2_DROPPING
    if packet.finger_out:
        b1 |= _FINGER_OUT
    b3 = packet.bargraph | ((packet.pulse_rate & 0x80) >> 1)
    if packet.probe_error:
        b3 |= _PROBE_ERROR
    if packet.searching:
        b3 |= _SEARCHING
    return bytes((b1, packet.pleth, b3, packet.pulse_rate & _LOW7, packet.spo2))


def decode_packet(data: bytes | bytearray, offset: int = 0) -> ContecPacket | None:
    """The packet in ``data[offset : offset + 5]``; ``None`` if fewer bytes remain or the
    framing is wrong (bit 7 must be set on the first byte and clear on the other four)."""
    if not 0 <= offset <= len(data) - PACKET_LEN:
        return None
    b1, b2, b3, b4, b5 = data[offset : offset + PACKET_LEN]
    if not b1 & _SYNC or (b2 | b3 | b4 | b5) & _SYNC:
        return None
    return _unpack(b1, b2, b3, b4, b5)


def _unpack(b1: int, b2: int, b3: int, b4: int, b5: int) -> ContecPacket:
    # Every field is masked to its width, so construction cannot fail on any framed bytes.
    # Plain int masks: IntFlag arithmetic costs more than the whole rest of the decode.
    return ContecPacket(
        b1 & NIBBLE_MAX,
        b2,
        b3 & NIBBLE_MAX,
        ((b3 & _PR_BIT7) << 1) | b4,
        b5,
        bool(b1 & _BEAT),
        bool(b1 & _SPO2_DROPPING),
        bool(b1 & _FINGER_OUT),
        bool(b3 & _PROBE_ERROR),
        bool(b3 & _SEARCHING),
    )


# --- decoder -------------------------------------------------------------------------------

# A packet: one byte with bit 7 set, then four with it clear. The regex engine scans in C,
# which is what makes the codec fast; its leftmost-first search is exactly "start at every
# sync byte, abort when a sync byte comes early" (a clear byte can never start a match).
_PACKET_RE: Final = re.compile(rb"[\x80-\xff][\x00-\x7f]{4}")
# The start of a packet still arriving: a sync byte and fewer than four clear bytes at the end.
_PARTIAL_RE: Final = re.compile(rb"[\x80-\xff][\x00-\x7f]{0,3}\Z")


class ContecCodec:
    """Sans-I/O decoder for the legacy live stream: feed bytes, get packets.

    **Framing and corruption.** The protocol has no checksum and no length: its only
    redundancy is bit 7, set on byte 1 and clear on bytes 2-5. A packet is a sync byte
    followed by four clear bytes, delivered as soon as its fifth byte arrives. Corruption
    is detected when it breaks that pattern: a sync byte where a data byte is due (a lost
    byte, a device restart mid-packet, a flipped bit 7) aborts the packet begun before it,
    whose bytes are dropped, and the search restarts at that sync byte; clear bytes where a
    sync byte is due are dropped. A flip of bits 0-6 cannot be detected at all, and a burst
    of noise may frame as a packet; the model therefore never trusts a single packet (see
    :class:`ContecOximeter`). The UART's parity bit does not help either: pyserial clears
    INPCK, so a byte with a parity error reaches the codec as an ordinary byte.

    A sync byte always starts a fresh attempt, so garbage costs at most the garbage: every
    intact packet after it still decodes.

    Counters (``counters``, shared across :meth:`reset` so they add up over reconnects)
    obey ``bytes_received == PACKET_LEN * frames_decoded + bytes_dropped + buffered``;
    ``frames_decoded`` counts packets. ``checksum_errors`` stays 0 (there is no checksum);
    framing damage shows in ``bytes_dropped`` and ``resyncs``. ``resyncs`` counts packets
    delivered after bytes were dropped since the previous packet (hunting for the first
    packet after a reset is not a resync).

    The buffer is bounded by construction: between calls it holds at most one unfinished
    packet (``PACKET_LEN - 1`` bytes).
    """

    def __init__(self, counters: CodecCounters | None = None) -> None:
        self.counters = counters if counters is not None else CodecCounters()
        self._buf = b""
        self._had_packet = False
        self._lost = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a packet (< ``PACKET_LEN``)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget buffered bytes (counted as dropped) and alignment, for a fresh link."""
        self.counters.bytes_dropped += len(self._buf)
        self._buf = b""
        self._had_packet = False
        self._lost = False

    def feed(self, data: bytes) -> list[ContecPacket]:
        """Decode ``data``; returns the packets completed by it, oldest first. Never raises."""
        counters = self.counters
        counters.bytes_received += len(data)
        buf = self._buf + data
        packets: list[ContecPacket] = []
        pos = 0
        for match in _PACKET_RE.finditer(buf):
            start = match.start()
            if start > pos:
                self._drop(start - pos)
            packets.append(_unpack(*buf[start : start + PACKET_LEN]))
            if self._lost:
                counters.resyncs += 1
            self._had_packet, self._lost = True, False
            pos = start + PACKET_LEN
        partial = _PARTIAL_RE.search(buf, pos)
        keep = partial.start() if partial is not None else len(buf)
        if keep > pos:
            self._drop(keep - pos)
        counters.frames_decoded += len(packets)
        self._buf = buf[keep:]
        return packets

    def _drop(self, n: int) -> None:
        self.counters.bytes_dropped += n
        # Losing bytes before the first packet of a link is hunting, not losing sync.
        self._lost = self._had_packet


# --- value judgement -----------------------------------------------------------------------

_SPO2_MAX: Final = 100


def judge_spo2(raw: int) -> tuple[float | None, MeasurementStatus]:
    """A raw SpO2 byte (0..127) as (value in %, status).

    127 (the device's "no value") and 0 (no oximeter can measure 0 %: the device sends it
    while it has no reading) are ``UNAVAILABLE``; 101..126 cannot be a saturation and are
    ``INVALID``; 1..100 is the value.
    """
    if raw in (MISSING_SPO2, 0):
        return None, MeasurementStatus.UNAVAILABLE
    if raw > _SPO2_MAX:
        return None, MeasurementStatus.INVALID
    return float(raw), MeasurementStatus.NONE


def judge_pulse_rate(raw: int) -> tuple[float | None, MeasurementStatus]:
    """A raw pulse rate (0..255) as (value in /min, status).

    255 (the device's "no value") and 0 are ``UNAVAILABLE``: an oximeter that finds no pulse
    reports searching, it cannot measure a rate of 0; 1..254 is the value.
    """
    if raw in (MISSING_PR, 0):
        return None, MeasurementStatus.UNAVAILABLE
    return float(raw), MeasurementStatus.NONE


# --- device model --------------------------------------------------------------------------


class ContecSettings(SerialSettings):
    """Serial settings with the device's defaults: 19200 baud, 8 data bits, odd parity,
    1 stop bit (4b, after atbrask's ``connect()``).

    One translated Contec sheet says 4800 8N1; 4b advises 19200 8O1 first, so that is the
    default and ``baudrate`` / ``parity`` can be changed for such a unit. XON/XOFF (also in
    atbrask's settings) is deliberately not used: the gateway never sends to the device,
    and with input flow control on, the tty would swallow every 0x11 and 0x13 the device
    sends as data (a pleth of 17, a pulse of 19), breaking packets.
    """

    baudrate: int = Field(default=19200, gt=0, description="bits per second")
    parity: Parity = "O"


#: Every condition this driver reports, in the order events are emitted.
CONDITIONS: Final[tuple[Condition, ...]] = (
    Condition.SENSOR_OFF,
    Condition.SENSOR_FAULT,
    Condition.PULSE_SEARCH,
)
_CONDITION_DETAIL: Final[dict[Condition, str]] = {
    Condition.SENSOR_OFF: "Contec byte 1 bit 4 (finger out)",
    Condition.SENSOR_FAULT: "Contec byte 3 bit 4 (probe error)",
    Condition.PULSE_SEARCH: "Contec byte 3 bit 5 (searching)",
}
#: How many packets of a window must carry a status bit for it to count (a quarter of the
#: window, 83 ms). Without a checksum a burst of line noise can frame as a few packets with
#: arbitrary bits; a status the device really reports holds for many packets in a row.
MIN_FLAGGED_PACKETS: Final = 5


class ContecOximeter:
    """Device model for a CMS50D+/CMS50E on the legacy live protocol (a ``SerialDeviceModel``).

    Packets are gathered in windows of :data:`PACKETS_PER_WINDOW` (20 packets, 1/3 s).
    Per window it emits:

    * ``DeviceEvent`` when a condition changes (edge-triggered through a
      :class:`~drivers.conditions.ConditionTracker`): finger out (byte 1 bit 4) ->
      ``SENSOR_OFF``; probe error (byte 3 bit 4) -> ``SENSOR_FAULT``, because 4b calls it a
      probe (sensor) *error*, a fault of the probe distinct from the finger being out;
      searching (byte 3 bit 5) -> ``PULSE_SEARCH``. A bit counts for a window when at least
      :data:`MIN_FLAGGED_PACKETS` of its packets carry it.
    * ``Numeric`` SpO2 (%, 1..100) and pulse rate (/min, 1..254): per window, the most
      frequent value among its packets (ties: the most recent). Every packet repeats the
      device's current values, which change far more slowly than packets arrive, so this
      is the current value with no lag beyond the window, while a single packet corrupted
      on the line (no checksum) cannot decide the numerics. Sentinels and impossible values are
      "no value" (:func:`judge_spo2`, :func:`judge_pulse_rate`); with the finger out both
      are ``UNAVAILABLE`` whatever was sent. Otherwise the status is ``INVALID`` for a probe
      error, ``QUESTIONABLE`` while searching, and ``LOW_PERFUSION`` when the signal
      strength is at most :data:`LOW_SIGNAL_STRENGTH` in every packet of the window that
      reports one (the device's strength nibble is its only perfusion hint).
    * ``Waveform`` pleth: the window's 20 samples at 60 Hz, 0..127 device units,
      resolution 1.0. ``sequence`` counts samples emitted since connect and stays
      contiguous: without a sample counter the model cannot tell how many packets a gap
      lost. A chunk ends at ``now``; several windows completed by one read are laid back
      to back before it.

    Why 3 numerics a second rather than 60: the twin, the store (one row per changed value)
    and the hub are sized for about 3 readings a second per metric, as the Nonin gives;
    alarm condition delays are seconds long, so 1/3 s costs nothing clinically, while 60 Hz
    numerics would multiply that traffic by 20 and carry no more information.

    Not emitted: the beat marker (byte 1 bit 6) and "SpO2 dropping" (byte 1 bit 5), kept on
    :class:`ContecPacket` only: the vocabulary has no beat event, the pulse rate already
    carries the rhythm's rate and analysis finds beats in the pleth itself; the dropping
    bit is the device's own trend hint, and desaturation alarms belong to the alarm
    engine. The pulse bar graph (byte 3 bits 3-0) is the display's pulse-intensity bar,
    rising and falling with every beat like the pleth, so it is no quality figure and is not
    emitted either.

    Identity (manufacturer "Contec"; the protocol names no model, serial or firmware) is
    published once per connection, with the first window.
    """

    def __init__(self, device_id: str, settings: ContecSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self._codec = ContecCodec()
        self.counters: CodecCounters = self._codec.counters
        self._conditions = ConditionTracker(device_id, CONDITIONS, _CONDITION_DETAIL)
        self._window: list[ContecPacket] = []
        self._identified = False
        self._samples_emitted = 0

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
        """Reset for a fresh link. Sends nothing: legacy firmware streams by itself, and
        the gateway never writes device settings.

        Conditions left raised by a link that ended without :meth:`on_disconnect` are
        cleared here, so every connection starts from a clean slate.
        """
        cleared = self._conditions.clear(now)
        self._codec.reset()
        self._window = []
        self._identified = False
        self._samples_emitted = 0
        return b"", cleared

    def feed(self, data: bytes, now: float) -> Sequence[Reading]:
        """Decode ``data`` received at wall time ``now`` (UTC s) into readings."""
        windows: list[list[ContecPacket]] = []
        for packet in self._codec.feed(data):
            self._window.append(packet)
            if len(self._window) == PACKETS_PER_WINDOW:
                windows.append(self._window)
                self._window = []
        readings: list[Reading] = []
        for i, window in enumerate(windows):
            end_time = now - (len(windows) - 1 - i) * WINDOW_PERIOD_S
            readings.extend(self._readings(window, now, end_time))
        return readings

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear every raised condition (the link, not the patient, ended them)."""
        return self._conditions.clear(now)

    def _readings(self, window: list[ContecPacket], now: float, end_time: float) -> list[Reading]:
        readings: list[Reading] = []
        if not self._identified:
            self._identified = True
            readings.append(Identity(self.device_id, now, manufacturer="Contec"))

        finger_out = _flagged(p.finger_out for p in window)
        probe_error = _flagged(p.probe_error for p in window)
        searching = _flagged(p.searching for p in window)
        readings.extend(
            self._conditions.update(
                {
                    Condition.SENSOR_OFF: finger_out,
                    Condition.SENSOR_FAULT: probe_error,
                    Condition.PULSE_SEARCH: searching,
                },
                now,
            )
        )

        quality = MeasurementStatus.NONE
        if probe_error:
            quality |= MeasurementStatus.INVALID
        if searching:
            quality |= MeasurementStatus.QUESTIONABLE
        if _weak_signal(window):
            quality |= MeasurementStatus.LOW_PERFUSION
        for code, unit, judged in (
            (codes.SPO2, codes.PERCENT, judge_spo2(_mode_latest([p.spo2 for p in window]))),
            (
                codes.PULSE_RATE,
                codes.BEATS_PER_MINUTE,
                judge_pulse_rate(_mode_latest([p.pulse_rate for p in window])),
            ),
        ):
            value, status = judged
            if finger_out:
                value, status = None, MeasurementStatus.UNAVAILABLE
            elif value is not None:
                status = quality
            readings.append(Numeric(self.device_id, code, value, unit, now, status=status))

        samples = np.fromiter((p.pleth for p in window), dtype=np.float64, count=len(window))
        readings.append(
            Waveform(
                source=self.device_id,
                code=codes.PLETH,
                unit=codes.DIMENSIONLESS,
                sample_rate=PACKET_RATE_HZ,
                start_time=end_time - WINDOW_PERIOD_S,
                samples=samples,
                sequence=self._samples_emitted,
                resolution=1.0,
            )
        )
        self._samples_emitted += len(samples)
        return readings


def _flagged(bits: Iterable[bool]) -> bool:
    """Whether at least :data:`MIN_FLAGGED_PACKETS` of ``bits`` are set."""
    return sum(1 for bit in bits if bit) >= MIN_FLAGGED_PACKETS


def _weak_signal(window: Sequence[ContecPacket]) -> bool:
    """Whether every packet that reports a strength (0..8) reports at most
    :data:`LOW_SIGNAL_STRENGTH`; a window with no reported strength is not weak."""
    reported = [p.signal_strength for p in window if p.signal_strength <= SIGNAL_STRENGTH_MAX]
    return bool(reported) and max(reported) <= LOW_SIGNAL_STRENGTH


def _mode_latest(values: Sequence[int]) -> int:
    """The most frequent of ``values`` (non-empty); among equally frequent, the latest."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in reversed(values) if counts[v] == top)


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.contec implements each; same meaning as Nonin's).
SCENARIOS: Final = ("normal", "desaturation", "probe_off", "noise", "unplug")


SPEC = DriverSpec.typed(
    name="contec-cms50",
    description=(
        "Contec CMS50D+ / CMS50E pulse oximeter, legacy live protocol (19200 8O1, 5-byte "
        "packets): SpO2, pulse rate, pleth at 60 Hz, finger-out, probe-error and "
        "searching conditions"
    ),
    settings=ContecSettings,
    make_model=ContecOximeter,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.contec:ContecSimulator",
    # It streams unasked, so a port can be probed: 4b's 19200 8O1 first, then the 4800 8N1
    # of the translated Contec sheet.
    probe_variants=({}, {"baudrate": 4800, "parity": "N"}),
)
