"""Modbus pump faults under the running gateway: a pump that stops answering, one that answers
with Modbus exceptions, and half of an RS-485 line gone quiet.

The test holds the far end of the line: four simulated pumps (units 1-4) behind a real
pymodbus RTU server on a null-modem pty pair (:class:`FaultyLine`), whose answers it can
silence or turn into exception replies. The gateway is configured with the line's port as an
ordinary pump port, so everything on its side is production code: the Modbus transport and its
lock, the poller's state table, the pump model, hub, twin, alarm engine, store and page. Time
is a ManualClock stepped in increments shorter than the request timeout; after each step the
test waits (bounded, in real time) until the line has answered every request to an answering
pump. Times are clock seconds; memory is measured with tracemalloc over many cycles.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import SimDevice

from drivers.clock import ManualClock
from drivers.infusion.profile import load_profile
from drivers.modbus_device import SILENT_PROBE_S
from drivers.readings import Condition, DeviceEvent
from drivers.simulate.pump import ReplayedPump, SimulatedPump, SimulatedRtuLine
from tests.drivers.infusion.support import eventually
from tests.reliability.live import LiveWard, running

UNITS = (1, 2, 3, 4)
STALE_LIMIT = 6.0  # the pumps' configured stale_limit (no_data after this long)
TIMEOUT = 0.25  # the pumps' configured request timeout
RETRIES = 1  # the pumps' configured retries (after a timeout, for a pump that answered)
POLL = 1.0  # the pumps' configured poll_interval
STEP = 0.5  # longest clock step; steps stop at every clock deadline (see Bus.step)
TICK = 0.05  # tolerance on clock times: rounding, and the loop turns an alarm takes
RATE = "MDC_FLOW_FLUID_PUMP"

HEADER = """
[gateway]
id = "modbus-faults"
data_dir = "state"
listen = "127.0.0.1:8080"
stale_after = 5.0
"""

PUMP = """
[[beds]]
id = "bed-{unit}"

  [[beds.devices]]
  id = "pump-{unit}"
  driver = "modbus-pump-rtu"
  port = "{port}"
  baudrate = 115200
  parity = "N"
  unit = {unit}
  poll_interval = {poll}
  stale_limit = {stale}
  timeout = {timeout}
  retries = {retries}
"""


class FaultyLine(SimulatedRtuLine):
    """Four simulated pumps on one RS-485 line, each of which the test can silence
    (:meth:`silence`) or make answer every request with a Modbus exception (``refusing``).
    Every request's arrival is noted on the clock (``heard``), so poll periods are measured
    on the wire."""

    def __init__(self, clock: ManualClock, path: str) -> None:
        super().__init__(clock, path, baudrate=115200, paced=False)
        self.clock = clock
        self.refusing: dict[int, ExcCodes] = {}
        self.heard: dict[int, list[float]] = {unit: [] for unit in UNITS}
        self.last_unanswered = False
        for unit in UNITS:
            self.add_pump(unit, load_profile("generic"), "normal")

    def silence(self, *units: int, on: bool = True) -> None:
        for unit in units:
            self.pumps[unit].model.silent = on

    def _device(self, pump: SimulatedPump | ReplayedPump) -> SimDevice:
        device = super()._device(pump)
        answer = device.action
        assert answer is not None

        async def action(
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            refusal = self.refusing.get(pump.unit)
            if refusal is not None:
                return refusal
            return await answer(fc, start, address, count, registers, values)

        device.action = action
        return device

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            pump = self.pumps.get(pdu.dev_id)
            # Whether this request will go unanswered: decided now, as the pump hears it
            # (the test may make the pump answer again before the request's timeout).
            self.last_unanswered = pump is None or pump.model.silent
        if not sending and pdu.dev_id in self.heard:
            times = self.heard[pdu.dev_id]
            now = self.clock.monotonic()
            if not times or times[-1] != now:  # one poll's blocks go out at one instant
                times.append(now)
        return super()._trace(sending, pdu)


class Bus:
    """The running gateway and the line it polls, stepped together."""

    def __init__(self, ward: LiveWard, line: FaultyLine) -> None:
        self.ward, self.line, self.clock = ward, line, ward.clock
        (self.transport,) = ward.gateway.modbus.lines.values()
        # What the pollers publish, as the store records it (with each condition's detail).
        self._feed = ward.gateway.hub.subscribe(
            "fault-test", accepts=lambda r: isinstance(r, DeviceEvent)
        )
        self.events: list[DeviceEvent] = []

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def settled(self) -> bool:
        """Every request on the line reached the pumps and was answered, except perhaps the
        latest, when it went to a silent pump (only the clock ends that one)."""
        stats, heard = self.transport.stats, len(self.line.requests)
        done = stats.responses + stats.timeouts + stats.exception_replies
        if stats.requests != heard:
            return False
        return done == heard or (done == heard - 1 and self.line.last_unanswered)

    async def step(self, limit: float = STEP) -> None:
        """Advance the clock to its next deadline (a poll, a timeout, an alarm delay), at
        most ``limit`` seconds, then wait until the line has answered. Stopping at every
        deadline means a request is always answered before the clock reaches its timeout."""
        due = self.clock.next_deadline()
        await self.clock.advance(limit if due is None else min(limit, due - self.now + 1e-9))
        await eventually(self.settled, "replies to every answering pump")
        for _ in range(5):  # let the pollers hand their readings on, to twin and alarms
            await asyncio.sleep(0)
        await eventually(self.settled, "replies to every answering pump")
        while (event := self._feed.get_nowait()) is not None:
            assert isinstance(event, DeviceEvent)
            # The line itself never fails in these faults: no pump is ever disconnected.
            assert not (event.condition is Condition.DISCONNECTED and event.active), event
            self.events.append(event)

    def alarms(self) -> set[tuple[str, str]]:
        """(device, condition) of every open alarm, straight from the alarm engine."""
        return {(a.source, a.condition) for a in self.ward.gateway.alarms.open_alarms()}

    def fresh(self, unit: int) -> bool:
        beds = {bed["id"]: bed for bed in self.ward.gateway.beds()}
        vital = beds[f"bed-{unit}"]["vitals"].get(RATE)
        return bool(vital and vital["value"] is not None and not vital["stale"])

    async def until(self, predicate: Callable[[], bool], within: float, what: str) -> float:
        """Clock seconds until ``predicate()`` holds; fails after ``within``."""
        start = self.now
        while not predicate():
            assert self.now - start <= within, f"{what}: not within {within} s"
            await self.step()
        return self.now - start

    async def run_for(self, seconds: float, healthy: tuple[int, ...] = ()) -> None:
        """Step ``seconds``; every whole second, the ``healthy`` pumps must be fresh and
        free of technical alarms."""
        end = self.now + seconds
        checked = int(self.now)
        while self.now < end - 1e-9:
            await self.step(min(STEP, end - self.now))
            if int(self.now) != checked:
                checked = int(self.now)
                for unit in healthy:
                    assert self.fresh(unit), f"pump-{unit} went stale at {self.now}"
                    raised = {c for s, c in self.alarms() if s == f"pump-{unit}"}
                    assert not raised, f"pump-{unit} raised {raised} at {self.now}"

    def periods(self, unit: int, since: float) -> list[float]:
        """Seconds between the unit's successive polls (as heard on the wire) since ``since``."""
        times = [t for t in self.line.heard[unit] if t >= since]
        return [b - a for a, b in itertools.pairwise(times)]

    def assert_kept_period(self, unit: int, since: float, silent: int) -> None:
        """The unit was polled on its 1 s schedule (no poll lost), each poll delayed at most
        by the timeouts of the ``silent`` pumps ahead of it on the line (one retry each when
        one first falls silent)."""
        periods = self.periods(unit, since)
        span = self.now - since
        assert len(periods) >= span / POLL - 2, (unit, span, len(periods))
        slack = silent * (RETRIES + 1) * TIMEOUT + TICK
        assert POLL - slack <= min(periods) and max(periods) <= POLL + slack, (unit, periods)

    async def health(self) -> dict[str, dict[str, Any]]:
        """The supervisor's view of every task, through the page's API."""
        code, body = await self.ward.get_json("/api/health")
        assert code == 200
        return {t["name"]: t for t in body["tasks"]}

    async def outage(self, units: tuple[int, ...], fault: Callable[[bool], None]) -> float:
        """Apply ``fault`` to ``units`` until each raises no_data; the clock seconds it took.

        Must hold: no_data within the stale limit (the last good poll was at most one poll
        before the fault, so not much sooner either)."""
        start = self.now
        fault(True)

        def raised() -> bool:
            alarms = self.alarms()
            return all((f"pump-{u}", "no_data") in alarms for u in units)

        await self.until(raised, STALE_LIMIT + TICK, f"no_data of {units}")
        took = self.now - start
        assert took >= STALE_LIMIT - POLL - TICK, f"no_data after {took} s: too soon"
        return took

    async def recovery(self, units: tuple[int, ...], fault: Callable[[bool], None]) -> float:
        """Lift ``fault``; the clock seconds until every unit's data is fresh again and its
        no_data cleared, which must be within the silent pumps' probe period (5 s)."""
        fault(False)

        def recovered() -> bool:
            alarms = self.alarms()
            return all(self.fresh(u) and (f"pump-{u}", "no_data") not in alarms for u in units)

        took = await self.until(recovered, SILENT_PROBE_S + TICK, f"recovery of {units}")
        return took


def config(port: str) -> str:
    pumps = "".join(
        PUMP.format(
            unit=unit, port=port, poll=POLL, stale=STALE_LIMIT, timeout=TIMEOUT, retries=RETRIES
        )
        for unit in UNITS
    )
    return textwrap.dedent(HEADER) + textwrap.dedent(pumps)


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    clock = ManualClock()
    line = FaultyLine(clock, str(tmp_path / "dev" / "rs485"))
    serving = asyncio.ensure_future(line.run())
    try:
        await asyncio.wait_for(line.ready.wait(), 10)
        async with running(tmp_path, config(line.port), clock) as ward:
            bus = Bus(ward, line)
            await bus.until(lambda: all(bus.fresh(u) for u in UNITS), 5, "first data")
            # Past start-up (the line opening, first polls bunched): each pump on its schedule.
            await bus.run_for(3, healthy=UNITS)
            yield bus
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def test_pump_that_stops_answering_alarms_in_time_and_recovers_every_time(
    bus: Bus,
) -> None:
    # Fault: pump 2 stops answering for 8 s (beyond its 6 s stale limit), then answers
    # again for 6 s; 8 times.
    # Must happen each time: no_data within the stale limit; the other three pumps on the
    # line keep their 1 s poll period and fresh data and raise nothing; pump 2 fresh again
    # with no_data cleared within 5 s (its probe period) of answering; never a disconnected
    # alarm (the line itself is fine); no task restarted; and memory (tracemalloc, after
    # 2 warm-up cycles) grows by less than 256 KiB over 6 cycles.
    def fault(on: bool) -> None:
        bus.line.silence(2, on=on)

    since = bus.now
    tracemalloc.start()
    try:
        baseline = 0
        for cycle in range(8):
            took = await bus.outage((2,), fault)
            await bus.run_for(8 - took, healthy=(1, 3, 4))
            took = await bus.recovery((2,), fault)
            await bus.run_for(6 - took, healthy=(1, 2, 3, 4))
            if cycle == 1:
                gc.collect()  # count what is kept, not garbage awaiting the cycle collector
                baseline = tracemalloc.get_traced_memory()[0]
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert growth < 256 * 1024, f"memory grew {growth} bytes over 6 silent-pump cycles"
    for unit in (1, 3, 4):
        bus.assert_kept_period(unit, since, silent=1)
    assert not any(c == "disconnected" for _, c in bus.alarms())
    assert bus.transport.stats.timeouts >= 8 * 3  # pump 2's unanswered polls were sent
    health = await bus.health()
    for unit in UNITS:
        assert health[f"device:pump-{unit}"]["restarts"] == 0
    assert all(task["state"] != "failed" for task in health.values())


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (ExcCodes.ILLEGAL_ADDRESS, "illegal data address"),
        (ExcCodes.DEVICE_FAILURE, "slave device failure"),
    ],
)
async def test_pump_answering_with_modbus_exceptions_raises_no_data_naming_the_exception(
    bus: Bus, code: ExcCodes, meaning: str
) -> None:
    # Fault: pump 3 answers every read with a Modbus exception (2: illegal data address, as
    # after a firmware update moves its map; 4: slave device failure) for 15 s, twice.
    # Must happen: no_data within the stale limit, its detail naming the exception code; the
    # exception replies counted on the line; the other pumps keep their period and fresh data;
    # pump 3 fresh again within 5 s of answering normally; no task restarted.
    def fault(on: bool) -> None:
        if on:
            bus.line.refusing[3] = code
        else:
            del bus.line.refusing[3]

    since = bus.now
    refused_before = bus.transport.stats.exception_replies
    for _ in range(2):
        took = await bus.outage((3,), fault)
        raised = [
            e for e in bus.events if e.source == "pump-3" and e.condition is Condition.NO_DATA
        ]
        detail = raised[-1].detail
        assert raised[-1].active and f"Modbus exception {int(code)} ({meaning}" in detail, detail
        await bus.run_for(15 - took, healthy=(1, 2, 4))
        took = await bus.recovery((3,), fault)
        await bus.run_for(5 - took, healthy=UNITS)
    assert bus.transport.stats.exception_replies - refused_before >= 2 * 3
    for unit in (1, 2, 4):
        bus.assert_kept_period(unit, since, silent=0)  # exceptions come back at once
    health = await bus.health()
    assert all(health[f"device:pump-{u}"]["restarts"] == 0 for u in UNITS)


async def test_half_of_the_rs485_line_dead_leaves_the_other_half_on_schedule(bus: Bus) -> None:
    # Fault: units 3 and 4 (half the pumps on the line) go silent together for 60 s, as when
    # the far half of a daisy-chained RS-485 bus is cut; twice.
    # Must happen: no_data for both within the stale limit; units 1 and 2 keep their 1 s
    # period (each poll delayed at most by the silent units' timeouts) and fresh data, with
    # no alarm; both silent units probed rarely (every 5 s, not every second); both fresh
    # again within 5 s of the line being mended; no task restarted.
    def fault(on: bool) -> None:
        bus.line.silence(3, 4, on=on)

    since = bus.now
    for _ in range(2):
        quiet_from = bus.now
        took = await bus.outage((3, 4), fault)
        await bus.run_for(60 - took, healthy=(1, 2))
        for unit in (3, 4):
            probes = [t for t in bus.line.heard[unit] if t > quiet_from]
            # three attempts before it is deemed silent, then one probe each 5 s
            assert len(probes) <= 3 + 60 / SILENT_PROBE_S + 1, (unit, len(probes))
        took = await bus.recovery((3, 4), fault)
        await bus.run_for(10 - took, healthy=UNITS)
    for unit in (1, 2):
        bus.assert_kept_period(unit, since, silent=2)
    health = await bus.health()
    assert all(health[f"device:pump-{u}"]["restarts"] == 0 for u in UNITS)
    _code, beds = await bus.ward.get_json("/api/beds")
    assert all(
        bed["devices"][0]["state"] == "connected" and not bed["vitals"][RATE]["stale"]
        for bed in beds
    )
