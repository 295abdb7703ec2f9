"""A simulated Masimo Radical on ASCII 1 that writes real lines into a pty.

Two halves, as everywhere in ``drivers``:

* :class:`MasimoScenario` is pure and deterministic (a seeded ``random.Random``, no clock):
  each :meth:`~MasimoScenario.step` is the next second of the device's life, with the line
  it prints and the exact bytes it puts on the wire.
* :class:`MasimoSimulator` plays a scenario in real (or injected) time through a
  :class:`~drivers.simulate.pty.PtyLink`, one line at the end of each second, plugging and
  unplugging it as the scenario says.

The scenarios mean what they mean for the Nonin simulator, whose timeline (pulse rate,
desaturation curve, probe-off and unplug timing) is reused from ``drivers.simulate.nonin``:

``normal``
    SpO2 about 97 %, pulse about 72 /min with respiratory variation, PI about 3.5 %,
    SpCO about 1 %, SpMet about 0.6 %, PVI about 14 %; EXC shows only SET mode.
``desaturation``
    Normal for 20 s, SpO2 falls linearly to 85 % over 60 s, holds 20 s, recovers over 20 s;
    repeats every 120 s. Pulse rises; below 90 % the device's SpO2-low alarm (ALARM 0x0012)
    is on and each fall below 90 % adds one to the desaturation index.
``probe_off``
    Every 60 s the sensor is off for 15 s (EXC sensor off, values dashed), then the device
    searches for 4 s (EXC pulse search, values dashed) before values return.
``noise``
    Normal, plus a burst of 8 to 48 random bytes spliced into the line every 10 s.
``unplug``
    Connected for 40 s, unplugged for 15 s, plugged back; repeats every 55 s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
from dataclasses import dataclass
from typing import Final

from drivers.clock import Clock
from drivers.oximetry.masimo import (
    LINE_PERIOD_S,
    SCENARIOS,
    Alarm,
    Exc,
    MasimoLine,
    MasimoSettings,
    MasimoValues,
    Variant,
    build_line,
    encode_line,
)
from drivers.simulate.device import PtyDeviceSimulator, default_seed
from drivers.simulate.nonin import NoninScenario, SensorState

#: Device clock at the start of a scenario run on its own: the ManualClock's start instant.
DEFAULT_START: Final = dt.datetime(2026, 1, 1, 0, 0, 0)

# Masimo-only physiology (the rest comes from the Nonin timeline).
_PI_NORMAL: Final = 3.5  # %
_PI_SWING: Final = 0.8  # %, slow vasomotor wave
_PI_PERIOD_S: Final = 60.0
_SPCO_NORMAL: Final = 1.0  # %
_SPMET_NORMAL: Final = 0.6  # %
_PVI_NORMAL: Final = 14.0  # %
_PVI_SWING: Final = 3.0  # %
_PVI_PERIOD_S: Final = 30.0
_SPO2_JITTER_P: Final = 0.1  # chance per line of reading 1 % off the trajectory
_HR_JITTER_SD: Final = 0.5  # /min
#: The simulated device's SpO2 low alarm limit (%), as set at the bedside.
SPO2_LOW_LIMIT: Final = 90

# noise: one burst per period, as the Nonin simulator.
_NOISE_PERIOD_LINES: Final = 10  # 10 s
_NOISE_MIN_BYTES: Final = 8
_NOISE_MAX_BYTES: Final = 48

# Bytes from the driver kept for inspection (the driver should send none).


@dataclass(frozen=True, slots=True)
class SimStep:
    """One second of the simulated device.

    ``elapsed`` is seconds since the scenario started, at the start of the second; the line
    is printed at its end (``elapsed + 1``) and stamped with that device time. ``line`` is
    ``None`` while unplugged; ``wire`` is the bytes on the line for the second: the encoded
    line, with any noise spliced in.
    """

    elapsed: float
    plugged: bool
    line: MasimoLine | None
    wire: bytes


class MasimoScenario:
    """Deterministic line source for one named scenario (see the module docstring).

    ``variant`` is the line layout printed (fields the variant lacks are left out);
    ``start`` the device clock (naive local time) at the scenario's start; ``serial`` the
    SN field (default: ten digits from the seed). The same ``seed`` always gives the same
    steps.
    """

    def __init__(
        self,
        name: str,
        *,
        variant: Variant = Variant.RADICAL_7,
        seed: int = 0,
        start: dt.datetime = DEFAULT_START,
        serial: str | None = None,
    ) -> None:
        if name not in SCENARIOS:
            raise ValueError(f"unknown Masimo scenario {name!r}; choose one of {SCENARIOS}")
        self.name = name
        self.variant = variant
        self.start = start.replace(microsecond=0)
        self.serial = serial if serial is not None else f"{seed % 10**10:010d}"
        self._rng = random.Random(seed)
        # The Nonin scenario of the same name is only asked pure questions about time.
        self._timeline = NoninScenario(name, seed=seed)
        self._index = 0
        self._desats = 0
        self._below_limit = False

    @property
    def elapsed(self) -> float:
        """Seconds from the scenario's start to the next step."""
        return self._index * LINE_PERIOD_S

    def plugged_at(self, elapsed: float) -> bool:
        """Whether the cable is in at ``elapsed`` seconds."""
        return self._timeline.plugged_at(elapsed)

    def sensor_at(self, elapsed: float) -> SensorState:
        """The probe's state at ``elapsed`` seconds."""
        return self._timeline.sensor_at(elapsed)

    def step(self) -> SimStep:
        """The next second of the device's life."""
        elapsed = self.elapsed
        index = self._index
        self._index += 1
        if not self.plugged_at(elapsed):
            return SimStep(elapsed, False, None, b"")
        stamp = self.start + dt.timedelta(seconds=elapsed + LINE_PERIOD_S)
        line = build_line(stamp, self._values(elapsed), self.variant)
        wire = encode_line(line)
        if self.name == "noise" and index % _NOISE_PERIOD_LINES == _NOISE_PERIOD_LINES - 1:
            wire = self._splice_noise(wire)
        return SimStep(elapsed, True, line, wire)

    def _values(self, elapsed: float) -> MasimoValues:
        sensor = self.sensor_at(elapsed)
        exc = Exc.MASIMO_SET
        if sensor is not SensorState.ON:
            exc |= Exc.SENSOR_OFF if sensor is SensorState.OFF else Exc.PULSE_SEARCH
            values = MasimoValues(serial=self.serial, alarm=0, exc=int(exc), exc1=0)
            return self._restrict(values)
        target = self._timeline.spo2_target_at(elapsed)
        jitter = self._rng.choice((-1, 1)) if self._rng.random() < _SPO2_JITTER_P else 0
        spo2 = min(100, round(target) + jitter)
        hr = round(self._timeline.hr_target_at(elapsed) + self._rng.gauss(0.0, _HR_JITTER_SD))
        # One desaturation event per fall of the underlying trajectory below the limit (the
        # reading's jitter around the limit is not a new event); the alarm follows readings.
        below_target = target < SPO2_LOW_LIMIT
        if below_target and not self._below_limit:
            self._desats += 1
        self._below_limit = below_target
        below = spo2 < SPO2_LOW_LIMIT
        alarm = Alarm.ALARM_ACTIVE | Alarm.SPO2_LOW if below else Alarm(0)
        pi_wave = _PI_SWING * math.sin(2.0 * math.pi * elapsed / _PI_PERIOD_S)
        pi = max(0.02, round(_PI_NORMAL + pi_wave + self._rng.gauss(0.0, 0.05), 2))
        pvi_wave = _PVI_SWING * math.sin(2.0 * math.pi * elapsed / _PVI_PERIOD_S)
        spco = max(0.0, _SPCO_NORMAL + self._rng.gauss(0.0, 0.1))
        integer_spco = self.variant is Variant.RADICAL_7_COLOR  # that firmware prints "01%"
        values = MasimoValues(
            serial=self.serial,
            spo2=float(spo2),
            pulse_rate=float(hr),
            pi=pi,
            spco=float(round(spco)) if integer_spco else round(spco, 1),
            spmet=max(0.0, round(_SPMET_NORMAL + self._rng.gauss(0.0, 0.05), 1)),
            desat=float(min(99, self._desats)),
            pi_delta=float(max(-99, min(99, round((pi - _PI_NORMAL) / _PI_NORMAL * 100)))),
            pvi=float(max(0, min(100, round(_PVI_NORMAL + pvi_wave)))),
            alarm=int(alarm),
            exc=int(exc),
            exc1=0,
        )
        return self._restrict(values)

    def _restrict(self, values: MasimoValues) -> MasimoValues:
        """``values`` without the fields this scenario's variant does not print."""
        dropped = {
            f.name: None for f in dataclasses.fields(values) if f.name not in self.variant.carries
        }
        return dataclasses.replace(values, **dropped)

    def _splice_noise(self, wire: bytes) -> bytes:
        garbage = self._rng.randbytes(self._rng.randint(_NOISE_MIN_BYTES, _NOISE_MAX_BYTES))
        at = self._rng.randrange(len(wire) + 1)
        return wire[:at] + garbage + wire[at:]


class MasimoSimulator(PtyDeviceSimulator[MasimoScenario]):
    """Plays a :class:`MasimoScenario` into a pty whose slave is reachable at ``link_path``.

    Writes one line at the end of each second of ``clock`` time. The device clock starts at
    ``clock.wall()`` (whole seconds) shifted by ``settings.device_utc_offset_minutes``, so
    the driver sees no skew. Bytes the driver sends (it should send none) are drained each
    second so the pty never fills, and the latest are kept in :attr:`received`. Without a
    ``seed`` the scenario is seeded from ``link_path``, so beds differ but runs repeat.
    """

    def __init__(
        self,
        settings: MasimoSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        seed: int | None = None,
        variant: Variant = Variant.RADICAL_7,
    ) -> None:
        utc = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=math.floor(clock.wall()))
        local = utc + dt.timedelta(minutes=settings.device_utc_offset_minutes)
        super().__init__(
            MasimoScenario(
                scenario, variant=variant, seed=default_seed(link_path, seed), start=local
            ),
            clock,
            link_path,
        )
