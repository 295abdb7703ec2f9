"""One worker per destination: drains that destination's outbox, in order, at least once.

The outbox is the cursor: an entry is pending until its destination confirms it, so a
worker that restarts (or a gateway that was killed) resumes exactly where it stopped, and
an entry may be sent twice but is never skipped. Receivers de-duplicate by the
deterministic ids the encoders derive from the store's row ids.

Order: the store hands out entries by priority (alarms, audit, device events, numerics,
waveforms) and then in commit order, so every bed's stream stays in order and a backlog of
numerics never delays a new alarm by more than one batch. The bandwidth cap spaces batches
out; a new alarm (:meth:`SyncWorker.wake`) cuts the pause short.

Failure handling: an unreachable destination backs off exponentially with jitter (the
supervisor's :class:`~gateway.supervisor.Backoff`, with a longer cap); past
``unreachable_after`` seconds of failure the worker reports the ``sync_unreachable``
condition. Items the receiver refuses for good go to the dead-letter table and raise
``sync_dead_letters`` until a technician replays or dismisses them
(``POST /api/sync/<name>/dead-letters``). A backlog whose oldest entry waits longer than
``lag_after`` seconds raises ``sync_lagging``: the destination is reachable but not keeping
up (a bandwidth cap too low, a slow receiver), which ``sync_unreachable`` would not say.
Both go to the alarm engine through ``on_conditions`` each time the status is refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import structlog

from drivers.clock import Clock, within
from gateway.supervisor import Backoff
from gateway.sync.delivery import Batch, Delivery, Destination, DestinationUnavailable
from gateway.twin.crypto import DecryptionFailed
from gateway.twin.errors import StoreError
from gateway.twin.store import OutboxItem, TwinStore
from gateway.twin.vocabulary import Patient

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
#: Runs a store operation on the store's own thread (``StoreWriter.call``).
StoreCall = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """How a worker paces itself. Seconds unless stated."""

    #: Outbox entries per send.
    batch: int = 200
    #: How often an empty outbox is looked at again (a new alarm wakes the worker sooner).
    idle_poll: float = 1.0
    #: Cap on bytes per second sent to this destination; ``None``: no cap.
    bandwidth: float | None = None
    #: Failing for longer than this raises the ``sync_unreachable`` condition.
    unreachable_after: float = 60.0
    #: Entries older than this (per kind) are dropped as expired instead of sent: data no
    #: destination needs any more (e.g. waveforms hours old). Kinds not named never expire.
    expiry: Mapping[str, float] = field(default_factory=dict)
    #: While sending, the backlog counts for status are re-read at most this often: the
    #: count visits every pending entry, so doing it after every batch of a deep backlog
    #: would make draining quadratic. An idle worker re-reads it on every poll.
    status_every: float = 5.0
    #: The oldest unsent entry older than this raises ``sync_lagging``; ``None``: never.
    lag_after: float | None = 900.0
    backoff: Backoff = field(
        default_factory=lambda: Backoff(initial=1.0, factor=2.0, cap=60.0, jitter=0.5)
    )


@dataclass(slots=True)
class SyncStatus:
    """What the worker knows, for ``/api/sync``, ``status`` and the alarm engine."""

    name: str
    protocol: str
    target: str
    state: str = "starting"  # starting, idle, sending, throttled (bandwidth cap), backing_off
    delivered: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0  # since this worker started
    dead_letters_open: int = 0  # in the store, not yet replayed or dismissed
    expired: int = 0
    last_success: float | None = None  # UTC seconds
    last_error: str = ""
    failing_since: float | None = None  # monotonic seconds
    failures_in_a_row: int = 0
    next_attempt_in: float | None = None
    backlog: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def as_dict(self, now_wall: float) -> dict[str, Any]:
        oldest = min((b["oldest"] for b in self.backlog.values()), default=None)
        return {
            "name": self.name,
            "protocol": self.protocol,
            "target": self.target,
            "state": self.state,
            "delivered": dict(self.delivered),
            "dead_letters": self.dead_lettered,
            "dead_letters_open": self.dead_letters_open,
            "expired": self.expired,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failures_in_a_row": self.failures_in_a_row,
            "next_attempt_in": self.next_attempt_in,
            "backlog": {k: int(v["count"]) for k, v in self.backlog.items()},
            "oldest_unsent_age": None if oldest is None else round(now_wall - oldest, 3),
        }


def _accounted(items: Sequence[OutboxItem], delivery: Delivery) -> Delivery:
    """``delivery`` with every sent item it does not mention added to ``retry``: an entry
    a destination forgot would otherwise stay pending and be resent at once, forever."""
    seen = {i.outbox_id for i in delivery.accepted}
    seen.update(i.outbox_id for i in delivery.retry)
    seen.update(i.outbox_id for r in delivery.refused for i in r.items)
    missing = tuple(i for i in items if i.outbox_id not in seen)
    if not missing:
        return delivery
    return replace(
        delivery,
        retry=delivery.retry + missing,
        retry_reason=delivery.retry_reason or "destination did not answer for every entry",
    )


class SyncWorker:
    """Drains one destination's outbox until cancelled. See the module docstring."""

    def __init__(
        self,
        destination: Destination,
        store: TwinStore,
        call: StoreCall,
        clock: Clock,
        policy: SyncPolicy | None = None,
        *,
        on_delivered: Callable[[Sequence[OutboxItem]], None] | None = None,
        on_reachable: Callable[[str, bool, str], None] | None = None,
        on_conditions: Callable[[str, Mapping[str, str]], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.destination = destination
        self.policy = policy or SyncPolicy()
        self._store = store
        self._call = call
        self._clock = clock
        self._on_delivered = on_delivered
        self._on_reachable = on_reachable
        self._on_conditions = on_conditions
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        info = destination.info
        self.status = SyncStatus(info.name, info.protocol, info.target)
        self._failures: list[str] = []
        #: Outbox id of the first entry of a batch whose send raised something other than
        #: DestinationUnavailable (a bug in an encoder or a library): sent alone next time.
        self._suspect: int | None = None
        self._refreshed: float | None = None  # monotonic time of the last status refresh

    @property
    def name(self) -> str:
        return self.destination.info.name

    def wake(self) -> None:
        """Something urgent is in the outbox (an alarm): stop pausing and look now."""
        self._wake.set()

    def conditions(self) -> dict[str, str]:
        """Technical conditions this destination raises now: name -> detail."""
        found: dict[str, str] = {}
        since = self.status.failing_since
        if since is not None and self._clock.monotonic() - since >= self.policy.unreachable_after:
            found["sync_unreachable"] = (
                f"{self.name} ({self.status.target}) failing for "
                f"{self._clock.monotonic() - since:.0f} s: {self.status.last_error}"
            )
        found.update(self._reviewable())
        return found

    def _reviewable(self) -> dict[str, str]:
        """The conditions judged from the store's figures (not from failing)."""
        found: dict[str, str] = {}
        if self.status.dead_letters_open:
            found["sync_dead_letters"] = (
                f"{self.status.dead_letters_open} message(s) refused by {self.name} wait for "
                f"review: GET /api/sync/{self.name}/dead-letters, then replay or dismiss"
            )
        lag = self.policy.lag_after
        oldest = min((b["oldest"] for b in self.status.backlog.values()), default=None)
        if lag is not None and oldest is not None:
            age = self._clock.wall() - oldest
            if age > lag:
                found["sync_lagging"] = (
                    f"{self.name}: oldest unsent entry waits {age / 60:.0f} min "
                    f"(threshold {lag / 60:.0f} min)"
                )
        return found

    async def run(self) -> None:
        try:
            while True:
                await self.step()
        finally:
            with contextlib.suppress(Exception):
                await self.destination.close()

    async def step(self) -> None:
        """Send one batch (or wait when there is nothing to send / after a failure)."""
        now = self._clock.wall()
        # After a destination bug, the suspect entry goes alone, so that only it can be
        # dead-lettered for it (see _broken).
        limit = 1 if self._suspect is not None else self.policy.batch
        items: list[OutboxItem] = await self._call(
            self._store.outbox_batch, self.name, now, limit, self._failures
        )
        for problem in self._failures:
            log.error(
                "outbox row cannot be read; dead-lettered", destination=self.name, problem=problem
            )
        self._failures.clear()
        items = await self._drop_expired(items, now)
        items = await self._refuse_uncarried(items, now)
        if not items:
            self.status.state = "idle"
            await self.refresh()
            await self._pause(self.policy.idle_poll)
            return
        self.status.state = "sending"
        await self._call(self._store.attempted, [i.outbox_id for i in items])
        patients = await self._call(self._patients, {i.admission for i in items})
        try:
            delivery = await self.destination.send(Batch(tuple(items), patients))
        except DestinationUnavailable as exc:
            await self._failed(str(exc))
            return
        except Exception as exc:  # a destination's bug must not stop sync (see _broken)
            await self._broken(items, exc, now)
            return
        self._suspect = None
        delivery = _accounted(items, delivery)
        await self._settle(delivery)
        if self._refreshed is None or (
            self._clock.monotonic() - self._refreshed >= self.policy.status_every
        ):
            await self.refresh()
        if delivery.retry:
            await self._failed(delivery.retry_reason or "receiver asked to retry")
            return
        self._succeeded()
        if self.policy.bandwidth and delivery.sent_bytes:
            self.status.state = "throttled"
            await self._pause(delivery.sent_bytes / self.policy.bandwidth)

    async def refresh(self) -> None:
        """Backlog per class and recent dead letters, from the store (for status)."""
        self._refreshed = self._clock.monotonic()
        self.status.backlog = await self._call(self._store.backlog, self.name)
        self.status.dead_letters_open = await self._call(self._store.open_dead_letters, self.name)
        if self._on_conditions is not None:
            self._on_conditions(self.name, self._reviewable())

    def _patients(self, admissions: set[int | None]) -> dict[int, Patient | None]:
        """Runs on the store thread: each admission's patient (``None`` if unbound)."""
        found: dict[int, Patient | None] = {}
        for admission in admissions:
            if admission is None:
                continue
            try:
                found[admission] = self._store.patient(admission)
            except (StoreError, DecryptionFailed) as exc:
                # Sent without identity rather than not at all; the receiver can match it
                # by bed and time, and the technician sees why.
                log.error("patient of an admission unreadable", error=str(exc))
                found[admission] = None
        return found

    async def _drop_expired(self, items: list[OutboxItem], now: float) -> list[OutboxItem]:
        expiry = self.policy.expiry
        if not expiry:
            return items
        stale = [i for i in items if i.kind in expiry and now - i.created > expiry[i.kind]]
        if not stale:
            return items
        # Done, not dead letters: nobody needs them any more, and a long outage must not
        # fill the dead-letter table with them.
        await self._call(self._store.ack, [i.outbox_id for i in stale], now)
        self.status.expired += len(stale)
        log.warning("expired outbox entries dropped", destination=self.name, count=len(stale))
        dropped = {i.outbox_id for i in stale}
        return [i for i in items if i.outbox_id not in dropped]

    async def _refuse_uncarried(self, items: list[OutboxItem], now: float) -> list[OutboxItem]:
        """Rows queued for this destination under an older config that it cannot carry
        (an HL7 destination and a waveform) must not block its queue: dead-lettered."""
        carries = self.destination.info.carries
        others = [i for i in items if i.kind not in carries]
        if not others:
            return items
        reason = f"{self.destination.info.protocol} does not carry {others[0].kind}"
        await self._call(self._store.dead_letter, self.name, others, reason, now)
        self.status.dead_lettered += len(others)
        return [i for i in items if i.kind in carries]

    async def _settle(self, delivery: Delivery) -> None:
        now = self._clock.wall()
        if delivery.accepted:
            await self._call(self._store.ack, [i.outbox_id for i in delivery.accepted], now)
            for item in delivery.accepted:
                self.status.delivered[item.kind] = self.status.delivered.get(item.kind, 0) + 1
            self.status.last_success = now
            if self._on_delivered is not None:
                self._on_delivered(delivery.accepted)
        for refusal in delivery.refused:
            await self._call(self._store.dead_letter, self.name, refusal.items, refusal.reason, now)
            self.status.dead_lettered += len(refusal.items)
            log.error(
                "destination refused messages; dead-lettered",
                destination=self.name,
                count=len(refusal.items),
                reason=refusal.reason,
            )

    def _succeeded(self) -> None:
        if self.status.failing_since is not None:
            log.info("destination reachable again", destination=self.name)
            if self._on_reachable is not None:
                self._on_reachable(self.name, True, "")
        self.status.failing_since = None
        self.status.failures_in_a_row = 0
        self.status.next_attempt_in = None
        self.status.last_error = ""

    async def _failed(self, reason: str) -> None:
        status = self.status
        if status.failing_since is None:
            status.failing_since = self._clock.monotonic()
            log.warning("destination failing; will retry", destination=self.name, error=reason)
        if self._on_reachable is not None:
            # Told on every failure (with the latest reason); the alarm engine applies its
            # own threshold before a technician is alarmed.
            self._on_reachable(self.name, False, reason)
        status.last_error = reason
        delay = self.policy.backoff.delay(status.failures_in_a_row, self._rng)
        status.failures_in_a_row += 1
        status.state = "backing_off"
        status.next_attempt_in = round(delay, 3)
        await self.refresh()
        # A backoff is not cut short by wake(): an unreachable receiver stays unreachable
        # for a new alarm too, and hammering it would not help the alarm through.
        await self._clock.sleep(delay)

    async def _broken(self, items: list[OutboxItem], exc: Exception, now: float) -> None:
        """``send`` raised what no destination should (a bug, or a library error it does
        not map). Never fatal: the batch is retried after a backoff, first entry alone; if
        that entry alone fails again the same way it is dead-lettered, so one row that an
        encoder cannot handle never blocks the queue behind it."""
        log.error(
            "destination failed unexpectedly",
            destination=self.name,
            error=type(exc).__name__,
            exc_info=exc,
        )
        reason = f"destination error: {type(exc).__name__}"
        head = items[0]
        if len(items) == 1 and self._suspect == head.outbox_id:
            self._suspect = None
            await self._call(self._store.dead_letter, self.name, items, reason, now)
            self.status.dead_lettered += 1
            await self.refresh()
            return
        self._suspect = head.outbox_id
        await self._failed(reason)

    async def _pause(self, seconds: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        with contextlib.suppress(TimeoutError):
            await within(self._clock, seconds, self._wake.wait())
        self._wake.clear()
