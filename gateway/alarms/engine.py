"""The alarm engine: conditions from readings, the twin and the gateway become alarms.

Conditions (what is wrong) come from four places:

* numerics, checked against the bed's :mod:`limits <gateway.alarms.limits>` (``spo2_low``,
  ``pulse_rate_extreme_high``, ...); a value that is missing, marked invalid or unavailable,
  or that the twin calls stale, meets no limit (its technical condition speaks instead);
* device events (:class:`~drivers.readings.DeviceEvent`): arrhythmias from the analysis and
  every technical condition of a device, rated by :mod:`gateway.alarms.rules`, never below
  the priority the device itself gives;
* the twin: a connected device that delivered nothing for ``stale_data_after`` seconds
  (``stale_data``);
* the gateway: store conditions (the writer's ``health()["conditions"]``), the alarm log
  failing, sync destinations (:meth:`AlarmEngine.sync_status`) and the self-check.

A condition must hold for its delay before it becomes an alarm; from then on the alarm
follows the state machine of :mod:`gateway.alarms.states`, and every change is written to
the durable log (:class:`~gateway.alarms.log.AlarmLog`). Raising never waits for the disk:
local alarms must not depend on it. User actions (acknowledge, audio pause, limit changes)
are applied once their record is committed, or after ``commit_timeout`` seconds without
(then reported ``recorded: false``; the record stays queued): an alarm must stay operable
when the disk is failing, and that failure is itself an alarm.

All times are the injected clock's: ``monotonic`` for delays and timeouts, ``wall`` (UTC
seconds) for what is shown and logged.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from drivers.clock import Clock
from drivers.readings import Condition, DeviceEvent, MeasurementStatus, Numeric, Priority, Reading
from gateway.alarms import rules as rules_
from gateway.alarms.forwarding import ForwardingWatch
from gateway.alarms.limits import METRIC_OF_REFID, METRICS, LimitError, Limits, apply_changes
from gateway.alarms.log import AlarmLog
from gateway.alarms.model import GATEWAY, AlarmSettings, Kind, Rule, highest, rank
from gateway.alarms.selfcheck import SelfCheck, SoundOutput
from gateway.alarms.states import (
    MAX_AUDIO_PAUSE,
    OPEN_STATES,
    SOUNDING_STATES,
    AlarmState,
    AudioState,
    AudioTrigger,
    Trigger,
    audio_step,
    step,
)
from gateway.twin.state import Link, Twin

log = structlog.get_logger(__name__)

#: Longest clock time between two evaluations (staleness, store, self-check are polled).
MAX_TICK = 0.5
#: Alarms kept in the recent history after they cleared.
RECENT = 500
_NOT_CURRENT = MeasurementStatus.INVALID | MeasurementStatus.UNAVAILABLE
#: Limit kinds: (field of Limits, a low limit?, priority, what a nurse reads).
_LIMIT_KINDS: tuple[tuple[str, bool, Priority, str], ...] = (
    ("extreme_low", True, Priority.HIGH, "extremely low"),
    ("low", True, Priority.MEDIUM, "low"),
    ("high", False, Priority.MEDIUM, "high"),
    ("extreme_high", False, Priority.HIGH, "extremely high"),
)
#: Per metric: (field, condition name, a low limit?, priority, label), built once.
_LIMIT_CONDITIONS = {
    m.name: tuple(
        (field_, f"{m.name}_{field_}", low, priority, f"{m.label} {words}")
        for field_, low, priority, words in _LIMIT_KINDS
    )
    for m in METRICS.values()
}
#: What a device says about itself, which its disconnection ends (not the disconnection).
_DEVICE_CONDITIONS = frozenset(c.value for c in Condition) - {Condition.DISCONNECTED.value}


class Auditor(Protocol):
    async def __call__(self, actor: str, action: str, bed_id: str | None, detail: str) -> bool:
        """Commit one audit entry; ``True`` once committed, ``False`` if it could not be."""
        ...


#: Saves a bed's changed limits durably; ``True`` once saved.
Persist = Callable[[str, Mapping[str, Limits]], Awaitable[bool]]


class UnknownAlarm(KeyError):
    pass


class UnknownBed(KeyError):
    pass


class AlarmFinished(ValueError):
    """The alarm already cleared: there is nothing left to act on."""


Key = tuple[str, str, str]  # (bed, source, condition)


@dataclass(slots=True)
class _Presence:
    """A condition that holds now (maybe not yet for its delay)."""

    rule: Rule
    priority: Priority
    since: float  # monotonic
    value: float | None = None
    limit: float | None = None
    unit: str | None = None
    refid: str | None = None  # for limit conditions: the metric, to follow its staleness


@dataclass(slots=True)
class Alarm:
    """One occurrence of a condition, from raise to clear (engine-owned, mutable)."""

    id: str
    bed: str
    source: str
    condition: str
    kind: Kind
    priority: Priority
    label: str
    delay: float
    since: float  # UTC seconds when raised
    raised: float  # monotonic
    state: AlarmState = AlarmState.ACTIVE
    value: float | None = None
    limit: float | None = None
    unit: str | None = None
    acknowledged_by: str | None = None
    escalated: bool = False
    changed: float = 0.0  # UTC seconds of the last state change

    @property
    def latching(self) -> bool:
        """IEC 60601-1-8: high-priority physiological alarm signals latch."""
        return self.kind is Kind.PHYSIOLOGICAL and self.priority is Priority.HIGH

    @property
    def message(self) -> str:
        if self.value is None:
            return f"{self.label}: {self.source}"
        unit = f" {self.unit}" if self.unit and self.unit != "1" else ""
        limit = "" if self.limit is None else f" (limit {self.limit:g}{unit})"
        return f"{self.label} {self.value:g}{unit}{limit}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bed": self.bed,
            "source": self.source,
            "condition": self.condition,
            "kind": self.kind.value,
            "priority": self.priority.value,
            "state": self.state.value,
            "since": self.since,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "message": self.message,
            "acknowledged_by": self.acknowledged_by,
            "escalated": self.escalated,
            "delay": self.delay,
        }


@dataclass(slots=True)
class _Audio:
    state: AudioState = AudioState.ON
    until: float = 0.0  # monotonic end of the pause
    by: str | None = None
    floor: Priority | None = None  # what was sounding when paused: only higher breaks through


@dataclass(slots=True)
class _Bed:
    id: str
    profile: str
    limits: dict[str, Limits]
    audio: _Audio = field(default_factory=_Audio)


class AlarmEngine:
    """Alarms of every bed. ``beds`` maps bed id -> (profile name, limits per metric)."""

    def __init__(
        self,
        beds: Mapping[str, tuple[str, Mapping[str, Limits]]],
        clock: Clock,
        *,
        bed_of: Callable[[str], str | None],
        settings: AlarmSettings | None = None,
        twin: Twin | None = None,
        alarm_log: AlarmLog | None = None,
        store_conditions: Callable[[], Mapping[str, str]] | None = None,
        auditor: Auditor | None = None,
        self_check: SelfCheck | None = None,
        sound: SoundOutput | None = None,
        page_version: Callable[[], int] | None = None,
        commit_timeout: float = 2.0,
        persist: Persist | None = None,
    ) -> None:
        self._clock = clock
        self._bed_of = bed_of
        self.settings = settings or AlarmSettings()
        self._rules = rules_.event_rules(dict(self.settings.priorities))
        self._twin = twin
        self.log = alarm_log or AlarmLog(None, clock)
        self._store_conditions = store_conditions
        self._auditor = auditor
        self.self_check = self_check
        self.sound = sound or SoundOutput("none")
        self._page_version = page_version
        self.commit_timeout = commit_timeout
        self._persist = persist
        self.beds: dict[str, _Bed] = {
            bed: _Bed(bed, prof, dict(lims)) for bed, (prof, lims) in beds.items()
        }
        self.beds[GATEWAY] = _Bed(GATEWAY, "", {})
        self._present: dict[Key, _Presence] = {}
        self._open: dict[Key, Alarm] = {}
        self._by_id: dict[str, Alarm] = {}
        self._recent: deque[Alarm] = deque(maxlen=RECENT)
        self._sync_down: dict[str, str] = {}
        self.forwarding = ForwardingWatch()
        self._limit_rules: dict[tuple[str, float], Rule] = {}
        # Ids must differ across restarts too (the log keeps them): count from the start
        # time in milliseconds.
        self._numbers = itertools.count(int(clock.wall() * 1000))
        self.version = 0
        self._changed = asyncio.Event()
        self._rearm = asyncio.Event()

    def set_page_version(self, page_version: Callable[[], int]) -> None:
        """What the page stream sends as its version (the self-check's heartbeats)."""
        self._page_version = page_version

    # -- inputs ----------------------------------------------------------------------------
    def observe(self, reading: Reading) -> None:
        """Take one reading from the hub (numerics and device events; others ignored)."""
        if isinstance(reading, Numeric):
            self._observe_numeric(reading)
        elif isinstance(reading, DeviceEvent):
            self._observe_event(reading)

    def _observe_numeric(self, n: Numeric) -> None:
        metric = METRIC_OF_REFID.get(n.code.refid)
        bed_id = self._bed_of(n.source)
        if metric is None or bed_id is None or bed_id not in self.beds:
            return
        limits = self.beds[bed_id].limits.get(metric.name)
        value = n.value
        usable = (
            limits is not None
            and value is not None
            and math.isfinite(value)
            # Flag arithmetic is slow: the common NONE needs none.
            and (n.status is MeasurementStatus.NONE or not (n.status & _NOT_CURRENT))
        )
        for field_, condition, low, priority, label in _LIMIT_CONDITIONS[metric.name]:
            key = (bed_id, n.source, condition)
            limit = getattr(limits, field_) if usable else None
            if (
                limit is not None
                and value is not None
                and (value < limit if low else value > limit)
            ):
                assert limits is not None
                rule = self._rule(condition, priority, limits.delay, label)
                self._hold(key, rule, priority, value=value, limit=limit, unit=metric.unit)
                self._present[key].refid = metric.refid
            elif key in self._present:
                self._release(key)

    def _rule(self, condition: str, priority: Priority, delay: float, label: str) -> Rule:
        rule = self._limit_rules.get((condition, delay))
        if rule is None:
            rule = Rule(Kind.PHYSIOLOGICAL, priority, delay, label)
            self._limit_rules[(condition, delay)] = rule
        return rule

    def _observe_event(self, e: DeviceEvent) -> None:
        bed_id = self._bed_of(e.source)
        if bed_id is None or bed_id not in self.beds:
            return
        if e.condition is Condition.DISCONNECTED and e.active:
            # The link ended: what the device said about its sensor no longer holds (the
            # twin clears them too); the disconnection alarm speaks for the device now.
            for key in [k for k in self._present if k[0] == bed_id and k[1] == e.source]:
                if key[2] in _DEVICE_CONDITIONS:
                    self._release(key)
        rule = self._rules.get(e.condition)
        if rule is None or rule.priority is None:
            return
        key = (bed_id, e.source, e.condition.value)
        if e.active:
            # A device's own rating is a floor: never lower than the pump says.
            priority = highest([rule.priority, e.priority]) or rule.priority
            self._hold(key, rule, priority)
        else:
            self._release(key)

    def sync_status(self, destination: str, reachable: bool, detail: str = "") -> None:
        """Hook for the sync layer: a destination is (un)reachable. An alarm follows once it
        stayed unreachable for ``sync_unreachable_after`` seconds."""
        key = (GATEWAY, f"sync:{destination}", rules_.SYNC_UNREACHABLE)
        if reachable:
            self._sync_down.pop(destination, None)
            self._release(key)
            return
        self._sync_down[destination] = detail
        base = rules_.GATEWAY_RULES[rules_.SYNC_UNREACHABLE]
        rule = Rule(base.kind, base.priority, self.settings.sync_unreachable_after, base.label)
        assert rule.priority is not None
        self._hold(key, rule, rule.priority)

    def sync_conditions(self, destination: str, present: Mapping[str, str]) -> None:
        """Hook for the sync layer: the conditions a destination's figures raise now (open
        dead letters, a backlog falling behind), by name; any not named are over."""
        for name in (rules_.SYNC_DEAD_LETTERS, rules_.SYNC_LAGGING):
            key = (GATEWAY, f"sync:{destination}", name)
            if name in present:
                rule = rules_.GATEWAY_RULES[name]
                assert rule.priority is not None
                self._hold(key, rule, rule.priority)
            else:
                self._release(key)

    def expect_forwarding(self, destinations: Mapping[str, float]) -> None:
        """High-priority alarms must be confirmed by each of ``destinations`` (name ->
        seconds allowed; see :mod:`gateway.alarms.forwarding`); empty: none are watched."""
        self.forwarding = ForwardingWatch(dict(destinations))

    def forwarded(self, destination: str, alarm_ids: Iterable[str]) -> None:
        """Hook for the sync layer: ``destination`` confirmed the log records of these
        alarms. Ends ``alarm_forwarding_failed`` at a bed once nothing there is late."""
        for alarm_id in alarm_ids:
            bed = self.forwarding.confirmed(alarm_id, destination)
            if bed is not None and not self.forwarding.overdue_at(bed):
                self._release((bed, "sync", rules_.ALARM_FORWARDING_FAILED))

    def _check_forwarding(self, now: float) -> None:
        for alarm_id, bed in self.forwarding.newly_overdue(now):
            log.error("high alarm not confirmed by any central system", alarm=alarm_id)
            rule = rules_.GATEWAY_RULES[rules_.ALARM_FORWARDING_FAILED]
            assert rule.priority is not None
            self._hold((bed, "sync", rules_.ALARM_FORWARDING_FAILED), rule, rule.priority)
            # The signal comes back on at the bedside: a pause must not hide an alarm
            # nobody else knows about.
            if self.beds[bed].audio.state is AudioState.PAUSED:
                self._audio(bed, AudioTrigger.BREAK_THROUGH, None)

    def log_trouble(self, detail: str | None) -> None:
        """The durable log cannot commit (``detail``) or commits again (``None``)."""
        self._gateway_condition("alarm-log", rules_.ALARM_LOG_FAILING, detail is not None)

    def confirm_page(self, seen: int, client: str) -> None:
        """A page confirmed it rendered the state of version ``seen`` (self-check)."""
        if self.self_check is not None:
            self.self_check.confirm(seen, client, self._clock.monotonic())
            self.tick()

    # -- condition bookkeeping -------------------------------------------------------------
    def _hold(
        self,
        key: Key,
        rule: Rule,
        priority: Priority,
        *,
        value: float | None = None,
        limit: float | None = None,
        unit: str | None = None,
    ) -> None:
        now = self._clock.monotonic()
        presence = self._present.get(key)
        if presence is None:
            presence = _Presence(rule, priority, now)
            self._present[key] = presence
            self._rearm.set()
        presence.rule, presence.value, presence.limit, presence.unit = rule, value, limit, unit
        presence.priority = priority
        alarm = self._open.get(key)
        if alarm is not None:
            changed = alarm.value != value
            alarm.value, alarm.limit = value, limit
            self._trigger(alarm, Trigger.CONDITION_ON)
            if changed:
                self._bump()
        elif now - presence.since >= rule.delay:
            self._raise(key, presence)

    def _release(self, key: Key) -> None:
        if self._present.pop(key, None) is None:
            return
        alarm = self._open.get(key)
        if alarm is not None:
            self._trigger(alarm, Trigger.CONDITION_OFF)

    def _gateway_condition(self, source: str, name: str, present: bool) -> None:
        key = (GATEWAY, source, name)
        if present:
            rule = rules_.GATEWAY_RULES.get(name, rules_.UNKNOWN_STORE_RULE)
            assert rule.priority is not None
            self._hold(key, rule, rule.priority)
        else:
            self._release(key)

    # -- transitions -----------------------------------------------------------------------
    def _raise(self, key: Key, p: _Presence) -> None:
        bed_id, source, condition = key
        now_wall = self._clock.wall()
        alarm = Alarm(
            id=f"{bed_id}:{source}:{condition}:{next(self._numbers)}",
            bed=bed_id,
            source=source,
            condition=condition,
            kind=p.rule.kind,
            priority=p.priority,
            label=p.rule.label,
            delay=p.rule.delay,
            since=now_wall,
            raised=self._clock.monotonic(),
            value=p.value,
            limit=p.limit,
            unit=p.unit,
            changed=now_wall,
        )
        self._open[key] = alarm
        self._by_id[alarm.id] = alarm
        log.warning(
            "alarm raised",
            alarm=alarm.id,
            priority=alarm.priority.value,
            kind=alarm.kind.value,
        )
        self._record(alarm, "raised")
        if alarm.priority is Priority.HIGH and bed_id != GATEWAY and source != "sync":
            # (A forwarding failure is not itself watched: it is about the destination.)
            self.forwarding.expect(alarm.id, bed_id, alarm.raised)
        self._break_through(alarm.bed, alarm.priority)
        self._bump()

    def _trigger(self, alarm: Alarm, trigger: Trigger, by: str | None = None) -> str | None:
        state, change = step(alarm.state, trigger, alarm.latching)
        if change is None and state is alarm.state:
            return None
        alarm.state = state
        alarm.changed = self._clock.wall()
        if trigger is Trigger.ACKNOWLEDGE:
            alarm.acknowledged_by = by
        if trigger is Trigger.ESCALATE:
            alarm.escalated = True
            alarm.priority = Priority.HIGH
        if state is AlarmState.CLEARED:
            key = (alarm.bed, alarm.source, alarm.condition)
            self._open.pop(key, None)
            self._by_id.pop(alarm.id, None)
            self._recent.appendleft(alarm)
        if change is not None and trigger is not Trigger.ACKNOWLEDGE:
            # Acknowledgements are recorded (and awaited) by acknowledge() itself.
            self._record(alarm, change, by)
            log.info("alarm " + change, alarm=alarm.id, state=state.value)
        if trigger is Trigger.ESCALATE:
            self._break_through(alarm.bed, alarm.priority)
            if alarm.bed != GATEWAY:
                self.forwarding.expect(alarm.id, alarm.bed, self._clock.monotonic())
        self._bump()
        return change

    def _break_through(self, bed_id: str, priority: Priority) -> None:
        audio = self.beds[bed_id].audio
        if audio.state is AudioState.PAUSED and rank(priority) > rank(audio.floor):
            self._audio(bed_id, AudioTrigger.BREAK_THROUGH, None)

    def _audio(self, bed_id: str, trigger: AudioTrigger, by: str | None) -> str | None:
        audio = self.beds[bed_id].audio
        state, change = audio_step(audio.state, trigger)
        audio.state = state
        if state is AudioState.ON:
            audio.by, audio.floor, audio.until = None, None, 0.0
        if change is not None and trigger is not AudioTrigger.PAUSE:
            self._record_audio(bed_id, change, by)
            log.info("audio " + change, bed=bed_id)
        self._bump()
        return change

    def _record(
        self, alarm: Alarm, change: str, by: str | None = None, state: AlarmState | None = None
    ) -> asyncio.Future[bool]:
        payload = {
            "alarm": alarm.id,
            "change": change,
            "condition": alarm.condition,
            "state": (state or alarm.state).value,
            "priority": alarm.priority.value,
            "alarm_kind": alarm.kind.value,
            "value": alarm.value,
            "limit": alarm.limit,
            "unit": alarm.unit,
            "delay": alarm.delay,
            "escalated": alarm.escalated,
            "by": by,
            "message": alarm.message,
        }
        return self.log.record(alarm.bed, alarm.source, payload, self._clock.wall())

    def _record_audio(
        self, bed_id: str, change: str, by: str | None, until: float | None = None
    ) -> asyncio.Future[bool]:
        payload = {"alarm": None, "change": change, "by": by, "until": until}
        return self.log.record(bed_id, "audio", payload, self._clock.wall())

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()

    # -- time ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Everything that happens because time passed; called at least every MAX_TICK."""
        now = self._clock.monotonic()
        self._poll_twin(now)
        self._poll_store()
        for key, presence in list(self._present.items()):
            if key not in self._open and now - presence.since >= presence.rule.delay:
                self._raise(key, presence)
        after = self.settings.escalate_after
        if after is not None:
            for alarm in list(self._open.values()):
                if (
                    alarm.state is AlarmState.ACTIVE
                    and alarm.priority is Priority.MEDIUM
                    and not alarm.escalated
                    and now - alarm.raised >= after
                ):
                    self._trigger(alarm, Trigger.ESCALATE)
        for bed in self.beds.values():
            if bed.audio.state is AudioState.PAUSED and now >= bed.audio.until:
                self._audio(bed.id, AudioTrigger.EXPIRE, None)
        self._check_forwarding(now)
        self._self_check(now)

    def next_deadline(self) -> float:
        """Monotonic time by which :meth:`tick` must run next."""
        now = self._clock.monotonic()
        deadline = now + MAX_TICK
        for key, p in self._present.items():
            if key not in self._open:
                deadline = min(deadline, p.since + p.rule.delay)
        after = self.settings.escalate_after
        for alarm in self._open.values():
            if (
                after is not None
                and alarm.state is AlarmState.ACTIVE
                and alarm.priority is Priority.MEDIUM
                and not alarm.escalated
            ):
                deadline = min(deadline, alarm.raised + after)
        for bed in self.beds.values():
            if bed.audio.state is AudioState.PAUSED:
                deadline = min(deadline, bed.audio.until)
        if self.self_check is not None:
            deadline = min(deadline, self.self_check.next_due)
        forwarding_due = self.forwarding.next_due()
        if forwarding_due is not None:
            deadline = min(deadline, forwarding_due)
        return max(deadline, now)

    def _poll_twin(self, now: float) -> None:
        twin = self._twin
        if twin is None:
            return
        for bed_id, source, condition in list(self._present):
            presence = self._present.get((bed_id, source, condition))
            if presence is None or presence.refid is None:
                continue
            bed = twin.beds.get(bed_id)
            vital = None if bed is None else bed.vitals.get(presence.refid)
            if bed is None or vital is None or vital.source != source:
                continue
            if twin.is_stale(bed, vital, now):
                self._release((bed_id, source, condition))
        for bed in twin.beds.values():
            if bed.id not in self.beds:
                continue
            for device in bed.devices.values():
                last = device.since if device.last_data is None else device.last_data
                # Connected but silent, or never connected at all (a link that neither
                # comes up nor fails must not leave a bed quiet).
                silent = (
                    device.link is Link.CONNECTED or device.link is Link.CONNECTING
                ) and now - max(last, device.since) > self.settings.stale_data_after
                key = (bed.id, device.id, rules_.STALE_DATA)
                if silent:
                    rule = rules_.GATEWAY_RULES[rules_.STALE_DATA]
                    assert rule.priority is not None
                    self._hold(key, rule, rule.priority)
                else:
                    self._release(key)

    def _poll_store(self) -> None:
        if self._store_conditions is None:
            return
        conditions = self._store_conditions()
        for name in conditions:
            self._gateway_condition("store", name, True)
        for key in [k for k in self._present if k[0] == GATEWAY and k[1] == "store"]:
            if key[2] not in conditions:
                self._release(key)

    def _self_check(self, now: float) -> None:
        check = self.self_check
        if check is None:
            return
        if check.due(now):
            self._bump()  # the heartbeat: a new version the page must see and confirm
            version = self._page_version() if self._page_version is not None else self.version
            check.issue(version, now)
            self.sound.repeat()
        failing = check.failing(now)
        self._gateway_condition("alarm-path", rules_.ALARM_PATH_FAILED, failing is not None)
        self.sound.set(failing is not None)

    # -- running ---------------------------------------------------------------------------
    async def consume(self, subscription: Any) -> None:
        """Observe every reading of a hub subscription, forever."""
        async for reading in subscription:
            self.observe(reading)

    async def run_timers(self) -> None:
        """Tick at every deadline (and at least every MAX_TICK), forever."""
        while True:
            self.tick()
            now = self._clock.monotonic()
            self._rearm.clear()
            sleeper = asyncio.ensure_future(self._clock.sleep(self.next_deadline() - now))
            waker = asyncio.ensure_future(self._rearm.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def wait_changed(self, seen_version: int) -> int:
        """Return the current version once it differs from ``seen_version``."""
        while self.version == seen_version:
            self._changed.clear()
            await self._changed.wait()
        return self.version

    # -- user actions ----------------------------------------------------------------------
    async def acknowledge(self, alarm_id: str, user: str) -> tuple[Alarm, bool]:
        """Acknowledge an open alarm as ``user``; returns it and whether it was recorded.

        Raises :class:`UnknownAlarm` or :class:`AlarmFinished` (already cleared).
        """
        alarm = self._by_id.get(alarm_id)
        if alarm is None:
            if any(a.id == alarm_id for a in self._recent):
                raise AlarmFinished(f"alarm {alarm_id} already cleared")
            raise UnknownAlarm(alarm_id)
        state, change = step(alarm.state, Trigger.ACKNOWLEDGE, alarm.latching)
        if change is None:
            return alarm, True  # already acknowledged: nothing to do or record
        done = self._record(alarm, change, user, state)  # what the alarm becomes
        recorded = await self.log.committed(done, within=self.commit_timeout)
        await self._audit(user, "alarm.acknowledge", alarm.bed, f"alarm {alarm.id}")
        # Meanwhile the alarm may have moved on (condition ended): the table takes it from
        # wherever it is now.
        self._trigger(alarm, Trigger.ACKNOWLEDGE, by=user)
        return alarm, recorded

    async def pause_audio(
        self, bed_id: str, user: str, seconds: float = MAX_AUDIO_PAUSE
    ) -> tuple[dict[str, Any], bool]:
        """Pause the bed's audio for ``seconds`` (0 < s <= 120), or end a pause (``0``)."""
        bed = self.beds.get(bed_id)
        if bed is None:
            raise UnknownBed(bed_id)
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_AUDIO_PAUSE):
            raise ValueError(f"seconds must be 0-{MAX_AUDIO_PAUSE:g} (0 ends a pause)")
        if seconds == 0:
            if bed.audio.state is AudioState.ON:
                return self.audio(bed_id), True
            done = self._record_audio(bed_id, "pause ended", user)
            recorded = await self.log.committed(done, within=self.commit_timeout)
            await self._audit(user, "audio.resume", bed_id, "")
            self._audio(bed_id, AudioTrigger.RESUME, user)
            return self.audio(bed_id), recorded
        until_wall = self._clock.wall() + seconds
        done = self._record_audio(bed_id, "paused", user, until_wall)
        recorded = await self.log.committed(done, within=self.commit_timeout)
        await self._audit(user, "audio.pause", bed_id, f"{seconds:g} s")
        floor = self._sounding(bed_id)
        self._audio(bed_id, AudioTrigger.PAUSE, user)
        audio = bed.audio
        audio.until = self._clock.monotonic() + seconds
        audio.by = user
        # Paused with nothing sounding (ahead of a procedure): only a high alarm breaks in.
        audio.floor = floor if floor is not None else Priority.MEDIUM
        self._rearm.set()
        return self.audio(bed_id), recorded

    def limits(self, bed_id: str) -> dict[str, Any]:
        bed = self.beds.get(bed_id)
        if bed is None or bed_id == GATEWAY:
            raise UnknownBed(bed_id)
        return {
            "bed": bed_id,
            "profile": bed.profile,
            "limits": {name: lim.as_dict() for name, lim in sorted(bed.limits.items())},
            "metrics": {
                m.name: {
                    "label": m.label,
                    "unit": m.unit,
                    "sane_low": m.sane_low,
                    "sane_high": m.sane_high,
                }
                for m in METRICS.values()
            },
        }

    async def set_limits(
        self, bed_id: str, changes: Mapping[str, Mapping[str, Any]], user: str
    ) -> tuple[dict[str, Any], bool]:
        """Change limits (all or nothing; :class:`LimitError` if not sane), audited and saved
        first (``recorded`` says both were done)."""
        bed = self.beds.get(bed_id)
        if bed is None or bed_id == GATEWAY:
            raise UnknownBed(bed_id)
        if not isinstance(changes, Mapping) or not changes:
            raise LimitError('expected {"<metric>": {"low": <number>, ...}, ...}')
        new = apply_changes(bed.limits, changes)
        detail = "; ".join(
            f"{name} {_diff(bed.limits.get(name), new[name])}"
            for name in sorted(changes)
            if bed.limits.get(name) != new[name]
        )
        recorded = await self._audit(user, "limits.change", bed_id, detail or "no change")
        if self._persist is not None:
            recorded = await self._persist(bed_id, new) and recorded
        bed.limits = new
        self._bump()
        return self.limits(bed_id), recorded

    async def _audit(self, actor: str, action: str, bed_id: str | None, detail: str) -> bool:
        if self._auditor is None:
            return False
        return await self._auditor(actor, action, bed_id, detail)

    # -- views -----------------------------------------------------------------------------
    def _sounding(self, bed_id: str) -> Priority | None:
        return highest(
            [
                a.priority
                for a in self._open.values()
                if a.bed == bed_id and a.state in SOUNDING_STATES
            ]
        )

    def bed_alarms(self, bed_id: str) -> list[dict[str, Any]]:
        """JSON of the bed's open alarms, highest priority first, then sounding, then oldest."""
        alarms = [a for a in self._open.values() if a.bed == bed_id]
        alarms.sort(
            key=lambda a: (-rank(a.priority), a.state not in SOUNDING_STATES, a.since, a.id)
        )
        return [a.as_json() for a in alarms]

    def audio(self, bed_id: str) -> dict[str, Any]:
        """What should sound at the bed now, and whether its audio is paused (until when)."""
        audio = self.beds[bed_id].audio
        if audio.state is AudioState.PAUSED:
            remaining = max(0.0, audio.until - self._clock.monotonic())
            return {
                "priority": None,
                "paused_until": self._clock.wall() + remaining,
                "paused_by": audio.by,
            }
        sounding = self._sounding(bed_id)
        return {
            "priority": None if sounding is None else sounding.value,
            "paused_until": None,
            "paused_by": None,
        }

    def decorate(self, beds: Iterable[dict[str, Any]]) -> None:
        """Add ``alarms`` and ``audio`` to each bed object of a twin snapshot."""
        for bed in beds:
            bed_id = bed["id"]
            if bed_id in self.beds:
                bed["alarms"] = self.bed_alarms(bed_id)
                bed["audio"] = self.audio(bed_id)

    def all_alarms(self, bed_id: str | None = None) -> list[dict[str, Any]]:
        """Open alarms (highest first) then recently cleared ones (newest first)."""
        open_ = sorted(
            (a for a in self._open.values() if bed_id is None or a.bed == bed_id),
            key=lambda a: (-rank(a.priority), a.since, a.id),
        )
        recent = [a for a in self._recent if bed_id is None or a.bed == bed_id]
        return [a.as_json() for a in (*open_, *recent)]

    def open_alarms(self) -> list[Alarm]:
        return [a for a in self._open.values() if a.state in OPEN_STATES]

    def health(self) -> dict[str, Any]:
        now = self._clock.monotonic()
        return {
            "open": len(self._open),
            "gateway_alarms": self.bed_alarms(GATEWAY),
            "log": {
                "committed": self.log.committed_count,
                "backlog": self.log.backlog,
                "failed_attempts": self.log.failed_attempts,
                "trouble": self.log.trouble,
            },
            "self_check": None if self.self_check is None else self.self_check.health(now),
            "sound": {"output": self.sound.spec, "on": self.sound.on},
            "sync_unreachable": dict(self._sync_down),
            "forwarding": self.forwarding.pending() if self.forwarding.active else None,
        }


def _diff(old: Limits | None, new: Limits) -> str:
    before = old.as_dict() if old is not None else {}
    parts = [
        f"{k} {before.get(k)!s}->{v!s}" for k, v in new.as_dict().items() if before.get(k) != v
    ]
    return ", ".join(parts)
