"""The Modbus runner on real lines: three pumps sharing one RTU line with one silent, a lost
TCP line, capture records. The clock is a ManualClock stepped in small increments; after each
step the test waits (bounded) until every request to an answering pump has its reply."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.clock import ManualClock
from drivers.device import DeviceDisconnected, DeviceUnavailable
from drivers.infusion.profile import load_profile
from drivers.infusion.pump import InfusionPump, RtuPumpSettings, TcpPumpSettings
from drivers.modbus_device import (
    SILENT_PROBE_S,
    ModbusFleet,
    PollState,
    PollStats,
    PumpLink,
    run_modbus_device,
)
from drivers.readings import Condition, DeviceEvent, Numeric, Reading
from drivers.simulate.pump import PumpServer, SimulatedRtuLine, SimulatedTcpPumps
from drivers.transport.modbus import ModbusTransport, RtuLine, TcpLine
from tests.drivers.infusion.support import eventually, line_settled

STEP = 0.05


class Rig:
    def __init__(self, clock: ManualClock, server: PumpServer, transport: ModbusTransport):
        self.clock, self.server, self.transport = clock, server, transport
        self.published: list[Reading] = []
        self.stats: dict[int, PollStats] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def start(
        self, unit: int, *, stale_limit: float = 10.0, capture: Callable[..., None] | None = None
    ) -> None:
        model = InfusionPump(f"pump-{unit}", self.server.pumps[unit].profile)
        link = PumpLink(self.transport, unit, 1.0, stale_limit, timeout=0.2, retries=1)
        self.stats[unit] = PollStats(started=[])
        self.tasks[unit] = asyncio.ensure_future(
            run_modbus_device(
                f"pump-{unit}",
                model,
                link,
                self.published.append,
                self.clock,
                capture=capture,
                stats=self.stats[unit],
            )
        )

    def settled(self) -> bool:
        return line_settled(self.transport, self.server)

    async def run_for(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            await self.clock.advance(STEP)
            await eventually(self.settled, "replies to every answering pump")
            await asyncio.sleep(0)
            await eventually(self.settled, "replies to every answering pump")

    def events(self, source: str, condition: Condition) -> list[bool]:
        return [
            r.active
            for r in self.published
            if isinstance(r, DeviceEvent) and r.source == source and r.condition is condition
        ]

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        assert not self.transport.is_open  # the last pump out closed the shared line
        await self.transport.close()


async def _serving(server: PumpServer) -> AsyncIterator[None]:
    task = asyncio.ensure_future(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_three_pumps_share_one_rtu_line_and_a_silent_one_stalls_nobody(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    line = SimulatedRtuLine(clock, str(tmp_path / "rs485"), paced=False)
    line.add_pump(1, load_profile("generic"), "normal")
    line.add_pump(2, load_profile("cdab-tenths"), "occlusion")
    line.add_pump(3, load_profile("generic"), "silence")
    line.pumps[3].started -= 19.0  # its silence (20-40 s of each minute) starts 1 s in
    rig = Rig(clock, line, ModbusTransport(RtuLine(line.port, 115200, 8, "N", 1), clock))
    async for _ in _serving(line):
        try:
            for unit in (1, 2, 3):
                rig.start(unit)
            await rig.run_for(30.0)
        finally:
            await rig.stop()
    # The answering pumps kept their 1 s period throughout.
    for unit in (1, 2):
        starts = rig.stats[unit].started
        assert starts is not None and len(starts) >= 29
        periods = [b - a for a, b in itertools.pairwise(starts)]
        assert max(periods) <= 1.0 + 2 * STEP and min(periods) >= 1.0 - 2 * STEP, (
            unit,
            starts,
            rig.stats,
        )
        assert rig.events(f"pump-{unit}", Condition.NO_DATA) == []
    # pump-2's scripted occlusion (20 s into its minute) arrived as a high alarm.
    occlusion = [
        r
        for r in rig.published
        if isinstance(r, DeviceEvent)
        and r.source == "pump-2"
        and r.condition is Condition.OCCLUSION
    ]
    assert occlusion and occlusion[0].active and occlusion[0].priority is not None
    # The silent pump: no data raised after the stale limit, probed rarely, then back.
    assert rig.events("pump-3", Condition.NO_DATA) == [True, False]
    no_data = next(
        r
        for r in rig.published
        if isinstance(r, DeviceEvent) and r.source == "pump-3" and r.condition is Condition.NO_DATA
    )
    assert no_data.detail == "unit 3: no answer for 10 s"
    silent_polls = rig.stats[3].failed
    assert silent_polls <= 3 + 20 / SILENT_PROBE_S + 1
    assert rig.stats[3].state is PollState.ANSWERING
    silent_requests = [r for r in line.requests if r[0] == 3]
    assert len(silent_requests) <= 2 * 3 + 20 / SILENT_PROBE_S + 2 + 10


async def test_lost_tcp_line_publishes_disconnected_and_raises() -> None:
    clock = ManualClock()
    server = SimulatedTcpPumps(clock)
    server.add_pump(1, load_profile("generic"), "normal")
    transport = ModbusTransport(TcpLine(server.host, server.tcp_port), clock)
    rig = Rig(clock, server, transport)
    captured: list[tuple[float, int, int, int, list[int]]] = []
    async for _ in _serving(server):
        rig.start(1, capture=lambda *record: captured.append(record))
        await rig.run_for(2.0)
    task = rig.tasks[1]
    try:
        for _ in range(40):
            await clock.advance(STEP)
            if task.done():
                break
            await asyncio.sleep(0.01)
        await eventually(task.done, "the runner to end")
        with pytest.raises(DeviceDisconnected):
            task.result()
    finally:
        await rig.stop()
    assert rig.events("pump-1", Condition.DISCONNECTED) == [False, True]
    rates = [
        r.value
        for r in rig.published
        if isinstance(r, Numeric) and r.code.refid == "MDC_FLOW_FLUID_PUMP"
    ]
    assert rates and all(v == pytest.approx(125.0) for v in rates)
    assert len(captured) >= 2
    _t, unit, fc, address, registers = captured[0]
    assert (unit, fc, address, len(registers)) == (1, 4, 0, 61)
    assert registers[0:2] == [0x5055, 0x4D50]


# -- the fleet: which pumps share a line ---------------------------------------------------


def _rtu(**keys: object) -> RtuPumpSettings:
    return RtuPumpSettings.model_validate(keys)


async def test_fleet_shares_lines_by_port_and_refuses_conflicts(tmp_path: Path) -> None:
    clock = ManualClock()
    fleet = ModbusFleet(clock, tmp_path)
    a = fleet.link("a", _rtu(port="/dev/ttyUSB0", unit=1), None)
    b = fleet.link("b", _rtu(port="/dev/ttyUSB0", unit=2), None)
    c = fleet.link("c", _rtu(port="/dev/ttyUSB1", unit=1), None)
    assert a.transport is b.transport and a.transport is not c.transport
    tcp = TcpPumpSettings.model_validate({"host": "10.0.0.5", "unit": 3})
    assert (
        fleet.link("d", tcp, None).transport
        is fleet.link(
            "e", TcpPumpSettings.model_validate({"host": "10.0.0.5", "unit": 4}), None
        ).transport
    )
    published: list[Reading] = []
    model = InfusionPump("x", load_profile("generic"))
    for settings, reason in (
        (_rtu(port="/dev/ttyUSB0", unit=2), "unit 2 is used twice"),
        (_rtu(port="/dev/ttyUSB0", unit=3, baudrate=9600), "need the same baudrate"),
        (TcpPumpSettings.model_validate({}), "no host configured"),
    ):
        body = fleet.runner(
            "x", model, settings, simulate=None, replay=None, publish=published.append
        )
        with pytest.raises(DeviceUnavailable, match=reason) as refused:
            await body()
        assert refused.value.retry_after == 60.0
        last = published[-1]
        assert isinstance(last, DeviceEvent) and last.condition is Condition.DISCONNECTED
        assert reason in last.detail and "fix this pump's settings" in last.detail
    assert fleet.take_simulators() == []


def test_simulated_rtu_pumps_share_a_line_until_a_unit_repeats(tmp_path: Path) -> None:
    fleet = ModbusFleet(ManualClock(), tmp_path)
    first = fleet.link("a", _rtu(unit=1, baudrate=115200), "normal")
    second = fleet.link("b", _rtu(unit=2, baudrate=115200), "occlusion")
    third = fleet.link("c", _rtu(unit=1, baudrate=115200), "silence")
    assert first.transport is second.transport and third.transport is not first.transport
    made = fleet.take_simulators()
    assert [name for name, _ in made] == ["simulator:modbus-line-1", "simulator:modbus-line-2"]
    assert sorted(made[0][1].pumps) == [1, 2] and sorted(made[1][1].pumps) == [1]
    tcp = fleet.link("d", TcpPumpSettings.model_validate({}), "normal")
    assert isinstance(tcp.transport.line, TcpLine) and tcp.transport.line.host == "127.0.0.1"
    assert [name for name, _ in fleet.take_simulators()] == ["simulator:d"]


async def test_configured_line_settings_reach_the_modbus_client(tmp_path: Path) -> None:
    # Ptys refuse parity, so a real 8E1 line is checked where pyserial would get it.
    fleet = ModbusFleet(ManualClock(), tmp_path)
    link = fleet.link("a", _rtu(port="/dev/ttyUSB0", baudrate=38400, stopbits=2), None)
    assert link.transport.line == RtuLine("/dev/ttyUSB0", 38400, 8, "E", 2)
    client = link.transport._make_client()
    params = client.comm_params
    client.close()
    assert (params.host, params.baudrate, params.parity, params.stopbits) == (
        "/dev/ttyUSB0",
        38400,
        "E",
        2,
    )
    assert (link.timeout, link.retries, link.poll_interval, link.stale_limit) == (0.5, 1, 1.0, 10.0)
