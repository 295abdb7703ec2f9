"""Store commands as a technician runs them: keys, admit, discharge, export (subprocesses)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import wfdb

from drivers import codes
from drivers.readings import Condition, DeviceEvent, Numeric, Waveform
from gateway.config import load
from gateway.instance import InstanceLock
from gateway.twin.keys import KeySource, load_keyring
from gateway.twin.store import TwinStore

CONFIG = """
[gateway]
id = "cli-store"
data_dir = "state"

[[beds]]
id = "bed-1"
  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  port = "/dev/ttyUSB0"
"""


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def admit(config_path: Path, name: str, mrn: str, birth: str) -> subprocess.CompletedProcess[str]:
    """Identifiers go on standard input, never on the command line."""
    lines = f"name={name}\nmrn={mrn}\nbirth_date={birth}\n"
    return cli("admit", "--config", str(config_path), "--bed", "bed-1", stdin=lines)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def test_run_refuses_to_start_without_a_key_outside_a_simulation(config_path: Path) -> None:
    result = cli("run", "--config", str(config_path))
    assert result.returncode == 2
    assert "keys init" in result.stderr
    assert not (config_path.parent / "state" / "keys" / "kek").exists()


def test_keys_init_status_rotate(config_path: Path) -> None:
    init = cli("keys", "init", "--config", str(config_path))
    assert init.returncode == 0, init.stderr
    key_file = config_path.parent / "state" / "keys" / "kek"
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = cli("keys", "init", "--config", str(config_path))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    admitted = admit(config_path, "Ann Example", "MRN-1", "1960-02-03")
    assert admitted.returncode == 0, admitted.stderr

    status = json.loads(cli("keys", "status", "--config", str(config_path), "--json").stdout)
    assert status["ok"] and list(status["store_keys"]) == [status["kek"]]

    rotated = cli("keys", "rotate", "--config", str(config_path))
    assert rotated.returncode == 0, rotated.stderr
    after = json.loads(cli("keys", "status", "--config", str(config_path), "--json").stdout)
    assert after["kek"] != status["kek"] and list(after["store_keys"]) == [after["kek"]]
    assert not key_file.with_name("kek.new").exists()
    assert key_file.read_bytes() not in rotated.stdout.encode()  # no key material printed

    # The patient is still readable under the new key.
    config = load(config_path)
    ring = load_keyring(KeySource(config.store.key_file, config.store.credential))
    with TwinStore(config.store.path, ring) as store:
        admission = store.current_admission("bed-1")
        assert admission is not None
        assert store.patient(admission).name == "Ann Example"  # type: ignore[union-attr]


def test_a_group_readable_key_is_refused_with_the_fix(config_path: Path) -> None:
    assert cli("keys", "init", "--config", str(config_path)).returncode == 0
    key_file = config_path.parent / "state" / "keys" / "kek"
    os.chmod(key_file, 0o640)
    result = cli("keys", "status", "--config", str(config_path))
    assert result.returncode == 1
    assert "chmod 600" in result.stdout


def ingest(config_path: Path) -> tuple[float, np.ndarray]:
    config = load(config_path)
    ring = load_keyring(KeySource(config.store.key_file, config.store.credential))
    t0 = 1_767_225_600.0
    rng = np.random.default_rng(5)
    counts = rng.integers(-2000, 2000, 30 * 75)
    batch = [
        ("bed-1", Numeric("ox-1", codes.SPO2, 90.0 + i % 8, codes.PERCENT, t0 + i))
        for i in range(30)
    ]
    batch += [
        (
            "bed-1",
            Waveform(
                "ox-1",
                codes.PLETH,
                codes.DIMENSIONLESS,
                75.0,
                t0 + i / 3,
                counts[i * 25 : (i + 1) * 25].astype(float),
                i * 25,
            ),
        )
        for i in range(90)
    ]
    batch.append(("bed-1", DeviceEvent("ox-1", Condition.SENSOR_OFF, True, t0 + 5, "probe")))
    with TwinStore(config.store.path, ring) as store:
        store.write(batch, t0 + 40)
        store.write_alarm("bed-1", "ox-1", {"condition": "spo2_low", "value": 88}, t0 + 6, t0 + 40)
        store.flush_waveforms(t0 + 40)
    return t0, counts


def test_export_csv_json_wfdb_round_trip_and_audit(config_path: Path, tmp_path: Path) -> None:
    assert cli("keys", "init", "--config", str(config_path)).returncode == 0
    t0, counts = ingest(config_path)

    out_json = tmp_path / "out" / "bed-1.json"
    result = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-1",
        "--format",
        "json",
        "--out",
        str(out_json),
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(out_json.read_text())
    spo2 = [r for r in records if r["kind"] == "numeric"]
    assert [r["value"] for r in spo2] == [90.0 + i % 8 for i in range(30)]
    assert [r["t"] for r in spo2] == [t0 + i for i in range(30)]
    assert any(r["kind"] == "event" and r["condition"] == "sensor_off" for r in records)
    assert any(r["kind"] == "alarm" and r["value"] == 88 for r in records)

    out_csv = tmp_path / "out" / "bed-1.csv"
    result = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-1",
        "--format",
        "csv",
        "--out",
        str(out_csv),
        "--from",
        "2026-01-01T00:00:10Z",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out_csv.open()))
    numeric_rows = [r for r in rows if r["kind"] == "numeric"]
    assert [float(r["value"]) for r in numeric_rows] == [90.0 + i % 8 for i in range(10, 30)]

    out_wfdb = tmp_path / "out" / "wfdb"
    result = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-1",
        "--format",
        "wfdb",
        "--out",
        str(out_wfdb),
    )
    assert result.returncode == 0, result.stderr
    (header,) = out_wfdb.glob("*.hea")
    record = wfdb.rdrecord(str(header.with_suffix("")), physical=False)
    assert record.fs == 75.0
    assert np.array_equal(record.d_signal[:, 0], counts)

    # Every export is in the audit log.
    config = load(config_path)
    ring = load_keyring(KeySource(config.store.key_file, config.store.credential))
    with TwinStore(config.store.path, ring) as store:
        actions = [r["action"] for r in store.db.query("SELECT action FROM audit_log")]
    assert actions.count("export") == 3


def test_export_and_admit_errors(config_path: Path, tmp_path: Path) -> None:
    assert cli("keys", "init", "--config", str(config_path)).returncode == 0
    bad_bed = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-9",
        "--format",
        "csv",
        "--out",
        str(tmp_path / "x.csv"),
    )
    assert bad_bed.returncode == 2 and "no bed 'bed-9'" in bad_bed.stderr
    bad_time = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-1",
        "--format",
        "csv",
        "--out",
        str(tmp_path / "x.csv"),
        "--from",
        "yesterday",
    )
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr
    bad_date = admit(config_path, "A", "1", "03/02/1960")
    assert bad_date.returncode == 2 and "YYYY-MM-DD" in bad_date.stderr
    assert "03/02/1960" not in bad_date.stderr
    missing = cli("admit", "--config", str(config_path), "--bed", "bed-1", stdin="name=A\n")
    assert missing.returncode == 2 and "missing mrn, birth_date" in missing.stderr
    nothing = cli("discharge", "--config", str(config_path), "--bed", "bed-1")
    assert nothing.returncode == 2 and "no open admission" in nothing.stderr


def test_discharge_ends_the_admission(config_path: Path) -> None:
    assert cli("keys", "init", "--config", str(config_path)).returncode == 0
    assert admit(config_path, "B", "2", "1950-01-01").returncode == 0
    result = cli("discharge", "--config", str(config_path), "--bed", "bed-1")
    assert result.returncode == 0, result.stderr
    config = load(config_path)
    ring = load_keyring(KeySource(config.store.key_file, config.store.credential))
    with TwinStore(config.store.path, ring) as store:
        assert store.current_admission("bed-1") is None
        (admission,) = store.admissions("bed-1")
        assert admission["ended"] is not None


def test_decode_refuses_binary_without_raw(tmp_path: Path) -> None:
    binary = tmp_path / "capture.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = cli("decode", "--driver", "nonin", str(binary))
    assert result.returncode == 2
    assert "need --raw" in result.stderr and "Traceback" not in result.stderr


def test_run_with_an_unusable_data_dir_exits_2(config_path: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli("run", "--config", str(config_path), "--data-dir", str(blocker / "state"))
    assert result.returncode == 2
    assert "data directory" in result.stderr and "Traceback" not in result.stderr


def test_commands_that_change_admissions_or_keys_refuse_while_a_gateway_runs(
    config_path: Path,
) -> None:
    assert cli("keys", "init", "--config", str(config_path)).returncode == 0
    with InstanceLock(load(config_path).data_dir):  # what `run` holds while it runs
        refused = [
            admit(config_path, "C", "3", "1940-01-01"),
            cli("discharge", "--config", str(config_path), "--bed", "bed-1"),
            cli("keys", "rotate", "--config", str(config_path)),
        ]
        again = cli("run", "--config", str(config_path))
    for result in refused:
        assert result.returncode == 1 and "a gateway is running" in result.stderr
    assert again.returncode == 1 and "a gateway is running" in again.stderr
    assert admit(config_path, "C", "3", "1940-01-01").returncode == 0  # lock released
