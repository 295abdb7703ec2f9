"""The runner every Modbus pump shares: polls a pump model through a (shared) line.

:func:`run_modbus_device` runs one pump until its line is lost: every ``poll_interval``
seconds (on a fixed schedule, so the period does not drift with the line's latency) it
reads the model's planned blocks through the line, hands them to the model and publishes
its readings. It never reconnects by itself: a lost or unopenable line ends it with a
:class:`~drivers.device.DeviceError` (after publishing DISCONNECTED), and the supervisor
restarts it with backoff, as for serial devices.

A pump that stops answering does not end the run: the line is fine and other pumps use it.
A poll counts as answered when the model decoded it *and* it was fresh (its heartbeat
moved; a pump adapter that keeps answering with frozen registers is as good as silent).
The poller's state, and what moves it, in one place::

    WAITING  --answer-->  ANSWERING  --SILENT_AFTER failed polls-->  SILENT
    SILENT   --answer-->  ANSWERING

``DISCONNECTED`` clears (the pump is reached) on the first answer. Only a pump that answered
its last poll is retried after a timeout; while SILENT it is asked once per
``SILENT_PROBE_S`` seconds, so a dead pump costs its line one timeout per probe instead of
``timeout * (retries + 1)`` every second, and pumps sharing the line keep their period.
Independently, ``NO_DATA`` is raised once no poll has succeeded for ``stale_limit``
seconds, and cleared by the next good one. Pump alarms already raised stay raised while
the pump is silent: an occlusion nobody can see end is not over.

:class:`ModbusFleet` gives pumps their lines: pumps configured on the same RS-485 port (or
the same TCP host and port) share one :class:`~drivers.transport.modbus.ModbusTransport`,
whose lock serialises their requests; simulated pumps get simulators (simulated RTU pumps
share simulated lines, one unit id each).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from drivers.clock import Clock
from drivers.device import DeviceError, DeviceUnavailable
from drivers.infusion.profile import ReadBlock, Table
from drivers.infusion.pump import PumpSettings, RtuPumpSettings, TcpPumpSettings
from drivers.readings import CodecCounters, Condition, DeviceEvent, Reading
from drivers.transport.modbus import (
    ExceptionReply,
    LineAddress,
    ModbusTransport,
    NoResponse,
    ReadTable,
    RtuLine,
    TcpLine,
)

if TYPE_CHECKING:
    from drivers.simulate.pump import PumpServer

__all__ = ["ModbusFleet", "PollState", "PumpLink", "PumpModel", "run_modbus_device"]

#: Consecutive failed polls after which a pump is treated as silent.
SILENT_AFTER: Final = 3
#: Seconds between probes of a silent pump.
SILENT_PROBE_S: Final = 5.0
#: What a pump means by a Modbus exception code, for the no_data detail a technician reads:
#: 1-3 mean the request does not fit the pump (the profile), 4 and 6 are the pump's own.
_EXCEPTION_MEANINGS: Final = {
    1: "illegal function: is the profile right for this pump?",
    2: "illegal data address: is the profile right for this pump?",
    3: "illegal data value: is the profile right for this pump?",
    4: "slave device failure: the pump reports an internal fault",
    6: "slave device busy",
}


class PumpModel(Protocol):
    """The sans-I/O half of a Modbus driver (``drivers.infusion.pump.InfusionPump``)."""

    counters: CodecCounters
    #: Read requests one poll consists of.
    plan: tuple[ReadBlock, ...]
    #: Live view for the twin (state name, drug); empty when unknown.
    program: dict[str, Any]
    #: False when the last decoded poll carried no live data (a frozen heartbeat).
    fresh: bool

    def on_connect(self, now: float) -> Sequence[Reading]: ...

    def on_poll(
        self, blocks: Mapping[tuple[Table, int], Sequence[int]], now: float
    ) -> Sequence[Reading]: ...

    def on_disconnect(self, now: float) -> Sequence[Reading]: ...


class PollState(enum.Enum):
    WAITING = "waiting"
    ANSWERING = "answering"
    SILENT = "silent"


#: (state, poll answered?, failed polls in a row reached SILENT_AFTER?) -> next state.
POLL_TRANSITIONS: Final[Mapping[tuple[PollState, bool, bool], PollState]] = {
    (PollState.WAITING, True, False): PollState.ANSWERING,
    (PollState.WAITING, True, True): PollState.ANSWERING,
    (PollState.WAITING, False, False): PollState.WAITING,
    (PollState.WAITING, False, True): PollState.SILENT,
    (PollState.ANSWERING, True, False): PollState.ANSWERING,
    (PollState.ANSWERING, True, True): PollState.ANSWERING,
    (PollState.ANSWERING, False, False): PollState.ANSWERING,
    (PollState.ANSWERING, False, True): PollState.SILENT,
    (PollState.SILENT, True, False): PollState.ANSWERING,
    (PollState.SILENT, True, True): PollState.ANSWERING,
    (PollState.SILENT, False, False): PollState.SILENT,
    (PollState.SILENT, False, True): PollState.SILENT,
}

#: A capture record: (unit, function code, address, registers) of one read.
CaptureSink = Callable[[float, int, int, int, Sequence[int]], None]


@dataclass(frozen=True, slots=True)
class PumpLink:
    """How to reach one pump: its line, unit id and polling settings (seconds)."""

    transport: ModbusTransport
    unit: int
    poll_interval: float = 1.0
    stale_limit: float = 10.0
    timeout: float = 0.5
    retries: int = 1


@dataclass(slots=True)
class PollStats:
    """What one pump's poller did, for health views and the benchmark."""

    polls: int = 0
    answered: int = 0
    failed: int = 0
    state: PollState = PollState.WAITING
    #: Monotonic start times of the recent answered polls (the benchmark reads the period).
    started: list[float] | None = None


async def run_modbus_device(
    device_id: str,
    model: PumpModel,
    link: PumpLink,
    publish: Callable[[Reading], None],
    clock: Clock,
    *,
    capture: CaptureSink | None = None,
    stats: PollStats | None = None,
) -> None:
    """Poll ``model``'s pump over ``link`` until the line fails (then raise) or cancelled."""
    stats = stats if stats is not None else PollStats()
    transport = link.transport
    try:
        await transport.open()
    except DeviceUnavailable as err:
        publish(_event(device_id, Condition.DISCONNECTED, clock, True, str(err)))
        raise
    transport.hold()
    try:
        for reading in model.on_connect(clock.wall()):
            publish(reading)
        state = PollState.WAITING
        failures = 0
        last_good = clock.monotonic()
        no_data = False
        reason = "no answer"
        next_poll = clock.monotonic()
        while True:
            begun = clock.monotonic()
            # Retry only a pump that answered its last poll (a lost frame); one that did
            # not gets one attempt, so it costs the line one timeout, not several.
            retries = link.retries if state is PollState.ANSWERING and not failures else 0
            problem = await _poll(model, link, publish, clock, capture, retries)
            answered = problem is None
            reason = problem or reason
            stats.polls += 1
            if answered:
                stats.answered += 1
                if stats.started is not None:
                    stats.started.append(begun)
                if state is PollState.WAITING:
                    publish(_event(device_id, Condition.DISCONNECTED, clock, False))
                failures = 0
                last_good = clock.monotonic()
                if no_data:
                    no_data = False
                    publish(_event(device_id, Condition.NO_DATA, clock, False))
            else:
                stats.failed += 1
                failures += 1
            state = POLL_TRANSITIONS[(state, answered, failures >= SILENT_AFTER)]
            stats.state = state
            interval = link.poll_interval
            if state is PollState.SILENT:
                interval = max(interval, SILENT_PROBE_S)
            next_poll = max(next_poll + interval, clock.monotonic())
            stale_at = last_good + link.stale_limit
            due = clock.monotonic() >= stale_at
            if not no_data and not answered and not due and stale_at < next_poll:
                # A silent pump is probed only every few seconds: raise no_data when the
                # stale limit passes, not at the next probe (up to SILENT_PROBE_S late).
                await clock.sleep(stale_at - clock.monotonic())
                due = True
            if not no_data and due:
                no_data = True
                detail = f"unit {link.unit}: {reason} for {link.stale_limit:g} s"
                publish(_event(device_id, Condition.NO_DATA, clock, True, detail))
            await clock.sleep(next_poll - clock.monotonic())
    except DeviceError as err:
        for reading in model.on_disconnect(clock.wall()):
            publish(reading)
        publish(_event(device_id, Condition.DISCONNECTED, clock, True, str(err)))
        raise
    except asyncio.CancelledError:
        raise
    except Exception as err:
        try:
            for reading in model.on_disconnect(clock.wall()):
                publish(reading)
        finally:
            detail = f"driver error: {type(err).__name__}; restarting"
            publish(_event(device_id, Condition.DISCONNECTED, clock, True, detail))
        raise
    finally:
        transport.release()  # the last pump on a line closes it


async def _poll(
    model: PumpModel,
    link: PumpLink,
    publish: Callable[[Reading], None],
    clock: Clock,
    capture: CaptureSink | None,
    retries: int,
) -> str | None:
    """One poll: every planned block, then the model. ``None`` if the model got live data
    from it, else what went wrong (for the no_data condition's detail)."""
    try:
        registers = await link.transport.read_blocks(
            link.unit,
            [(ReadTable(b.table), b.address, b.count) for b in model.plan],
            answer_within=link.timeout,
            retries=retries,
        )
    except NoResponse:
        return "no answer"
    except ExceptionReply as exc:
        meaning = _EXCEPTION_MEANINGS.get(exc.code, "see the pump's manual")
        return f"Modbus exception {exc.code} ({meaning})"
    blocks: dict[tuple[Table, int], Sequence[int]] = {}
    for block, regs in zip(model.plan, registers, strict=True):
        if capture is not None:
            capture(clock.wall(), link.unit, int(block.table), block.address, regs)
        blocks[(block.table, block.address)] = regs
    before = model.counters.frames_decoded
    for reading in model.on_poll(blocks, clock.wall()):
        publish(reading)
    if model.counters.frames_decoded == before:
        return "registers not in the profile's map (wrong profile, or garbled)"
    return None if model.fresh else "registers frozen (heartbeat not moving)"


def _event(
    device_id: str, condition: Condition, clock: Clock, active: bool, detail: str = ""
) -> DeviceEvent:
    return DeviceEvent(device_id, condition, active, clock.wall(), detail)


# -- lines and simulators -------------------------------------------------------------------


class LineConflict(ValueError):
    """Two pumps on one port with different line settings, or one unit id twice."""


def line_address(settings: PumpSettings) -> LineAddress:
    """The line a configured (not simulated) pump is on. ``DeviceUnavailable`` if none."""
    if isinstance(settings, TcpPumpSettings):
        if not settings.host:
            raise DeviceUnavailable("no host configured: set 'host' for this pump, or simulate it")
        return TcpLine(settings.host, settings.port)
    assert isinstance(settings, RtuPumpSettings)
    if not settings.port:
        raise DeviceUnavailable("no serial port configured: set 'port', or simulate the pump")
    return RtuLine(
        settings.port, settings.baudrate, settings.bytesize, settings.parity, settings.stopbits
    )


class ModbusFleet:
    """Every Modbus line of a gateway, and the simulators behind simulated pumps.

    :meth:`link` returns the pump's :class:`PumpLink`; new simulators to run are left in
    :attr:`new_simulators` for the owner to start (each has ``run()``).
    """

    def __init__(self, clock: Clock, sim_dir: Path, *, paced: bool = True) -> None:
        self._clock = clock
        self._sim_dir = sim_dir
        self._paced = paced
        self.lines: dict[LineAddress, ModbusTransport] = {}
        self._units: dict[LineAddress, set[int]] = {}
        self._rtu_by_port: dict[str, RtuLine] = {}
        self._sim_rtu: list[tuple[PumpServer, RtuLine]] = []
        self.new_simulators: list[tuple[str, PumpServer]] = []
        #: Every simulator made, by the line it serves.
        self.simulated: dict[LineAddress, PumpServer] = {}

    def link(
        self,
        device_id: str,
        settings: PumpSettings,
        simulate: str | None,
        replay: Path | None = None,
    ) -> PumpLink:
        """The pump's link: its configured line, or a simulator playing ``simulate`` (a
        scenario) or ``replay`` (a Modbus capture). Raises :class:`LineConflict` or
        ``DeviceUnavailable`` (nothing to reach, or a capture without polls)."""
        if simulate is None and replay is None:
            address = line_address(settings)
        else:
            address = self._simulate(device_id, settings, simulate, replay)
        if isinstance(address, RtuLine):
            known = self._rtu_by_port.setdefault(address.port, address)
            if known != address:
                raise LineConflict(
                    f"{device_id}: port {address.port} is already used at {known}; pumps "
                    "sharing a line need the same baudrate, bytesize, parity and stopbits"
                )
        units = self._units.setdefault(address, set())
        if settings.unit in units:
            raise LineConflict(f"{device_id}: unit {settings.unit} is used twice on {address}")
        units.add(settings.unit)
        transport = self.lines.get(address)
        if transport is None:
            transport = self.lines[address] = ModbusTransport(address, self._clock)
        return PumpLink(
            transport,
            settings.unit,
            settings.poll_interval,
            settings.stale_limit,
            settings.timeout,
            settings.retries,
        )

    def runner(
        self,
        device_id: str,
        model: PumpModel,
        settings: PumpSettings,
        *,
        simulate: str | None,
        replay: Path | None,
        publish: Callable[[Reading], None],
    ) -> Callable[[], Awaitable[None]]:
        """The task body of one pump. A pump that cannot be placed (no host or port, a unit
        id used twice on a line, line settings that disagree, an unusable capture) gets a body that
        reports why as DISCONNECTED and fails, so the supervisor shows it and the other
        devices run on."""
        try:
            link = self.link(device_id, settings, simulate, replay)
        except (LineConflict, DeviceUnavailable) as exc:
            problem = f"{exc}; fix this pump's settings in config.toml"

            async def refuse() -> None:
                publish(_event(device_id, Condition.DISCONNECTED, self._clock, True, problem))
                raise DeviceUnavailable(problem, retry_after=60.0)

            return refuse

        async def run() -> None:
            await run_modbus_device(device_id, model, link, publish, self._clock)

        return run

    def _simulate(
        self, device_id: str, settings: PumpSettings, scenario: str | None, replay: Path | None
    ) -> LineAddress:
        from drivers.simulate.pump import SimulatedRtuLine, SimulatedTcpPumps

        profile = settings.load_profile()

        def play(server: PumpServer) -> None:
            if replay is None:
                server.add_pump(settings.unit, profile, scenario or "normal")
                return
            try:
                server.add_replay(settings.unit, replay)
            except (OSError, ValueError) as exc:
                raise DeviceUnavailable(f"cannot replay {replay}: {exc}") from None

        if isinstance(settings, TcpPumpSettings):
            tcp = SimulatedTcpPumps(self._clock)
            play(tcp)
            self.new_simulators.append((f"simulator:{device_id}", tcp))
            address = TcpLine(tcp.host, tcp.tcp_port)
            self.simulated[address] = tcp
            return address
        assert isinstance(settings, RtuPumpSettings)
        for server, line in self._sim_rtu:
            taken = settings.unit in server.pumps or settings.unit in server.replays
            if not taken and line.baudrate == settings.baudrate:
                play(server)
                return line
        path = str(self._sim_dir / f"rtu-{len(self._sim_rtu) + 1}")
        rtu = SimulatedRtuLine(self._clock, path, baudrate=settings.baudrate, paced=self._paced)
        play(rtu)
        line = RtuLine(path, settings.baudrate, 8, "N", 1)  # ptys carry no parity
        self._sim_rtu.append((rtu, line))
        self.simulated[line] = rtu
        self.new_simulators.append((f"simulator:modbus-line-{len(self._sim_rtu)}", rtu))
        return line

    def take_simulators(self) -> list[tuple[str, PumpServer]]:
        """Simulators created since the last call, to be started by the owner."""
        made, self.new_simulators = self.new_simulators, []
        return made
