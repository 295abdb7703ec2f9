"""Alarm engine cost: what checking limits adds to every numeric, and what a tick costs.

16 beds, each an oximeter (SpO2, pulse) and an ECG heart rate, all below their low limit
half the time so conditions start, hold, raise and clear. Measured in one invocation:

* ``AlarmEngine.observe`` per numeric, as a ratio to ``Twin.apply`` of the same numeric
  (the reference: the twin handles every reading anyway);
* ``AlarmEngine.tick`` (staleness, delays, escalation, pauses, self-check) with every bed
  polled, per call, and as a share of one core at the fastest tick rate (every 0.5 s plus
  deadlines; a tick per second of clock time is typical).

    .venv/bin/python bench/alarm_engine.py [--beds 16] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import structlog

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import CodecCounters, Numeric
from gateway.alarms.engine import MAX_TICK, AlarmEngine
from gateway.alarms.limits import profile
from gateway.alarms.model import AlarmSettings
from gateway.alarms.selfcheck import SelfCheck
from gateway.twin.state import BedSpec, Link, Twin


def readings(beds: int, rounds: int, clock: ManualClock) -> list[list[Numeric]]:
    out = []
    for r in range(rounds):
        low = (r // 50) % 2 == 0  # 50 rounds below the limits, 50 above
        batch = []
        for b in range(beds):
            t = clock.wall() + r
            batch.append(Numeric(f"ox-{b}", codes.SPO2, 85.0 if low else 97.0, codes.PERCENT, t))
            batch.append(
                Numeric(
                    f"ox-{b}", codes.PULSE_RATE, 45.0 if low else 72.0, codes.BEATS_PER_MINUTE, t
                )
            )
            batch.append(
                Numeric(
                    f"ecg-{b}",
                    codes.ECG_HEART_RATE,
                    45.0 if low else 72.0,
                    codes.BEATS_PER_MINUTE,
                    t,
                )
            )
        out.append(batch)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beds", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    clock = ManualClock()
    ids = [f"bed-{b}" for b in range(args.beds)]
    bed_of = {f"ox-{b}": ids[b] for b in range(args.beds)} | {
        f"ecg-{b}": ids[b] for b in range(args.beds)
    }
    twin = Twin([BedSpec(i, i) for i in ids], clock)
    for b in range(args.beds):
        for dev in (f"ox-{b}", f"ecg-{b}"):
            twin.register_device(ids[b], dev, "bench", CodecCounters())
            twin.beds[ids[b]].devices[dev].link = Link.CONNECTED
    engine = AlarmEngine(
        {i: ("adult", profile("adult")) for i in ids},
        clock,
        bed_of=bed_of.get,
        twin=twin,
        settings=AlarmSettings(escalate_after=60.0),
        self_check=SelfCheck(clock, clients=lambda: 1),
    )
    batches = readings(args.beds, args.rounds, clock)
    n = sum(len(b) for b in batches)

    twin_s = engine_s = tick_s = 0.0
    ticks = []
    for batch in batches:
        start = time.perf_counter()
        for reading in batch:
            twin.apply(reading)
        twin_s += time.perf_counter() - start
        start = time.perf_counter()
        for reading in batch:
            engine.observe(reading)
        engine_s += time.perf_counter() - start
        await clock.advance(1.0)
        start = time.perf_counter()
        engine.tick()
        took = time.perf_counter() - start
        tick_s += took
        ticks.append(took)

    raised = len(engine.all_alarms())
    print(f"beds={args.beds} numerics={n} rounds={args.rounds} alarms_in_history={raised}")
    print(f"twin.apply      {twin_s / n * 1e6:8.2f} us/numeric (reference)")
    print(f"engine.observe  {engine_s / n * 1e6:8.2f} us/numeric  ratio {engine_s / twin_s:.2f}x")
    p50 = statistics.median(ticks) * 1e6
    p99 = sorted(ticks)[int(0.99 * (len(ticks) - 1))] * 1e6
    print(f"engine.tick     p50 {p50:8.1f} us  p99 {p99:8.1f} us")
    share = statistics.mean(ticks) / MAX_TICK * 100
    print(f"tick every {MAX_TICK} s: {share:.3f} % of one core")


if __name__ == "__main__":
    asyncio.run(main())
