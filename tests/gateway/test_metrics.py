"""GET /metrics on a running simulated ward: Prometheus text that a real parser reads."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drivers.clock import ManualClock
from gateway.health import LoopLag, verdict
from gateway.metrics import StoreFigures, _Snapshot
from tests.integration.test_ward import fresh
from tests.support.ops_ward import OpsWard, running_ward

SPO2 = "MDC_PULS_OXIM_SAT_O2"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as {(name, sorted labels): value}, through prometheus-client's parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def device(name: str, dev: str, bed: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted({"bed": bed, "device": dev, "driver": "nonin"}.items())))


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[OpsWard]:
    async with running_ward(tmp_path) as ward:
        yield ward


async def scrape(ward: OpsWard) -> Samples:
    status, content_type, text = await ward.get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")  # the exposition format
    return parse(text)


async def test_metrics_follow_the_ward(ward: OpsWard) -> None:
    # Row counts are table scans, read at most every 5 min; here every scrape, so the
    # second one sees what was committed after the first (which may precede any commit).
    ward.gateway.metrics.rows_refresh = 0.0
    await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
    first = await scrape(ward)
    for _ in range(9):
        await ward.step()
    second = await scrape(ward)

    ox1 = device("bedside_device_frames_decoded_total", "ox-1", "bed-1")
    assert 0 < first[ox1] < second[ox1]  # the counter moves with the device's frames
    assert second[device("bedside_device_bytes_dropped_total", "ox-1", "bed-1")] == 0
    assert second[device("bedside_device_connected", "ox-1", "bed-1")] == 1
    age = second[device("bedside_device_last_reading_age_seconds", "ox-1", "bed-1")]
    assert 0 <= age < 1.0  # a Nonin packet every 1/3 s

    # The missing port: down, retried by the supervisor, never any data.
    assert second[device("bedside_device_connected", "ox-missing", "bed-2")] == 0
    assert second[device("bedside_device_reconnects_total", "ox-missing", "bed-2")] >= 1
    assert second[device("bedside_device_frames_decoded_total", "ox-missing", "bed-2")] == 0
    missing_age = device("bedside_device_last_reading_age_seconds", "ox-missing", "bed-2")
    assert missing_age not in second

    # The store: commits counted after they happen, sizes read from SQLite itself.
    assert value(second, "bedside_store_commits_total") > value(
        first, "bedside_store_commits_total"
    )
    assert value(second, "bedside_store_figures_ok") == 1
    assert value(second, "bedside_store_used_bytes") > 0
    assert value(second, "bedside_store_rows", table="numerics") > 0
    assert value(second, "bedside_store_commit_seconds", quantile="0.99") >= value(
        second, "bedside_store_commit_seconds", quantile="0.5"
    )
    assert value(second, "bedside_hub_published_total") > value(
        first, "bedside_hub_published_total"
    )

    assert value(second, "bedside_healthy") == 1
    assert value(second, "bedside_event_loop_lag_seconds") == 0.0  # ManualClock: never late
    assert value(second, "bedside_gateway_info", gateway="ward-ops", version="0.1.0") == 1
    assert value(second, "bedside_task_running", task="store") == 1

    if value(second, "bedside_alarm_engine_present") == 1:
        # The missing oximeter is a (technical) alarm at bed 2.
        active = {
            p: value(second, "bedside_alarms_active", priority=p) for p in ("high", "medium", "low")
        }
        assert sum(active.values()) >= 1


async def test_metrics_show_a_failing_store(ward: OpsWard) -> None:
    await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
    other = sqlite3.connect(ward.gateway.config.store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        await ward.until_polled(
            "/healthz", lambda code, body: code == 503 and not body["checks"]["store"]["ok"]
        )
        samples = await scrape(ward)
        assert value(samples, "bedside_healthy") == 0
        assert value(samples, "bedside_health_check_ok", check="store") == 0
        assert value(samples, "bedside_health_check_ok", check="loop") == 1
    finally:
        other.execute("ROLLBACK")
        other.close()


def _render(health: dict[str, Any], beds: list[dict[str, Any]]) -> Samples:
    loop = LoopLag(ManualClock())
    registry = CollectorRegistry(auto_describe=False)
    result = verdict(health, beds, lag=0.0)
    registry.register(_Snapshot(health, beds, result, loop, StoreFigures()))
    return parse(generate_latest(registry).decode())


def test_active_alarms_are_counted_by_priority_across_beds_and_the_gateway() -> None:
    beds = [
        {"id": "bed-1", "devices": [], "alarms": [{"priority": "high"}, {"priority": "low"}]},
        {"id": "bed-2", "devices": [], "alarms": [{"priority": "high"}]},
    ]
    health = {"alarms": {"open": 4, "gateway_alarms": [{"priority": "medium"}]}}
    samples = _render(health, beds)
    assert value(samples, "bedside_alarm_engine_present") == 1
    counts = {
        p: value(samples, "bedside_alarms_active", priority=p) for p in ("high", "medium", "low")
    }
    assert counts == {"high": 2, "medium": 1, "low": 1}


def test_without_an_alarm_engine_or_store_the_metrics_still_render() -> None:
    samples = _render({"gateway": "g", "version": "1", "store": None}, [])
    assert value(samples, "bedside_alarm_engine_present") == 0
    assert not any(name == "bedside_alarms_active" for name, _ in samples)
    assert value(samples, "bedside_store_present") == 0
    assert value(samples, "bedside_healthy") == 0  # no store: not healthy


def test_sync_backlog_per_destination_and_kind() -> None:
    health = {
        "sync": [
            {"name": "his", "backlog": {"alarm": 2, "numeric": 40}},
            {"name": "cloud", "backlog": {}},
        ]
    }
    samples = _render(health, [])
    assert value(samples, "bedside_sync_backlog", destination="his", kind="alarm") == 2
    assert value(samples, "bedside_sync_backlog", destination="his", kind="numeric") == 40
