"""Each sync destination down, slow or answering with errors for a simulated hour of ward
data, then recovering (issue 11).

Fault: the destination (HL7 over MLLP to hl7apy's server, FHIR over mutual-TLS HTTPS to an
aiohttp server that validates every Bundle, MQTT to mosquitto) is
* down: connections refused for the hour (a :class:`FaultProxy` in front stops listening);
* slow: each answer takes seconds of the injected clock, 8 s and every fourth 12 s, against
  the worker's 10 s timeout (HL7 and MQTT: the proxy holds the ACK / PUBACK bytes; FHIR:
  the server holds its answer);
* answering with errors: HL7 AE, AR and no ACK at all; FHIR 500, 401, 400 and a refused
  entry; MQTT connections refused with a CONNACK "server unavailable", alternating with
  connections cut after a few packets.

Meanwhile two beds report SpO2 and pulse every 20 s, a sensor comes off and back, and
alarms are raised and cleared. What must happen, and is asserted from what the receiver
itself got (not from what the gateway believes):
* no loss: every committed outbox row is delivered, or (HL7 AE/AR, FHIR 4xx only) refused
  by the receiver, dead-lettered and counted; nothing else is dead-lettered;
* the backlog drains once the destination recovers;
* duplicates only where at-least-once permits them (a receiver that answered after the
  gateway gave up, a connection cut before the acknowledgement), with the same id and the
  same content, so the receiver can drop them by id (FHIR resource id, MQTT item id; HL7
  MSH-10, a message resent after a late ACK going again unchanged; and the observation's
  device, code and OBX-14 time);
* per stream, first arrivals in commit order;
* live alarms are not starved: between an alarm's commit and its delivery, at most one
  batch of numerics is delivered; and an alarm committed while a large backlog drains goes
  before the older numerics still queued.

Time moves only on the ManualClock: while the worker rests (idle, backing off), or an
answer is held on the clock, or the receiver deliberately stays silent, the test advances
it to the next deadline; otherwise it polls briefly for the real peers' work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import pytest

from drivers.clock import ManualClock
from drivers.codes import BEATS_PER_MINUTE, PERCENT, PULSE_RATE, SPO2
from drivers.readings import Condition, DeviceEvent, Numeric, Reading
from gateway.supervisor import Backoff
from gateway.sync.delivery import Batch, Delivery, Destination, DestinationUnavailable
from gateway.sync.fhir import FhirContext
from gateway.sync.hl7 import Sender
from gateway.sync.https import FhirDestination
from gateway.sync.mllp import MllpDestination
from gateway.sync.mqtt import MqttDestination
from gateway.sync.worker import SyncPolicy, SyncWorker
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import Destination as Queue
from gateway.twin.store import OutboxItem, TwinStore
from gateway.twin.vocabulary import Patient
from tests.support.broker import mosquitto
from tests.support.faults import CONNACK_UNAVAILABLE, FaultProxy, is_puback, mqtt_packets
from tests.support.fhir_server import FhirState, fhir_server
from tests.support.hl7_peer import PeerState, hl7_peer
from tests.support.sync import T0, inline
from tests.support.tls import make_pki

GATEWAY = "gw-ward3"
TIMEOUT = 10.0  # the destination's answer timeout, seconds
BATCH = 40  # outbox entries per send
TICK = 60.0  # the ward reports once a minute (PCD-01's usual periodic numerics)
TICKS = 60  # one hour
#: Give up (fail) when nothing moves for this long in real time: a stuck drill, not a pass.
STALL = 60.0
BEDS = {
    "bed-1": Patient("Ann Lee", "MRN-0042", "1970-01-02"),
    "bed-2": Patient("Bo Chan", "MRN-0043", "1955-03-04"),
}
#: Seconds each answer takes while the destination is slow: near, then past the timeout.
SLOW = (8.0, 8.0, 8.0, 12.0)

Key = tuple[str, int]  # (kind, row id)


@dataclass(frozen=True)
class Row:
    kind: str
    row_id: int
    bed: str
    stream: str
    t: float


@dataclass
class Got:
    """One message as the receiver got it and what it answered."""

    key: str  # its id: MSH-10, the Bundle's position, the MQTT message id
    accepted: bool
    refused: list[Key] = field(default_factory=list)  # refused for good (AE/AR, 4xx)
    items: list[tuple[Key, str]] = field(default_factory=list)  # (row, content)


class Receiver(Protocol):
    name: str
    carries: frozenset[str]
    proxy: FaultProxy
    destination: Destination
    beds: tuple[str, ...]

    def inject(self, fault: str) -> None: ...

    def recover(self) -> None: ...

    async def holding(self) -> bool: ...

    def silent(self) -> bool: ...

    def hush(self) -> None: ...

    def got(self, rows: dict[Key, Row]) -> list[Got]: ...

    async def settle(self, confirmed: list[OutboxItem]) -> None: ...


def slow() -> Iterator[float]:
    return itertools.cycle(SLOW)


# -- HL7 over MLLP --------------------------------------------------------------------------
#: Answers while erring: refusals and silence among acceptances.
HL7_ERRORS = ["AA", "AE", "AA", "AA", "none", "AA", "AR", "AA", "AA", "AA"]


def _hl7_time(text: str) -> float:
    return datetime.strptime(text, "%Y%m%d%H%M%S.%f%z").timestamp()


class Hl7Receiver:
    name = "hie"
    carries = frozenset({"numeric", "alarm"})
    #: hl7apy takes about 0.2 s to parse each message on this loaded machine, and numerics
    #: of interleaved beds go in separate messages: one bed keeps the drill in bounds.
    beds: tuple[str, ...] = ("bed-1",)

    def __init__(self, peer: PeerState, port: int, clock: ManualClock) -> None:
        self.peer = peer
        self.proxy = FaultProxy(port, clock)
        self.destination: Destination = MllpDestination(
            self.name,
            host="127.0.0.1",
            port=self.proxy.port,
            sender=Sender(GATEWAY, facility="WARD3"),
            clock=clock,
            timeout=TIMEOUT,
            per_message=10,
        )
        self._answers: list[str] = []
        self._consumed: int | None = None
        self._hushed = -1

    def inject(self, fault: str) -> None:
        if fault == "slow":
            self.proxy.latency = slow()
        elif fault == "errors":
            self._answers = HL7_ERRORS * 100
            with self.peer.lock:
                self.peer.script[:] = self._answers

    def recover(self) -> None:
        self.proxy.latency = None
        with self.peer.lock:
            self._consumed = len(self._answers) - len(self.peer.script)
            self.peer.script.clear()

    def _answer(self, index: int) -> str:
        if self._consumed is None:
            with self.peer.lock:
                consumed = len(self._answers) - len(self.peer.script)
        else:
            consumed = self._consumed
        return self._answers[index] if index < consumed else "AA"

    async def holding(self) -> bool:
        if self.proxy.holding:
            await self.proxy.quiet()
        return self.proxy.holding

    def silent(self) -> bool:
        last = len(self.peer.raw) - 1
        return last > self._hushed and self._answer(last) == "none"

    def hush(self) -> None:
        self._hushed = len(self.peer.raw) - 1

    def got(self, rows: dict[Key, Row]) -> list[Got]:
        natural = {(r.bed, r.stream, round(r.t, 3)): k for k, r in rows.items()}
        out = []
        for index, raw in enumerate(list(self.peer.raw)):
            segments = [s.split("|") for s in raw.split("\r") if s]
            control, kind = segments[0][9], segments[0][8]
            answer = self._answer(index)
            items: list[tuple[Key, str]] = []
            if kind == "ORU^R40^ORU_R40":
                body = "\r".join("|".join(s) for s in segments[1:])
                items.append((("alarm", int(control[1:].split("x")[0])), body))
            else:
                bed = next(s for s in segments if s[0] == "PV1")[3].split("^")[2]
                device = ""
                for seg in segments:
                    if seg[0] != "OBX":
                        continue
                    if seg[3].startswith("69965^"):
                        device = seg[18].split("^")[0]
                        continue
                    stream = f"{device}/{seg[3].split('^')[1]}"
                    t = _hl7_time(seg[14])
                    key = natural[(bed, stream, round(t, 3))]
                    items.append((key, f"{seg[5]}|{seg[6]}|{seg[14]}"))
            refused = [k for k, _ in items] if answer in ("AE", "AR") else []
            out.append(Got(control, answer == "AA", refused, items))
        return out

    async def settle(self, confirmed: list[OutboxItem]) -> None:
        return None  # the peer answers after it has recorded the message


@asynccontextmanager
async def hl7_receiver(clock: ManualClock, _tmp: Path) -> AsyncIterator[Hl7Receiver]:
    with hl7_peer() as (peer, port):
        yield Hl7Receiver(peer, port, clock)


# -- FHIR over HTTPS ------------------------------------------------------------------------
#: Answers while erring: server errors and an expired credential are retried; a bad
#: request (400) and a refused entry (422) are refusals for good.
FHIR_ERRORS = ["500", "ok", "401", "ok", "400", "ok", "500", "500", "entry-422", "ok"]
FHIR_CONTEXT = FhirContext(GATEWAY, mrn_system="urn:oid:1.2.3.4")


class FhirReceiver:
    name = "ehr"
    carries = frozenset({"numeric"})
    beds = tuple(BEDS)

    def __init__(self, state: FhirState, port: int, clock: ManualClock, pki: Any) -> None:
        self.state = state
        self.clock = clock
        self.proxy = FaultProxy(port, clock)
        self.destination: Destination = FhirDestination(
            self.name,
            base_url=f"https://127.0.0.1:{self.proxy.port}/fhir",
            context=FHIR_CONTEXT,
            clock=clock,
            tls=pki.client_context(),
            timeout=TIMEOUT,
        )
        self._answers: list[str] = []
        self._consumed: int | None = None
        self._latency: Iterator[float] = slow()
        self._scheduled = 0
        self._releases: set[asyncio.Task[None]] = set()

    def inject(self, fault: str) -> None:
        # A slow server is slow in itself (not its TLS handshake): it holds each answer.
        if fault in ("slow", "errors"):
            self._answers = ["hold" if fault == "slow" else a for a in FHIR_ERRORS * 100]
            self.state.script[:] = self._answers

    def recover(self) -> None:
        self._consumed = len(self._answers) - len(self.state.script)
        self.state.script.clear()

    def _answer(self, index: int) -> str:
        consumed = self._consumed
        if consumed is None:
            consumed = len(self._answers) - len(self.state.script)
        return self._answers[index] if index < consumed else "ok"

    async def holding(self) -> bool:
        held = sum(1 for i in range(len(self.state.raw)) if self._answer(i) == "hold")
        while self._scheduled < held:
            self._scheduled += 1
            task = asyncio.create_task(self._release_after(next(self._latency)))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
            await asyncio.sleep(0)  # its release is on the clock before time moves
        return any(not t.done() for t in self._releases)

    async def _release_after(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        # Event.set wakes the answers waiting now; clear holds the next one again.
        self.state.release.set()
        self.state.release.clear()

    def silent(self) -> bool:
        return False

    def hush(self) -> None:
        return None

    def got(self, rows: dict[Key, Row]) -> list[Got]:
        by_id = {FHIR_CONTEXT.resource_id(k[0], str(k[1])): k for k in rows}
        out = []
        for index, bundle in enumerate(list(self.state.raw)):
            answer = self._answer(index)
            items: list[tuple[Key, str]] = []
            for entry in bundle["entry"]:
                kind, _, rid = entry["request"]["url"].partition("/")
                if kind != "Observation":
                    continue
                resource = entry["resource"]
                content = json.dumps(
                    [resource["effectiveDateTime"], resource.get("valueQuantity"), resource["code"]]
                )
                items.append((by_id[rid], content))
            if answer == "400":
                refused = [k for k, _ in items]
            elif answer == "entry-422":
                refused = [items[-1][0]]
            else:
                refused = []
            accepted = answer in ("ok", "hold", "entry-422")
            kept = [i for i in items if i[0] not in refused]
            out.append(Got(f"bundle-{index}", accepted, refused, kept if accepted else items))
        return out

    async def settle(self, confirmed: list[OutboxItem]) -> None:
        return None


@asynccontextmanager
async def fhir_receiver(clock: ManualClock, tmp: Path) -> AsyncIterator[FhirReceiver]:
    pki = make_pki(tmp / "pki")
    async with fhir_server(pki.server_context()) as (state, url):
        port = int(url.split(":")[2].split("/")[0])
        receiver = FhirReceiver(state, port, clock, pki)
        try:
            yield receiver
        finally:
            for task in list(receiver._releases):
                task.cancel()


# -- MQTT -------------------------------------------------------------------------------------
MQTT_IDS = FhirContext(GATEWAY)


class MqttReceiver:
    name = "cloud"
    carries = frozenset({"numeric", "alarm", "event"})
    beds = tuple(BEDS)

    def __init__(self, broker: int, clock: ManualClock, messages: list[Any]) -> None:
        self.messages = messages
        self.proxy = FaultProxy(broker, clock, framing=mqtt_packets, hold=is_puback)
        self.destination: Destination = MqttDestination(
            self.name,
            host="127.0.0.1",
            port=self.proxy.port,
            gateway_id=GATEWAY,
            clock=clock,
            tls=None,
            timeout=TIMEOUT,
        )
        self._erring = False
        self._hushed = 0

    def inject(self, fault: str) -> None:
        if fault == "slow":
            self.proxy.latency = slow()
        self._erring = fault == "errors"

    def at_minute(self, minute: int) -> None:
        """While erring: ten minutes of refused connections, ten of cut ones, in turn."""
        if not self._erring:
            return
        refusing = (minute // 10) % 2 == 0
        self.proxy.refuse = CONNACK_UNAVAILABLE if refusing else None
        # CONNACK, the status PUBACK and one window's PUBACKs, then a cut mid-window.
        self.proxy.cut_after = None if refusing else 10

    def recover(self) -> None:
        self._erring = False
        self.proxy.latency = None
        self.proxy.refuse = None
        self.proxy.cut_after = None

    async def holding(self) -> bool:
        if self.proxy.holding:
            await self.proxy.quiet()
        return self.proxy.holding

    def silent(self) -> bool:
        # A cut connection leaves aiomqtt's pending publishes waiting for the timeout.
        return self.proxy.cuts > self._hushed

    def hush(self) -> None:
        self._hushed = self.proxy.cuts

    def got(self, rows: dict[Key, Row]) -> list[Got]:
        by_id = {MQTT_IDS.resource_id(k[0], str(k[1])): k for k in rows}
        out = []
        for _topic, body in list(self.messages):
            items = [
                (by_id[i["id"]], json.dumps({k: v for k, v in i.items() if k != "id"}))
                for i in body["items"]
            ]
            out.append(Got(body["id"], True, [], items))
        return out

    async def settle(self, confirmed: list[OutboxItem]) -> None:
        """The broker forwards to the listener in its own process: wait (bounded) until
        everything the gateway saw confirmed has reached the listener."""
        wanted = {MQTT_IDS.resource_id(i.kind, str(i.row_id)) for i in confirmed}
        for _ in range(2000):
            have = {i["id"] for _, body in list(self.messages) for i in body["items"]}
            if wanted <= have:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{len(wanted - have)} confirmed items never reached the listener")


@asynccontextmanager
async def mqtt_receiver(clock: ManualClock, tmp: Path) -> AsyncIterator[MqttReceiver]:
    with mosquitto(tmp / "broker") as port:
        messages: list[Any] = []
        async with aiomqtt.Client("127.0.0.1", port, identifier="listener") as listener:
            await listener.subscribe(f"bedside/{GATEWAY}/beds/#", qos=1)

            async def collect() -> None:
                async for message in listener.messages:
                    payload = json.loads(bytes(message.payload))
                    messages.append((str(message.topic), payload))

            task = asyncio.create_task(collect())
            try:
                yield MqttReceiver(port, clock, messages)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


RECEIVERS: dict[str, Callable[[ManualClock, Path], Any]] = {
    "hl7": hl7_receiver,
    "fhir": fhir_receiver,
    "mqtt": mqtt_receiver,
}


# -- the ward ---------------------------------------------------------------------------------
def alarm_record(bed: str, number: int, change: str, priority: str = "medium") -> dict[str, Any]:
    return {
        "alarm": f"{bed}/ox-1/spo2_low/{number}",
        "change": change,
        "state": "cleared" if change == "cleared" else "active",
        "condition": "spo2_low",
        "alarm_kind": "physiological",
        "priority": priority,
        "code": "MDC_PULS_OXIM_SAT_O2",
        "value": 85.0,
        "limit": 90,
        "unit": "%",
        "message": "SpO2 low",
    }


class Ward:
    """Beds for an hour: SpO2 and pulse every minute (values that change every time, so
    each is stored), the probe coming off and back every 10 min, and per bed an SpO2 alarm
    raised and cleared five minutes later every quarter of an hour."""

    def __init__(
        self, store: TwinStore, clock: ManualClock, worker: SyncWorker, beds: tuple[str, ...]
    ) -> None:
        self.store, self.clock, self.worker, self.beds = store, clock, worker, beds
        self.tick = 0
        self.next = clock.monotonic() + TICK
        #: Alarm row -> how many items had been confirmed when it was committed.
        self.alarm_marks: dict[int, int] = {}
        self.confirmed: list[OutboxItem] = []
        self.on_minute: Callable[[int], None] = lambda _: None

    @property
    def producing(self) -> bool:
        return self.tick < TICKS

    def write_tick(self) -> None:
        self.tick += 1
        k, now = self.tick, self.clock.wall()
        batch: list[tuple[str, Reading]] = []
        for b, bed in enumerate(self.beds):
            batch.append((bed, Numeric("ox-1", SPO2, 92.0 + (k + b) % 7, PERCENT, now)))
            batch.append(
                (bed, Numeric("ox-1", PULSE_RATE, 60.0 + (3 * k + b) % 40, BEATS_PER_MINUTE, now))
            )
            if k % 10 == 5:
                off = (k // 10) % 2 == 0
                batch.append((bed, DeviceEvent("ox-1", Condition.SENSOR_OFF, off, now, "probe")))
        result = self.store.write(batch, now)
        assert result.numerics_written == 2 * len(self.beds)
        for b, bed in enumerate(self.beds):
            phase = (k - 3 - b) % 15
            if phase in (0, 5):
                self.alarm(bed, k // 15, "raised" if phase == 0 else "cleared")
        self.next += TICK
        self.on_minute(k)

    def alarm(self, bed: str, number: int, change: str, priority: str = "medium") -> int:
        now = self.clock.wall()
        row = self.store.write_alarm(
            bed, "alarms", alarm_record(bed, number, change, priority), now, now
        )
        self.alarm_marks[row] = len(self.confirmed)
        self.worker.wake()  # as the daemon does for every committed alarm
        return row


# -- the drill --------------------------------------------------------------------------------
class Drill:
    def __init__(self, receiver: Receiver, store: TwinStore, clock: ManualClock) -> None:
        self.rx, self.store, self.clock = receiver, store, clock
        policy = SyncPolicy(
            batch=BATCH,
            idle_poll=TICK,
            unreachable_after=120.0,
            backoff=Backoff(initial=1.0, factor=2.0, cap=60.0, jitter=0.5),
        )
        self.worker = SyncWorker(
            receiver.destination,
            store,
            inline,
            clock,
            policy,
            on_delivered=self._delivered,
            rng=random.Random(11),
        )
        self.ward = Ward(store, clock, self.worker, receiver.beds)
        self.errors: set[str] = set()
        self.unreachable = False
        self.probe: int | None = None
        self.probe_backlog = 0

    def _delivered(self, items: Any) -> None:
        self.ward.confirmed.extend(items)

    def pending(self) -> dict[str, int]:
        return {k: int(v["count"]) for k, v in self.store.backlog(self.rx.name).items()}

    def _observe(self) -> None:
        if self.worker.status.last_error:
            self.errors.add(self.worker.status.last_error)
        if "sync_unreachable" in self.worker.conditions():
            self.unreachable = True

    async def _advance_to(self, target: float) -> None:
        """Move the clock to ``target`` (monotonic), stopping at the ward's next report:
        what the report wakes must be looked at before time moves on."""
        if self.ward.producing and self.ward.next <= target:
            await self.clock.advance(max(0.0, self.ward.next - self.clock.monotonic()))
            self.ward.write_tick()
            return
        await self.clock.advance(max(0.0, target - self.clock.monotonic()))

    async def run_until(self, done: Callable[[], bool], *, probe: bool = False) -> None:
        progress, since = None, time.monotonic()
        while True:
            now = (len(self.ward.confirmed), self.clock.monotonic(), len(self.errors))
            if now != progress:
                progress, since = now, time.monotonic()
            elif time.monotonic() - since > STALL:
                raise AssertionError(f"stalled: {self.worker.status}, backlog {self.pending()}")
            self._observe()
            if probe and self.probe is None:
                self._maybe_probe()
            if done():
                return
            state = self.worker.status.state
            resting = state in ("idle", "backing_off")
            holding = await self.rx.holding()
            silent = self.rx.silent()
            deadline = self.clock.next_deadline()
            if deadline is not None and (resting or holding or silent):
                if silent:
                    self.rx.hush()  # its ACK timeout is the next deadline
                await self._advance_to(deadline)
            elif deadline is None and resting and self.ward.producing:
                await self._advance_to(self.ward.next)
            await asyncio.sleep(0.001)  # the real peer's turn

    def _maybe_probe(self) -> None:
        """A new high alarm once the drain of a large backlog is under way."""
        backlog = self.pending().get("numeric", 0)
        if backlog >= 2 * BATCH and self.ward.confirmed:
            self.probe_backlog = backlog
            self.probe = self.ward.alarm("bed-1", 99, "raised", "high")


def committed(store: TwinStore, destination: str) -> dict[Key, Row]:
    """Every outbox row of ``destination``, with its stream and time (clear index columns)."""
    rows: dict[Key, Row] = {}
    conn = store.db.conn
    for kind, table in (
        ("numeric", "numerics"),
        ("alarm", "alarm_log"),
        ("event", "device_events"),
    ):
        for row_id, bed, stream, t in conn.execute(
            f"SELECT r.id, a.bed_id, s.name, r.t FROM outbox o JOIN {table} r ON r.id = o.row_id "
            "JOIN streams s ON s.id = r.stream_id JOIN admissions a ON a.id = r.admission_id "
            "WHERE o.destination = ? AND o.kind = ?",
            (destination, kind),
        ):
            rows[(kind, row_id)] = Row(kind, row_id, bed, stream, t)
    (total,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE destination = ?", (destination,))
    assert len(rows) == total[0]
    return rows


def expected_rows(receiver: Receiver) -> int:
    beds = len(receiver.beds)
    per_kind = {
        "numeric": 2 * beds * TICKS,
        "event": beds * (TICKS // 10),
        "alarm": beds * 8,  # raised and cleared, four times an hour per bed
    }
    return sum(n for kind, n in per_kind.items() if kind in receiver.carries)


def check(drill: Drill, fault: str, rows: dict[Key, Row]) -> dict[str, int]:
    rx, store = drill.rx, drill.store
    got = rx.got(rows)
    assert drill.pending() == {}, "the backlog did not drain"

    # No loss: every committed row was accepted by the receiver, or refused by it for good
    # and then dead-lettered and counted; nothing else was dead-lettered.
    letters = store.dead_letters(rx.name, limit=1_000_000)
    dead = {(d["kind"], d["row_id"]) for d in letters}
    refused = {k for g in got for k in g.refused}
    accepted = [g for g in got if g.accepted]
    delivered = {k for g in accepted for k, _ in g.items}
    assert dead == refused
    assert drill.worker.status.dead_lettered == len(dead) == len(letters)
    assert not delivered & dead
    assert delivered | dead == set(rows), f"lost: {sorted(set(rows) - delivered - dead)[:5]}"

    # Duplicates: only where at-least-once allows, same id with the same content.
    copies: dict[Key, list[str]] = {}
    for g in accepted:
        for key, content in g.items:
            copies.setdefault(key, []).append(content)
    duplicated = {k: v for k, v in copies.items() if len(v) > 1}
    assert all(len(set(v)) == 1 for v in duplicated.values()), "a resend changed the content"
    resends_allowed = fault == "slow" or (fault == "errors" and rx.name == "cloud")
    if not resends_allowed:
        assert not duplicated

    # Order per stream: first arrivals in commit order.
    first: dict[str, list[float]] = {}
    placed: set[Key] = set()
    for g in accepted:
        for key, _ in g.items:
            if key not in placed:
                placed.add(key)
                row = rows[key]
                first.setdefault(f"{row.bed}:{row.stream}", []).append(row.t)
    for stream, times in first.items():
        assert times == sorted(times) and len(set(times)) == len(times), stream

    # Live alarms: at most one batch of numerics confirmed between commit and delivery.
    order = {(i.kind, i.row_id): n for n, i in enumerate(drill.ward.confirmed)}
    for alarm, mark in drill.ward.alarm_marks.items():
        if ("alarm", alarm) in dead or ("alarm", alarm) not in rows:
            continue  # refused by the receiver (accounted for above), or not carried
        position = order[("alarm", alarm)]
        between = [i for i in drill.ward.confirmed[mark:position] if i.kind == "numeric"]
        assert len(between) <= BATCH, f"alarm {alarm} waited behind {len(between)} numerics"
    return {"duplicated": len(duplicated), "dead": len(dead), "messages": len(got)}


@pytest.mark.parametrize(
    ("kind", "fault"),
    [
        pytest.param(k, f, id=f"{k}-{f}")
        for k in ("hl7", "fhir", "mqtt")
        for f in ("down", "slow", "errors")
    ],
)
async def test_an_hour_of_destination_fault_loses_nothing_and_drains(
    kind: str, fault: str, tmp_path: Path
) -> None:
    clock = ManualClock(start_wall=T0)
    async with RECEIVERS[kind](clock, tmp_path) as rx:
        with TwinStore(
            tmp_path / "twin.sqlite",
            KeyRing(generate_kek()),
            destinations=[Queue(rx.name, rx.carries)],
        ) as store:
            for bed in rx.beds:
                store.admit(bed, BEDS[bed], T0)
            drill = Drill(rx, store, clock)
            if isinstance(rx, MqttReceiver):
                drill.ward.on_minute = rx.at_minute
            await rx.proxy.up()
            task = asyncio.create_task(drill.worker.run())
            try:
                # The fault, for an hour of ward data.
                if fault == "down":
                    await rx.proxy.down()
                rx.inject(fault)
                await drill.run_until(lambda: not drill.ward.producing)
                during = dict(drill.worker.status.delivered)
                backlog = drill.pending()
                if fault == "down":
                    assert during == {} and drill.unreachable
                    assert any("cannot connect" in e for e in drill.errors)
                    assert sum(backlog.values()) == expected_rows(rx)
                elif fault == "slow":
                    assert any("within" in e for e in drill.errors), drill.errors
                    assert during.get("numeric", 0) > 0, drill.errors
                else:
                    assert drill.errors and during.get("numeric", 0) > 0

                # Recovery: the backlog drains, a new alarm overtakes what is still queued.
                rx.recover()
                if fault == "down":
                    await rx.proxy.up()
                # Only an outage is sure to leave a backlog of more than two batches.
                needs_probe = "alarm" in rx.carries and fault == "down"
                await drill.run_until(
                    lambda: (
                        not drill.pending()
                        and drill.worker.status.state == "idle"
                        and (drill.probe is not None or not needs_probe)
                    ),
                    probe="alarm" in rx.carries,
                )
                await rx.settle(drill.ward.confirmed)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await rx.proxy.down()
            rows = committed(store, rx.name)
            assert len(rows) == expected_rows(rx) + (drill.probe is not None)
            check(drill, fault, rows)
            assert drill.worker.conditions().keys() <= {"sync_dead_letters"}
            assert drill.worker.status.failures_in_a_row == 0
            if fault == "errors":
                assert drill.worker.status.dead_lettered > 0 or kind == "mqtt"
            if drill.probe is not None:
                # The probe went out before older numerics that were still queued.
                confirmed = drill.ward.confirmed
                at = next(n for n, i in enumerate(confirmed) if i.row_id == drill.probe
                          and i.kind == "alarm")  # fmt: skip
                older_after = [
                    i
                    for i in confirmed[at:]
                    if i.kind == "numeric" and i.t <= rows[("alarm", drill.probe)].t
                ]
                assert older_after, f"backlog of {drill.probe_backlog} was not draining"


async def test_an_hl7_message_resent_after_a_late_ack_keeps_its_control_id(
    tmp_path: Path,
) -> None:
    """Fault: the receiver stores a message but its ACK arrives after the gateway's timeout;
    more numerics are committed before the retry. Must: the resent observations travel
    under the MSH-10 they first had, so the receiver can drop them by id."""
    clock = ManualClock(start_wall=T0)
    with hl7_peer() as (peer, port):
        rx = Hl7Receiver(peer, port, clock)
        with TwinStore(
            tmp_path / "twin.sqlite",
            KeyRing(generate_kek()),
            destinations=[Queue(rx.name, rx.carries)],
        ) as store:
            store.admit("bed-1", BEDS["bed-1"], T0)
            drill = Drill(rx, store, clock)
            await rx.proxy.up()
            # The first ACK only comes past the 10 s timeout.
            rx.proxy.latency = itertools.chain([12.0], itertools.repeat(0.0))
            store.write(
                [("bed-1", Numeric("ox-1", SPO2, 90.0 + i, PERCENT, T0 + i)) for i in (1, 2)],
                T0 + 2,
            )
            task = asyncio.create_task(drill.worker.run())
            try:
                await drill.run_until(lambda: drill.worker.status.state == "backing_off")
                store.write(
                    [("bed-1", Numeric("ox-1", SPO2, 90.0 + i, PERCENT, T0 + i)) for i in (3, 4)],
                    T0 + 4,
                )
                await drill.run_until(lambda: not drill.pending())
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await rx.proxy.down()
            got = rx.got(committed(store, rx.name))
    first_row = [g.key for g in got if ("numeric", 1) in {k for k, _ in g.items}]
    assert len(first_row) == 2  # sent, ACKed late, sent again: at-least-once
    assert first_row[0] == first_row[1]


async def test_publishes_acknowledged_before_a_disconnect_count_as_delivered(
    tmp_path: Path,
) -> None:
    """Fault: the broker connection is cut after it acknowledged the first publish of a
    window. Must: that publish is accepted (not resent as if lost); the rest retried."""
    clock = ManualClock(start_wall=T0)
    async with mqtt_receiver(clock, tmp_path) as rx:
        await rx.proxy.up()
        rx.proxy.cut_after = 3  # CONNACK, the status PUBACK, the window's first PUBACK
        items = tuple(
            OutboxItem(
                n, "numeric", n, 0, T0, bed, 1, "ox-1/MDC_PULS_OXIM_SAT_O2", n, T0 + n,
                {"value": 90.0 + n, "unit": "%", "status": []},
            )
            for n, bed in enumerate(("bed-1", "bed-2", "bed-1"), start=1)
        )  # fmt: skip
        sending = asyncio.create_task(rx.destination.send(Batch(items)))
        for _ in range(2000):  # the broker and the hop work in real time
            if rx.proxy.cuts and clock.sleepers:
                break
            await asyncio.sleep(0.005)
        await clock.advance(TIMEOUT + 1)
        try:
            delivery = await sending
        except DestinationUnavailable:
            delivery = Delivery()
        await rx.destination.close()
        await rx.proxy.down()
    assert [i.row_id for i in delivery.accepted] == [1]
    assert [i.row_id for i in delivery.retry] == [2, 3]
