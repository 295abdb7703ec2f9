"""Decrypt a bed's stored data and write it out for a technician or a clinician.

* ``csv`` / ``json``: numerics, device events and alarms, one record per stored row, in
  time order, with ``kind``, ``t`` (UTC seconds), ``time`` (ISO 8601), ``admission`` (the
  store's admission id: a window spanning two patients says which row is whose),
  ``stream`` and the decrypted fields. Numerics are a step function (a value is stored when
  it changes, and at least every heartbeat): a reading's value is that of the last record
  of its stream at or before its time.
* ``wfdb``: waveforms as WFDB records (through the ``wfdb`` package), one record per signal
  and contiguous segment (never spanning two admissions; the admission is in the header's
  comments), readable by ``wfdb.rdrecord``; samples are the device's integer counts with
  the gain that turns them back into physical units.

The output holds patient data in clear: csv/json files are created with mode 0600 and never
overwrite an existing file (nor follow a symbolic link); a WFDB export goes into a new (or
empty) directory created with mode 0700, its files made 0600. Rows and waveform blocks that
fail to decrypt are reported (``ExportReport.failures``), never silently skipped; a damaged
block splits its signal's record there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.twin.crypto import make_private_dirs
from gateway.twin.store import TwinStore

_KINDS = ("numeric", "event", "alarm")
_CSV_FIELDS = (
    "kind",
    "t",
    "time",
    "admission",
    "stream",
    "value",
    "unit",
    "status",
    "condition",
    "active",
    "detail",
    "data",
)


class ExportError(Exception):
    """The export cannot be written; the message says why."""


@dataclass(slots=True)
class ExportReport:
    rows: int = 0
    files: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def export(
    store: TwinStore,
    bed_id: str,
    fmt: str,
    out: Path,
    *,
    t_from: float | None = None,
    t_to: float | None = None,
) -> ExportReport:
    report = ExportReport()
    if fmt not in ("csv", "json", "wfdb"):
        raise ExportError(f"unknown format {fmt!r}; use csv, json or wfdb")
    if fmt == "wfdb":
        _export_wfdb(store, bed_id, out, t_from, t_to, report)
        return report
    records = [
        {**row, "kind": kind, "time": _iso(row["t"])}
        for kind in _KINDS
        for row in store.rows(kind, bed_id, t_from, t_to, failures=report.failures)
    ]
    records.sort(key=lambda r: (r["t"], r["kind"], r["id"]))
    for record in records:
        for private in ("id", "seq"):
            record.pop(private, None)
    report.rows = len(records)
    if fmt == "json":
        text = json.dumps(records, indent=1) + "\n"
    else:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(_csv_row(record))
        text = buffer.getvalue()
    write_private(out, text.encode("utf-8"))
    report.files.append(out)
    return report


def write_private(out: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``out``: mode 0600, never over an existing file, never
    through a symbolic link; a file left half-written by an error is removed."""
    try:
        make_private_dirs(out.parent)
    except OSError as exc:
        raise ExportError(f"cannot create the directory {out.parent}: {exc.strerror}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(out, flags, 0o600)
    except FileExistsError:
        raise ExportError(
            f"refusing to overwrite {out}: it already exists (exports hold patient data); "
            "choose another --out or move the old file away"
        ) from None
    except OSError as exc:
        raise ExportError(f"cannot create {out}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # exact mode whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(out)
        raise ExportError(f"cannot write {out}: {exc.strerror}") from None


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in _CSV_FIELDS if k != "data"}
    status = row.get("status")
    if isinstance(status, list):
        row["status"] = " ".join(str(s) for s in status)
    known = set(_CSV_FIELDS) | {"device_time"}
    extra = {k: v for k, v in record.items() if k not in known}
    row["data"] = json.dumps(extra, separators=(",", ":")) if extra else ""
    return row


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _export_wfdb(
    store: TwinStore,
    bed_id: str,
    out: Path,
    t_from: float | None,
    t_to: float | None,
    report: ExportReport,
) -> None:
    import wfdb  # imported here: heavy, and only exports need it

    _private_output_dir(out)
    for stream in store.waveform_streams(bed_id):
        segments = _segments(store, bed_id, stream, t_from, t_to, report.failures)
        for index, segment in enumerate(segments):
            name = _record_name(bed_id, stream, index)
            counts = segment["counts"]
            resolution = float(segment["resolution"])
            gain = 1.0 / resolution
            # WFDB stores 16-bit samples in format 16; wider device counts need format 32.
            wide = int(np.max(np.abs(counts))) > 32767
            start = datetime.fromtimestamp(segment["t"], UTC).replace(tzinfo=None)
            try:
                wfdb.wrsamp(
                    name,
                    fs=segment["sample_rate"],
                    units=[segment["unit"]],
                    sig_name=[stream.split("/", 1)[1]],
                    d_signal=counts.reshape(-1, 1),
                    fmt=["32" if wide else "16"],
                    adc_gain=[gain],
                    baseline=[0],
                    base_datetime=start,
                    comments=[
                        f"bed {bed_id}",
                        f"admission {segment['admission']}",
                        f"stream {stream}",
                        "exported by bedside-gateway",
                    ],
                    write_dir=str(out),
                )
                for written in out.glob(f"{name}.*"):  # the header and its signal file
                    os.chmod(written, 0o600)
            except (OSError, ValueError) as exc:
                raise ExportError(f"cannot write WFDB record {name} in {out}: {exc}") from None
            report.rows += len(counts)
            report.files.append(out / f"{name}.hea")


def _private_output_dir(out: Path) -> None:
    """A new directory (mode 0700, parents too), or an existing empty one: the records are
    written there and nothing already there is overwritten."""
    try:
        info = os.lstat(out)
    except FileNotFoundError:
        try:
            make_private_dirs(out)
        except OSError as exc:
            raise ExportError(f"cannot create the directory {out}: {exc.strerror}") from None
        return
    except OSError as exc:
        raise ExportError(f"cannot use {out}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ExportError(
            f"{out} exists and is not a directory; a WFDB export needs a new or empty directory"
        )
    if any(out.iterdir()):
        raise ExportError(
            f"refusing to write into {out}: it is not empty (records there could be "
            "overwritten); choose a new directory for --out"
        )


def _segments(
    store: TwinStore,
    bed_id: str,
    stream: str,
    t_from: float | None,
    t_to: float | None,
    failures: list[str],
) -> Iterator[dict[str, Any]]:
    """Blocks joined while contiguous (same admission, rate, unit and resolution,
    consecutive sample index, no jump in time, no damaged block between them), each segment
    yielded as soon as it is complete. A block that fails to decrypt is reported in
    ``failures`` and ends the segment before it.

    The pieces of a segment are gathered in a list and concatenated once: joining them one
    by one copies the whole segment again for every block (72 h of ECG took about an hour).
    """
    tail: dict[str, Any] | None = None
    pieces: list[npt.NDArray[np.int64]] = []
    samples = 0
    damaged = len(failures)
    for block in store.waveform_blocks(bed_id, stream, t_from, t_to, failures=failures):
        split = len(failures) != damaged  # a damaged block was skipped just before this one
        damaged = len(failures)
        counts = block["counts"]
        t, rate = block["t"], block["sample_rate"]
        # Trim to the requested window.
        first = 0 if t_from is None else max(0, int(np.ceil((t_from - t) * rate - 1e-9)))
        last = len(counts) if t_to is None else min(len(counts), int(np.ceil((t_to - t) * rate)))
        if first >= last:
            continue
        piece = {
            **block,
            "counts": counts[first:last],
            "t": t + first / rate,
            "seq": block["seq"] + first,
        }
        if (
            tail is not None
            and not split
            and tail["admission"] == piece["admission"]
            and tail["sample_rate"] == rate
            and tail["unit"] == piece["unit"]
            and tail["resolution"] == piece["resolution"]
            and tail["seq"] + samples == piece["seq"]
            # A device that reconnected continues the index but not the time.
            and abs(tail["t"] + samples / rate - piece["t"]) <= 1.0 / rate
        ):
            pieces.append(piece["counts"])
            samples += len(piece["counts"])
            continue
        if tail is not None:
            yield _joined(tail, pieces)
        tail, pieces, samples = piece, [piece["counts"]], len(piece["counts"])
    if tail is not None:
        yield _joined(tail, pieces)


def _joined(head: dict[str, Any], pieces: list[npt.NDArray[np.int64]]) -> dict[str, Any]:
    counts = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return {**head, "counts": counts}


def _record_name(bed_id: str, stream: str, index: int) -> str:
    raw = f"{bed_id}_{stream.replace('/', '_')}_{index}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)
