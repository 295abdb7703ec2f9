"""The alarm engine on a ManualClock: delays, latching, acknowledge, pause, break-through,
escalation, clearing, technical and gateway conditions, the self-check."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    MeasurementStatus,
    Numeric,
    Priority,
)
from gateway.alarms.engine import AlarmEngine, AlarmFinished, UnknownAlarm, UnknownBed
from gateway.alarms.limits import LimitError, profile
from gateway.alarms.model import GATEWAY, AlarmSettings
from gateway.alarms.selfcheck import SelfCheck, SoundOutput
from gateway.alarms.service import PageVersion
from gateway.twin.state import BedSpec, Twin

BED_OF = {"ox-1": "bed-1", "ecg-1": "bed-1", "pump-1": "bed-1", "ox-2": "bed-2"}


def make(clock: ManualClock, **kwargs: Any) -> AlarmEngine:
    beds = {"bed-1": ("adult", profile("adult")), "bed-2": ("adult", profile("adult"))}
    return AlarmEngine(beds, clock, bed_of=BED_OF.get, **kwargs)


def spo2(clock: ManualClock, value: float | None, source: str = "ox-1", **kw: Any) -> Numeric:
    return Numeric(source, codes.SPO2, value, codes.PERCENT, clock.wall(), **kw)


def event(
    clock: ManualClock,
    condition: Condition,
    active: bool = True,
    source: str = "ecg-1",
    priority: Priority | None = None,
) -> DeviceEvent:
    return DeviceEvent(source, condition, active, clock.wall(), priority=priority)


async def hold(engine: AlarmEngine, clock: ManualClock, seconds: float, reading: Any) -> None:
    """Feed ``reading`` once a second for ``seconds`` of clock time, ticking as the loop would."""
    for _ in range(int(seconds)):
        engine.observe(reading)
        await clock.advance(1.0)
        engine.tick()


def only(engine: AlarmEngine, bed: str = "bed-1") -> dict[str, Any]:
    alarms = engine.bed_alarms(bed)
    assert len(alarms) == 1, alarms
    return alarms[0]


async def test_limit_alarm_waits_for_its_delay_then_discloses_it() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(spo2(clock, 88))
    await clock.advance(9.9)
    engine.tick()
    assert engine.bed_alarms("bed-1") == []
    assert engine.audio("bed-1")["priority"] is None
    await clock.advance(0.1)
    engine.tick()
    alarm = only(engine)
    assert alarm["condition"] == "spo2_low"
    assert (alarm["kind"], alarm["priority"], alarm["state"]) == (
        "physiological",
        "medium",
        "active",
    )
    assert (alarm["value"], alarm["limit"], alarm["unit"], alarm["delay"]) == (88, 90, "%", 10)
    assert alarm["since"] == clock.wall()
    assert alarm["message"] == "SpO2 low 88 % (limit 90 %)"
    assert alarm["id"].startswith("bed-1:ox-1:spo2_low:")
    assert engine.audio("bed-1") == {"priority": "medium", "paused_until": None, "paused_by": None}
    assert engine.bed_alarms("bed-2") == []


async def test_a_condition_shorter_than_its_delay_never_alarms() -> None:
    clock = ManualClock()
    engine = make(clock)
    await hold(engine, clock, 8, spo2(clock, 87))
    engine.observe(spo2(clock, 95))
    await clock.advance(30)
    engine.tick()
    assert engine.all_alarms() == []


async def test_medium_physiological_alarm_clears_with_its_condition() -> None:
    clock = ManualClock()
    engine = make(clock)
    await hold(engine, clock, 11, spo2(clock, 87))
    alarm_id = only(engine)["id"]
    engine.observe(spo2(clock, 96))
    assert engine.bed_alarms("bed-1") == []
    assert engine.all_alarms()[0]["id"] == alarm_id
    assert engine.all_alarms()[0]["state"] == "cleared"
    # The next occurrence is a new alarm.
    await hold(engine, clock, 11, spo2(clock, 87))
    assert only(engine)["id"] != alarm_id


async def test_value_follows_the_patient_while_the_alarm_is_open() -> None:
    clock = ManualClock()
    engine = make(clock)
    await hold(engine, clock, 11, spo2(clock, 88))
    version = engine.version
    engine.observe(spo2(clock, 86))
    assert only(engine)["value"] == 86
    assert engine.version > version  # the page re-renders


async def test_extreme_limit_is_high_priority_and_latches_until_acknowledged() -> None:
    clock = ManualClock()
    engine = make(clock)
    await hold(engine, clock, 11, spo2(clock, 75))
    by_condition = {a["condition"]: a for a in engine.bed_alarms("bed-1")}
    assert by_condition["spo2_extreme_low"]["priority"] == "high"
    assert engine.bed_alarms("bed-1")[0]["condition"] == "spo2_extreme_low"  # highest first
    engine.observe(spo2(clock, 97))
    # The medium one cleared, the high one latched and still sounds.
    latched = only(engine)
    assert (latched["condition"], latched["state"]) == ("spo2_extreme_low", "latched")
    assert engine.audio("bed-1")["priority"] == "high"
    alarm, recorded = await engine.acknowledge(latched["id"], "nurse-a")
    assert recorded is False  # no store in this test
    assert alarm.state.value == "cleared" and alarm.acknowledged_by == "nurse-a"
    assert engine.bed_alarms("bed-1") == []
    assert engine.audio("bed-1")["priority"] is None


async def test_arrhythmia_latches_and_comes_back_if_it_recurs_before_acknowledge() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(event(clock, Condition.VENTRICULAR_FIBRILLATION))
    vf = only(engine)
    assert (vf["kind"], vf["priority"], vf["delay"]) == ("physiological", "high", 0.0)
    engine.observe(event(clock, Condition.VENTRICULAR_FIBRILLATION, active=False))
    assert only(engine)["state"] == "latched"
    engine.observe(event(clock, Condition.VENTRICULAR_FIBRILLATION))
    again = only(engine)
    assert (again["id"], again["state"]) == (vf["id"], "active")


async def test_acknowledged_alarm_is_silent_shown_and_clears_with_its_condition() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(event(clock, Condition.ASYSTOLE))
    alarm_id = only(engine)["id"]
    await engine.acknowledge(alarm_id, "nurse-a")
    shown = only(engine)
    assert (shown["state"], shown["acknowledged_by"]) == ("acknowledged", "nurse-a")
    assert engine.audio("bed-1")["priority"] is None
    # Acknowledging twice changes nothing.
    alarm, _ = await engine.acknowledge(alarm_id, "nurse-b")
    assert alarm.acknowledged_by == "nurse-a"
    engine.observe(event(clock, Condition.ASYSTOLE, active=False))
    assert engine.bed_alarms("bed-1") == []  # acknowledged: no latching
    with pytest.raises(AlarmFinished):
        await engine.acknowledge(alarm_id, "nurse-a")
    with pytest.raises(UnknownAlarm):
        await engine.acknowledge("bed-1:ecg-1:asystole:0", "nurse-a")


async def test_audio_pause_counts_down_and_expires() -> None:
    clock = ManualClock()
    engine = make(clock, settings=AlarmSettings(escalate_after=None))
    await hold(engine, clock, 11, spo2(clock, 88))
    audio, _ = await engine.pause_audio("bed-1", "nurse-a", 120)
    assert audio == {"priority": None, "paused_until": clock.wall() + 120, "paused_by": "nurse-a"}
    assert only(engine)["state"] == "active"  # pausing audio is not acknowledging
    await clock.advance(119.5)
    engine.tick()
    assert engine.audio("bed-1")["paused_until"] == pytest.approx(clock.wall() + 0.5)
    await clock.advance(0.5)
    engine.tick()
    assert engine.audio("bed-1") == {"priority": "medium", "paused_until": None, "paused_by": None}


async def test_audio_pause_is_at_most_120_s_and_can_be_ended() -> None:
    clock = ManualClock()
    engine = make(clock)
    with pytest.raises(ValueError, match="0-120"):
        await engine.pause_audio("bed-1", "nurse-a", 121)
    with pytest.raises(UnknownBed):
        await engine.pause_audio("bed-9", "nurse-a", 60)
    await engine.pause_audio("bed-1", "nurse-a", 60)
    audio, _ = await engine.pause_audio("bed-1", "nurse-b", 0)
    assert audio["paused_until"] is None


async def test_a_higher_priority_condition_breaks_through_a_pause() -> None:
    clock = ManualClock()
    engine = make(clock)
    await hold(engine, clock, 11, spo2(clock, 88))  # medium sounding
    await engine.pause_audio("bed-1", "nurse-a", 120)
    # Another medium condition does not break through ...
    engine.observe(event(clock, Condition.ATRIAL_FIBRILLATION))
    assert engine.audio("bed-1")["paused_until"] is not None
    # ... pausing one bed leaves the others sounding ...
    await hold(engine, clock, 11, spo2(clock, 88, source="ox-2"))
    assert engine.audio("bed-2")["priority"] == "medium"
    # ... a high one does, and sounds at once.
    engine.observe(event(clock, Condition.VENTRICULAR_TACHYCARDIA))
    assert engine.audio("bed-1") == {"priority": "high", "paused_until": None, "paused_by": None}


async def test_pause_ahead_of_a_procedure_only_lets_high_through() -> None:
    clock = ManualClock()
    engine = make(clock)
    await engine.pause_audio("bed-1", "nurse-a", 120)
    engine.observe(event(clock, Condition.SENSOR_OFF, source="ox-1"))
    await clock.advance(5)
    engine.tick()
    assert only(engine)["condition"] == "sensor_off"
    assert engine.audio("bed-1")["priority"] is None
    engine.observe(event(clock, Condition.ASYSTOLE))
    assert engine.audio("bed-1")["priority"] == "high"


async def test_unacknowledged_medium_alarm_escalates_and_breaks_through() -> None:
    clock = ManualClock()
    engine = make(clock, settings=AlarmSettings(escalate_after=60.0))
    await hold(engine, clock, 11, spo2(clock, 88))
    await engine.pause_audio("bed-1", "nurse-a", 120)
    await hold(engine, clock, 58, spo2(clock, 88))  # raised 59 s ago
    assert only(engine)["escalated"] is False
    await hold(engine, clock, 1, spo2(clock, 88))
    alarm = only(engine)
    assert (alarm["priority"], alarm["escalated"]) == ("high", True)
    assert engine.audio("bed-1")["priority"] == "high"  # the pause gave way


async def test_acknowledged_or_disabled_escalation_does_not_escalate() -> None:
    clock = ManualClock()
    engine = make(clock, settings=AlarmSettings(escalate_after=60.0))
    await hold(engine, clock, 11, spo2(clock, 88))
    await engine.acknowledge(only(engine)["id"], "nurse-a")
    await hold(engine, clock, 120, spo2(clock, 88))
    assert only(engine)["priority"] == "medium"
    never = make(clock, settings=AlarmSettings(escalate_after=None))
    await hold(never, clock, 300, spo2(clock, 88))
    assert only(never)["escalated"] is False


async def test_unusable_values_meet_no_limit() -> None:
    clock = ManualClock()
    engine = make(clock)
    await hold(engine, clock, 11, spo2(clock, 88))
    engine.observe(spo2(clock, None, status=MeasurementStatus.UNAVAILABLE))
    assert engine.bed_alarms("bed-1") == []
    await hold(engine, clock, 20, spo2(clock, 70, status=MeasurementStatus.INVALID))
    await hold(engine, clock, 20, spo2(clock, float("nan")))
    assert engine.bed_alarms("bed-1") == []


async def test_technical_conditions_wait_their_delay_and_end_with_the_link() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(event(clock, Condition.SENSOR_OFF, source="ox-1"))
    await clock.advance(4.9)
    engine.tick()
    assert engine.bed_alarms("bed-1") == []
    await clock.advance(0.1)
    engine.tick()
    alarm = only(engine)
    assert (alarm["kind"], alarm["priority"], alarm["condition"]) == (
        "technical",
        "medium",
        "sensor_off",
    )
    assert alarm["message"] == "Probe off: ox-1"
    engine.observe(event(clock, Condition.DISCONNECTED, source="ox-1"))
    assert engine.bed_alarms("bed-1") == []  # the link ended the sensor condition
    # A retry that reports the link still down does not restart the disconnection's delay.
    await clock.advance(2)
    engine.observe(event(clock, Condition.DISCONNECTED, source="ox-1"))
    await clock.advance(1)
    engine.tick()
    assert only(engine)["condition"] == "disconnected"
    engine.observe(event(clock, Condition.DISCONNECTED, active=False, source="ox-1"))
    assert engine.bed_alarms("bed-1") == []


async def test_a_device_rating_is_a_floor() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(event(clock, Condition.NEAR_EMPTY, source="pump-1", priority=Priority.HIGH))
    assert only(engine)["priority"] == "high"
    engine.observe(event(clock, Condition.DOOR_OPEN, source="pump-1", priority=Priority.LOW))
    door = [a for a in engine.bed_alarms("bed-1") if a["condition"] == "door_open"]
    assert door[0]["priority"] == "medium"


async def test_configured_priorities_rate_other_arrhythmias() -> None:
    clock = ManualClock()
    engine = make(clock, settings=AlarmSettings(priorities=(("afib", "off"), ("pause", "high"))))
    engine.observe(event(clock, Condition.ATRIAL_FIBRILLATION))
    assert engine.bed_alarms("bed-1") == []
    engine.observe(event(clock, Condition.PAUSE))
    assert only(engine)["priority"] == "high"


async def test_stale_vitals_end_limit_conditions_and_silent_devices_alarm() -> None:
    clock = ManualClock()
    twin = Twin([BedSpec("bed-1", "Bed 1"), BedSpec("bed-2", "Bed 2")], clock, stale_after=5.0)
    twin.register_device("bed-1", "ox-1", "nonin", CodecCounters())
    engine = make(clock, twin=twin, settings=AlarmSettings(stale_data_after=30.0))
    twin.apply(event(clock, Condition.DISCONNECTED, active=False, source="ox-1"))
    for _ in range(11):
        reading = spo2(clock, 88)
        twin.apply(reading)
        engine.observe(reading)
        await clock.advance(1)
        engine.tick()
    assert only(engine)["condition"] == "spo2_low"
    await clock.advance(5.5)  # nothing new: the twin calls the value stale
    engine.tick()
    assert engine.bed_alarms("bed-1") == []
    await clock.advance(23)
    engine.tick()
    assert engine.bed_alarms("bed-1") == []
    await clock.advance(1)  # 30.5 s without data from a connected device
    engine.tick()
    stale = only(engine)
    assert (stale["condition"], stale["kind"], stale["source"]) == (
        "stale_data",
        "technical",
        "ox-1",
    )
    twin.apply(spo2(clock, 97))
    engine.tick()
    assert engine.bed_alarms("bed-1") == []


async def test_a_device_that_never_connects_is_not_silent() -> None:
    clock = ManualClock()
    twin = Twin([BedSpec("bed-1", "Bed 1")], clock)
    twin.register_device("bed-1", "ox-1", "nonin", CodecCounters())  # stays "connecting"
    engine = make(clock, twin=twin, settings=AlarmSettings(stale_data_after=30.0))
    await clock.advance(30)
    engine.tick()
    assert engine.bed_alarms("bed-1") == []
    await clock.advance(0.5)
    engine.tick()
    assert only(engine)["condition"] == "stale_data"


async def test_store_and_sync_trouble_are_gateway_alarms() -> None:
    clock = ManualClock()
    conditions: dict[str, str] = {}
    engine = make(
        clock,
        store_conditions=lambda: conditions,
        settings=AlarmSettings(sync_unreachable_after=60.0),
    )
    conditions["store_full"] = "refused"
    engine.tick()
    alarm = only(engine, GATEWAY)
    assert (alarm["condition"], alarm["kind"], alarm["bed"]) == ("store_full", "technical", GATEWAY)
    del conditions["store_full"]
    engine.tick()
    assert engine.bed_alarms(GATEWAY) == []
    engine.sync_status("central-hl7", reachable=False, detail="connection refused")
    await clock.advance(59)
    engine.tick()
    assert engine.bed_alarms(GATEWAY) == []
    await clock.advance(1)
    engine.tick()
    sync = only(engine, GATEWAY)
    assert (sync["condition"], sync["source"]) == ("sync_unreachable", "sync:central-hl7")
    assert engine.health()["sync_unreachable"] == {"central-hl7": "connection refused"}
    engine.sync_status("central-hl7", reachable=True)
    assert engine.bed_alarms(GATEWAY) == []


async def test_refused_and_lagging_sync_are_low_gateway_alarms_until_over() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.sync_conditions("hie", {"sync_dead_letters": "2 refused", "sync_lagging": "20 min"})
    engine.tick()
    found = {(a["condition"], a["source"], a["priority"]) for a in engine.bed_alarms(GATEWAY)}
    assert found == {
        ("sync_dead_letters", "sync:hie", "low"),
        ("sync_lagging", "sync:hie", "low"),
    }
    engine.sync_conditions("hie", {"sync_lagging": "16 min"})  # letters reviewed
    engine.tick()
    assert [a["condition"] for a in engine.bed_alarms(GATEWAY)] == ["sync_lagging"]
    engine.sync_conditions("other", {})  # another destination's report ends nothing here
    engine.sync_conditions("hie", {})
    engine.tick()
    assert engine.bed_alarms(GATEWAY) == []


async def test_self_check_raises_a_local_alarm_when_no_page_confirms() -> None:
    clock = ManualClock()
    pages = [1]
    bell = io.StringIO()
    check = SelfCheck(clock, interval=2.0, timeout=5.0, clients=lambda: pages[0])
    engine = make(clock, self_check=check, sound=SoundOutput("bell", stream=bell))
    for _ in range(3):  # a page that confirms what it was sent keeps the path healthy
        engine.tick()
        engine.confirm_page(engine.version, "page-1")
        await clock.advance(2)
    engine.tick()
    assert engine.bed_alarms(GATEWAY) == []
    await clock.advance(2)
    engine.tick()
    await clock.advance(2)
    engine.tick()
    assert engine.bed_alarms(GATEWAY) == []  # 4 s unconfirmed: not yet
    await clock.advance(1.5)
    engine.tick()
    alarm = only(engine, GATEWAY)
    assert (alarm["condition"], alarm["priority"]) == ("alarm_path_failed", "high")
    assert engine.sound.on and bell.getvalue().startswith("\a")
    assert engine.health()["self_check"]["failing"].startswith("no page confirmed")
    engine.confirm_page(engine.version, "page-1")
    assert engine.bed_alarms(GATEWAY) == []
    assert not engine.sound.on


async def test_self_check_is_quiet_without_pages_unless_one_is_expected() -> None:
    clock = ManualClock()
    check = SelfCheck(clock, interval=2.0, timeout=5.0, clients=lambda: 0)
    engine = make(clock, self_check=check)
    for _ in range(10):
        await clock.advance(2)
        engine.tick()
    assert engine.bed_alarms(GATEWAY) == []
    expected = SelfCheck(clock, interval=2.0, timeout=5.0, expect_page=True, clients=lambda: 0)
    engine = make(clock, self_check=expected)
    for _ in range(4):
        await clock.advance(2)
        engine.tick()
    assert only(engine, GATEWAY)["condition"] == "alarm_path_failed"


async def test_sound_command_is_run_on_start_and_stop(tmp_path: Any) -> None:
    marker = tmp_path / "buzzer.log"
    script = tmp_path / "buzzer.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {marker}\n')
    script.chmod(0o755)
    sound = SoundOutput(str(script))
    sound.set(True)
    sound.set(True)  # already on: not run again
    sound.set(False)
    for _ in range(500):  # bounded wait for the child processes
        if marker.exists() and marker.read_text().split() == ["start", "stop"]:
            break
        await asyncio.sleep(0.01)
    assert sorted(marker.read_text().split()) == ["start", "stop"]


async def test_limit_changes_are_checked_and_take_effect() -> None:
    clock = ManualClock()
    engine = make(clock)
    with pytest.raises(LimitError, match="sane range"):
        await engine.set_limits("bed-1", {"spo2": {"low": 30}}, "nurse-a")
    with pytest.raises(LimitError, match="below"):
        await engine.set_limits("bed-1", {"spo2": {"low": 95, "extreme_low": 96}}, "nurse-a")
    with pytest.raises(LimitError, match="unknown metric"):
        await engine.set_limits("bed-1", {"glucose": {"low": 3}}, "nurse-a")
    assert engine.limits("bed-1")["limits"]["spo2"]["low"] == 90  # nothing applied
    limits, _ = await engine.set_limits("bed-1", {"spo2": {"low": 93, "delay": 5}}, "nurse-a")
    assert limits["limits"]["spo2"] == {
        "low": 93.0,
        "high": None,
        "extreme_low": 80,
        "extreme_high": None,
        "delay": 5.0,
    }
    await hold(engine, clock, 5, spo2(clock, 92))
    alarm = only(engine)
    assert (alarm["limit"], alarm["delay"]) == (93, 5)
    assert engine.limits("bed-2")["limits"]["spo2"]["low"] == 90  # per bed


async def test_timer_task_raises_without_new_readings() -> None:
    clock = ManualClock()
    engine = make(clock)
    task = asyncio.create_task(engine.run_timers())
    try:
        await asyncio.sleep(0)
        engine.observe(spo2(clock, 88))  # one reading, then the device says nothing new
        await clock.advance(9.9)
        assert engine.bed_alarms("bed-1") == []
        await clock.advance(0.1)
        assert only(engine)["condition"] == "spo2_low"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_page_version_changes_with_the_twin_and_with_alarms() -> None:
    clock = ManualClock()
    twin = Twin([BedSpec("bed-1", "Bed 1")], clock)
    twin.register_device("bed-1", "ecg-1", "ecg", CodecCounters())
    engine = make(clock)
    page = PageVersion(twin, lambda: engine.version, engine.wait_changed)
    seen = page.version()
    waiter = asyncio.create_task(page.wait_changed(seen))
    await asyncio.sleep(0)
    assert not waiter.done()
    engine.observe(event(clock, Condition.ASYSTOLE))  # an alarm, nothing new in the twin
    assert await asyncio.wait_for(waiter, 1) > seen
    seen = page.version()
    waiter = asyncio.create_task(page.wait_changed(seen))
    await asyncio.sleep(0)
    twin.apply(event(clock, Condition.LEAD_OFF))
    assert await asyncio.wait_for(waiter, 1) > seen


async def test_decorate_adds_alarms_and_audio_to_every_bed() -> None:
    clock = ManualClock()
    engine = make(clock)
    engine.observe(event(clock, Condition.ASYSTOLE))
    beds = [{"id": "bed-1"}, {"id": "bed-2"}]
    engine.decorate(beds)
    assert [a["condition"] for a in beds[0]["alarms"]] == ["asystole"]
    assert beds[0]["audio"]["priority"] == "high"
    assert beds[1]["alarms"] == [] and beds[1]["audio"]["priority"] is None
