"""Polar H10 chest strap as a single-lead ECG source, over Polar Measurement Data (PMD).

PMD is Polar's vendor GATT service (``protocols.md`` section 3): a control point
(write with response, indicate) and a data characteristic (notify).

* **Control point requests**: opcode, measurement type, then settings as
  ``type | count | count values`` (sample rate, resolution, range: 2 bytes each LE;
  milli-unit range and factor 4 bytes; channels 1 byte). :data:`START_ECG` asks for ECG at
  130 Hz, 14 bit: ``02 00 00 01 82 00 01 01 0E 00``.
* **Control point responses** (indications): ``F0 | opcode | type | status | more |
  parameters``; an indication starting ``01`` instead says the device stopped its streams.
* **Data frames** (notifications): ``type | timestamp (uint64 LE, ns since
  2000-01-01T00:00:00 on the sensor's clock, of the last sample) | frame type (bit 7 =
  compressed) | samples``. The H10's ECG is frame type 0: signed 24-bit LE samples in uV.

Pure functions and frozen dataclasses: the request builders, :func:`decode_pmd_control_response`,
:func:`decode_pmd_frame` / :func:`decode_ecg_frame` (``None`` for what they cannot decode;
never raise) and the encoders :func:`encode_pmd_ecg_frame` and
:func:`encode_pmd_control_response` used by the simulated H10. :class:`PolarH10` is the
device model. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from drivers import codes, gatt
from drivers.ble_settings import BleSettings
from drivers.conditions import ConditionTracker
from drivers.readings import CodecCounters, Condition, DeviceEvent, Reading, Waveform
from drivers.registry import DriverSpec

# --- wire constants (protocols.md 3.2, 3.3) ------------------------------------------------

#: First byte of every control point response.
RESPONSE_CODE: Final = 0xF0
#: First byte of the indication by which the device says its streams stopped.
STREAMS_STOPPED_CODE: Final = 0x01
#: Nanoseconds from the Unix epoch to the PMD epoch, 2000-01-01T00:00:00 UTC.
PMD_EPOCH_UNIX_NS: Final = 946_684_800_000_000_000
#: The H10's ECG sample rate, Hz, and resolution, bits.
ECG_SAMPLE_RATE_HZ: Final = 130
ECG_RESOLUTION_BITS: Final = 14
_FRAME_HEADER_LEN: Final = 10
_ECG_SAMPLE_BYTES: Final = 3
_SAMPLE_MIN: Final = -(1 << 23)
_SAMPLE_MAX: Final = (1 << 23) - 1
_COMPRESSED: Final = 0x80


class PmdOpcode(enum.IntEnum):
    """Control point opcodes (protocols.md 3.2)."""

    GET_MEASUREMENT_SETTINGS = 0x01
    REQUEST_MEASUREMENT_START = 0x02
    STOP_MEASUREMENT = 0x03
    GET_SDK_MODE_SETTINGS = 0x04
    GET_MEASUREMENT_STATUS = 0x05
    GET_SDK_MODE_STATUS = 0x06
    GET_OFFLINE_RECORDING_TRIGGER_STATUS = 0x07
    SET_OFFLINE_RECORDING_TRIGGER_MODE = 0x08
    SET_OFFLINE_RECORDING_TRIGGER_SETTINGS = 0x09


class PmdMeasurementType(enum.IntEnum):
    """Measurement types (low 6 bits of the type byte; protocols.md 3.2)."""

    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAGNETOMETER = 6
    SKIN_TEMPERATURE = 7
    SDK_MODE = 9
    LOCATION = 10
    PRESSURE = 11
    TEMPERATURE = 12
    OFFLINE_RECORDING = 13
    OFFLINE_HR = 14


class PmdStatus(enum.IntEnum):
    """Control point response status codes (protocols.md 3.2)."""

    SUCCESS = 0
    INVALID_OPCODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13
    DISK_FULL = 14


class PmdSetting(enum.IntEnum):
    """Setting types in requests and settings responses (protocols.md 3.2)."""

    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


#: Bytes per value of each setting type.
SETTING_SIZES: Final[Mapping[PmdSetting, int]] = {
    PmdSetting.SAMPLE_RATE: 2,
    PmdSetting.RESOLUTION: 2,
    PmdSetting.RANGE: 2,
    PmdSetting.RANGE_MILLIUNIT: 4,
    PmdSetting.CHANNELS: 1,
    PmdSetting.FACTOR: 4,
}


# --- control point: requests ---------------------------------------------------------------


def encode_settings(settings: Mapping[PmdSetting, Sequence[int]]) -> bytes:
    """Settings as ``type | count | values`` in the order given; ``ValueError`` if a value
    does not fit its setting's size."""
    out = bytearray()
    for setting, values in settings.items():
        size = SETTING_SIZES[setting]
        if not 0 < len(values) <= 0xFF:
            raise ValueError(f"{setting.name} needs 1..255 values, got {len(values)}")
        out += bytes((setting, len(values)))
        for value in values:
            if not 0 <= value < 1 << (8 * size):
                raise ValueError(f"{setting.name} value {value} does not fit {size} bytes")
            out += value.to_bytes(size, "little")
    return bytes(out)


def start_request(
    measurement_type: PmdMeasurementType, settings: Mapping[PmdSetting, Sequence[int]]
) -> bytes:
    """A "request measurement start" with the chosen ``settings`` (one value each)."""
    return bytes((PmdOpcode.REQUEST_MEASUREMENT_START, measurement_type)) + encode_settings(
        settings
    )


def settings_request(measurement_type: PmdMeasurementType) -> bytes:
    """A "get measurement settings" request: the device answers with what it supports."""
    return bytes((PmdOpcode.GET_MEASUREMENT_SETTINGS, measurement_type))


def stop_request(measurement_type: PmdMeasurementType) -> bytes:
    """A "stop measurement" request."""
    return bytes((PmdOpcode.STOP_MEASUREMENT, measurement_type))


#: Start the H10's ECG stream at 130 Hz, 14 bit (protocols.md 3.2, checked).
START_ECG: Final = start_request(
    PmdMeasurementType.ECG,
    {
        PmdSetting.SAMPLE_RATE: (ECG_SAMPLE_RATE_HZ,),
        PmdSetting.RESOLUTION: (ECG_RESOLUTION_BITS,),
    },
)
STOP_ECG: Final = stop_request(PmdMeasurementType.ECG)


# --- control point: responses --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PmdControlResponse:
    """A control point response: the ``opcode`` and ``measurement_type`` bytes it answers
    (raw, 0..255), its ``status`` (raw; :class:`PmdStatus` when known), whether ``more``
    responses follow, and its ``parameters`` (e.g. settings, see :func:`decode_settings`).
    """

    opcode: int
    measurement_type: int
    status: int
    more: bool = False
    parameters: bytes = b""

    @property
    def succeeded(self) -> bool:
        """Success, or "already in state" (a start for a stream already running)."""
        return self.status in (PmdStatus.SUCCESS, PmdStatus.ALREADY_IN_STATE)

    @property
    def status_name(self) -> str:
        """The status as a lower-case name, or its number when unknown."""
        try:
            return PmdStatus(self.status).name.lower()
        except ValueError:
            return f"status {self.status}"


def encode_pmd_control_response(
    opcode: int,
    measurement_type: int,
    status: int,
    *,
    more: bool = False,
    parameters: bytes = b"",
) -> bytes:
    """A control point response indication (``F0 | opcode | type | status | more |
    parameters``); ``ValueError`` for a field beyond a byte."""
    for name, value in (("opcode", opcode), ("type", measurement_type), ("status", status)):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} must be 0..255, got {value}")
    return bytes((RESPONSE_CODE, opcode, measurement_type, status, int(more))) + parameters


def decode_pmd_control_response(payload: bytes) -> PmdControlResponse | None:
    """Decode a control point response; ``None`` if it is not one.

    Error responses may end after the status byte (no "more" byte, no parameters).
    """
    if len(payload) < 4 or payload[0] != RESPONSE_CODE:
        return None
    more = len(payload) > 4 and payload[4] != 0
    return PmdControlResponse(payload[1], payload[2], payload[3], more, bytes(payload[5:]))


def decode_settings(parameters: bytes) -> dict[PmdSetting, tuple[int, ...]] | None:
    """Settings a "get measurement settings" response lists, by type (all values offered);
    ``None`` if malformed or of an unknown setting type (its size is then unknown)."""
    settings: dict[PmdSetting, tuple[int, ...]] = {}
    pos = 0
    while pos < len(parameters):
        if pos + 2 > len(parameters):
            return None
        try:
            setting = PmdSetting(parameters[pos])
        except ValueError:
            return None
        count = parameters[pos + 1]
        size = SETTING_SIZES[setting]
        end = pos + 2 + count * size
        if end > len(parameters):
            return None
        settings[setting] = tuple(
            int.from_bytes(parameters[i : i + size], "little") for i in range(pos + 2, end, size)
        )
        pos = end
    return settings


# --- data frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PmdFrame:
    """A PMD data frame: ``measurement_type`` byte, ``timestamp_ns`` (sensor clock, ns
    since 2000-01-01, of the last sample), ``frame_type`` (bits 0-6), ``compressed`` (bit
    7) and the undecoded sample bytes."""

    measurement_type: int
    timestamp_ns: int
    frame_type: int
    compressed: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class EcgFrame:
    """An H10 ECG frame (type 0, uncompressed): ``timestamp_ns`` as in :class:`PmdFrame`
    and the samples in uV (-2^23 .. 2^23-1), oldest first."""

    timestamp_ns: int
    samples_uv: tuple[int, ...]

    @property
    def timestamp_unix(self) -> float:
        """The last sample's time on the sensor's clock, Unix seconds."""
        return (self.timestamp_ns + PMD_EPOCH_UNIX_NS) / 1e9


def decode_pmd_frame(payload: bytes) -> PmdFrame | None:
    """Split a data notification into its header fields; ``None`` if shorter than a header."""
    if len(payload) < _FRAME_HEADER_LEN:
        return None
    return PmdFrame(
        measurement_type=payload[0],
        timestamp_ns=int.from_bytes(payload[1:9], "little"),
        frame_type=payload[9] & ~_COMPRESSED & 0xFF,
        compressed=bool(payload[9] & _COMPRESSED),
        data=bytes(payload[_FRAME_HEADER_LEN:]),
    )


def decode_ecg_frame(payload: bytes) -> EcgFrame | None:
    """Decode an H10 ECG frame; ``None`` for anything else (another measurement, another
    or a compressed frame type, a sample part not a whole number of samples, no samples)."""
    frame = decode_pmd_frame(payload)
    if (
        frame is None
        or frame.measurement_type != PmdMeasurementType.ECG
        or frame.frame_type != 0
        or frame.compressed
        or not frame.data
        or len(frame.data) % _ECG_SAMPLE_BYTES
    ):
        return None
    data = frame.data
    samples = tuple(
        int.from_bytes(data[i : i + _ECG_SAMPLE_BYTES], "little", signed=True)
        for i in range(0, len(data), _ECG_SAMPLE_BYTES)
    )
    return EcgFrame(frame.timestamp_ns, samples)


def encode_pmd_ecg_frame(timestamp_ns: int, samples_uv: Sequence[int]) -> bytes:
    """An H10 ECG data notification: frame type 0, ``samples_uv`` (uV, -2^23..2^23-1, at
    least one) ending at sensor time ``timestamp_ns`` (ns since 2000-01-01, uint64).

    ``ValueError`` for what the frame cannot carry.
    """
    if not 0 <= timestamp_ns < 1 << 64:
        raise ValueError(f"timestamp must be a uint64, got {timestamp_ns}")
    if not samples_uv:
        raise ValueError("an ECG frame needs at least one sample")
    out = bytearray((PmdMeasurementType.ECG,))
    out += timestamp_ns.to_bytes(8, "little")
    out.append(0)
    for sample in samples_uv:
        if not _SAMPLE_MIN <= sample <= _SAMPLE_MAX:
            raise ValueError(f"a sample must be {_SAMPLE_MIN}..{_SAMPLE_MAX} uV, got {sample}")
        out += sample.to_bytes(_ECG_SAMPLE_BYTES, "little", signed=True)
    return bytes(out)


# --- device model --------------------------------------------------------------------------


class PolarH10Settings(BleSettings):
    """Which Polar H10 to use (see :class:`~drivers.ble_settings.BleSettings`). H10s
    advertise the name "Polar H10 " followed by their device id, and the Heart Rate
    service, not PMD: without ``address`` or ``name`` the first heart-rate strap in range
    is taken, so name the H10 when other straps are near."""


#: Every condition this driver reports, in the order events are emitted.
CONDITIONS: Final = (Condition.SAMPLES_LOST, Condition.NO_DATA, Condition.LEAD_OFF)
#: SAMPLES_LOST clears after this many seconds of samples with no gap.
SAMPLES_LOST_CLEAR_S: Final = 5.0
#: A frame timestamp later than expected by at least this fraction of the frame's own
#: sample count means frames were lost; smaller differences are the sensor's clock
#: jitter, and the timeline follows the nominal rate through them.
GAP_FRACTION: Final = 0.5
#: Re-anchor the timeline when a frame would end after its arrival by more than this
#: (impossible for a right anchor: the first frame came late, or the sensor runs fast),
#: or when over :data:`TIMING_WINDOW_S` even the promptest frame arrived later than its
#: end by more than this (the sensor runs slow).
MAX_TIMING_ERROR_S: Final = 0.1
TIMING_WINDOW_S: Final = 5.0
#: ECG resolution: one count is 1 uV.
RESOLUTION_MV: Final = 0.001


class PolarH10:
    """Device model for a Polar H10 streaming raw ECG over PMD (a ``BleDeviceModel``).

    **Commands.** Subscribes to the control point (indications) and then to data
    (notifications), as PMD requires, and :meth:`on_connect` writes :data:`START_ECG`.
    That write starts a stream and changes no clinical setting: it is the H10's only way
    to send ECG, and it ends with the connection. Nothing else is ever written.

    **Waveforms.** One ``Waveform`` per data frame, code MDC_ECG_ELEC_POTL (a chest lead
    that is none of the limb leads), in mV with ``resolution`` 0.001 mV (1 uV), at 130 Hz.
    ``sequence`` counts samples since connect, lost ones included. ``device_time`` is the
    sensor clock's time of the chunk's first sample (the frame timestamp marks the last,
    earlier samples are 1/130 s apart; an H10 whose clock was never set reports 2019
    dates). ``start_time`` is on the gateway's clock: the first frame is anchored so its
    last sample falls at its arrival, later frames follow at the nominal rate so chunks
    join exactly; the anchor is set again after a gap or a timestamp that goes backwards,
    and when the timeline strays from arrival times (see :data:`MAX_TIMING_ERROR_S`;
    counted in :attr:`reanchors`). A re-anchored chunk may overlap or leave a hair's gap
    to the previous one on the gateway's clock; ``sequence`` stays contiguous.

    **Lost frames.** Notifications can be dropped over the air. The timestamp step from
    one frame to the next should be its sample count over 130 Hz; a step longer by at
    least :data:`GAP_FRACTION` of a frame means samples were lost: their number is
    rounded from the step, ``sequence`` advances by it, :attr:`samples_lost` and
    :attr:`gaps` count them, and SAMPLES_LOST is raised (detail: count and step); it
    clears after :data:`SAMPLES_LOST_CLEAR_S` of samples without a gap.

    **Lead off.** PMD carries no contact status. A frame whose samples are all equal is
    a flat line at 1 uV resolution, which electrodes on skin never give (their noise alone
    moves it): LEAD_OFF is raised for it and cleared by the next frame that varies. This
    is a heuristic; it keeps a strap lying on the bed from looking like asystole.

    **Control point.** A response refusing the ECG start (any status but success or
    "already in state"), or the device's "streams stopped" indication, raises NO_DATA with
    the reason; the next ECG frame clears it. Frames of another measurement or frame type
    (compressed, other Polar sensors' ECG formats) are counted as dropped.
    """

    #: What an H10 advertises: the Heart Rate service; PMD appears only once connected,
    #: when subscribing to it proves the fit (a plain strap has no PMD characteristics).
    service_uuid: str = gatt.HEART_RATE_SERVICE
    notify_uuids: tuple[str, ...] = (gatt.PMD_CONTROL_POINT, gatt.PMD_DATA)

    def __init__(self, device_id: str, settings: PolarH10Settings) -> None:
        self.device_id = device_id
        self.settings = settings
        self.counters = CodecCounters()
        self._conditions = ConditionTracker(device_id, CONDITIONS)
        self._rate = float(ECG_SAMPLE_RATE_HZ)
        self._clear_after = round(SAMPLES_LOST_CLEAR_S * self._rate)
        #: Samples known lost, and the gaps they were lost in, since this model was built.
        self.samples_lost = 0
        self.gaps = 0
        #: Times the timeline was re-anchored (all connections).
        self.reanchors = 0
        #: The last control point response, for diagnostics.
        self.last_response: PmdControlResponse | None = None
        self._start_connection()

    @property
    def active_conditions(self) -> frozenset[Condition]:
        """Conditions currently raised (an ``active=True`` event sent, not yet cleared)."""
        return self._conditions.active

    def _start_connection(self) -> None:
        self._last_timestamp_ns: int | None = None
        self._next_index = 0  # sequence of the next sample, lost ones counted
        self._anchor_time = 0.0
        self._anchor_index = 0
        self._since_gap = 0
        self._raised_lost = 0
        self._window_start = 0
        self._window_min = math.inf

    def on_connect(self, now: float) -> tuple[Sequence[tuple[str, bytes]], Sequence[Reading]]:
        """Reset for a fresh connection; returns the ECG start write (a stream start
        command, not a clinical setting) and the clearing of conditions a connection that
        ended unannounced left raised."""
        cleared = self._conditions.clear(now)
        self._start_connection()
        return [(gatt.PMD_CONTROL_POINT, START_ECG)], cleared

    def feed(self, uuid: str, payload: bytes, now: float) -> Sequence[Reading]:
        """Decode one notification or indication of ``uuid`` at wall time ``now`` (UTC s)."""
        uuid = uuid.lower()
        if uuid == gatt.PMD_DATA:
            frame = decode_ecg_frame(payload)
            gatt.tally(self.counters, payload, frame is not None)
            return [] if frame is None else self._on_frame(frame, now)
        if uuid == gatt.PMD_CONTROL_POINT:
            return self._on_control_point(payload, now)
        gatt.tally(self.counters, payload, False)
        return []

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear every raised condition (the link, not the patient, ended them)."""
        self._raised_lost = 0
        return self._conditions.clear(now)

    # --- internals -------------------------------------------------------------------------

    def _on_control_point(self, payload: bytes, now: float) -> list[Reading]:
        if payload[:1] == bytes((STREAMS_STOPPED_CODE,)):
            gatt.tally(self.counters, payload, True)
            return self._no_data(True, now, "Polar PMD: the device stopped its streams")
        response = decode_pmd_control_response(payload)
        gatt.tally(self.counters, payload, response is not None)
        if response is None:
            return []
        self.last_response = response
        starts_ecg = (
            response.opcode == PmdOpcode.REQUEST_MEASUREMENT_START
            and response.measurement_type & 0x3F == PmdMeasurementType.ECG
        )
        if starts_ecg and not response.succeeded:
            return self._no_data(
                True, now, f"Polar PMD refused to start ECG: {response.status_name}"
            )
        return []

    def _no_data(self, on: bool, now: float, detail: str) -> list[Reading]:
        events = self._conditions.update({Condition.NO_DATA: on}, now)
        return [dataclasses.replace(e, detail=detail) for e in events]

    def _time_of(self, index: int) -> float:
        return self._anchor_time + (index - self._anchor_index) / self._rate

    def _anchor(self, first_sample_time: float) -> None:
        self._anchor_time = first_sample_time
        self._anchor_index = self._next_index
        self._window_start = self._next_index
        self._window_min = math.inf

    def _timing_off(self, n: int, now: float) -> bool:
        """Whether a frame of ``n`` samples arriving at ``now`` shows the timeline strayed."""
        lateness = now - self._time_of(self._next_index + n - 1)
        if lateness < -MAX_TIMING_ERROR_S:
            return True
        self._window_min = min(self._window_min, lateness)
        if self._next_index - self._window_start < TIMING_WINDOW_S * self._rate:
            return False
        strayed = self._window_min > MAX_TIMING_ERROR_S
        self._window_start = self._next_index
        self._window_min = math.inf
        return strayed

    def _on_frame(self, frame: EcgFrame, now: float) -> list[Reading]:
        readings: list[Reading] = []
        readings.extend(self._no_data(False, now, "Polar PMD: ECG frames arriving"))
        n = len(frame.samples_uv)
        span = (n - 1) / self._rate  # first to last sample of this frame
        previous = self._last_timestamp_ns
        self._last_timestamp_ns = frame.timestamp_ns
        if previous is None:
            self._anchor(now - span)
        else:
            step = (frame.timestamp_ns - previous) / 1e9 * self._rate  # in samples
            unexplained = step - n
            if step <= 0:
                # The sensor's clock went backwards (reset, time set): no loss is known.
                self.reanchors += 1
                self._anchor(now - span)
            elif unexplained >= GAP_FRACTION * n:
                lost = round(unexplained)
                readings.extend(self._on_gap(lost, step / self._rate, now))
                self._anchor(now - span)
            elif self._timing_off(n, now):
                self.reanchors += 1
                self._anchor(now - span)
        start = self._next_index
        flat = min(frame.samples_uv) == max(frame.samples_uv)
        events = self._conditions.update({Condition.LEAD_OFF: flat}, now)
        detail = "flat ECG frame (all samples equal)" if flat else "ECG frame varies"
        readings.extend(dataclasses.replace(e, detail=detail) for e in events)
        readings.append(
            Waveform(
                source=self.device_id,
                code=codes.ECG_LEAD_UNSPECIFIED,
                unit=codes.MILLIVOLT,
                sample_rate=self._rate,
                start_time=self._time_of(start),
                samples=np.asarray(frame.samples_uv, dtype=np.float64) * RESOLUTION_MV,
                sequence=start,
                device_time=frame.timestamp_unix - span,
                resolution=RESOLUTION_MV,
            )
        )
        self._next_index += n
        before = self._since_gap
        self._since_gap += n
        if before < self._clear_after <= self._since_gap:
            readings.extend(self._clear_samples_lost(now))
        return readings

    def _on_gap(self, lost: int, step_s: float, now: float) -> list[DeviceEvent]:
        self._next_index += lost
        self.samples_lost += lost
        self.gaps += 1
        self._raised_lost += lost
        self._since_gap = 0
        detail = f"{lost} samples lost (frame timestamps {step_s * 1000:.0f} ms apart)"
        events = self._conditions.update({Condition.SAMPLES_LOST: True}, now)
        return [dataclasses.replace(e, detail=detail) for e in events]

    def _clear_samples_lost(self, now: float) -> list[DeviceEvent]:
        events = self._conditions.update({Condition.SAMPLES_LOST: False}, now)
        detail = (
            f"no samples lost for {SAMPLES_LOST_CLEAR_S:g} s; {self._raised_lost} lost while raised"
        )
        if events:
            self._raised_lost = 0
        return [dataclasses.replace(e, detail=detail) for e in events]


# --- registration --------------------------------------------------------------------------

#: Simulator scenarios (drivers.simulate.ble_peripherals implements each); "replay"
#: streams a record from ../shared/data, or a synthetic ECG when that folder is absent.
SCENARIOS: Final = ("normal", "disconnects", "battery_low", "sensor_off", "replay")

SPEC = DriverSpec.typed(
    name="polar-h10",
    description=(
        "Polar H10 chest strap over Bluetooth LE (Polar Measurement Data): single-lead ECG "
        "in mV at 130 Hz, lost frames as sample gaps"
    ),
    settings=PolarH10Settings,
    make_model=PolarH10,
    scenarios=SCENARIOS,
    # Imported on first use: the simulator imports this module for the codec.
    simulator="drivers.simulate.ble_peripherals:PolarH10Peripheral",
    probe_variants=(),
    transport="ble",
)
