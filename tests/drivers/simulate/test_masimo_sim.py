"""The simulated Masimo Radical (ASCII 1): the pure scenario model, then the simulator on a
real pty feeding the real driver through ``run_serial_device``.

Time only moves through :class:`~drivers.clock.ManualClock`; the pty tests wait for bytes
the kernel is still moving under a bounded timeout, never for time to pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterable

import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.device import DeviceDisconnected
from drivers.oximetry.masimo import (
    SCENARIOS,
    SPEC,
    Alarm,
    Exc,
    MasimoCodec,
    MasimoLine,
    MasimoOximeter,
    MasimoSettings,
    Variant,
    encode_line,
)
from drivers.readings import Condition, DeviceEvent, Numeric, Reading
from drivers.serial_device import run_serial_device
from drivers.simulate.masimo import DEFAULT_START, MasimoScenario, MasimoSimulator, SimStep
from drivers.simulate.nonin import SensorState
from drivers.transport.serial import SerialTransport
from tests.support.ptys import TIMEOUT

DEVICE = "bed2-masimo"


def run(scenario: MasimoScenario, seconds: int) -> list[SimStep]:
    return [scenario.step() for _ in range(seconds)]


def lines(steps: Iterable[SimStep]) -> list[MasimoLine]:
    return [s.line for s in steps if s.line is not None]


def during(steps: Iterable[SimStep], start: float, end: float) -> list[SimStep]:
    return [s for s in steps if start <= s.elapsed < end]


def spo2_numerics(readings: Iterable[Reading]) -> list[Numeric]:
    return [r for r in readings if isinstance(r, Numeric) and r.code == codes.SPO2]


# --- scenario model -----------------------------------------------------------------------


def test_every_declared_scenario_exists_and_no_other() -> None:
    assert SPEC.scenarios == SCENARIOS
    for name in SCENARIOS:
        assert MasimoScenario(name).step().elapsed == 0.0
    with pytest.raises(ValueError, match="unknown Masimo scenario"):
        MasimoScenario("asystole")


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_bytes(name: str) -> None:
    a = b"".join(s.wire for s in run(MasimoScenario(name, seed=11), 60))
    b = b"".join(s.wire for s in run(MasimoScenario(name, seed=11), 60))
    c = b"".join(s.wire for s in run(MasimoScenario(name, seed=12), 60))
    assert a == b and a != c


def test_one_line_per_second_stamped_when_sent() -> None:
    steps = run(MasimoScenario("normal", seed=1), 60)
    assert [s.elapsed for s in steps] == list(range(60))
    got = lines(steps)
    assert len(got) == 60
    assert [line.time for line in got] == [
        DEFAULT_START + dt.timedelta(seconds=i + 1) for i in range(60)
    ]


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
def test_normal_vitals_in_every_variant(variant: Variant) -> None:
    got = lines(run(MasimoScenario("normal", variant=variant, seed=2), 120))
    codec = MasimoCodec()
    assert codec.feed(b"".join(map(encode_line, got))) == got
    for line in got:
        v = line.values
        assert v.spo2 is not None and 95 <= v.spo2 <= 99
        assert v.pulse_rate is not None and 66 <= v.pulse_rate <= 78
        assert v.pi is not None and 2.0 <= v.pi <= 5.0
        assert v.exc == Exc.MASIMO_SET and v.alarm == 0
        if variant is Variant.RADICAL_5:
            assert not line.has("SN") and not line.has("SPCO")
        else:
            assert v.serial == "0000000002"
            assert v.spco is not None and 0 <= v.spco <= 2
            assert v.spmet is not None and 0 <= v.spmet <= 1.5
            assert v.pvi is not None and 8 <= v.pvi <= 20
            assert v.desat == 0 and v.pi_delta is not None and -40 <= v.pi_delta <= 40


def test_desaturation_reaches_86_percent_and_the_device_alarms() -> None:
    steps = run(MasimoScenario("desaturation", seed=3), 245)
    spo2 = {s.elapsed: s.line.values.spo2 for s in steps if s.line is not None}
    assert all(v is not None and v >= 95 for t, v in spo2.items() if t < 20)
    assert all(v is not None and v <= 86 for t, v in spo2.items() if 80 <= t < 100)
    assert all(v is not None and v >= 95 for t, v in spo2.items() if 120 <= t < 140)
    for s in steps:
        assert s.line is not None and s.line.values.alarm is not None
        low = Alarm.ALARM_ACTIVE | Alarm.SPO2_LOW
        assert (s.line.values.alarm == low) == (s.line.values.spo2 < 90)  # type: ignore[operator]
    # One desaturation event per cycle in the desaturation index.
    desat = {s.elapsed: s.line.values.desat for s in steps if s.line is not None}
    assert desat[0] == 0 and desat[119] == 1 and desat[244] == 2


def test_probe_off_then_searching_with_dashes() -> None:
    steps = run(MasimoScenario("probe_off", seed=4), 120)
    for cycle in (0.0, 60.0):
        off = lines(during(steps, cycle + 30, cycle + 45))
        assert len(off) == 15
        for line in off:
            assert line.values.exc == Exc.MASIMO_SET | Exc.SENSOR_OFF
            assert line.values.spo2 is None and line.get("SPO2") == "---%"
            assert line.get("PIDELTA") == "+--" and line.values.serial is not None
        searching = lines(during(steps, cycle + 45, cycle + 49))
        assert len(searching) == 4
        assert all(line.values.exc == Exc.MASIMO_SET | Exc.PULSE_SEARCH for line in searching)
        assert all(line.values.spo2 is None for line in searching)
        assert all(line.values.spo2 is not None for line in lines(during(steps, cycle, 30)))
        assert all(line.values.spo2 is not None for line in lines(during(steps, cycle + 49, 60)))


def test_sensor_timeline_is_the_nonin_one() -> None:
    scenario = MasimoScenario("probe_off")
    assert [scenario.sensor_at(t) for t in (29, 30, 44, 45, 48, 49)] == [
        SensorState.ON,
        SensorState.OFF,
        SensorState.OFF,
        SensorState.SEARCHING,
        SensorState.SEARCHING,
        SensorState.ON,
    ]


def test_noise_costs_only_the_lines_it_hits() -> None:
    steps = run(MasimoScenario("noise", seed=5), 60)
    noisy = [s for s in steps if s.line is not None and s.wire != encode_line(s.line)]
    assert [round(s.elapsed) for s in noisy] == [9, 19, 29, 39, 49, 59]
    codec = MasimoCodec()
    got = codec.feed(b"".join(s.wire for s in steps))
    clean = [s.line for s in steps if s not in noisy]
    assert all(line in got for line in clean)
    assert len(got) >= len(clean)
    garbage = sum(len(s.wire) - len(encode_line(s.line)) for s in noisy if s.line is not None)
    assert codec.counters.bytes_dropped >= garbage
    assert codec.counters.frames_decoded == len(got)


def test_unplug_cycle() -> None:
    steps = run(MasimoScenario("unplug", seed=6), 110)
    plugged = [s.plugged for s in steps]
    assert all(plugged[:40]) and not any(plugged[40:55])
    assert all(plugged[55:95]) and not any(plugged[95:])
    assert all(s.line is None and s.wire == b"" for s in steps if not s.plugged)


def test_device_clock_start_and_serial() -> None:
    start = dt.datetime(2025, 6, 30, 23, 59, 58, 123456)
    scenario = MasimoScenario("normal", start=start, serial="ABC1234567")
    got = lines(run(scenario, 3))
    assert [line.time for line in got] == [
        dt.datetime(2025, 6, 30, 23, 59, 59),
        dt.datetime(2025, 7, 1, 0, 0, 0),
        dt.datetime(2025, 7, 1, 0, 0, 1),
    ]
    assert {line.values.serial for line in got} == {"ABC1234567"}


# --- the driver's model fed by the pure scenario ------------------------------------------


def model_readings(name: str, seconds: int) -> list[Reading]:
    model = MasimoOximeter("ox1", MasimoSettings())
    start = DEFAULT_START.replace(tzinfo=dt.UTC).timestamp()
    model.on_connect(start)
    readings: list[Reading] = []
    for step in run(MasimoScenario(name, seed=8), seconds):
        readings += model.feed(step.wire, start + step.elapsed + 1)
    readings += model.on_disconnect(start + seconds)
    return readings


def test_model_sees_the_desaturation_without_technical_conditions() -> None:
    readings = model_readings("desaturation", 100)
    spo2 = spo2_numerics(readings)
    assert len(spo2) == 100
    assert min(n.value for n in spo2 if n.value is not None) <= 86
    assert all(n.device_time == n.time for n in spo2)  # device clock in step with the gateway
    assert not [r for r in readings if isinstance(r, DeviceEvent)]


def test_model_raises_and_clears_probe_off_once_per_cycle() -> None:
    start = DEFAULT_START.replace(tzinfo=dt.UTC).timestamp()
    got = [
        (round(r.time - start), r.condition, r.active)
        for r in model_readings("probe_off", 119)
        if isinstance(r, DeviceEvent)
    ]
    # The line describing second k is printed at its end, k + 1.
    per_cycle = [
        (31, Condition.SENSOR_OFF, True),
        (46, Condition.SENSOR_OFF, False),
        (46, Condition.PULSE_SEARCH, True),
        (50, Condition.PULSE_SEARCH, False),
    ]
    assert got == per_cycle + [(t + 60, c, a) for t, c, a in per_cycle]


# --- the simulator on a real pty, through run_serial_device -------------------------------


class Published:
    """The ``publish`` callback: records readings and lets a test await a kind of them."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._queue: asyncio.Queue[Reading] = asyncio.Queue()

    def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._queue.put_nowait(reading)

    async def next_spo2(self) -> Numeric:
        """The next SpO2 numeric published (bounded by TIMEOUT)."""

        async def wait() -> Numeric:
            while True:
                reading = await self._queue.get()
                if isinstance(reading, Numeric) and reading.code == codes.SPO2:
                    return reading

        return await asyncio.wait_for(wait(), TIMEOUT)

    async def link_event(self) -> DeviceEvent:
        """The next DISCONNECTED event (active or not)."""

        async def wait() -> DeviceEvent:
            while True:
                reading = await self._queue.get()
                if isinstance(reading, DeviceEvent) and reading.condition is Condition.DISCONNECTED:
                    return reading

        return await asyncio.wait_for(wait(), TIMEOUT)


def _lexists(path: str) -> bool:
    return os.path.lexists(path)


@pytest.mark.parametrize("offset", [0, -300], ids=["utc", "utc-5h"])
async def test_simulator_feeds_the_driver_over_a_pty(link_path: str, offset: int) -> None:
    clock = ManualClock()
    settings = MasimoSettings(device_utc_offset_minutes=offset)
    make_simulator = SPEC.make_simulator
    assert make_simulator is not None
    sim = make_simulator(settings, "normal", clock, link_path)
    assert isinstance(sim, MasimoSimulator) and sim.port == link_path
    model = MasimoOximeter(DEVICE, settings)
    published = Published()
    async with asyncio.TaskGroup() as tg:
        sim_task = tg.create_task(sim.run())
        await clock.advance(0)
        assert sim.plugged and _lexists(link_path)
        driver = tg.create_task(
            run_serial_device(DEVICE, model, SerialTransport(link_path), published, clock)
        )
        assert (await published.link_event()).active is False
        got = []
        for _ in range(5):
            await clock.advance(1.0)
            got.append(await published.next_spo2())
        driver.cancel()
        sim_task.cancel()
    assert all(n.value is not None and 95 <= n.value <= 99 for n in got)
    # The device clock follows the gateway's: device time is the arrival time, no skew.
    assert [n.device_time for n in got] == [n.time for n in got]
    assert not [r for r in published.readings if isinstance(r, DeviceEvent) and r.active]
    assert model.counters.frames_decoded == 5 and model.counters.bytes_dropped == 0
    assert sim.received == b""  # the driver never writes to the device
    assert not sim.plugged and not _lexists(link_path)  # cancelling unplugs


async def test_simulator_unplugs_and_the_driver_reconnects(link_path: str) -> None:
    clock = ManualClock()
    sim = MasimoSimulator(MasimoSettings(), "unplug", clock, link_path, seed=9)
    # The driver is told the device runs an hour ahead of UTC, which it does not: every line
    # then looks an hour skewed, so the link has a condition raised for the unplug to clear.
    model = MasimoOximeter(DEVICE, MasimoSettings(device_utc_offset_minutes=60))
    published = Published()

    def connect() -> asyncio.Task[None]:
        transport = SerialTransport(link_path)  # a new transport per attempt, as the supervisor
        return asyncio.create_task(run_serial_device(DEVICE, model, transport, published, clock))

    async with asyncio.TaskGroup() as tg:
        sim_task = tg.create_task(sim.run())
        await clock.advance(0)
        driver = connect()
        assert (await published.link_event()).active is False
        await clock.advance(1.0)
        first = await published.next_spo2()
        assert first.value is not None and first.device_time == first.time - 3600
        assert model.active_conditions == {Condition.CLOCK_SKEW}

        # At 40 s the cable is pulled: the driver clears what it raised, reports the loss, ends.
        await clock.advance(39.5)
        assert not sim.plugged and not _lexists(link_path)
        with pytest.raises(DeviceDisconnected):
            await asyncio.wait_for(driver, TIMEOUT)
        assert (await published.link_event()).active is True
        tail = published.readings[-2:]
        lost = [(e.condition, e.active) for e in tail if isinstance(e, DeviceEvent)]
        assert lost == [(Condition.CLOCK_SKEW, False), (Condition.DISCONNECTED, True)]
        assert model.active_conditions == frozenset()
        decoded = model.counters.frames_decoded
        assert decoded >= 2

        # Back in at 55 s behind the same path, on a new pty: the next attempt connects.
        await clock.advance(15.0)
        assert sim.plugged and _lexists(link_path)
        driver = connect()
        assert (await published.link_event()).active is False
        await clock.advance(1.0)
        assert (await published.next_spo2()).value is not None
        assert model.active_conditions == {Condition.CLOCK_SKEW}
        assert model.counters.frames_decoded > decoded  # the model outlives its connections
        driver.cancel()
        sim_task.cancel()
    assert not _lexists(link_path)
