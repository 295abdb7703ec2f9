"""A simulated OpenBCI Cyton streaming ECG: real 33-byte packets into a pty.

Two halves, as everywhere in ``drivers``:

* :class:`CytonScenario` is pure and deterministic (a seeded ``random.Random``, no clock):
  each :meth:`~CytonScenario.step` is the next :data:`PACKETS_PER_STEP` samples of the
  board's life, with the packets it sends and the exact bytes on the line.
* :class:`CytonSimulator` plays a scenario in real (or injected) time through a
  :class:`~drivers.simulate.pty.PtyLink`, obeying the driver's commands: like the real
  board it sends nothing until ``b`` (start streaming) and stops on ``s``.

The signal: a PQRST complex (the beat model of :mod:`drivers.simulate.ecg_synth`: P, Q, R, S
and T waves as Gaussian bumps, R about 1.2 mV in lead II, QT shortening with rate) at the
scenario's heart rate with respiratory baseline wander (0.05 mV at 0.25 Hz), scaled per
lead (I 0.6, II 1.0, III 0.4 of lead II, so Einthoven's I + III = II holds), plus 10 uV of
white noise per lead. Channels the settings map to a lead carry it; the others carry 2 uV
of noise, as a shorted input does. Every 10th
packet carries an accelerometer reading of 1 g on Z (footer 0xC0), the others zeros.

Scenarios (names declared by the driver's ``SPEC.scenarios``):

``normal``
    Sinus rhythm about 72 /min with respiratory variation.
``tachycardia``
    Sinus tachycardia about 150 /min.
``noise``
    Normal, plus a burst of 8 to 48 random bytes, at least one of them 0xA0, spliced
    into the line every 10 s (the packet it lands in is usually lost).
``dropped_packets``
    Normal, but the radio loses 1 to 20 packets every 8 s and 300 packets (1.2 s, more
    than a wrap of the sample number) at 30 s and every 60 s after; sample numbers skip.
``lead_off``
    Normal, but every 30 s the lowest-numbered lead channel's electrode is off from 15 s
    to 25 s: the channel sits at positive full scale (railed).
``unplug``
    The dongle is in for 40 s, out for 15 s, back in; repeats every 55 s. The board runs
    on its battery meanwhile and keeps streaming if it was (packets sent while the dongle
    is out are lost).
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from drivers.clock import Clock
from drivers.ecg.openbci import (
    CHANNELS,
    COUNT_MAX,
    COUNT_MIN,
    FOOTER_ACCEL,
    SCENARIOS,
    SOFT_RESET,
    START_STREAMING,
    STOP_STREAMING,
    CytonPacket,
    OpenBCISettings,
    encode_packet,
    millivolts_per_count,
)
from drivers.simulate.device import RECEIVED_KEEP, Burst, PtyDeviceSimulator, default_seed
from drivers.simulate.ecg_synth import pqrst

#: Packets per step: the simulator writes every 40 ms at 250 Hz.
PACKETS_PER_STEP: Final = 10

#: Amplitude of each lead relative to lead II.
LEAD_FACTORS: Final[Mapping[str, float]] = {"I": 0.6, "II": 1.0, "III": 0.4}

#: What the simulated board prints after ``v`` (soft reset), ending as the board's does.
RESET_BANNER: Final = (
    b"OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\nFirmware: v3.1.2 (simulated)\n$$$"
)

# Heart rates, /min.
_HR_NORMAL: Final = 72.0
_HR_RESP_SWING: Final = 2.0
_HR_TACHY: Final = 150.0
_HR_TACHY_SWING: Final = 1.0
_RESP_PERIOD_S: Final = 4.0  # 15 breaths/min
_RR_JITTER_SD: Final = 0.01  # s, beat-to-beat variation on top of the rate

_BEAT_BEFORE_S: Final = 0.25  # a beat contributes from this long before its R peak
_BEAT_AFTER_S: Final = 0.6  # ... to this long after

_WANDER_MV: Final = 0.05
_NOISE_MV: Final = 0.010
_IDLE_NOISE_MV: Final = 0.002

# noise: one burst per period.
_NOISE_PERIOD_S: Final = 10.0
_NOISE_MIN_BYTES: Final = 8
_NOISE_MAX_BYTES: Final = 48

# dropped_packets.
_DROP_PERIOD_S: Final = 8.0
_DROP_MAX: Final = 20
_DROPOUT_FIRST_S: Final = 30.0
_DROPOUT_PERIOD_S: Final = 60.0
_DROPOUT_PACKETS: Final = 300

# lead_off: seconds within each cycle.
_LEAD_OFF_CYCLE_S: Final = 30.0
_LEAD_OFF_FROM_S: Final = 15.0
_LEAD_OFF_TO_S: Final = 25.0

# unplug: seconds.
_UNPLUG_PLUGGED_S: Final = 40.0
_UNPLUG_UNPLUGGED_S: Final = 15.0

# accelerometer: one reading every this many packets, 1 g on Z.
_ACCEL_EVERY: Final = 10
_ONE_G_COUNTS: Final = 8000

# Bytes from the driver kept for inspection.


@dataclass(frozen=True, slots=True)
class SimStep:
    """One step (:data:`PACKETS_PER_STEP` sample periods) of the simulated board.

    ``elapsed`` is seconds since the scenario started, at the start of the step;
    ``packets`` are those that reach the dongle (none while unplugged); ``dropped`` counts
    packets the board made but the radio lost; ``wire`` is the bytes on the line: the
    encoded packets, with any noise spliced in.
    """

    elapsed: float
    plugged: bool
    packets: tuple[CytonPacket, ...]
    dropped: int
    wire: bytes


class CytonScenario:
    """Deterministic packet source for one named scenario (see the module docstring).

    ``leads`` maps channel number (1..8) to lead name as in :class:`OpenBCISettings`;
    ``gain`` and ``sample_rate`` (Hz) set the scale and pace. The same ``seed`` always
    gives the same steps.
    """

    def __init__(
        self,
        name: str,
        *,
        leads: Mapping[int, str] | None = None,
        gain: int = 24,
        sample_rate: int = 250,
        seed: int = 0,
    ) -> None:
        if name not in SCENARIOS:
            raise ValueError(f"unknown OpenBCI scenario {name!r}; choose one of {SCENARIOS}")
        self.name = name
        self.leads: dict[int, str] = dict(leads if leads is not None else {2: "II"})
        for channel, lead in self.leads.items():
            if not 1 <= channel <= CHANNELS or lead not in LEAD_FACTORS:
                raise ValueError(f"bad lead mapping {channel} -> {lead!r}")
        self.sample_rate = sample_rate
        self.mv_per_count = millivolts_per_count(gain)
        self._rng = random.Random(seed)
        self._index = 0  # packets made since the start, lost ones included
        self._number = 0  # next sample number
        self._beats: collections.deque[tuple[float, float]] = collections.deque()
        self._next_r = 0.3  # s: first R peak
        self._drop_left = 0
        self._off_channel = min(self.leads) if self.leads else 0

    @property
    def elapsed(self) -> float:
        """Seconds from the scenario's start to the next step."""
        return self._index / self.sample_rate

    def restart_numbering(self) -> None:
        """The next packet carries sample number 0 (the board starting a stream)."""
        self._number = 0

    def plugged_at(self, elapsed: float) -> bool:
        """Whether the dongle is in at ``elapsed`` seconds."""
        if self.name != "unplug":
            return True
        return elapsed % (_UNPLUG_PLUGGED_S + _UNPLUG_UNPLUGGED_S) < _UNPLUG_PLUGGED_S

    def heart_rate_at(self, elapsed: float) -> float:
        """Underlying heart rate (/min) at ``elapsed`` seconds."""
        resp = math.sin(2.0 * math.pi * elapsed / _RESP_PERIOD_S)
        if self.name == "tachycardia":
            return _HR_TACHY + _HR_TACHY_SWING * resp
        return _HR_NORMAL + _HR_RESP_SWING * resp

    def lead_off_at(self, elapsed: float) -> bool:
        """Whether the ``lead_off`` electrode is off at ``elapsed`` seconds."""
        if self.name != "lead_off":
            return False
        return _LEAD_OFF_FROM_S <= elapsed % _LEAD_OFF_CYCLE_S < _LEAD_OFF_TO_S

    def lead_ii_at(self, t: float) -> float:
        """Clean lead II potential (mV) at ``t`` seconds: the beats around ``t``.

        Calls must come in time order: beats are scheduled as time passes.
        """
        while self._next_r <= t + _BEAT_BEFORE_S:
            rr = 60.0 / self.heart_rate_at(self._next_r) + self._rng.gauss(0.0, _RR_JITTER_SD)
            self._beats.append((self._next_r, rr))
            self._next_r += rr
        while self._beats and self._beats[0][0] < t - _BEAT_AFTER_S:
            self._beats.popleft()
        return sum(pqrst(t - r, rr) for r, rr in self._beats)

    def step(self) -> SimStep:
        """The next :data:`PACKETS_PER_STEP` sample periods of the board's life."""
        elapsed = self.elapsed
        plugged = self.plugged_at(elapsed)
        sent: list[CytonPacket] = []
        dropped = 0
        for _ in range(PACKETS_PER_STEP):
            packet = self._packet()
            if self._radio_drops():
                dropped += 1
            elif plugged:
                sent.append(packet)
        wire = b"".join(encode_packet(p) for p in sent)
        if self.name == "noise" and plugged and self._noise_due(elapsed):
            wire = self._splice_noise(wire)
        return SimStep(elapsed, plugged, tuple(sent), dropped, wire)

    def _packet(self) -> CytonPacket:
        t = self._index / self.sample_rate
        self._index += 1
        number = self._number
        self._number = (number + 1) % 256
        heart = self.lead_ii_at(t)
        wander = _WANDER_MV * math.sin(2.0 * math.pi * t / _RESP_PERIOD_S)
        off = self.lead_off_at(t)
        counts = []
        for channel in range(1, CHANNELS + 1):
            lead = self.leads.get(channel)
            if lead is None:
                mv = self._rng.gauss(0.0, _IDLE_NOISE_MV)
            else:
                mv = LEAD_FACTORS[lead] * (heart + wander) + self._rng.gauss(0.0, _NOISE_MV)
            count = COUNT_MAX if off and channel == self._off_channel else self._count(mv)
            counts.append(count)
        aux = bytes(6)
        if number % _ACCEL_EVERY == 0:
            aux = (0).to_bytes(4, "big") + _ONE_G_COUNTS.to_bytes(2, "big", signed=True)
        return CytonPacket.build(number, counts, aux, FOOTER_ACCEL)

    def _count(self, mv: float) -> int:
        return min(COUNT_MAX, max(COUNT_MIN, round(mv / self.mv_per_count)))

    def _radio_drops(self) -> bool:
        """Whether the packet just made is lost on the radio (``dropped_packets``)."""
        if self.name != "dropped_packets":
            return False
        made = self._index  # packets made so far, this one included
        rate = self.sample_rate
        if made % round(_DROP_PERIOD_S * rate) == 0:
            self._drop_left = max(self._drop_left, self._rng.randint(1, _DROP_MAX))
        if made >= _DROPOUT_FIRST_S * rate and (
            (made - round(_DROPOUT_FIRST_S * rate)) % round(_DROPOUT_PERIOD_S * rate) == 0
        ):
            self._drop_left = _DROPOUT_PACKETS
        if self._drop_left:
            self._drop_left -= 1
            return True
        return False

    def _noise_due(self, elapsed: float) -> bool:
        """Whether a noise burst falls in the step starting at ``elapsed``."""
        period = round(_NOISE_PERIOD_S * self.sample_rate)
        first = round(elapsed * self.sample_rate)
        return (first + PACKETS_PER_STEP) // period > first // period

    def _splice_noise(self, wire: bytes) -> bytes:
        garbage = bytearray(
            self._rng.randbytes(self._rng.randint(_NOISE_MIN_BYTES, _NOISE_MAX_BYTES))
        )
        garbage[self._rng.randrange(len(garbage))] = 0xA0  # a stray header to resync past
        at = self._rng.randrange(len(wire) + 1)
        return wire[:at] + bytes(garbage) + wire[at:]


class CytonSimulator(PtyDeviceSimulator[CytonScenario]):
    """Plays a :class:`CytonScenario` into a pty whose slave is reachable at ``link_path``.

    Writes a step's packets at the end of each step of ``clock`` time (every 40 ms at
    250 Hz, so the line carries the board's 8250 B/s), but only while streaming: the
    board starts streaming on ``b`` (sample numbers restart at 0), stops on ``s``, and on
    ``v`` stops, restarts its numbering and prints :data:`RESET_BANNER`. Other bytes are
    ignored. Commands are read once per step; the latest bytes are kept in
    :attr:`received`. Streaming survives unplugging (the board has its own battery).
    Without a ``seed`` the scenario is seeded from ``link_path``, so beds differ but runs
    repeat.
    """

    def __init__(
        self,
        settings: OpenBCISettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            CytonScenario(
                scenario,
                leads=settings.leads,
                gain=settings.gain,
                sample_rate=settings.sample_rate,
                seed=default_seed(link_path, seed),
            ),
            clock,
            link_path,
        )
        self._streaming = False

    @property
    def plugged(self) -> bool:
        """Whether the simulated dongle is in."""
        return self._link.plugged

    @property
    def streaming(self) -> bool:
        """Whether the board is streaming (since ``b``, until ``s`` or ``v``)."""
        return self._streaming

    def _bursts(self) -> Iterable[Burst]:
        # Commands heard after the last step's write take effect from this one.
        step = self.scenario.step()
        # The step's last packet leaves the board at the end of its period, if streaming.
        wire = step.wire if self._streaming else b""
        return (Burst(step.plugged, wire, self.scenario.elapsed),)

    def _heard(self, data: bytes) -> None:
        self._obey(data)

    def _obey(self, commands: bytes) -> None:
        if not commands:
            return
        self._received += commands
        del self._received[:-RECEIVED_KEEP]
        for byte in commands:
            command = bytes((byte,))
            if command == START_STREAMING and not self._streaming:
                self._streaming = True
                self.scenario.restart_numbering()
            elif command == STOP_STREAMING:
                self._streaming = False
            elif command == SOFT_RESET:
                self._streaming = False
                self.scenario.restart_numbering()
                self._link.write(RESET_BANNER)
