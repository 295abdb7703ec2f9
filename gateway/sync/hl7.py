"""HL7 v2.6 messages for central systems: IHE PCD-01 (ORU^R01) and PCD-04 (ORU^R40).

A pure codec: outbox items in, message text out; acknowledgement text in, a verdict out.
No I/O. Built and parsed with python-hl7 (its escaping and its parser), following the
shapes in ``protocols.md`` 7.3 and 7.4:

* PCD-01: MSH, PID (from the admission's patient; empty when none is bound), PV1 (the bed),
  then per device one OBR (OBR-4 the multi-parameter MDS code, OBR-7 the earliest
  observation) with one device-related OBX (OBX-11 ``X``, OBX-18 the device) and one OBX per
  numeric: OBX-3 ``<code>^<REFID>^MDC``, OBX-4 ``<mds>.1.1.<metric>``, OBX-5 the value
  (empty with OBX-8 ``NAV`` and OBX-11 ``X`` when the device gave none), OBX-6 the MDC unit
  (UCUM when no MDC unit is known), OBX-8 the measurement-status flags, OBX-14 its time.
* PCD-04: one message per alarm state change, the seven facets of ``protocols.md`` 7.4 as
  separate OBX segments, OBR-29 carrying the alert instance id that stays the same from
  start to end.

Message control ids (MSH-10) are derived from the store's row ids, so a message resent
after a crash carries the same id and the receiver can drop the duplicate.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import hl7

from drivers import codes
from gateway.sync.instant import hl7_timestamp
from gateway.twin.store import OutboxItem
from gateway.twin.vocabulary import Patient

PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
# [U] protocols.md 7.4 names the profile id but not its OID; sent without one.
PCD04_PROFILE = "IHE_PCD_ACM_001^IHE PCD"
MDS_MULTI_PARAM = "69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC"
EVT_ALARM = "196616^MDC_EVT_ALARM^MDC"
ATTR_ALERT_SOURCE = "68480^MDC_ATTR_ALERT_SOURCE^MDC"
ATTR_EVENT_PHASE = "68481^MDC_ATTR_EVENT_PHASE^MDC"
ATTR_ALARM_STATE = "68482^MDC_ATTR_ALARM_STATE^MDC"
ATTR_INACTIVATION = "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC"
ATTR_PRIORITY = "68484^MDC_ATTR_ALARM_PRIORITY^MDC"
ATTR_ALERT_TYPE = "68485^MDC_ATTR_ALERT_TYPE^MDC"
EVT_LO = "196670^MDC_EVT_LO^MDC"
EVT_HI = "196648^MDC_EVT_HI^MDC"

#: MeasurementStatus flag names (drivers.readings) -> OBX-8 measurement-status codes.
STATUS_FLAGS: Mapping[str, str] = {
    "unavailable": "NAV",
    "invalid": "INV",
    "questionable": "QUES",
    "early": "EARLY",
    "demo": "DEMO",
}

#: What an alarm-log record's ``event`` means as an ACM event phase (protocols.md 7.4).
ALARM_PHASES: Mapping[str, str] = {
    "raised": "start",
    "escalated": "escalate",
    "deescalated": "deescalate",
    "acknowledged": "update",
    "paused": "update",
    "resumed": "update",
    "latched": "update",
    "cleared": "end",
    "reset": "reset",
}

_PRIORITY = {"high": "PH", "medium": "PM", "low": "PL"}
_TYPE = {"physiological": "SP", "technical": "ST"}
_DELIMITER_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\\": "\\E\\"}
#: One translation table (a single C-level pass per string): delimiters, then control
#: characters as hex data.
_ESCAPE_TABLE = {
    **{c: f"\\X{c:02X}\\" for c in (*range(0x20), 0x7F)},
    **{ord(k): v for k, v in _DELIMITER_ESCAPES.items()},
}


def escape(text: object) -> str:
    """``text`` with HL7 delimiters escaped (``|`` -> ``\\F\\`` ...) and control characters
    as ``\\Xhh\\``; other characters stay as they are, since MSH-18 declares UTF-8.

    python-hl7's own escaper hex-encodes every non-ASCII character as one code point,
    which a receiver decoding UTF-8 hex data reads as different text.
    """
    return str(text).translate(_ESCAPE_TABLE)


#: HL7 DTM of a UTC time (``YYYYMMDDHHMMSS.sss+0000``), as every segment here writes it.
timestamp = hl7_timestamp


@functools.lru_cache(maxsize=64)
def eui64_for(gateway_id: str) -> str:
    """A stable EUI-64-shaped identifier for a gateway without a configured one.

    Locally administered (bit 1 of the first octet set), derived from the gateway id.
    """
    raw = bytearray(hashlib.sha256(gateway_id.encode()).digest()[:8])
    raw[0] = (raw[0] | 0x02) & 0xFE
    return raw.hex().upper()


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sends: MSH-3 application, MSH-4 facility, and the gateway's EUI-64."""

    gateway_id: str
    facility: str = ""
    application: str = "BEDGW"
    eui64: str = ""

    @property
    def eui(self) -> str:
        return self.eui64 or eui64_for(self.gateway_id)

    @property
    def hd(self) -> str:
        return f"{escape(self.application)}^{self.eui}^EUI-64"


@dataclass(frozen=True, slots=True)
class Message:
    """One HL7 message ready for MLLP, and the outbox items it carries."""

    control_id: str
    text: str
    items: tuple[OutboxItem, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledgement: MSA-1 code (AA, AE, AR or CA, CE, CR), MSA-2, and its text."""

    code: str
    control_id: str
    text: str

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


class AckError(ValueError):
    """The answer is not an HL7 acknowledgement."""


def parse_ack(text: str) -> Ack:
    """Parse an ACK; raises :class:`AckError` for anything that is not one."""
    try:
        message = hl7.parse(text)
        msa = message.segment("MSA")
        # Fields a short MSA lacks raise IndexError; python-hl7 asserts on some garbage.
        code = str(msa(1)).strip().upper()
        control = str(msa(2))
    except (KeyError, IndexError, ValueError, AssertionError, hl7.ParseException) as exc:
        raise AckError(f"not an HL7 acknowledgement: {exc or type(exc).__name__}") from None
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise AckError(f"MSA-1 {code!r} is not an acknowledgement code")
    # Only coded parts of the answer are kept: interface engines often echo the offending
    # field (a patient's name) in MSA-3 or ERR text, and the reason is logged and stored
    # in clear. ERR-2 is where the error is, ERR-3 the HL7 error code (table 0357).
    detail = ""
    try:
        err = message.segment("ERR")
        location = str(err(2)) if len(err) > 2 else ""
        error = str(err(3)) if len(err) > 3 else ""
        detail = " ".join(p for p in (f"at {location}" if location else "", error) if p)
    except (KeyError, IndexError, AssertionError):
        pass
    return Ack(code, control, detail)


def segment(name: str, fields: Mapping[int, object]) -> str:
    """One segment from its numbered fields (``{5: "96", 11: "R"}``); gaps stay empty.

    Values are used as given: callers escape free text with :func:`escape` and build
    components with ``^`` themselves.
    """
    last = max(fields, default=0)
    values = [""] * (last + 1)
    values[0] = name
    for number, value in fields.items():
        values[number] = str(value)
    return "|".join(values)


def control_id(kind: str, items: Sequence[OutboxItem]) -> str:
    """Deterministic MSH-10 from the rows carried (<= 20 characters, as HL7 2.6 allows)."""
    first = items[0].row_id
    letter = {"numeric": "N", "alarm": "A", "event": "E"}.get(kind, "X")
    return f"{letter}{first}" if len(items) == 1 else f"{letter}{first}x{len(items)}"


def _msh(sender: Sender, kind: str, control: str, profile: str, now: float) -> str:
    return (
        f"MSH|^~\\&|{sender.hd}|{escape(sender.facility)}|||{hl7_timestamp(now)}||"
        f"{kind}|{control}|P|2.6|||NE|AL||UNICODE UTF-8|||{profile}"
    )


def _pid(patient: Patient | None, authority: str = "") -> str:
    if patient is None:
        # No patient admitted at the bed: PID-3 stays empty and PV1-3 (the bed) is the only
        # binding. v2.6 calls PID-3 required, but a made-up identifier (the bed's) could
        # make an interface engine file one patient's data under another's record.
        return "PID|||"
    # XPN: family name ^ given names; the last word is taken as the family name.
    given, _, family = patient.name.strip().rpartition(" ")
    name = f"{escape(family)}^{escape(given)}" if given else escape(family)
    birth = patient.birth_date.replace("-", "")
    return f"PID|||{escape(patient.mrn)}^^^{authority}^MR||{name}||{escape(birth)}"


def _pv1(sender: Sender, bed_id: str) -> str:
    return f"PV1||I|{escape(sender.facility)}^^{escape(bed_id)}"


def _split_stream(stream: str) -> tuple[str, str]:
    device, _, refid = stream.rpartition("/")
    return device, refid


@functools.lru_cache(maxsize=1024)
def _code_field(refid: str) -> str:
    code = codes.code_named(refid)
    return f"{code.cf_code}^{refid}^MDC" if code is not None else f"^{escape(refid)}^MDC"


@functools.lru_cache(maxsize=1024)
def _unit_field(ucum: str | None) -> str:
    if not ucum:
        return ""
    unit = codes.unit_for_ucum(ucum)
    if unit is None:
        return f"{escape(ucum)}^{escape(ucum)}^UCUM"
    return f"{unit.mdc_code}^{unit.mdc_refid}^MDC"


def _finite(value: Any) -> Any:
    """``value``, or ``None`` for a float NaN or infinity (no NM can carry those)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _null_flavour(value: Any) -> str | None:
    """OBX-8 null flavour of a non-finite value (protocols.md 7.3), else ``None``."""
    if isinstance(value, float) and math.isnan(value):
        return "NAN"
    if isinstance(value, float) and math.isinf(value):
        return "PINF" if value > 0 else "NINF"
    return None


def _value(value: Any) -> str:
    """OBX-5 text. Floats in plain decimal: the NM type has no exponent (``1e-05``)."""
    value = _finite(value)
    if value is None:
        return ""
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:  # 1e-05, 1e+16: only Decimal writes these out in plain digits
            text = format(Decimal(text), "f")
        return text[:-2] if text.endswith(".0") else text
    return escape(value)


def observation_message(
    items: Sequence[OutboxItem],
    *,
    sender: Sender,
    patient: Patient | None,
    now: float,
) -> Message:
    """PCD-01 ORU^R01 for numerics of one admission (one bed), in the order given."""
    if not items:
        raise ValueError("an observation message needs at least one numeric")
    bed = items[0].bed_id
    control = control_id("numeric", items)
    segments = [
        _msh(sender, "ORU^R01^ORU_R01", control, PCD01_PROFILE, now),
        _pid(patient, escape(sender.facility)),
        _pv1(sender, bed),
    ]
    # One OBR per device and observation set: a metric seen again (the next reading of a
    # run) starts a new set, since OBX-3 + OBX-4 must name one observation per OBR.
    mds_of: dict[str, int] = {}
    groups: list[tuple[str, list[OutboxItem]]] = []
    open_group: dict[str, tuple[set[str], list[OutboxItem]]] = {}
    for item in items:
        device, refid = _split_stream(item.stream)
        mds_of.setdefault(device, len(mds_of) + 1)
        current = open_group.get(device)
        if current is None or refid in current[0]:
            current = (set(), [])
            open_group[device] = current
            groups.append((device, current[1]))
        current[0].add(refid)
        current[1].append(item)
    obx = 0
    for number, (device, rows) in enumerate(groups, start=1):
        mds = mds_of[device]
        placer = f"{control}-{number}^{sender.hd}"
        first = min(r.t for r in rows)
        segments.append(
            segment(
                "OBR",
                {1: number, 2: placer, 3: placer, 4: MDS_MULTI_PARAM, 7: hl7_timestamp(first)},
            )
        )
        obx += 1
        equipment = f"{escape(device)}^{escape(sender.application)}^{sender.eui}^EUI-64"
        segments.append(
            segment("OBX", {1: obx, 3: MDS_MULTI_PARAM, 4: f"{mds}.0.0.0", 11: "X", 18: equipment})
        )
        metrics: dict[str, int] = {}
        for row in rows:
            refid = _split_stream(row.stream)[1]
            metric = metrics.setdefault(refid, len(metrics) + 1)
            record = row.record
            raw = record.get("value")
            value = _finite(raw)
            status = record.get("status")
            flags = [STATUS_FLAGS[s] for s in status if s in STATUS_FLAGS] if status else []
            if value is None:
                null = _null_flavour(raw) or "NAV"
                if null not in flags:
                    flags.append(null)
            result_status = "X" if value is None or "INV" in flags else "R"
            obx += 1
            # OBX-1 to OBX-14 written out (this line runs once per observation sent; the
            # generic segment() builder is a third of the cost of a message).
            segments.append(
                f"OBX|{obx}|{'' if value is None else 'NM'}|{_code_field(refid)}"
                f"|{mds}.1.1.{metric}|{_value(value)}|{_unit_field(record.get('unit'))}"
                f"||{'~'.join(flags)}|||{result_status}|||{hl7_timestamp(row.t)}"
            )
    return Message(control, "\r".join(segments), tuple(items))


def alert_message(
    item: OutboxItem,
    *,
    sender: Sender,
    patient: Patient | None,
    now: float,
) -> Message:
    """PCD-04 ORU^R40 for one alarm state change (an alarm-log record).

    The record is the alarm engine's log entry (``gateway/alarms/engine.py``): ``alarm``
    (the alert instance id, the same from start to end), ``change`` (raised, escalated,
    acknowledged, paused, cleared, ...), ``condition``, ``alarm_kind``, ``priority``,
    ``state``, ``by``, ``message`` and, for limit alarms, ``code`` (the metric's MDC
    refid), ``value``, ``limit``, ``unit``.
    """
    record = item.record
    control = control_id("alarm", [item])
    instance = escape(record.get("alarm") or f"{item.bed_id}/{item.stream}/{item.row_id}")
    metric = record.get("code")
    kind = str(record.get("alarm_kind", "technical"))
    physiological = kind == "physiological"
    change = str(record.get("change", ""))
    when = hl7_timestamp(item.t)
    if physiological and metric:
        obr4 = _code_field(str(metric))
        direction = str(record.get("direction") or record.get("condition") or "")
        event = EVT_LO if "low" in direction else EVT_HI if "high" in direction else EVT_ALARM
        identification = {2: "ST", 3: event, 5: escape(record.get("message", ""))}
        limits = _value(record.get("limit"))
        value = _finite(record.get("value"))
        source = {
            2: "NM" if value is not None else "",
            3: obr4,
            5: _value(value),
            6: _unit_field(record.get("unit")),
            7: limits,
        }
    else:
        # Technical: the specific event rides in facet 1's OBX-5 (protocols.md 7.4).
        obr4 = EVT_ALARM
        condition = escape(record.get("condition", "alarm"))
        identification = {
            2: "CWE",
            3: EVT_ALARM,
            5: f"^{condition}^{escape(record.get('message', ''))}",
        }
        source = {2: "ST", 3: ATTR_ALERT_SOURCE, 5: escape(item.stream.split("/")[0])}
    phase = ALARM_PHASES.get(change, "update")
    state = str(record.get("state", "active"))
    if state in ("cleared", "inactive", "ended"):
        alarm_state = "inactive"
    else:
        alarm_state = "latched" if state == "latched" else "active"
    inactivation = ["enabled"]
    if change == "acknowledged" or state == "acknowledged":
        inactivation = ["alert-acknowledged"]
    if change == "paused":
        inactivation.append("audio-paused")
    placer = f"{control}^{sender.hd}"
    segments = [
        _msh(sender, "ORU^R40^ORU_R40", control, PCD04_PROFILE, now),
        _pid(patient, escape(sender.facility)),
        _pv1(sender, item.bed_id),
        segment("OBR", {1: 1, 2: placer, 3: placer, 4: obr4, 7: when, 29: instance}),
    ]
    facets: list[dict[int, object]] = [
        {**identification, 14: when},
        {**source, 14: when},
        {2: "ST", 3: ATTR_EVENT_PHASE, 5: phase},
        {2: "ST", 3: ATTR_ALARM_STATE, 5: alarm_state},
        {2: "ST", 3: ATTR_INACTIVATION, 5: "~".join(inactivation)},
        {2: "ST", 3: ATTR_PRIORITY, 5: _PRIORITY.get(str(record.get("priority")), "PN")},
        {2: "ST", 3: ATTR_ALERT_TYPE, 5: _TYPE.get(kind, "ST")},
    ]
    # OBX-4 is <MDS>.<VMD>.<CHAN>.<METRIC>.<FACET> (protocols.md 7.4): the containment of
    # the alarm's metric, then the facet number.
    known = codes.code_named(str(metric)) if physiological and metric else None
    containment = f"1.1.1.{known.cf_code}" if known is not None else "1.0.0.0"
    for number, facet in enumerate(facets, start=1):
        segments.append(segment("OBX", {1: number, 4: f"{containment}.{number}", 11: "F", **facet}))
    return Message(control, "\r".join(segments), (item,))


def messages_for(
    items: Sequence[OutboxItem],
    *,
    sender: Sender,
    patients: Mapping[int, Patient | None],
    now: float,
    per_message: int = 50,
) -> tuple[list[Message], list[OutboxItem]]:
    """Every item in one or more messages, keeping outbox order within each bed; and the
    items HL7 has no message for (audio pause records: not alerts), done without sending.

    Alarms go one per message (PCD-04); numerics of one admission are grouped, up to
    ``per_message`` observations each (PCD-01).
    """
    out: list[Message] = []
    skipped: list[OutboxItem] = []
    # One open run of numerics per admission, not just the latest one: the outbox is in
    # commit order, which interleaves the beds of a live ward, so runs of consecutive items
    # put about one observation in each message (1.2 at 16 beds, bench/soak.py): one round
    # trip per observation, more than a receiver keeps up with.
    runs: dict[int | None, list[OutboxItem]] = {}

    def flush(admission: int | None) -> None:
        run = runs.pop(admission, None)
        if run:
            patient = patients.get(run[0].admission or -1)
            out.append(observation_message(run, sender=sender, patient=patient, now=now))

    def flush_all() -> None:
        for admission in list(runs):  # the run opened first goes first
            flush(admission)

    for item in items:
        if item.kind == "alarm" and item.record.get("alarm") is None:
            skipped.append(item)
        elif item.kind == "alarm":
            flush_all()
            patient = patients.get(item.admission or -1)
            out.append(alert_message(item, sender=sender, patient=patient, now=now))
        elif item.kind == "numeric":
            run = runs.setdefault(item.admission, [])
            run.append(item)
            if len(run) >= per_message:
                flush(item.admission)
        else:
            skipped.append(item)
    flush_all()
    return out, skipped
