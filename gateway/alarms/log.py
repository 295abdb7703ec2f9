"""The durable alarm log: every alarm state change committed in order, nothing dropped.

Records are committed one by one, in the order the engine made them, through
:meth:`StoreWriter.call` (the store's one writer thread) into ``TwinStore.write_alarm``
(``synchronous=FULL``: a committed record survives a power cut). Each record has a future
that resolves ``True`` once committed, so a user action can be reported done only after its
record is on disk (:meth:`AlarmLog.committed`).

A commit that fails (disk full beyond what evicting waveforms frees, disk failing, key
problem) is retried every :data:`RETRY_SECONDS` of clock time, the failed record first, so
the order and every record are kept; meanwhile ``on_trouble`` is told (the engine raises the
technical alarm ``alarm_log_failing``). Without a store (a gateway run without one) nothing
is recorded and every future resolves ``False`` at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.clock import Clock
from gateway.twin.writer import StoreWriter

log = structlog.get_logger(__name__)

#: Clock seconds between two attempts at a record whose commit failed.
RETRY_SECONDS = 1.0


@dataclass(slots=True)
class _Record:
    bed: str
    source: str
    payload: dict[str, Any]
    t: float
    done: asyncio.Future[bool]


class AlarmLog:
    def __init__(
        self,
        writer: StoreWriter | None,
        clock: Clock,
        on_trouble: Callable[[str | None], None] = lambda _: None,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._on_trouble = on_trouble
        self._queue: deque[_Record] = deque()
        self._ready = asyncio.Event()
        self.committed_count = 0
        self.failed_attempts = 0
        self.trouble: str | None = None
        #: Called after each committed record: the daemon wakes the sync workers, so a new
        #: alarm goes out at once instead of after a bandwidth pause.
        self.on_committed: Callable[[], None] = lambda: None

    @property
    def backlog(self) -> int:
        """Records made but not yet committed."""
        return len(self._queue)

    def record(
        self, bed: str, source: str, payload: Mapping[str, Any], t: float
    ) -> asyncio.Future[bool]:
        """Queue one state change (``t``: UTC seconds); the future says when it is committed."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._writer is None:
            done.set_result(False)
            return done
        self._queue.append(_Record(bed, source, dict(payload), t, done))
        self._ready.set()
        return done

    async def committed(self, done: asyncio.Future[bool], *, within: float) -> bool:
        """Wait up to ``within`` clock seconds for ``done``; ``False`` if not committed yet
        (the record stays queued and is committed when the store recovers)."""
        if done.done():
            return done.result()
        timer = asyncio.ensure_future(self._clock.sleep(within))
        waiters: set[asyncio.Future[Any]] = {timer, done}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return done.result() if done.done() else False

    async def run(self) -> None:
        """Commit queued records in order until cancelled."""
        writer = self._writer
        if writer is None:
            await asyncio.Event().wait()
            return
        try:
            await self._commit_forever(writer)
        except asyncio.CancelledError:
            await self._last_try(writer)
            raise

    async def _commit_forever(self, writer: StoreWriter) -> None:
        store = writer.store
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            head = self._queue[0]
            try:
                now = self._clock.wall()
                await writer.call(
                    store.write_alarm, head.bed, head.source, head.payload, head.t, now
                )
            except Exception as exc:  # any failure: keep the record, say so, retry
                self.failed_attempts += 1
                self.report(f"{type(exc).__name__}: {exc}")
                await self._clock.sleep(RETRY_SECONDS)
                continue
            self._queue.popleft()
            self.committed_count += 1
            if not head.done.done():
                head.done.set_result(True)
            self.report(None)
            self.on_committed()

    async def _last_try(self, writer: StoreWriter) -> None:
        """Stopping: one attempt at each record still queued, so a clean shutdown loses
        none; what still fails is counted in the log (the records cannot outlive us)."""
        lost = 0
        while self._queue:
            head = self._queue.popleft()
            try:
                await writer.call(
                    writer.store.write_alarm,
                    head.bed,
                    head.source,
                    head.payload,
                    head.t,
                    self._clock.wall(),
                )
            except BaseException:
                lost += 1
                continue
            self.committed_count += 1
            if not head.done.done():
                head.done.set_result(True)
        if lost:
            log.error("alarm records not committed at shutdown", records=lost)

    def report(self, detail: str | None) -> None:
        """Say the store cannot take alarm or audit records (``detail``), or can again."""
        if detail == self.trouble:
            return
        if detail is not None and self.trouble is None:
            log.error("alarm log cannot commit", error=detail, backlog=len(self._queue))
        elif detail is None:
            log.info("alarm log committing again")
        self.trouble = detail
        self._on_trouble(detail)
