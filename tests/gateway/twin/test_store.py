"""The twin store: schema and migrations, encryption at rest, tamper detection, outbox and
durability, the numerics step function, waveform staging, quota, retention and shredding,
key rotation.

Real SQLite files in ``tmp_path``, the real AES-GCM of ``cryptography``; nothing is mocked.
Crash safety (SIGKILL of an ingesting process) is in ``test_store_crash.py``.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import struct
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from drivers.codes import (
    BEATS_PER_MINUTE,
    ECG_LEAD_II,
    MILLIVOLT,
    PERCENT,
    PULSE_RATE,
    SPO2,
)
from drivers.readings import (
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)
from gateway.twin import keys
from gateway.twin.crypto import (
    DataKey,
    DecryptionFailed,
    Kek,
    KeyProblem,
    KeyRing,
    associated_data,
    generate_kek,
    new_data_key,
    read_key_file,
    write_key_file,
)
from gateway.twin.store import (
    KIND_PRIORITY,
    Destination,
    Patient,
    Retention,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreVersionError,
    TwinStore,
    _pack_samples,
    _row_aad,
    migrate,
)
from gateway.twin.waveblock import encode_block

T0 = 1_700_000_000.0
DAY = 86400.0
BED = "bed-1"
ALL_KINDS = frozenset(KIND_PRIORITY)
CENTRAL = Destination("central", ALL_KINDS)
SPO2_STREAM = f"ox-1/{SPO2.refid}"
ECG_STREAM = f"ecg-1/{ECG_LEAD_II.refid}"
TABLE_OF_KIND = {
    "numeric": "numerics",
    "event": "device_events",
    "alarm": "alarm_log",
    "waveform": "waveform_blocks",
    "audit": "audit_log",
}
DATA_TABLES = ("numerics", "device_events", "alarm_log", "waveform_blocks", "waveform_staging")


# -- helpers -------------------------------------------------------------------------------
@pytest.fixture
def kek() -> Kek:
    return generate_kek()


@pytest.fixture
def ring(kek: Kek) -> KeyRing:
    return KeyRing(kek)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "twin.sqlite"


def numeric(
    value: float | None,
    t: float,
    *,
    source: str = "ox-1",
    code: Any = SPO2,
    unit: Any = PERCENT,
    status: MeasurementStatus = MeasurementStatus.NONE,
) -> Numeric:
    return Numeric(source, code, value, unit, t, status=status)


def ecg(
    seq: int,
    counts: npt.ArrayLike,
    *,
    rate: float = 500.0,
    resolution: float = 1.0,
    t0: float = T0,
    source: str = "ecg-1",
) -> Waveform:
    values = np.asarray(counts, dtype=np.int64)
    return Waveform(
        source,
        ECG_LEAD_II,
        MILLIVOLT,
        rate,
        t0 + seq / rate,
        values.astype(np.float64) * resolution,
        sequence=seq,
        resolution=resolution,
    )


def noise(rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
    """Incompressible int16 samples (the codec stores them raw)."""
    return rng.integers(-32768, 32768, n).astype(np.int64)


@contextlib.contextmanager
def fails_on(store: TwinStore, bad: Waveform) -> Iterator[None]:
    """Make storing ``bad`` fail midway through a batch, as a disk error would."""
    real = store._write_waveform

    def failing(bed: str, adm: int, wave: Waveform, *args: Any) -> None:
        if wave is bad:
            raise StoreError("disk error while writing this chunk")
        real(bed, adm, wave, *args)

    store._write_waveform = failing  # type: ignore[method-assign]
    try:
        yield
    finally:
        store._write_waveform = real  # type: ignore[method-assign]


def pairs(bed: str, *readings: Reading) -> list[tuple[str, Reading]]:
    return [(bed, r) for r in readings]


def files_of(path: Path) -> dict[str, bytes]:
    """Raw bytes of the database and every side file SQLite keeps next to it."""
    return {
        p.name: p.read_bytes()
        for p in sorted(path.parent.iterdir())
        if p.name.startswith(path.name) and p.is_file()
    }


def assert_absent(path: Path, markers: dict[str, bytes]) -> None:
    files = files_of(path)
    assert files, "nothing to scan"
    found = [
        f"{label} in {name}"
        for name, data in files.items()
        for label, marker in markers.items()
        if marker in data
    ]
    assert not found, f"plaintext at rest: {found}"


def db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def outbox_rows(store: TwinStore) -> list[tuple[Any, ...]]:
    return store.db.conn.execute(
        "SELECT destination, kind, row_id, priority, acked FROM outbox ORDER BY id"
    ).fetchall()


def ack_rows(store: TwinStore, kind: str, row_ids: set[int], now: float) -> None:
    ids = [
        r["id"]
        for r in store.pending("central", 100_000)
        if r["kind"] == kind and r["row_id"] in row_ids
    ]
    assert len(ids) == len(row_ids)
    store.ack(ids, now)


def ack_all(store: TwinStore, now: float) -> None:
    for destination in {d for (d,) in store.db.conn.execute("SELECT destination FROM outbox")}:
        store.ack([r["id"] for r in store.pending(destination, 100_000)], now)


def migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("gateway.twin") / "migrations"
    found = sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))
    return [(int(name[:4]), name, (folder / name).read_text("utf-8")) for name in found]


def split_statements(sql: str) -> list[str]:
    """The statements of a migration file, comments and blank lines dropped."""
    out, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    assert not buffer.strip()
    return out


def schema(path: Path) -> list[tuple[str, str, str]]:
    conn = db(path)
    try:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = db(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def step_value(rows: list[dict[str, Any]], t: float) -> dict[str, Any]:
    """The stored step function at ``t``: the last stored row at or before ``t``."""
    at = bisect_right([r["t"] for r in rows], t) - 1
    assert at >= 0, f"nothing stored at or before {t}"
    return rows[at]


# == 1. schema and migrations ================================================================
def test_new_file_is_at_the_newest_version_and_the_code_knows_every_file(
    path: Path, ring: KeyRing
) -> None:
    files = migration_files()
    assert [n for n, _, _ in files] == list(range(1, len(files) + 1))
    assert len(files) >= 2  # 0001_initial and 0002_waveform_blocks at least
    with TwinStore(path, ring) as store:
        assert store.version == files[-1][0] == len(files)
    assert user_version(path) == len(files)
    tables = {name for kind, name, _ in schema(path) if kind == "table"}
    assert {
        "admissions",
        "streams",
        "numerics",
        "device_events",
        "alarm_log",
        "audit_log",
        "outbox",
        "waveform_blocks",
        "waveform_staging",
    } <= tables


def test_store_runs_in_wal_mode(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring) as store:
        assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = db(path)  # persisted in the file, not just set on the store's connection
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def make_v1_file(path: Path, ring: KeyRing) -> dict[str, Any]:
    """A store as gateway schema 1 wrote it: one admission with a patient, one SpO2 value
    and one alarm, sealed exactly as the store seals (same associated data layout: table,
    bed, admission, stream id, stream name, sequence, time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = db(path)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    assert migrate(conn, migration_files()[:1]) == 1
    bed, adm, stream, alarm_stream, t = "bed-old", 1, 1, 2, T0 + 0.25
    raw = new_data_key()
    kek_id, wrapped = ring.wrap(raw, associated_data("admission-key", bed, adm))
    key = DataKey(raw)
    patient = {"name": "Ada Oldfile", "mrn": "MRN-V1-0001", "birth_date": "1941-05-06"}
    conn.execute(
        "INSERT INTO admissions (id, bed_id, started, kek_id, wrapped_key, patient) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            adm,
            bed,
            T0,
            kek_id,
            wrapped,
            key.seal(json.dumps(patient).encode(), associated_data("admissions", bed, adm)),
        ),
    )
    conn.execute("INSERT INTO streams (id, name) VALUES (?, ?)", (stream, SPO2_STREAM))
    conn.execute("INSERT INTO streams (id, name) VALUES (?, ?)", (alarm_stream, "alarm-engine"))
    value = {"value": 93.5, "unit": "%", "status": [], "device_time": None}
    conn.execute(
        "INSERT INTO numerics (admission_id, stream_id, seq, t, sealed) VALUES (?, ?, ?, ?, ?)",
        (
            adm,
            stream,
            0,
            t,
            key.seal(
                json.dumps(value).encode(),
                associated_data("numerics", bed, adm, stream, SPO2_STREAM, 0, t),
            ),
        ),
    )
    alarm = {"condition": "spo2_low", "priority": "medium"}
    conn.execute(
        "INSERT INTO alarm_log (admission_id, stream_id, seq, t, sealed) VALUES (?, ?, ?, ?, ?)",
        (
            adm,
            alarm_stream,
            0,
            t,
            key.seal(
                json.dumps(alarm).encode(),
                associated_data("alarm_log", bed, adm, alarm_stream, "alarm-engine", 0, t),
            ),
        ),
    )
    conn.execute(
        "INSERT INTO outbox (destination, kind, row_id, priority, created) "
        "VALUES ('central', 'numeric', 1, 3, ?)",
        (t,),
    )
    conn.close()
    assert user_version(path) == 1
    return {"bed": bed, "patient": Patient(**patient), "value": 93.5, "t": t, "alarm": alarm}


def test_v1_file_is_migrated_to_the_newest_version_and_keeps_its_data(
    tmp_path: Path, path: Path, ring: KeyRing
) -> None:
    old = make_v1_file(path, ring)
    with TwinStore(path, ring, destinations=[CENTRAL]) as store:
        assert store.version == len(migration_files())
        assert store.patient(1) == old["patient"]
        [row] = store.rows("numeric", old["bed"])
        assert (row["t"], row["value"], row["seq"], row["stream"]) == (
            old["t"],
            old["value"],
            0,
            SPO2_STREAM,
        )
        [alarm] = store.rows("alarm", old["bed"])
        assert {k: alarm[k] for k in old["alarm"]} == old["alarm"]
        assert store.pending("central")[0]["row_id"] == row["id"]
        # It goes on where version 1 stopped: the next value continues the sequence, and the
        # version 2 tables take waveforms.
        store.write(
            pairs(old["bed"], numeric(94.0, old["t"] + 1), ecg(0, np.arange(100) - 50)),
            now=old["t"] + 1,
        )
        assert [r["seq"] for r in store.rows("numeric", old["bed"])] == [0, 1]
        assert store.flush_waveforms(now=old["t"] + 1) == 1
        [block] = store.waveform_blocks(old["bed"], ECG_STREAM)
        assert np.array_equal(block["counts"], np.arange(100) - 50)
    assert user_version(path) == len(migration_files())
    # Migrated and fresh files end with the same schema.
    fresh = tmp_path / "fresh" / "twin.sqlite"
    TwinStore(fresh, ring).close()
    assert schema(path) == schema(fresh)


def test_file_from_a_newer_gateway_is_refused_untouched(path: Path, ring: KeyRing) -> None:
    TwinStore(path, ring).close()
    conn = db(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = files_of(path)
    with pytest.raises(StoreVersionError, match="upgrade") as info:
        TwinStore(path, ring)
    assert "99" in str(info.value)
    assert str(len(migration_files())) in str(info.value)
    assert files_of(path) == before
    assert user_version(path) == 99


def broken_migrations(folder: Path, n: int) -> Path:
    """0001 as shipped, then 0002 as shipped except that its ``n``-th statement fails."""
    folder.mkdir()
    first, second = migration_files()[:2]
    (folder / first[1]).write_text(first[2])
    statements = split_statements(second[2])
    statements[n - 1] = "INSERT INTO no_such_table VALUES (1);"
    (folder / second[1]).write_text("\n".join(statements) + "\n")
    return folder


SECOND_MIGRATION_STATEMENTS = len(split_statements(migration_files()[1][2]))


@pytest.mark.parametrize("n", range(1, SECOND_MIGRATION_STATEMENTS + 1))
def test_migration_failing_at_its_nth_statement_leaves_the_v1_file_byte_identical(
    tmp_path: Path, path: Path, ring: KeyRing, n: int
) -> None:
    make_v1_file(path, ring)
    before = files_of(path)
    migrations = broken_migrations(tmp_path / "migrations", n)
    with pytest.raises(StoreError, match=r"0002_waveform_blocks\.sql"):
        TwinStore(path, ring, migrations=migrations)
    assert files_of(path) == before
    assert user_version(path) == 1
    # The real migrations still apply to it afterwards.
    with TwinStore(path, ring) as store:
        assert store.version == len(migration_files())


def test_failing_step_rolls_back_every_earlier_step_too(
    tmp_path: Path, path: Path, ring: KeyRing
) -> None:
    """A new file with 0001 good and 0002 broken ends with neither: one transaction."""
    migrations = broken_migrations(tmp_path / "migrations", SECOND_MIGRATION_STATEMENTS)
    with pytest.raises(StoreError, match="migration 0002"):
        TwinStore(path, ring, migrations=migrations)
    assert user_version(path) == 0
    assert schema(path) == []
    # A v1 file and a folder with 0001, 0002 and a broken 0003: 0002 is not kept either.
    v1 = tmp_path / "v1" / "twin.sqlite"
    make_v1_file(v1, ring)
    folder = tmp_path / "three"
    folder.mkdir()
    for _, name, sql in migration_files()[:2]:
        (folder / name).write_text(sql)
    (folder / "0003_broken.sql").write_text(
        "CREATE TABLE extra (x INTEGER);\nINSERT INTO extra VALUES (1);\nSELECT nonsense FROM;\n"
    )
    before = files_of(v1)
    with pytest.raises(StoreError, match=r"0003_broken\.sql"):
        TwinStore(v1, ring, migrations=folder)
    assert files_of(v1) == before
    assert "waveform_blocks" not in {name for _, name, _ in schema(v1)}


# == 2. encryption at rest ===================================================================
NAME, MRN, BIRTH = "Zebulon Quaxworth", "MRN-5550-9173", "1937-03-14"
MARKER_VALUE = 87.654321
EVENT_DETAIL = "lead fault QX-7731 near probe"
SERIAL = "SN-ZQ-4471-0098"
ALARM_NOTE = "nurse override VX-2290"
ALARM_VALUE = 81.234567
SAMPLE_PATTERN = np.array(
    [
        31337,
        -31337,
        12321,
        -4242,
        27182,
        -16180,
        1414,
        -2718,
        22222,
        -11111,
        30303,
        -20202,
        555,
        -777,
        8888,
        -9999,
    ],
    dtype=np.int64,
)


def at_rest_markers(chunks: list[npt.NDArray[np.int64]]) -> dict[str, bytes]:
    markers = {
        "name": NAME.encode(),
        "mrn": MRN.encode(),
        "birth date": BIRTH.encode(),
        "event detail": EVENT_DETAIL.encode(),
        "serial": SERIAL.encode(),
        "alarm note": ALARM_NOTE.encode(),
        # Keys of the sealed JSON payloads, as they would appear if one was stored in clear.
        "json value key": b'"value":',
        "json birth_date key": b'"birth_date":',
        "json detail key": b'"detail":',
        "json resolution key": b'"resolution":',
    }
    for label, number in (("value", MARKER_VALUE), ("alarm value", ALARM_VALUE)):
        markers[f"{label} repr"] = repr(number).encode()
        markers[f"{label} json"] = json.dumps(number).encode()
        markers[f"{label} double le"] = struct.pack("<d", number)
        markers[f"{label} double be"] = struct.pack(">d", number)
    pattern = SAMPLE_PATTERN[:6]
    for dtype in ("<i2", ">i2", "<i4", "<i8", "<f8"):
        markers[f"samples {dtype}"] = pattern.astype(dtype).tobytes()
    markers["samples text"] = ", ".join(map(str, pattern)).encode()
    for i, chunk in enumerate(chunks):  # the codec's output, i.e. the plaintext of a blob
        blob = encode_block(chunk)
        markers[f"encoded chunk {i}"] = blob[len(blob) // 2 - 12 : len(blob) // 2 + 12]
    whole = encode_block(np.concatenate(chunks))
    markers["encoded block"] = whole[len(whole) // 2 - 12 : len(whole) // 2 + 12]
    return markers


def test_nothing_identifying_nor_any_value_is_in_clear_in_any_file(
    path: Path, ring: KeyRing
) -> None:
    bed = "bed-marker-7"
    chunks = [np.tile(SAMPLE_PATTERN, 8) + i for i in range(4)]  # 4 x 128 samples
    store = TwinStore(path, ring, destinations=[CENTRAL], block_seconds=1.0)
    try:
        store.admit(bed, Patient(NAME, MRN, BIRTH), now=T0)
        store.write(
            pairs(
                bed,
                numeric(MARKER_VALUE, T0 + 1.5),
                numeric(61.0, T0 + 1.5, code=PULSE_RATE, unit=BEATS_PER_MINUTE),
                DeviceEvent("ox-1", Condition.SENSOR_ALARM, True, T0 + 1.5, EVENT_DETAIL),
                Identity("ox-1", T0 + 1.5, "Nonin", "7500", SERIAL, "1.2"),
                ecg(0, chunks[0]),
                ecg(128, chunks[1]),
            ),
            now=T0 + 1.5,
        )
        store.write(pairs(bed, ecg(256, chunks[2]), ecg(384, chunks[3])), now=T0 + 2)
        store.write_alarm(
            bed,
            "alarm-engine",
            {"note": ALARM_NOTE, "value": ALARM_VALUE, "limit": 90},
            T0 + 2,
            T0 + 2,
        )
        assert store.counts()["waveform_blocks"] == 1
        store.write(pairs(bed, ecg(512, chunks[0])), now=T0 + 3)  # one chunk left staged
        assert store.counts()["waveform_staging"] == 1
        markers = at_rest_markers(chunks)
        # The scan does see what is stored in clear (index columns): it would see a leak.
        clear = b"".join(files_of(path).values())
        assert SPO2_STREAM.encode() in clear and bed.encode() in clear
        assert_absent(path, markers)  # data still in the WAL
        store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert SPO2_STREAM.encode() in files_of(path)[path.name]
        assert_absent(path, markers)  # data now in the main file
    finally:
        store.close()
    assert_absent(path, markers)
    # And all of it reads back, so the markers were really written.
    with TwinStore(path, ring) as store:
        [adm] = [a["id"] for a in store.admissions(bed)]
        assert store.patient(adm) == Patient(NAME, MRN, BIRTH)
        assert MARKER_VALUE in [r["value"] for r in store.rows("numeric", bed)]
        assert {EVENT_DETAIL, SERIAL} <= {
            r.get("detail") or r.get("serial") for r in store.rows("event", bed)
        }
        assert [r["note"] for r in store.rows("alarm", bed)] == [ALARM_NOTE]
        [block] = store.waveform_blocks(bed, ECG_STREAM)
        assert np.array_equal(block["counts"], np.concatenate(chunks))


# == 3. tamper detection ======================================================================
def move_sealed(path: Path, table: str, column: str, source: int, target: int) -> None:
    conn = db(path)
    conn.execute(
        f"UPDATE {table} SET {column} = (SELECT {column} FROM {table} WHERE id = ?) WHERE id = ?",
        (source, target),
    )
    conn.close()


@pytest.mark.parametrize("kind", ["numeric", "event", "alarm"])
def test_ciphertext_moved_to_another_row_is_detected_and_named(
    path: Path, ring: KeyRing, kind: str
) -> None:
    with TwinStore(path, ring) as store:
        for i in range(4):
            t = T0 + i
            store.write(
                pairs(
                    BED,
                    numeric(90.0 + i, t),
                    DeviceEvent("ox-1", Condition.ARTIFACT, i % 2 == 0, t, f"d{i}"),
                ),
                now=t,
            )
            store.write_alarm(BED, "alarm-engine", {"n": i}, t, t)
        ids = [r["id"] for r in store.rows(kind, BED)]
    table = TABLE_OF_KIND[kind]
    move_sealed(path, table, "sealed", ids[0], ids[2])
    with TwinStore(path, ring) as store:
        with pytest.raises(DecryptionFailed, match=rf"{table} row {ids[2]}\b"):
            list(store.rows(kind, BED))
        failures: list[str] = []
        survivors = [r["id"] for r in store.rows(kind, BED, failures=failures)]
        assert survivors == [ids[0], ids[1], ids[3]]
        [failure] = failures
        assert f"{table} row {ids[2]}" in failure


def test_waveform_block_moved_to_another_row_is_detected(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring, block_seconds=0.2) as store:
        for seq in range(0, 400, 100):
            store.write(pairs(BED, ecg(seq, np.arange(seq, seq + 100))), now=T0)
        ids = [r for (r,) in store.db.conn.execute("SELECT id FROM waveform_blocks ORDER BY id")]
    assert len(ids) == 4
    move_sealed(path, "waveform_blocks", "sealed", ids[3], ids[1])
    with TwinStore(path, ring) as store:
        blocks = store.waveform_blocks(BED, ECG_STREAM)
        assert next(blocks)["seq"] == 0
        with pytest.raises(DecryptionFailed, match=rf"waveform_blocks row {ids[1]}\b"):
            next(blocks)


def test_a_damaged_staged_chunk_is_reported_and_the_store_still_opens(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring) as store:  # 10 s blocks: these chunks stay staged
        for seq in range(0, 300, 100):
            store.write(pairs(BED, ecg(seq, np.arange(seq, seq + 100))), now=T0)
        ids = [r for (r,) in store.db.conn.execute("SELECT id FROM waveform_staging ORDER BY id")]
    move_sealed(path, "waveform_staging", "sealed", ids[2], ids[1])
    with TwinStore(path, ring) as store:
        assert len(store.problems) == 1
        assert f"waveform_staging row {ids[1]}" in store.problems[0]
        store.write(pairs(BED, numeric(97.0, T0 + 1)), now=T0 + 1)  # ingest goes on
        assert store.flush_waveforms(now=T0 + 2) >= 1
        folded = np.concatenate([b["counts"] for b in store.waveform_blocks(BED, ECG_STREAM)])
        assert np.array_equal(folded[:100], np.arange(100))  # the intact chunk survived


def test_patient_or_data_key_moved_to_another_admission_is_detected(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring) as store:
        a = store.admit("bed-a", Patient("A", "MRN-A", "1950-01-01"), T0)
        b = store.admit("bed-b", Patient("B", "MRN-B", "1960-01-01"), T0)
        c = store.admit("bed-c", Patient("C", "MRN-C", "1970-01-01"), T0)
    move_sealed(path, "admissions", "patient", a, b)
    move_sealed(path, "admissions", "wrapped_key", a, c)
    with TwinStore(path, ring) as store:
        assert store.patient(a) == Patient("A", "MRN-A", "1950-01-01")
        with pytest.raises(DecryptionFailed, match=rf"admission {b}\b"):
            store.patient(b)
        with pytest.raises(DecryptionFailed, match=rf"admission {c} key"):
            store.patient(c)


def test_wrong_key_encryption_key_is_reported_with_the_fix(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring) as store:
        adm = store.admit(BED, Patient("A", "MRN-A", "1950-01-01"), T0)
        store.write(pairs(BED, numeric(97.0, T0)), now=T0)
    other = KeyRing(generate_kek())
    with TwinStore(path, other) as store:
        with pytest.raises(KeyProblem) as info:
            store.patient(adm)
        message = str(info.value)
        assert ring.current.id in message and other.current.id in message
        assert "restore the key file" in message
        with pytest.raises(KeyProblem):
            list(store.rows("numeric", BED, failures=[]))
        with pytest.raises(KeyProblem):  # nor can it write under the unknown key
            store.write(pairs(BED, numeric(98.0, T0 + 1)), now=T0 + 1)
    # A key with the right id but other bytes cannot exist; a tampered wrapped key can:
    conn = db(path)
    conn.execute("UPDATE admissions SET wrapped_key = zeroblob(60)")
    conn.close()
    with TwinStore(path, ring) as store, pytest.raises(DecryptionFailed, match="key"):
        store.patient(adm)


def test_wrong_key_with_staged_chunks_refuses_to_open_with_a_key_problem(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring) as store:
        store.write(pairs(BED, ecg(0, np.arange(10))), now=T0)
    with pytest.raises(KeyProblem, match="does not have"):
        TwinStore(path, KeyRing(generate_kek()))
    with TwinStore(path, ring) as store:  # the right key still opens it
        assert store.counts()["waveform_staging"] == 1


def filled_store(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=1.0) as store:
        store.admit(BED, Patient("A", "MRN-A", "1950-01-01"), T0)
        rng = np.random.default_rng(7)
        for i in range(30):
            t = T0 + i
            store.write(pairs(BED, numeric(float(i), t), ecg(i * 250, noise(rng, 250))), now=t)
        store.write_alarm(BED, "alarm-engine", {"n": 1}, T0, T0)


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.75, 0.5003])
def test_truncated_file_is_store_corrupt_with_a_clear_message(
    path: Path, ring: KeyRing, fraction: float
) -> None:
    filled_store(path, ring)
    assert not path.with_name(path.name + "-wal").exists()  # a clean close left no WAL
    size = path.stat().st_size
    assert size > 40_000
    with path.open("r+b") as f:
        f.truncate(int(size * fraction))
    with pytest.raises(StoreCorrupt) as info:
        TwinStore(path, ring)
    message = str(info.value)
    assert str(path) in message
    assert "backup" in message


@pytest.mark.parametrize(
    "content",
    [
        b"this is a CSV export, not a database\n" * 200,
        bytes(range(256)) * 64,
        b"SQLite format 3\x00" + b"\xff" * 5000,
    ],
    ids=["text", "binary", "fake-header"],
)
def test_file_that_is_not_sqlite_is_store_corrupt(
    path: Path, ring: KeyRing, content: bytes
) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt, match="not a readable gateway store"):
        TwinStore(path, ring)
    assert path.read_bytes() == content


# == 4. durability, outbox, numerics step function, waveform staging ========================
def test_outbox_has_one_row_per_destination_carrying_the_kind(path: Path, ring: KeyRing) -> None:
    destinations = [
        CENTRAL,
        Destination("numbers", frozenset({"numeric"})),
        Destination("pager", frozenset({"alarm", "audit"})),
        Destination("archive", frozenset({"waveform", "event"})),
    ]
    with TwinStore(path, ring, destinations=destinations, block_seconds=0.2) as store:
        store.write(
            pairs(
                BED,
                numeric(95.0, T0),
                numeric(70.0, T0, code=PULSE_RATE, unit=BEATS_PER_MINUTE),
                DeviceEvent("ox-1", Condition.LOW_PERFUSION, True, T0, ""),
                ecg(0, np.arange(100)),
            ),
            now=T0,
        )
        store.write_alarm(BED, "alarm-engine", {"condition": "spo2_low"}, T0, T0)
        store.audit("nurse-1", "silence", bed_id=BED, detail="audio paused 120 s", now=T0)
        expected: set[tuple[str, str, int, int]] = set()
        for kind, table in TABLE_OF_KIND.items():
            for (row_id,) in store.db.conn.execute(f"SELECT id FROM {table}"):
                for d in destinations:
                    if kind in d.carries:
                        expected.add((d.name, kind, row_id, KIND_PRIORITY[kind]))
        rows = outbox_rows(store)
        assert len(rows) == len(expected) == 6 + 2 + 2 + 2
        assert {r[:4] for r in rows} == expected
        assert all(r[4] is None for r in rows)
        pending = store.pending("central")
        assert [p["kind"] for p in pending] == [
            "alarm",
            "audit",
            "event",
            "numeric",
            "numeric",
            "waveform",
        ]
        store.ack([p["id"] for p in pending[:2]], T0 + 1)
        assert next(p["kind"] for p in store.pending("central")) == "event"
        assert [p["kind"] for p in store.pending("pager")] == ["alarm", "audit"]


def test_failed_write_leaves_no_data_no_outbox_and_consistent_state(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=60.0) as store:
        store.write(
            pairs(BED, numeric(95.0, T0), numeric(96.0, T0 + 1), ecg(0, np.arange(50))), now=T0 + 1
        )
        before = (
            store.counts(),
            outbox_rows(store),
            schema(path),
            store.db.conn.execute("SELECT * FROM streams").fetchall(),
            store.admissions(),
        )
        bad = Waveform(
            "ecg-1",
            ECG_LEAD_II,
            MILLIVOLT,
            500.0,
            T0 + 0.1,
            np.array([0.0, 0.001, 0.003]),
            sequence=50,
            resolution=0.001,
        )
        batch: list[tuple[str, Reading]] = [
            (BED, numeric(97.0, T0 + 2)),  # a change: would be written
            (BED, ecg(50, np.arange(50))),  # a staged chunk
            ("bed-new", numeric(88.0, T0 + 2)),  # a new admission
            (BED, numeric(40.0, T0 + 2, source="new-device")),  # a new stream
            (BED, DeviceEvent("ox-1", Condition.SENSOR_OFF, True, T0 + 2, "x")),
            (BED, bad),  # a reading whose storing fails midway (see below)
            (BED, numeric(98.0, T0 + 3)),
        ]
        with fails_on(store, bad), pytest.raises(StoreError, match="disk error"):
            store.write(batch, now=T0 + 2)
        after = (
            store.counts(),
            outbox_rows(store),
            schema(path),
            store.db.conn.execute("SELECT * FROM streams").fetchall(),
            store.admissions(),
        )
        assert after == before
        assert store.current_admission("bed-new") is None

        # The same batch without the bad reading then goes in, sequences continuing.
        good = [r for r in batch if r[1] is not bad]
        result = store.write(good, now=T0 + 4)
        assert result.stored == len(good)
        assert result.numerics_written == 4  # 97 is a change, not a repeat of the lost batch
        spo2 = list(store.rows("numeric", BED))
        by_stream: dict[str, list[int]] = defaultdict(list)
        for row in spo2:
            by_stream[row["stream"]].append(row["seq"])
        assert by_stream == {SPO2_STREAM: [0, 1, 2, 3], f"new-device/{SPO2.refid}": [0]}
        assert [r["value"] for r in spo2 if r["stream"] == SPO2_STREAM] == [95, 96, 97, 98]
        assert [r["value"] for r in store.rows("numeric", "bed-new")] == [88.0]
        [event] = store.rows("event", BED)
        assert event["seq"] == 0
        assert store.flush_waveforms(T0 + 4) == 1
        [block] = store.waveform_blocks(BED, ECG_STREAM)
        assert np.array_equal(block["counts"], np.concatenate([np.arange(50), np.arange(50)]))
        assert len(outbox_rows(store)) == sum(
            store.counts()[t] for t in ("numerics", "device_events", "waveform_blocks")
        )


def test_failed_write_does_not_leave_a_repeat_that_was_never_stored(
    path: Path, ring: KeyRing
) -> None:
    """A value in a rolled-back batch must not make a later equal value look like a repeat."""
    with TwinStore(path, ring, numeric_heartbeat=60.0) as store:
        store.write(pairs(BED, numeric(95.0, T0)), now=T0)
        bad = Waveform("ecg-1", ECG_LEAD_II, MILLIVOLT, 500.0, T0, np.array([5.0]))
        with fails_on(store, bad), pytest.raises(StoreError):
            store.write(pairs(BED, numeric(80.0, T0 + 1), bad), now=T0 + 1)
        result = store.write(pairs(BED, numeric(80.0, T0 + 2)), now=T0 + 2)
        assert (result.numerics_written, result.numerics_repeated) == (1, 0)
        rows = list(store.rows("numeric", BED))
        assert step_value(rows, T0 + 2)["value"] == 80.0


def test_numerics_step_function_writes_changes_and_heartbeats_only(
    path: Path, ring: KeyRing
) -> None:
    values = [95.0] * 12 + [94.0] * 3 + [94.0] + [95.0] * 2
    with TwinStore(path, ring, numeric_heartbeat=5.0) as store:
        results = [
            store.write(pairs(BED, numeric(v, T0 + i)), now=T0 + i) for i, v in enumerate(values)
        ]
        assert all(r.stored == 1 for r in results)
        written = [i for i, r in enumerate(results) if r.numerics_written]
        assert [i for i, r in enumerate(results) if r.numerics_repeated] == [
            i for i in range(len(values)) if i not in written
        ]
        # 95 at 0, again at the heartbeats 5 and 10; 94 at 12 (13..15 repeat it); 95 at 16.
        assert written == [0, 5, 10, 12, 16]
        rows = list(store.rows("numeric", BED))
        assert [r["t"] - T0 for r in rows] == written
        for i, v in enumerate(values):
            assert step_value(rows, T0 + i)["value"] == v
        # Status and unit are part of what must not change silently.
        store.write(
            pairs(BED, numeric(95.0, T0 + 17, status=MeasurementStatus.QUESTIONABLE)), now=T0 + 17
        )
        store.write(pairs(BED, numeric(95.0, T0 + 18, unit=BEATS_PER_MINUTE)), now=T0 + 18)
        store.write(
            pairs(
                BED,
                numeric(None, T0 + 19, status=MeasurementStatus.UNAVAILABLE),
                numeric(None, T0 + 20, status=MeasurementStatus.UNAVAILABLE),
            ),
            now=T0 + 20,
        )
        rows = list(store.rows("numeric", BED))
        assert [(r["t"] - T0, r["value"], r["unit"], r["status"]) for r in rows[-3:]] == [
            (17, 95.0, "%", ["questionable"]),
            (18, 95.0, "/min", []),
            (19, None, "%", ["unavailable"]),
        ]


@pytest.mark.parametrize("seed", range(24))
def test_stored_numerics_give_every_acknowledged_readings_exact_value(
    tmp_path: Path, ring: KeyRing, seed: int
) -> None:
    """Whatever the values, statuses, batch cuts, restarts and heartbeat, and even with a
    wall clock that steps back, the last stored row at or before each reading's time is
    that reading. Seeded: every run checks the same 24 random histories."""
    rng = random.Random(seed)
    times = [T0 + 0.25 * i for i in rng.sample(range(160), 48)]
    if seed % 3 == 0:
        times.sort()  # a third of the histories with a well-behaved clock
    heartbeat = rng.choice([0.0, 1.0, 5.0, 1e9])
    reopen_at = rng.randrange(len(times))
    path = tmp_path / "twin.sqlite"
    sent: list[Numeric] = []
    stored = 0
    store = TwinStore(path, ring, numeric_heartbeat=heartbeat)
    try:
        batch: list[tuple[str, Reading]] = []
        for i, t in enumerate(times):
            if i == reopen_at:  # a restart forgets the last values; nothing may go wrong
                stored += store.write(batch, now=T0).stored if batch else 0
                batch = []
                store.close()
                store = TwinStore(path, ring, numeric_heartbeat=heartbeat)
            status = rng.choice([MeasurementStatus.NONE, MeasurementStatus.QUESTIONABLE])
            reading = numeric(rng.choice([95.0, 96.0, None]), t, status=status)
            sent.append(reading)
            batch.append((BED, reading))
            if rng.random() < 0.3:
                stored += store.write(batch, now=T0).stored
                batch = []
        stored += store.write(batch, now=T0).stored if batch else 0
        rows = list(store.rows("numeric", BED))
    finally:
        store.close()
    assert stored == len(sent)
    for reading in sent:
        row = step_value(rows, reading.time)
        assert (row["value"], row["status"]) == (reading.value, reading.status.names()), (
            f"seed {seed}: reading at +{reading.time - T0} s"
        )


def test_clock_stepping_back_does_not_hide_a_change(path: Path, ring: KeyRing) -> None:
    """The wall clock steps back 2 s (NTP): 7 at t=8 is stored before 5 at t=10 in time
    order; 7 again at t=11 is a change from the stored series' point of view."""
    with TwinStore(path, ring) as store:
        for t, v in [(10.0, 5.0), (8.0, 7.0), (11.0, 7.0)]:
            store.write(pairs(BED, numeric(v, T0 + t)), now=T0 + t)
        rows = list(store.rows("numeric", BED))
    assert step_value(rows, T0 + 11.0)["value"] == 7.0


def test_staged_waveform_chunks_survive_reopen_and_fold_into_one_exact_block(
    path: Path, ring: KeyRing
) -> None:
    rng = np.random.default_rng(3)
    resolution = 0.005  # mV per count
    chunks = [noise(rng, 500) for _ in range(10)]  # 10 x 1 s at 500 Hz = one 10 s block
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=10.0) as store:
        for i in range(4):
            r = store.write(pairs(BED, ecg(i * 500, chunks[i], resolution=resolution)), now=T0)
            assert (r.stored, r.waveform_chunks, r.blocks_written) == (1, 1, 0)
        assert store.counts()["waveform_staging"] == 4
        # closed without flush_waveforms: as a process that dies between two commits
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=10.0) as store:
        assert store.counts()["waveform_staging"] == 4
        results = [
            store.write(pairs(BED, ecg(i * 500, chunks[i], resolution=resolution)), now=T0 + 1)
            for i in range(4, 10)
        ]
        assert [r.blocks_written for r in results] == [0] * 5 + [1]
        counts = store.counts()
        assert (counts["waveform_staging"], counts["waveform_blocks"]) == (0, 1)
        [block] = store.waveform_blocks(BED, ECG_STREAM)
        assert (block["seq"], block["t"], block["sample_rate"]) == (0, T0, 500.0)
        assert block["resolution"] == resolution and block["unit"] == "mV"
        assert block["counts"].dtype.kind == "i"
        assert np.array_equal(block["counts"], np.concatenate(chunks))
        [row] = store.db.conn.execute("SELECT t, t_end, samples FROM waveform_blocks").fetchall()
        assert row == (T0, T0 + 10.0, 5000)
        assert [p["kind"] for p in store.pending("central")] == ["waveform"]


def test_staged_chunks_then_a_gap_make_two_blocks_and_flush_folds_after_reopen(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring, block_seconds=10.0) as store:
        store.write(pairs(BED, ecg(0, np.arange(100)), ecg(100, np.arange(100, 200))), now=T0)
    with TwinStore(path, ring, block_seconds=10.0) as store:
        store.write(pairs(BED, ecg(300, np.arange(300, 400))), now=T0)  # 100 samples lost
        assert store.counts()["waveform_blocks"] == 1
    with TwinStore(path, ring, block_seconds=10.0) as store:
        assert store.flush_waveforms(now=T0) == 1
        blocks = list(store.waveform_blocks(BED, ECG_STREAM))
        assert [(b["seq"], len(b["counts"])) for b in blocks] == [(0, 200), (300, 100)]
        assert np.array_equal(np.concatenate([b["counts"] for b in blocks]), np.r_[0:200, 300:400])
        assert store.counts()["waveform_staging"] == 0


def test_device_reconnect_restarting_its_sequence_keeps_ingest_going(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring, block_seconds=0.2) as store:
        store.write(pairs(BED, ecg(0, np.arange(100))), now=T0)
        # The device reconnects a minute later: its sequence starts again at 0.
        later = pairs(BED, ecg(0, np.arange(100), t0=T0 + 60), numeric(95.0, T0 + 60))
        store.write(later, now=T0 + 60)
        blocks = list(store.waveform_blocks(BED, ECG_STREAM))
        assert [b["t"] for b in blocks] == [T0, T0 + 60]
        assert [b["seq"] for b in blocks] == [0, 100]  # the store's index never repeats
    with TwinStore(path, ring, block_seconds=0.2) as store:
        # After a restart of the gateway too, and the device restarting once more.
        store.write(pairs(BED, ecg(0, np.arange(100), t0=T0 + 120)), now=T0 + 120)
        blocks = list(store.waveform_blocks(BED, ECG_STREAM))
        assert [b["seq"] for b in blocks] == [0, 100, 200]


# == 6. quota ==================================================================================
def fill_until_full(store: TwinStore, rng: np.random.Generator, seq: int) -> int:
    """Write 0.5 s noise chunks (one block each) until the quota refuses one."""
    for _ in range(10_000):
        try:
            store.write(pairs(BED, ecg(seq, noise(rng, 250))), now=T0 + seq / 500)
        except StoreFull:
            return seq
        seq += 250
    raise AssertionError("the quota never filled")


def test_quota_full_is_all_or_nothing_and_evicting_waveforms_makes_room(
    path: Path, ring: KeyRing
) -> None:
    rng = np.random.default_rng(11)
    with TwinStore(
        path, ring, destinations=[CENTRAL], block_seconds=0.5, max_bytes=400_000
    ) as store:
        store.admit(BED, Patient("Q", "MRN-Q", "1950-01-01"), T0)
        for i in range(20):
            t = T0 + i
            store.write(
                pairs(
                    BED,
                    numeric(90.0 + i, t),
                    DeviceEvent("ox-1", Condition.ARTIFACT, True, t, f"e{i}"),
                ),
                now=t,
            )
            store.write_alarm(BED, "alarm-engine", {"n": i}, t, t)
        ack_rows(store, "numeric", {r["id"] for r in store.rows("numeric", BED)}, T0 + 30)
        seq = fill_until_full(store, rng, 0)
        assert 300_000 < store.used_bytes() <= 400_000

        before = (store.counts(), outbox_rows(store))
        batch = pairs(
            BED,
            numeric(50.0, T0 + 100),
            ecg(seq, noise(rng, 250)),
            DeviceEvent("ox-1", Condition.LOW_BATTERY, True, T0 + 100, "full"),
        )
        with pytest.raises(StoreFull, match="quota"):
            store.write(batch, now=T0 + 100)
        big_alarm = {"condition": "asystole", "priority": "high", "note": "x" * 20_000}
        with pytest.raises(StoreFull):  # on a new bed with a new source: new rows everywhere
            store.write_alarm("bed-2", "alarm-engine-2", big_alarm, T0 + 100, T0 + 100)
        assert (store.counts(), outbox_rows(store)) == before

        # The newest blocks are synced: they go first, oldest unsynced ones only after.
        blocks = store.db.conn.execute(
            "SELECT id, length(sealed) FROM waveform_blocks ORDER BY t"
        ).fetchall()
        synced = {i for i, _ in blocks[-3:]}
        ack_rows(store, "waveform", synced, T0 + 100)
        synced_bytes = sum(size for i, size in blocks if i in synced)
        assert store.evict_waveforms(synced_bytes) == 3
        left = {i for (i,) in store.db.conn.execute("SELECT id FROM waveform_blocks")}
        assert left == {i for i, _ in blocks} - synced
        assert store.evict_waveforms(1) == 1
        left_after = {i for (i,) in store.db.conn.execute("SELECT id FROM waveform_blocks")}
        assert left - left_after == {blocks[0][0]}  # the oldest unsynced block
        assert store.evict_waveforms(150_000) > 10

        # Alarms, events and numerics (synced or not) are untouched; their outbox too.
        counts = store.counts()
        for table in ("numerics", "device_events", "alarm_log", "admissions"):
            assert counts[table] == before[0][table]
        assert [r["n"] for r in store.rows("alarm", BED)] == list(range(20))
        assert sum(1 for r in outbox_rows(store) if r[1] == "alarm" and r[4] is None) == 20

        # Ingest continues: the refused batch and the refused alarm now go in.
        assert store.write(batch, now=T0 + 101).stored == 3
        store.write_alarm("bed-2", "alarm-engine-2", big_alarm, T0 + 101, T0 + 101)
        assert [r["note"] for r in store.rows("alarm", "bed-2")] == [big_alarm["note"]]
        assert store.integrity() == "ok"


def test_quota_applies_again_when_the_store_is_reopened(path: Path, ring: KeyRing) -> None:
    rng = np.random.default_rng(5)
    with TwinStore(path, ring, block_seconds=0.5, max_bytes=200_000) as store:
        seq = fill_until_full(store, rng, 0)
    with TwinStore(path, ring, block_seconds=0.5, max_bytes=200_000) as store:
        with pytest.raises(StoreFull):
            store.write(pairs(BED, ecg(seq, noise(rng, 250))), now=T0)
        store.set_quota(400_000)
        store.write(pairs(BED, ecg(seq, noise(rng, 250))), now=T0)


def test_admit_refused_for_space_leaves_the_open_admission_usable(
    path: Path, ring: KeyRing
) -> None:
    rng = np.random.default_rng(9)
    with TwinStore(path, ring, block_seconds=0.5, max_bytes=200_000) as store:
        first = store.admit(BED, Patient("A", "MRN-A", "1950-01-01"), T0)
        seq = fill_until_full(store, rng, 0)
        with pytest.raises(StoreFull):
            store.admit(BED, Patient("B" * 30_000, "MRN-B", "1960-01-01"), T0 + 1)
        assert store.current_admission(BED) == first
        assert store.evict_waveforms(50_000) > 0
        store.write(pairs(BED, numeric(95.0, T0 + 2), ecg(seq, noise(rng, 250))), now=T0 + 2)
        assert [r["admission"] for r in store.rows("numeric", BED)] == [first]


# == 7. retention and shredding ==============================================================
def test_housekeeping_deletes_only_synced_rows_past_retention(path: Path, ring: KeyRing) -> None:
    now = T0 + 400 * DAY
    retention = Retention(numerics=30 * DAY, waveforms=3 * DAY, alarms=365 * DAY)
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=0.1) as store:
        times = {"ancient": now - 380 * DAY, "old": now - 40 * DAY, "recent": now - DAY}
        for label, t in times.items():
            store.write(
                pairs(
                    BED,
                    numeric(1.0 + len(label), t),
                    numeric(2.0 + len(label), t + 1),
                    DeviceEvent("ox-1", Condition.ARTIFACT, True, t, label),
                    ecg(int((t - T0) * 500), np.arange(50), t0=T0),
                ),
                now=t,
            )
            store.write_alarm(BED, "alarm-engine", {"label": label}, t, t)
        store.audit("tech", "export", bed_id=BED, detail="csv", now=times["ancient"])
        numerics = list(store.rows("numeric", BED))
        # Of each pair of numerics only the first is synced; everything else is synced.
        unsynced = {r["id"] for r in numerics if r["t"] in {t + 1 for t in times.values()}}
        pending = store.pending("central", 1000)
        store.ack(
            [p["id"] for p in pending if not (p["kind"] == "numeric" and p["row_id"] in unsynced)],
            now - 1,
        )
        done = store.housekeeping(now, retention)
        assert done == {
            "numerics": 2,
            "waveform_blocks": 2,
            "device_events": 2,
            "alarm_log": 1,
            "audit_log": 1,
            "admissions_shredded": 0,
        }
        assert sorted(r["t"] - now for r in store.rows("numeric", BED)) == [
            -380 * DAY + 1,
            -40 * DAY + 1,
            -DAY,
            -DAY + 1,
        ]
        assert [r["detail"] for r in store.rows("event", BED)] == ["recent"]
        assert [r["label"] for r in store.rows("alarm", BED)] == ["old", "recent"]
        assert [b["t"] for b in store.waveform_blocks(BED, ECG_STREAM)] == [times["recent"]]
        assert store.counts()["audit_log"] == 0
        # Pending outbox rows still all point at existing rows.
        for kind, table in TABLE_OF_KIND.items():
            dangling = store.db.conn.execute(
                f"SELECT COUNT(*) FROM outbox o WHERE o.kind = ? AND o.acked IS NULL AND NOT "
                f"EXISTS (SELECT 1 FROM {table} r WHERE r.id = o.row_id)",
                (kind,),
            ).fetchone()[0]
            assert dangling == 0


def test_discharged_synced_admission_past_retention_is_shredded_for_good(
    path: Path, ring: KeyRing
) -> None:
    # Alarms kept as long as discharged admissions: shredding waits for the longer of both.
    retention = Retention(
        discharged=30 * DAY, alarms=30 * DAY, numerics=365 * DAY, waveforms=365 * DAY
    )
    patient = Patient("Shredded Person", "MRN-SHRED-1", "1944-04-04")
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=0.1) as store:
        gone = store.admit(BED, patient, T0)
        store.write(
            pairs(
                BED,
                numeric(95.0, T0 + 1),
                ecg(0, np.arange(100)),
                DeviceEvent("ox-1", Condition.ARTIFACT, True, T0 + 1, "e"),
                ecg(100, np.arange(10)),
            ),
            now=T0 + 1,
        )
        store.write_alarm(BED, "alarm-engine", {"n": 1}, T0 + 1, T0 + 1)
        assert store.discharge(BED, T0 + DAY) == gone
        kept = store.admit(BED, Patient("Next", "MRN-NEXT", "1990-01-01"), T0 + DAY)
        store.write(pairs(BED, numeric(97.0, T0 + DAY + 1)), now=T0 + DAY + 1)
        ack_all(store, T0 + DAY + 2)
        wrapped, sealed_patient = store.db.conn.execute(
            "SELECT wrapped_key, patient FROM admissions WHERE id = ?", (gone,)
        ).fetchone()
        # Not yet: retention has not passed since discharge.
        assert store.housekeeping(T0 + 30 * DAY, retention)["admissions_shredded"] == 0
        assert store.patient(gone) == patient

        now = T0 + 32 * DAY
        assert store.housekeeping(now, retention)["admissions_shredded"] == 1
        row = store.db.conn.execute(
            "SELECT wrapped_key, patient, shredded FROM admissions WHERE id = ?", (gone,)
        ).fetchone()
        assert row == (None, None, now)
        for table in DATA_TABLES:
            n = store.db.conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE admission_id = ?", (gone,)
            ).fetchone()[0]
            assert n == 0, table
        with pytest.raises(StoreError, match="unrecoverable"):
            store.patient(gone)
        assert [r["admission"] for r in store.rows("numeric", BED)] == [kept]
        assert store.patient(kept) == Patient("Next", "MRN-NEXT", "1990-01-01")
        # Destroyed means gone from the bytes too, not only from the table.
        assert_absent(path, {"wrapped key": wrapped, "sealed patient": sealed_patient})
    assert_absent(path, {"wrapped key": wrapped, "sealed patient": sealed_patient})
    with TwinStore(path, ring) as store:
        with pytest.raises(StoreError, match="unrecoverable"):
            store.patient(gone)
        assert list(store.rows("numeric", BED)) != []  # the other admission's data stays
        assert store.waveform_streams(BED) == []  # both blocks were the shredded one's


def test_admission_with_unsynced_rows_is_not_shredded_until_acked(
    path: Path, ring: KeyRing
) -> None:
    retention = Retention(discharged=DAY, alarms=DAY)
    with TwinStore(path, ring, destinations=[CENTRAL]) as store:
        adm = store.admit(BED, Patient("P", "MRN-P", "1950-01-01"), T0)
        store.write(pairs(BED, numeric(95.0, T0 + 1), numeric(96.0, T0 + 2)), now=T0 + 2)
        store.write_alarm(BED, "alarm-engine", {"n": 1}, T0 + 2, T0 + 2)
        store.discharge(BED, T0 + 3)
        pending = store.pending("central")
        alarm_entry = next(p["id"] for p in pending if p["kind"] == "alarm")
        store.ack([p["id"] for p in pending if p["id"] != alarm_entry], T0 + 4)
        for day in (2, 10, 100):
            assert store.housekeeping(T0 + day * DAY, retention)["admissions_shredded"] == 0
            assert store.patient(adm) == Patient("P", "MRN-P", "1950-01-01")
            assert len(list(store.rows("alarm", BED))) == 1
        store.ack([alarm_entry], T0 + 101 * DAY)
        assert store.housekeeping(T0 + 101 * DAY, retention)["admissions_shredded"] == 1
        with pytest.raises(StoreError, match="unrecoverable"):
            store.patient(adm)
        assert list(store.rows("alarm", BED)) == []


# == 8. key rotation ============================================================================
def populated(path: Path, ring: KeyRing) -> dict[int, Patient]:
    patients = {}
    with TwinStore(path, ring, destinations=[CENTRAL], block_seconds=0.2) as store:
        for i in range(3):
            bed = f"bed-{i}"
            patient = Patient(f"Person {i}", f"MRN-{i}", "1950-01-01")
            patients[store.admit(bed, patient, T0)] = patient
            store.write(
                pairs(bed, numeric(90.0 + i, T0 + 1), ecg(0, np.arange(150) * (i + 1))), now=T0 + 1
            )
    return patients


def assert_readable(path: Path, ring: KeyRing, patients: dict[int, Patient]) -> None:
    with TwinStore(path, ring) as store:
        for adm, patient in patients.items():
            assert store.patient(adm) == patient
        for i in range(3):
            bed = f"bed-{i}"
            assert [r["value"] for r in store.rows("numeric", bed)] == [90.0 + i]
            assert store.flush_waveforms(T0 + 2) >= 0
            samples = np.concatenate([b["counts"] for b in store.waveform_blocks(bed, ECG_STREAM)])
            assert np.array_equal(samples, np.arange(150) * (i + 1))


def test_rewrap_moves_every_data_key_to_the_new_kek_without_rewriting_data(
    path: Path, kek: Kek, ring: KeyRing
) -> None:
    patients = populated(path, ring)
    new = generate_kek()
    with TwinStore(path, ring) as store:
        sealed_before = {
            t: store.db.conn.execute(f"SELECT sealed FROM {t} ORDER BY id").fetchall()
            for t in DATA_TABLES
        }
        wrapped_before = [
            w for (w,) in store.db.conn.execute("SELECT wrapped_key FROM admissions ORDER BY id")
        ]
        assert store.kek_ids() == {kek.id: 3}
        assert store.rewrap(KeyRing(new, kek)) == 3
        assert store.kek_ids() == {new.id: 3}
        for t in DATA_TABLES:  # data untouched, only the three small wrapped keys changed
            assert (
                store.db.conn.execute(f"SELECT sealed FROM {t} ORDER BY id").fetchall()
                == (sealed_before[t])
            )
        # The store goes on with the new key: a new admission is wrapped by it.
        store.admit("bed-9", None, T0 + 5)
        assert store.kek_ids() == {new.id: 4}
        # The old wrapped keys are gone from the files, even while the store stays open.
        assert_absent(path, {f"old wrapped key {i}": w for i, w in enumerate(wrapped_before)})
    assert_readable(path, KeyRing(new), patients)
    with TwinStore(path, KeyRing(kek)) as store:
        for adm in patients:
            with pytest.raises(KeyProblem, match=new.id):
                store.patient(adm)


def test_rewrap_failing_on_one_key_changes_nothing(path: Path, kek: Kek, ring: KeyRing) -> None:
    patients = populated(path, ring)
    move_sealed(path, "admissions", "wrapped_key", 1, 3)  # admission 3's key is broken
    with TwinStore(path, ring) as store:
        with pytest.raises(DecryptionFailed, match="admission 3 key"):
            store.rewrap(KeyRing(generate_kek(), kek))
        assert store.kek_ids() == {kek.id: 3}
        assert store.patient(1) == patients[1]
        store.admit("bed-9", None, T0)  # still wraps under the old key
        assert store.kek_ids() == {kek.id: 4}


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> keys.KeySource:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return keys.KeySource(key_file=tmp_path / "keys" / "kek", credential="bedside-gateway-kek")


def test_keys_rotate_end_to_end(path: Path, source: keys.KeySource) -> None:
    old = keys.init_key(source)
    patients = populated(path, keys.load_keyring(source))
    was, new, count = keys.rotate(source, path)
    assert (was.id, count) == (old.id, 3)
    assert new.id != old.id
    assert read_key_file(source.key_file).id == new.id
    assert not source.pending.exists()
    ring = keys.load_keyring(source)
    assert ring.ids == (new.id,)
    assert_readable(path, ring, patients)
    status = keys.status(source, path)
    assert status["ok"] and status["store_keys"] == {new.id: 3}
    assert not status["rotation_pending"]
    with TwinStore(path, KeyRing(old)) as store, pytest.raises(KeyProblem):
        store.patient(1)


def test_rotation_interrupted_before_rewrap_is_completed(
    path: Path, source: keys.KeySource
) -> None:
    old = keys.init_key(source)
    patients = populated(path, keys.load_keyring(source))
    pending = generate_kek()
    write_key_file(source.pending, pending)  # step 1 done, then the process died
    assert keys.status(source, path)["rotation_pending"]
    assert_readable(path, keys.load_keyring(source), patients)  # starts fine meanwhile
    was, new, count = keys.rotate(source, path)
    assert (was.id, new.id, count) == (old.id, pending.id, 3)
    assert read_key_file(source.key_file).id == pending.id
    assert not source.pending.exists()
    assert_readable(path, KeyRing(pending), patients)


def test_rotation_interrupted_after_rewrap_is_completed(path: Path, source: keys.KeySource) -> None:
    old = keys.init_key(source)
    patients = populated(path, keys.load_keyring(source))
    pending = generate_kek()
    write_key_file(source.pending, pending)
    with TwinStore(path, KeyRing(old, pending)) as store:  # step 2 done, then it died
        assert store.rewrap(KeyRing(pending, old)) == 3
    # Until the swap, the gateway needs both files: the rows name the new key.
    ring = keys.load_keyring(source)
    assert set(ring.ids) == {old.id, pending.id}
    assert_readable(path, ring, patients)
    with TwinStore(path, KeyRing(old)) as store, pytest.raises(KeyProblem):
        store.patient(1)
    status = keys.status(source, path)
    assert status["ok"] and status["rotation_pending"]
    assert status["store_keys"] == {pending.id: 3}
    was, new, count = keys.rotate(source, path)
    assert (was.id, new.id, count) == (old.id, pending.id, 3)
    assert read_key_file(source.key_file).id == pending.id
    assert not source.pending.exists()
    assert_readable(path, keys.load_keyring(source), patients)
    assert keys.load_keyring(source).ids == (pending.id,)


# == 9. times and sequences of any numeric type; unusable times =============================
def test_whole_number_and_numpy_times_and_sequences_read_back(path: Path, ring: KeyRing) -> None:
    """``t`` binds as a float and ``seq`` as an int whatever the caller passed: the columns
    give back REAL and INTEGER, so an int time sealed as an int could never be opened."""
    t = 1_700_000_000  # an int, as a driver computing whole seconds may pass it
    wave = Waveform(
        "ecg-1",
        ECG_LEAD_II,
        MILLIVOLT,
        500,  # an int rate too
        t,
        np.arange(100, dtype=np.float64),
        sequence=np.int64(0),  # type: ignore[arg-type]
    )
    with TwinStore(path, ring, destinations=[CENTRAL]) as store:
        result = store.write(
            pairs(
                BED,
                numeric(95.0, t),
                numeric(96.0, np.int64(t + 1)),  # type: ignore[arg-type]
                DeviceEvent("ox-1", Condition.ARTIFACT, True, t, "whole"),
                wave,
            ),
            now=t,
        )
        assert (result.stored, result.rejected) == (4, 0)
        store.write_alarm(BED, "alarm-engine", {"n": 1}, t, t)  # an int time too
    with TwinStore(path, ring) as store:  # the staged chunk opens again after a restart
        assert store.problems == []
        rows = list(store.rows("numeric", BED))
        assert [(r["t"], r["value"]) for r in rows] == [(T0, 95.0), (T0 + 1, 96.0)]
        assert all(type(r["t"]) is float for r in rows)
        assert [r["detail"] for r in store.rows("event", BED)] == ["whole"]
        assert [r["n"] for r in store.rows("alarm", BED)] == [1]
        assert store.flush_waveforms(now=T0) == 1
        [block] = store.waveform_blocks(BED, ECG_STREAM)
        assert (block["t"], block["sample_rate"], block["seq"]) == (T0, 500.0, 0)
        assert np.array_equal(block["counts"], np.arange(100))


def test_a_reading_with_a_non_finite_time_is_refused_alone_not_its_batch(
    path: Path, ring: KeyRing
) -> None:
    nan, inf = float("nan"), float("inf")
    batch = pairs(
        BED,
        numeric(95.0, T0),
        numeric(96.0, nan),
        DeviceEvent("ox-1", Condition.ARTIFACT, True, inf, "never"),
        ecg(0, np.arange(50), t0=nan),
        Waveform("ecg-2", ECG_LEAD_II, MILLIVOLT, 0.0, T0, np.zeros(5)),  # nor a usable rate
        ecg(0, np.arange(50)),
        numeric(97.0, T0 + 1),
    )
    with TwinStore(path, ring, destinations=[CENTRAL]) as store:
        result = store.write(batch, now=T0 + 1)
        assert (result.stored, result.rejected) == (3, 4)
        assert result.rejected_by_source == {"ox-1": 2, "ecg-1": 1, "ecg-2": 1}
        assert [r["value"] for r in store.rows("numeric", BED)] == [95.0, 97.0]
        assert list(store.rows("event", BED)) == []
        assert store.counts()["waveform_staging"] == 1
        # An alarm is one record: refused with a clear error, nothing written.
        before = store.counts()
        with pytest.raises(StoreError, match="not a finite number"):
            store.write_alarm(BED, "alarm-engine", {"n": 1}, nan, T0 + 2)
        assert store.counts() == before
        # And the store goes on.
        assert store.write(pairs(BED, numeric(98.0, T0 + 2)), now=T0 + 2).stored == 1


# == 10. clear columns and stream names are not trusted =====================================
def test_sample_rate_comes_from_the_sealed_header_not_the_clear_column(
    path: Path, ring: KeyRing
) -> None:
    with TwinStore(path, ring, block_seconds=0.2) as store:
        store.write(pairs(BED, ecg(0, np.arange(100))), now=T0)  # one 0.2 s block
        store.write(pairs(BED, ecg(100, np.arange(100, 150))), now=T0)  # one staged chunk
    conn = db(path)
    conn.execute("UPDATE waveform_blocks SET sample_rate = 250.0")
    conn.execute("UPDATE waveform_staging SET sample_rate = 125.0")
    conn.close()
    with TwinStore(path, ring, block_seconds=0.2) as store:
        assert store.flush_waveforms(now=T0) == 1
        blocks = list(store.waveform_blocks(BED, ECG_STREAM))
        assert [(b["seq"], b["sample_rate"]) for b in blocks] == [(0, 500.0), (100, 500.0)]


def test_a_block_sealed_without_a_rate_in_its_header_uses_the_column(
    path: Path, ring: KeyRing
) -> None:
    """Blocks written before the rate was sealed still read back (their column's rate)."""
    with TwinStore(path, ring) as store:
        adm = store.admit(BED, None, T0)
        stream = store._stream_id(ECG_STREAM)
        counts = np.arange(40, dtype=np.int64)
        sealed = store._key(adm).seal(
            _pack_samples({"unit": "mV", "resolution": 1.0}, counts),
            _row_aad("waveform_blocks", BED, adm, stream, ECG_STREAM, 0, T0),
        )
        store.db.conn.execute(
            "INSERT INTO waveform_blocks (admission_id, stream_id, seq, t, t_end, sample_rate, "
            "samples, sealed) VALUES (?, ?, 0, ?, ?, 200.0, 40, ?)",
            (adm, stream, T0, T0 + 0.2, sealed),
        )
        [block] = store.waveform_blocks(BED, ECG_STREAM)
        assert block["sample_rate"] == 200.0
        assert np.array_equal(block["counts"], counts)


def test_stream_names_swapped_in_the_streams_table_are_detected(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring, block_seconds=0.2) as store:
        store.write(
            pairs(
                BED,
                numeric(95.0, T0),
                numeric(61.0, T0, code=PULSE_RATE, unit=BEATS_PER_MINUTE),
                ecg(0, np.arange(100)),
                ecg(0, np.arange(100), source="ecg-2"),
            ),
            now=T0,
        )
        ids = dict(store.db.conn.execute("SELECT name, id FROM streams").fetchall())
    conn = db(path)

    def swap(a: str, b: str) -> None:
        conn.execute("UPDATE streams SET name = '#swap' WHERE id = ?", (ids[a],))
        conn.execute("UPDATE streams SET name = ? WHERE id = ?", (a, ids[b]))
        conn.execute("UPDATE streams SET name = ? WHERE id = ?", (b, ids[a]))

    swap(SPO2_STREAM, f"ox-1/{PULSE_RATE.refid}")
    swap(ECG_STREAM, f"ecg-2/{ECG_LEAD_II.refid}")
    conn.close()
    with TwinStore(path, ring) as store:
        failures: list[str] = []
        assert list(store.rows("numeric", BED, failures=failures)) == []
        assert len(failures) == 2 and all("numerics row" in f for f in failures)
        with pytest.raises(DecryptionFailed, match="waveform_blocks row"):
            list(store.waveform_blocks(BED, ECG_STREAM))


# == 11. damaged values of the wrong SQLite type, rollback, rewrap race ======================
BAD_UTF8 = "CAST(x'fffe00c3' AS TEXT)"


def test_text_in_a_sealed_column_is_a_damaged_row_not_a_crash(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring, block_seconds=0.2) as store:
        adm = store.admit(BED, Patient("A", "MRN-A", "1950-01-01"), T0)
        other = store.admit("bed-2", Patient("B", "MRN-B", "1950-01-01"), T0)
        store.write(pairs(BED, numeric(95.0, T0), numeric(96.0, T0 + 1)), now=T0 + 1)
        store.write(pairs(BED, ecg(0, np.arange(100))), now=T0 + 1)  # a block
        store.write(pairs(BED, ecg(100, np.arange(20))), now=T0 + 1)  # a staged chunk
        store.write_alarm(BED, "alarm-engine", {"n": 1}, T0, T0)
        first = min(r["id"] for r in store.rows("numeric", BED))
    conn = db(path)
    conn.execute(f"UPDATE numerics SET sealed = {BAD_UTF8} WHERE id = ?", (first,))
    conn.execute(f"UPDATE alarm_log SET sealed = {BAD_UTF8}")
    conn.execute(f"UPDATE waveform_blocks SET sealed = {BAD_UTF8}")
    conn.execute(f"UPDATE waveform_staging SET sealed = {BAD_UTF8}")
    conn.execute(f"UPDATE admissions SET patient = {BAD_UTF8} WHERE id = ?", (adm,))
    conn.execute(f"UPDATE admissions SET wrapped_key = {BAD_UTF8} WHERE id = ?", (other,))
    conn.close()
    with TwinStore(path, ring) as store:  # opens, reporting the staged chunk
        assert len(store.problems) == 1 and "waveform_staging row" in store.problems[0]
        failures: list[str] = []
        assert [r["value"] for r in store.rows("numeric", BED, failures=failures)] == [96.0]
        [failure] = failures
        assert f"cannot decrypt numerics row {first}:" in failure
        with pytest.raises(DecryptionFailed, match="alarm_log row"):
            list(store.rows("alarm", BED))
        with pytest.raises(DecryptionFailed, match="waveform_blocks row"):
            list(store.waveform_blocks(BED, ECG_STREAM))
        with pytest.raises(DecryptionFailed, match=rf"admission {adm}\b"):
            store.patient(adm)
        with pytest.raises(DecryptionFailed, match=rf"admission {other} key"):
            store.patient(other)


def test_a_rollback_does_not_report_damaged_rows_twice(path: Path, ring: KeyRing) -> None:
    with TwinStore(path, ring) as store:
        for seq in range(0, 300, 100):
            store.write(pairs(BED, ecg(seq, np.arange(seq, seq + 100))), now=T0)
        ids = [r for (r,) in store.db.conn.execute("SELECT id FROM waveform_staging ORDER BY id")]
    move_sealed(path, "waveform_staging", "sealed", ids[2], ids[1])
    bad = Waveform("ecg-2", ECG_LEAD_II, MILLIVOLT, 500.0, T0, np.array([5.0]))
    with TwinStore(path, ring) as store:
        assert len(store.problems) == 1
        for _ in range(3):  # each refused batch rolls back and reloads the state
            with fails_on(store, bad), pytest.raises(StoreError, match="disk error"):
                store.write(pairs(BED, numeric(97.0, T0 + 1), bad), now=T0 + 1)
        assert len(store.problems) == 1
        assert f"waveform_staging row {ids[1]}" in store.problems[0]


def test_rewrap_includes_an_admission_added_just_before_its_transaction(
    path: Path, kek: Kek, ring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (``bedside-gateway admit``) adds an admission while ``keys rotate``
    runs: the rows to re-wrap are read inside the transaction, so it is not left behind
    under the old key."""
    patients = populated(path, ring)
    new = generate_kek()
    late_key = new_data_key()
    with TwinStore(path, ring) as store:
        begin = store._transaction

        def racing(*, full: bool = False) -> Any:
            other = db(path)
            late = 1 + other.execute("SELECT MAX(id) FROM admissions").fetchone()[0]
            kek_id, wrapped = ring.wrap(late_key, associated_data("admission-key", "bed-9", late))
            other.execute(
                "INSERT INTO admissions (id, bed_id, started, kek_id, wrapped_key) "
                "VALUES (?, 'bed-9', ?, ?, ?)",
                (late, T0, kek_id, wrapped),
            )
            other.close()
            monkeypatch.setattr(store, "_transaction", begin)
            return begin(full=full)

        monkeypatch.setattr(store, "_transaction", racing)
        assert store.rewrap(KeyRing(new, kek)) == len(patients) + 1
        assert store.kek_ids() == {new.id: len(patients) + 1}
    assert_readable(path, KeyRing(new), patients)


# == 12. shredding waits for alarm retention; the WAL purge reports a busy checkpoint ========
def test_shredding_keeps_alarms_for_their_own_retention(path: Path, ring: KeyRing) -> None:
    retention = Retention(discharged=30 * DAY, alarms=365 * DAY)
    with TwinStore(path, ring, destinations=[CENTRAL]) as store:
        adm = store.admit(BED, Patient("P", "MRN-P", "1950-01-01"), T0)
        store.write(pairs(BED, numeric(95.0, T0 + 1)), now=T0 + 1)
        store.write_alarm(BED, "alarm-engine", {"condition": "spo2_low"}, T0 + 1, T0 + 1)
        store.discharge(BED, T0 + 2)
        ack_all(store, T0 + 3)
        for day in (32, 200, 365):
            assert store.housekeeping(T0 + day * DAY, retention)["admissions_shredded"] == 0
            assert [r["condition"] for r in store.rows("alarm", BED)] == ["spo2_low"]
        assert store.housekeeping(T0 + 366 * DAY, retention)["admissions_shredded"] == 1
        with pytest.raises(StoreError, match="unrecoverable"):
            store.patient(adm)


def test_a_wal_purge_kept_busy_by_a_reader_is_reported_and_retried(
    path: Path, ring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TwinStore, "wal_purge_wait_ms", 20)
    retention = Retention(discharged=DAY, alarms=DAY)
    with TwinStore(path, ring, destinations=[CENTRAL]) as store:
        adm = store.admit(BED, Patient("P", "MRN-P", "1950-01-01"), T0)
        store.write(pairs(BED, numeric(95.0, T0 + 1)), now=T0 + 1)
        store.discharge(BED, T0 + 2)
        ack_all(store, T0 + 3)
        (wrapped,) = store.db.conn.execute(
            "SELECT wrapped_key FROM admissions WHERE id = ?", (adm,)
        ).fetchone()
        reader = db(path)  # an export reading the file meanwhile
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM admissions").fetchone()
        assert store.housekeeping(T0 + 10 * DAY, retention)["admissions_shredded"] == 1
        assert store.wal_purge_pending  # the old page images may still be in the WAL
        reader.execute("COMMIT")
        reader.close()
        assert store.housekeeping(T0 + 11 * DAY, retention)["admissions_shredded"] == 0
        assert not store.wal_purge_pending
        assert_absent(path, {"wrapped key": wrapped})


def test_a_waveform_that_is_not_whole_counts_is_refused_alone(path: Path, ring: KeyRing) -> None:
    bad = Waveform(
        "ecg-1", ECG_LEAD_II, MILLIVOLT, 500.0, T0, np.array([0.0, 0.0015]), resolution=0.001
    )
    nan = Waveform("ecg-1", ECG_LEAD_II, MILLIVOLT, 500.0, T0, np.array([np.nan]), sequence=2)
    with TwinStore(path, ring) as store:
        result = store.write(pairs(BED, bad, nan, numeric(97.0, T0)), now=T0)
        assert result.rejected == 2 and result.stored == 1
        assert [r["value"] for r in store.rows("numeric", BED)] == [97.0]
