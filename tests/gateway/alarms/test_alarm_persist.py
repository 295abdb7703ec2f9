"""Bedside limit changes survive a restart, unless the configuration changed since."""

from __future__ import annotations

from pathlib import Path

from drivers.clock import ManualClock
from gateway.alarms import service
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.limits import Limits, profile
from gateway.alarms.model import AlarmSettings
from gateway.twin.state import BedSpec, Twin


def start(path: Path, bed1: dict[str, Limits] | None = None) -> AlarmEngine:
    clock = ManualClock()
    engine, _ = service.build(
        beds=[("bed-1", "adult", bed1), ("bed-2", "adult", None)],
        settings=AlarmSettings(),
        clock=clock,
        twin=Twin([BedSpec("bed-1", ""), BedSpec("bed-2", "")], clock),
        bed_of=lambda _: None,
        writer=None,
        pages=lambda: 0,
        limit_file=path,
    )
    return engine


async def test_changed_limits_come_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alarm-limits.json"
    engine = start(path)
    _, recorded = await engine.set_limits("bed-1", {"spo2": {"low": 93}}, "nurse-a")
    assert recorded is False  # saved, but no store for the audit entry in this test
    assert path.exists()
    again = start(path)
    assert again.limits("bed-1")["limits"]["spo2"]["low"] == 93
    assert again.limits("bed-2")["limits"]["spo2"]["low"] == 90


async def test_a_changed_configuration_wins_over_a_saved_change(tmp_path: Path) -> None:
    path = tmp_path / "alarm-limits.json"
    engine = start(path)
    await engine.set_limits("bed-1", {"spo2": {"low": 93}}, "nurse-a")
    configured = dict(profile("adult"))
    configured["spo2"] = Limits(low=88, extreme_low=80)
    again = start(path, configured)
    assert again.limits("bed-1")["limits"]["spo2"]["low"] == 88


async def test_a_damaged_or_insane_file_is_never_used(tmp_path: Path) -> None:
    path = tmp_path / "alarm-limits.json"
    path.write_text("{not json")
    assert start(path).limits("bed-1")["limits"]["spo2"]["low"] == 90
    engine = start(path)
    await engine.set_limits("bed-1", {"spo2": {"low": 93}}, "nurse-a")
    path.write_text(path.read_text().replace('"low": 93.0', '"low": 3.0'))
    assert start(path).limits("bed-1")["limits"]["spo2"]["low"] == 90
