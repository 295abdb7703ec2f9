"""Heart Rate Measurement: byte-exact vectors from protocols.md 2.3, 0, 1 and many RR
intervals, malformed payloads, and the HeartRateStrap device model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import codes, gatt, registry
from drivers.ecg.heart_rate import (
    HeartRateMeasurement,
    HeartRateSettings,
    HeartRateStrap,
    SensorContact,
    contact_bits_for,
    decode_heart_rate,
    encode_heart_rate,
)
from drivers.readings import Condition, DeviceEvent, MeasurementStatus, Numeric


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- protocols.md 2.3 worked examples ---------------------------------------------------------


def test_plain_uint8_rate() -> None:  # 2.3 row 1
    m = decode_heart_rate(h("00 48"))
    assert m == HeartRateMeasurement(72)
    assert m.contact is SensorContact.NOT_SUPPORTED
    assert m.rr_intervals is None and m.energy_expended is None
    assert encode_heart_rate(72) == h("00 48")


def test_contact_supported_but_not_detected() -> None:  # 2.3 row 2
    m = decode_heart_rate(h("04 4B"))
    assert m is not None and m.heart_rate == 75
    assert m.contact is SensorContact.NO_CONTACT
    assert encode_heart_rate(75, contact_bits=contact_bits_for(SensorContact.NO_CONTACT)) == h(
        "04 4B"
    )


def test_contact_and_two_rr_intervals() -> None:  # 2.3 row 3
    m = decode_heart_rate(h("16 3E 00 04 DE 03"))
    assert m == HeartRateMeasurement(62, contact_bits=3, rr_intervals=(1024, 990))
    assert m.contact is SensorContact.CONTACT
    assert m.rr_seconds == (1.0, 990 / 1024)
    assert encode_heart_rate(62, contact_bits=3, rr_intervals=[1024, 990]) == h("16 3E 00 04 DE 03")


def test_uint16_rate_energy_and_rr() -> None:  # 2.3 row 4
    m = decode_heart_rate(h("19 2C 01 10 27 9C 03"))
    assert m == HeartRateMeasurement(300, energy_expended=10000, rr_intervals=(924,), wide=True)
    assert encode_heart_rate(300, energy_expended=10000, rr_intervals=[924]) == h(
        "19 2C 01 10 27 9C 03"
    )


def test_h10_style() -> None:  # 2.3 row 5
    m = decode_heart_rate(h("10 43 B5 03"))
    assert m == HeartRateMeasurement(67, rr_intervals=(949,))
    assert m.contact is SensorContact.NOT_SUPPORTED
    assert round(m.rr_seconds[0] * 1000, 1) == 926.8


# --- RR counts, flags, malformed -------------------------------------------------------------


def test_rr_flag_with_no_values_is_an_empty_tuple() -> None:
    m = decode_heart_rate(h("10 43"))
    assert m is not None and m.rr_intervals == ()
    assert m.encode() == h("10 43")


def test_many_rr_intervals() -> None:
    rr = list(range(600, 600 + 9 * 7, 7))  # 9 intervals: 19 bytes, the default ATT payload
    payload = encode_heart_rate(120, rr_intervals=rr)
    assert len(payload) == 20
    m = decode_heart_rate(payload)
    assert m is not None and m.rr_intervals == tuple(rr)


@pytest.mark.parametrize("contact_bits", [0, 1, 2, 3])
def test_contact_patterns(contact_bits: int) -> None:
    m = decode_heart_rate(bytes([contact_bits << 1, 80]))
    assert m is not None
    expected = {
        0: SensorContact.NOT_SUPPORTED,
        1: SensorContact.NOT_SUPPORTED,  # only 0b10 means "no contact" (2.2's common bug)
        2: SensorContact.NO_CONTACT,
        3: SensorContact.CONTACT,
    }[contact_bits]
    assert m.contact is expected


@pytest.mark.parametrize(
    "payload",
    ["", "00", "01 48", "08 48 10", "10 43 B5", "00 48 00", "18 48 10 27 01"],
)
def test_malformed_payloads_decode_to_none(payload: str) -> None:
    assert decode_heart_rate(h(payload)) is None


def test_encoder_refuses_what_the_wire_cannot_carry() -> None:
    for kwargs in (
        {"heart_rate": 256, "wide": False},
        {"heart_rate": -1},
        {"heart_rate": 60, "energy_expended": 70000},
        {"heart_rate": 60, "rr_intervals": [65536]},
        {"heart_rate": 60, "contact_bits": 4},
        {"heart_rate": 60, "reserved_flags": 0x08},
    ):
        with pytest.raises(ValueError):
            encode_heart_rate(**kwargs)  # type: ignore[arg-type]


measurements = st.builds(
    HeartRateMeasurement,
    st.integers(0, 0xFF),
    st.integers(0, 3),
    st.none() | st.integers(0, 0xFFFF),
    st.none() | st.lists(st.integers(0, 0xFFFF), max_size=12).map(tuple),
    st.just(False),
    st.sampled_from([0, 0x20, 0xE0]),
) | st.builds(
    HeartRateMeasurement,
    st.integers(0, 0xFFFF),
    st.integers(0, 3),
    st.none() | st.integers(0, 0xFFFF),
    st.none() | st.lists(st.integers(0, 0xFFFF), max_size=12).map(tuple),
    st.just(True),
)


@given(measurements)
def test_round_trip(m: HeartRateMeasurement) -> None:
    assert decode_heart_rate(m.encode()) == m


@given(st.binary(max_size=24))
def test_arbitrary_bytes_never_raise_and_are_counted(data: bytes) -> None:
    decoded = decode_heart_rate(data)
    if decoded is not None:
        assert decoded.encode() == data
    model = HeartRateStrap("hr", HeartRateSettings())
    model.on_connect(0.0)
    model.feed(gatt.HEART_RATE_MEASUREMENT, data, 1.0)
    c = model.counters
    assert c.bytes_received == len(data)
    assert c.frames_decoded == (decoded is not None)
    assert c.bytes_dropped == (0 if decoded is not None else len(data))


# --- device model ---------------------------------------------------------------------------


@pytest.fixture
def strap() -> HeartRateStrap:
    model = HeartRateStrap("bed2-hr", HeartRateSettings(name="Polar H10 1234ABCD"))
    writes, readings = model.on_connect(0.0)
    assert list(writes) == [] and list(readings) == []
    return model


def rr_stream(readings: object) -> list[Numeric]:
    assert isinstance(readings, (list, tuple))
    return [r for r in readings if isinstance(r, Numeric) and r.code == codes.ECG_RR_INTERVAL]


def rate(readings: object) -> Numeric:
    assert isinstance(readings, (list, tuple))
    (n,) = [r for r in readings if isinstance(r, Numeric) and r.code == codes.ECG_HEART_RATE]
    return n


def test_model_no_rr(strap: HeartRateStrap) -> None:
    out = strap.feed(gatt.HEART_RATE_MEASUREMENT, h("00 48"), 10.0)
    assert out == [Numeric("bed2-hr", codes.ECG_HEART_RATE, 72.0, codes.BEATS_PER_MINUTE, 10.0)]


def test_model_one_rr(strap: HeartRateStrap) -> None:
    out = strap.feed(gatt.HEART_RATE_MEASUREMENT, h("10 43 B5 03"), 10.0)
    assert rate(out).value == 67.0
    assert rr_stream(out) == [
        Numeric("bed2-hr", codes.ECG_RR_INTERVAL, 949 * 1000 / 1024, codes.MILLISECOND, 10.0)
    ]
    assert rr_stream(out)[0].value == 926.7578125  # exact: a tick is 125/128 ms


def test_model_many_rr_are_laid_back_to_back(strap: HeartRateStrap) -> None:
    payload = encode_heart_rate(60, contact_bits=3, rr_intervals=[1024, 512, 2048])
    out = rr_stream(strap.feed(gatt.HEART_RATE_MEASUREMENT, payload, 100.0))
    # Oldest first; each interval's time is the beat that ends it; the last ends at now.
    assert [(r.value, r.time) for r in out] == [
        (1000.0, 97.5),
        (500.0, 98.0),
        (2000.0, 100.0),
    ]
    assert all(r.status == MeasurementStatus.NONE for r in out)


def test_model_contact_lost_raises_lead_off(strap: HeartRateStrap) -> None:
    off = strap.feed(gatt.HEART_RATE_MEASUREMENT, h("14 00 00 04"), 1.0)
    events = [r for r in off if isinstance(r, DeviceEvent)]
    assert [(e.condition, e.active) for e in events] == [(Condition.LEAD_OFF, True)]
    assert rate(off).value is None and rate(off).status == MeasurementStatus.UNAVAILABLE
    assert rr_stream(off)[0].status == MeasurementStatus.QUESTIONABLE
    # "Not supported" leaves the condition as it was; "contact" clears it.
    assert not [
        r
        for r in strap.feed(gatt.HEART_RATE_MEASUREMENT, h("00 48"), 2.0)
        if isinstance(r, DeviceEvent)
    ]
    assert strap.active_conditions == {Condition.LEAD_OFF}
    on = strap.feed(gatt.HEART_RATE_MEASUREMENT, h("06 48"), 3.0)
    assert [(r.condition, r.active) for r in on if isinstance(r, DeviceEvent)] == [
        (Condition.LEAD_OFF, False)
    ]


def test_model_implausible_rate_is_invalid(strap: HeartRateStrap) -> None:
    n = rate(strap.feed(gatt.HEART_RATE_MEASUREMENT, encode_heart_rate(301), 1.0))
    assert n.value is None and n.status == MeasurementStatus.INVALID
    n = rate(strap.feed(gatt.HEART_RATE_MEASUREMENT, h("19 2C 01 10 27 9C 03"), 2.0))
    assert n.value == 300.0


def test_model_disconnect_clears_and_other_uuids_are_dropped(strap: HeartRateStrap) -> None:
    strap.feed(gatt.HEART_RATE_MEASUREMENT, h("04 4B"), 1.0)
    assert strap.feed(gatt.PLX_CONTINUOUS, h("00 62 00 48 00"), 1.5) == []
    gone = strap.on_disconnect(2.0)
    assert [(e.condition, e.active) for e in gone if isinstance(e, DeviceEvent)] == [
        (Condition.LEAD_OFF, False)
    ]
    assert strap.counters.frames_decoded == 1 and strap.counters.bytes_dropped == 5


def test_spec_is_registered() -> None:
    spec = registry.get("ble-heart-rate")
    assert spec.transport == "ble" and spec.settings is HeartRateSettings
    assert set(spec.scenarios) >= {"normal", "disconnects", "battery_low", "sensor_off"}
    model = spec.make_model("hr", HeartRateSettings())
    assert isinstance(model, HeartRateStrap)
    assert model.service_uuid == gatt.uuid16(0x180D)
    assert model.notify_uuids == ("00002a37-0000-1000-8000-00805f9b34fb",)


@pytest.mark.parametrize("contact", list(SensorContact))
def test_contact_bits_for_round_trips(contact: SensorContact) -> None:
    m = decode_heart_rate(encode_heart_rate(70, contact_bits=contact_bits_for(contact)))
    assert m is not None and m.contact is contact
