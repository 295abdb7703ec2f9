"""In-process publish/subscribe of readings.

Drivers publish without ever waiting: :meth:`Hub.publish` is synchronous and O(subscribers).
Each subscriber has a bounded queue. When a subscriber falls behind and its queue is full,
the hub sheds by class: first waveform chunks, then the oldest numerics; device events and
identities are never shed (they are rare, and losing a "sensor off" or "disconnected" would
hide a technical alarm), so a queue may exceed its bound by events alone. Every shed
reading is counted per subscriber and class.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from drivers.readings import Numeric, Reading, Waveform

#: Reading classes in shedding order: index 0 is shed first.
SHED_ORDER: tuple[type, ...] = (Waveform, Numeric)


@dataclass(slots=True)
class SubscriberStats:
    delivered: int = 0
    shed_waveforms: int = 0
    shed_numerics: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "shed_waveforms": self.shed_waveforms,
            "shed_numerics": self.shed_numerics,
        }


@dataclass(eq=False)
class Subscription:
    """One consumer's view of the hub. Iterate it, or call :meth:`get`."""

    name: str
    maxsize: int
    accepts: Callable[[Reading], bool]
    stats: SubscriberStats = field(default_factory=SubscriberStats)
    _queue: deque[Reading] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False

    def _offer(self, reading: Reading) -> None:
        if len(self._queue) >= self.maxsize and not self._make_room(reading):
            return
        self._queue.append(reading)
        self._ready.set()

    def _make_room(self, incoming: Reading) -> bool:
        """Shed one queued reading to admit ``incoming``; False if ``incoming`` is shed."""
        if isinstance(incoming, Waveform):
            self.stats.shed_waveforms += 1
            return False
        for victim_class in SHED_ORDER:
            for i, queued in enumerate(self._queue):
                if isinstance(queued, victim_class):
                    del self._queue[i]
                    self._count_shed(queued)
                    return True
            if isinstance(incoming, victim_class):
                # Nothing sheddable ranks below it: drop the newcomer of its own class.
                self._count_shed(incoming)
                return False
        # Only events and identities are queued and the newcomer is one: keep it anyway.
        return True

    def _count_shed(self, reading: Reading) -> None:
        if isinstance(reading, Waveform):
            self.stats.shed_waveforms += 1
        else:
            self.stats.shed_numerics += 1

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> Reading:
        """Wait for the next reading."""
        while not self._queue:
            if self._closed:
                raise EOFError(self.name)
            self._ready.clear()
            await self._ready.wait()
        self.stats.delivered += 1
        return self._queue.popleft()

    def get_nowait(self) -> Reading | None:
        if not self._queue:
            return None
        self.stats.delivered += 1
        return self._queue.popleft()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Reading]:
        while True:
            try:
                yield await self.get()
            except EOFError:
                return


def _accept_all(_: Reading) -> bool:
    return True


class Hub:
    """Fan-out of readings from drivers to consumers (twin, store, analysis, sync)."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self.published = 0

    def subscribe(
        self,
        name: str,
        *,
        maxsize: int = 1024,
        accepts: Callable[[Reading], bool] = _accept_all,
    ) -> Subscription:
        """Register a consumer; ``accepts`` filters what it is offered."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        sub = Subscription(name=name, maxsize=maxsize, accepts=accepts)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
        sub.close()

    def publish(self, reading: Reading) -> None:
        """Offer ``reading`` to every subscriber; never blocks, never raises for a consumer."""
        self.published += 1
        for sub in self._subscriptions:
            if sub.accepts(reading):
                sub._offer(reading)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            sub.name: {**sub.stats.as_dict(), "queued": len(sub)} for sub in self._subscriptions
        }
