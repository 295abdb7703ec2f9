"""``bedside-gateway export --format fhir|hl7``: a bed's stored data as the very payloads
sync sends, written to a file instead of a destination.

* ``hl7``: PCD-01 messages for the numerics and PCD-04 messages for the alarm log, in time
  order; segments end in CR and messages are separated by a newline (a common HL7 batch
  file layout).
* ``fhir``: one ``batch`` Bundle of Observations (and the Devices they reference), the
  same resources and ids a FHIR destination receives.

The file holds patient data in clear and is written like every export (mode 0600, never
over an existing file).
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.sync.fhir import FhirContext, batch_bundle
from gateway.sync.hl7 import Sender, messages_for
from gateway.twin.export import ExportReport, write_private
from gateway.twin.store import OutboxItem, TwinStore
from gateway.twin.vocabulary import Patient

#: What ``TwinStore.rows`` adds around the decrypted record.
_ROW_COLUMNS = frozenset({"id", "admission", "stream", "seq", "t"})


def _items(
    store: TwinStore,
    bed_id: str,
    kinds: tuple[str, ...],
    t_from: float | None,
    t_to: float | None,
    report: ExportReport,
) -> list[OutboxItem]:
    items = [
        OutboxItem(
            outbox_id=0,
            kind=kind,
            row_id=row["id"],
            attempts=0,
            created=row["t"],
            bed_id=bed_id,
            admission=row["admission"],
            stream=row["stream"],
            seq=row["seq"],
            t=row["t"],
            record={
                k: v for k, v in row.items() if k not in ("id", "admission", "stream", "seq", "t")
            },
        )
        for kind in kinds
        for row in store.rows(kind, bed_id, t_from, t_to, failures=report.failures)
    ]
    items.sort(key=lambda i: (i.t, i.kind, i.row_id))
    return items


def export_payloads(
    store: TwinStore,
    bed_id: str,
    fmt: str,
    out: Path,
    *,
    gateway_id: str,
    facility: str = "",
    now: float,
    t_from: float | None = None,
    t_to: float | None = None,
) -> ExportReport:
    report = ExportReport()
    kinds = ("numeric", "alarm") if fmt == "hl7" else ("numeric",)
    items = _items(store, bed_id, kinds, t_from, t_to, report)
    patients: dict[int, Patient | None] = {}
    for admission in {i.admission for i in items if i.admission is not None}:
        patients[admission] = store.patient(admission)
    if fmt == "hl7":
        messages, _skipped = messages_for(
            items, sender=Sender(gateway_id, facility=facility), patients=patients, now=now
        )
        data = "\n".join(m.text for m in messages).encode("utf-8") + (b"\n" if messages else b"")
        report.rows = sum(len(m.items) for m in messages)
    elif fmt == "fhir":
        bundle, _owners = batch_bundle(items, patients, FhirContext(gateway_id))
        data = json.dumps(bundle, indent=1).encode("utf-8") + b"\n"
        report.rows = len(items)
    else:
        raise ValueError(f"unknown payload format {fmt!r}")
    write_private(out, data)
    report.files.append(out)
    return report
