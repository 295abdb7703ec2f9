"""Feeds the store from the hub: one writer thread, group commit, space and retention.

Readings are taken off the hub subscription and committed by one worker thread (SQLite
wants one writer). While a commit runs, new readings queue; the next commit takes all of
them. So a quiet ward commits each reading within milliseconds, a busy one commits larger
batches, and the wait before a reading is stored is bounded by one commit's duration
(``synchronous=NORMAL`` in WAL mode does not fsync per commit). A reading counts as stored
(``stored`` per device) only after its commit returned.

Running short of space is a technical condition (``store_space_low``: free disk below
``min_free_bytes`` or data above 90 % of the quota; ``store_full``: a commit was refused;
``store_file_lost``: the database file was deleted or replaced under the open connection):
the oldest waveform blocks are evicted first, synced ones before unsynced ones; alarms,
events and numerics are never evicted for space. Deleting rows does not shrink the file (its
pages go to SQLite's free list and are reused), so free pages of the file count as free
space: otherwise every check would find the disk just as full and evict again until no
waveform was left. A refused commit is retried after one second of clock time (after making
room), a failing one (``store_failing``) likewise.

The readings waiting for a commit (the backlog) are bounded by ``max_backlog``: beyond it the
oldest waveforms are dropped, then the oldest numerics (``dropped_waveforms``,
``dropped_numerics``); device events are never dropped. A reading with a time that is not a
finite number is refused by the store on its own (``rejected``) and the rest of its batch
stored.

:meth:`StoreWriter.run` may be started again after it ended (the supervisor restarts it): each
run has its own worker thread, and a batch whose commit failed unexpectedly is put back in
the backlog before the error propagates, so the next run stores it.
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
from drivers.readings import Numeric, Reading, Waveform
from gateway.hub import Subscription
from gateway.twin.clock_steps import ClockStep, ClockStepDetector
from gateway.twin.store import Retention, StoreError, StoreFull, TwinStore, WriteResult

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
#: Clock seconds between two attempts at a commit that was refused or failed.
RETRY_SECONDS = 1.0


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


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
    dropped_numerics: int = 0
    rejected: int = 0
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
        # One worker thread at a time, made by run() (and by call() outside a run): a thread
        # pool cannot take work once shut down, and run() shuts its own down when it ends.
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._rejected_sources: set[str] = set()
        self._next_space_check = 0.0
        self._next_housekeeping = 0.0
        self._progress = asyncio.Event()
        self._clock_steps = ClockStepDetector()

    # -- running ---------------------------------------------------------------------------
    async def run(self, subscription: Subscription) -> None:
        """Store every reading the hub offers until cancelled; flush staged waveforms then.

        May be called again after it ended (cancelled, or failed and restarted by the
        supervisor): what was left in the backlog is committed first.
        """
        self._worker()
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

    async def _commit(self, *, wait: bool = True) -> None:
        """Commit the oldest batch of the backlog; on failure put it back, raise the
        condition and (unless ``wait`` is false: shutting down) wait before the next try."""
        batch = [self._backlog.popleft() for _ in range(min(len(self._backlog), self._max_batch))]
        if not batch:
            return
        started = time.perf_counter()
        now = self._clock.wall()
        step = self._clock_steps.observe(now, self._clock.monotonic())
        if step is not None:
            await self._note_clock_step(step)
        try:
            result = await self._in_thread(self.store.write, batch, now)
        except StoreFull as exc:
            self.stats.refused_full += 1
            self._raise("store_full", str(exc))
            self._retry_later(batch)
            await self._make_room()
            if wait:  # eviction may have found nothing to give way: never a hot loop
                await self._clock.sleep(RETRY_SECONDS)
            return
        except StoreError as exc:
            self.stats.failed_commits += 1
            self._raise("store_failing", str(exc))
            self._retry_later(batch)
            if wait:  # a failing disk is not helped by a busy loop
                await self._clock.sleep(RETRY_SECONDS)
            return
        except Exception:
            # Not a store condition (a bug, a key problem): the transaction was rolled back,
            # so the batch goes back to the backlog for the next run() to store. (A cancelled
            # commit is not put back: the worker thread finishes it.)
            self._backlog.extendleft(reversed(batch))
            raise
        self.stats.commit_seconds.append(time.perf_counter() - started)
        self._stored(batch, result)
        self._clear("store_full")
        self._clear("store_failing")

    def _stored(self, batch: list[tuple[str, Reading]], result: WriteResult) -> None:
        self.stats.commits += 1
        self.stats.stored += result.stored
        # Readings the store refused on their own (no usable time) are not stored.
        refused = dict(result.rejected_by_source)
        for _, reading in batch:
            source = reading.source
            if refused.get(source, 0) > 0:
                refused[source] -= 1
                continue
            self.stored_by_device[source] = self.stored_by_device.get(source, 0) + 1
        if result.rejected:
            self.stats.rejected += result.rejected
            for source in result.rejected_by_source:
                if source not in self._rejected_sources:
                    self._rejected_sources.add(source)
                    log.warning("readings without a usable time refused", device=source)

    def _retry_later(self, batch: list[tuple[str, Reading]]) -> None:
        # Keep what failed at the front; when the backlog is too long, the oldest waveforms
        # give way, then the oldest numerics; device events are never dropped.
        self._backlog.extendleft(reversed(batch))
        excess = len(self._backlog) - self._max_backlog
        if excess <= 0:
            return
        waves = sum(1 for _, r in self._backlog if isinstance(r, Waveform))
        drop_waves = min(excess, waves)
        drop_numerics = excess - drop_waves
        kept: deque[tuple[str, Reading]] = deque()
        for item in self._backlog:  # one pass: the backlog may be long
            reading = item[1]
            if drop_waves and isinstance(reading, Waveform):
                drop_waves -= 1
                self.stats.dropped_waveforms += 1
            elif drop_numerics and isinstance(reading, Numeric):
                drop_numerics -= 1
                self.stats.dropped_numerics += 1
            else:
                kept.append(item)
        self._backlog = kept

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
            if self.store.wal_purge_pending:
                self._raise(
                    "store_wal_not_purged",
                    "another connection kept the write-ahead log from being emptied after "
                    "shredding or re-wrapping keys; retried at the next housekeeping",
                )
            else:
                self._clear("store_wal_not_purged")

    async def _check_space(self) -> None:
        # Checked with the space: a deleted database file still takes commits (to an inode
        # nobody can reach), so only this check can tell that they will be lost.
        lost = self.store.file_problem()
        if lost is not None:
            self._raise("store_file_lost", lost)
        else:
            self._clear("store_file_lost")
        used, reusable = await self._in_thread(self._space_figures)
        short = self._shortfall(used, reusable)
        if short > 0:
            self._raise("store_space_low", f"{short} bytes short of the space policy")
            await self._make_room(short)
        else:
            self._clear("store_space_low")

    def _space_figures(self) -> tuple[int, int]:
        return self.store.used_bytes(), self.store.free_page_bytes()

    def _shortfall(self, used: int, reusable: int = 0) -> int:
        """Bytes missing to satisfy the space policy. ``used`` is the store's data (free
        pages excluded); ``reusable`` is the file's free pages, which new data fills before
        the file grows: on the disk, they are as good as free."""
        short = 0
        if self._space.quota is not None:
            short = max(short, used - int(self._space.quota * 0.9))
        free = _disk_free(self._data_dir) + reusable
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
                await self._commit(wait=False)
            await self._in_thread(self.store.flush_waveforms, self._clock.wall())
        except Exception as exc:  # reported here; the error that ended run() propagates
            log.error("store flush at shutdown failed", error=str(exc))
        finally:
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True)

    async def _note_clock_step(self, step: ClockStep) -> None:
        """Keep, durably, where the wall clock jumped: the rows that follow carry the
        stepped UTC as the system gives it. Losing the note must not stop storing."""
        log.warning(
            "system clock stepped; records after this carry the new UTC",
            step_s=round(step.step, 3),
            wall_before=round(step.wall_before, 3),
            wall_after=round(step.wall_after, 3),
        )
        try:
            await self._in_thread(self.store.record_clock_step, step.wall_before, step.wall_after)
        except StoreError as exc:
            log.error("clock step not recorded", error=str(exc))

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

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store")
        return self._executor

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        # shield: a cancelled caller must not abandon a commit halfway; the thread finishes it.
        return await asyncio.shield(loop.run_in_executor(self._worker(), fn, *args))

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
            "dropped_numerics": self.stats.dropped_numerics,
            "rejected": self.stats.rejected,
            "damaged_rows": list(self.store.problems[:20]),
            "commit_seconds_p50": pct(0.5),
            "commit_seconds_p99": pct(0.99),
        }
