"""The technician's dead-letter desk behind ``/api/sync/<name>/dead-letters``.

Store work runs where all store work runs while the gateway is up (the writer's thread,
through ``call``); after a decision the destination's worker re-reads its status at once,
so the ``sync_dead_letters`` alarm ends without waiting for the next batch, and a replay
starts without waiting for the next idle poll.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import structlog

from drivers.clock import Clock
from gateway.sync.worker import StoreCall, SyncWorker
from gateway.twin.store import TwinStore

log = structlog.get_logger(__name__)


class SyncDesk:
    def __init__(
        self, workers: Sequence[SyncWorker], store: TwinStore, call: StoreCall, clock: Clock
    ) -> None:
        self._workers = {w.name: w for w in workers}
        self._store = store
        self._call = call
        self._clock = clock

    def destinations(self) -> Sequence[str]:
        return list(self._workers)

    async def dead_letters(
        self, destination: str, limit: int, open_only: bool
    ) -> tuple[int, list[dict[str, Any]]]:
        store = self._store
        count: int = await self._call(store.open_dead_letters, destination)
        letters: list[dict[str, Any]] = await self._call(
            functools.partial(store.dead_letters, destination, limit, open_only=open_only)
        )
        return count, letters

    async def resolve(
        self, destination: str, ids: Sequence[int] | None, replay: bool, actor: str
    ) -> tuple[int, int]:
        """Replay or dismiss dead letters; (how many closed, how many still open)."""
        closed: int = await self._call(
            functools.partial(
                self._store.resolve_dead_letters,
                destination,
                ids,
                replay=replay,
                actor=actor,
                now=self._clock.wall(),
            )
        )
        log.info(
            "dead letters reviewed",
            destination=destination,
            action="replay" if replay else "dismiss",
            closed=closed,
            by=actor,
        )
        worker = self._workers[destination]
        await worker.refresh()
        worker.wake()
        return closed, worker.status.dead_letters_open
