"""Bluetooth SIG Pulse Oximeter Service (PLXS, service 0x1822) over Bluetooth LE.

Three characteristics (``protocols.md`` section 1), all little-endian:

* **PLX Continuous Measurement** (0x2A5F, notify): ``flags | SpO2 | PR`` then, by flag
  bit, SpO2PR-Fast (bit 0), SpO2PR-Slow (bit 1), Measurement Status (bit 2, 16 bits),
  Device and Sensor Status (bit 3, 24 bits), Pulse Amplitude Index (bit 4). 5..20 bytes.
* **PLX Spot-Check Measurement** (0x2A5E, indicate): ``flags | SpO2 | PR`` then
  Timestamp (bit 0, 7 bytes), Measurement Status (bit 1), Device and Sensor Status
  (bit 2), Pulse Amplitude Index (bit 3); bit 4 "device clock not set" has no field.
  The flag bit numbers differ from 0x2A5F's.
* **PLX Features** (0x2A60, read): supported features (16 bits), then the Measurement
  Status support mask (if bit 0) and the Device and Sensor Status support mask (if bit 1).

SpO2 (%), pulse rate (/min) and the pulse amplitude index (%) are IEEE-11073 SFLOATs
(:mod:`drivers.ieee11073`): a special value decodes to :class:`~drivers.ieee11073.NoValue`
and is published as "no value", never as a number.

A payload whose length differs from the length its flags imply is malformed (1.8) and
dropped whole; reserved flag bits carry no field and are kept so a payload round-trips
byte for byte. :func:`decode_plx_continuous`, :func:`decode_plx_spot_check` and
:func:`decode_plx_features` return ``None`` for a malformed payload and never raise;
``encode_*`` are their inverses, used by the simulated peripheral and the property tests;
:class:`PlxOximeter` is the device model. Nothing here does I/O.
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from drivers import codes, gatt
from drivers.ble_settings import BleSettings
from drivers.conditions import ConditionTracker
from drivers.ieee11073 import MedFloat, MedValue, NoValue, read_sfloat, sfloat_bytes
from drivers.readings import (
    CodecCounters,
    Condition,
    MeasurementStatus,
    Numeric,
    Reading,
)
from drivers.registry import DriverSpec

#: A value to encode: an exact wire form, a reason for no value, or a plain number
#: (converted with :meth:`MedFloat.of`; NaN and infinities become the special values).
SfloatInput: TypeAlias = MedFloat | NoValue | float


class PlxMeasurementStatus(enum.IntFlag):
    """Measurement Status bits (protocols.md 1.5); bits 0-4 are reserved."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATE = 1 << 6
    VALIDATED = 1 << 7
    FULLY_QUALIFIED = 1 << 8
    FROM_STORAGE = 1 << 9
    DEMONSTRATION = 1 << 10
    TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    UNAVAILABLE = 1 << 13
    QUESTIONABLE = 1 << 14
    INVALID = 1 << 15


class PlxDeviceStatus(enum.IntFlag):
    """Device and Sensor Status bits (protocols.md 1.5); bits 16-23 are reserved."""

    EXTENDED_DISPLAY_UPDATE = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NON_PULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED = 1 << 11
    UNKNOWN_SENSOR = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


class PlxFeature(enum.IntFlag):
    """Supported Features bits of PLX Features (protocols.md 1.6); bits 8-15 reserved."""

    MEASUREMENT_STATUS: Final = 1 << 0
    DEVICE_STATUS: Final = 1 << 1
    SPOT_CHECK_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    FAST: Final = 1 << 4
    SLOW: Final = 1 << 5
    PULSE_AMPLITUDE_INDEX: Final = 1 << 6
    MULTIPLE_BONDS = 1 << 7


class _ContinuousFlag:
    # Plain ints, not an IntFlag: flag tests run on every payload and enum operators
    # cost several times a plain ``&``.
    FAST: Final = 1 << 0
    SLOW: Final = 1 << 1
    MEASUREMENT_STATUS: Final = 1 << 2
    DEVICE_STATUS: Final = 1 << 3
    PULSE_AMPLITUDE_INDEX: Final = 1 << 4


class _SpotCheckFlag:
    TIMESTAMP: Final = 1 << 0
    MEASUREMENT_STATUS: Final = 1 << 1
    DEVICE_STATUS: Final = 1 << 2
    PULSE_AMPLITUDE_INDEX: Final = 1 << 3
    CLOCK_NOT_SET: Final = 1 << 4


#: Flag bits each characteristic defines; the rest (bits 5-7) are reserved.
_CONTINUOUS_DEFINED: Final = 0x1F
_SPOT_CHECK_DEFINED: Final = 0x1F
_FEATURES_DEFINED: Final = 0xFF
_SFLOAT_LEN: Final = 2
_MEAS_STATUS_LEN: Final = 2
_DEVICE_STATUS_LEN: Final = 3
_TIMESTAMP_LEN: Final = 7


# --- vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpO2PR:
    """One SpO2 (%) and pulse rate (/min) pair, each a number or a reason for none."""

    spo2: MedValue
    pulse_rate: MedValue


@dataclass(frozen=True, slots=True)
class DateTime:
    """The SIG Date Time field as sent: year 1582..9999 (0 = unknown), month 1..12 (0 =
    unknown), day 1..31 (0 = unknown), hours 0..23, minutes 0..59, seconds 0..59.

    Fields are kept raw so any payload round-trips; :meth:`epoch` judges them.
    """

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    def epoch(self) -> float | None:
        """UTC seconds since the Unix epoch, reading the device's clock as UTC (the field
        carries no time zone: [U] whether devices send local time); ``None`` when any
        field is unknown or out of range."""
        if not (
            1582 <= self.year <= 9999
            and 1 <= self.month <= 12
            and 1 <= self.day <= calendar.monthrange(self.year, self.month)[1]
            and 0 <= self.hours <= 23
            and 0 <= self.minutes <= 59
            and 0 <= self.seconds <= 59
        ):
            return None
        return float(
            calendar.timegm(
                (self.year, self.month, self.day, self.hours, self.minutes, self.seconds)
            )
        )


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    """A decoded PLX Continuous Measurement (0x2A5F).

    ``normal`` is always present; ``fast``, ``slow``, the two status fields and the pulse
    amplitude index (%) are ``None`` when their flag is clear. ``reserved_flags`` holds
    flag bits 5-7 as sent (normally 0).
    """

    normal: SpO2PR
    fast: SpO2PR | None = None
    slow: SpO2PR | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_status: PlxDeviceStatus | None = None
    pulse_amplitude_index: MedValue | None = None
    reserved_flags: int = 0

    def encode(self) -> bytes:
        """The payload carrying exactly this measurement."""
        return encode_plx_continuous(
            self.normal.spo2,
            self.normal.pulse_rate,
            fast=None if self.fast is None else (self.fast.spo2, self.fast.pulse_rate),
            slow=None if self.slow is None else (self.slow.spo2, self.slow.pulse_rate),
            measurement_status=self.measurement_status,
            device_status=self.device_status,
            pulse_amplitude_index=self.pulse_amplitude_index,
            reserved_flags=self.reserved_flags,
        )


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    """A decoded PLX Spot-Check Measurement (0x2A5E).

    Optional fields are ``None`` when their flag is clear; ``clock_not_set`` is flag bit 4
    (the timestamp, if any, is then not to be trusted); ``reserved_flags`` holds bits 5-7.
    """

    spo2: MedValue
    pulse_rate: MedValue
    timestamp: DateTime | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_status: PlxDeviceStatus | None = None
    pulse_amplitude_index: MedValue | None = None
    clock_not_set: bool = False
    reserved_flags: int = 0

    def encode(self) -> bytes:
        """The payload carrying exactly this measurement."""
        return encode_plx_spot_check(
            self.spo2,
            self.pulse_rate,
            timestamp=self.timestamp,
            measurement_status=self.measurement_status,
            device_status=self.device_status,
            pulse_amplitude_index=self.pulse_amplitude_index,
            clock_not_set=self.clock_not_set,
            reserved_flags=self.reserved_flags,
        )


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """Decoded PLX Features (0x2A60).

    ``measurement_status_support`` is present exactly when ``supported`` has
    ``MEASUREMENT_STATUS``, ``device_status_support`` exactly when it has
    ``DEVICE_STATUS``; each is a mask of the status bits the device can set.
    """

    supported: PlxFeature
    measurement_status_support: PlxMeasurementStatus | None = None
    device_status_support: PlxDeviceStatus | None = None

    def encode(self) -> bytes:
        """The payload carrying exactly these features."""
        return encode_plx_features(
            self.supported,
            measurement_status_support=self.measurement_status_support,
            device_status_support=self.device_status_support,
        )


# --- encoders ------------------------------------------------------------------------------


def _uint(value: int, length: int, what: str) -> bytes:
    if not 0 <= value < 1 << (8 * length):
        raise ValueError(f"{what} must fit {8 * length} bits, got {value:#x}")
    return int(value).to_bytes(length, "little")


def _reserved(bits: int, defined: int) -> int:
    if bits & defined or not 0 <= bits <= 0xFF:
        raise ValueError(f"reserved_flags may only hold bits of {~defined & 0xFF:#04x}")
    return bits


def encode_plx_continuous(
    spo2: SfloatInput,
    pulse_rate: SfloatInput,
    *,
    fast: tuple[SfloatInput, SfloatInput] | None = None,
    slow: tuple[SfloatInput, SfloatInput] | None = None,
    measurement_status: int | None = None,
    device_status: int | None = None,
    pulse_amplitude_index: SfloatInput | None = None,
    reserved_flags: int = 0,
) -> bytes:
    """A PLX Continuous Measurement payload (0x2A5F); flags follow from what is given.

    ``spo2`` in %, ``pulse_rate`` in /min; ``fast`` and ``slow`` are (SpO2, PR) pairs;
    ``measurement_status`` a 16-bit and ``device_status`` a 24-bit mask
    (:class:`PlxMeasurementStatus`, :class:`PlxDeviceStatus`); ``pulse_amplitude_index``
    in %. ``ValueError`` for anything the wire cannot carry.
    """
    flags = _reserved(reserved_flags, _CONTINUOUS_DEFINED)
    body = sfloat_bytes(spo2) + sfloat_bytes(pulse_rate)
    if fast is not None:
        flags |= _ContinuousFlag.FAST
        body += sfloat_bytes(fast[0]) + sfloat_bytes(fast[1])
    if slow is not None:
        flags |= _ContinuousFlag.SLOW
        body += sfloat_bytes(slow[0]) + sfloat_bytes(slow[1])
    if measurement_status is not None:
        flags |= _ContinuousFlag.MEASUREMENT_STATUS
        body += _uint(measurement_status, _MEAS_STATUS_LEN, "measurement_status")
    if device_status is not None:
        flags |= _ContinuousFlag.DEVICE_STATUS
        body += _uint(device_status, _DEVICE_STATUS_LEN, "device_status")
    if pulse_amplitude_index is not None:
        flags |= _ContinuousFlag.PULSE_AMPLITUDE_INDEX
        body += sfloat_bytes(pulse_amplitude_index)
    return bytes((flags,)) + body


def encode_date_time(timestamp: DateTime) -> bytes:
    """The 7-byte SIG Date Time field (year uint16 LE, then one byte per field)."""
    t = timestamp
    return _uint(t.year, 2, "year") + bytes(
        _uint(v, 1, "date field")[0] for v in (t.month, t.day, t.hours, t.minutes, t.seconds)
    )


def encode_plx_spot_check(
    spo2: SfloatInput,
    pulse_rate: SfloatInput,
    *,
    timestamp: DateTime | None = None,
    measurement_status: int | None = None,
    device_status: int | None = None,
    pulse_amplitude_index: SfloatInput | None = None,
    clock_not_set: bool = False,
    reserved_flags: int = 0,
) -> bytes:
    """A PLX Spot-Check Measurement payload (0x2A5E); flags follow from what is given.

    Units and masks as :func:`encode_plx_continuous`; ``timestamp`` is the device's clock
    at the measurement; ``clock_not_set`` sets flag bit 4.
    """
    flags = _reserved(reserved_flags, _SPOT_CHECK_DEFINED)
    body = sfloat_bytes(spo2) + sfloat_bytes(pulse_rate)
    if timestamp is not None:
        flags |= _SpotCheckFlag.TIMESTAMP
        body += encode_date_time(timestamp)
    if measurement_status is not None:
        flags |= _SpotCheckFlag.MEASUREMENT_STATUS
        body += _uint(measurement_status, _MEAS_STATUS_LEN, "measurement_status")
    if device_status is not None:
        flags |= _SpotCheckFlag.DEVICE_STATUS
        body += _uint(device_status, _DEVICE_STATUS_LEN, "device_status")
    if pulse_amplitude_index is not None:
        flags |= _SpotCheckFlag.PULSE_AMPLITUDE_INDEX
        body += sfloat_bytes(pulse_amplitude_index)
    if clock_not_set:
        flags |= _SpotCheckFlag.CLOCK_NOT_SET
    return bytes((flags,)) + body


def encode_plx_features(
    supported: int,
    *,
    measurement_status_support: int | None = None,
    device_status_support: int | None = None,
) -> bytes:
    """A PLX Features payload (0x2A60).

    ``supported`` is the 16-bit :class:`PlxFeature` mask; its bits 0 and 1 are set here
    when the matching support mask is given and cleared when it is not, since they
    announce those fields.
    """
    # Plain ints: ~ on an IntFlag would also clear the reserved bits 8-15.
    flags = int(supported) & ~int(PlxFeature.MEASUREMENT_STATUS | PlxFeature.DEVICE_STATUS)
    body = b""
    if measurement_status_support is not None:
        flags |= PlxFeature.MEASUREMENT_STATUS
        body += _uint(measurement_status_support, _MEAS_STATUS_LEN, "measurement status support")
    if device_status_support is not None:
        flags |= PlxFeature.DEVICE_STATUS
        body += _uint(device_status_support, _DEVICE_STATUS_LEN, "device status support")
    return _uint(int(flags), 2, "supported features") + body


# --- decoders ------------------------------------------------------------------------------


def _continuous_length(flags: int) -> int:
    length = 1 + 2 * _SFLOAT_LEN
    length += 2 * _SFLOAT_LEN * bool(flags & _ContinuousFlag.FAST)
    length += 2 * _SFLOAT_LEN * bool(flags & _ContinuousFlag.SLOW)
    length += _MEAS_STATUS_LEN * bool(flags & _ContinuousFlag.MEASUREMENT_STATUS)
    length += _DEVICE_STATUS_LEN * bool(flags & _ContinuousFlag.DEVICE_STATUS)
    length += _SFLOAT_LEN * bool(flags & _ContinuousFlag.PULSE_AMPLITUDE_INDEX)
    return length


def _spot_check_length(flags: int) -> int:
    length = 1 + 2 * _SFLOAT_LEN
    length += _TIMESTAMP_LEN * bool(flags & _SpotCheckFlag.TIMESTAMP)
    length += _MEAS_STATUS_LEN * bool(flags & _SpotCheckFlag.MEASUREMENT_STATUS)
    length += _DEVICE_STATUS_LEN * bool(flags & _SpotCheckFlag.DEVICE_STATUS)
    length += _SFLOAT_LEN * bool(flags & _SpotCheckFlag.PULSE_AMPLITUDE_INDEX)
    return length


class _Reader:
    """Sequential little-endian reads from a payload whose length was already checked."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._data = data
        self._pos = offset

    def sfloat(self) -> MedValue:
        value = read_sfloat(self._data, self._pos)
        self._pos += _SFLOAT_LEN
        return value

    def pair(self) -> SpO2PR:
        return SpO2PR(self.sfloat(), self.sfloat())

    def uint(self, length: int) -> int:
        value = int.from_bytes(self._data[self._pos : self._pos + length], "little")
        self._pos += length
        return value

    def date_time(self) -> DateTime:
        year = self.uint(2)
        month, day, hours, minutes, seconds = self._data[self._pos : self._pos + 5]
        self._pos += 5
        return DateTime(year, month, day, hours, minutes, seconds)


def decode_plx_continuous(payload: bytes) -> PlxContinuous | None:
    """Decode a PLX Continuous Measurement; ``None`` if its length does not match its flags."""
    if not payload or len(payload) != _continuous_length(payload[0]):
        return None
    flags = payload[0]
    r = _Reader(payload, 1)
    normal = r.pair()
    fast = r.pair() if flags & _ContinuousFlag.FAST else None
    slow = r.pair() if flags & _ContinuousFlag.SLOW else None
    measurement = (
        PlxMeasurementStatus(r.uint(_MEAS_STATUS_LEN))
        if flags & _ContinuousFlag.MEASUREMENT_STATUS
        else None
    )
    device = (
        PlxDeviceStatus(r.uint(_DEVICE_STATUS_LEN))
        if flags & _ContinuousFlag.DEVICE_STATUS
        else None
    )
    pai = r.sfloat() if flags & _ContinuousFlag.PULSE_AMPLITUDE_INDEX else None
    return PlxContinuous(
        normal, fast, slow, measurement, device, pai, flags & ~_CONTINUOUS_DEFINED & 0xFF
    )


def decode_plx_spot_check(payload: bytes) -> PlxSpotCheck | None:
    """Decode a PLX Spot-Check Measurement; ``None`` if its length does not match its flags."""
    if not payload or len(payload) != _spot_check_length(payload[0]):
        return None
    flags = payload[0]
    r = _Reader(payload, 1)
    spo2, pulse_rate = r.sfloat(), r.sfloat()
    timestamp = r.date_time() if flags & _SpotCheckFlag.TIMESTAMP else None
    measurement = (
        PlxMeasurementStatus(r.uint(_MEAS_STATUS_LEN))
        if flags & _SpotCheckFlag.MEASUREMENT_STATUS
        else None
    )
    device = (
        PlxDeviceStatus(r.uint(_DEVICE_STATUS_LEN))
        if flags & _SpotCheckFlag.DEVICE_STATUS
        else None
    )
    pai = r.sfloat() if flags & _SpotCheckFlag.PULSE_AMPLITUDE_INDEX else None
    return PlxSpotCheck(
        spo2,
        pulse_rate,
        timestamp,
        measurement,
        device,
        pai,
        bool(flags & _SpotCheckFlag.CLOCK_NOT_SET),
        flags & ~_SPOT_CHECK_DEFINED & 0xFF,
    )


def decode_plx_features(payload: bytes) -> PlxFeatures | None:
    """Decode PLX Features; ``None`` if its length does not match its feature bits."""
    if len(payload) < 2:
        return None
    supported = PlxFeature(int.from_bytes(payload[:2], "little"))
    has_meas = PlxFeature.MEASUREMENT_STATUS in supported
    has_dev = PlxFeature.DEVICE_STATUS in supported
    if len(payload) != 2 + _MEAS_STATUS_LEN * has_meas + _DEVICE_STATUS_LEN * has_dev:
        return None
    r = _Reader(payload, 2)
    meas = PlxMeasurementStatus(r.uint(_MEAS_STATUS_LEN)) if has_meas else None
    dev = PlxDeviceStatus(r.uint(_DEVICE_STATUS_LEN)) if has_dev else None
    return PlxFeatures(supported, meas, dev)


# --- device model --------------------------------------------------------------------------


class PlxSettings(BleSettings):
    """Which PLX oximeter to use (see :class:`~drivers.ble_settings.BleSettings`)."""


_SENSOR_OFF_BITS: Final = (
    PlxDeviceStatus.SENSOR_UNCONNECTED
    | PlxDeviceStatus.SENSOR_DISPLACED
    | PlxDeviceStatus.SENSOR_DISCONNECTED
)
_SIGNAL_QUALITY_BITS: Final = (
    PlxDeviceStatus.INADEQUATE_SIGNAL
    | PlxDeviceStatus.POOR_SIGNAL
    | PlxDeviceStatus.NON_PULSATILE_SIGNAL
)
_ARTIFACT_BITS: Final = (
    PlxDeviceStatus.SIGNAL_PROCESSING_IRREGULARITY
    | PlxDeviceStatus.ERRATIC_SIGNAL
    | PlxDeviceStatus.QUESTIONABLE_PULSE
)
#: Device and Sensor Status bits behind each condition the driver raises.
_CONDITION_BITS: Final[tuple[tuple[Condition, PlxDeviceStatus], ...]] = (
    (Condition.SENSOR_OFF, _SENSOR_OFF_BITS),
    (
        Condition.SENSOR_FAULT,
        PlxDeviceStatus.UNKNOWN_SENSOR | PlxDeviceStatus.SENSOR_MALFUNCTIONING,
    ),
    (Condition.DEVICE_MALFUNCTION, PlxDeviceStatus.EQUIPMENT_MALFUNCTION),
    (Condition.LOW_PERFUSION, PlxDeviceStatus.LOW_PERFUSION),
    (Condition.LOW_SIGNAL_QUALITY, _SIGNAL_QUALITY_BITS),
    (Condition.ARTIFACT, _ARTIFACT_BITS),
    (Condition.INTERFERENCE, PlxDeviceStatus.SENSOR_INTERFERENCE),
)
#: Every condition this driver reports, in the order events are emitted.
CONDITIONS: Final[tuple[Condition, ...]] = tuple(c for c, _ in _CONDITION_BITS)
_CONDITION_DETAIL: Final[dict[Condition, str]] = {
    Condition.SENSOR_OFF: "PLX device status bit 11, 13 or 15 (sensor unconnected/displaced/"
    "disconnected)",
    Condition.SENSOR_FAULT: "PLX device status bit 12 or 14 (unknown sensor/sensor malfunction)",
    Condition.DEVICE_MALFUNCTION: "PLX device status bit 1 (equipment malfunction)",
    Condition.LOW_PERFUSION: "PLX device status bit 5 (low perfusion)",
    Condition.LOW_SIGNAL_QUALITY: "PLX device status bit 3, 4 or 7 (inadequate/poor/"
    "non-pulsatile signal)",
    Condition.ARTIFACT: "PLX device status bit 2, 6 or 8 (processing irregularity/erratic "
    "signal/questionable pulse)",
    Condition.INTERFERENCE: "PLX device status bit 10 (sensor interference)",
}

#: Plausible ranges: a number outside is published as no value, INVALID.
SPO2_RANGE: Final = (0.0, 100.0)  # %
PULSE_RATE_RANGE: Final = (0.0, 350.0)  # /min
PAI_RANGE: Final = (0.0, 100.0)  # %

#: (Measurement Status mask, Device and Sensor Status mask, flag) for :func:`quality_of`.
_QUALITY_MASKS: Final[tuple[tuple[int, int, MeasurementStatus], ...]] = tuple(
    (int(meas), int(device), flag)
    for meas, device, flag in (
        (
            PlxMeasurementStatus.UNAVAILABLE,
            _SENSOR_OFF_BITS,
            MeasurementStatus.UNAVAILABLE,
        ),
        (
            PlxMeasurementStatus.INVALID,
            PlxDeviceStatus.EQUIPMENT_MALFUNCTION
            | PlxDeviceStatus.SENSOR_MALFUNCTIONING
            | PlxDeviceStatus.UNKNOWN_SENSOR,
            MeasurementStatus.INVALID,
        ),
        (
            PlxMeasurementStatus.QUESTIONABLE,
            _SIGNAL_QUALITY_BITS | _ARTIFACT_BITS | PlxDeviceStatus.SENSOR_INTERFERENCE,
            MeasurementStatus.QUESTIONABLE,
        ),
        (0, PlxDeviceStatus.LOW_PERFUSION, MeasurementStatus.LOW_PERFUSION),
        (PlxMeasurementStatus.EARLY_ESTIMATE, 0, MeasurementStatus.EARLY),
        (
            PlxMeasurementStatus.DEMONSTRATION | PlxMeasurementStatus.TESTING,
            0,
            MeasurementStatus.DEMO,
        ),
    )
)
#: The same masks as :data:`_CONDITION_BITS`, as plain ints for the per-payload test.
_CONDITION_MASKS: Final[tuple[tuple[Condition, int], ...]] = tuple(
    (c, int(bits)) for c, bits in _CONDITION_BITS
)


def quality_of(
    measurement: PlxMeasurementStatus | None, device: PlxDeviceStatus | None
) -> MeasurementStatus:
    """The measurement-status flags the two status fields give every value of a payload.

    Measurement Status: unavailable (13) -> UNAVAILABLE, invalid (15) -> INVALID,
    questionable (14) -> QUESTIONABLE, early estimate (6) -> EARLY, demonstration (10)
    or testing (11) -> DEMO. Device and Sensor Status: sensor off (11, 13, 15) ->
    UNAVAILABLE; equipment or sensor malfunction, unknown sensor (1, 14, 12) -> INVALID;
    the signal-quality, artifact and interference bits -> QUESTIONABLE; low perfusion (5)
    -> LOW_PERFUSION.
    """
    m = int(measurement) if measurement is not None else 0
    d = int(device) if device is not None else 0
    flags = MeasurementStatus.NONE
    for meas_mask, device_mask, flag in _QUALITY_MASKS:
        if m & meas_mask or d & device_mask:
            flags |= flag
    return flags


def judge(
    value: MedValue, valid: tuple[float, float], quality: MeasurementStatus
) -> tuple[float | None, MeasurementStatus]:
    """A decoded SFLOAT as (value, status) for a :class:`Numeric`.

    No number is published when the SFLOAT is special (NaN -> UNAVAILABLE; NRes, +/-INF,
    reserved -> INVALID), when ``quality`` says UNAVAILABLE or INVALID, or when the number
    is outside ``valid`` (INVALID). Otherwise the number with ``quality``.
    """
    if isinstance(value, NoValue):
        reason = (
            MeasurementStatus.UNAVAILABLE if value is NoValue.NAN else MeasurementStatus.INVALID
        )
        return None, quality | reason
    if quality & (MeasurementStatus.UNAVAILABLE | MeasurementStatus.INVALID):
        return None, quality
    number = value.value
    if not valid[0] <= number <= valid[1]:
        return None, quality | MeasurementStatus.INVALID
    return number, quality


class PlxOximeter:
    """Device model for a PLX pulse oximeter (a ``BleDeviceModel``, service 0x1822).

    Subscribes to PLX Continuous Measurement (notify) and PLX Spot-Check Measurement
    (indicate) and writes nothing. Per payload:

    * ``Numeric`` SpO2 (%, 0..100), pulse rate (/min, 0..350) and, when present,
      perfusion index (%, 0..100) from the Pulse Amplitude Index. Only SpO2PR-Normal is
      published: Fast reacts before artifact rejection settles and Slow lags a real
      desaturation, and the design puts delays in the alarm engine, not in averaging.
      Spot-checks are published with the same codes, ``device_time`` from their timestamp
      (unless the device says its clock is not set).
    * Every numeric carries :func:`quality_of` the payload's status fields; a value is
      ``None`` per :func:`judge` (an SFLOAT special, sensor off, "measurement
      unavailable/invalid", out of range): never a zero.
    * ``DeviceEvent`` edges from Device and Sensor Status (:data:`CONDITIONS`, mapping in
      ``_CONDITION_BITS``), only from payloads that carry that field (others leave the
      conditions as they were) and not from spot-checks replayed from storage (bit 9),
      which describe the past.

    The PLX Features value (0x2A60, read) may be fed like a notification; it is decoded
    and kept in :attr:`features` and publishes nothing. Device Information and Battery are
    the BLE runner's. A payload that does not decode is counted as dropped (``counters``).
    """

    service_uuid: str = gatt.PLX_SERVICE
    notify_uuids: tuple[str, ...] = (gatt.PLX_CONTINUOUS, gatt.PLX_SPOT_CHECK)
    #: Characteristics worth one read after connecting, fed to :meth:`feed` like
    #: notifications (optional for the runner: nothing depends on them).
    read_uuids: tuple[str, ...] = (gatt.PLX_FEATURES,)

    def __init__(self, device_id: str, settings: PlxSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self.counters = CodecCounters()
        self._conditions = ConditionTracker(device_id, CONDITIONS, _CONDITION_DETAIL)
        #: The device's PLX Features, once read on this connection.
        self.features: PlxFeatures | None = None

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    def on_connect(self, now: float) -> tuple[Sequence[tuple[str, bytes]], Sequence[Reading]]:
        """No writes; clears conditions a connection that ended unannounced left raised."""
        self.features = None
        return (), self._conditions.clear(now)

    def feed(self, uuid: str, payload: bytes, now: float) -> Sequence[Reading]:
        """Decode one notification, indication or read of ``uuid`` at wall time ``now``."""
        uuid = uuid.lower()
        if uuid == gatt.PLX_CONTINUOUS:
            continuous = decode_plx_continuous(payload)
            gatt.tally(self.counters, payload, continuous is not None)
            if continuous is None:
                return []
            return self._readings(
                continuous.normal,
                continuous.pulse_amplitude_index,
                quality_of(continuous.measurement_status, continuous.device_status),
                continuous.device_status,
                now,
                None,
            )
        if uuid == gatt.PLX_SPOT_CHECK:
            spot = decode_plx_spot_check(payload)
            gatt.tally(self.counters, payload, spot is not None)
            if spot is None:
                return []
            device_time = (
                spot.timestamp.epoch()
                if spot.timestamp is not None and not spot.clock_not_set
                else None
            )
            stored = (
                spot.measurement_status is not None
                and PlxMeasurementStatus.FROM_STORAGE in spot.measurement_status
            )
            return self._readings(
                SpO2PR(spot.spo2, spot.pulse_rate),
                spot.pulse_amplitude_index,
                quality_of(spot.measurement_status, spot.device_status),
                None if stored else spot.device_status,
                now,
                device_time,
            )
        if uuid == gatt.PLX_FEATURES:
            features = decode_plx_features(payload)
            gatt.tally(self.counters, payload, features is not None)
            if features is not None:
                self.features = features
            return []
        gatt.tally(self.counters, payload, False)
        return []

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear every raised condition (the link, not the patient, ended them)."""
        return self._conditions.clear(now)

    def _readings(
        self,
        values: SpO2PR,
        pai: MedValue | None,
        quality: MeasurementStatus,
        conditions_from: PlxDeviceStatus | None,
        now: float,
        device_time: float | None,
    ) -> list[Reading]:
        """Events from ``conditions_from`` (when given), then the numerics with ``quality``."""
        readings: list[Reading] = []
        if conditions_from is not None:
            d = int(conditions_from)
            state = {c: bool(d & bits) for c, bits in _CONDITION_MASKS}
            readings.extend(self._conditions.update(state, now))
        metrics: list[tuple[codes.Code, codes.Unit, MedValue, tuple[float, float]]] = [
            (codes.SPO2, codes.PERCENT, values.spo2, SPO2_RANGE),
            (codes.PULSE_RATE, codes.BEATS_PER_MINUTE, values.pulse_rate, PULSE_RATE_RANGE),
        ]
        if pai is not None:
            metrics.append((codes.PERFUSION_INDEX, codes.PERCENT, pai, PAI_RANGE))
        for code, unit, value, valid in metrics:
            number, status = judge(value, valid, quality)
            readings.append(Numeric(self.device_id, code, number, unit, now, device_time, status))
        return readings


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.ble_peripherals implements each).
SCENARIOS: Final = ("normal", "disconnects", "battery_low", "sensor_off")

SPEC = DriverSpec.typed(
    name="ble-plx",
    description=(
        "Bluetooth LE pulse oximeter (SIG Pulse Oximeter Service 0x1822): SpO2, pulse rate "
        "and perfusion index from PLX continuous and spot-check measurements; sensor, "
        "perfusion and signal conditions"
    ),
    settings=PlxSettings,
    make_model=PlxOximeter,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.ble_peripherals:PlxPeripheral",
    # Found over the air by its service UUID, never by listening to a serial port.
    probe_variants=(),
    transport="ble",
)
