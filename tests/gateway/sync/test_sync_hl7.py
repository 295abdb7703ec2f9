"""PCD-01 and PCD-04 messages: structure checked by an independent library (hl7apy, strict
v2.6 validation where it applies), codes and fields as protocols.md 7.3 / 7.4 give them."""

from __future__ import annotations

from typing import Any

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sync.hl7 import (
    AckError,
    Sender,
    alert_message,
    control_id,
    eui64_for,
    messages_for,
    observation_message,
    parse_ack,
    timestamp,
)
from gateway.twin.store import OutboxItem
from tests.support.sync import PATIENT, T0

SENDER = Sender("gw-ward3", facility="WARD3")


def numeric_item(
    row: int, refid: str, value: float | None, unit: str, *, device: str = "ox-1", **extra: Any
) -> OutboxItem:
    record = {"value": value, "unit": unit, "status": extra.pop("status", [])}
    return OutboxItem(
        row,
        "numeric",
        row,
        0,
        T0,
        extra.pop("bed", "bed-1"),
        extra.pop("admission", 1),
        f"{device}/{refid}",
        row,
        T0 + row,
        record,
    )


def alarm_item(row: int, record: dict[str, Any], stream: str = "alarms/bed-1") -> OutboxItem:
    return OutboxItem(row, "alarm", row, 0, T0, "bed-1", 1, stream, row, T0 + row, record)


def fields(text: str, name: str) -> list[list[str]]:
    return [seg.split("|") for seg in text.split("\r") if seg.startswith(name + "|")]


def metrics(text: str) -> list[list[str]]:
    """The observation OBX rows, without the device-related (MDS) rows."""
    return [o for o in fields(text, "OBX") if not o[3].startswith("69965^")]


def test_observation_message_is_a_valid_v26_oru_r01_with_pcd01_content() -> None:
    items = [
        numeric_item(10, "MDC_PULS_OXIM_SAT_O2", 96.0, "%"),
        numeric_item(11, "MDC_PULS_OXIM_PULS_RATE", 74.0, "/min"),
        numeric_item(12, "MDC_PULS_OXIM_PERF_REL", 3.9, "1"),
    ]
    message = observation_message(items, sender=SENDER, patient=PATIENT, now=T0 + 20)

    parsed = parse_message(message.text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate()
    assert parsed.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert parsed.msh.msh_12.to_er7() == "2.6"
    assert parsed.msh.msh_21.to_er7().startswith("IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1")
    assert parsed.msh.msh_10.to_er7() == message.control_id == "N10x3"

    pid = fields(message.text, "PID")[0]
    assert pid[3] == "MRN-0042^^^WARD3^MR" and pid[5] == "Lee^Ann" and pid[7] == "19700102"
    obx = fields(message.text, "OBX")
    # One device-related row (MDS, OBX-11 X) then the three metrics in order.
    assert obx[0][3].startswith("69965^") and obx[0][4] == "1.0.0.0" and obx[0][11] == "X"
    assert obx[0][18].startswith("ox-1^BEDGW^")
    assert [o[3] for o in obx[1:]] == [
        "150456^MDC_PULS_OXIM_SAT_O2^MDC",
        "149530^MDC_PULS_OXIM_PULS_RATE^MDC",
        "150448^MDC_PULS_OXIM_PERF_REL^MDC",
    ]
    assert [o[4] for o in obx[1:]] == ["1.1.1.1", "1.1.1.2", "1.1.1.3"]
    assert [o[5] for o in obx[1:]] == ["96", "74", "3.9"]
    assert [o[6] for o in obx[1:]] == [
        "262688^MDC_DIM_PERCENT^MDC",
        "264864^MDC_DIM_BEAT_PER_MIN^MDC",
        "262656^MDC_DIM_DIMLESS^MDC",
    ]
    assert all(o[2] == "NM" and o[11] == "R" for o in obx[1:])
    assert [o[14] for o in obx[1:]] == [timestamp(T0 + r) for r in (10, 11, 12)]


def test_a_missing_value_goes_as_empty_nav_x_and_device_flags_map_to_obx8() -> None:
    items = [
        numeric_item(1, "MDC_PULS_OXIM_SAT_O2", None, "%", status=["unavailable"]),
        numeric_item(2, "MDC_PULS_OXIM_PULS_RATE", 80.0, "/min", status=["questionable"]),
        numeric_item(3, "MDC_PULS_OXIM_SAT_O2", 90.0, "%", status=["invalid", "early"]),
    ]
    obx = metrics(observation_message(items, sender=SENDER, patient=None, now=T0).text)
    assert (obx[0][2], obx[0][5], obx[0][8], obx[0][11]) == ("", "", "NAV", "X")
    assert (obx[1][5], obx[1][8], obx[1][11]) == ("80", "QUES", "R")
    assert (obx[2][8], obx[2][11]) == ("INV~EARLY", "X")


def test_devices_get_their_own_obr_and_mds_numbering() -> None:
    items = [
        numeric_item(1, "MDC_PULS_OXIM_SAT_O2", 97.0, "%", device="ox-1"),
        numeric_item(2, "MDC_ECG_HEART_RATE", 61.0, "/min", device="ecg-1"),
        numeric_item(3, "MDC_PULS_OXIM_SAT_O2", 96.0, "%", device="ox-1"),
    ]
    text = observation_message(items, sender=SENDER, patient=PATIENT, now=T0).text
    # ox-1's second SpO2 is another observation of the same metric: its own OBR, so that
    # no OBR holds two observations with one OBX-3/OBX-4.
    assert [o[1] for o in fields(text, "OBR")] == ["1", "2", "3"]
    assert [o[7] for o in fields(text, "OBR")] == [timestamp(T0 + r) for r in (1, 2, 3)]
    sub_ids = [o[4] for o in fields(text, "OBX")]
    assert sub_ids == ["1.0.0.0", "1.1.1.1", "2.0.0.0", "2.1.1.1", "1.0.0.0", "1.1.1.1"]
    parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate()


def test_a_patient_free_admission_sends_an_empty_pid() -> None:
    text = observation_message(
        [numeric_item(1, "MDC_PULS_OXIM_SAT_O2", 97.0, "%")], sender=SENDER, patient=None, now=T0
    ).text
    assert fields(text, "PID")[0] == ["PID", "", "", ""]


def test_limit_alarm_is_pcd04_with_all_seven_facets() -> None:
    record = {
        "alarm": "bed-1/ox-1/spo2_low/3",
        "change": "raised",
        "condition": "spo2_low",
        "alarm_kind": "physiological",
        "priority": "medium",
        "state": "active",
        "code": "MDC_PULS_OXIM_SAT_O2",
        "value": 86.0,
        "limit": 90,
        "unit": "%",
        "message": "SpO2 86 % below 90 %",
    }
    message = alert_message(alarm_item(7, record), sender=SENDER, patient=PATIENT, now=T0)
    parsed = parse_message(message.text, validation_level=VALIDATION_LEVEL.TOLERANT)
    assert parsed.msh.msh_9.to_er7() == "ORU^R40^ORU_R40"
    obr = fields(message.text, "OBR")[0]
    assert obr[4] == "150456^MDC_PULS_OXIM_SAT_O2^MDC"
    assert obr[29] == "bed-1/ox-1/spo2_low/3"
    obx = fields(message.text, "OBX")
    # The 5th sub-id element numbers the facets (protocols.md 7.4: 1.3.1.150456.1 ...).
    assert [o[4] for o in obx] == [f"1.1.1.150456.{n}" for n in range(1, 8)]
    assert obx[0][3] == "196670^MDC_EVT_LO^MDC" and obx[0][5] == "SpO2 86 % below 90 %"
    assert (obx[1][3], obx[1][5], obx[1][6], obx[1][7]) == (
        "150456^MDC_PULS_OXIM_SAT_O2^MDC",
        "86",
        "262688^MDC_DIM_PERCENT^MDC",
        "90",
    )
    assert [o[5] for o in obx[2:]] == ["start", "active", "enabled", "PM", "SP"]
    assert all(o[11] == "F" for o in obx)


@pytest.mark.parametrize(
    ("event", "state", "extra", "phase", "alarm_state", "inactivation"),
    [
        ("escalated", "active", {}, "escalate", "active", "enabled"),
        (
            "acknowledged",
            "acknowledged",
            {"by": "rn-kim"},
            "update",
            "active",
            "alert-acknowledged",
        ),
        (
            "paused",
            "active",
            {},
            "update",
            "active",
            "enabled~audio-paused",
        ),
        ("latched", "latched", {}, "update", "latched", "enabled"),
        ("cleared", "cleared", {}, "end", "inactive", "enabled"),
    ],
)
def test_alarm_phases_states_and_inactivation(
    event: str,
    state: str,
    extra: dict[str, Any],
    phase: str,
    alarm_state: str,
    inactivation: str,
) -> None:
    record = {
        "alarm": "a/1",
        "change": event,
        "state": state,
        "condition": "occlusion",
        "alarm_kind": "technical",
        "priority": "high",
        "message": "Occlusion",
        **extra,
    }
    obx = fields(
        alert_message(
            alarm_item(1, record, "pump-1/occlusion"), sender=SENDER, patient=None, now=T0
        ).text,
        "OBX",
    )
    assert [o[5] for o in obx[2:5]] == [phase, alarm_state, inactivation]


def test_technical_alarm_names_its_event_and_source_device() -> None:
    record = {
        "alarm": "bed-1/pump-1/occlusion/1",
        "change": "raised",
        "state": "active",
        "condition": "occlusion",
        "alarm_kind": "technical",
        "priority": "high",
        "message": "Pump occlusion",
    }
    text = alert_message(
        alarm_item(4, record, "pump-1/occlusion"), sender=SENDER, patient=None, now=T0
    ).text
    obr, obx = fields(text, "OBR")[0], fields(text, "OBX")
    assert obr[4] == "196616^MDC_EVT_ALARM^MDC"
    assert (obx[0][2], obx[0][3], obx[0][5]) == (
        "CWE",
        "196616^MDC_EVT_ALARM^MDC",
        "^occlusion^Pump occlusion",
    )
    assert (obx[1][3], obx[1][5]) == ("68480^MDC_ATTR_ALERT_SOURCE^MDC", "pump-1")
    assert [o[5] for o in obx[5:]] == ["PH", "ST"]


def test_messages_group_numerics_per_admission_and_send_alarms_alone_in_order() -> None:
    a = numeric_item(1, "MDC_PULS_OXIM_SAT_O2", 97.0, "%")
    b = numeric_item(2, "MDC_PULS_OXIM_SAT_O2", 96.0, "%")
    c = numeric_item(3, "MDC_PULS_OXIM_SAT_O2", 95.0, "%", bed="bed-2", admission=2)
    alarm = alarm_item(4, {"alarm": "x", "change": "raised", "alarm_kind": "technical"})
    d = numeric_item(5, "MDC_PULS_OXIM_SAT_O2", 94.0, "%", bed="bed-2", admission=2)
    audio = alarm_item(6, {"alarm": None, "change": "paused", "by": "rn-kim"}, "audio")
    out, skipped = messages_for(
        [alarm, a, b, c, d, audio], sender=SENDER, patients={1: PATIENT}, now=T0, per_message=2
    )
    assert [i.row_id for i in skipped] == [6]
    assert [[i.row_id for i in m.items] for m in out] == [[4], [1, 2], [3, 5]]
    assert [m.control_id for m in out] == ["A4", "N1x2", "N3x2"]
    assert "MRN-0042" in out[1].text and "MRN-0042" not in out[2].text


def test_interleaved_beds_are_grouped_per_admission_in_each_beds_order() -> None:
    # The outbox interleaves the beds of a live ward; each bed still gets whole messages.
    a1 = numeric_item(1, "MDC_PULS_OXIM_SAT_O2", 97.0, "%")
    b1 = numeric_item(2, "MDC_PULS_OXIM_SAT_O2", 95.0, "%", bed="bed-2", admission=2)
    a2 = numeric_item(3, "MDC_PULS_OXIM_SAT_O2", 96.0, "%")
    b2 = numeric_item(4, "MDC_PULS_OXIM_SAT_O2", 94.0, "%", bed="bed-2", admission=2)
    a3 = numeric_item(5, "MDC_PULS_OXIM_SAT_O2", 98.0, "%")
    out, _ = messages_for(
        [a1, b1, a2, b2, a3], sender=SENDER, patients={1: PATIENT}, now=T0, per_message=2
    )
    assert [[i.row_id for i in m.items] for m in out] == [[1, 3], [2, 4], [5]]
    assert [m.control_id for m in out] == ["N1x2", "N2x2", "N5"]


def test_control_ids_are_deterministic_and_fit_hl7() -> None:
    items = [numeric_item(r, "MDC_PULS_OXIM_SAT_O2", 97.0, "%") for r in (123456789, 123456790)]
    assert control_id("numeric", items) == control_id("numeric", list(items))
    assert len(control_id("numeric", items)) <= 20


def test_gateway_eui64_is_stable_and_locally_administered() -> None:
    eui = eui64_for("gw-ward3")
    assert eui == eui64_for("gw-ward3") != eui64_for("gw-ward4")
    assert len(eui) == 16 and int(eui[:2], 16) & 0x03 == 0x02


@pytest.mark.parametrize("code", ["AA", "AE", "AR", "CA", "CE", "CR"])
def test_acks_are_understood(code: str) -> None:
    ack = parse_ack(f"MSH|^~\\&|X|Y|||20260101||ACK|9|P|2.6\rMSA|{code}|N1x2|why")
    assert (ack.code, ack.control_id, ack.accepted) == (code, "N1x2", code in ("AA", "CA"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "MSH|^~\\&|X\rPID|1",
        "MSH|^~\\&|X|Y|||2026||ACK|9|P|2.6\rMSA|ZZ|1",
        "MSH|^~\\&|X|Y|||2026||ACK|9|P|2.6\rMSA|AA",  # no MSA-2
        "MSH|\rMSA|AA|1",  # python-hl7 asserts on this one
    ],
)
def test_anything_else_is_not_an_ack(text: str) -> None:
    with pytest.raises(AckError):
        parse_ack(text)


@settings(max_examples=200, deadline=None)
@given(
    device=st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s),
    value=st.floats(allow_nan=False, allow_infinity=False, width=32) | st.none(),
    bed=st.text(min_size=1, max_size=12),
)
def test_any_device_id_bed_or_value_keeps_the_segment_structure(
    device: str, value: float | None, bed: str
) -> None:
    item = numeric_item(1, "MDC_PULS_OXIM_SAT_O2", value, "%", device=device, bed=bed)
    text = observation_message([item], sender=SENDER, patient=PATIENT, now=T0).text
    message = hl7.parse(text)
    assert [str(s[0]) for s in message] == ["MSH", "PID", "PV1", "OBR", "OBX", "OBX"]
    obx = message.segments("OBX")
    assert str(obx[1][3]) == "150456^MDC_PULS_OXIM_SAT_O2^MDC"
    assert message.unescape(str(obx[0][18][0][0])) == device


def test_a_technical_alarm_numbers_its_facets_at_the_device_level() -> None:
    record = {"alarm": "a9", "change": "raised", "alarm_kind": "technical", "priority": "high"}
    text = alert_message(alarm_item(3, record), sender=SENDER, patient=None, now=T0).text
    assert [o[4] for o in fields(text, "OBX")] == [f"1.0.0.0.{n}" for n in range(1, 8)]


def test_nm_values_never_use_an_exponent_and_non_finite_values_go_as_null_flavours() -> None:
    items = [
        numeric_item(1, "MDC_PULS_OXIM_PERF_REL", 1e-05, "1"),
        numeric_item(2, "MDC_PULS_OXIM_PERF_REL", 2.5e16, "1"),
        numeric_item(3, "MDC_PULS_OXIM_PERF_REL", float("nan"), "1"),
        numeric_item(4, "MDC_PULS_OXIM_PERF_REL", float("inf"), "1"),
        numeric_item(5, "MDC_PULS_OXIM_PERF_REL", float("-inf"), "1"),
    ]
    text = observation_message(items, sender=SENDER, patient=PATIENT, now=T0).text
    obx = metrics(text)
    assert [o[5] for o in obx] == ["0.00001", "25000000000000000", "", "", ""]
    assert [o[2] for o in obx] == ["NM", "NM", "", "", ""]
    assert [o[8] for o in obx] == ["", "", "NAN", "PINF", "NINF"]
    assert [o[11] for o in obx] == ["R", "R", "X", "X", "X"]
    parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate()
