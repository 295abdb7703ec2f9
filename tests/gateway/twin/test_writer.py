"""StoreWriter: hub -> store with group commit, stored counts, space conditions, shutdown flush."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import Condition, DeviceEvent, Numeric, Waveform
from gateway.hub import Hub
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore
from gateway.twin.writer import SpacePolicy, StoreWriter

BEDS = {"ox-1": "bed-1", "ox-2": "bed-2"}


def spo2(device: str, value: float, t: float) -> Numeric:
    return Numeric(device, codes.SPO2, value, codes.PERCENT, t)


def pleth(device: str, seq: int, t: float) -> Waveform:
    return Waveform(device, codes.PLETH, codes.DIMENSIONLESS, 75.0, t, np.arange(25.0) + seq, seq)


class Harness:
    def __init__(self, tmp_path: Path, space: SpacePolicy) -> None:
        self.clock = ManualClock()
        self.hub = Hub()
        self.store = TwinStore(tmp_path / "twin.sqlite", KeyRing(generate_kek()))
        self.writer = StoreWriter(self.store, BEDS.get, self.clock, data_dir=tmp_path, space=space)
        self.feed = self.hub.subscribe("store", maxsize=10_000)
        self.task: asyncio.Task[None] | None = None

    async def settle(self, stored: int) -> None:
        """Wait (bounded) until the writer has acknowledged ``stored`` readings."""

        await asyncio.wait_for(
            self.writer.wait_until(lambda: self.writer.stats.stored >= stored), 10
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0))
    h.task = asyncio.create_task(h.writer.run(h.feed))
    yield h
    if not h.task.done():
        h.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await h.task
    h.store.close()


async def test_readings_are_counted_stored_only_after_commit(harness: Harness) -> None:
    t = harness.clock.wall()
    for i in range(50):
        harness.hub.publish(spo2("ox-1", 90 + i % 7, t + i))
        harness.hub.publish(spo2("ox-2", 95, t + i))
    await harness.settle(100)
    assert harness.writer.stored_by_device == {"ox-1": 50, "ox-2": 50}
    stored = list(harness.store.rows("numeric", "bed-1"))
    assert [r["value"] for r in stored] == [90 + i % 7 for i in range(50)]
    # Group commit: 100 readings arrived before the first commit finished, so few commits.
    assert harness.writer.stats.commits < 100


async def test_readings_from_unknown_devices_are_not_stored(harness: Harness) -> None:
    harness.hub.publish(spo2("stranger", 80, harness.clock.wall()))
    harness.hub.publish(spo2("ox-1", 97, harness.clock.wall()))
    await harness.settle(1)
    assert "stranger" not in harness.writer.stored_by_device


async def test_cancel_flushes_staged_waveforms_into_blocks(harness: Harness) -> None:
    t = harness.clock.wall()
    for i in range(6):  # 2 s of pleth: staged, not yet a 10 s block
        harness.hub.publish(pleth("ox-1", 25 * i, t + i / 3))
    harness.hub.publish(DeviceEvent("ox-1", Condition.SENSOR_OFF, True, t))
    await harness.settle(7)
    assert harness.store.counts()["waveform_staging"] == 6
    assert harness.task is not None
    harness.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await harness.task
    assert harness.store.counts()["waveform_staging"] == 0
    (block,) = harness.store.waveform_blocks("bed-1", "ox-1/MDC_PULS_OXIM_PLETH")
    assert np.array_equal(
        block["counts"], np.concatenate([np.arange(25) + 25 * i for i in range(6)])
    )


async def test_quota_exhaustion_raises_a_condition_evicts_waveforms_and_keeps_ingesting(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, check_interval=1e9))
    h.store.set_quota(1024 * 1024)
    h.writer._max_batch = 100  # small commits, so a refused one is small
    task = asyncio.create_task(h.writer.run(h.feed))
    t = h.clock.wall()
    rng = np.random.default_rng(1)
    alarms = []
    published = 0
    for i in range(800):  # 10 s blocks of noise (incompressible): 2 MB into a 1 MB quota
        samples = rng.integers(0, 65535, 750).astype(np.float64)
        wave = Waveform(
            "ox-1", codes.PLETH, codes.DIMENSIONLESS, 75.0, t + 10 * i, samples, 750 * i
        )
        h.hub.publish(wave)
        h.hub.publish(spo2("ox-1", 90 + i % 9, t + 10 * i))
        published += 2
        if i % 50 == 0:
            alarm = await h.writer.call(h.store.write_alarm, "bed-1", "ox-1", {"n": i}, t, t)
            alarms.append(alarm)

    await asyncio.wait_for(h.writer.wait_until(lambda: h.writer.stats.stored >= published), 60)
    assert h.writer.stats.refused_full > 0  # the quota was hit ...
    assert h.writer.stats.evicted_blocks > 0  # ... waveforms gave way ...
    assert "store_full" not in h.writer.conditions  # ... and ingest recovered
    counts = h.store.counts()
    assert counts["alarm_log"] == len(alarms)  # alarms are never evicted for space
    assert counts["numerics"] == len(list(h.store.rows("numeric", "bed-1"))) > 700
    assert 0 < counts["waveform_blocks"] < 800
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    h.store.close()


async def test_space_check_raises_and_clears_space_low(tmp_path: Path) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=10**18, check_interval=5.0))
    task = asyncio.create_task(h.writer.run(h.feed))
    h.hub.publish(spo2("ox-1", 97, h.clock.wall()))
    await h.settle(1)

    await asyncio.wait_for(
        h.writer.wait_until(lambda: "store_space_low" in h.writer.conditions), 10
    )
    assert "store_space_low" in h.writer.health()["conditions"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    h.store.close()
