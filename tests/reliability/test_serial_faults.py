"""Serial device faults under the running gateway: unplugged, silent, or talking garbage.

The test is the device: it owns the pty "cable" (:class:`PtyLink`, the driver opens its stable
path as a configured ``port``) and writes a Nonin's packets (from the simulator's scenario
model) or garbage at the device's line rate as it advances the ManualClock. Everything
else is the real gateway: serial transport, codec, supervisor, hub, twin, alarms, store,
page. Times are clock seconds; memory is measured with tracemalloc over many cycles.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.simulate.nonin import NoninScenario
from drivers.simulate.pty import PtyLink
from tests.reliability.live import LiveWard, config_text, running

SPO2 = "MDC_PULS_OXIM_SAT_O2"
DISCONNECTED = ("bed-1", "ox-1", "disconnected")
STALE = ("bed-1", "ox-1", "stale_data")
STALE_DATA_SECONDS = 10.0  # configured below
DISCONNECT_DELAY = 3.0  # the disconnected condition's alarm delay (gateway/alarms/rules.py)
LINE_RATE = 9600 // 10  # bytes/s at 9600 baud 8N1


class Device:
    """A Nonin on a pty the test plugs, unplugs, silences or fills with garbage."""

    def __init__(self, ward: LiveWard, link: PtyLink) -> None:
        self.ward, self.link = ward, link
        self.scenario = NoninScenario("normal", seed=7)
        self.mode = "packets"  # or "silent", "garbage"
        self.rng = random.Random(11)
        self.garbage_sent = 0

    async def run_for(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, sending what the device sends meanwhile."""
        period = self.scenario.period
        for _ in range(max(1, round(seconds / period))):
            if self.link.plugged:
                if self.mode == "packets":
                    self.link.write(self.scenario.step().wire)
                elif self.mode == "garbage":
                    n = round(LINE_RATE * period)
                    self.garbage_sent += self.link.write(self.rng.randbytes(n))
                self.link.read()  # what the driver sent: drained, as a device would
            await self.ward.step(period)

    async def until(self, predicate: object, within: float) -> float:
        """Clock seconds until ``predicate(beds, alarms)`` holds; fails after ``within``."""
        start = self.ward.clock.monotonic()
        while True:
            beds = await self.ward.beds()
            alarms = await self.ward.alarms()
            if predicate(beds, alarms):  # type: ignore[operator]
                return self.ward.clock.monotonic() - start
            elapsed = self.ward.clock.monotonic() - start
            assert elapsed <= within, f"not within {within} s: {beds['bed-1']}, {alarms}"
            await self.run_for(1 / 3)


def connected(beds: dict) -> bool:  # type: ignore[type-arg]
    return bool(beds["bed-1"]["devices"][0]["state"] == "connected")


def fresh(beds: dict, _: object = None) -> bool:  # type: ignore[type-arg]
    vital = beds["bed-1"]["vitals"].get(SPO2)
    return bool(vital and vital["value"] is not None and not vital["stale"])


@pytest.fixture
async def device(tmp_path: Path) -> AsyncIterator[Device]:
    port = tmp_path / "dev" / "serial" / "by-id" / "usb-Nonin-if00"
    link = PtyLink(str(port))
    link.plug()
    extra = f"\n[alarms]\nstale_data_seconds = {STALE_DATA_SECONDS}\n"
    try:
        async with running(tmp_path, config_text(device=f'port = "{port}"', extra=extra)) as ward:
            dev = Device(ward, link)
            await dev.until(fresh, 20)
            yield dev
    finally:
        link.close()


async def test_unplug_replug_cycles_alarm_reconnect_and_memory_stays_flat(device: Device) -> None:
    # Fault: the cable is pulled for 20 s and plugged back, 30 times.
    # Must happen each time: the disconnected alarm within its 3 s delay (+ one poll);
    # the link connected again within 5 s of the replug (the supervisor's backoff is capped
    # at 5 s), fresh SpO2 one packet later; no task crashed; and memory
    # (tracemalloc, after 5 warm-up cycles) grows by less than 256 KiB over 25 cycles.
    tracemalloc.start()
    try:
        baseline = 0
        for cycle in range(30):
            device.link.unplug()
            took = await device.until(lambda b, a: DISCONNECTED in a, DISCONNECT_DELAY + 1)
            assert took <= DISCONNECT_DELAY + 1
            await device.run_for(20)
            device.link.plug()
            took = await device.until(lambda b, a: connected(b), 5.0)
            assert took <= 5.0, f"cycle {cycle}: reconnected only after {took} s"
            # Then the first whole packet (1/3 s) and the alarm's clearing.
            await device.until(lambda b, a: fresh(b) and DISCONNECTED not in a, 1.0)
            await device.run_for(5)
            if cycle == 4:
                baseline = tracemalloc.get_traced_memory()[0]
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert growth < 256 * 1024, f"memory grew {growth} bytes over 25 unplug cycles"
    _code, health = await device.ward.get_json("/api/health")
    device_task = next(t for t in health["tasks"] if t["name"] == "device:ox-1")
    assert device_task["restarts"] >= 30
    assert all(t["state"] != "failed" for t in health["tasks"])


async def test_silent_device_goes_stale_and_raises_stale_data_in_the_configured_time(
    device: Device,
) -> None:
    # Fault: the device stays plugged but stops sending.
    # Must happen: SpO2 shown stale after stale_after (5 s), the stale_data alarm after the
    # configured 10 s (not before), and fresh data with the alarm cleared when it talks again.
    device.mode = "silent"
    took = await device.until(lambda b, a: not fresh(b), 5 + 1)
    assert took <= 6
    took = await device.until(lambda b, a: STALE in a, STALE_DATA_SECONDS + 1)
    assert 4 <= took <= STALE_DATA_SECONDS + 1  # about 10 s after the last packet
    device.mode = "packets"
    await device.until(lambda b, a: fresh(b) and STALE not in a, 5)


async def test_garbage_at_line_rate_for_ten_minutes_is_counted_never_a_crash(
    device: Device,
) -> None:
    # Fault: the device sends random bytes at 9600 baud for ten simulated minutes.
    # Must happen: SpO2 goes stale and stale_data is raised (no valid frame, so no data);
    # nearly every garbage byte is counted as dropped; the device task never crashes;
    # memory is flat; and real packets afterwards are decoded again.
    counters = device.ward.gateway.models["ox-1"].counters
    dropped_before = counters.bytes_dropped
    device.mode = "garbage"
    await device.until(lambda b, a: STALE in a, STALE_DATA_SECONDS + 6)
    tracemalloc.start()
    try:
        await device.run_for(60)
        baseline = tracemalloc.get_traced_memory()[0]
        await device.run_for(540)
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert growth < 256 * 1024, f"memory grew {growth} bytes in nine minutes of garbage"
    assert device.garbage_sent >= 0.9 * LINE_RATE * 600
    # Random bytes can pass a checksum by chance: a few frames may decode, the rest drop.
    assert counters.bytes_dropped - dropped_before >= 0.95 * device.garbage_sent
    _code, health = await device.ward.get_json("/api/health")
    assert next(t for t in health["tasks"] if t["name"] == "device:ox-1")["restarts"] == 0
    device.mode = "packets"
    await device.until(lambda b, a: fresh(b) and STALE not in a, 10)
