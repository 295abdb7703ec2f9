"""The shared vocabulary: what a driver hands to the gateway.

Four kinds of reading cross from ``drivers`` into ``gateway``:

* :class:`Numeric`: one value of one metric (SpO2 96 %, pulse rate 74 /min).
* :class:`Waveform`: a contiguous chunk of samples of one signal (pleth, ECG lead II).
* :class:`DeviceEvent`: a condition switching on or off: a technical condition (including
  the connection to the device itself), a device's own alarm (a pump's occlusion), or a
  physiological condition the gateway's analysis derived from a signal (asystole).
* :class:`Identity`: who the device says it is.

Every reading names its ``source``: the device id from ``config.toml``. Times are UTC
seconds since the Unix epoch: ``time`` is the gateway's wall clock when the bytes arrived;
``device_time`` is the device's own clock when the protocol carries one (else ``None``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from drivers.codes import Code, Unit


class MeasurementStatus(enum.Flag):
    """Why a value may not be taken at face value.

    Mirrors the IHE PCD measurement-status flags (OBX-8) and the FHIR PoCD
    measurement-status code system, so sync can map one to one.
    """

    NONE = 0
    #: The device could not produce a value (sensor off, missing-value sentinel): NAV.
    UNAVAILABLE = enum.auto()
    #: The device marks the value invalid: INV.
    INVALID = enum.auto()
    #: Artifact, out of track or another reason to doubt the value: QUES.
    QUESTIONABLE = enum.auto()
    #: Low perfusion: the value is real but the signal is weak.
    LOW_PERFUSION = enum.auto()
    #: Early estimate, device still settling: EARLY.
    EARLY = enum.auto()
    #: Demonstration or test data: DEMO.
    DEMO = enum.auto()

    def names(self) -> list[str]:
        """Lower-case names of the flags that are set, sorted (for JSON and logs)."""
        return sorted(flag.name.lower() for flag in type(self) if flag in self and flag.name)


class Priority(enum.Enum):
    """Alarm priority in the IEC 60601-1-8 sense, as a device or the analysis rates it."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Condition(enum.Enum):
    """Conditions a device, the link to it, or the gateway's analysis of it can report.

    The value is a stable lower-case name used in the API, captures and logs. Most are
    technical; those in :data:`PHYSIOLOGICAL` describe the patient.
    """

    #: The gateway has no working link to the device (unplugged, port vanished).
    DISCONNECTED = "disconnected"
    #: Oximeter: sensor disconnected or inoperable.
    SENSOR_OFF = "sensor_off"
    #: Oximeter: sensor giving unusable data.
    SENSOR_ALARM = "sensor_alarm"
    #: Oximeter: no consecutive good pulses.
    OUT_OF_TRACK = "out_of_track"
    #: Oximeter: beat did not match the current pulse interval.
    ARTIFACT = "artifact"
    #: Oximeter: low signal amplitude.
    LOW_PERFUSION = "low_perfusion"
    #: Device battery low.
    LOW_BATTERY = "low_battery"
    #: Oximeter: no sensor attached to the device at all (as opposed to off the patient).
    NO_SENSOR = "no_sensor"
    #: Oximeter: sensor defective, unrecognised or incompatible.
    SENSOR_FAULT = "sensor_fault"
    #: Oximeter: searching for a pulse.
    PULSE_SEARCH = "pulse_search"
    #: Oximeter: interference detected (ambient light, electrosurgery ...).
    INTERFERENCE = "interference"
    #: Oximeter: the device's own signal-quality figure is too low to trust values.
    LOW_SIGNAL_QUALITY = "low_signal_quality"
    #: The device's own audible alarms are silenced (it will not alarm at the bedside).
    DEVICE_ALARM_SILENCED = "device_alarm_silenced"
    #: Samples or frames were lost between the device and the gateway (sequence gap).
    SAMPLES_LOST = "samples_lost"
    #: The device's clock differs from the gateway's by more than the tolerated skew.
    CLOCK_SKEW = "clock_skew"
    #: ECG: an electrode is off the patient (lead-off).
    LEAD_OFF = "lead_off"
    #: No successful reading from a polled device for longer than its stale limit.
    NO_DATA = "no_data"

    # -- infusion pumps: the pump's own alarms ---------------------------------------------
    #: Pump: downstream or upstream occlusion.
    OCCLUSION = "occlusion"
    #: Pump: air in the line.
    AIR_IN_LINE = "air_in_line"
    #: Pump: container or syringe empty.
    RESERVOIR_EMPTY = "reservoir_empty"
    #: Pump: container or syringe nearly empty.
    NEAR_EMPTY = "near_empty"
    #: Pump: door or syringe clamp open.
    DOOR_OPEN = "door_open"
    #: Pump: volume to be infused reached.
    INFUSION_COMPLETE = "infusion_complete"
    #: Pump: paused or stopped too long without being restarted (callback reminder).
    PUMP_IDLE = "pump_idle"
    #: Device reports an internal malfunction.
    DEVICE_MALFUNCTION = "device_malfunction"

    # -- ECG analysis: technical --------------------------------------------------------------
    #: ECG: signal too poor (lead off, saturation, noise) for arrhythmia analysis.
    ECG_CANNOT_ANALYSE = "ecg_cannot_analyse"

    # -- ECG analysis: physiological -----------------------------------------------------
    #: No QRS for longer than the asystole limit.
    ASYSTOLE = "asystole"
    #: Ventricular fibrillation or flutter, detected from the waveform.
    VENTRICULAR_FIBRILLATION = "vf"
    #: Run of >= 3 ventricular beats at >= 100 bpm (``detail`` says when sustained).
    VENTRICULAR_TACHYCARDIA = "vt"
    #: Heart rate below the extreme bradycardia limit.
    EXTREME_BRADYCARDIA = "brady"
    #: Heart rate above the extreme tachycardia limit.
    EXTREME_TACHYCARDIA = "tachy"
    #: RR interval longer than the pause limit.
    PAUSE = "pause"
    #: Atrial fibrillation: irregularly irregular RR intervals.
    ATRIAL_FIBRILLATION = "afib"
    #: Two consecutive ventricular beats.
    COUPLET = "couplet"
    #: Ventricular beats alternating with normal beats.
    BIGEMINY = "bigeminy"
    #: PVCs per minute above the configured limit.
    FREQUENT_PVCS = "frequent_pvcs"


#: Conditions about the patient rather than the equipment (alarm kind "physiological").
PHYSIOLOGICAL: frozenset[Condition] = frozenset(
    {
        Condition.ASYSTOLE,
        Condition.VENTRICULAR_FIBRILLATION,
        Condition.VENTRICULAR_TACHYCARDIA,
        Condition.EXTREME_BRADYCARDIA,
        Condition.EXTREME_TACHYCARDIA,
        Condition.PAUSE,
        Condition.ATRIAL_FIBRILLATION,
        Condition.COUPLET,
        Condition.BIGEMINY,
        Condition.FREQUENT_PVCS,
    }
)


@dataclass(frozen=True, slots=True)
class Numeric:
    """One value of one metric.

    ``value`` is in ``unit``; it is ``None`` when the device reports no value (then
    ``status`` says why, usually ``UNAVAILABLE``).
    """

    source: str
    code: Code
    value: float | None
    unit: Unit
    time: float
    device_time: float | None = None
    status: MeasurementStatus = MeasurementStatus.NONE


@dataclass(frozen=True, slots=True, eq=False)
class Waveform:
    """A chunk of consecutive samples of one signal.

    ``samples`` is a read-only 1-D numpy array in ``unit`` (device-scaled, dimensionless for
    pleth); sample ``i`` was taken at ``start_time + i / sample_rate``. ``sample_rate`` is
    in Hz. ``sequence`` is the index of the first sample among those the driver emitted
    since the device connected: consecutive chunks continue it. A driver that knows samples
    were lost (a device sample counter, a dropped packet it can count) advances it by the
    number lost, so the jump shows the gap; one that cannot tell keeps it contiguous.
    ``resolution`` is the size of one device count in ``unit``: every sample is a whole
    multiple of it, which lets the store keep the signal losslessly as integers.
    """

    source: str
    code: Code
    unit: Unit
    sample_rate: float
    start_time: float
    samples: npt.NDArray[np.float64]
    sequence: int = 0
    device_time: float | None = None
    resolution: float = 1.0

    def __post_init__(self) -> None:
        self.samples.setflags(write=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Waveform):
            return NotImplemented
        return (
            self.source == other.source
            and self.code == other.code
            and self.unit == other.unit
            and self.sample_rate == other.sample_rate
            and self.start_time == other.start_time
            and self.sequence == other.sequence
            and self.device_time == other.device_time
            and self.resolution == other.resolution
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def duration(self) -> float:
        """Seconds covered by the chunk."""
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A condition turning on (``active``) or off.

    ``detail`` is a short technician-facing text (never patient data). ``priority`` is the
    priority the device itself gives the condition (a pump's occlusion alarm is high), or
    ``None`` when it gives none; the alarm engine never rates it lower than that.
    ``time`` is when the condition began or ended, which for analysis events can be a
    little before the event is published (the analysis's decision latency).
    """

    source: str
    condition: Condition
    active: bool
    time: float
    detail: str = ""
    priority: Priority | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """What the device says it is; fields it does not report are empty strings."""

    source: str
    time: float
    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    firmware: str = ""


Reading: TypeAlias = Numeric | Waveform | DeviceEvent | Identity


@dataclass(slots=True)
class CodecCounters:
    """Running totals a codec keeps about the bytes it was fed.

    Mutable on purpose: the codec owns it and increments it; others read it.
    """

    bytes_received: int = 0
    frames_decoded: int = 0
    bytes_dropped: int = 0
    checksum_errors: int = 0
    resyncs: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "bytes_received": self.bytes_received,
            "frames_decoded": self.frames_decoded,
            "bytes_dropped": self.bytes_dropped,
            "checksum_errors": self.checksum_errors,
            "resyncs": self.resyncs,
        }
