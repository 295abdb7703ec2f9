"""A small simulated ward run as a real daemon process, and what its store holds.

:class:`WardDir` writes a config (serial devices played by their simulators on ptys: a
Nonin with a 250 Hz OpenBCI ECG, a Masimo, and an oximeter on a port that does not exist,
so a technical alarm is always active; bed 1's SpO2 low limit of 99 % keeps a physiological
alarm active too) and a 0600 key. :class:`ForkServer` runs ``gateway run`` children from
``daemon_forkserver.py``. :class:`Snapshot` is the store's content as the daemon left it,
read from a byte copy of the database and its write-ahead log so the next run meets the
file exactly as the kill left it (hot log included).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.twin.crypto import create_key_file

REPO = Path(__file__).resolve().parents[2]
FORKSERVER = Path(__file__).with_name("daemon_forkserver.py")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
ROW_TABLES = ("numerics", "device_events", "alarm_log")
#: (bed, device, condition) of the alarms the ward keeps active (see the module docstring).
STANDING_ALARMS = {
    ("bed-2", "ox-missing", "disconnected"),
    ("bed-1", "ox-1", "spo2_low"),
}

CONFIG = """
[gateway]
id = "ward-reliability"
data_dir = "var"
listen = "127.0.0.1:{port}"
stale_after = 5.0
simulation = true

[store]
key_file = "{key}"

[[beds]]
id = "bed-1"
  [beds.patient]
  name = "Reliability One"
  mrn = "REL-0001"
  birth_date = "1970-01-01"
  [beds.alarms]
  limits = {{ spo2 = {{ low = 99 }} }}
  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  simulate = "normal"
  [[beds.devices]]
  id = "ecg-1"
  driver = "openbci-cyton"
  leads = {{ 1 = "I", 2 = "II" }}
  simulate = "normal"

[[beds]]
id = "bed-2"
  [beds.patient]
  name = "Reliability Two"
  mrn = "REL-0002"
  birth_date = "1970-01-02"
  [[beds.devices]]
  id = "ox-2"
  driver = "masimo-ascii"
  simulate = "normal"
  [[beds.devices]]
  id = "ox-missing"
  driver = "nonin"
  port = "{missing}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WardDir:
    root: Path
    port: int

    @classmethod
    def create(cls, root: Path) -> WardDir:
        port = free_port()
        key = root / "keys" / "kek"
        create_key_file(key)
        text = CONFIG.format(port=port, key=key, missing=root / "no-such-port")
        (root / "config.toml").write_text(textwrap.dedent(text))
        return cls(root, port)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def db(self) -> Path:
        return self.root / "var" / "twin.sqlite"

    def get_json(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def active_alarms(self) -> set[tuple[str, str, str]] | None:
        """(bed, device, condition) of every active alarm; ``None`` while the page is down."""
        try:
            body = self.get_json("/api/alarms")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        alarms = body["alarms"] if isinstance(body, dict) else body
        return {(a["bed"], a["source"], a["condition"]) for a in alarms if a["state"] == "active"}

    def poll_alarms(self, want: set[tuple[str, str, str]], within: float) -> set[Any]:
        """Poll the page (bounded) until every alarm in ``want`` is active; the set then."""
        deadline = time.monotonic() + within
        seen: set[Any] | None = None
        while time.monotonic() < deadline:
            seen = self.active_alarms()
            if seen is not None and want <= seen:
                return seen
            time.sleep(0.2)
        raise AssertionError(f"alarms {want} not all active within {within} s: {seen}")


class ForkServer:
    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(FORKSERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
            cwd=REPO,
        )
        self._children: set[int] = set()

    def _ask(self, line: str, timeout: float = 120.0) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        assert ready, f"fork server did not answer {line!r} within {timeout} s"
        return self._proc.stdout.readline().strip()

    def spawn(self, config: Path, log: Path) -> int:
        pid = int(self._ask(f"spawn {config} {log}"))
        self._children.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        code = int(self._ask(f"wait {pid}"))
        self._children.discard(pid)
        return code

    def wait_exit(self, pid: int, within: float) -> int:
        """Exit code of a child expected to end by itself; SIGKILLed (and the test failed)
        if it is still running after ``within`` seconds (bounded poll)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":  # exited, waiting to be reaped
                return self.wait(pid)
            time.sleep(0.05)
        os.kill(pid, 9)
        self.wait(pid)
        raise AssertionError(f"daemon {pid} still running after {within} s; killed")

    def close(self) -> None:
        """Kill any daemon a failed test left running, then end the server."""
        for pid in list(self._children):
            os.kill(pid, 9)
            self.wait(pid)
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


Interval = tuple[int, int]


@dataclass
class Snapshot:
    """The rows of a store file: what a run committed before it ended."""

    integrity: str = "ok"
    rows: set[tuple[str, int, int, int]] = field(default_factory=set)
    # (table, admission, stream) -> seqs in insertion (id) order
    seq_order: dict[tuple[str, int, int], list[int]] = field(default_factory=dict)
    # (admission, stream) -> sample intervals [seq, seq + samples) of blocks and staged chunks
    waves: dict[tuple[int, int], list[Interval]] = field(default_factory=dict)
    staged: int = 0
    open_admissions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, db: Path, scratch: Path) -> Snapshot:
        """Read a byte copy of ``db`` (and its log), leaving the original untouched."""
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        for suffix in ("", "-wal"):
            source = Path(f"{db}{suffix}")
            if source.exists():
                shutil.copyfile(source, scratch / f"{db.name}{suffix}")
        copy = scratch / db.name
        snap = cls()
        if not copy.exists():
            return snap
        with sqlite3.connect(copy) as conn:
            snap.integrity = "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'numerics'").fetchone():
                return snap  # killed before the schema was committed
            order: dict[tuple[str, int, int], list[int]] = defaultdict(list)
            for table in ROW_TABLES:
                query = f"SELECT admission_id, stream_id, seq FROM {table} ORDER BY id"
                for adm, stream, seq in conn.execute(query):
                    snap.rows.add((table, adm, stream, seq))
                    order[(table, adm, stream)].append(seq)
            snap.seq_order = dict(order)
            waves: dict[tuple[int, int], list[Interval]] = defaultdict(list)
            for table in ("waveform_blocks", "waveform_staging"):
                query = f"SELECT admission_id, stream_id, seq, samples FROM {table}"
                for adm, stream, seq, n in conn.execute(query):
                    waves[(adm, stream)].append((seq, seq + n))
            snap.waves = {k: sorted(v) for k, v in waves.items()}
            snap.staged = conn.execute("SELECT count(*) FROM waveform_staging").fetchone()[0]
            query = "SELECT bed_id, id FROM admissions WHERE ended IS NULL"
            snap.open_admissions = dict(conn.execute(query).fetchall())
        return snap

    @property
    def samples(self) -> int:
        return sum(b - a for intervals in self.waves.values() for a, b in intervals)

    def problems(self) -> list[str]:
        """Duplicates: a sequence number that repeats or goes back within a stream, or
        waveform sample ranges that overlap."""
        found = []
        for key, seqs in self.seq_order.items():
            if any(b <= a for a, b in itertools.pairwise(seqs)):
                found.append(f"{key}: sequence not strictly increasing")
        for key, intervals in self.waves.items():
            for (_, end), (start, _) in itertools.pairwise(intervals):
                if start < end:
                    found.append(f"waveform {key}: samples {start}..{end} stored twice")
        return found

    def missing_from(self, later: Snapshot) -> list[str]:
        """What this snapshot holds that ``later`` lost (must be empty)."""
        lost = [f"row {r}" for r in sorted(self.rows - later.rows)[:5]]
        for key, intervals in self.waves.items():
            covered = later.waves.get(key, [])
            for start, end in intervals:
                if not _covered(start, end, covered):
                    lost.append(f"waveform {key} samples {start}..{end}")
        for bed, admission in self.open_admissions.items():
            if later.open_admissions.get(bed) != admission:
                lost.append(f"admission {admission} of {bed} no longer open")
        return lost


def _covered(start: int, end: int, intervals: list[Interval]) -> bool:
    """Whether sorted ``intervals`` cover [start, end) without a hole."""
    at = start
    for a, b in intervals:
        if a > at:
            break
        at = max(at, b)
        if at >= end:
            return True
    return at >= end
