"""Storage faults under a running gateway: the page and alarms go on, the store says what is
wrong, and what could not be written is written once the disk is back.

Real gateway (ptys, Nonin and OpenBCI simulators, SQLite store, aiohttp page) on a
ManualClock. The read-only data directory is made with ``chattr +i`` (immutable database,
log and directory), which binds root too, unlike file modes: the tests run as root here.
The shared-memory index (``-shm``) is left writable: SQLite maps it, and an immutable mapped
file ends the process with SIGBUS, which no real read-only remount does to pages already
mapped. So this models "the directory and files refuse writes", not a kernel remount.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.reliability.live import LiveWard, config_text, running

SPO2 = "MDC_PULS_OXIM_SAT_O2"
ECG = """
[[beds]]
id = "bed-2"
  [[beds.devices]]
  id = "ecg-2"
  driver = "openbci-cyton"
  leads = { 1 = "I", 2 = "II", 3 = "III" }
  simulate = "normal"
"""
GATEWAY = "_gateway"


def fresh(bed: dict, code: str = SPO2) -> bool:  # type: ignore[type-arg]
    vital = bed["vitals"].get(code)
    return vital is not None and vital["value"] is not None and not vital["stale"]


async def page_stays_live(ward: LiveWard, seconds: float) -> None:
    """For ``seconds`` of clock time, the page answers and bed 1's SpO2 stays fresh."""
    end = ward.clock.monotonic() + seconds
    while ward.clock.monotonic() < end:
        beds = await ward.beds()
        assert fresh(beds["bed-1"]), beds["bed-1"]["vitals"]
        await ward.step(0.5)


async def store_condition(ward: LiveWard, condition: str, polls: int = 400) -> None:
    body = await ward.until_polled(
        "/api/alarms",
        lambda code, body: (
            code == 200
            and any(
                a["bed"] == GATEWAY and a["condition"] == condition and a["state"] == "active"
                for a in (body["alarms"] if isinstance(body, dict) else body)
            )
        ),
        polls,
    )
    assert body is not None


async def test_quota_reached_raises_a_store_alarm_and_live_data_goes_on(tmp_path: Path) -> None:
    # Fault: the store's quota (0.6 MB) is reached by 3-lead ECG waveforms (about 3 minutes).
    # Must happen: a store alarm on the gateway (store_space_low at a space check, or
    # store_full when a commit is refused first), the oldest waveforms evicted,
    # the file's data never above the quota, SpO2 fresh on the page throughout, numerics
    # still committed.
    quota = int(0.6 * 1024 * 1024)
    text = config_text(extra="\n[store]\nquota_mb = 0.6\nmin_free_mb = 0\n", beds=ECG)
    async with running(tmp_path, text) as ward:
        await ward.until(lambda b: fresh(b["bed-1"]), 20)
        writer = ward.gateway.writer
        assert writer is not None
        seen_alarm = False
        stored_at_alarm = 0
        for _ in range(84):  # seven simulated minutes, 5 s at a time
            await page_stays_live(ward, 5)
            await asyncio.sleep(0.01)  # the writer's thread: real time to commit
            _, body = await ward.get_json("/api/alarms")  # open and recently cleared
            listed = body["alarms"] if isinstance(body, dict) else body
            if any(a["condition"] in ("store_space_low", "store_full") for a in listed):
                if not seen_alarm:
                    stored_at_alarm = writer.stored_by_device.get("ox-1", 0)
                seen_alarm = True
            assert await writer.call(writer.store.used_bytes) <= quota
        assert seen_alarm, f"quota reached without a store alarm: {writer.health()}"
        assert writer.stats.evicted_blocks > 0
        assert writer.stored_by_device.get("ox-1", 0) > stored_at_alarm


@contextlib.contextmanager
def immutable(directory: Path) -> Iterator[None]:
    names = [p for p in directory.iterdir() if not p.name.endswith("-shm")] + [directory]
    subprocess.run(["chattr", "+i", *map(str, names)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, names)], check=True)


def stored_spo2_times(db: Path) -> list[float]:
    """Times of the committed SpO2 numerics of ox-1 (index columns are not encrypted)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT n.t FROM numerics n JOIN streams s ON s.id = n.stream_id "
            "WHERE s.name = ? ORDER BY n.t",
            (f"ox-1/{SPO2}",),
        ).fetchall()
    return [r[0] for r in rows]


async def test_read_only_data_directory_alarms_then_writes_everything_when_back(
    tmp_path: Path,
) -> None:
    # Fault: the data directory and the database refuse writes for 20 s of clock time.
    # Must happen: store_failing on the gateway; the page and live values go on; when
    # writes are allowed again the condition clears and the readings from the read-only
    # period are committed (kept in the writer's backlog, not lost).
    async with running(tmp_path, config_text()) as ward:
        await ward.until(lambda b: fresh(b["bed-1"]), 20)
        writer = ward.gateway.writer
        assert writer is not None
        data = tmp_path / "state"
        with immutable(data):
            refused_from = ward.clock.wall()
            await store_condition(ward, "store_failing")
            await page_stays_live(ward, 20)
            refused_until = ward.clock.wall()
            assert writer.stats.failed_commits > 0
        await ward.until_polled(
            "/api/alarms",
            lambda c, body: (
                not any(
                    a["condition"] == "store_failing" and a["state"] == "active"
                    for a in (body["alarms"] if isinstance(body, dict) else body)
                )
            ),
        )
        await ward.until_polled("/api/health", lambda c, _: not writer._backlog)
        times = [t for t in stored_spo2_times(data / "twin.sqlite") if t >= refused_from]
        # SpO2 is a step function in the store (a change or a heartbeat is written): the
        # read-only period must be covered by committed rows, not a hole.
        assert times and times[0] <= refused_from + 5 and times[-1] >= refused_until - 5


async def test_database_deleted_while_running_raises_a_store_alarm(tmp_path: Path) -> None:
    # Fault: someone deletes twin.sqlite (and its log) under the running gateway.
    # Must happen: a store alarm on the gateway (what is written now would be lost at the
    # next start), the page and live values go on, no crash.
    async with running(tmp_path, config_text()) as ward:
        await ward.until(lambda b: fresh(b["bed-1"]), 20)
        db = tmp_path / "state" / "twin.sqlite"
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for _ in range(70):  # past the writer's 30 s space check
            await ward.step(0.5)
        await store_condition(ward, "store_file_lost")
        await page_stays_live(ward, 10)
        assert all(h["state"] != "failed" for h in (await ward.get_json("/api/health"))[1]["tasks"])
