"""Decrypt a bed's stored data and write it out for a technician or a clinician.

* ``csv`` / ``json``: numerics, device events and alarms, one record per stored row, in
  time order, with ``kind``, ``t`` (UTC seconds), ``time`` (ISO 8601), ``stream`` and the
  decrypted fields.
* ``wfdb``: waveforms as WFDB records (through the ``wfdb`` package), one record per signal
  and contiguous segment, readable by ``wfdb.rdrecord``; samples are the device's integer
  counts with the gain that turns them back into physical units.

Rows that fail to decrypt are reported, never silently skipped.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gateway.twin.store import TwinStore

_KINDS = ("numeric", "event", "alarm")
_CSV_FIELDS = (
    "kind",
    "t",
    "time",
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
        for private in ("id", "admission", "seq"):
            record.pop(private, None)
    report.rows = len(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "json":
            out.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
        elif fmt == "csv":
            with out.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS, extrasaction="ignore")
                writer.writeheader()
                for record in records:
                    writer.writerow(_csv_row(record))
        else:
            raise ExportError(f"unknown format {fmt!r}; use csv, json or wfdb")
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror}") from None
    report.files.append(out)
    return report


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

    out.mkdir(parents=True, exist_ok=True)
    for stream in store.waveform_streams(bed_id):
        for index, segment in enumerate(_segments(store, bed_id, stream, t_from, t_to)):
            name = _record_name(bed_id, stream, index)
            counts = segment["counts"]
            if not len(counts):
                continue
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
                    d_signal=counts.reshape(-1, 1).astype(np.int64),
                    fmt=["32" if wide else "16"],
                    adc_gain=[gain],
                    baseline=[0],
                    base_datetime=start,
                    comments=[f"bed {bed_id}", f"stream {stream}", "exported by bedside-gateway"],
                    write_dir=str(out),
                )
            except (OSError, ValueError) as exc:
                raise ExportError(f"cannot write WFDB record {name} in {out}: {exc}") from None
            report.rows += len(counts)
            report.files.append(out / f"{name}.hea")


def _segments(
    store: TwinStore, bed_id: str, stream: str, t_from: float | None, t_to: float | None
) -> list[dict[str, Any]]:
    """Blocks joined while contiguous (same rate, unit and resolution, consecutive sample
    index, and no jump in time)."""
    segments: list[dict[str, Any]] = []
    for block in store.waveform_blocks(bed_id, stream, t_from, t_to):
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
        tail = segments[-1] if segments else None
        if (
            tail is not None
            and tail["sample_rate"] == rate
            and tail["unit"] == piece["unit"]
            and tail["resolution"] == piece["resolution"]
            and tail["seq"] + len(tail["counts"]) == piece["seq"]
            # A device that reconnected continues the index but not the time.
            and abs(tail["t"] + len(tail["counts"]) / rate - piece["t"]) <= 1.0 / rate
        ):
            tail["counts"] = np.concatenate([tail["counts"], piece["counts"]])
        else:
            segments.append(piece)
    return segments


def _record_name(bed_id: str, stream: str, index: int) -> str:
    raw = f"{bed_id}_{stream.replace('/', '_')}_{index}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)
