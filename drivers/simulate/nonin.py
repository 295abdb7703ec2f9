"""A simulated Nonin oximeter that writes real DF2, DF7 or DF8 frames into a pty.

Two halves, as everywhere in ``drivers``:

* :class:`NoninScenario` is pure and deterministic (a seeded ``random.Random``, no clock):
  each :meth:`~NoninScenario.step` is the next period of the device's life (1/3 s, one
  25-frame packet, in DF2/DF7; 1 s, one 4-byte frame, in DF8), with what it sends and the
  exact bytes it puts on the line.
* :class:`NoninSimulator` plays a scenario in real (or injected) time through a
  :class:`~drivers.simulate.pty.PtyLink`, plugging and unplugging it as the scenario says.

Scenarios (names declared by the driver's ``SPEC.scenarios``), the same in every format;
DF8 carries no pleth and no perfusion colour per pulse, so only its numerics and flags
follow the story:

``normal``
    SpO2 about 97 %, pulse about 72 /min with respiratory variation.
``desaturation``
    Normal for 20 s, SpO2 falls linearly to 85 % over 60 s, holds 20 s, recovers over
    20 s; repeats every 120 s. Pulse rises as saturation falls.
``probe_off``
    Normal, but every 60 s the sensor is off for 15 s (SNSD set, HR 511, SpO2 127), then
    the device searches for 4 s (OOT set, values still missing) before values return.
``noise``
    Normal, plus a burst of 8 to 48 random bytes spliced into the line every 10 s, at a
    random place in that period's bytes (so it may split a frame).
``unplug``
    Connected for 40 s, unplugged for 15 s, plugged back; repeats every 55 s.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Final, get_args

from drivers.clock import Clock
from drivers.oximetry.nonin import (
    DF8_FRAME_PERIOD_S,
    FRAME_RATE_HZ,
    FRAMES_PER_PACKET,
    PACKET_PERIOD_S,
    PLETH_MAX,
    SCENARIOS,
    DataFormat,
    Df8Status,
    NoninDf8Frame,
    NoninPacket,
    NoninSettings,
    NoninValues,
    PacketFormat,
    Status,
    encode_df8,
    encode_packet,
)
from drivers.simulate.device import PtyDeviceSimulator, default_seed

#: Firmware revision byte the simulated device reports (the one in the real capture).
DEFAULT_FIRMWARE: Final = 0x94

# Baseline physiology.
_SPO2_NORMAL: Final = 97.0  # %
_HR_NORMAL: Final = 72.0  # /min
_HR_RESP_SWING: Final = 2.0  # /min, peak respiratory sinus arrhythmia
_RESP_PERIOD_S: Final = 4.5  # about 13 breaths/min
_SPO2_JITTER_P: Final = 0.1  # chance per packet of reading 1 % off the trajectory
_HR_JITTER_SD: Final = 0.5  # /min

# desaturation: durations in seconds, saturation in %.
_DESAT_BASELINE_S: Final = 20.0
_DESAT_FALL_S: Final = 60.0
_DESAT_HOLD_S: Final = 20.0
_DESAT_RECOVER_S: Final = 20.0
_DESAT_NADIR: Final = 85.0
_DESAT_HR_RISE: Final = 12.0  # /min at the nadir

# probe_off: seconds within each cycle.
_PROBE_CYCLE_S: Final = 60.0
_PROBE_OFF_AT_S: Final = 30.0
_PROBE_OFF_S: Final = 15.0
_PROBE_SEARCH_S: Final = 4.0

# noise: one burst per period.
_NOISE_PERIOD_S: Final = 10.0
_NOISE_MIN_BYTES: Final = 8
_NOISE_MAX_BYTES: Final = 48

# unplug: seconds.
_UNPLUG_PLUGGED_S: Final = 40.0
_UNPLUG_UNPLUGGED_S: Final = 15.0

# Bytes from the driver kept for inspection: a few set-format commands' worth.

# The device shows perfusion colour for about 160 ms (12 frames) of each pulse (4a).
_PERFUSION_FRAMES: Final = 12


class SensorState(enum.Enum):
    """What the probe is doing during one packet."""

    ON = "on"
    OFF = "off"
    SEARCHING = "searching"


@dataclass(frozen=True, slots=True)
class SimStep:
    """One period of the simulated device: 1/3 s in DF2/DF7, 1 s in DF8.

    ``elapsed`` is seconds since the scenario started, at the start of the period;
    ``packet`` is the DF2/DF7 packet sent and ``frame`` the DF8 frame sent (each ``None``
    in the other format, and both while unplugged); ``wire`` is the bytes on the line for
    the period: the encoded packet or frame, with any noise spliced in.
    """

    elapsed: float
    plugged: bool
    packet: NoninPacket | None
    wire: bytes
    frame: NoninDf8Frame | None = None


def pleth_shape(phase: float) -> float:
    """Normalised pleth pulse at ``phase`` (0..1 of one beat): about 0..1.

    A systolic peak and a smaller dicrotic wave, each a Gaussian bump.
    """
    systolic = math.exp(-(((phase - 0.2) / 0.07) ** 2))
    dicrotic = 0.35 * math.exp(-(((phase - 0.5) / 0.08) ** 2))
    return systolic + dicrotic


def desaturation_spo2(elapsed: float) -> float:
    """Target SpO2 (%) of the ``desaturation`` scenario at ``elapsed`` seconds."""
    t = elapsed % (_DESAT_BASELINE_S + _DESAT_FALL_S + _DESAT_HOLD_S + _DESAT_RECOVER_S)
    depth = _SPO2_NORMAL - _DESAT_NADIR
    if t < _DESAT_BASELINE_S:
        return _SPO2_NORMAL
    t -= _DESAT_BASELINE_S
    if t < _DESAT_FALL_S:
        return _SPO2_NORMAL - depth * t / _DESAT_FALL_S
    t -= _DESAT_FALL_S
    if t < _DESAT_HOLD_S:
        return _DESAT_NADIR
    t -= _DESAT_HOLD_S
    return _DESAT_NADIR + depth * t / _DESAT_RECOVER_S


class NoninScenario:
    """Deterministic packet or frame source for one named scenario (module docstring).

    ``data_format`` decides the period and the wire bytes: DF2 and DF7 send a packet
    every 1/3 s (pleth 8-bit and 16-bit), DF8 a 4-byte frame every second. The same
    ``seed`` always gives the same steps.
    """

    def __init__(
        self,
        name: str,
        *,
        data_format: DataFormat = 7,
        seed: int = 0,
        firmware: int = DEFAULT_FIRMWARE,
    ) -> None:
        if name not in SCENARIOS:
            raise ValueError(f"unknown Nonin scenario {name!r}; choose one of {SCENARIOS}")
        if data_format not in get_args(DataFormat):
            raise ValueError(f"data format must be one of {get_args(DataFormat)}")
        self.name = name
        self.data_format: Final[DataFormat] = data_format
        self.firmware = firmware
        self._rng = random.Random(seed)
        self._index = 0
        self._phase = 0.0  # position in the current beat, 0..1
        self._perfusion_left = 0  # frames of perfusion colour still to show

    @property
    def period(self) -> float:
        """Seconds covered by one step: 1/3 s (DF2/DF7 packet) or 1 s (DF8 frame)."""
        return DF8_FRAME_PERIOD_S if self.data_format == 8 else PACKET_PERIOD_S

    @property
    def elapsed(self) -> float:
        """Seconds from the scenario's start to the next step."""
        if self.data_format == 8:
            return self._index * DF8_FRAME_PERIOD_S
        # Whole frames over the frame rate: exact at every whole second, no drift.
        return self._index * FRAMES_PER_PACKET / FRAME_RATE_HZ

    def plugged_at(self, elapsed: float) -> bool:
        """Whether the cable is in at ``elapsed`` seconds."""
        if self.name != "unplug":
            return True
        return elapsed % (_UNPLUG_PLUGGED_S + _UNPLUG_UNPLUGGED_S) < _UNPLUG_PLUGGED_S

    def sensor_at(self, elapsed: float) -> SensorState:
        """The probe's state at ``elapsed`` seconds."""
        if self.name != "probe_off":
            return SensorState.ON
        t = elapsed % _PROBE_CYCLE_S - _PROBE_OFF_AT_S
        if 0.0 <= t < _PROBE_OFF_S:
            return SensorState.OFF
        if 0.0 <= t - _PROBE_OFF_S < _PROBE_SEARCH_S:
            return SensorState.SEARCHING
        return SensorState.ON

    def spo2_target_at(self, elapsed: float) -> float:
        """Underlying SpO2 trajectory (%) before per-packet jitter."""
        if self.name == "desaturation":
            return desaturation_spo2(elapsed)
        return _SPO2_NORMAL

    def hr_target_at(self, elapsed: float) -> float:
        """Underlying pulse rate (/min): respiratory variation plus a rise in hypoxaemia."""
        hypoxia = (_SPO2_NORMAL - self.spo2_target_at(elapsed)) / (_SPO2_NORMAL - _DESAT_NADIR)
        resp = _HR_RESP_SWING * math.sin(2.0 * math.pi * elapsed / _RESP_PERIOD_S)
        return _HR_NORMAL + resp + _DESAT_HR_RISE * hypoxia

    def step(self) -> SimStep:
        """The next period (:attr:`period`) of the device's life."""
        elapsed = self.elapsed
        index = self._index
        self._index += 1
        if not self.plugged_at(elapsed):
            return SimStep(elapsed, False, None, b"")
        packet: NoninPacket | None = None
        frame: NoninDf8Frame | None = None
        if self.data_format == 8:
            frame = self._df8_frame(elapsed)
            wire = encode_df8(frame)
        else:
            packet = self._packet(elapsed, self.data_format)
            wire = encode_packet(packet, self.data_format)
        noise_steps = round(_NOISE_PERIOD_S / self.period)
        if self.name == "noise" and index % noise_steps == noise_steps - 1:
            wire = self._splice_noise(wire)
        return SimStep(elapsed, True, packet, wire, frame)

    def _packet(self, elapsed: float, data_format: PacketFormat) -> NoninPacket:
        sensor = self.sensor_at(elapsed)
        hr = self.hr_target_at(elapsed)
        statuses: list[int] = []
        pleth: list[int] = []
        for _ in range(FRAMES_PER_PACKET):
            status, sample = self._frame(sensor, hr, PLETH_MAX[data_format])
            statuses.append(status)
            pleth.append(sample)
        if sensor is SensorState.ON:
            values = NoninValues.steady(
                self._hr_reading(hr),
                self._spo2_reading(elapsed),
                firmware=self.firmware,
                timer=self._timer(elapsed),
            )
        else:
            values = NoninValues.steady(
                None, None, firmware=self.firmware, timer=self._timer(elapsed)
            )
        return NoninPacket.build(values, statuses, pleth)

    def _df8_frame(self, elapsed: float) -> NoninDf8Frame:
        """The DF8 frame for the second starting at ``elapsed``: numerics and flags only."""
        sensor = self.sensor_at(elapsed)
        if sensor is SensorState.OFF:
            return NoninDf8Frame(flags=Df8Status.SNSD, hr=None, spo2=None)
        if sensor is SensorState.SEARCHING:
            return NoninDf8Frame(flags=Df8Status.OOT, hr=None, spo2=None)
        hr = self._hr_reading(self.hr_target_at(elapsed))
        return NoninDf8Frame(flags=0, hr=hr, spo2=self._spo2_reading(elapsed))

    def _frame(self, sensor: SensorState, hr: float, full: int) -> tuple[int, int]:
        """STATUS byte and pleth sample (``full`` = top of the scale) of the next frame."""
        if sensor is SensorState.OFF:
            self._perfusion_left = 0
            return Status.MARKER | Status.SNSD, self._scale(0.0, full)
        self._phase += hr / 60.0 / FRAME_RATE_HZ
        if self._phase >= 1.0:
            self._phase -= 1.0
            self._perfusion_left = _PERFUSION_FRAMES
        status = Status.MARKER
        if sensor is SensorState.SEARCHING:
            status |= Status.OOT
        elif self._perfusion_left:
            status |= Status.GPRF
        self._perfusion_left = max(0, self._perfusion_left - 1)
        return status, self._scale(pleth_shape(self._phase), full)

    @staticmethod
    def _scale(shape: float, full: int) -> int:
        # A quarter of full scale as baseline, half of it as pulse height: stays in range.
        return min(full, max(0, round(full * (0.25 + 0.5 * shape))))

    def _hr_reading(self, hr: float) -> int:
        return round(hr + self._rng.gauss(0.0, _HR_JITTER_SD))

    def _spo2_reading(self, elapsed: float) -> int:
        jitter = self._rng.choice((-1, 1)) if self._rng.random() < _SPO2_JITTER_P else 0
        return min(100, round(self.spo2_target_at(elapsed)) + jitter)

    @staticmethod
    def _timer(elapsed: float) -> int:
        # The real timer's unit is unverified ([U] in 4a); whole seconds are a guess.
        return int(elapsed) & 0xFFFF

    def _splice_noise(self, wire: bytes) -> bytes:
        garbage = self._rng.randbytes(self._rng.randint(_NOISE_MIN_BYTES, _NOISE_MAX_BYTES))
        at = self._rng.randrange(len(wire) + 1)
        return wire[:at] + garbage + wire[at:]


class NoninSimulator(PtyDeviceSimulator[NoninScenario]):
    """Plays a :class:`NoninScenario` into a pty whose slave is reachable at ``link_path``.

    Writes each step's bytes at the end of its period of ``clock`` time: one packet (25
    frames) every 1/3 s in DF2/DF7, so the line carries 75 frames/s, or one 4-byte frame
    every second in DF8. Bytes the driver sends (the set-format command) are drained each
    period, so the pty never fills, and the latest are kept in :attr:`received`; they are
    not obeyed: the simulated device always streams ``settings.data_format``. Without a
    ``seed`` the scenario is seeded from ``link_path``, so beds differ but runs repeat.
    """

    def __init__(
        self,
        settings: NoninSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            NoninScenario(
                scenario,
                data_format=settings.data_format,
                seed=default_seed(link_path, seed),
            ),
            clock,
            link_path,
        )
