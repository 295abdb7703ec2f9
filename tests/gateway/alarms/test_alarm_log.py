"""The durable alarm log on a real encrypted SQLite store: every change, in order, with who,
value and limit; actions wait for their commit; a failing store is an alarm, nothing lost;
the log is exported with the bed's data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import Condition, DeviceEvent, Numeric
from gateway.alarms import service
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.model import GATEWAY, AlarmSettings
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.export import export
from gateway.twin.state import BedSpec, Twin
from gateway.twin.store import TwinStore
from gateway.twin.writer import StoreWriter

BED_OF = {"ox-1": "bed-1", "ecg-1": "bed-1"}


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = ManualClock()
        self.store = TwinStore(tmp_path / "twin.sqlite", KeyRing(generate_kek()))
        self.writer = StoreWriter(self.store, BED_OF.get, self.clock, data_dir=tmp_path)
        twin = Twin([BedSpec("bed-1", "Bed 1")], self.clock)
        self.engine, self.page = service.build(
            beds=[("bed-1", "adult", None)],
            settings=AlarmSettings(escalate_after=None),
            clock=self.clock,
            twin=twin,
            bed_of=BED_OF.get,
            writer=self.writer,
            pages=lambda: 0,
        )
        self.task = asyncio.create_task(self.engine.log.run())

    async def flushed(self) -> None:
        """Wait (bounded, real time: the commit runs in the writer's thread) for the log."""
        for _ in range(1000):
            if self.engine.log.backlog == 0:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("alarm log did not drain")

    async def rows(self, bed: str = "bed-1") -> list[dict[str, Any]]:
        store = self.store
        return await self.writer.call(lambda: list(store.rows("alarm", bed)))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await r.task
    r.store.close()


def spo2(engine: AlarmEngine, clock: ManualClock, value: float) -> None:
    engine.observe(Numeric("ox-1", codes.SPO2, value, codes.PERCENT, clock.wall()))


async def test_every_state_change_is_committed_with_who_value_and_limit(rig: Rig) -> None:
    engine, clock = rig.engine, rig.clock
    for _ in range(11):
        spo2(engine, clock, 87)
        await clock.advance(1)
        engine.tick()
    alarm = engine.bed_alarms("bed-1")[0]
    _, recorded = await engine.acknowledge(alarm["id"], "nurse-a")
    assert recorded is True  # committed before the acknowledgement was reported done
    audio, recorded = await engine.pause_audio("bed-1", "nurse-b", 60)
    assert recorded is True
    spo2(engine, clock, 97)
    await rig.flushed()
    rows = await rig.rows()
    changes = [(r["change"], r.get("state"), r["by"]) for r in rows]
    assert changes == [
        ("raised", "active", None),
        ("acknowledged", "acknowledged", "nurse-a"),
        ("paused", None, "nurse-b"),
        ("cleared", "cleared", None),
    ]
    raised = rows[0]
    assert raised["alarm"] == alarm["id"] and raised["stream"] == "ox-1"
    assert (raised["value"], raised["limit"], raised["unit"], raised["delay"]) == (87, 90, "%", 10)
    assert raised["t"] == alarm["since"]
    paused = rows[2]
    assert (paused["change"], paused["by"], paused["until"]) == (
        "paused",
        "nurse-b",
        audio["paused_until"],
    )
    assert paused["stream"] == "audio"
    # Actions are also in the audit trail.
    audit = await rig.writer.call(
        lambda: list(rig.store.db.query("SELECT actor, action, bed_id FROM audit_log ORDER BY id"))
    )
    assert [(a["actor"], a["action"]) for a in audit] == [
        ("nurse-a", "alarm.acknowledge"),
        ("nurse-b", "audio.pause"),
    ]


async def test_alarm_log_is_exported_with_the_beds_data(rig: Rig, tmp_path: Path) -> None:
    engine, clock = rig.engine, rig.clock
    engine.observe(DeviceEvent("ecg-1", Condition.ASYSTOLE, True, clock.wall()))
    engine.observe(DeviceEvent("ecg-1", Condition.ASYSTOLE, False, clock.wall()))
    await rig.flushed()
    out = tmp_path / "bed-1.json"
    report = await rig.writer.call(lambda: export(rig.store, "bed-1", "json", out))
    assert report.failures == []
    alarms = [r for r in json.loads(out.read_text()) if r["kind"] == "alarm"]
    assert [(r["condition"], r["change"], r["state"]) for r in alarms] == [
        ("asystole", "raised", "active"),
        ("asystole", "latched", "latched"),
    ]


async def test_limit_changes_are_audited_before_they_apply(rig: Rig) -> None:
    limits, recorded = await rig.engine.set_limits("bed-1", {"spo2": {"low": 92}}, "nurse-a")
    assert recorded is True and limits["limits"]["spo2"]["low"] == 92
    audit = await rig.writer.call(
        lambda: list(rig.store.db.query("SELECT actor, action, bed_id, detail FROM audit_log"))
    )
    assert audit == [
        {
            "actor": "nurse-a",
            "action": "limits.change",
            "bed_id": "bed-1",
            "detail": "spo2 low 90->92.0",
        }
    ]


async def test_a_failing_store_raises_an_alarm_and_loses_nothing(rig: Rig) -> None:
    engine, clock = rig.engine, rig.clock
    rig.store.close()  # every commit now fails, as with a dead disk
    engine.observe(DeviceEvent("ecg-1", Condition.VENTRICULAR_FIBRILLATION, True, clock.wall()))
    for _ in range(200):  # the commit fails in the writer thread; bounded wait for it
        if engine.log.failed_attempts:
            break
        await asyncio.sleep(0.005)
    failing = engine.bed_alarms(GATEWAY)
    assert [(a["condition"], a["priority"]) for a in failing] == [("alarm_log_failing", "high")]
    # The VF alarm is shown anyway, and can be acknowledged: recorded says it is not on disk.
    vf = engine.bed_alarms("bed-1")[0]
    assert vf["condition"] == "vf"
    ack = asyncio.create_task(engine.acknowledge(vf["id"], "nurse-a"))
    for _ in range(10):
        await clock.advance(1)
    _, recorded = await asyncio.wait_for(ack, 5)
    assert recorded is False
    assert engine.bed_alarms("bed-1")[0]["state"] == "acknowledged"
    assert engine.log.backlog >= 2  # both records kept for when the store recovers


async def test_records_queued_at_shutdown_are_committed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    engine, clock = rig.engine, rig.clock
    await asyncio.sleep(0)  # the log task is running, waiting for records
    engine.observe(DeviceEvent("ecg-1", Condition.ASYSTOLE, True, clock.wall()))
    engine.observe(DeviceEvent("ecg-1", Condition.ASYSTOLE, False, clock.wall()))
    assert engine.log.backlog == 2  # the log task has not had a turn since
    rig.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rig.task
    assert engine.log.backlog == 0
    assert [r["change"] for r in await rig.rows()] == ["raised", "latched"]
    rig.store.close()
