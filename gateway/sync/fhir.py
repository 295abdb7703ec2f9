"""FHIR R4 resources for central systems, in the style of the Point-of-Care Device IG.

A pure codec: outbox items in, a ``batch`` Bundle out; a batch-response in, a verdict per
entry out. No I/O (``https.py`` sends). Each numeric becomes an Observation with the MDC
code (plus LOINC where a vital-sign code exists), the value as a UCUM Quantity (or a
``dataAbsentReason`` when the device gave none), the measurement status as
``interpretation``, the effective time, the patient (by MRN identifier) and a reference to
the Device that measured it. Each device seen in a batch is sent as a Device resource.

Resource ids are UUID-5 names of the gateway, the kind and the store's row id, and every
entry is a ``PUT Type/id``: resending after a crash updates the same resource instead of
creating a second one.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drivers import codes
from gateway.sync.instant import fhir_instant
from gateway.twin.store import OutboxItem
from gateway.twin.vocabulary import Patient

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
UCUM_SYSTEM = "http://unitsofmeasure.org"
LOINC_SYSTEM = "http://loinc.org"
NUMERIC_PROFILE = "http://hl7.org/fhir/uv/pocd/StructureDefinition/NumericObservation"
MEASUREMENT_STATUS = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"

#: LOINC codes of the vital signs the FHIR vital-signs profile requires (protocols.md 7.5).
LOINC: Mapping[str, tuple[str, str]] = {
    "MDC_PULS_OXIM_SAT_O2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    "MDC_PULS_OXIM_PULS_RATE": ("8889-8", "Heart rate by Pulse oximetry"),
    "MDC_ECG_HEART_RATE": ("8867-4", "Heart rate"),
}

#: MeasurementStatus names -> PoCD measurement-status codes.
STATUS_CODES: Mapping[str, str] = {
    "unavailable": "unavailable",
    "invalid": "invalid",
    "questionable": "questionable",
    "early": "early-indication",
    "demo": "demo-data",
    "low_perfusion": "questionable",
}

#: What FHIR carries here. Alarms go as IHE PCD-04 (R4 has no alert resource).
FHIR_KINDS = frozenset({"numeric"})


@dataclass(frozen=True, slots=True)
class FhirContext:
    """Who sends, and how patients are identified (the MRN's identifier system)."""

    gateway_id: str
    mrn_system: str = "urn:oid:2.16.840.1.113883.19.5"  # placeholder; set per hospital

    def resource_id(self, kind: str, key: str) -> str:
        """UUID-5 (RFC 4122, URL namespace) of the resource: stable across resends."""
        return name_uuid(f"bedside-gateway:{self.gateway_id}:{kind}:{key}")

    def device_id(self, device: str) -> str:
        return _device_uuid(self.gateway_id, device)


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def name_uuid(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))``, without building a UUID object (a
    third of the cost of an observation resource when a backlog drains)."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=1024)
def _device_uuid(gateway_id: str, device: str) -> str:
    # A ward has a few dozen devices and every observation names one: computed once each.
    return FhirContext(gateway_id).resource_id("device", device)


def _split(stream: str) -> tuple[str, str]:
    device, _, refid = stream.rpartition("/")
    return device, refid


def device_resource(device: str, context: FhirContext) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": context.device_id(device),
        "identifier": [
            {"system": f"urn:bedside-gateway:{context.gateway_id}:device", "value": device}
        ],
        "deviceName": [{"name": device, "type": "user-friendly-name"}],
    }


def observation(item: OutboxItem, patient: Patient | None, context: FhirContext) -> dict[str, Any]:
    device, refid = _split(item.stream)
    record = item.record
    code = codes.code_named(refid)
    coding: list[dict[str, str]] = [
        {"system": MDC_SYSTEM, "code": str(code.cf_code) if code else refid, "display": refid}
    ]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": context.resource_id("numeric", str(item.row_id)),
        "meta": {"profile": [NUMERIC_PROFILE]},
        "status": "final",
        "code": {"coding": coding},
        "effectiveDateTime": fhir_instant(item.t),
        "device": {"reference": f"Device/{context.device_id(device)}"},
    }
    if refid in LOINC:
        loinc, display = LOINC[refid]
        coding.append({"system": LOINC_SYSTEM, "code": loinc, "display": display})
        resource["category"] = [{"coding": [{"system": CATEGORY_SYSTEM, "code": "vital-signs"}]}]
    if patient is not None:
        resource["subject"] = {"identifier": {"system": context.mrn_system, "value": patient.mrn}}
    value = record.get("value")
    unit = record.get("unit") or ""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        resource["dataAbsentReason"] = {
            "coding": [{"system": ABSENT_SYSTEM, "code": _absent_code(value)}]
        }
    else:
        # FHIR forbids empty strings: a unitless value goes without unit, system and code.
        quantity: dict[str, Any] = {"value": value}
        if unit:
            quantity.update({"unit": unit, "system": UCUM_SYSTEM, "code": unit})
        resource["valueQuantity"] = quantity
    status = record.get("status")
    flags = sorted({STATUS_CODES[s] for s in status if s in STATUS_CODES}) if status else ()
    if flags:
        resource["interpretation"] = [
            {"coding": [{"system": MEASUREMENT_STATUS, "code": f}]} for f in flags
        ]
    return resource


def _absent_code(value: object) -> str:
    """data-absent-reason for a missing or non-finite value (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "not-a-number"
    if isinstance(value, float) and math.isinf(value):
        return "positive-infinity" if value > 0 else "negative-infinity"
    return "unknown"


def batch_bundle(
    items: Sequence[OutboxItem],
    patients: Mapping[int, Patient | None],
    context: FhirContext,
) -> tuple[dict[str, Any], list[OutboxItem | None]]:
    """A ``batch`` Bundle of PUTs; and, per entry, the item it carries (None for Devices)."""
    entries: list[dict[str, Any]] = []
    owners: list[OutboxItem | None] = []
    devices: dict[str, None] = {}
    for item in items:
        devices.setdefault(_split(item.stream)[0], None)
    for device in devices:
        resource = device_resource(device, context)
        entries.append(_put(resource))
        owners.append(None)
    for item in items:
        patient = patients.get(item.admission if item.admission is not None else -1)
        entries.append(_put(observation(item, patient, context)))
        owners.append(item)
    bundle = {
        "resourceType": "Bundle",
        "id": context.resource_id("bundle", f"{items[0].row_id}x{len(items)}") if items else "",
        "type": "batch",
        "entry": entries,
    }
    return bundle, owners


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    kind, rid = resource["resourceType"], resource["id"]
    return {
        "fullUrl": f"urn:uuid:{rid}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{kind}/{rid}"},
    }


def entry_statuses(response: object) -> list[int]:
    """HTTP status of each entry of a batch-response Bundle (``"201 Created"`` -> 201).

    Raises ``ValueError`` when the answer is not a batch-response.
    """
    if (
        not isinstance(response, Mapping)
        or response.get("resourceType") != "Bundle"
        or response.get("type") != "batch-response"
    ):
        raise ValueError("the answer is not a batch-response Bundle")
    entries = response.get("entry", [])
    if not isinstance(entries, list):
        raise ValueError("the answer's entry is not a list")
    statuses = []
    for entry in entries:
        answer = entry.get("response") if isinstance(entry, Mapping) else None
        text = str(answer.get("status", "")) if isinstance(answer, Mapping) else ""
        head = text.split(" ", 1)[0]
        if not head.isdigit():
            raise ValueError(f"entry status {text!r} is not an HTTP status")
        statuses.append(int(head))
    return statuses
