"""GET /healthz on a running simulated ward, and the verdict behind it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import SystemClock
from gateway.health import LAG_LIMIT, LoopLag, device_reason, key_status, verdict
from tests.integration.test_ward import fresh
from tests.support.ops_ward import OpsWard, running_ward

SPO2 = "MDC_PULS_OXIM_SAT_O2"


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[OpsWard]:
    async with running_ward(tmp_path) as ward:
        yield ward


async def test_healthy_ward_answers_200_and_names_the_unplugged_device(ward: OpsWard) -> None:
    await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
    status, body = await ward.get_json("/healthz")
    assert status == 200, body
    assert body["status"] == "ok" and body["reasons"] == []
    checks = body["checks"]
    assert checks["loop"]["ok"] and checks["store"]["ok"] and checks["alarm_path"]["ok"]
    # The store really commits: the detail counts commits.
    assert "commits" in checks["store"]["detail"]
    # A missing port is the bed's technical problem, not the gateway's: listed, not failing.
    devices = {d["id"]: d["reason"] for d in body["devices"]}
    assert set(devices) == {"ox-missing"}
    assert "no such device" in devices["ox-missing"]
    assert body["gateway"] == "ward-ops"


async def test_locked_store_fails_healthz_with_the_reason_and_recovers(ward: OpsWard) -> None:
    await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
    # Real contention: another connection holds SQLite's write lock (as a stuck backup tool
    # or a hung second process would), so the writer's commits fail after its busy timeout.
    other = sqlite3.connect(ward.gateway.config.store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        body = await ward.until_polled(
            "/healthz", lambda code, body: code == 503 and not body["checks"]["store"]["ok"]
        )
        assert body["status"] == "failing"
        assert body["checks"]["loop"]["ok"] is True
        store_reason = next(r for r in body["reasons"] if r.startswith("store: "))
        assert "locked" in store_reason
        # The alarm log commits through the same store, so the alarm path fails with it (an
        # alarm engine is wired in) and says why.
        if not body["checks"]["alarm_path"]["ok"]:
            assert "alarm_log_failing" in body["checks"]["alarm_path"]["detail"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    body = await ward.until_polled("/healthz", lambda code, _body: code == 200)
    assert body["checks"]["store"]["ok"] is True and body["reasons"] == []


async def test_late_loop_fails_healthz(ward: OpsWard) -> None:
    await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
    # What the monitor records when the loop overslept (measured for real below).
    ward.gateway.loop_lag.note(LAG_LIMIT + 0.5, ward.clock.monotonic())
    status, body = await ward.get_json("/healthz")
    assert status == 503
    assert body["reasons"] == [f"loop: event loop {LAG_LIMIT + 0.5:.3f} s late (limit 1 s)"]
    # The next on-time tick clears it.
    await ward.step(1.0)
    status, body = await ward.get_json("/healthz")
    assert status == 200, body


async def test_loop_monitor_measures_a_blocked_loop() -> None:
    monitor = LoopLag(SystemClock(), interval=0.01)
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0)  # the monitor starts its 10 ms sleep
        # Deliberately block the loop: the monitor cannot wake before this returns, so it
        # is late by at least 0.2 - 0.01 s (a lower bound the OS guarantees, not a timing).
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop is the point
        for _ in range(1000):
            if monitor.ticks:
                break
            await asyncio.sleep(0.001)
        assert monitor.ticks >= 1
        assert monitor.lag >= 0.19 and monitor.max_lag >= monitor.lag
    finally:
        task.cancel()


def _health(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "gateway": "g",
        "version": "1",
        "tasks": [
            {"name": "twin", "essential": True, "state": "running"},
            {"name": "web", "essential": True, "state": "running"},
            {"name": "store", "essential": False, "state": "running", "last_error": ""},
        ],
        "store": {"conditions": {}, "commits": 3, "backlog": 0},
    }
    base.update(overrides)
    return base


def test_verdict_fails_on_a_dead_essential_task_or_no_store() -> None:
    ok = verdict(_health(), [], lag=0.0, silent_for=0.1)
    assert ok.healthy and not ok.degraded
    tasks = _health()["tasks"]
    tasks[1]["state"] = "stopped"
    dead = verdict(_health(tasks=tasks), [], lag=0.0)
    assert not dead.healthy and dead.reasons == ["loop: essential task(s) not running: web"]
    assert verdict(_health(store=None), []).reasons == [
        "store: no store: readings are not being kept"
    ]


def test_verdict_store_writer_crash_and_warnings() -> None:
    tasks = _health()["tasks"]
    tasks[2].update(state="backing_off", last_error="OperationalError: database is locked")
    crashed = verdict(_health(tasks=tasks), [])
    assert crashed.reasons == [
        "store: store writer restarting after an error: OperationalError: database is locked"
    ]
    low = verdict(_health(store={"conditions": {"store_space_low": "5 bytes short"}}), [])
    assert low.healthy and low.degraded
    assert low.store.warnings == ("store_space_low: 5 bytes short",)
    # A database deleted under the running gateway takes commits nobody will see again.
    lost = verdict(_health(store={"conditions": {"store_file_lost": "twin.sqlite deleted"}}), [])
    assert not lost.healthy


def test_verdict_alarm_path() -> None:
    fine = {"open": 2, "gateway_alarms": [], "log": {"trouble": None}, "self_check": None}
    assert verdict(_health(alarms=fine), []).healthy
    broken = {
        "open": 1,
        "gateway_alarms": [{"condition": "alarm_path_failed", "priority": "high"}],
        "log": {"trouble": "disk I/O error"},
        "self_check": {"failing": "no page confirmed a heartbeat for 6.0 s"},
    }
    result = verdict(_health(alarms=broken), [])
    assert not result.healthy
    assert result.reasons == [
        "alarm path: alarm_path_failed; alarm log: disk I/O error; "
        "self-check: no page confirmed a heartbeat for 6.0 s"
    ]
    # A sync destination being down is an alarm, not a broken alarm path.
    other = {**fine, "gateway_alarms": [{"condition": "sync_unreachable", "priority": "low"}]}
    assert verdict(_health(alarms=other), []).healthy


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (
            {
                "state": "disconnected",
                "last_error": "DeviceUnavailable: cannot open serial port /dev/ttyUSB0: "
                "permission denied (the service user needs access, e.g. the dialout group)",
            },
            "disconnected: DeviceUnavailable: cannot open serial port /dev/ttyUSB0: "
            "permission denied (the service user needs access, e.g. the dialout group)",
        ),
        (
            {"state": "connected", "conditions": ["no_data"], "last_data_age": 12.4},
            "no answer: connected but no data for 12 s (device off, wrong baud rate or cable)",
        ),
        (
            {"state": "connected", "conditions": [], "checksum_errors": 7},
            "7 checksum errors (wrong baud rate or data format, a long or damaged cable, "
            "interference)",
        ),
        (
            {"state": "connected", "conditions": ["sensor_off"]},
            "technical condition: sensor_off",
        ),
        ({"state": "connected", "conditions": [], "checksum_errors": 0}, None),
    ],
)
def test_device_reasons_are_in_a_technicians_words(
    device: dict[str, Any], expected: str | None
) -> None:
    assert device_reason(device) == expected


def test_key_status_names_the_source_and_an_interrupted_rotation(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "kek"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "bedside-gateway-kek").write_text("sealed by systemd, opened for the service\n")
    by_credential = key_status(
        key_file, "bedside-gateway-kek", {"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert by_credential == {
        "source": "systemd credential bedside-gateway-kek",
        "rotation_pending": False,
    }
    key_file.parent.mkdir()
    (key_file.parent / "kek.new").write_text("")
    by_file = key_status(key_file, "bedside-gateway-kek", {})
    assert by_file == {"source": f"key file {key_file}", "rotation_pending": True}
    store = {"conditions": {}, "commits": 1, "backlog": 0}
    pending = verdict(_health(store=store, key=by_file), [])
    assert pending.healthy and pending.degraded
    assert pending.store.warnings == (
        "a key rotation was interrupted; finish it with: bedside-gateway keys rotate",
    )
