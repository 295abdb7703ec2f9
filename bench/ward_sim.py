"""The simulated devices of `bench/ward.py`'s ward, in a process of their own.

The gateway's own simulators (``simulate = ...`` in config.toml) run inside the daemon;
for the ward benchmark they run here instead, so that the daemon's CPU time and memory are
the gateway's alone. The devices are the project's simulators, unchanged, speaking the real
wire bytes over the real transports:

* serial devices (Nonin DF7 oximeter, OpenBCI Cyton ECG) on ptys reached through symlinks,
  which the daemon opens as plain ``port = "..."`` serial devices;
* Modbus TCP pumps, one pymodbus server on 127.0.0.1 per pump;
* Modbus RTU pumps, several to a pymodbus RTU server behind joined ptys (one RS-485 line).

Each oximeter plays the ``normal`` scenario, except that its SpO2 steps through a cycle of
plateaus (:data:`PLATEAUS`, one every :data:`PLATEAU_S` seconds); when the first packet of
a new plateau has been written to the pty, its (bed, value, wall time) is appended to the
marks file. ``bench/ward.py`` matches these against the moments the browser paints the
values: the end-to-end latency from device byte to page.

    .venv/bin/python bench/ward_sim.py PLAN.json     # written and started by bench/ward.py

Prints ``ready`` on stdout once every link and server is up; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, TextIO

from drivers import registry
from drivers.clock import SystemClock
from drivers.infusion.pump import PumpSettings
from drivers.oximetry.nonin import NoninSettings
from drivers.simulate.device import Burst, default_seed
from drivers.simulate.nonin import NoninScenario, NoninSimulator
from drivers.simulate.pump import PumpServer, SimulatedRtuLine, SimulatedTcpPumps

#: SpO2 plateaus (%), in order. Neighbours differ by 4 % or more, so a value the simulator
#: jitters by 1 % (as the scenario does now and then) still names its plateau; all stay
#: above the adult low limit (90 %), so no alarm interferes.
PLATEAUS: Final = (91.0, 95.0, 99.0, 93.0, 97.0)
#: Seconds each plateau lasts.
PLATEAU_S: Final = 2.0


class PlateauScenario(NoninScenario):
    """The ``normal`` Nonin scenario with SpO2 stepping through :data:`PLATEAUS`.

    ``offset`` (seconds) shifts this bed's steps, so beds do not all change at once.
    """

    def __init__(self, *, seed: int, offset: float) -> None:
        super().__init__("normal", data_format=7, seed=seed)
        self.offset = offset

    def plateau_at(self, elapsed: float) -> int:
        """Index into :data:`PLATEAUS` at ``elapsed`` seconds."""
        return int((elapsed + self.offset) // PLATEAU_S) % len(PLATEAUS)

    def spo2_target_at(self, elapsed: float) -> float:
        return PLATEAUS[self.plateau_at(elapsed)]


class MarkedOximeter(NoninSimulator):
    """A Nonin DF7 simulator that logs when the first packet of each plateau is written."""

    def __init__(
        self, settings: NoninSettings, link: str, bed: str, offset: float, marks: TextIO
    ) -> None:
        super().__init__(settings, "normal", SystemClock(), link)
        self.scenario = PlateauScenario(seed=default_seed(link, None), offset=offset)
        self._bed = bed
        self._marks = marks
        self._plateau: int | None = None
        self._pending: float | None = None

    def _bursts(self) -> Iterable[Burst]:
        scenario = self.scenario
        assert isinstance(scenario, PlateauScenario)
        plateau = scenario.plateau_at(scenario.elapsed)
        if plateau != self._plateau:
            if self._plateau is not None:  # the first plateau has no moment of change
                self._pending = PLATEAUS[plateau]
            self._plateau = plateau
        return super()._bursts()

    def _heard(self, data: bytes) -> None:
        # Called right after the step's bytes went into the pty: the device byte's moment.
        if self._pending is not None:
            record = {"bed": self._bed, "value": self._pending, "t": time.time()}
            self._marks.write(json.dumps(record) + "\n")
            self._marks.flush()
            self._pending = None
        super()._heard(data)


def build(plan: dict[str, Any], marks: TextIO) -> tuple[list[Any], list[PumpServer]]:
    """Every simulator the plan names (see ``bench/ward.py``'s ``plan_ward``)."""
    clock = SystemClock()
    simulators: list[Any] = []
    for device in plan["serial"]:
        spec = registry.get(device["driver"])
        settings = spec.settings.model_validate(device["settings"])
        if device.get("mark_bed"):
            assert isinstance(settings, NoninSettings)
            simulators.append(
                MarkedOximeter(
                    settings, device["link"], device["mark_bed"], device["offset"], marks
                )
            )
        else:
            assert spec.make_simulator is not None
            simulators.append(
                spec.make_simulator(settings, device["scenario"], clock, device["link"])
            )
    servers: list[PumpServer] = []
    for line in plan["tcp"]:
        tcp = SimulatedTcpPumps(clock, port=line["port"])
        servers.append(tcp)
    for line in plan["rtu"]:
        rtu = SimulatedRtuLine(clock, line["link"], baudrate=line["baudrate"])
        servers.append(rtu)
    for server, line in zip(servers, [*plan["tcp"], *plan["rtu"]], strict=True):
        for pump in line["pumps"]:
            driver = (
                "modbus-pump-tcp" if isinstance(server, SimulatedTcpPumps) else "modbus-pump-rtu"
            )
            settings = registry.get(driver).settings.model_validate(pump["settings"])
            assert isinstance(settings, PumpSettings)
            server.add_pump(settings.unit, settings.load_profile(), pump["scenario"])
    return simulators, servers


async def serve(plan: dict[str, Any], marks: TextIO) -> None:
    """Run every simulator until SIGTERM or SIGINT; plateau marks go to ``marks``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    simulators, servers = build(plan, marks)
    tasks = [asyncio.create_task(s.run()) for s in [*simulators, *servers]]
    links = [Path(d["link"]) for d in plan["serial"]]
    links += [Path(line["link"]) for line in plan["rtu"]]
    # Ready: every server listening and every pty link present (bounded wait).
    for _ in range(1000):
        if all(s.ready.is_set() for s in servers) and all(p.exists() for p in links):
            break
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    failed = [t for t in tasks if t.done()]
    if failed:
        await failed[0]  # raises what went wrong
    print("ready", flush=True)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in [waiter, *tasks]:
        task.cancel()
    await asyncio.gather(*tasks, waiter, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: ward_sim.py PLAN.json", file=sys.stderr)
        return 2
    plan = json.loads(Path(args[0]).read_text())
    with open(plan["marks"], "a", encoding="utf-8") as marks:
        asyncio.run(serve(plan, marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
