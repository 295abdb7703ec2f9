"""Operator mistakes against a real daemon: a bad config reload, and key problems.

Each daemon runs ``gateway run`` from the fork server (see ``daemon_forkserver.py``) on the
simulated ward of :mod:`tests.reliability.ward`; its JSON log goes to a file the test reads
with bounded polls.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.twin.crypto import create_key_file
from tests.reliability.ward import ForkServer, Snapshot, WardDir

MISSING = ("bed-2", "ox-missing", "disconnected")


def logged(log: Path, event: str, within: float = 30.0) -> dict[str, Any]:
    """The first JSON log record of ``event``, polled (bounded) from the daemon's log file."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    return dict(record)
        time.sleep(0.1)
    raise AssertionError(f"{event!r} not logged within {within} s:\n{log.read_text()[-2000:]}")


def stop(forkserver: ForkServer, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    assert forkserver.wait(pid) == 0


def test_sighup_with_a_bad_file_keeps_the_running_config_and_says_why(
    tmp_path: Path, forkserver: ForkServer
) -> None:
    # Fault: the config file is edited into an invalid one and the daemon gets SIGHUP.
    # Must happen: an error naming the field and the fix; the daemon keeps running on its
    # configuration (page, devices, alarms unchanged). A valid edit is reported as needing
    # a restart (devices are wired at start). SIGTERM still stops it cleanly.
    ward = WardDir.create(tmp_path)
    log = tmp_path / "run.log"
    pid = forkserver.spawn(ward.config, log)
    try:
        ward.poll_alarms({MISSING}, within=90)
        original = ward.config.read_text()
        ward.config.write_text(original.replace('driver = "masimo-ascii"', "driver = 7"))
        os.kill(pid, signal.SIGHUP)
        refused = logged(log, "config reload refused; the running configuration stays")
        assert any("beds[1].devices[0].driver" in p for p in refused["problems"])
        assert ward.active_alarms() is not None  # the page still answers
        beds = {b["id"]: b for b in ward.get_json("/api/beds")}
        assert [d["id"] for d in beds["bed-2"]["devices"]] == ["ox-2", "ox-missing"]
        ward.config.write_text(original.replace("stale_after = 5.0", "stale_after = 7.0"))
        os.kill(pid, signal.SIGHUP)
        logged(log, "config file changed and is valid; restart the gateway to apply it")
        ward.poll_alarms({MISSING}, within=10)
    finally:
        stop(forkserver, pid)


@pytest.fixture
def stored_ward(tmp_path: Path, forkserver: ForkServer) -> tuple[WardDir, Snapshot]:
    """A ward that ran, stored data and stopped cleanly; the store as it left it."""
    ward = WardDir.create(tmp_path)
    pid = forkserver.spawn(ward.config, tmp_path / "first.log")
    try:
        ward.poll_alarms({MISSING}, within=90)
    finally:
        stop(forkserver, pid)
    snapshot = Snapshot.read(ward.db, tmp_path / "copy")
    assert snapshot.rows
    return ward, snapshot


def refused_start(forkserver: ForkServer, ward: WardDir, log: Path) -> tuple[int, str]:
    pid = forkserver.spawn(ward.config, log)
    return forkserver.wait_exit(pid, within=60), log.read_text()


def test_loose_key_file_permissions_refuse_to_start_and_lose_nothing(
    stored_ward: tuple[WardDir, Snapshot], forkserver: ForkServer, tmp_path: Path
) -> None:
    # Fault: the key file is readable by others (0644). Must happen: exit 2, a message
    # naming the file and the fix (chmod 600), the store untouched.
    ward, before = stored_ward
    key = ward.root / "keys" / "kek"
    key.chmod(0o644)
    code, out = refused_start(forkserver, ward, tmp_path / "loose.log")
    assert code == 2, out
    assert str(key) in out and "600" in out
    after = Snapshot.read(ward.db, tmp_path / "copy")
    assert not before.missing_from(after) and after.rows == before.rows


def test_missing_key_file_refuses_to_start_and_loses_nothing(
    stored_ward: tuple[WardDir, Snapshot], forkserver: ForkServer, tmp_path: Path
) -> None:
    # Fault: the key file is gone. Must happen: exit 2, a message naming the file; the store
    # untouched. (A simulated ward makes itself a demo key when none exists; its store's
    # data keys need the old one, so the start is refused all the same.)
    ward, before = stored_ward
    key = ward.root / "keys" / "kek"
    key.unlink()
    code, out = refused_start(forkserver, ward, tmp_path / "missing.log")
    assert code == 2, out
    assert str(key) in out
    after = Snapshot.read(ward.db, tmp_path / "copy")
    assert after.rows == before.rows


def test_wrong_key_refuses_to_start_and_loses_nothing(
    stored_ward: tuple[WardDir, Snapshot], forkserver: ForkServer, tmp_path: Path
) -> None:
    # Fault: a different (valid, 0600) key replaces the right one. Must happen: a non-zero
    # exit with a message that the store needs another key; the store untouched, and the
    # right key back makes the daemon start and keep everything.
    ward, before = stored_ward
    key = ward.root / "keys" / "kek"
    right = key.read_bytes()
    key.unlink()
    create_key_file(key)
    code, out = refused_start(forkserver, ward, tmp_path / "wrong.log")
    assert code == 2, out
    assert "key" in out.lower()
    after = Snapshot.read(ward.db, tmp_path / "copy")
    assert after.rows == before.rows
    key.write_bytes(right)
    pid = forkserver.spawn(ward.config, tmp_path / "again.log")
    try:
        ward.poll_alarms({MISSING}, within=90)
    finally:
        stop(forkserver, pid)
    assert not before.missing_from(Snapshot.read(ward.db, tmp_path / "copy"))
