"""CPU cost of a live simulated ward: the whole daemon, in real time, at 1 and at N beds.

Each bed has a simulated Nonin oximeter (data format 7, 75 frames/s) on its own pty, read by
the production transport and driver, through the hub into the twin and the encrypted store,
with the page serving and one SSE client attached. The simulators run in the same process,
so the figure is an upper bound on the gateway's own cost. The 1-bed run is the reference
measured in the same invocation; the marginal cost per bed is (N-bed - 1-bed) / (N - 1).

    .venv/bin/python bench/ward.py [--beds 16] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from gateway import logs
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore


def ward_config(beds: int, directory: Path) -> Path:
    lines = ['[gateway]\nid = "bench"\ndata_dir = "state"\nlisten = "127.0.0.1:8080"\n']
    for i in range(1, beds + 1):
        lines.append(
            f'[[beds]]\nid = "bed-{i}"\n[[beds.devices]]\nid = "ox-{i}"\n'
            'driver = "nonin"\nsimulate = "normal"\n'
        )
    path = directory / f"ward-{beds}.toml"
    path.write_text("\n".join(lines))
    return path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(beds: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = load(ward_config(beds, Path(tmp)))
        store = TwinStore(config.store.path, KeyRing(generate_kek()))
        gateway = Gateway(config, notify=SdNotify(), listen_port=0, store=store)
        runner = asyncio.create_task(gateway.run(handle_signals=False))
        await gateway.supervisor.ready.wait()
        url = f"http://127.0.0.1:{gateway.web.port}/api/stream"
        events = 0

        async def watch() -> None:
            nonlocal events
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                async for line in response.content:
                    if line.startswith(b"event: beds"):
                        events += 1

        client = asyncio.create_task(watch())
        await asyncio.sleep(2.0)  # let every device connect before measuring
        frames0 = sum(m.counters.frames_decoded for m in gateway.models.values())
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, wall1 = cpu_seconds(), time.perf_counter()
        frames1 = sum(m.counters.frames_decoded for m in gateway.models.values())
        dropped = sum(m.counters.bytes_dropped for m in gateway.models.values())
        stored = gateway.writer.stats.stored if gateway.writer else 0
        client.cancel()
        gateway.supervisor.stop()
        await runner
        store.close()
        wall = wall1 - wall0
        return {
            "beds": beds,
            "cpu_percent": 100 * (cpu1 - cpu0) / wall,
            "frames_per_s": (frames1 - frames0) / wall,
            "expected_frames_per_s": 75.0 * beds,
            "bytes_dropped": dropped,
            "sse_events": events,
            "stored_readings": stored,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    logs.configure("console", logging.WARNING)
    print(f"command: python {' '.join(sys.argv)}")
    reference = asyncio.run(measure(1, args.seconds))
    ward = asyncio.run(measure(args.beds, args.seconds))
    for result in (reference, ward):
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    per_bed = (ward["cpu_percent"] - reference["cpu_percent"]) / max(1, args.beds - 1)
    print(
        f"1 bed: {reference['cpu_percent']:.2f} % of one core; {args.beds} beds: "
        f"{ward['cpu_percent']:.2f} %; marginal {per_bed:.2f} % of one core per bed "
        f"(simulators included); ratio {ward['cpu_percent'] / reference['cpu_percent']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
