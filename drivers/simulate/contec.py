"""A simulated Contec CMS50D+ that writes real legacy live packets into a pty.

Two halves, as everywhere in ``drivers``:

* :class:`ContecScenario` is pure and deterministic (a seeded ``random.Random``, no clock):
  each :meth:`~ContecScenario.step` is the next 1/60 s of the device's life, with the
  packet it sends and the exact bytes it puts on the line.
* :class:`ContecSimulator` plays a scenario in real (or injected) time through a
  :class:`~drivers.simulate.pty.PtyLink`, plugging and unplugging it as the scenario says.

The scenarios mean what they mean for the simulated Nonin (``drivers.simulate.nonin``),
whose timeline and physiology are reused rather than copied: when the probe comes off,
how SpO2 and pulse move in a desaturation, when the cable is pulled. Only the way the
device shows it is Contec's:

``normal``
    SpO2 about 97 %, pulse about 72 /min with respiratory variation; signal strength 8.
``desaturation``
    Nonin's desaturation trajectory (97 % to 85 % and back every 120 s); the device's
    "SpO2 dropping" bit is set while saturation falls.
``probe_off``
    Every 60 s the finger is out for 15 s (byte 1 bit 4, PR 0xFF, SpO2 0x7F, flat pleth),
    then the device searches for 4 s (byte 3 bit 5, values still missing).
``noise``
    Normal, plus a burst of 8 to 48 random bytes spliced into the line every 10 s.
``unplug``
    Connected for 40 s, unplugged for 15 s, plugged back; repeats every 55 s.

The simulated device refreshes its SpO2 and pulse rate once a second and repeats them in
every packet in between (4b gives no refresh rate; once a second is a plausible one).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from drivers.clock import Clock
from drivers.oximetry.contec import (
    MISSING_PR,
    MISSING_SPO2,
    PACKET_RATE_HZ,
    PLETH_MAX,
    SCENARIOS,
    SIGNAL_STRENGTH_MAX,
    ContecPacket,
    ContecSettings,
    encode_packet,
)
from drivers.simulate.device import Burst, PtyDeviceSimulator, default_seed
from drivers.simulate.nonin import NoninScenario, SensorState, pleth_shape

#: Packets the simulator writes at once: 1/6 s of traffic (50 bytes). The line still
#: carries 60 packets/s on average; batching keeps a simulated bed at 6 wake-ups a second
#: instead of 60, which matters with 16 beds on a Raspberry Pi.
PACKETS_PER_WRITE: Final = 10

_HR_JITTER_SD: Final = 0.5  # /min, per value update
_SPO2_JITTER_P: Final = 0.1  # chance per value update of reading 1 % off the trajectory
_VALUE_UPDATE_PACKETS: Final = round(PACKET_RATE_HZ)  # the device refreshes values at 1 Hz
_SEARCHING_STRENGTH: Final = 2  # a weak signal while the device hunts for a pulse
_BAR_MAX: Final = 8  # bar graph segments at the top of a pulse

# noise: one burst per period (the Nonin simulator's 10 s and burst sizes).
_NOISE_PERIOD_PACKETS: Final = 10 * _VALUE_UPDATE_PACKETS
_NOISE_MIN_BYTES: Final = 8
_NOISE_MAX_BYTES: Final = 48

# Bytes from the driver kept for inspection (it should send none).


@dataclass(frozen=True, slots=True)
class SimStep:
    """One packet period (1/60 s) of the simulated device.

    ``index`` counts packet periods from the scenario's start; ``elapsed`` is seconds
    since then, at the start of the period; ``packet`` is ``None`` while unplugged;
    ``wire`` is the bytes on the line for the period: the encoded packet, with any noise
    spliced in.
    """

    index: int
    elapsed: float
    plugged: bool
    packet: ContecPacket | None
    wire: bytes


class ContecScenario:
    """Deterministic packet source for one named scenario (see the module docstring);
    the same ``seed`` always gives the same steps."""

    def __init__(self, name: str, *, seed: int = 0) -> None:
        if name not in SCENARIOS:
            raise ValueError(f"unknown Contec scenario {name!r}; choose one of {SCENARIOS}")
        self.name = name
        # Nonin's scenario timeline (plugged_at, sensor_at, spo2_target_at, hr_target_at)
        # is a pure function of the name and the time: one story for both oximeters.
        self._timeline = NoninScenario(name)
        self._rng = random.Random(seed)
        self._index = 0
        self._phase = 0.0  # position in the current beat, 0..1
        self._values: tuple[int, int] | None = None  # (PR, SpO2) on display, None if none

    @property
    def elapsed(self) -> float:
        """Seconds from the scenario's start to the next step."""
        # Whole packets over the packet rate: exact at every whole second, no drift.
        return self._index / PACKET_RATE_HZ

    def plugged_at(self, elapsed: float) -> bool:
        """Whether the cable is in at ``elapsed`` seconds."""
        return self._timeline.plugged_at(elapsed)

    def sensor_at(self, elapsed: float) -> SensorState:
        """The finger's state at ``elapsed`` seconds."""
        return self._timeline.sensor_at(elapsed)

    def spo2_target_at(self, elapsed: float) -> float:
        """Underlying SpO2 trajectory (%) before the device's rounding and jitter."""
        return self._timeline.spo2_target_at(elapsed)

    def hr_target_at(self, elapsed: float) -> float:
        """Underlying pulse rate (/min)."""
        return self._timeline.hr_target_at(elapsed)

    def step(self) -> SimStep:
        """The next 1/60 s of the device's life."""
        elapsed = self.elapsed
        index = self._index
        self._index += 1
        if not self.plugged_at(elapsed):
            return SimStep(index, elapsed, False, None, b"")
        packet = self._packet(elapsed, index)
        wire = encode_packet(packet)
        if self.name == "noise" and index % _NOISE_PERIOD_PACKETS == _NOISE_PERIOD_PACKETS - 1:
            wire = self._splice_noise(wire)
        return SimStep(index, elapsed, True, packet, wire)

    def _packet(self, elapsed: float, index: int) -> ContecPacket:
        sensor = self.sensor_at(elapsed)
        if sensor is SensorState.OFF:
            self._values = None
            return ContecPacket(
                signal_strength=0,
                pleth=0,
                bargraph=0,
                pulse_rate=MISSING_PR,
                spo2=MISSING_SPO2,
                finger_out=True,
            )
        hr = self.hr_target_at(elapsed)
        self._phase += hr / 60.0 / PACKET_RATE_HZ
        beat = self._phase >= 1.0
        if beat:
            self._phase -= 1.0
        shape = pleth_shape(self._phase)
        # A quarter of full scale as baseline, half of it as pulse height: stays in range.
        pleth = min(PLETH_MAX, max(0, round(PLETH_MAX * (0.25 + 0.5 * shape))))
        bar = min(_BAR_MAX, round(_BAR_MAX * shape))
        if sensor is SensorState.SEARCHING:
            self._values = None
            return ContecPacket(
                signal_strength=_SEARCHING_STRENGTH,
                pleth=pleth,
                bargraph=bar,
                pulse_rate=MISSING_PR,
                spo2=MISSING_SPO2,
                searching=True,
            )
        if self._values is None or index % _VALUE_UPDATE_PACKETS == 0:
            self._values = (
                round(hr + self._rng.gauss(0.0, _HR_JITTER_SD)),
                self._spo2_reading(elapsed),
            )
        pulse_rate, spo2 = self._values
        return ContecPacket(
            signal_strength=SIGNAL_STRENGTH_MAX,
            pleth=pleth,
            bargraph=bar,
            pulse_rate=pulse_rate,
            spo2=spo2,
            beat=beat,
            spo2_dropping=self.spo2_target_at(elapsed) < self.spo2_target_at(elapsed - 1.0),
        )

    def _spo2_reading(self, elapsed: float) -> int:
        jitter = self._rng.choice((-1, 1)) if self._rng.random() < _SPO2_JITTER_P else 0
        return min(100, round(self.spo2_target_at(elapsed)) + jitter)

    def _splice_noise(self, wire: bytes) -> bytes:
        garbage = self._rng.randbytes(self._rng.randint(_NOISE_MIN_BYTES, _NOISE_MAX_BYTES))
        at = self._rng.randrange(len(wire) + 1)
        return wire[:at] + garbage + wire[at:]


class ContecSimulator(PtyDeviceSimulator[ContecScenario]):
    """Plays a :class:`ContecScenario` into a pty whose slave is reachable at ``link_path``.

    Writes :data:`PACKETS_PER_WRITE` packets at the end of each 1/6 s of ``clock`` time, so
    the line carries 60 packets/s. The legacy device streams without being asked, so the
    simulator starts at once; bytes the driver sends are drained each write, so the pty
    never fills, and the latest are kept in :attr:`received` (the driver should send none).
    ``settings`` are accepted for the registry's signature: a pty has no baud rate or
    parity to honour. Without a ``seed`` the scenario is seeded from ``link_path``, so
    beds differ but runs repeat.
    """

    def __init__(
        self,
        settings: ContecSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            ContecScenario(scenario, seed=default_seed(link_path, seed)), clock, link_path
        )
        self.settings = settings

    def _bursts(self) -> Iterator[Burst]:
        steps = [self.scenario.step() for _ in range(PACKETS_PER_WRITE)]
        # A batch that straddles a plug or unplug is written in two parts.
        for plugged, run in itertools.groupby(steps, key=lambda s: s.plugged):
            group = list(run)
            # The group's last packet leaves the device at the end of its period (whole
            # packets over the rate, as in ``elapsed``: no rounding drift).
            end = (group[-1].index + 1) / PACKET_RATE_HZ
            yield Burst(plugged, b"".join(s.wire for s in group), end)
