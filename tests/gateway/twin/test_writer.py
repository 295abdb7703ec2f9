"""StoreWriter: hub -> store with group commit, stored counts, space conditions, shutdown
flush, retries on the clock, a bounded backlog and restarts of run()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import Condition, DeviceEvent, Numeric, Reading, Waveform
from gateway.hub import Hub
from gateway.twin import writer as writer_module
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import StoreError, StoreFull, TwinStore, WriteResult
from gateway.twin.writer import RETRY_SECONDS, SpacePolicy, StoreWriter

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


async def until(predicate: Callable[[], bool]) -> None:
    """Bounded wait (about 10 s at most) for something the writer does in its thread."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the writer never got there")


async def keep_time(clock: ManualClock) -> None:
    """Let clock time pass whenever the writer waits on it (its retry after a refusal)."""
    while True:
        if clock.sleepers:
            await clock.advance(RETRY_SECONDS)
        await asyncio.sleep(0.001)


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_quota_exhaustion_raises_a_condition_evicts_waveforms_and_keeps_ingesting(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, check_interval=1e9))
    h.store.set_quota(1024 * 1024)
    h.writer._max_batch = 100  # small commits, so a refused one is small
    task = asyncio.create_task(h.writer.run(h.feed))
    ticker = asyncio.create_task(keep_time(h.clock))
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
    await stop(ticker)
    await stop(task)
    h.store.close()


async def test_space_check_raises_and_clears_space_low(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_free = [0]
    monkeypatch.setattr(writer_module, "_disk_free", lambda _path: disk_free[0])
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=10**12, check_interval=5.0))
    task = asyncio.create_task(h.writer.run(h.feed))
    h.hub.publish(spo2("ox-1", 97, h.clock.wall()))
    await h.settle(1)
    assert "store_space_low" in h.writer.health()["conditions"]

    # Space is freed on the disk: the next check (one interval later) clears the condition.
    disk_free[0] = 2 * 10**12
    await h.clock.advance(4.0)
    h.hub.publish(spo2("ox-1", 96, h.clock.wall()))
    await h.settle(2)
    assert "store_space_low" in h.writer.conditions  # not checked again yet
    await h.clock.advance(1.0)
    h.hub.publish(spo2("ox-1", 95, h.clock.wall()))
    await h.settle(3)
    assert "store_space_low" not in h.writer.health()["conditions"]
    await stop(task)
    h.store.close()


def noise_wave(rng: np.random.Generator, i: int, t: float) -> Waveform:
    """1 s of incompressible 500 Hz samples: one block of about 1 KB at 1 s blocks."""
    samples = rng.integers(-32768, 32768, 500).astype(np.float64)
    return Waveform("ox-1", codes.PLETH, codes.DIMENSIONLESS, 500.0, t + i, samples, 500 * i)


async def test_free_pages_count_as_free_space_so_a_disk_shortfall_evicts_only_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting blocks does not give the disk its bytes back (the file keeps its pages), so
    a check that looked only at the disk would find it just as full and evict again and
    again until no waveform was left."""
    disk = 10**12  # the disk's free bytes, which evicting never changes
    monkeypatch.setattr(writer_module, "_disk_free", lambda _path: disk)
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, check_interval=5.0))
    h.store.block_seconds = 1.0
    rng = np.random.default_rng(4)
    t = h.clock.wall()
    for i in range(200):
        h.store.write([("bed-1", noise_wave(rng, i, t))], now=t)
    assert h.store.counts()["waveform_blocks"] == 200
    conn = h.store.db.conn
    free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    h.writer._space = SpacePolicy(
        min_free_bytes=disk + free_pages * page_size + 40_000, check_interval=5.0
    )
    task = asyncio.create_task(h.writer.run(h.feed))
    for cycle in range(6):  # six space checks, 40 KB short of the policy at the first
        h.hub.publish(spo2("ox-1", 90 + cycle, h.clock.wall()))
        await h.settle(cycle + 1)
        await h.clock.advance(5.0)
    assert h.writer.stats.evicted_blocks > 0  # the first check did make room ...
    left = h.store.counts()["waveform_blocks"]
    assert left >= 140, f"{200 - left} of 200 blocks evicted for a 40 KB shortfall"
    assert "store_space_low" not in h.writer.conditions  # ... and the next found enough
    await stop(task)
    h.store.close()


async def test_a_refused_commit_is_retried_after_one_second_of_clock_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, check_interval=1e9))
    attempts: list[float] = []
    write = h.store.write

    def full_twice(batch: list[tuple[str, Reading]], now: float) -> WriteResult:
        attempts.append(h.clock.monotonic())
        if len(attempts) <= 2:
            raise StoreFull("store is full (test): free disk space or raise the quota")
        return write(batch, now)

    monkeypatch.setattr(h.store, "write", full_twice)
    task = asyncio.create_task(h.writer.run(h.feed))
    h.hub.publish(spo2("ox-1", 97, h.clock.wall()))
    await until(lambda: h.clock.sleepers == 1)  # refused once, then waits on the clock
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(attempts) == 1 and "store_full" in h.writer.conditions
    await h.clock.advance(0.5)
    assert len(attempts) == 1
    await h.clock.advance(0.5)
    await until(lambda: len(attempts) == 2 and h.clock.sleepers == 1)
    await h.clock.advance(1.0)
    await h.settle(1)
    assert [a - attempts[0] for a in attempts] == [0.0, 1.0, 2.0]
    assert "store_full" not in h.writer.conditions
    assert h.writer.stored_by_device == {"ox-1": 1}
    await stop(task)
    h.store.close()


async def test_backlog_beyond_its_bound_drops_the_oldest_numerics_never_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, check_interval=1e9))
    h.writer._max_backlog = 6
    failing = [True]
    write = h.store.write

    def failing_disk(batch: list[tuple[str, Reading]], now: float) -> WriteResult:
        if failing[0]:
            raise StoreError("store write failed: disk I/O error (test)")
        return write(batch, now)

    monkeypatch.setattr(h.store, "write", failing_disk)
    t = h.clock.wall()
    for i in range(10):  # 10 numerics with an event after every third: 13 readings
        h.hub.publish(spo2("ox-1", 80 + i, t + i))
        if i % 3 == 2:
            h.hub.publish(DeviceEvent("ox-1", Condition.ARTIFACT, True, t + i, f"e{i}"))
    task = asyncio.create_task(h.writer.run(h.feed))
    await until(lambda: h.clock.sleepers == 1)  # the commit failed; waiting to retry
    assert "store_failing" in h.writer.conditions
    health = h.writer.health()
    assert (health["backlog"], health["dropped_numerics"], health["dropped_waveforms"]) == (6, 7, 0)

    failing[0] = False
    await h.clock.advance(1.0)
    await h.settle(6)
    assert [r["value"] for r in h.store.rows("numeric", "bed-1")] == [87, 88, 89]
    assert [r["detail"] for r in h.store.rows("event", "bed-1")] == ["e2", "e5", "e8"]
    await stop(task)
    h.store.close()


async def test_run_can_be_started_again_on_the_same_writer(harness: Harness) -> None:
    t = harness.clock.wall()
    harness.hub.publish(spo2("ox-1", 97, t))
    await harness.settle(1)
    assert harness.task is not None
    await stop(harness.task)
    # The supervisor restarts run() on the same writer.
    harness.task = asyncio.create_task(harness.writer.run(harness.feed))
    harness.hub.publish(spo2("ox-1", 96, t + 1))
    await harness.settle(2)
    assert [r["value"] for r in harness.store.rows("numeric", "bed-1")] == [97, 96]
    # And so can a store operation run outside run(), between two runs.
    await stop(harness.task)
    assert await harness.writer.call(harness.store.counts) is not None


async def test_a_batch_failing_unexpectedly_is_kept_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, check_interval=1e9))
    calls = [0]
    write = h.store.write

    def buggy_once(batch: list[tuple[str, Reading]], now: float) -> WriteResult:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug in the store (test)")
        return write(batch, now)

    monkeypatch.setattr(h.store, "write", buggy_once)
    t = h.clock.wall()
    for i in range(3):
        h.hub.publish(spo2("ox-1", 90 + i, t + i))
    task = asyncio.create_task(h.writer.run(h.feed))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(task, 10)
    # The supervisor starts run() again: the batch is stored, nothing is lost.
    task = asyncio.create_task(h.writer.run(h.feed))
    h.hub.publish(spo2("ox-1", 99, t + 3))
    await until(lambda: h.writer.stats.stored >= 4)
    assert [r["value"] for r in h.store.rows("numeric", "bed-1")] == [90, 91, 92, 99]
    await stop(task)
    h.store.close()


async def test_a_reading_without_a_usable_time_is_refused_alone(harness: Harness) -> None:
    t = harness.clock.wall()
    harness.hub.publish(spo2("ox-1", 97, t))
    harness.hub.publish(spo2("ox-1", 96, float("nan")))
    harness.hub.publish(spo2("ox-2", 95, t))
    await until(lambda: harness.writer.stats.rejected == 1)
    await harness.settle(2)
    assert harness.writer.stored_by_device == {"ox-1": 1, "ox-2": 1}
    assert harness.writer.health()["rejected"] == 1
    assert [r["value"] for r in harness.store.rows("numeric", "bed-1")] == [97]


async def test_a_wal_the_store_could_not_purge_is_a_condition_until_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, SpacePolicy(min_free_bytes=0, housekeeping_interval=60.0))
    housekeeping = h.store.housekeeping

    def kept_busy(now: float, retention: Any) -> dict[str, int]:
        done = housekeeping(now, retention)
        h.store.wal_purge_pending = True  # as when an export kept the checkpoint busy
        return done

    monkeypatch.setattr(h.store, "housekeeping", kept_busy)
    task = asyncio.create_task(h.writer.run(h.feed))
    h.hub.publish(spo2("ox-1", 97, h.clock.wall()))
    await h.settle(1)
    assert "store_wal_not_purged" in h.writer.health()["conditions"]
    monkeypatch.setattr(h.store, "housekeeping", housekeeping)  # the reader went away
    await h.clock.advance(60.0)
    h.hub.publish(spo2("ox-1", 96, h.clock.wall()))
    await h.settle(2)
    assert "store_wal_not_purged" not in h.writer.conditions
    await stop(task)
    h.store.close()
