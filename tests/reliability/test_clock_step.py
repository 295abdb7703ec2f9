"""The system clock stepped by an hour (NTP correction, a wrong RTC at boot) under a ward.

Fault: the wall clock (UTC) jumps back or forward by 3600 s while the monotonic clock runs
on, during an SpO2-low condition's 10 s alarm delay.

Must happen: the alarm rises after its delay in monotonic time (not at once after a forward
step, not an hour late after a backward one); live values stay fresh (staleness is judged
on the monotonic clock); the store keeps storing, with each record's UTC time as the
system gave it and sequence numbers still strictly increasing (no row lost or duplicated);
and the store says where the clock jumped (a ``clock_steps`` row: the step and the last
numerics row committed before it), so the stepped records are flagged.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from pathlib import Path

import pytest

from drivers.clock import ManualClock
from tests.reliability.live import config_text, running

SPO2 = "MDC_PULS_OXIM_SAT_O2"
LOW = ("bed-1", "ox-1", "spo2_low")
DELAY = 10.0  # the SpO2 limit alarm delay, seconds


class SteppedClock(ManualClock):
    """A ManualClock whose wall time can be stepped without moving monotonic time."""

    def __init__(self) -> None:
        super().__init__()
        self.step_offset = 0.0

    def wall(self) -> float:
        return super().wall() + self.step_offset


def fresh(bed: dict) -> bool:  # type: ignore[type-arg]
    vital = bed["vitals"].get(SPO2)
    return bool(vital and vital["value"] is not None and not vital["stale"])


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
async def test_wall_clock_step_does_not_move_alarm_timing(tmp_path: Path, step: float) -> None:
    clock = SteppedClock()
    # SpO2 ~97 % against a low limit of 99 %: the condition holds from the first value.
    extra = "\n[beds.alarms]\nlimits = { spo2 = { low = 99 } }\n"
    text = config_text().replace('id = "bed-1"\n', 'id = "bed-1"\n' + extra, 1)
    async with running(tmp_path, text, clock) as ward:
        await ward.until(lambda b: fresh(b["bed-1"]), 20)
        began = clock.monotonic()
        wall_before = clock.wall()
        clock.step_offset = step
        # The delay is still running: no alarm one monotonic second later ...
        await ward.step(1.0)
        assert LOW not in await ward.alarms()
        beds = await ward.beds()
        assert fresh(beds["bed-1"]), "a wall-clock step made live values stale"
        # ... and the alarm rises once DELAY monotonic seconds have passed.
        while LOW not in await ward.alarms():
            assert clock.monotonic() - began <= DELAY + 2, "alarm late after a clock step"
            await ward.step(1 / 3)
        assert clock.monotonic() - began >= DELAY - 1
        for _ in range(60):  # 20 s more of data after the step
            await ward.step(1 / 3)
        writer = ward.gateway.writer
        assert writer is not None
        await ward.until_polled("/api/health", lambda c, _: not writer._backlog)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "twin.sqlite")) as conn:
        rows = conn.execute(
            "SELECT n.seq, n.t FROM numerics n JOIN streams s ON s.id = n.stream_id "
            "WHERE s.name = ? ORDER BY n.id",
            (f"ox-1/{SPO2}",),
        ).fetchall()
        steps = conn.execute("SELECT seq_at, step_s FROM clock_steps").fetchall()
        stamped_before_flag = conn.execute(
            "SELECT COUNT(*) FROM numerics WHERE id <= ? AND abs(t - ?) < 60",
            (steps[0][0], wall_before + step),
        ).fetchone()[0]
    seqs = [seq for seq, _ in rows]
    assert all(b > a for a, b in itertools.pairwise(seqs)), "sequence repeated"
    stepped = [t for _, t in rows if abs(t - (wall_before + step)) < 60]
    assert stepped, "no record stored with the stepped UTC time"
    assert len(steps) == 1 and steps[0][1] == pytest.approx(step, abs=2.0)
    # The flag comes before every row stamped by the stepped clock (rows read before the
    # step but committed after it may follow the flag with the old time).
    assert stamped_before_flag == 0
