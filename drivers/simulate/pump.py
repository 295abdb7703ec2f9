"""Simulated infusion pumps: a pymodbus server whose registers come from a pump model.

:class:`PumpSimModel` is pure and deterministic: a pump running a program over the
injected clock's time (volume infused advances by rate x time, VTBI remaining counts down,
completion at the end of the VTBI) with a scripted scenario on top:

* ``normal``: 125 mL/h, VTBI 500 mL, running throughout (KVO once complete);
* ``occlusion``: every 60 s, a downstream occlusion at 20 s for 15 s (state alarm, no flow);
* ``air_in_line``: every 60 s, air in the line at 30 s for 10 s (state alarm, no flow);
* ``near_empty``: 10 mL left at 120 mL/h: near-empty at once, complete after 5 minutes;
* ``battery_drain``: on battery from 40 %, 1 % every 10 s; low battery below 20 %, stops
  at 0 %;
* ``silence``: every 60 s, the pump stops answering at 20 s for 20 s.

:class:`PumpServer` serves any number of such pumps (one unit id each) through a real
pymodbus server: :class:`SimulatedTcpPumps` on 127.0.0.1, :class:`SimulatedRtuLine` on one
end of :class:`NullModemPty` (two ptys joined back to back, like ``socat pty pty``, that
can pace bytes at the line's baud rate). Registers are refreshed from the model at each
request, on the injected clock, so a test advances time and reads the consequences. Every
request PDU the server receives is recorded in :attr:`PumpServer.requests`, so a test can
prove which function codes left the gateway. Unit ids nobody simulates stay silent, as on
a real RS-485 line.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import errno
import os
import socket
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

import drivers.transport.modbus  # noqa: F401  (quietens pymodbus's logging)
from drivers.clock import Clock
from drivers.infusion import capture
from drivers.infusion.codec import Blocks, PumpFrame, encode
from drivers.infusion.profile import (
    ALARM_CONDITIONS,
    AlarmBit,
    Profile,
    PumpState,
    ReadBlock,
    Role,
    Table,
)
from drivers.infusion.pump import SCENARIOS
from drivers.readings import Condition

_CYCLE_S: Final = 60.0
_KVO_RATE: Final = 1.0  # mL/h


@dataclass
class PumpSimModel:
    """A pump's program and alarms over scenario time (seconds since it started)."""

    scenario: str = "normal"
    rate: float = 125.0  # programmed rate, mL/h
    vtbi: float = 500.0  # mL
    infused: float = 0.0  # mL, this program
    battery: float = 100.0  # %
    drug: str = "Heparin 25000 IU"
    concentration: float = 50.0  # mg/mL
    serial: str = "SIM-0001"
    state: PumpState = PumpState.RUNNING
    alarms: set[Condition] = field(default_factory=set)
    elapsed: float = 0.0
    silent: bool = False

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown pump scenario {self.scenario!r}; use {', '.join(SCENARIOS)}")
        if self.scenario == "near_empty":
            self.rate, self.vtbi, self.infused = 120.0, 100.0, 90.0
        if self.scenario == "battery_drain":
            self.battery = 40.0
        self._script()

    @property
    def delivering_rate(self) -> float:
        """mL/h actually flowing now."""
        if self.state in (PumpState.RUNNING, PumpState.BOLUS):
            return self.rate
        return _KVO_RATE if self.state is PumpState.KVO else 0.0

    @property
    def remaining(self) -> float:
        return max(0.0, self.vtbi - self.infused)

    def advance(self, seconds: float) -> None:
        """Move the pump ``seconds`` forward, integrating flow between script events."""
        end = self.elapsed + seconds
        while self.elapsed < end:
            # Script events fall on whole seconds: integrate piecewise between them.
            step = min(end, float(int(self.elapsed) + 1)) - self.elapsed
            flow = self.delivering_rate * step / 3600.0
            if self.state in (PumpState.RUNNING, PumpState.BOLUS) and flow >= self.remaining:
                flow = self.remaining
            self.infused += flow
            if self.scenario == "battery_drain":
                self.battery = max(0.0, self.battery - 0.1 * step)
            self.elapsed += step
            self._script()

    def _script(self) -> None:
        t = self.elapsed % _CYCLE_S
        s = self.scenario
        if s == "occlusion":
            self._alarm(Condition.OCCLUSION, 20.0 <= t < 35.0)
        elif s == "air_in_line":
            self._alarm(Condition.AIR_IN_LINE, 30.0 <= t < 40.0)
        elif s == "silence":
            self.silent = 20.0 <= t < 40.0
        elif s == "battery_drain":
            self._set(Condition.LOW_BATTERY, self.battery < 20.0)
            if self.battery <= 0.0:
                self.state = PumpState.STOPPED
        if s == "near_empty" or self.vtbi - self.infused < 0.1 * self.vtbi:
            self._set(Condition.NEAR_EMPTY, self.remaining > 0)
        if self.state in (PumpState.RUNNING, PumpState.BOLUS) and self.remaining <= 0:
            self.state = PumpState.COMPLETE if s == "near_empty" else PumpState.KVO
            self._set(Condition.NEAR_EMPTY, False)

    def _set(self, condition: Condition, on: bool) -> None:
        (self.alarms.add if on else self.alarms.discard)(condition)

    def _alarm(self, condition: Condition, on: bool) -> None:
        """A stopping alarm: the pump halts (state alarm) while it lasts."""
        self._set(condition, on)
        if on and self.state is PumpState.RUNNING:
            self.state = PumpState.ALARM
        elif not on and self.state is PumpState.ALARM:
            self.state = PumpState.RUNNING

    def frame(self) -> PumpFrame:
        """What the pump's registers say now."""
        numerics: dict[Role, float | None] = {
            Role.RATE: self.delivering_rate,
            Role.VOLUME_INFUSED: self.infused,
            Role.VTBI: self.vtbi,
            Role.VTBI_REMAINING: self.remaining,
            Role.BATTERY: round(self.battery),
            Role.CONCENTRATION: self.concentration,
            Role.HEARTBEAT: float(int(self.elapsed) % 0x10000),
        }
        alarms = tuple(
            AlarmBit(i, c, ALARM_CONDITIONS[c]) for i, c in enumerate(sorted(self.alarms, key=str))
        )
        return PumpFrame(numerics, self.state, int(self.state), alarms, self.drug, self.serial)


@dataclass
class SimulatedPump:
    unit: int
    profile: Profile
    model: PumpSimModel
    started: float  # clock monotonic at elapsed 0

    def registers(self, elapsed: float) -> Blocks | None:
        """The pump's register blocks at ``elapsed`` seconds, or ``None`` while silent."""
        self.model.advance(max(0.0, elapsed - self.model.elapsed))
        return None if self.model.silent else encode(self.profile, self.model.frame())

    def blocks(self) -> list[ReadBlock]:
        return list(self.profile.plan())


@dataclass
class ReplayedPump:
    """A recorded pump: the polls of a Modbus capture, served in their original rhythm and
    looped (``bedside-gateway capture --modbus`` records them)."""

    unit: int
    polls: list[tuple[float, Blocks]]  # (seconds from the first poll, blocks)
    started: float

    @classmethod
    def from_capture(cls, unit: int, path: Path, started: float) -> ReplayedPump:
        """Polls of the capture's first unit (a capture of one pump, as ``capture`` writes)."""
        grouped = list(capture.polls(capture.read_modbus_capture(path)))
        if not grouped:
            raise ValueError(f"{path}: holds no Modbus polls; record some with capture --modbus")
        first_unit, t0 = grouped[0][1], grouped[0][0]
        polls: list[tuple[float, Blocks]] = [
            (t - t0, blocks) for t, u, blocks in grouped if u == first_unit
        ]
        return cls(unit, polls, started)

    def registers(self, elapsed: float) -> Blocks | None:
        period = self.polls[-1][0] + 1.0  # loop a second after the last poll
        at = elapsed % period
        offsets = [offset for offset, _ in self.polls]
        return self.polls[max(0, bisect.bisect_right(offsets, at) - 1)][1]

    def blocks(self) -> list[ReadBlock]:
        seen = {key: len(regs) for _, blocks in self.polls for key, regs in blocks.items()}
        return [ReadBlock(table, address, count) for (table, address), count in seen.items()]


def plan_blocks_of(blocks: list[ReadBlock]) -> list[ReadBlock]:
    """Blocks merged where they overlap or touch, so pymodbus gets non-overlapping data."""
    merged: list[ReadBlock] = []
    for b in sorted(blocks, key=lambda b: (b.table, b.address)):
        last = merged[-1] if merged else None
        if last is not None and last.table == b.table and b.address <= last.end:
            merged[-1] = ReadBlock(b.table, last.address, max(last.end, b.end) - last.address)
        else:
            merged.append(b)
    return merged


class PumpServer(abc.ABC):
    """pymodbus server for simulated pumps, one unit id each. Add pumps before :meth:`run`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.pumps: dict[int, SimulatedPump] = {}
        self.replays: dict[int, ReplayedPump] = {}
        #: Every request PDU received: (unit, function code, address).
        self.requests: list[tuple[int, int, int]] = []
        self.ready = asyncio.Event()

    def add_pump(
        self, unit: int, profile: Profile, scenario: str = "normal", *, serial: str = ""
    ) -> PumpSimModel:
        self._claim(unit)
        model = PumpSimModel(scenario, serial=serial or f"SIM-{unit:04d}")
        self.pumps[unit] = SimulatedPump(unit, profile, model, self._clock.monotonic())
        return model

    def add_replay(self, unit: int, path: Path) -> ReplayedPump:
        """Serve a Modbus capture as unit ``unit``; ``ValueError`` if it holds no polls."""
        self._claim(unit)
        replay = ReplayedPump.from_capture(unit, path, self._clock.monotonic())
        self.replays[unit] = replay
        return replay

    def _claim(self, unit: int) -> None:
        if unit in self.pumps or unit in self.replays:
            raise ValueError(f"unit {unit} is already simulated on this line")

    def _device(self, pump: SimulatedPump | ReplayedPump) -> SimDevice:
        tables: dict[Table, list[SimData]] = {Table.HOLDING: [], Table.INPUT: []}
        for block in plan_blocks_of(pump.blocks()):
            tables[block.table].append(
                SimData(block.address, count=block.count, values=0, datatype=DataType.REGISTERS)
            )
        for regs in tables.values():
            if not regs:  # pymodbus needs every table non-empty
                regs.append(SimData(0xFFFF, values=0, datatype=DataType.INVALID))
        bits = [SimData(0, values=False, datatype=DataType.BITS)]

        async def refresh(
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> None:
            image = pump.registers(self._clock.monotonic() - pump.started)
            if image is None:
                raise NoSuchIdException(f"unit {pump.unit} is silent")
            if fc not in (Table.HOLDING, Table.INPUT) or values:
                return None
            for (table, first), regs in image.items():
                if table == fc:
                    registers[first - start : first - start + len(regs)] = regs
            return None

        simdata = ([*bits], [*bits], tables[Table.HOLDING], tables[Table.INPUT])
        return SimDevice(pump.unit, simdata=simdata, action=refresh)

    def _devices(self) -> list[SimDevice]:
        async def nobody(*_args: object) -> None:
            raise NoSuchIdException("no such unit")

        catch_all = SimDevice(
            0,
            simdata=[SimData(0, count=0xFFFF, values=0, datatype=DataType.REGISTERS)],
            action=nobody,
        )
        served: list[SimulatedPump | ReplayedPump] = [*self.pumps.values(), *self.replays.values()]
        return [self._device(p) for p in served] + [catch_all]

    @abc.abstractmethod
    async def run(self) -> None:
        """Serve until cancelled."""

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append((pdu.dev_id, pdu.function_code, getattr(pdu, "address", -1)))
        return pdu


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the simulator binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class SimulatedTcpPumps(PumpServer):
    """Pumps behind one Modbus TCP server on ``host:port`` (port 0: pick a free one)."""

    def __init__(self, clock: Clock, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(clock)
        self.host = host
        self.tcp_port = port or free_tcp_port(host)

    @property
    def port(self) -> str:
        return f"{self.host}:{self.tcp_port}"

    async def run(self) -> None:
        server = ModbusTcpServer(
            self._devices(),
            address=(self.host, self.tcp_port),
            ignore_missing_devices=True,
            trace_pdu=self._trace,
        )
        await server.serve_forever(background=True)
        self.ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ready.clear()
            await server.shutdown()  # type: ignore[no-untyped-call]


class NullModemPty:
    """Two ptys joined back to back: what is written to one slave comes out of the other.

    ``gateway_path`` and ``device_path`` are symlinks to the two slaves. With ``baudrate``
    set, bytes are held for their transmission time (10 bits each, real time), so a
    simulated line is as slow as a real one.
    """

    def __init__(
        self, gateway_path: str, device_path: str, clock: Clock, baudrate: int | None = None
    ) -> None:
        self.gateway_path = gateway_path
        self.device_path = device_path
        self._clock = clock
        self._baudrate = baudrate
        self._fds: list[int] = []
        self._masters: tuple[int, int] | None = None

    def open(self) -> None:
        masters = []
        for path in (self.gateway_path, self.device_path):
            master, slave = os.openpty()
            self._fds += [master, slave]
            tty.setraw(master)
            tty.setraw(slave)
            os.set_blocking(master, False)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.symlink(os.ttyname(slave), path)
            masters.append(master)
        self._masters = (masters[0], masters[1])

    def close(self) -> None:
        for path in (self.gateway_path, self.device_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._masters = None

    async def run(self) -> None:
        """Carry bytes both ways until cancelled (the ptys stay open: :meth:`close`)."""
        assert self._masters is not None, "open() first"
        a, b = self._masters
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pipe(a, b))
            group.create_task(self._pipe(b, a))

    async def _pipe(self, src: int, dst: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(src, 4096)
            except BlockingIOError:
                ready = asyncio.Event()
                loop.add_reader(src, ready.set)
                try:
                    await ready.wait()
                finally:
                    loop.remove_reader(src)
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                await self._clock.sleep(0.01)  # no reader on the slave yet
                continue
            if self._baudrate:
                # The wire's own physics, in real time like the kernel's pty latency: the
                # scenario clock (maybe a test's ManualClock) does not move bytes.
                await asyncio.sleep(len(data) * 10 / self._baudrate)
            while data:
                try:
                    data = data[os.write(dst, data) :]
                except BlockingIOError:
                    await asyncio.sleep(0)


class SimulatedRtuLine(PumpServer):
    """Pumps on one simulated RS-485 line: a pymodbus RTU server on one end of a
    :class:`NullModemPty`; the gateway opens ``link_path`` (8N1, ptys carry no parity)."""

    def __init__(
        self, clock: Clock, link_path: str, *, baudrate: int = 115200, paced: bool = True
    ) -> None:
        super().__init__(clock)
        self.link_path = link_path
        self.baudrate = baudrate
        self._pty = NullModemPty(
            link_path, f"{link_path}.device", clock, baudrate if paced else None
        )

    @property
    def port(self) -> str:
        return self.link_path

    async def run(self) -> None:
        self._pty.open()
        try:
            server = ModbusSerialServer(
                self._devices(),
                port=self._pty.device_path,
                baudrate=self.baudrate,
                parity="N",
                ignore_missing_devices=True,
                trace_pdu=self._trace,
            )
            await server.serve_forever(background=True)
            self.ready.set()
            try:
                await self._pty.run()
            finally:
                self.ready.clear()
                await server.shutdown()  # type: ignore[no-untyped-call]
        finally:
            self._pty.close()
