"""The simulated pump: its model over time and scenarios, and the server that serves it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.clock import ManualClock
from drivers.infusion.profile import PumpState, Role, load_profile
from drivers.infusion.pump import SCENARIOS
from drivers.readings import Condition
from drivers.simulate.pump import NullModemPty, PumpSimModel, SimulatedRtuLine
from drivers.transport.modbus import ModbusTransport, NoResponse, ReadTable, RtuLine
from tests.drivers.infusion.support import eventually

LSB_ML = 0.01  # the generic map's volume resolution


@given(rate=st.floats(0.1, 1200.0), seconds=st.integers(1, 3 * 3600))
def test_volume_infused_is_rate_times_time(rate: float, seconds: int) -> None:
    model = PumpSimModel("normal", rate=rate, vtbi=1e6)
    model.advance(seconds)
    assert abs(model.infused - rate * seconds / 3600.0) <= LSB_ML
    assert model.remaining == pytest.approx(1e6 - model.infused)


def test_steps_of_any_size_give_the_same_volume() -> None:
    whole, pieces = PumpSimModel("normal"), PumpSimModel("normal")
    whole.advance(100.0)
    for _ in range(400):
        pieces.advance(0.25)
    assert pieces.infused == pytest.approx(whole.infused)
    assert whole.infused == pytest.approx(125.0 * 100 / 3600)


def test_occlusion_scenario_stops_flow_while_it_lasts() -> None:
    model = PumpSimModel("occlusion")
    model.advance(19.5)
    assert model.alarms == set() and model.state is PumpState.RUNNING
    model.advance(1.0)
    assert model.alarms == {Condition.OCCLUSION} and model.state is PumpState.ALARM
    volume = model.infused
    model.advance(10.0)
    assert model.infused == volume  # no flow while occluded
    model.advance(5.0)
    assert model.alarms == set() and model.state is PumpState.RUNNING


def test_air_in_line_silence_and_battery_scenarios() -> None:
    air = PumpSimModel("air_in_line")
    air.advance(31.0)
    assert Condition.AIR_IN_LINE in air.alarms
    silent = PumpSimModel("silence")
    silent.advance(25.0)
    assert silent.silent
    silent.advance(20.0)
    assert not silent.silent
    battery = PumpSimModel("battery_drain")
    battery.advance(190.0)  # 40 % - 19 % = 21 %
    assert Condition.LOW_BATTERY not in battery.alarms
    battery.advance(20.0)
    assert Condition.LOW_BATTERY in battery.alarms
    battery.advance(400.0)
    assert battery.battery == 0.0 and battery.state is PumpState.STOPPED


def test_near_empty_then_complete_and_normal_goes_kvo() -> None:
    model = PumpSimModel("near_empty")
    model.advance(1.0)
    assert Condition.NEAR_EMPTY in model.alarms
    model.advance(300.0)  # 10 mL at 120 mL/h: 5 minutes
    assert model.state is PumpState.COMPLETE and model.remaining == 0.0
    assert Condition.NEAR_EMPTY not in model.alarms
    done = PumpSimModel("normal", vtbi=1.0)
    done.advance(60.0)
    assert done.state is PumpState.KVO and done.frame().numerics[Role.RATE] == 1.0


def test_every_scenario_the_driver_lists_is_simulated() -> None:
    for scenario in SCENARIOS:
        PumpSimModel(scenario).advance(90.0)
    with pytest.raises(ValueError, match="unknown pump scenario"):
        PumpSimModel("meltdown")


async def test_null_modem_carries_bytes_both_ways(tmp_path: Path) -> None:
    import os

    clock = ManualClock()
    pair = NullModemPty(str(tmp_path / "a"), str(tmp_path / "b"), clock)
    pair.open()
    relay = asyncio.ensure_future(pair.run())
    a = os.open(tmp_path / "a", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    b = os.open(tmp_path / "b", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        got = bytearray()

        def read_b() -> bool:
            with contextlib.suppress(BlockingIOError):
                got.extend(os.read(b, 100))
            return bytes(got) == b"\x01\x04\x00\x0b"

        os.write(a, b"\x01\x04\x00\x0b")
        await eventually(read_b, "bytes across the null modem")
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        os.close(a)
        os.close(b)
        pair.close()


async def test_server_follows_the_clock_records_requests_and_goes_silent(tmp_path: Path) -> None:
    clock = ManualClock()
    line = SimulatedRtuLine(clock, str(tmp_path / "bus"), paced=False)
    line.add_pump(4, load_profile("generic"), "silence")
    task = asyncio.ensure_future(line.run())
    transport = ModbusTransport(RtuLine(line.port, 115200, 8, "N", 1), clock)
    try:
        await asyncio.wait_for(line.ready.wait(), 5)
        await clock.advance(10.0)
        regs = await transport.read(4, ReadTable.INPUT_REGISTERS, 13, 2, answer_within=1)
        assert (regs[0] << 16 | regs[1]) == round(125.0 * 10 / 3600 * 100)  # 0.35 mL
        await clock.advance(15.0)  # silent from 20 s
        pending = asyncio.ensure_future(
            transport.read(4, ReadTable.INPUT_REGISTERS, 13, 2, answer_within=0.5)
        )
        await eventually(lambda: len(line.requests) == 2 and clock.sleepers == 1)
        await clock.advance(0.5)
        with pytest.raises(NoResponse):
            await pending
        assert line.requests == [(4, 4, 13), (4, 4, 13)]
    finally:
        await transport.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
