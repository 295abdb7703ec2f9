"""Crash safety of the twin store: SIGKILL at random moments loses nothing acknowledged.

``store_crash_child.py`` ingests at full rate and prints a line after each committed
transaction. The test reads a random number of those lines, kills the process with SIGKILL
(whatever it is doing: encoding, sealing, inside a transaction, folding a block, fsyncing an
alarm), and checks the file the process left behind: ``PRAGMA integrity_check`` is ``ok``
and every reading the process acknowledged is there. It then restarts the process on the
same file (WAL recovery, staged chunks reloaded, waveform continued) and kills it again.

The checks after each kill run on a byte copy of the files (database and WAL), so the
restarted process meets exactly the state the kill left, hot WAL included; the last state is
also checked in place. The seed fixes the kill points (in acknowledgements, not in time).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.twin.crypto import KeyRing, create_key_file
from gateway.twin.store import KIND_PRIORITY, Destination, TwinStore
from tests.gateway.twin import store_crash_child as child

CHILD = Path(child.__file__).resolve()
REPO = Path(__file__).resolve().parents[3]
KILLS = 24
SEED = 0x7B1D
NL = b"\n"
LINE_TIMEOUT = 60.0  # seconds; a bound on a hang, never a wait for time to pass


@dataclass
class Acknowledged:
    """Everything the children printed, i.e. everything that must be in the file."""

    numerics: dict[int, list[tuple[int, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # generation -> (stream, t, value)
    events: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    alarms: list[str] = field(default_factory=list)
    wave_end: int = 0  # samples 0 .. wave_end - 1 acknowledged

    def add(self, generation: int, line: dict[str, object]) -> None:
        if "alarm" in line:
            self.alarms.append(str(line["alarm"]))
            return
        for stream, t, value in line["num"]:  # type: ignore[attr-defined]
            self.numerics[generation].append((int(stream), float(t), float(value)))
        if line["event"] is not None:
            self.events[generation].append(str(line["event"]))
        self.wave_end = max(self.wave_end, int(line["wave"]))  # type: ignore[call-overload]


def run_and_kill(store: Path, key_file: Path, generation: int, n: int, log: Path) -> list[bytes]:
    """Start the child, read ``n`` acknowledgement lines, SIGKILL it; return every complete
    line it printed before dying (those read and those still in the pipe)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(store), str(key_file), str(generation)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
            env=env,
        )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    try:
        deadline = time.monotonic() + LINE_TIMEOUT
        while buf.count(NL) < n:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child printed {buf.count(NL)} of {n} lines in time"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"child exited before the kill:\n{log.read_text()}"
                buf += chunk
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=LINE_TIMEOUT)
        while chunk := os.read(fd, 65536):  # what it printed between our read and the kill
            buf += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    return buf.split(NL)[:-1]  # the last piece is empty or a line cut by the kill


def snapshot(store: Path, into: Path) -> Path:
    """Byte copy of the database and its WAL as the kill left them."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir()
    copy = into / store.name
    shutil.copyfile(store, copy)
    wal = store.with_name(store.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    return copy


def integrity(path: Path) -> list[tuple[str, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def check_acknowledged(
    path: Path, ring: KeyRing, acked: Acknowledged, generations: range
) -> tuple[int, int]:
    """Assert everything acknowledged is in the store at ``path``; returns (staged chunks
    found, waveform samples stored). Folds staged chunks into blocks (so use a copy)."""
    with TwinStore(
        path, ring, destinations=[Destination("central", frozenset(KIND_PRIORITY))]
    ) as store:
        assert store.integrity() == "ok"
        conn = store.db.conn
        # Every row has its outbox row: written in the same transaction, or not at all.
        for kind in ("numeric", "event", "alarm", "waveform"):
            table = {
                "numeric": "numerics",
                "event": "device_events",
                "alarm": "alarm_log",
                "waveform": "waveform_blocks",
            }[kind]
            orphans = conn.execute(
                f"SELECT COUNT(*) FROM {table} r WHERE NOT EXISTS (SELECT 1 FROM outbox o "
                "WHERE o.kind = ? AND o.row_id = r.id)",
                (kind,),
            ).fetchone()[0]
            assert orphans == 0, f"{orphans} {table} rows without their outbox row"

        for generation in generations:
            t_from = child.numeric_time(generation, 0)
            stored: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for row in store.rows("numeric", child.BED, t_from, t_from + child.GENERATION_SPAN):
                stored[row["stream"]].append((row["t"], row["value"]))
            for stream, t, value in acked.numerics[generation]:
                series = stored[child.stream_name(stream)]
                at = bisect_right([s for s, _ in series], t) - 1
                assert at >= 0, f"generation {generation}: no {stream} value at or before {t}"
                assert series[at][1] == value, (generation, stream, t, value, series[at])
            details = {
                row["detail"]
                for row in store.rows("event", child.BED, t_from, t_from + child.GENERATION_SPAN)
            }
            missing = set(acked.events[generation]) - details
            assert not missing, f"acknowledged events lost: {sorted(missing)}"

        markers = [row["marker"] for row in store.rows("alarm", child.BED)]
        assert len(markers) == len(set(markers)), "an alarm was stored twice"
        missing = set(acked.alarms) - set(markers)
        assert not missing, f"acknowledged alarms lost: {sorted(missing)}"

        staged = conn.execute("SELECT COUNT(*) FROM waveform_staging").fetchone()[0]
        store.flush_waveforms(now=child.T_WAVE)
        blocks = sorted(store.waveform_blocks(child.BED, child.WAVE_STREAM), key=lambda b: b["seq"])
        expected_seq = 0
        for block in blocks:
            assert block["seq"] == expected_seq, "waveform blocks overlap or leave a gap"
            assert block["t"] == child.T_WAVE + block["seq"] / child.RATE
            n = len(block["counts"])
            assert np.array_equal(block["counts"], child.sample_counts(expected_seq, n))
            expected_seq += n
        assert expected_seq >= acked.wave_end, (
            f"acknowledged samples up to {acked.wave_end}, stored only {expected_seq}"
        )
        return staged, expected_seq


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    key_file = tmp_path / "keys" / "kek"
    ring = KeyRing(create_key_file(key_file))
    store = tmp_path / "data" / "twin.sqlite"
    acked = Acknowledged()
    recovered_staging = hot_wal = 0
    for generation in range(KILLS):
        n = rng.randint(1, 40)
        lines = run_and_kill(store, key_file, generation, n, tmp_path / f"child-{generation}.err")
        assert len(lines) >= n
        for line in lines:
            acked.add(generation, json.loads(line))

        wal = store.with_name(store.name + "-wal")
        hot_wal += wal.exists() and wal.stat().st_size > 0
        copy = snapshot(store, tmp_path / "after-kill")
        assert integrity(copy) == [("ok",)], f"after kill {generation}"
        staged, _ = check_acknowledged(copy, ring, acked, range(generation, generation + 1))
        recovered_staging += staged > 0

    # The kills really did land mid-stream: the restarts recovered WALs and staged chunks.
    assert hot_wal == KILLS
    assert recovered_staging >= KILLS // 2
    # And the file itself, after all of them, holds every acknowledged reading.
    assert integrity(store) == [("ok",)]
    _, samples = check_acknowledged(store, ring, acked, range(KILLS))
    assert samples >= acked.wave_end > 0
    assert len(acked.alarms) >= KILLS // 2
