"""The simulated Contec CMS50D+: the pure scenario model, then the simulator on a real pty
feeding the real transport, runner and device model.

Time only moves through :class:`~drivers.clock.ManualClock`; the pty tests wait for bytes
the kernel is still moving under a bounded timeout, never for time to pass.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterable

import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.device import DeviceDisconnected
from drivers.oximetry import nonin
from drivers.oximetry.contec import (
    MISSING_PR,
    MISSING_SPO2,
    PACKET_LEN,
    PACKET_RATE_HZ,
    PACKETS_PER_WINDOW,
    SCENARIOS,
    SPEC,
    ContecCodec,
    ContecOximeter,
    ContecPacket,
    ContecSettings,
    encode_packet,
)
from drivers.readings import Condition, DeviceEvent, Numeric, Reading, Waveform
from drivers.serial_device import open_serial, run_serial_device
from drivers.simulate.contec import (
    PACKETS_PER_WRITE,
    ContecScenario,
    ContecSimulator,
    SimStep,
)
from tests.support.ptys import TIMEOUT

WRITE_PERIOD_S = PACKETS_PER_WRITE / PACKET_RATE_HZ


def run(scenario: ContecScenario, seconds: float) -> list[SimStep]:
    return [scenario.step() for _ in range(round(seconds * PACKET_RATE_HZ))]


def packets(steps: Iterable[SimStep]) -> list[ContecPacket]:
    return [s.packet for s in steps if s.packet is not None]


def during(steps: Iterable[SimStep], start: float, end: float) -> list[SimStep]:
    return [s for s in steps if start <= s.elapsed < end]


def spo2_numerics(readings: Iterable[Reading]) -> list[Numeric]:
    return [r for r in readings if isinstance(r, Numeric) and r.code == codes.SPO2]


# --- scenario model -----------------------------------------------------------------------


def test_every_declared_scenario_exists_and_means_what_nonins_does() -> None:
    assert SPEC.scenarios == SCENARIOS == nonin.SCENARIOS
    for name in SCENARIOS:
        assert ContecScenario(name).step().elapsed == 0.0
    with pytest.raises(ValueError, match="unknown Contec scenario"):
        ContecScenario("asystole")


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_bytes(name: str) -> None:
    a = b"".join(s.wire for s in run(ContecScenario(name, seed=11), 30))
    b = b"".join(s.wire for s in run(ContecScenario(name, seed=11), 30))
    c = b"".join(s.wire for s in run(ContecScenario(name, seed=12), 30))
    assert a == b and a != c


def test_steps_advance_one_packet_period_exactly() -> None:
    steps = run(ContecScenario("normal"), 60)
    assert len(steps) == 3600
    assert [s.index for s in steps[:3]] == [0, 1, 2]
    assert steps[60].elapsed == 1.0 and steps[3000].elapsed == 50.0
    assert all(len(s.wire) == PACKET_LEN for s in steps)  # 300 B/s


def test_normal_vitals_pulse_and_pleth() -> None:
    got = packets(run(ContecScenario("normal", seed=1), 60))
    assert all(95 <= p.spo2 <= 99 and 66 <= p.pulse_rate <= 78 for p in got)
    assert not any(p.finger_out or p.probe_error or p.searching for p in got)
    assert {p.signal_strength for p in got} == {8}
    # The device refreshes its values once a second and repeats them in between.
    changes = sum(
        1 for a, b in itertools.pairwise(got) if (a.spo2, a.pulse_rate) != (b.spo2, b.pulse_rate)
    )
    assert changes <= 60
    # One beat marker per pulse: about 72 a minute.
    assert 68 <= sum(p.beat for p in got) <= 76
    pleth = [p.pleth for p in got]
    assert min(pleth) >= 0 and max(pleth) <= 127 and max(pleth) > 2 * min(pleth)
    assert max(p.bargraph for p in got) == 8 and min(p.bargraph for p in got) == 0


def test_desaturation_reaches_86_percent_and_sets_the_dropping_bit() -> None:
    steps = run(ContecScenario("desaturation", seed=2), 125)
    spo2 = {s.elapsed: s.packet.spo2 for s in steps if s.packet is not None}
    assert all(v >= 95 for t, v in spo2.items() if t < 20)
    assert min(v for t, v in spo2.items() if t <= 80) <= 86
    assert all(v <= 86 for t, v in spo2.items() if 81 <= t < 100)
    assert all(v >= 95 for t, v in spo2.items() if t >= 121)
    dropping = {s.elapsed for s in steps if s.packet is not None and s.packet.spo2_dropping}
    assert dropping and min(dropping) >= 20 and max(dropping) < 81
    pr = {s.elapsed: s.packet.pulse_rate for s in steps if s.packet is not None}
    assert sum(v for t, v in pr.items() if 85 <= t < 95) > sum(v for t, v in pr.items() if t < 10)


def test_probe_off_sends_finger_out_then_searching_with_sentinels() -> None:
    steps = run(ContecScenario("probe_off", seed=3), 120)
    for cycle in (0.0, 60.0):
        off = during(steps, cycle + 30, cycle + 45)
        assert len(off) == 15 * 60
        for s in off:
            assert s.packet is not None and s.packet.finger_out and not s.packet.searching
            assert (s.packet.pulse_rate, s.packet.spo2) == (MISSING_PR, MISSING_SPO2)
            # 4b: invalid readings are PR 0xFF / SpO2 0x7F with byte 1 bit 4 set.
            assert s.wire == bytes.fromhex("90 00 40 7F 7F")
        searching = packets(during(steps, cycle + 45, cycle + 49))
        assert len(searching) == 4 * 60
        assert all(p.searching and not p.finger_out for p in searching)
        assert all((p.pulse_rate, p.spo2) == (MISSING_PR, MISSING_SPO2) for p in searching)
        on = packets(during(steps, cycle, cycle + 30)) + packets(
            during(steps, cycle + 49, cycle + 60)
        )
        assert all(not (p.finger_out or p.searching) and p.spo2 != MISSING_SPO2 for p in on)


def test_noise_costs_only_the_packets_it_hits() -> None:
    steps = run(ContecScenario("noise", seed=4), 60)
    noisy = [s for s in steps if len(s.wire) > PACKET_LEN]
    assert [round(s.elapsed + 1 / 60) for s in noisy] == [10, 20, 30, 40, 50, 60]
    codec = ContecCodec()
    got = codec.feed(b"".join(s.wire for s in steps))
    # Each step's bytes decode as they would alone: the next step's sync byte ends
    # whatever the garbage began, so every clean packet comes out.
    alone = [p for s in steps for p in ContecCodec().feed(s.wire)]
    assert got == alone
    for s in steps:
        if s not in noisy:
            assert ContecCodec().feed(s.wire) == [s.packet]
    assert len(got) >= len(steps) - len(noisy)


def test_unplug_cycle() -> None:
    steps = run(ContecScenario("unplug", seed=5), 110)
    plugged = [s.plugged for s in steps]
    assert all(plugged[: 40 * 60])
    assert not any(plugged[40 * 60 : 55 * 60])
    assert all(plugged[55 * 60 : 95 * 60])
    assert not any(plugged[95 * 60 :])
    assert all(s.packet is None and s.wire == b"" for s in steps if not s.plugged)


# --- the driver's model fed by the pure scenario ------------------------------------------


def model_readings(name: str, seconds: float) -> list[Reading]:
    model = ContecOximeter("ox1", ContecSettings())
    model.on_connect(0.0)
    readings: list[Reading] = []
    for step in run(ContecScenario(name, seed=8), seconds):
        readings += model.feed(step.wire, step.elapsed + 1 / PACKET_RATE_HZ)
    readings += model.on_disconnect(seconds)
    return readings


def test_model_sees_the_desaturation_at_three_numerics_a_second() -> None:
    readings = model_readings("desaturation", 100)
    spo2 = spo2_numerics(readings)
    assert len(spo2) == 300
    assert min(n.value for n in spo2 if n.value is not None) <= 86
    assert not [r for r in readings if isinstance(r, DeviceEvent)]
    waves = [r for r in readings if isinstance(r, Waveform)]
    assert sum(len(w.samples) for w in waves) == 100 * 60
    assert [w.sequence for w in waves[:3]] == [0, PACKETS_PER_WINDOW, 2 * PACKETS_PER_WINDOW]


def test_model_raises_and_clears_probe_off_once_per_cycle() -> None:
    events = [
        (round(r.time), r.condition, r.active)
        for r in model_readings("probe_off", 119)
        if isinstance(r, DeviceEvent)
    ]
    per_cycle = [
        (30, Condition.SENSOR_OFF, True),
        (45, Condition.SENSOR_OFF, False),
        (45, Condition.PULSE_SEARCH, True),
        (49, Condition.PULSE_SEARCH, False),
    ]
    assert events == per_cycle + [(t + 60, c, a) for t, c, a in per_cycle]


def test_model_rides_through_the_noise() -> None:
    readings = model_readings("noise", 60)
    assert not [r for r in readings if isinstance(r, DeviceEvent)]
    spo2 = spo2_numerics(readings)
    assert len(spo2) >= 179  # a burst's spurious packets may shift the windows a little
    assert all(n.value is not None and 95 <= n.value <= 99 for n in spo2)


# --- the simulator on a real pty, into the real transport, runner and model ----------------


class Published:
    """The runner's ``publish`` callback: records readings; a test awaits a condition."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._changed = asyncio.Event()

    def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._changed.set()

    async def until(self, predicate: Callable[[list[Reading]], bool], what: str) -> None:
        """Wait (bounded by TIMEOUT, not a delay) until ``predicate(readings)`` holds."""

        async def wait() -> None:
            while not predicate(self.readings):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}")


def at_least_spo2(n: int) -> Callable[[list[Reading]], bool]:
    return lambda readings: len(spo2_numerics(readings)) >= n


def _lexists(path: str) -> bool:
    return os.path.lexists(path)


def link_events(readings: Iterable[Reading]) -> list[bool]:
    return [
        r.active
        for r in readings
        if isinstance(r, DeviceEvent) and r.condition is Condition.DISCONNECTED
    ]


def on_a_pty(settings: ContecSettings) -> ContecSettings:
    # Ptys refuse parity (the transport reads the framing back and refuses a pty asked
    # for 8O1), so the simulated line runs 8N1; the gateway opens a simulated device the
    # same way. Everything else (19200 baud, open_serial, SerialTransport, the runner and
    # the model) is the real path; test_contec.py shows 8O1 reaching pyserial.
    return settings.model_copy(update={"parity": "N"})


async def advance_to(clock: ManualClock, origin: float, elapsed: float) -> None:
    """Move ``clock`` to ``elapsed`` seconds of scenario time (a hair past, so a deadline
    computed with different rounding is never just out of reach)."""
    await clock.advance(origin + elapsed + 1e-6 - clock.monotonic())


async def test_simulator_feeds_the_real_runner_over_a_pty(link_path: str) -> None:
    clock = ManualClock()
    settings = ContecSettings()
    assert SPEC.make_simulator is not None
    sim = SPEC.make_simulator(settings, "normal", clock, link_path)
    assert isinstance(sim, ContecSimulator) and sim.port == link_path
    model = ContecOximeter("ox1", settings)
    published = Published()
    origin = clock.monotonic()
    async with asyncio.TaskGroup() as tg:
        sim_task = tg.create_task(sim.run())
        await clock.advance(0)
        assert sim.plugged and _lexists(link_path)
        transport = open_serial(on_a_pty(settings), sim.port)
        assert transport.line_settings == "19200 8N1"
        runner = tg.create_task(run_serial_device("ox1", model, transport, published, clock))
        await published.until(lambda rs: link_events(rs) == [False], "the runner to connect")
        for second in (1, 2):
            await advance_to(clock, origin, second)
            await published.until(at_least_spo2(3 * second), "numerics")
        runner.cancel()
        sim_task.cancel()
    spo2 = spo2_numerics(published.readings)
    assert len(spo2) == 6
    assert all(n.value is not None and 95 <= n.value <= 99 for n in spo2)
    waves = [r for r in published.readings if isinstance(r, Waveform)]
    assert [w.sequence for w in waves] == [20 * i for i in range(6)]
    assert all(w.sample_rate == 60.0 and w.resolution == 1.0 for w in waves)
    assert model.counters.frames_decoded == 120 and model.counters.bytes_dropped == 0
    assert sim.received == b""  # the gateway sent the device nothing
    assert not sim.plugged and not _lexists(link_path)  # cancelling unplugs


async def test_unplug_and_replug_through_the_runner(link_path: str) -> None:
    clock = ManualClock()
    settings = ContecSettings()
    sim = ContecSimulator(settings, "unplug", clock, link_path, seed=9)
    model = ContecOximeter("ox1", settings)
    published = Published()
    origin = clock.monotonic()

    async def connect() -> asyncio.Task[None]:
        # What the gateway's supervisor does on every (re)start: a new transport, same model.
        transport = open_serial(on_a_pty(settings), sim.port)
        task = asyncio.create_task(run_serial_device("ox1", model, transport, published, clock))
        await published.until(lambda rs: link_events(rs)[-1:] == [False], "a connection")
        return task

    async with asyncio.TaskGroup() as tg:
        sim_task = tg.create_task(sim.run())
        await clock.advance(0)
        first = await connect()
        await advance_to(clock, origin, 1.0)
        await published.until(at_least_spo2(3), "numerics")

        # At 40 s the cable is pulled: the runner reports the loss and ends.
        await advance_to(clock, origin, 40.0)
        assert not sim.plugged and not _lexists(link_path)
        with pytest.raises(DeviceDisconnected):
            await asyncio.wait_for(first, TIMEOUT)
        assert link_events(published.readings) == [False, True]
        before = len(spo2_numerics(published.readings))
        frames = model.counters.frames_decoded

        # Back in at 55 s behind the same path, on a new pty.
        await advance_to(clock, origin, 55.0)
        assert sim.plugged and _lexists(link_path)
        second = await connect()
        await advance_to(clock, origin, 56.0)
        await published.until(at_least_spo2(before + 3), "numerics again")
        assert link_events(published.readings) == [False, True, False]
        assert model.counters.frames_decoded >= frames + 60  # counters go on across links
        second.cancel()
        sim_task.cancel()
    assert not _lexists(link_path)


def test_simulated_bytes_are_the_encoded_packets() -> None:
    # What the simulator writes is exactly what the codec reads, nothing simulator-only.
    step = ContecScenario("normal", seed=1).step()
    assert step.packet is not None and step.wire == encode_packet(step.packet)
