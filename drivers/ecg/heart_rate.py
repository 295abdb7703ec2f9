"""Bluetooth SIG Heart Rate Service (0x180D): the Heart Rate Measurement characteristic.

Heart Rate Measurement (0x2A37, notify; ``protocols.md`` section 2), little-endian:

==========  ===========================================================================
Field       Content
==========  ===========================================================================
flags       bit 0: rate is uint16 (else uint8); bits 1-2: sensor contact (0b10 supported,
            no contact; 0b11 supported, contact; 0b00/0b01 not supported); bit 3: energy
            expended present; bit 4: RR intervals present; bits 5-7 reserved
rate        beats/min, uint8 or uint16: a plain integer, not an SFLOAT
energy      kJ, uint16 (saturates at 0xFFFF until reset)
RR          uint16 each, unit 1/1024 s, oldest first, as many as fill the payload
==========  ===========================================================================

A payload too short for its flags, or whose RR part has an odd length, is malformed and
dropped whole; reserved flag bits are kept so payloads round-trip byte for byte.
:func:`decode_heart_rate` returns ``None`` for a malformed payload and never raises;
:func:`encode_heart_rate` is its inverse, used by the simulated strap and the property
tests; :class:`HeartRateStrap` is the device model. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from drivers import codes, gatt
from drivers.ble_settings import BleSettings
from drivers.conditions import ConditionTracker
from drivers.readings import CodecCounters, Condition, MeasurementStatus, Numeric, Reading
from drivers.registry import DriverSpec

#: RR intervals are counted in 1/1024 s.
RR_TICKS_PER_SECOND: Final = 1024
_FLAG_UINT16: Final = 0x01
_FLAG_CONTACT_MASK: Final = 0x06
_FLAG_ENERGY: Final = 0x08
_FLAG_RR: Final = 0x10
_DEFINED_FLAGS: Final = 0x1F


class SensorContact(enum.Enum):
    """Flags bits 1-2: whether the strap reports skin contact, and what it reports."""

    #: Contact detection not supported (bits 0b00 or 0b01).
    NOT_SUPPORTED = "not_supported"
    #: Supported, and the electrodes are off the skin (0b10).
    NO_CONTACT = "no_contact"
    #: Supported, and the electrodes touch the skin (0b11).
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """A decoded Heart Rate Measurement.

    ``heart_rate`` in beats/min (0..65535 as sent; see :data:`HEART_RATE_RANGE`);
    ``energy_expended`` in kJ, ``None`` when absent; ``rr_intervals`` in 1/1024 s ticks,
    oldest first, ``None`` when the RR flag is clear (an empty tuple when it is set with no
    values). ``wide`` says the rate was sent as uint16; ``contact_bits`` are flag bits
    1-2 as sent (0..3) and ``reserved_flags`` bits 5-7, kept for byte-exact round trips.
    """

    heart_rate: int
    contact_bits: int = 0
    energy_expended: int | None = None
    rr_intervals: tuple[int, ...] | None = None
    wide: bool = False
    reserved_flags: int = 0

    @property
    def contact(self) -> SensorContact:
        """What the strap says about skin contact (only 0b10 means no contact)."""
        if self.contact_bits == 0b10:
            return SensorContact.NO_CONTACT
        if self.contact_bits == 0b11:
            return SensorContact.CONTACT
        return SensorContact.NOT_SUPPORTED

    @property
    def rr_seconds(self) -> tuple[float, ...]:
        """RR intervals in seconds, oldest first (empty when none were sent)."""
        return tuple(rr / RR_TICKS_PER_SECOND for rr in self.rr_intervals or ())

    def encode(self) -> bytes:
        """The payload carrying exactly this measurement."""
        return encode_heart_rate(
            self.heart_rate,
            contact_bits=self.contact_bits,
            energy_expended=self.energy_expended,
            rr_intervals=self.rr_intervals,
            wide=self.wide,
            reserved_flags=self.reserved_flags,
        )


_CONTACT_BITS: Final = {
    SensorContact.NOT_SUPPORTED: 0b00,
    SensorContact.NO_CONTACT: 0b10,
    SensorContact.CONTACT: 0b11,
}


def contact_bits_for(contact: SensorContact) -> int:
    """The flags bits 1-2 value a strap sends for ``contact`` (0b00 when not supported)."""
    return _CONTACT_BITS[contact]


def encode_heart_rate(
    heart_rate: int,
    *,
    contact_bits: int = 0,
    energy_expended: int | None = None,
    rr_intervals: Sequence[int] | None = None,
    wide: bool | None = None,
    reserved_flags: int = 0,
) -> bytes:
    """A Heart Rate Measurement payload (0x2A37).

    ``heart_rate`` in beats/min; ``wide`` forces uint16 (``None``: uint16 only when the
    rate exceeds 255); ``contact_bits`` are flag bits 1-2 (see :func:`contact_bits_for`);
    ``energy_expended`` in kJ (0..65535); ``rr_intervals`` in 1/1024 s ticks (0..65535
    each), oldest first. ``ValueError`` for anything the wire cannot carry.
    """
    if reserved_flags & _DEFINED_FLAGS or not 0 <= reserved_flags <= 0xFF:
        raise ValueError("reserved_flags may only hold bits 5-7")
    if not 0 <= contact_bits <= 3:
        raise ValueError(f"contact_bits must be 0..3, got {contact_bits}")
    if wide is None:
        wide = heart_rate > 0xFF
    limit = 0xFFFF if wide else 0xFF
    if not 0 <= heart_rate <= limit:
        raise ValueError(f"heart rate must be 0..{limit}, got {heart_rate}")
    flags = reserved_flags | (contact_bits << 1) | (_FLAG_UINT16 if wide else 0)
    body = heart_rate.to_bytes(2 if wide else 1, "little")
    if energy_expended is not None:
        if not 0 <= energy_expended <= 0xFFFF:
            raise ValueError(f"energy expended must be 0..65535 kJ, got {energy_expended}")
        flags |= _FLAG_ENERGY
        body += energy_expended.to_bytes(2, "little")
    if rr_intervals is not None:
        flags |= _FLAG_RR
        for rr in rr_intervals:
            if not 0 <= rr <= 0xFFFF:
                raise ValueError(f"an RR interval must be 0..65535 ticks, got {rr}")
            body += rr.to_bytes(2, "little")
    return bytes((flags,)) + body


def decode_heart_rate(payload: bytes) -> HeartRateMeasurement | None:
    """Decode a Heart Rate Measurement; ``None`` when malformed (see the module docstring)."""
    if not payload:
        return None
    flags = payload[0]
    wide = bool(flags & _FLAG_UINT16)
    pos = 3 if wide else 2
    if len(payload) < pos:
        return None
    heart_rate = int.from_bytes(payload[1:pos], "little")
    energy: int | None = None
    if flags & _FLAG_ENERGY:
        if len(payload) < pos + 2:
            return None
        energy = int.from_bytes(payload[pos : pos + 2], "little")
        pos += 2
    rest = payload[pos:]
    rr: tuple[int, ...] | None = None
    if flags & _FLAG_RR:
        if len(rest) % 2:
            return None
        rr = tuple(int.from_bytes(rest[i : i + 2], "little") for i in range(0, len(rest), 2))
    elif rest:
        return None
    return HeartRateMeasurement(
        heart_rate=heart_rate,
        contact_bits=(flags & _FLAG_CONTACT_MASK) >> 1,
        energy_expended=energy,
        rr_intervals=rr,
        wide=wide,
        reserved_flags=flags & ~_DEFINED_FLAGS & 0xFF,
    )


# --- device model --------------------------------------------------------------------------


class HeartRateSettings(BleSettings):
    """Which heart-rate strap to use (see :class:`~drivers.ble_settings.BleSettings`)."""


#: Heart rates outside this range (beats/min) are published as no value, INVALID.
HEART_RATE_RANGE: Final = (0, 300)
#: Every condition this driver reports.
CONDITIONS: Final = (Condition.LEAD_OFF,)
_CONDITION_DETAIL: Final = {
    Condition.LEAD_OFF: "Heart Rate Measurement sensor contact 0b10 (supported, no contact)"
}


class HeartRateStrap:
    """Device model for a Bluetooth heart-rate strap (a ``BleDeviceModel``, service 0x180D).

    Subscribes to Heart Rate Measurement and writes nothing (the Control Point only resets
    the energy counter). Per notification:

    * ``Numeric`` heart rate (MDC_ECG_HEART_RATE, /min): a strap measures the ECG's R
      waves. ``None`` with UNAVAILABLE while the strap reports no skin contact, ``None``
      with INVALID beyond :data:`HEART_RATE_RANGE` (the wire allows up to 65535).
    * **The beat-interval stream**: one ``Numeric`` per RR interval, code
      MDC_ECG_TIME_PD_RR_GL (147240), in ms (exact: a tick is 125/128 ms), oldest first.
      Its ``time`` is when the beat that *ends* the interval happened, estimated by
      laying the intervals back to back ending at the notification's arrival ``now``
      (straps notify about once a second, soon after the last beat; the error is the
      notification latency, the same for every interval of one notification). So the
      stream is a sequence of (beat time, RR) pairs that rhythm analysis can read
      without the waveform (irregularity for AF, long RR for pause). Intervals sent while
      the strap reports no contact are published QUESTIONABLE. Notifications lost over
      the air lose their intervals silently: the protocol has no counter to detect it.
      Stamping the beat rather than the arrival departs on purpose from the usual
      meaning of ``Numeric.time``, for this one metric: a beat stream is only useful
      with beat times. The twin's store keeps numerics as a step function, so two equal
      consecutive intervals are stored once; consumers that need every beat (rhythm
      analysis) take the stream from the hub.
    * ``DeviceEvent`` LEAD_OFF while the strap reports "supported, no contact"; cleared
      by "contact"; untouched while it reports "not supported" (Polar H10s do).

    Energy expended is decoded but not published (no clinical use at the bedside).
    """

    service_uuid: str = gatt.HEART_RATE_SERVICE
    notify_uuids: tuple[str, ...] = (gatt.HEART_RATE_MEASUREMENT,)

    def __init__(self, device_id: str, settings: HeartRateSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self.counters = CodecCounters()
        self._conditions = ConditionTracker(device_id, CONDITIONS, _CONDITION_DETAIL)

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    def on_connect(self, now: float) -> tuple[Sequence[tuple[str, bytes]], Sequence[Reading]]:
        """No writes; clears conditions a connection that ended unannounced left raised."""
        return (), self._conditions.clear(now)

    def feed(self, uuid: str, payload: bytes, now: float) -> Sequence[Reading]:
        """Decode one notification of ``uuid`` received at wall time ``now`` (UTC s)."""
        measurement = (
            decode_heart_rate(payload) if uuid.lower() == gatt.HEART_RATE_MEASUREMENT else None
        )
        gatt.tally(self.counters, payload, measurement is not None)
        if measurement is None:
            return []
        readings: list[Reading] = []
        contact = measurement.contact
        if contact is not SensorContact.NOT_SUPPORTED:
            state = {Condition.LEAD_OFF: contact is SensorContact.NO_CONTACT}
            readings.extend(self._conditions.update(state, now))
        rate: float | None = float(measurement.heart_rate)
        status = MeasurementStatus.NONE
        if contact is SensorContact.NO_CONTACT:
            rate, status = None, MeasurementStatus.UNAVAILABLE
        elif not HEART_RATE_RANGE[0] <= measurement.heart_rate <= HEART_RATE_RANGE[1]:
            rate, status = None, MeasurementStatus.INVALID
        readings.append(
            Numeric(
                self.device_id,
                codes.ECG_HEART_RATE,
                rate,
                codes.BEATS_PER_MINUTE,
                now,
                status=status,
            )
        )
        readings.extend(self._beat_intervals(measurement, contact, now))
        return readings

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear every raised condition (the link, not the patient, ended them)."""
        return self._conditions.clear(now)

    def _beat_intervals(
        self, measurement: HeartRateMeasurement, contact: SensorContact, now: float
    ) -> list[Reading]:
        rr = measurement.rr_intervals or ()
        status = (
            MeasurementStatus.QUESTIONABLE
            if contact is SensorContact.NO_CONTACT
            else MeasurementStatus.NONE
        )
        readings: list[Reading] = []
        # The last interval ends at ``now``; each earlier one ends where the next began.
        ends = now
        for ticks in reversed(rr):
            readings.append(
                Numeric(
                    self.device_id,
                    codes.ECG_RR_INTERVAL,
                    ticks * 1000 / RR_TICKS_PER_SECOND,
                    codes.MILLISECOND,
                    ends,
                    status=status,
                )
            )
            ends -= ticks / RR_TICKS_PER_SECOND
        readings.reverse()
        return readings


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.ble_peripherals implements each).
SCENARIOS: Final = ("normal", "disconnects", "battery_low", "sensor_off")

SPEC = DriverSpec.typed(
    name="ble-heart-rate",
    description=(
        "Bluetooth LE heart-rate strap (SIG Heart Rate Service 0x180D): heart rate, RR "
        "intervals as a beat-interval stream, electrode contact"
    ),
    settings=HeartRateSettings,
    make_model=HeartRateStrap,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.ble_peripherals:HeartRatePeripheral",
    probe_variants=(),
    transport="ble",
)
