"""The outbox drain against a real store and a real MLLP receiver: order, at-least-once,
outage and recovery on the injected clock, restart mid-batch, dead letters, alarms first."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from drivers.clock import ManualClock
from gateway.supervisor import Backoff
from gateway.sync.delivery import Batch, Delivery, DestinationInfo
from gateway.sync.hl7 import Sender
from gateway.sync.mllp import MllpDestination
from gateway.sync.worker import SyncPolicy, SyncWorker
from gateway.twin.store import Retention, TwinStore
from tests.support.hl7_peer import PeerState, hl7_peer
from tests.support.net import free_port
from tests.support.sync import T0, inline, pulse, spo2, until

SENDER = Sender("gw-ward3", facility="WARD3")


def worker(store: TwinStore, port: int, clock: ManualClock, **policy: object) -> SyncWorker:
    destination = MllpDestination(
        "hie", host="127.0.0.1", port=port, sender=SENDER, clock=clock, timeout=5.0
    )
    settings = {
        "batch": 20,
        "unreachable_after": 60.0,
        "backoff": Backoff(initial=1.0, cap=60.0, jitter=0.5),
        **policy,
    }
    return SyncWorker(
        destination,
        store,
        inline,
        clock,
        SyncPolicy(**settings),  # type: ignore[arg-type]
        rng=random.Random(7),
    )


def spo2_values(peer: PeerState) -> list[str]:
    """SpO2 OBX-5 values in the order the receiver got them."""
    out = []
    for raw in peer.raw:
        for seg in raw.split("\r"):
            parts = seg.split("|")
            if parts[0] == "OBX" and parts[3].startswith("150456^"):
                out.append(parts[5])
    return out


def resting(w: SyncWorker) -> Callable[[], bool]:
    """True while the worker waits on the clock (idle or backing off), not on the peer."""
    return lambda: w.status.state in ("idle", "throttled", "backing_off")


def pending(store: TwinStore) -> int:
    return sum(int(v["count"]) for v in store.backlog("hie").values())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_everything_written_arrives_once_in_order(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(80 + i, T0 + i)) for i in range(45)], T0 + 50)
    with hl7_peer() as (peer, port):
        w = worker(store, port, clock)
        task = asyncio.create_task(w.run())
        await until(lambda: pending(store) == 0, clock=clock, step=0.5, when=resting(w))
        await stop(task)
    assert spo2_values(peer) == [str(80 + i) for i in range(45)]
    assert w.status.delivered == {"numeric": 45}
    assert w.conditions() == {}


async def test_an_hour_long_outage_loses_nothing_and_says_so(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0)
    port = free_port()
    w = worker(store, port, clock)
    task = asyncio.create_task(w.run())
    written = 0
    # The receiver is down for a simulated hour while the ward goes on measuring.
    for minute in range(60):
        store.write([("bed-1", spo2(90 + minute % 10, T0 + minute * 60.0))], clock.wall())
        written += 1
        await clock.advance(60.0)
        await asyncio.sleep(0.002)  # the connection attempt's refusal arrives
    assert w.status.failures_in_a_row > 5
    assert "sync_unreachable" in w.conditions()
    assert "cannot connect" in w.conditions()["sync_unreachable"]
    assert pending(store) == written and w.status.delivered == {}
    # Backoff is capped: the next attempt is at most a minute away.
    assert w.status.next_attempt_in is not None and w.status.next_attempt_in <= 60.0

    with hl7_peer(port=port) as (peer, _):
        await until(lambda: pending(store) == 0, clock=clock, step=5.0, when=resting(w))
        await stop(task)
    assert spo2_values(peer) == [str(90 + m % 10) for m in range(60)]
    assert "sync_unreachable" not in w.conditions()
    assert w.status.last_error == ""


async def test_a_restart_mid_batch_resends_only_what_was_not_confirmed(
    store: TwinStore,
) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(70 + i, T0 + i)) for i in range(6)], T0 + 10)
    with hl7_peer() as (peer, port):
        # Per message 50: one message per batch of 2 numerics (batch=2).
        peer.script = ["AA", "none"]
        first = worker(store, port, clock, batch=2)
        task = asyncio.create_task(first.run())
        await until(lambda: len(peer.raw) == 2 and clock.sleepers > 0)
        await stop(task)  # killed while the second message waits for its ACK
        assert pending(store) == 4
        second = worker(store, port, clock, batch=2)
        task = asyncio.create_task(second.run())
        await until(lambda: pending(store) == 0, clock=clock, step=0.5, when=resting(second))
        await stop(task)
    ids = [raw.split("\r")[0].split("|")[9] for raw in peer.raw]
    # The unconfirmed message went again under the same control id: removable by id.
    assert ids[1] == ids[2]
    assert sorted(set(spo2_values(peer))) == [str(70 + i) for i in range(6)]
    assert len(spo2_values(peer)) == 8


async def test_a_refused_message_is_dead_lettered_and_does_not_block(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(60 + i, T0 + i)) for i in range(4)], T0 + 10)
    with hl7_peer() as (peer, port):
        peer.script = ["AE"]
        w = worker(store, port, clock, batch=2)
        task = asyncio.create_task(w.run())
        await until(lambda: pending(store) == 0, clock=clock, step=0.5, when=resting(w))
        await stop(task)
    letters = store.dead_letters("hie")
    assert [d["kind"] for d in letters] == ["numeric", "numeric"]
    assert letters[0]["reason"].startswith("AE")
    assert "sync_dead_letters" in w.conditions()
    assert w.status.delivered == {"numeric": 2}

    # The condition outlives a restart (it comes from the store) and a day: it waits for a
    # technician, who dismisses one letter and replays the other once the receiver is fixed.
    seen: list[dict[str, str]] = []
    with hl7_peer() as (peer, port):
        again = worker(store, port, clock)
        again._on_conditions = lambda _name, found: seen.append(dict(found))
        task = asyncio.create_task(again.run())
        await until(lambda: again.status.state == "idle")
        assert "sync_dead_letters" in again.conditions()
        assert again.status.as_dict(clock.wall())["dead_letters_open"] == 2
        await clock.advance(86401.0)
        await until(lambda: again.status.state == "idle", clock=clock, step=1.0)
        assert "sync_dead_letters" in again.conditions()
        assert "sync_dead_letters" in seen[-1]
        first, second = sorted(d["id"] for d in letters)
        closed = store.resolve_dead_letters(
            "hie", [first], replay=False, actor="tech1", now=clock.wall()
        )
        assert closed == 1
        closed = store.resolve_dead_letters(
            "hie", [first, second], replay=True, actor="tech1", now=clock.wall()
        )
        assert closed == 1  # the dismissed one stays closed
        assert store.open_dead_letters("hie") == 0
        await again.refresh()
        assert "sync_dead_letters" not in again.conditions()
        assert "sync_dead_letters" not in seen[-1]
        await until(lambda: pending(store) == 0, clock=clock, step=0.5, when=resting(again))
        await stop(task)
    # The replayed message went again (the other stays undelivered), under its original id.
    assert len(peer.raw) == 1
    replayed = next(d for d in store.dead_letters("hie") if d["id"] == second)
    assert replayed["resolution"] == "replayed by tech1"
    assert store.dead_letters("hie", open_only=True) == []
    audit = store.db.conn.execute("SELECT actor, action, detail FROM audit_log").fetchall()
    assert audit == [
        ("tech1", "sync_dead_letters_dismissed", "1 dead letter(s) of hie dismissed"),
        ("tech1", "sync_dead_letters_replayed", "1 dead letter(s) of hie replayed"),
    ]
    # Retention prunes dead letters with the rows they point at.
    store.housekeeping(clock.wall() + 31 * 86400.0, Retention())
    assert store.dead_letters("hie") == []


async def test_an_alarm_overtakes_a_backlog_of_numerics(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", pulse(60 + i % 40, T0 + i)) for i in range(200)], T0 + 300)
    store.write_alarm(
        "bed-1",
        "alarms",
        {
            "alarm": "a1",
            "change": "raised",
            "alarm_kind": "technical",
            "condition": "sensor_off",
            "priority": "medium",
            "state": "active",
        },
        T0 + 301,
        T0 + 301,
    )
    with hl7_peer() as (peer, port):
        w = worker(store, port, clock, batch=20)
        task = asyncio.create_task(w.run())
        await until(lambda: len(peer.raw) >= 1)
        await stop(task)
    assert peer.messages[0].msh.msh_9.to_er7() == "ORU^R40^ORU_R40"


async def test_bandwidth_cap_spaces_batches_and_an_alarm_wakes_the_worker(
    store: TwinStore,
) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", pulse(70, T0 + i)) for i in range(40)], T0 + 50)
    with hl7_peer() as (peer, port):
        w = worker(store, port, clock, batch=20, bandwidth=100.0)  # 100 bytes/s
        task = asyncio.create_task(w.run())
        await until(lambda: len(peer.raw) == 1 and clock.sleepers > 0)
        await asyncio.sleep(0.05)
        assert len(peer.raw) == 1  # the cap holds the next batch back
        store.write_alarm(
            "bed-1",
            "alarms",
            {
                "alarm": "a2",
                "change": "raised",
                "alarm_kind": "technical",
                "condition": "lead_off",
                "priority": "high",
                "state": "active",
            },
            T0 + 60,
            T0 + 60,
        )
        w.wake()
        await until(lambda: len(peer.raw) == 2)
        await stop(task)
    assert peer.messages[1].msh.msh_9.to_er7() == "ORU^R40^ORU_R40"


async def test_a_backlog_falling_behind_raises_sync_lagging_until_caught_up(
    store: TwinStore,
) -> None:
    # Reachable, but a bandwidth cap far too low for the ward: sync_unreachable would
    # never fire, yet the central system sees data later and later.
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(90 + i, T0 + i)) for i in range(6)], T0)
    reports: list[dict[str, str]] = []
    with hl7_peer() as (peer, port):
        w = worker(store, port, clock, batch=1, bandwidth=5.0, lag_after=120.0, status_every=1.0)
        w._on_conditions = lambda _name, found: reports.append(dict(found))
        task = asyncio.create_task(w.run())
        # (Time moves only while the worker rests, never while it waits for an ACK.)
        told = lambda: bool(reports) and "sync_lagging" in reports[-1]  # noqa: E731
        await until(told, clock=clock, step=5.0, when=resting(w))
        assert clock.wall() - T0 > 120.0
        assert "sync_lagging" in w.conditions()
        assert pending(store) > 0
        await until(lambda: pending(store) == 0, clock=clock, step=5.0, when=resting(w))
        await until(lambda: w.status.state == "idle", clock=clock, step=5.0)
        await stop(task)
    assert "sync_lagging" not in w.conditions() and "sync_lagging" not in reports[-1]
    assert len(peer.raw) == 6


async def test_expired_entries_are_dropped_not_sent(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0 + 7200)
    store.write([("bed-1", spo2(95, T0))], T0)  # queued two hours ago
    store.write([("bed-1", spo2(96, T0 + 7190))], T0 + 7190)
    with hl7_peer() as (peer, port):
        w = worker(store, port, clock, expiry={"numeric": 3600.0})
        task = asyncio.create_task(w.run())
        await until(lambda: pending(store) == 0, clock=clock, step=0.5, when=resting(w))
        await stop(task)
    assert spo2_values(peer) == ["96"]
    assert w.status.expired == 1
    assert store.dead_letters("hie") == []  # done, not refused: no dead letter
    assert pending(store) == 0


class _Scripted:
    """A destination whose encoder has a bug: it raises on one value. Everything else is
    accepted (and recorded) in the order sent; ``forget`` items are left unanswered."""

    def __init__(self, bad: float | None = None, forget: int = 0) -> None:
        self.info = DestinationInfo("hie", "test", "test://", frozenset({"numeric"}))
        self.bad = bad
        self.forget = forget
        self.sent: list[float] = []

    async def send(self, batch: Batch) -> Delivery:
        values = [i.record["value"] for i in batch.items]
        if self.bad in values:
            raise TypeError("encoder bug")
        if self.forget:
            self.forget -= 1
            return Delivery(accepted=batch.items[:1])
        self.sent.extend(values)
        return Delivery(accepted=batch.items)

    async def close(self) -> None:
        return None


def scripted_worker(store: TwinStore, clock: ManualClock, dest: _Scripted) -> SyncWorker:
    policy = SyncPolicy(batch=5, backoff=Backoff(initial=1.0, cap=60.0, jitter=0.5))
    return SyncWorker(dest, store, inline, clock, policy, rng=random.Random(3))


async def test_a_destination_bug_dead_letters_only_the_row_it_cannot_handle(
    store: TwinStore,
) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(80 + i, T0 + i)) for i in range(12)], T0 + 20)
    dest = _Scripted(bad=87.0)
    w = scripted_worker(store, clock, dest)
    task = asyncio.create_task(w.run())
    await until(lambda: pending(store) == 0, clock=clock, step=1.0, when=resting(w))
    assert not task.done()  # the bug did not end the worker
    await stop(task)
    assert dest.sent == [80.0 + i for i in range(12) if i != 7]
    letters = store.dead_letters("hie")
    assert len(letters) == 1 and letters[0]["reason"] == "destination error: TypeError"
    assert w.status.dead_lettered == 1 and "sync_dead_letters" in w.conditions()


async def test_entries_a_destination_does_not_answer_for_are_retried(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(80 + i, T0 + i)) for i in range(3)], T0 + 20)
    dest = _Scripted(forget=1)
    w = scripted_worker(store, clock, dest)
    # It accepts the first and says nothing of the other two: they wait for a retry.
    task = asyncio.create_task(w.run())
    await until(lambda: clock.sleepers > 0 and w.status.state == "backing_off")
    assert pending(store) == 2 and w.status.failures_in_a_row == 1
    assert "every entry" in w.status.last_error
    await until(lambda: pending(store) == 0, clock=clock, step=1.0, when=resting(w))
    await stop(task)
    assert dest.sent == [81.0, 82.0] and w.status.failures_in_a_row == 0


async def test_a_days_long_outage_keeps_backing_off_at_the_cap(store: TwinStore) -> None:
    clock = ManualClock(start_wall=T0)
    store.write([("bed-1", spo2(90, T0))], T0)
    w = worker(store, free_port(), clock)
    # A day and more of failures at the 60 s cap: 2.0 ** n alone would overflow a float.
    w.status.failures_in_a_row = 5000
    step = asyncio.create_task(w.step())
    await until(lambda: clock.sleepers > 0 and w.status.state == "backing_off")
    assert w.status.failures_in_a_row == 5001
    assert w.status.next_attempt_in is not None and 30.0 <= w.status.next_attempt_in <= 60.0
    await clock.advance(60.0)
    await step
