"""Injected time.

Everything that waits, times out or stamps a reading takes a :class:`Clock`, so tests can
run on :class:`ManualClock` and never sleep for time to pass. ``monotonic`` is for
intervals (timeouts, backoff, alarm delays); ``wall`` is UTC seconds since the epoch for
records.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall(self) -> float:
        """UTC seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clocks of the machine."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers wake in deadline order as time passes them. ``wall`` starts at a fixed
    UTC instant so recorded times are reproducible.
    """

    def __init__(self, start_monotonic: float = 1000.0, start_wall: float = 1_767_225_600.0):
        self._mono = start_monotonic
        self._wall_offset = start_wall - start_monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._order), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many coroutines are waiting on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest pending sleeper, if any."""
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and letting it run."""
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._mono = max(self._mono, deadline)
            fut.set_result(None)
            await _let_run()
        self._mono = target
        await _let_run()


async def _let_run() -> None:
    # A handful of loop turns lets woken coroutines run until their next await.
    for _ in range(5):
        await asyncio.sleep(0)


async def within(clock: Clock, seconds: float, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` for at most ``seconds`` of ``clock``'s time.

    Like :func:`asyncio.wait_for`, but on the injected clock, so a test decides when a
    peer's silence has lasted long enough. Raises :class:`TimeoutError` after cancelling
    the awaited work.
    """
    work = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller was cancelled: take the work down with it
        timer.cancel()
        work.cancel()
        raise
    timer.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    raise TimeoutError(f"no answer within {seconds:g} s")
