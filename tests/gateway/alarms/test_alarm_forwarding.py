"""Confirmed forwarding: a high-priority alarm a central system does not confirm in time
brings the signal back on at the bedside and says why; confirmation ends that."""

from __future__ import annotations

from typing import Any

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import Condition, DeviceEvent, Numeric
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.forwarding import ForwardingWatch
from gateway.alarms.limits import profile

BED_OF = {"ox-1": "bed-1", "ecg-1": "bed-1", "ox-2": "bed-2"}


def make(clock: ManualClock, within: float | None = 30.0) -> AlarmEngine:
    beds = {"bed-1": ("adult", profile("adult")), "bed-2": ("adult", profile("adult"))}
    engine = AlarmEngine(beds, clock, bed_of=BED_OF.get)
    engine.expect_forwarding({} if within is None else {"hie": within, "backup": within + 10})
    return engine


def asystole(clock: ManualClock, active: bool = True) -> DeviceEvent:
    return DeviceEvent("ecg-1", Condition.ASYSTOLE, active, clock.wall())


async def step(engine: AlarmEngine, clock: ManualClock, seconds: float) -> None:
    await clock.advance(seconds)
    engine.tick()


def conditions(engine: AlarmEngine, bed: str = "bed-1") -> dict[str, dict[str, Any]]:
    return {a["condition"]: a for a in engine.bed_alarms(bed)}


async def test_confirmed_in_time_raises_nothing_more() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(asystole(clock))
    alarm = conditions(engine)["asystole"]
    assert engine.health()["forwarding"] == {"awaiting": 1, "overdue": 0}
    await step(engine, clock, 20)
    engine.forwarded("hie", [alarm["id"]])
    assert engine.health()["forwarding"] == {"awaiting": 1, "overdue": 0}  # backup has not
    engine.forwarded("backup", [alarm["id"]])
    await step(engine, clock, 60)
    assert set(conditions(engine)) == {"asystole"}
    assert engine.health()["forwarding"] == {"awaiting": 0, "overdue": 0}


async def test_unconfirmed_high_alarm_comes_back_on_and_says_forwarding_failed() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(asystole(clock))
    alarm = conditions(engine)["asystole"]
    await engine.acknowledge(alarm["id"], "rn-kim")
    await engine.pause_audio("bed-1", "rn-kim", 120)
    assert engine.audio("bed-1")["paused_until"] is not None
    await step(engine, clock, 29.5)
    assert "alarm_forwarding_failed" not in conditions(engine)
    await step(engine, clock, 0.5)
    failed = conditions(engine)["alarm_forwarding_failed"]
    assert (failed["priority"], failed["kind"]) == ("high", "technical")
    # The bedside signal is back: the pause ended and a high alarm sounds.
    assert engine.audio("bed-1") == {"priority": "high", "paused_until": None, "paused_by": None}
    assert engine.health()["forwarding"] == {"awaiting": 0, "overdue": 1}
    # The destination comes back and confirms: the technical condition ends.
    engine.forwarded("hie", [alarm["id"]])
    engine.forwarded("backup", [alarm["id"]])
    await step(engine, clock, 1)
    assert engine.health()["forwarding"] == {"awaiting": 0, "overdue": 0}
    assert "alarm_forwarding_failed" not in conditions(engine)  # technical: no latching


async def test_medium_alarms_and_beds_without_forwarding_are_not_watched() -> None:
    clock = ManualClock()
    engine = make(clock)
    for _ in range(12):
        engine.observe(Numeric("ox-2", codes.SPO2, 88.0, codes.PERCENT, clock.wall()))
        await step(engine, clock, 1)
    assert conditions(engine, "bed-2")["spo2_low"]["priority"] == "medium"
    await step(engine, clock, 60)
    assert "alarm_forwarding_failed" not in conditions(engine, "bed-2")

    quiet = make(ManualClock(), within=None)
    quiet.observe(asystole(clock))
    assert quiet.health()["forwarding"] is None


async def test_an_escalated_alarm_must_be_confirmed_too() -> None:
    clock = ManualClock()
    engine = make(clock, within=10.0)
    for _ in range(12):
        engine.observe(Numeric("ox-1", codes.SPO2, 88.0, codes.PERCENT, clock.wall()))
        await step(engine, clock, 1)
    assert conditions(engine)["spo2_low"]["priority"] == "medium"
    for _ in range(140):
        engine.observe(Numeric("ox-1", codes.SPO2, 88.0, codes.PERCENT, clock.wall()))
        await step(engine, clock, 1)
    assert conditions(engine)["spo2_low"]["escalated"] is True
    assert "alarm_forwarding_failed" in conditions(engine)


def test_the_watch_reports_lateness_once() -> None:
    watch = ForwardingWatch({"hie": 10.0})
    watch.expect("a", "bed-1", 100.0)
    watch.expect("a", "bed-1", 105.0)  # expected once: the first deadline holds
    assert watch.next_due() == 110.0
    assert watch.newly_overdue(109.9) == []
    assert watch.newly_overdue(110.0) == [("a", "bed-1")]
    assert watch.newly_overdue(200.0) == []
    assert watch.overdue_at("bed-1") == 1 and watch.next_due() is None
    assert watch.confirmed("a", "other") is None  # not one it waits for
    assert watch.confirmed("a", "hie") == "bed-1" and watch.confirmed("a", "hie") is None
