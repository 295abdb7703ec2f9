"""Feeds the store from the hub: one writer thread, group commit, space and retention.

Readings are taken off the hub subscription and committed by one worker thread (SQLite
wants one writer). While a commit runs, new readings queue; the next commit takes all of
them. So a quiet ward commits each reading within milliseconds, a busy one commits larger
batches, and the wait before a reading is stored is bounded by one commit's duration
(``synchronous=NORMAL`` in WAL mode does not fsync per commit). A reading counts as stored
(``stored`` per device) only after its commit returned.

Running short of space is a technical condition (``store_space_low``: free disk below
``min_free_bytes`` or data above 90 % of the quota; ``store_full``: a commit was refused):
the oldest waveform blocks are evicted first, synced ones before unsynced ones; alarms,
events and numerics are never evicted for space. Failing commits raise ``store_failing``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from drivers.clock import Clock
from drivers.readings import Reading, Waveform
from gateway.hub import Subscription
from gateway.twin.store import Retention, StoreError, StoreFull, TwinStore, WriteResult

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SpacePolicy:
    """Bytes: ``quota`` caps the store's data (None: only the disk limits it)."""

    quota: int | None = None
    min_free_bytes: int = 200 * 1024 * 1024
    check_interval: float = 30.0  # seconds
    housekeeping_interval: float = 3600.0  # seconds


@dataclass(slots=True)
class WriterStats:
    commits: int = 0
    stored: int = 0
    failed_commits: int = 0
    refused_full: int = 0
    dropped_waveforms: int = 0
    evicted_blocks: int = 0
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


class StoreWriter:
    def __init__(
        self,
        store: TwinStore,
        bed_of: Callable[[str], str | None],
        clock: Clock,
        *,
        data_dir: Path,
        retention: Retention | None = None,
        space: SpacePolicy | None = None,
        max_batch: int = 20_000,
        max_backlog: int = 200_000,
    ) -> None:
        self.store = store
        self._bed_of = bed_of
        self._clock = clock
        self._data_dir = data_dir
        self._retention = retention or Retention()
        self._space = space or SpacePolicy()
        self._max_batch = max_batch
        self._max_backlog = max_backlog
        self._backlog: deque[tuple[str, Reading]] = deque()
        self.stored_by_device: dict[str, int] = {}
        self.conditions: dict[str, str] = {}
        self.stats = WriterStats()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store")
        self._next_space_check = 0.0
        self._next_housekeeping = 0.0
        self._progress = asyncio.Event()

    # -- running ---------------------------------------------------------------------------
    async def run(self, subscription: Subscription) -> None:
        """Store every reading the hub offers until cancelled; flush staged waveforms then."""
        try:
            while True:
                if not self._backlog:
                    self._take(await subscription.get())
                while len(self._backlog) < self._max_batch:
                    reading = subscription.get_nowait()
                    if reading is None:
                        break
                    self._take(reading)
                await self._commit()
                await self._maintain()
                self._progress.set()
        finally:
            await self._shutdown()

    def _take(self, reading: Reading) -> None:
        bed = self._bed_of(reading.source)
        if bed is not None:
            self._backlog.append((bed, reading))

    async def _commit(self) -> None:
        batch = [self._backlog.popleft() for _ in range(min(len(self._backlog), self._max_batch))]
        if not batch:
            return
        started = time.perf_counter()
        try:
            result = await self._in_thread(self.store.write, batch, self._clock.wall())
        except StoreFull as exc:
            self.stats.refused_full += 1
            self._raise("store_full", str(exc))
            await self._make_room()
            self._retry_later(batch)
            return
        except StoreError as exc:
            self.stats.failed_commits += 1
            self._raise("store_failing", str(exc))
            self._retry_later(batch)
            await self._clock.sleep(1.0)  # a failing disk is not helped by a busy loop
            return
        self.stats.commit_seconds.append(time.perf_counter() - started)
        self._stored(batch, result)
        self._clear("store_full")
        self._clear("store_failing")

    def _stored(self, batch: list[tuple[str, Reading]], result: WriteResult) -> None:
        self.stats.commits += 1
        self.stats.stored += result.stored
        for _, reading in batch:
            self.stored_by_device[reading.source] = self.stored_by_device.get(reading.source, 0) + 1

    def _retry_later(self, batch: list[tuple[str, Reading]]) -> None:
        # Keep what failed at the front; when the backlog is too long, waveforms give way.
        self._backlog.extendleft(reversed(batch))
        while len(self._backlog) > self._max_backlog:
            for i, (_, reading) in enumerate(self._backlog):
                if isinstance(reading, Waveform):
                    del self._backlog[i]
                    self.stats.dropped_waveforms += 1
                    break
            else:
                break

    async def _maintain(self) -> None:
        now = self._clock.monotonic()
        if now >= self._next_space_check:
            self._next_space_check = now + self._space.check_interval
            await self._check_space()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self._space.housekeeping_interval
            try:
                done = await self._in_thread(
                    self.store.housekeeping, self._clock.wall(), self._retention
                )
            except StoreError as exc:
                self._raise("store_failing", str(exc))
            else:
                if any(done.values()):
                    log.info("retention applied", **done)

    async def _check_space(self) -> None:
        short = self._shortfall(await self._in_thread(self.store.used_bytes))
        if short > 0:
            self._raise("store_space_low", f"{short} bytes short of the space policy")
            await self._make_room(short)
        else:
            self._clear("store_space_low")

    def _shortfall(self, used: int) -> int:
        short = 0
        if self._space.quota is not None:
            short = max(short, used - int(self._space.quota * 0.9))
        free = shutil.disk_usage(self._data_dir).free
        return max(short, self._space.min_free_bytes - free)

    async def _make_room(self, nbytes: int | None = None) -> None:
        if nbytes is None:
            nbytes = max(1, (self._space.quota or 64 * 1024 * 1024) // 10)
        evicted = await self._in_thread(self.store.evict_waveforms, nbytes)
        self.stats.evicted_blocks += evicted
        if evicted:
            log.warning("waveform blocks evicted for space", blocks=evicted)

    async def _shutdown(self) -> None:
        try:
            if self._backlog:
                await self._commit()
            await self._in_thread(self.store.flush_waveforms, self._clock.wall())
        except StoreError as exc:
            log.error("store flush at shutdown failed", error=str(exc))
        finally:
            self._executor.shutdown(wait=True)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked after every commit (tests, tools)."""
        while not predicate():
            self._progress.clear()
            await self._progress.wait()

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run another store operation (an alarm, an audit entry) in the writer thread, in
        turn with the commits: the store's connection is never used by two threads at once.

        When the store is full, waveforms are evicted and the operation tried once more, so
        an alarm is never refused for lack of space while waveforms could give way.
        """
        try:
            return await self._in_thread(fn, *args)
        except StoreFull as exc:
            self._raise("store_full", str(exc))
            await self._make_room()
            return await self._in_thread(fn, *args)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        # shield: a cancelled caller must not abandon a commit halfway; the thread finishes it.
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    # -- conditions ------------------------------------------------------------------------
    def _raise(self, name: str, detail: str) -> None:
        if name not in self.conditions:
            log.error("store condition raised", condition=name, detail=detail)
        self.conditions[name] = detail

    def _clear(self, name: str) -> None:
        if self.conditions.pop(name, None) is not None:
            log.info("store condition cleared", condition=name)

    def health(self) -> dict[str, Any]:
        latencies = sorted(self.stats.commit_seconds)

        def pct(q: float) -> float | None:
            return None if not latencies else round(latencies[int(q * (len(latencies) - 1))], 6)

        return {
            "conditions": dict(self.conditions),
            "commits": self.stats.commits,
            "stored": self.stats.stored,
            "backlog": len(self._backlog),
            "failed_commits": self.stats.failed_commits,
            "refused_full": self.stats.refused_full,
            "evicted_blocks": self.stats.evicted_blocks,
            "dropped_waveforms": self.stats.dropped_waveforms,
            "damaged_rows": list(self.store.problems[:20]),
            "commit_seconds_p50": pct(0.5),
            "commit_seconds_p99": pct(0.99),
        }
