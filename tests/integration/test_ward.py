"""End to end: simulator on a pty -> Nonin driver -> hub -> twin -> GET /api/beds.

Everything is real (pty pairs, the production transport, codec, supervisor, aiohttp page)
except time, which is a ManualClock the test advances in device-sized steps.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.clock import ManualClock
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore

CONFIG = """
[gateway]
id = "ward-test"
data_dir = "state"
listen = "127.0.0.1:8080"
stale_after = 5.0

[[beds]]
id = "bed-1"

  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  simulate = "normal"

[[beds]]
id = "bed-2"

  [[beds.devices]]
  id = "ox-2"
  driver = "nonin"
  data_format = 2
  simulate = "unplug"
"""

SPO2 = "MDC_PULS_OXIM_SAT_O2"
PR = "MDC_PULS_OXIM_PULS_RATE"


class Ward:
    def __init__(self, gateway: Gateway, clock: ManualClock, session: aiohttp.ClientSession):
        self.gateway, self.clock, self.session = gateway, clock, session

    async def beds(self) -> dict[str, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.gateway.web.port}/api/beds"
        async with self.session.get(url) as response:
            assert response.status == 200
            return {bed["id"]: bed for bed in await response.json()}

    async def step(self, seconds: float = 1 / 3) -> None:
        """Advance device time and give the loop real turns to move bytes through the ptys."""
        await self.clock.advance(seconds)
        for _ in range(3):
            await asyncio.sleep(0)

    async def until(
        self, predicate: Callable[[dict[str, dict[str, Any]]], bool], within: float
    ) -> dict[str, dict[str, Any]]:
        """Step the clock until ``predicate(beds)`` holds; fail after ``within`` device seconds."""
        start = self.clock.monotonic()
        while self.clock.monotonic() - start <= within:
            beds = await self.beds()
            if predicate(beds):
                return beds
            await self.step()
        raise AssertionError(f"not reached within {within} s of device time: {beds}")


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[Ward]:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(CONFIG))
    clock = ManualClock()
    config = load(path)
    store = TwinStore(config.store.path, KeyRing(generate_kek()))
    gateway = Gateway(config, clock=clock, notify=SdNotify(), listen_port=0, store=store)
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
    async with aiohttp.ClientSession() as session:
        yield Ward(gateway, clock, session)
    gateway.supervisor.stop()
    await asyncio.wait_for(runner, 5)
    store.close()


def fresh(bed: dict[str, Any], code: str) -> bool:
    vital = bed["vitals"].get(code)
    return vital is not None and vital["value"] is not None and not vital["stale"]


async def test_simulated_spo2_reaches_the_api(ward: Ward) -> None:
    beds = await ward.until(lambda b: fresh(b["bed-1"], SPO2) and fresh(b["bed-1"], PR), 10)
    spo2, pr = beds["bed-1"]["vitals"][SPO2], beds["bed-1"]["vitals"][PR]
    assert 90 <= spo2["value"] <= 100 and spo2["unit"] == "%"
    assert 40 <= pr["value"] <= 140 and pr["unit"] == "/min"
    device = beds["bed-1"]["devices"][0]
    assert device["state"] == "connected"
    assert device["frames_decoded"] >= 25
    assert device["bytes_dropped"] == 0


async def test_unplugged_device_goes_stale_and_recovers(ward: Ward) -> None:
    await ward.until(lambda b: fresh(b["bed-2"], SPO2), 10)
    beds = await ward.until(lambda b: b["bed-2"]["devices"][0]["state"] == "disconnected", 90)
    assert beds["bed-2"]["vitals"][SPO2]["stale"] is True
    assert beds["bed-1"]["devices"][0]["state"] == "connected"  # the other bed is untouched
    beds = await ward.until(lambda b: fresh(b["bed-2"], SPO2), 60)
    assert beds["bed-2"]["devices"][0]["state"] == "connected"
    assert beds["bed-2"]["devices"][0]["restarts"] >= 1


async def test_health_lists_every_task(ward: Ward) -> None:
    url = f"http://127.0.0.1:{ward.gateway.web.port}/api/health"
    async with ward.session.get(url) as response:
        health = await response.json()
    names = {t["name"] for t in health["tasks"]}
    assert {"device:ox-1", "device:ox-2", "simulator:ox-1", "twin", "web"} <= names
    assert health["gateway"] == "ward-test"


async def test_what_the_page_shows_is_stored(ward: Ward) -> None:
    beds = await ward.until(lambda b: b["bed-1"]["devices"][0].get("stored", 0) >= 20, 20)
    writer = ward.gateway.writer
    assert writer is not None
    store = writer.store
    # Read through the writer's thread: the store is never used by two threads at once.
    rows = await writer.call(lambda: list(store.rows("numeric", "bed-1")))
    counts = await writer.call(store.counts)
    spo2 = [r["value"] for r in rows if r["stream"] == "ox-1/MDC_PULS_OXIM_SAT_O2"]
    pulse = [r["value"] for r in rows if r["stream"] == "ox-1/MDC_PULS_OXIM_PULS_RATE"]
    assert spo2 and all(90 <= v <= 100 for v in spo2)
    assert pulse and all(40 <= v <= 140 for v in pulse)
    assert counts["waveform_staging"] + counts["waveform_blocks"] > 0
    assert beds["bed-1"]["devices"][0]["stored"] >= 20
