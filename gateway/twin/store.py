"""The twin's memory: a durable, encrypted SQLite store of everything a bed produces.

* **Schema** comes from numbered SQL files in ``migrations/``; ``PRAGMA user_version`` is
  the applied version. A new file is created at the newest version; an older one is
  upgraded through every missing step inside one transaction (all or nothing); a file newer
  than this code is refused with a message naming the fix.
* **Encryption** (``crypto.py``): each admission has its own data key, stored wrapped by the
  key-encryption key. Every value column is sealed with AES-256-GCM and bound to its row by
  associated data (table, bed, admission, stream id *and* stream name, sequence, time), so a
  ciphertext moved to another row, or a stream renamed in ``streams``, fails to open. Times
  are bound as floats and sequences as ints whatever type the caller passed (the ``t``
  column is REAL), and a reading whose time is not a finite number is refused on its own
  (``WriteResult.rejected``), never failing its batch. Index columns stay in clear; what
  reading needs beyond indexing (a waveform's sample rate, unit, resolution) is taken from
  the sealed header, never from a clear column. A sealed column holding anything but a
  blob is a damaged row (:class:`DecryptionFailed`), like any other tampering.
* **Durability**: :meth:`TwinStore.write` commits a batch in one transaction; a reading
  counts as stored only once that transaction has committed. Bulk data uses
  ``synchronous=NORMAL`` (WAL: nothing committed is lost when the process dies); alarm and
  audit rows commit with ``synchronous=FULL`` (nothing committed is lost on power loss).
* **Outbox**: every stored row gets one outbox row per destination that carries its kind,
  in the same transaction, so sync can never miss a row nor send one that was rolled back.
* **Numerics** are stored as a step function: a reading equal to the last stored one of its
  stream (value, unit and status) within ``numeric_heartbeat`` seconds is not written again.
  The stored series still gives every reading's exact value at its time; at three readings
  a second per metric this divides the numerics' size by about ten.
* **Waveforms** are committed chunk by chunk into a staging table within the batch latency,
  then folded into compressed blocks of ``block_seconds`` (``waveblock.py``) in the
  transaction that deletes the staged chunks. ``seq`` of a chunk or block is the store's own
  index of its first sample in its admission's stream (:meth:`TwinStore._store_seq`), not
  the device's sequence, which restarts when the device reconnects.
* **Retention** (:meth:`TwinStore.housekeeping`): rows go once synced and past their class's
  retention; a discharged admission is shredded (rows deleted, data key destroyed) only once
  it ended more than ``max(retention.discharged, retention.alarms)`` ago, so shredding never
  takes alarms before their own retention.

All methods are synchronous and must be called from one thread at a time: the gateway runs
them in a single writer thread (``writer.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import numbers
import re
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.readings import DeviceEvent, Identity, Numeric, Reading, Waveform
from gateway.twin.crypto import (
    DataKey,
    DecryptionFailed,
    KeyRing,
    associated_data,
    new_data_key,
)
from gateway.twin.errors import StoreCorrupt, StoreError, StoreFull, StoreVersionError
from gateway.twin.vocabulary import Destination, Patient, Retention
from gateway.twin.waveblock import decode_block, encode_block

# sqlite_utils imports pandas whenever it is installed (wfdb installs it) only to map
# pandas.Timestamp columns, which the store never writes: 31 MiB of the daemon's memory.
# Hide pandas for this one import; a process that already has pandas keeps it.
_HIDE_PANDAS = "pandas" not in sys.modules
if _HIDE_PANDAS:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` then fails
try:
    import sqlite_utils
finally:
    if _HIDE_PANDAS:
        del sys.modules["pandas"]

__all__ = [
    "Destination",
    "Patient",
    "Retention",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreVersionError",
    "TwinStore",
]

MIGRATIONS = resources.files("gateway.twin") / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

#: Kinds of stored row, in sync priority order (0 is sent first).
KIND_PRIORITY: Mapping[str, int] = {"alarm": 0, "audit": 1, "event": 2, "numeric": 3, "waveform": 4}
#: Fields a row leaves out when empty, restored on reading.
_DEFAULTS: Mapping[str, Mapping[str, Any]] = {"numerics": {"status": [], "device_time": None}}
_TABLE_OF_KIND: Mapping[str, str] = {
    "alarm": "alarm_log",
    "event": "device_events",
    "numeric": "numerics",
    "waveform": "waveform_blocks",
    "audit": "audit_log",
}


@dataclass(slots=True)
class WriteResult:
    """What one committed batch stored. ``stored`` counts readings acknowledged.

    ``rejected`` counts readings refused on their own (a time that is not a finite number, a
    waveform without a usable sample rate): they are not stored and not in ``stored``, and
    the rest of the batch is. ``rejected_by_source`` counts them per device.
    """

    stored: int = 0
    numerics_written: int = 0
    numerics_repeated: int = 0
    waveform_chunks: int = 0
    blocks_written: int = 0
    events_written: int = 0
    rejected: int = 0
    rejected_by_source: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One pending outbox entry with its row decrypted, ready for a destination's encoder.

    ``record`` is the row's decrypted JSON (for waveforms: the block header and integer
    ``counts``); ``stream`` is ``"<device id>/<MDC reference id>"`` (``"audit"`` for audit
    entries); ``t`` UTC seconds; ``admission`` is ``None`` for audit entries.
    """

    outbox_id: int
    kind: str
    row_id: int
    attempts: int
    created: float
    bed_id: str
    admission: int | None
    stream: str
    seq: int
    t: float
    record: dict[str, Any]


@dataclass(slots=True)
class _Pending:
    """Staged waveform chunks of one stream, not yet folded into a block."""

    sample_rate: float
    unit: str
    resolution: float
    t: float  # first sample, UTC seconds
    seq: int  # the store's index of the first sample in this admission's stream
    device_seq: int  # the device's sequence of the first sample (restarts on reconnect)
    samples: int = 0
    staging_ids: list[int] = field(default_factory=list)
    chunks: list[npt.NDArray[np.int64]] = field(default_factory=list)

    @property
    def next_seq(self) -> int:
        return self.seq + self.samples

    @property
    def next_device_seq(self) -> int:
        return self.device_seq + self.samples

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


class TwinStore:
    """One SQLite file holding every bed's admissions, readings, alarms and audit trail."""

    def __init__(
        self,
        path: Path,
        keyring: KeyRing,
        *,
        destinations: Sequence[Destination] = (),
        block_seconds: float = 10.0,
        numeric_heartbeat: float = 10.0,
        max_bytes: int | None = None,
        migrations: Any = MIGRATIONS,
    ) -> None:
        self.path = path
        self._keyring = keyring
        self._destinations = tuple(destinations)
        self.block_seconds = block_seconds
        self.numeric_heartbeat = numeric_heartbeat
        self._keys: dict[int, DataKey] = {}
        self._open_admission: dict[str, int] = {}
        self._stream_ids: dict[str, int] = {}
        self._stream_names: dict[int, str] = {}
        self._seq: dict[tuple[str, int, int], int] = {}
        self._last_numeric: dict[tuple[int, int], tuple[tuple[Any, ...], float]] = {}
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._wave_next: dict[tuple[int, int], int] = {}
        self._seq_offset: dict[tuple[int, int], int] = {}
        self._orphans: list[tuple[tuple[int, int], _Pending]] = []
        #: Rows found damaged while opening (technician-facing lines, no data).
        self.problems: list[str] = []
        #: True while the WAL could not be emptied after a shredding or a re-wrap (another
        #: connection was reading): the -wal file may still hold destroyed or old wrapped
        #: keys. Every :meth:`housekeeping` tries again until it succeeds.
        self.wal_purge_pending = False
        self._closed = False
        self.db = _connect(path)
        # Which file was opened: a database deleted or replaced under an open connection goes
        # on accepting writes that the next start never sees (file_problem reports it).
        self._file_id = _file_id(path)
        try:
            self.version = migrate(self.db.conn, _migration_files(migrations))
            self.db.conn.execute("PRAGMA foreign_keys = ON")
            if max_bytes is not None:
                self.set_quota(max_bytes)
            self._load_state()
        except BaseException:
            self.db.conn.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for key in self._keys.values():
            key.destroy()
        self._keys.clear()
        self.db.conn.close()

    def __enter__(self) -> TwinStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def set_quota(self, max_bytes: int) -> None:
        """Cap the file at ``max_bytes`` (SQLite then refuses to grow it: :class:`StoreFull`)."""
        page_size = int(self.db.conn.execute("PRAGMA page_size").fetchone()[0])
        pages = max(1, max_bytes // page_size)
        self.db.conn.execute(f"PRAGMA max_page_count = {pages}")

    def _load_state(self) -> None:
        conn = self.db.conn
        # Reloaded from the file (after a rollback too): what it reports is found afresh.
        self.problems.clear()
        self._stream_ids = {name: i for i, name in conn.execute("SELECT id, name FROM streams")}
        self._stream_names = {i: name for name, i in self._stream_ids.items()}
        self._open_admission = {
            bed: i
            for i, bed in conn.execute("SELECT id, bed_id FROM admissions WHERE ended IS NULL")
        }
        self._seq.clear()
        for table in ("numerics", "device_events", "alarm_log"):
            for adm, stream, seq in conn.execute(
                f"SELECT admission_id, stream_id, MAX(seq) FROM {table} "
                "GROUP BY admission_id, stream_id"
            ):
                self._seq[(table, adm, stream)] = seq
        self._last_numeric.clear()
        self._pending.clear()
        # The store numbers each stream's samples itself (the device's sequence restarts
        # when it reconnects): continue after the last block or staged chunk.
        self._wave_next = {}
        self._seq_offset = {}
        self._orphans = []
        for table in ("waveform_blocks", "waveform_staging"):
            for adm, stream, end in conn.execute(
                f"SELECT admission_id, stream_id, MAX(seq + samples) FROM {table} "
                "GROUP BY admission_id, stream_id"
            ):
                key = (adm, stream)
                self._wave_next[key] = max(self._wave_next.get(key, 0), int(end))
        rows = conn.execute(
            "SELECT s.id, s.admission_id, s.stream_id, n.name, s.seq, s.t, s.sample_rate, "
            "CAST(s.sealed AS BLOB), a.bed_id FROM waveform_staging s "
            "JOIN admissions a ON a.id = s.admission_id JOIN streams n ON n.id = s.stream_id "
            "ORDER BY s.admission_id, s.stream_id, s.seq"
        ).fetchall()
        for row_id, adm, stream, name, seq, t, rate, sealed, bed in rows:
            try:
                header, counts = self._open_samples(
                    sealed,
                    "waveform_staging",
                    bed,
                    adm,
                    stream,
                    name,
                    seq,
                    t,
                    f"waveform_staging row {row_id}",
                )
            except DecryptionFailed as exc:
                # One damaged chunk must not keep the store (and every bed) from opening:
                # it is left in place, reported, and never folded into a block.
                self.problems.append(str(exc))
                continue
            key = (adm, stream)
            device_seq = int(header.get("device_seq", seq))
            pending = self._pending.get(key)
            if pending is None or pending.next_seq != seq or pending.next_device_seq != device_seq:
                if pending is not None:
                    # Normally a run is folded as soon as the next one starts; two runs
                    # staged for one stream means a chunk between them was unreadable.
                    self._orphans.append((key, pending))
                # The sealed header's rate, not the clear column (older chunks lack it).
                rate = float(header.get("sample_rate", rate))
                pending = _Pending(rate, header["unit"], header["resolution"], t, seq, device_seq)
                self._pending[key] = pending
                self._seq_offset[key] = seq - device_seq
            pending.staging_ids.append(row_id)
            pending.chunks.append(counts)
            pending.samples += len(counts)

    # -- admissions ------------------------------------------------------------------------
    def admit(self, bed_id: str, patient: Patient | None, now: float) -> int:
        """Start a new admission at ``bed_id``, discharging any open one first."""
        with self._atomic():
            self._discharge(bed_id, now)
            return self._admit(bed_id, patient, now)

    def discharge(self, bed_id: str, now: float) -> int | None:
        """End the open admission at ``bed_id``; returns its id, or None if there was none."""
        with self._atomic():
            return self._discharge(bed_id, now)

    def patient(self, admission_id: int) -> Patient | None:
        row = self.db.conn.execute(
            "SELECT bed_id, CAST(patient AS BLOB), wrapped_key IS NULL FROM admissions "
            "WHERE id = ?",
            (admission_id,),
        ).fetchone()
        if row is None:
            return None
        bed, sealed, shredded = row
        if shredded:
            raise StoreError(
                f"admission {admission_id} was shredded: its data key is destroyed and its "
                "data unrecoverable by design"
            )
        if sealed is None:
            return None
        plain = self._key(admission_id).open(
            sealed, _aad("admissions", bed, admission_id), context=f"admission {admission_id}"
        )
        return Patient(**json.loads(plain))

    def current_admission(self, bed_id: str) -> int | None:
        return self._open_admission.get(bed_id)

    def admissions(self, bed_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, bed_id, started, ended, kek_id, shredded FROM admissions"
        params: tuple[Any, ...] = ()
        if bed_id is not None:
            sql += " WHERE bed_id = ?"
            params = (bed_id,)
        return list(self.db.query(sql + " ORDER BY id", params))

    def _admit(self, bed_id: str, patient: Patient | None, now: float) -> int:
        conn = self.db.conn
        cursor = conn.execute(
            "INSERT INTO admissions (bed_id, started) VALUES (?, ?)", (bed_id, now)
        )
        admission_id = int(cursor.lastrowid or 0)
        data_key = new_data_key()
        kek_id, wrapped = self._keyring.wrap(data_key, _key_aad(admission_id, bed_id))
        key = DataKey(data_key)
        sealed = None
        if patient is not None:
            plain = json.dumps(
                {"name": patient.name, "mrn": patient.mrn, "birth_date": patient.birth_date}
            ).encode()
            sealed = key.seal(plain, _aad("admissions", bed_id, admission_id))
        conn.execute(
            "UPDATE admissions SET kek_id = ?, wrapped_key = ?, patient = ? WHERE id = ?",
            (kek_id, wrapped, sealed, admission_id),
        )
        self._keys[admission_id] = key
        self._open_admission[bed_id] = admission_id
        return admission_id

    def _discharge(self, bed_id: str, now: float) -> int | None:
        admission_id = self._open_admission.get(bed_id)
        if admission_id is None:
            return None
        for (adm, stream), _pending in list(self._pending.items()):
            if adm == admission_id:
                self._fold_block(bed_id, adm, stream, WriteResult(), now)
        self.db.conn.execute("UPDATE admissions SET ended = ? WHERE id = ?", (now, admission_id))
        del self._open_admission[bed_id]
        return admission_id

    def _key(self, admission_id: int) -> DataKey:
        key = self._keys.get(admission_id)
        if key is not None:
            return key
        row = self.db.conn.execute(
            "SELECT bed_id, kek_id, CAST(wrapped_key AS BLOB) FROM admissions WHERE id = ?",
            (admission_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"admission {admission_id} does not exist")
        bed, kek_id, wrapped = row
        if wrapped is None:
            raise StoreError(
                f"admission {admission_id} was shredded: its data key is destroyed and its "
                "data unrecoverable by design"
            )
        raw = self._keyring.unwrap(
            kek_id, wrapped, _key_aad(admission_id, bed), context=f"admission {admission_id} key"
        )
        key = DataKey(raw)
        self._keys[admission_id] = key
        return key

    # -- ingest ----------------------------------------------------------------------------
    def write(self, batch: Sequence[tuple[str, Reading]], now: float) -> WriteResult:
        """Commit ``batch`` of (bed id, reading) in one transaction; all or nothing.

        ``now`` is gateway wall time (UTC seconds), used for admissions and the outbox.
        Raises :class:`StoreFull` when the quota or disk has no room (nothing is written).
        """
        result = WriteResult()
        with self._atomic():
            self._fold_orphans(result, now)
            for bed_id, reading in batch:
                self._write_one(bed_id, reading, now, result)
        return result

    @contextlib.contextmanager
    def _atomic(self, *, full: bool = False) -> Iterator[None]:
        """A transaction that also puts the in-memory mirrors (open admissions, stream ids,
        sequences, last numerics, staged chunks, keys) back as the file has them if it rolls
        back; otherwise a refused alarm or admission would leave ids of rows that do not
        exist, and every later write using them would fail."""
        try:
            with self._transaction(full=full):
                yield
        except BaseException:
            if not self._closed:
                self._keys = {k: v for k, v in self._keys.items() if self._admission_exists(k)}
                self._load_state()
            raise

    def _admission_exists(self, admission_id: int) -> bool:
        return (
            self.db.conn.execute(
                "SELECT 1 FROM admissions WHERE id = ?", (admission_id,)
            ).fetchone()
            is not None
        )

    def _admission_for(self, bed_id: str, now: float) -> int:
        admission_id = self._open_admission.get(bed_id)
        if admission_id is None:
            # A bed with no patient bound still has its data kept, under its own key.
            admission_id = self._admit(bed_id, None, now)
        return admission_id

    def _write_one(self, bed_id: str, reading: Reading, now: float, result: WriteResult) -> None:
        t = _finite(reading.start_time if isinstance(reading, Waveform) else reading.time)
        counts = None
        if isinstance(reading, Waveform) and t is not None and _positive(reading.sample_rate):
            try:
                counts = _to_counts(reading.samples, float(reading.resolution))
            except StoreError:
                t = None
        if t is None or (isinstance(reading, Waveform) and counts is None):
            # One reading with a broken time, rate or samples (a driver bug) is refused on
            # its own: failing the batch would stop storing for every bed of the ward.
            result.rejected += 1
            result.rejected_by_source[reading.source] = (
                result.rejected_by_source.get(reading.source, 0) + 1
            )
            return
        admission_id = self._admission_for(bed_id, now)
        if isinstance(reading, Numeric):
            self._write_numeric(bed_id, admission_id, reading, t, now, result)
        elif isinstance(reading, Waveform):
            assert counts is not None
            self._write_waveform(bed_id, admission_id, reading, counts, t, now, result)
        else:
            self._insert_sealed(
                "device_events",
                "event",
                bed_id,
                admission_id,
                reading.source,
                t,
                _event_payload(reading),
                now,
            )
            result.events_written += 1
        result.stored += 1

    def _write_numeric(
        self,
        bed_id: str,
        admission_id: int,
        reading: Numeric,
        t: float,
        now: float,
        result: WriteResult,
    ) -> None:
        stream = self._stream_id(f"{reading.source}/{reading.code.refid}")
        signature = (reading.value, reading.unit.ucum, reading.status.value)
        last = self._last_numeric.get((admission_id, stream))
        if last is not None and last[0] == signature and 0 <= t - last[1] < self.numeric_heartbeat:
            result.numerics_repeated += 1
            return
        # Empty fields are left out: numerics are the most numerous rows after 30 days.
        payload: dict[str, Any] = {"value": reading.value, "unit": reading.unit.ucum}
        if reading.status:
            payload["status"] = reading.status.names()
        if reading.device_time is not None:
            payload["device_time"] = reading.device_time
        self._insert_sealed("numerics", "numeric", bed_id, admission_id, stream, t, payload, now)
        if last is None or t >= last[1]:
            # Only the latest stored row stands for later repeats: a reading from a clock
            # that stepped back is stored, but a later equal value is not its repeat.
            self._last_numeric[(admission_id, stream)] = (signature, t)
        result.numerics_written += 1

    def _write_waveform(
        self,
        bed_id: str,
        admission_id: int,
        wave: Waveform,
        counts: npt.NDArray[np.int64],
        t: float,
        now: float,
        result: WriteResult,
    ) -> None:
        stream = self._stream_id(f"{wave.source}/{wave.code.refid}")
        resolution = float(wave.resolution)
        rate = float(wave.sample_rate)
        device_seq = int(wave.sequence)
        key = (admission_id, stream)
        pending = self._pending.get(key)
        if pending is not None and (
            pending.next_device_seq != device_seq
            or pending.sample_rate != rate
            or pending.resolution != resolution
            or pending.unit != wave.unit.ucum
        ):
            self._fold_block(bed_id, admission_id, stream, result, now)
            pending = None
        if pending is None:
            pending = _Pending(
                rate,
                wave.unit.ucum,
                resolution,
                t,
                self._store_seq(key, device_seq),
                device_seq,
            )
            self._pending[key] = pending
        seq = pending.next_seq
        header = {
            "unit": wave.unit.ucum,
            "resolution": resolution,
            "sample_rate": rate,
            "device_seq": device_seq,
        }
        sealed = self._key(admission_id).seal(
            _pack_samples(header, counts, compress=False),
            self._row_aad("waveform_staging", bed_id, admission_id, stream, seq, t),
        )
        cursor = self.db.conn.execute(
            "INSERT INTO waveform_staging (admission_id, stream_id, seq, t, sample_rate, "
            "samples, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (admission_id, stream, seq, t, rate, len(counts), sealed),
        )
        pending.staging_ids.append(int(cursor.lastrowid or 0))
        pending.chunks.append(counts)
        pending.samples += len(counts)
        self._wave_next[key] = pending.next_seq
        result.waveform_chunks += 1
        if pending.duration >= self.block_seconds:
            self._fold_block(bed_id, admission_id, stream, result, now)

    def _store_seq(self, key: tuple[int, int], device_seq: int) -> int:
        """The store's index for a chunk that starts a new run at ``device_seq``.

        A device sequence that jumps forward keeps its gap (samples known to be lost); one
        that restarts (device reconnected) continues right after what is stored, so the
        index never repeats within an admission's stream.
        """
        offset = self._seq_offset.get(key, 0)
        stored_end = self._wave_next.get(key, 0)
        if device_seq + offset < stored_end:
            offset = stored_end - device_seq
            self._seq_offset[key] = offset
        return device_seq + offset

    def _fold_block(
        self, bed_id: str, admission_id: int, stream: int, result: WriteResult, now: float
    ) -> None:
        pending = self._pending.pop((admission_id, stream), None)
        if pending is not None:
            self._fold(bed_id, admission_id, stream, pending, result, now)

    def _fold_orphans(self, result: WriteResult, now: float) -> None:
        while self._orphans:
            (adm, stream), pending = self._orphans.pop()
            self._fold(self._bed_of(adm), adm, stream, pending, result, now)

    def _fold(
        self,
        bed_id: str,
        admission_id: int,
        stream: int,
        pending: _Pending,
        result: WriteResult,
        now: float,
    ) -> None:
        if not pending.chunks:
            return
        counts = np.concatenate(pending.chunks)
        t = float(pending.t)
        seq = int(pending.seq)
        rate = float(pending.sample_rate)
        header = {"unit": pending.unit, "resolution": pending.resolution, "sample_rate": rate}
        t_end = t + len(counts) / rate
        sealed = self._key(admission_id).seal(
            _pack_samples(header, counts),
            self._row_aad("waveform_blocks", bed_id, admission_id, stream, seq, t),
        )
        conn = self.db.conn
        cursor = conn.execute(
            "INSERT INTO waveform_blocks (admission_id, stream_id, seq, t, t_end, sample_rate, "
            "samples, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (admission_id, stream, seq, t, t_end, rate, len(counts), sealed),
        )
        self._enqueue("waveform", int(cursor.lastrowid or 0), now)
        conn.executemany(
            "DELETE FROM waveform_staging WHERE id = ?", [(i,) for i in pending.staging_ids]
        )
        result.blocks_written += 1

    def flush_waveforms(self, now: float) -> int:
        """Fold every staged chunk into blocks now (shutdown, discharge); returns blocks written."""
        result = WriteResult()
        beds = {adm: bed for bed, adm in self._open_admission.items()}
        with self._atomic():
            self._fold_orphans(result, now)
            for adm, stream in list(self._pending):
                bed = beds.get(adm) or self._bed_of(adm)
                self._fold_block(bed, adm, stream, result, now)
        return result.blocks_written

    def _bed_of(self, admission_id: int) -> str:
        row = self.db.conn.execute(
            "SELECT bed_id FROM admissions WHERE id = ?", (admission_id,)
        ).fetchone()
        return str(row[0])

    def write_alarm(
        self, bed_id: str, source: str, record: Mapping[str, Any], t: float, now: float
    ) -> int:
        """Commit one alarm state change with ``synchronous=FULL``; returns its row id.

        A time that is not a finite number is refused (:class:`StoreError`) before anything
        is written: an alarm is one record, refusing it stops nothing else.
        """
        checked = _finite(t)
        if checked is None:
            raise StoreError(
                f"alarm from {source!r} at bed {bed_id!r} not stored: its time {t!r} is not a "
                "finite number of UTC seconds"
            )
        t = checked
        with self._atomic(full=True):
            admission_id = self._admission_for(bed_id, now)
            return self._insert_sealed(
                "alarm_log", "alarm", bed_id, admission_id, source, t, dict(record), now
            )

    def record_clock_step(self, wall_before: float, wall_after: float) -> int:
        """Commit that the wall clock stepped (UTC seconds before and after, see
        ``gateway/twin/clock_steps.py``) before the next rows; returns its id."""
        with self._transaction(full=True):
            cursor = self.db.conn.execute(
                "INSERT INTO clock_steps (seq_at, wall_before, wall_after, step_s) "
                "VALUES ((SELECT COALESCE(MAX(id), 0) FROM numerics), ?, ?, ?)",
                (wall_before, wall_after, wall_after - wall_before),
            )
            return int(cursor.lastrowid or 0)

    def clock_steps(self) -> list[dict[str, Any]]:
        """Every recorded step of the wall clock, oldest first."""
        return list(
            self.db.query(
                "SELECT id, seq_at, wall_before, wall_after, step_s FROM clock_steps ORDER BY id"
            )
        )

    def audit(self, actor: str, action: str, *, bed_id: str | None, detail: str, now: float) -> int:
        """Commit one audit entry (``synchronous=FULL``); ``detail`` holds no patient data."""
        with self._transaction(full=True):
            return self._insert_audit(actor, action, bed_id, detail, now)

    def _insert_audit(
        self, actor: str, action: str, bed_id: str | None, detail: str, now: float
    ) -> int:
        cursor = self.db.conn.execute(
            "INSERT INTO audit_log (t, actor, action, bed_id, detail) VALUES (?, ?, ?, ?, ?)",
            (now, actor, action, bed_id, detail),
        )
        row_id = int(cursor.lastrowid or 0)
        self._enqueue("audit", row_id, now)
        return row_id

    def _stream_id(self, name: str) -> int:
        stream = self._stream_ids.get(name)
        if stream is None:
            cursor = self.db.conn.execute("INSERT INTO streams (name) VALUES (?)", (name,))
            stream = int(cursor.lastrowid or 0)
            self._stream_ids[name] = stream
            self._stream_names[stream] = name
        return stream

    def _row_aad(
        self, table: str, bed_id: str, admission_id: int, stream: int, seq: int, t: float
    ) -> bytes:
        """Associated data of a row being written (its stream's name from the mirror)."""
        return _row_aad(table, bed_id, admission_id, stream, self._stream_names[stream], seq, t)

    def _insert_sealed(
        self,
        table: str,
        kind: str,
        bed_id: str,
        admission_id: int,
        stream: int | str,
        t: float,
        payload: Mapping[str, Any],
        now: float,
    ) -> int:
        stream_id = self._stream_id(stream) if isinstance(stream, str) else stream
        seq_key = (table, admission_id, stream_id)
        seq = int(self._seq.get(seq_key, -1)) + 1
        t = float(t)
        sealed = self._key(admission_id).seal(
            json.dumps(payload, separators=(",", ":")).encode(),
            self._row_aad(table, bed_id, admission_id, stream_id, seq, t),
        )
        cursor = self.db.conn.execute(
            f"INSERT INTO {table} (admission_id, stream_id, seq, t, sealed) VALUES (?, ?, ?, ?, ?)",
            (admission_id, stream_id, seq, t, sealed),
        )
        self._seq[seq_key] = seq
        row_id = int(cursor.lastrowid or 0)
        self._enqueue(kind, row_id, now)
        return row_id

    def _enqueue(self, kind: str, row_id: int, now: float) -> None:
        rows = [
            (d.name, kind, row_id, KIND_PRIORITY[kind], now)
            for d in self._destinations
            if kind in d.carries
        ]
        if rows:
            self.db.conn.executemany(
                "INSERT INTO outbox (destination, kind, row_id, priority, created) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    # -- outbox ----------------------------------------------------------------------------
    def pending(self, destination: str, limit: int = 100) -> list[dict[str, Any]]:
        """Oldest unacknowledged outbox entries of ``destination``, highest priority first."""
        return list(
            self.db.query(
                "SELECT id, kind, row_id, priority, created, attempts FROM outbox "
                "WHERE destination = ? AND acked IS NULL ORDER BY priority, id LIMIT ?",
                (destination, limit),
            )
        )

    def ack(self, outbox_ids: Sequence[int], now: float) -> None:
        with self._transaction():
            self._mark_acked(outbox_ids, now)

    def _mark_acked(self, outbox_ids: Sequence[int], now: float) -> None:
        # One statement per chunk of ids: a batch of 500 as 500 single-row UPDATEs costs
        # several times more while a backlog drains.
        for chunk in _chunks(outbox_ids):
            marks = ",".join("?" * len(chunk))
            self.db.conn.execute(
                f"UPDATE outbox SET acked = ? WHERE id IN ({marks})", (now, *chunk)
            )

    def outbox_batch(
        self, destination: str, now: float, limit: int = 500, failures: list[str] | None = None
    ) -> list[OutboxItem]:
        """The next ``limit`` pending entries of ``destination`` with their rows decrypted.

        Order: priority (alarms, audit, events, numerics, waveforms), then outbox id, which
        is commit order: so the order of every bed's stream is kept. An entry whose row is
        gone (its admission shredded) or does not authenticate is reported in ``failures``
        (if given; else the error propagates), dead-lettered, and left out.
        """
        entries = self.pending(destination, limit)
        by_kind: dict[str, list[int]] = {}
        for entry in entries:
            by_kind.setdefault(entry["kind"], []).append(entry["row_id"])
        rows: dict[tuple[str, int], tuple[Any, ...]] = {}
        for kind, row_ids in by_kind.items():
            for raw in self._rows_by_id(kind, row_ids):
                rows[(kind, raw[0])] = raw
        items: list[OutboxItem] = []
        lost: list[tuple[int, str, int, str]] = []
        for entry in entries:
            kind, row_id = entry["kind"], entry["row_id"]
            found = rows.get((kind, row_id))
            if found is None:
                lost.append((entry["id"], kind, row_id, "row no longer stored"))
                continue
            try:
                bed_id, admission, stream, seq, t, record = self._open_found(kind, found)
            except DecryptionFailed as exc:
                if failures is None:
                    raise
                failures.append(str(exc))
                lost.append((entry["id"], kind, row_id, "row does not authenticate"))
                continue
            items.append(
                OutboxItem(
                    outbox_id=entry["id"],
                    kind=kind,
                    row_id=row_id,
                    attempts=entry["attempts"],
                    created=entry["created"],
                    bed_id=bed_id,
                    admission=admission,
                    stream=stream,
                    seq=seq,
                    t=t,
                    record=record,
                )
            )
        if lost:
            self._dead_letter(destination, lost, now)
        return items

    def _rows_by_id(self, kind: str, row_ids: Sequence[int]) -> list[tuple[Any, ...]]:
        """Raw rows of one kind by id, in one query (ids are bound as parameters)."""
        marks = ",".join("?" * len(row_ids))
        if kind == "audit":
            sql = (
                f"SELECT id, bed_id, t, actor, action, detail FROM audit_log WHERE id IN ({marks})"
            )
        else:
            table = _TABLE_OF_KIND[kind]
            sql = (
                f"SELECT r.id, r.admission_id, r.stream_id, s.name, r.seq, r.t, "
                f"CAST(r.sealed AS BLOB), a.bed_id FROM {table} r "
                "JOIN streams s ON s.id = r.stream_id "
                "JOIN admissions a ON a.id = r.admission_id "
                f"WHERE r.id IN ({marks}) AND a.wrapped_key IS NOT NULL"
            )
        return list(self.db.conn.execute(sql, list(row_ids)))

    def _open_found(
        self, kind: str, found: tuple[Any, ...]
    ) -> tuple[str, int | None, str, int, float, dict[str, Any]]:
        """(bed, admission, stream, seq, t, decrypted record) of a row from _rows_by_id."""
        if kind == "audit":
            row_id, bed, t, actor, action, detail = found
            entry = {"actor": actor, "action": action, "detail": detail}
            return bed or "", None, "audit", row_id, t, entry
        row_id, adm, stream, name, seq, t, sealed, bed = found
        table = _TABLE_OF_KIND[kind]
        context = f"{table} row {row_id}"
        if kind == "waveform":
            header, counts = self._open_samples(
                sealed, table, bed, adm, stream, name, seq, t, context
            )
            record: dict[str, Any] = {**header, "counts": counts}
        else:
            plain = self._key(adm).open(
                sealed, _row_aad(table, bed, adm, stream, name, seq, t), context=context
            )
            record = {**_DEFAULTS.get(table, {}), **_decode_json(plain.decode())}
        return bed, adm, name, seq, t, record

    def attempted(self, outbox_ids: Sequence[int]) -> None:
        """Count one more delivery attempt of each entry (for status and dead-lettering)."""
        with self._transaction():
            for chunk in _chunks(outbox_ids):
                marks = ",".join("?" * len(chunk))
                self.db.conn.execute(
                    f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN ({marks})", chunk
                )

    def dead_letter(
        self, destination: str, items: Sequence[OutboxItem], reason: str, now: float
    ) -> None:
        """Take entries the destination refused out of its queue, keeping them and why."""
        self._dead_letter(
            destination, [(i.outbox_id, i.kind, i.row_id, reason) for i in items], now
        )

    def _dead_letter(
        self, destination: str, entries: Sequence[tuple[int, str, int, str]], now: float
    ) -> None:
        with self._transaction():
            self.db.conn.executemany(
                "INSERT INTO dead_letters (destination, outbox_id, kind, row_id, t, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(destination, o, k, r, now, why[:500]) for o, k, r, why in entries],
            )
            self._mark_acked([o for o, *_ in entries], now)

    def dead_letters(
        self, destination: str, limit: int = 100, *, open_only: bool = False
    ) -> list[dict[str, Any]]:
        """The most recent dead letters of ``destination``, newest first; ``open_only``:
        those no technician has replayed or dismissed yet."""
        where = "destination = ?" + (" AND resolved IS NULL" if open_only else "")
        return list(
            self.db.query(
                "SELECT id, outbox_id, kind, row_id, t, reason, resolved, resolution "
                f"FROM dead_letters WHERE {where} ORDER BY id DESC LIMIT ?",
                (destination, limit),
            )
        )

    def open_dead_letters(self, destination: str) -> int:
        """How many dead letters of ``destination`` wait for a technician."""
        row = self.db.conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE destination = ? AND resolved IS NULL",
            (destination,),
        ).fetchone()
        return int(row[0])

    def resolve_dead_letters(
        self,
        destination: str,
        ids: Sequence[int] | None,
        *,
        replay: bool,
        actor: str,
        now: float,
    ) -> int:
        """Close open dead letters of ``destination`` (``ids``, or all of them if ``None``).

        ``replay``: queue each one's row again for the destination, at its kind's priority,
        so it is sent after whatever fixed the refusal; a row no longer stored comes back
        as a new dead letter saying so. Otherwise they are dismissed. Either way the
        decision is recorded with the dead letter and in the audit log, in the same
        transaction. Returns how many were closed (unknown or closed ids are ignored).
        """
        where = "destination = ? AND resolved IS NULL"
        params: list[Any] = [destination]
        if ids is not None:
            if not ids:
                return 0
            where += f" AND id IN ({','.join('?' * len(ids))})"
            params.extend(int(i) for i in ids)
        verb = "replayed" if replay else "dismissed"
        with self._transaction(full=True):
            letters = self.db.conn.execute(
                f"SELECT id, kind, row_id FROM dead_letters WHERE {where} ORDER BY id", params
            ).fetchall()
            if not letters:
                return 0
            if replay:
                self.db.conn.executemany(
                    "INSERT INTO outbox (destination, kind, row_id, priority, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(destination, k, r, KIND_PRIORITY.get(k, 9), now) for _, k, r in letters],
                )
            for chunk in _chunks([i for i, _, _ in letters]):
                self.db.conn.execute(
                    "UPDATE dead_letters SET resolved = ?, resolution = ? "
                    f"WHERE id IN ({','.join('?' * len(chunk))})",
                    (now, f"{verb} by {actor}"[:200], *chunk),
                )
            self._insert_audit(
                actor,
                f"sync_dead_letters_{verb}",
                None,
                f"{len(letters)} dead letter(s) of {destination} {verb}",
                now,
            )
        return len(letters)

    def backlog(self, destination: str) -> dict[str, dict[str, float | int]]:
        """Pending entries of ``destination`` per kind: count and oldest ``created``."""
        return {
            kind: {"count": count, "oldest": oldest}
            for kind, count, oldest in self.db.conn.execute(
                "SELECT kind, COUNT(*), MIN(created) FROM outbox "
                "WHERE destination = ? AND acked IS NULL GROUP BY kind",
                (destination,),
            )
        }

    # -- reading back ----------------------------------------------------------------------
    def rows(
        self,
        kind: str,
        bed_id: str,
        t_from: float | None = None,
        t_to: float | None = None,
        failures: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Decrypted rows of one kind (numeric, event, alarm) at a bed, in time order.

        A row that does not authenticate is reported in ``failures`` (if given; else
        :class:`DecryptionFailed` propagates) and skipped; rows of shredded admissions are
        not returned.
        """
        table = _TABLE_OF_KIND[kind]
        sql = (
            f"SELECT r.id, r.admission_id, r.stream_id, s.name, r.seq, r.t, "
            "CAST(r.sealed AS BLOB) "
            f"FROM {table} r JOIN admissions a ON a.id = r.admission_id "
            "JOIN streams s ON s.id = r.stream_id "
            "WHERE a.bed_id = ? AND a.wrapped_key IS NOT NULL AND r.t >= ? AND r.t < ? "
            "ORDER BY r.t, r.id"
        )
        lo = float("-inf") if t_from is None else t_from
        hi = float("inf") if t_to is None else t_to
        for row_id, adm, stream, name, seq, t, sealed in self.db.conn.execute(
            sql, (bed_id, lo, hi)
        ):
            try:
                plain = self._key(adm).open(
                    sealed,
                    _row_aad(table, bed_id, adm, stream, name, seq, t),
                    context=f"{table} row {row_id}",
                )
            except DecryptionFailed as exc:
                if failures is None:
                    raise
                failures.append(str(exc))
                continue
            record = {"id": row_id, "admission": adm, "stream": name, "seq": seq, "t": t}
            record.update(_DEFAULTS.get(table, {}))
            record.update(json.loads(plain))
            yield record

    def waveform_streams(self, bed_id: str) -> list[str]:
        return [
            name
            for (name,) in self.db.conn.execute(
                "SELECT DISTINCT s.name FROM waveform_blocks w JOIN streams s ON s.id = "
                "w.stream_id JOIN admissions a ON a.id = w.admission_id WHERE a.bed_id = ? "
                "AND a.wrapped_key IS NOT NULL ORDER BY s.name",
                (bed_id,),
            )
        ]

    def waveform_blocks(
        self,
        bed_id: str,
        stream_name: str,
        t_from: float | None = None,
        t_to: float | None = None,
        failures: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Decrypted blocks of one signal overlapping [t_from, t_to), in time order.

        Each has ``id``, ``admission``, ``t``, ``sample_rate``, ``unit``, ``resolution``,
        ``seq`` and integer ``counts`` (physical value = counts * resolution). The sample
        rate is the sealed header's (the clear column only for blocks written before it was
        sealed). A block that does not authenticate is reported in ``failures`` (if given;
        else :class:`DecryptionFailed` propagates) and skipped.
        """
        lo = float("-inf") if t_from is None else t_from
        hi = float("inf") if t_to is None else t_to
        for row_id, adm, stream, seq, t, rate, sealed in self.db.conn.execute(
            "SELECT w.id, w.admission_id, w.stream_id, w.seq, w.t, w.sample_rate, "
            "CAST(w.sealed AS BLOB) FROM waveform_blocks w JOIN streams s ON s.id = w.stream_id "
            "JOIN admissions a ON a.id = w.admission_id WHERE a.bed_id = ? AND s.name = ? "
            "AND a.wrapped_key IS NOT NULL AND w.t_end > ? AND w.t < ? ORDER BY w.t, w.id",
            (bed_id, stream_name, lo, hi),
        ):
            try:
                header, counts = self._open_samples(
                    sealed,
                    "waveform_blocks",
                    bed_id,
                    adm,
                    stream,
                    stream_name,
                    seq,
                    t,
                    f"waveform_blocks row {row_id}",
                )
            except DecryptionFailed as exc:
                if failures is None:
                    raise
                failures.append(str(exc))
                continue
            yield {
                "id": row_id,
                "admission": adm,
                "t": t,
                "seq": seq,
                "counts": counts,
                **header,
                "sample_rate": float(header.get("sample_rate", rate)),
            }

    def _open_samples(
        self,
        sealed: bytes,
        table: str,
        bed_id: str,
        adm: int,
        stream: int,
        stream_name: str,
        seq: int,
        t: float,
        context: str,
    ) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
        plain = self._key(adm).open(
            sealed, _row_aad(table, bed_id, adm, stream, stream_name, seq, t), context=context
        )
        return _unpack_samples(plain)

    # -- retention, space and keys ---------------------------------------------------------
    def housekeeping(self, now: float, retention: Retention) -> dict[str, int]:
        """Apply retention; returns rows deleted per table and admissions shredded.

        Rows go only once every destination has acknowledged them ("synced"). A discharged
        admission whose rows are all synced is shredded once it ended more than
        ``max(retention.discharged, retention.alarms)`` ago: shredding deletes every row of
        the admission, its alarm log included, and alarms are kept ``retention.alarms``
        whatever the discharge retention says. Shredding deletes the rows and destroys the
        wrapped data key (and purges it from the WAL), so the store can no longer read it.
        A copy of the file taken before the shredding still holds the wrapped key: backups
        must follow the same retention. If the WAL cannot be emptied (another connection is
        reading), :attr:`wal_purge_pending` is set and the next call tries again.
        """
        done: dict[str, int] = {}
        with self._transaction(full=True):
            for kind, keep in (
                ("numeric", retention.numerics),
                ("waveform", retention.waveforms),
                ("event", retention.numerics),
                ("alarm", retention.alarms),
            ):
                done[_TABLE_OF_KIND[kind]] = self._delete_synced(kind, "t < ?", (now - keep,))
            done["audit_log"] = self._delete_synced("audit", "t < ?", (now - retention.alarms,))
            done["admissions_shredded"] = self._shred_due(
                now - max(retention.discharged, retention.alarms), now
            )
            # Dead letters point at rows that retention deletes: keep them as long.
            self.db.conn.execute(
                "DELETE FROM dead_letters WHERE t < ?", (now - retention.numerics,)
            )
            self.db.conn.execute(
                "DELETE FROM outbox WHERE acked IS NOT NULL AND acked < ?", (now - 86400.0,)
            )
        if done["admissions_shredded"] or self.wal_purge_pending:
            self._purge_wal()
        return done

    #: How many times :meth:`_purge_wal` tries, and how long each try waits for readers.
    wal_purge_attempts = 3
    wal_purge_wait_ms = 2000

    def _purge_wal(self) -> bool:
        """Copy the WAL into the file and empty it, so that the earlier page images it holds
        (wrapped data keys just destroyed or re-wrapped) are gone from the -wal file too.

        A connection still reading an older snapshot (an export, ``keys status``) keeps the
        checkpoint from finishing: SQLite then answers "busy". It is tried
        ``wal_purge_attempts`` times; if it still cannot finish, :attr:`wal_purge_pending`
        says so (the caller reports it) and :meth:`housekeeping` tries again later.
        Returns True once the WAL is empty.
        """
        conn = self.db.conn
        done = False
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.wal_purge_wait_ms)}")
            for attempt in range(max(1, self.wal_purge_attempts)):
                if attempt:
                    time.sleep(0.05)
                busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy == 0:
                    done = True
                    break
        finally:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self.wal_purge_pending = not done
        return done

    def _delete_synced(self, kind: str, where: str, params: tuple[Any, ...]) -> int:
        table = _TABLE_OF_KIND[kind]
        cursor = self.db.conn.execute(
            f"DELETE FROM {table} WHERE {where} AND NOT EXISTS (SELECT 1 FROM outbox o "
            f"WHERE o.kind = ? AND o.row_id = {table}.id AND o.acked IS NULL)",
            (*params, kind),
        )
        return int(cursor.rowcount)

    def _shred_due(self, ended_before: float, now: float) -> int:
        conn = self.db.conn
        due = [
            (adm, bed)
            for adm, bed in conn.execute(
                "SELECT id, bed_id FROM admissions WHERE ended IS NOT NULL AND ended < ? "
                "AND wrapped_key IS NOT NULL",
                (ended_before,),
            )
        ]
        shredded = 0
        for adm, _bed in due:
            if self._unsynced_rows(adm):
                continue
            for table in (
                "numerics",
                "waveform_blocks",
                "waveform_staging",
                "device_events",
                "alarm_log",
            ):
                conn.execute(f"DELETE FROM {table} WHERE admission_id = ?", (adm,))
            conn.execute(
                "UPDATE admissions SET wrapped_key = NULL, patient = NULL, shredded = ? "
                "WHERE id = ?",
                (now, adm),
            )
            key = self._keys.pop(adm, None)
            if key is not None:
                key.destroy()
            shredded += 1
        return shredded

    def _unsynced_rows(self, admission_id: int) -> int:
        total = 0
        for kind in ("alarm", "event", "numeric", "waveform"):
            table = _TABLE_OF_KIND[kind]
            total += int(
                self.db.conn.execute(
                    f"SELECT COUNT(*) FROM outbox o JOIN {table} r ON r.id = o.row_id "
                    "WHERE o.kind = ? AND o.acked IS NULL AND r.admission_id = ?",
                    (kind, admission_id),
                ).fetchone()[0]
            )
        return total

    def evict_waveforms(self, bytes_to_free: int) -> int:
        """Delete the oldest waveform blocks, synced ones first, until ``bytes_to_free`` of
        sealed data are gone; returns blocks deleted. Alarms, events and numerics are never
        touched here: waveforms are the class that gives way when space runs short."""
        conn = self.db.conn
        freed = deleted = 0
        with self._transaction():
            for synced in (True, False):
                clause = "NOT EXISTS" if synced else "EXISTS"
                rows = conn.execute(
                    f"SELECT id, length(sealed) FROM waveform_blocks w WHERE {clause} "
                    "(SELECT 1 FROM outbox o WHERE o.kind = 'waveform' AND o.row_id = w.id "
                    "AND o.acked IS NULL) ORDER BY t, id"
                ).fetchall()
                for row_id, size in rows:
                    if freed >= bytes_to_free:
                        break
                    conn.execute("DELETE FROM waveform_blocks WHERE id = ?", (row_id,))
                    conn.execute(
                        "DELETE FROM outbox WHERE kind = 'waveform' AND row_id = ?", (row_id,)
                    )
                    freed += int(size) + 64
                    deleted += 1
        return deleted

    def rewrap(self, new_current: KeyRing) -> int:
        """Re-wrap every live data key under ``new_current.current`` in one transaction.

        The data itself is not rewritten. Returns the number of keys re-wrapped. The old
        wrapped keys are then purged from the WAL; if another connection keeps that from
        finishing, :attr:`wal_purge_pending` is set (see :meth:`_purge_wal`).
        """
        conn = self.db.conn
        with self._transaction(full=True):
            # Selected inside the transaction: an admission added meanwhile (another
            # process) is either seen here or waits for this transaction.
            rows = conn.execute(
                "SELECT id, bed_id, kek_id, CAST(wrapped_key AS BLOB) FROM admissions "
                "WHERE wrapped_key IS NOT NULL"
            ).fetchall()
            for adm, bed, kek_id, wrapped in rows:
                aad = _key_aad(adm, bed)
                raw = self._keyring.unwrap(kek_id, wrapped, aad, context=f"admission {adm} key")
                new_id, new_wrapped = new_current.wrap(raw, aad)
                conn.execute(
                    "UPDATE admissions SET kek_id = ?, wrapped_key = ? WHERE id = ?",
                    (new_id, new_wrapped, adm),
                )
        self._keyring = new_current
        if rows:
            self._purge_wal()
        return len(rows)

    def kek_ids(self) -> dict[str, int]:
        """How many live data keys each key-encryption key wraps."""
        return {
            str(k): int(n)
            for k, n in self.db.conn.execute(
                "SELECT kek_id, COUNT(*) FROM admissions WHERE wrapped_key IS NOT NULL "
                "GROUP BY kek_id"
            )
        }

    # -- inspection ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        conn = self.db.conn
        return {
            table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in (
                "admissions",
                "numerics",
                "waveform_blocks",
                "waveform_staging",
                "device_events",
                "alarm_log",
                "audit_log",
                "outbox",
            )
        }

    def used_bytes(self) -> int:
        """Bytes of the file holding data (free pages excluded)."""
        conn = self.db.conn
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    def free_page_bytes(self) -> int:
        """Bytes of the file's free pages: space freed by deletions, which the file keeps
        (it does not shrink) and fills again before it grows."""
        conn = self.db.conn
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        return free * size

    def file_problem(self) -> str | None:
        """Why the open database is no longer the file at :attr:`path` (deleted, or replaced
        by another file), or ``None``: rows committed then are lost at the next start."""
        now = _file_id(self.path)
        if now is None:
            return f"{self.path} was deleted while open; restart the gateway to store again"
        if now != self._file_id:
            return f"{self.path} was replaced while open; restart the gateway to use it"
        return None

    def integrity(self) -> str:
        return str(self.db.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- transactions ----------------------------------------------------------------------
    def _transaction(self, *, full: bool = False) -> _Transaction:
        if self._closed:
            raise StoreError("store used after close")
        return _Transaction(self.db.conn, full)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; FULL sync on request."""

    def __init__(self, conn: sqlite3.Connection, full: bool) -> None:
        self._conn = conn
        self._full = full

    def __enter__(self) -> None:
        if self._full:
            self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        try:
            if kind is None:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.OperationalError as error:
                    # SQLite may already have rolled back by itself (disk full, I/O error).
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise _translate(error) from error
            else:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
                    raise _translate(exc) from exc
        finally:
            if self._full:
                self._conn.execute("PRAGMA synchronous = NORMAL")


def _translate(error: sqlite3.Error) -> StoreError:
    text = str(error)
    if "full" in text:
        return StoreFull(f"store is full ({text}): free disk space or raise the quota")
    if "malformed" in text or "not a database" in text:
        return StoreCorrupt(f"store file is damaged ({text}); restore it from a backup")
    return StoreError(f"store write failed: {text}")


# -- opening and migrating -------------------------------------------------------------------
_BUSY_TIMEOUT_MS = 5000


def _connect(path: Path) -> sqlite_utils.Database:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # Takes effect only for a new file: a compressed 10 s ECG block is about 3 KB, and
        # with 4 KB pages a fifth of the waveform pages would stay empty.
        conn.execute("PRAGMA page_size = 8192")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: cannot use write-ahead logging (journal mode {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        # Deleted content is overwritten, so a destroyed key leaves no copy in freed space
        # (whatever the SQLite build's default).
        conn.execute("PRAGMA secure_delete = ON")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreCorrupt(f"{path}: damaged ({check}); restore it from a backup")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreCorrupt(
            f"{path}: not a readable gateway store ({exc}); move it aside or restore a backup"
        ) from None
    except BaseException:
        conn.close()
        raise
    return sqlite_utils.Database(conn)


def _migration_files(folder: Any) -> list[tuple[int, str, str]]:
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found


def migrate(conn: sqlite3.Connection, migrations: Sequence[tuple[int, str, str]]) -> int:
    """Bring the file to the newest version, all steps in one transaction; returns it."""
    newest = migrations[-1][0] if migrations else 0
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > newest:
        raise StoreVersionError(
            f"the store was written by a newer bedside-gateway (schema {current}, this one "
            f"knows up to {newest}); upgrade the gateway, or restore a backup made by this version"
        )
    if current == newest:
        return current
    conn.execute("BEGIN IMMEDIATE")
    try:
        for number, name, sql in migrations:
            if number <= current:
                continue
            for statement in _statements(sql):
                try:
                    conn.execute(statement)
                except sqlite3.Error as exc:
                    raise StoreError(f"migration {name} failed: {exc}") from exc
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return newest


def _statements(sql: str) -> Iterator[str]:
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement and not all(
                ln.strip().startswith("--") or not ln.strip() for ln in statement.splitlines()
            ):
                yield statement
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        raise RuntimeError("migration ends with an incomplete statement")


# -- encoding helpers ------------------------------------------------------------------------
def _aad(table: str, bed_id: str, admission_id: int, *rest: str | int | float | None) -> bytes:
    return associated_data(table, bed_id, admission_id, *rest)


def _key_aad(admission_id: int, bed_id: str) -> bytes:
    return associated_data("admission-key", bed_id, admission_id)


#: json.loads without its bytes-encoding detection (rows are always UTF-8 JSON objects).
_decode_json = json.JSONDecoder().decode


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    """``ids`` in slices small enough to bind as one statement's parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _row_aad(
    table: str,
    bed_id: str,
    admission_id: int,
    stream_id: int,
    stream_name: str,
    seq: int,
    t: float,
) -> bytes:
    """Associated data of a sealed row: its table, bed, admission, stream (id and name, so a
    stream renamed in ``streams`` is detected), sequence and time. Numbers are normalised to
    the types the columns give back (INTEGER, REAL): the same row binds the same bytes when
    written with ``t=1700000000`` and read back as ``1700000000.0``."""
    # The row's stream part repeats for every row of the stream, so its encoding is cached;
    # the encoding is concatenative (crypto.associated_data), so prefix + tail is the same
    # bytes as encoding all seven parts at once.
    stream_part = _stream_aad(table, bed_id, int(admission_id), int(stream_id), stream_name)
    return stream_part + associated_data(int(seq), float(t))[1:]


@functools.lru_cache(maxsize=4096)
def _stream_aad(
    table: str, bed_id: str, admission_id: int, stream_id: int, stream_name: str
) -> bytes:
    return associated_data(table, bed_id, admission_id, stream_id, stream_name)


def _finite(t: object) -> float | None:
    """``t`` as a float if it is a finite number, else None."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        return None
    try:
        value = float(t)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _positive(rate: object) -> bool:
    value = _finite(rate)
    return value is not None and value > 0


def _event_payload(reading: DeviceEvent | Identity) -> dict[str, Any]:
    if isinstance(reading, DeviceEvent):
        return {
            "type": "condition",
            "condition": reading.condition.value,
            "active": reading.active,
            "detail": reading.detail,
            "priority": None if reading.priority is None else reading.priority.value,
        }
    return {
        "type": "identity",
        "manufacturer": reading.manufacturer,
        "model": reading.model,
        "serial": reading.serial,
        "firmware": reading.firmware,
    }


def _to_counts(samples: npt.NDArray[np.float64], resolution: float) -> npt.NDArray[np.int64]:
    counts = np.rint(samples / resolution)
    if len(samples) and not np.all(np.isfinite(counts)):
        raise StoreError("waveform samples are not finite numbers")
    if (
        len(samples)
        and float(np.max(np.abs(counts * resolution - samples))) > abs(resolution) * 1e-6
    ):
        raise StoreError(
            "waveform samples are not whole multiples of their resolution; the driver must "
            "declare the resolution of its device counts"
        )
    if len(counts) and (counts.min() < -(2**31) or counts.max() >= 2**31):
        raise StoreError("waveform counts do not fit 32 bits; the driver's resolution is wrong")
    return counts.astype(np.int64)


def _pack_samples(
    header: Mapping[str, Any], counts: npt.NDArray[np.int64], *, compress: bool = True
) -> bytes:
    """Header JSON + samples: compressed for blocks; raw int32 for staged chunks, which live
    only until their block is written (compressing 25-sample chunks cost most of the CPU)."""
    if compress:
        body = encode_block(counts)
    else:
        header = {**header, "raw": True}
        body = counts.astype("<i4").tobytes()
    head = json.dumps(header, separators=(",", ":")).encode()
    return len(head).to_bytes(2, "big") + head + body


def _unpack_samples(plain: bytes) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
    size = int.from_bytes(plain[:2], "big")
    header = json.loads(plain[2 : 2 + size])
    body = plain[2 + size :]
    if header.pop("raw", False):
        return header, np.frombuffer(body, dtype="<i4").astype(np.int64)
    return header, decode_block(body).astype(np.int64)


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or ``None`` when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
