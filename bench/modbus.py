"""Modbus pump polling: achieved poll period and gateway CPU per pump.

Two runs in one invocation, each with ``--pumps`` simulated pumps (generic profile, one
61-register read per poll) polled every second by the production runner
(``drivers.modbus_device.run_modbus_device``) through the production transport:

* **RTU**: every pump on one simulated RS-485 line at 115200 baud: a pymodbus RTU server
  behind two ptys joined back to back that hold each byte for its 10 bit times, so the line
  is as slow as a real one and the pumps queue for it;
* **TCP**: every pump behind its own Modbus TCP server on 127.0.0.1, one connection each.

The simulators run in a child process, so the CPU figure is the gateway's alone (process
CPU time of this process over the measured window, divided by pumps and seconds). Period
is the time between the starts of consecutive answered polls of one pump; p50 and p99 are
over every pump's periods, with the worst pump's p99 beside them. The line's theoretical
occupancy (request + reply bytes x 10 bits / baud) is printed for the RTU run.

    .venv/bin/python bench/modbus.py [--pumps 16] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drivers.clock import SystemClock
from drivers.infusion.profile import load_profile
from drivers.infusion.pump import InfusionPump
from drivers.modbus_device import PollStats, PumpLink, run_modbus_device
from drivers.transport.modbus import LineAddress, ModbusTransport, RtuLine, TcpLine

BAUD = 115200
WARMUP_S = 3.0


def _serve(kind: str, pumps: int, path: str, queue: Any) -> None:
    from drivers.simulate.pump import PumpServer, SimulatedRtuLine, SimulatedTcpPumps

    async def main() -> None:
        clock = SystemClock()
        profile = load_profile("generic")
        servers: list[PumpServer] = []
        if kind == "rtu":
            line = SimulatedRtuLine(clock, path, baudrate=BAUD, paced=True)
            for unit in range(1, pumps + 1):
                line.add_pump(unit, profile)
            servers.append(line)
            addresses: list[Any] = [path]
        else:
            tcp = [SimulatedTcpPumps(clock) for _ in range(pumps)]
            for server in tcp:
                server.add_pump(1, profile)
            servers.extend(tcp)
            addresses = [s.tcp_port for s in tcp]
        tasks = [asyncio.ensure_future(s.run()) for s in servers]
        for s in servers:
            await s.ready.wait()
        queue.put(addresses)
        await asyncio.gather(*tasks)

    asyncio.run(main())


async def _poll_all(lines: list[tuple[LineAddress, int]], seconds: float) -> dict[str, Any]:
    clock = SystemClock()
    profile = load_profile("generic")
    transports: dict[LineAddress, ModbusTransport] = {}
    stats: list[PollStats] = []
    tasks = []
    for n, (address, unit) in enumerate(lines):
        transport = transports.setdefault(address, ModbusTransport(address, clock))
        link = PumpLink(transport, unit, poll_interval=1.0, timeout=0.5, retries=1)
        s = PollStats(started=[])
        stats.append(s)
        model = InfusionPump(f"pump-{n}", profile)
        tasks.append(
            asyncio.ensure_future(
                run_modbus_device(f"pump-{n}", model, link, lambda _r: None, clock, stats=s)
            )
        )
    await asyncio.sleep(WARMUP_S)
    cpu0, wall0 = time.process_time(), time.monotonic()
    for s in stats:
        s.started = []
        s.polls = s.answered = s.failed = 0
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for transport in transports.values():
        await transport.close()
    periods: list[float] = []
    worst = 0.0
    for s in stats:
        assert s.started is not None
        own = [b - a for a, b in zip(s.started, s.started[1:], strict=False)]
        periods += own
        if len(own) >= 2:
            worst = max(worst, statistics.quantiles(own, n=100)[98])
    q = statistics.quantiles(periods, n=100)
    return {
        "p50": statistics.median(periods),
        "p99": q[98],
        "worst_p99": worst,
        "answered": sum(s.answered for s in stats),
        "failed": sum(s.failed for s in stats),
        "cpu_per_pump": cpu / wall / len(lines),
        "wall": wall,
    }


def _run(kind: str, pumps: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "rs485")
        child = ctx.Process(target=_serve, args=(kind, pumps, path, queue), daemon=True)
        child.start()
        try:
            addresses = queue.get(timeout=30)
            if kind == "rtu":
                lines: list[tuple[LineAddress, int]] = [
                    (RtuLine(addresses[0], BAUD, 8, "N", 1), unit) for unit in range(1, pumps + 1)
                ]
            else:
                lines = [(TcpLine("127.0.0.1", port), 1) for port in addresses]
            return asyncio.run(_poll_all(lines, seconds))
        finally:
            child.terminate()
            child.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pumps", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.pumps} pumps, "
        f"1 s polling, {args.seconds:g} s measured after {WARMUP_S:g} s warm-up"
    )
    request, reply = 8, 5 + 2 * 61
    busy = args.pumps * (request + reply) * 10 / BAUD
    print(
        f"RTU line: {request}+{reply} bytes per poll -> {busy * 1000:.0f} ms of line time "
        f"per second for {args.pumps} pumps ({busy:.0%} occupancy)"
    )
    print(
        f"{'link':5} {'p50 s':>7} {'p99 s':>7} {'worst p99':>9} {'polls':>6} {'failed':>6} "
        f"{'CPU/pump':>9}"
    )
    for kind in ("rtu", "tcp"):
        r = _run(kind, args.pumps, args.seconds)
        print(
            f"{kind:5} {r['p50']:7.3f} {r['p99']:7.3f} {r['worst_p99']:9.3f} "
            f"{r['answered']:6d} {r['failed']:6d} {r['cpu_per_pump']:9.2%}"
        )
    print(
        f"command: .venv/bin/python bench/modbus.py --pumps {args.pumps} --seconds {args.seconds:g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
