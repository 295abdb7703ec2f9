"""Bluetooth Pulse Oximeter Service: byte-exact vectors from protocols.md 1.7, every flag
combination, malformed payloads, and the PlxOximeter device model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import codes, gatt, registry
from drivers.ieee11073 import MedFloat, NoValue
from drivers.oximetry.plx import (
    CONDITIONS,
    DateTime,
    PlxContinuous,
    PlxDeviceStatus,
    PlxFeature,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxOximeter,
    PlxSettings,
    PlxSpotCheck,
    SpO2PR,
    decode_plx_continuous,
    decode_plx_features,
    decode_plx_spot_check,
    encode_plx_continuous,
    encode_plx_features,
    encode_plx_spot_check,
)
from drivers.readings import Condition, DeviceEvent, MeasurementStatus, Numeric


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- protocols.md 1.7 worked examples -------------------------------------------------------


def test_vector_1_plain_values() -> None:  # protocols.md 1.7 #1
    m = decode_plx_continuous(h("00 62 00 48 00"))
    assert m == PlxContinuous(SpO2PR(MedFloat(98, 0), MedFloat(72, 0)))
    assert encode_plx_continuous(98.0, 72.0) == h("00 62 00 48 00")


def test_vectors_2_and_3_same_values_two_forms() -> None:  # protocols.md 1.7 #2, #3
    plain = decode_plx_continuous(h("00 64 00 5A 00"))
    normalised = decode_plx_continuous(h("00 E8 F3 84 F3"))
    assert plain is not None and normalised is not None
    assert normalised.normal == SpO2PR(MedFloat(1000, -1), MedFloat(900, -1))
    for m in (plain, normalised):
        assert isinstance(m.normal.spo2, MedFloat) and m.normal.spo2.value == 100.0
        assert isinstance(m.normal.pulse_rate, MedFloat) and m.normal.pulse_rate.value == 90.0
    assert normalised.encode() == h("00 E8 F3 84 F3")


def test_vector_4_status_and_pai() -> None:  # protocols.md 1.7 #4
    payload = h("1C 5F 00 5A 00 20 00 00 00 00 57 F0")
    m = decode_plx_continuous(payload)
    assert m == PlxContinuous(
        SpO2PR(MedFloat(95, 0), MedFloat(90, 0)),
        measurement_status=PlxMeasurementStatus.MEASUREMENT_ONGOING,
        device_status=PlxDeviceStatus(0),
        pulse_amplitude_index=MedFloat(87, -1),
    )
    assert (
        encode_plx_continuous(
            95.0,
            90.0,
            measurement_status=0x0020,
            device_status=0,
            pulse_amplitude_index=8.7,
        )
        == payload
    )


def test_vector_5_every_optional_field() -> None:  # protocols.md 1.7 #5
    payload = h("1F DE F3 CA F3 CA F3 5A F5 D4 F3 B2 F2 20 01 00 00 00 7A E3")
    assert len(payload) == 20
    m = decode_plx_continuous(payload)
    assert m is not None
    assert m.normal == SpO2PR(MedFloat(990, -1), MedFloat(970, -1))
    assert m.fast == SpO2PR(MedFloat(970, -1), MedFloat(1370, -1))
    assert m.slow == SpO2PR(MedFloat(980, -1), MedFloat(690, -1))
    assert m.measurement_status == (
        PlxMeasurementStatus.MEASUREMENT_ONGOING | PlxMeasurementStatus.FULLY_QUALIFIED
    )
    assert m.device_status == 0
    assert m.pulse_amplitude_index == MedFloat(890, -2)
    assert m.encode() == payload


def test_vector_6_nan_values() -> None:  # protocols.md 1.7 #6
    m = decode_plx_continuous(h("00 FF 07 FF 07"))
    assert m == PlxContinuous(SpO2PR(NoValue.NAN, NoValue.NAN))
    assert encode_plx_continuous(NoValue.NAN, NoValue.NAN) == h("00 FF 07 FF 07")


def test_vector_7_sensor_disconnected() -> None:  # protocols.md 1.7 #7
    m = decode_plx_continuous(h("08 FF 07 FF 07 00 80 00"))
    assert m is not None
    assert m.device_status == PlxDeviceStatus.SENSOR_DISCONNECTED
    assert m.measurement_status is None


def test_vector_8_spot_check() -> None:  # protocols.md 1.7 #8
    payload = h("0F AC F3 BE F5 E8 07 0B 1D 17 08 39 20 40 22 00 00 66 E3")
    m = decode_plx_spot_check(payload)
    assert m == PlxSpotCheck(
        spo2=MedFloat(940, -1),
        pulse_rate=MedFloat(1470, -1),
        timestamp=DateTime(2024, 11, 29, 23, 8, 57),
        measurement_status=PlxMeasurementStatus.MEASUREMENT_ONGOING
        | PlxMeasurementStatus.QUESTIONABLE,
        device_status=PlxDeviceStatus.EQUIPMENT_MALFUNCTION | PlxDeviceStatus.LOW_PERFUSION,
        pulse_amplitude_index=MedFloat(870, -2),
    )
    assert m.encode() == payload
    assert m.timestamp is not None and m.timestamp.epoch() == 1732921737.0


def test_vector_9_features() -> None:  # protocols.md 1.7 #9
    payload = h("A3 00 40 10 80 01 00")
    f = decode_plx_features(payload)
    assert f == PlxFeatures(
        PlxFeature.MEASUREMENT_STATUS
        | PlxFeature.DEVICE_STATUS
        | PlxFeature.SLOW
        | PlxFeature.MULTIPLE_BONDS,
        PlxMeasurementStatus.EARLY_ESTIMATE | PlxMeasurementStatus.CALIBRATION_ONGOING,
        PlxDeviceStatus.NON_PULSATILE_SIGNAL | PlxDeviceStatus.QUESTIONABLE_PULSE,
    )
    assert f.encode() == payload


# --- every flag combination -----------------------------------------------------------------

CONTINUOUS_FIELD_LENGTHS = (4, 4, 2, 3, 2)  # fast, slow, meas status, dev status, PAI
SPOT_FIELD_LENGTHS = (7, 2, 3, 2, 0)  # timestamp, meas status, dev status, PAI, clock flag


@pytest.mark.parametrize("flags", range(32))
def test_every_continuous_flag_combination(flags: int) -> None:
    bit = [bool(flags & (1 << i)) for i in range(5)]
    payload = encode_plx_continuous(
        MedFloat(97, 0),
        NoValue.NRES,
        fast=(MedFloat(960, -1), MedFloat(75, 0)) if bit[0] else None,
        slow=(NoValue.POSITIVE_INFINITY, MedFloat(-3, 1)) if bit[1] else None,
        measurement_status=0xA5E0 if bit[2] else None,
        device_status=0xFF7FFF if bit[3] else None,
        pulse_amplitude_index=NoValue.NEGATIVE_INFINITY if bit[4] else None,
    )
    assert payload[0] == flags
    expected_len = 5 + sum(n for n, on in zip(CONTINUOUS_FIELD_LENGTHS, bit, strict=True) if on)
    assert len(payload) == expected_len
    m = decode_plx_continuous(payload)
    assert m is not None
    assert m.normal == SpO2PR(MedFloat(97, 0), NoValue.NRES)
    assert m.fast == (SpO2PR(MedFloat(960, -1), MedFloat(75, 0)) if bit[0] else None)
    assert m.slow == (SpO2PR(NoValue.POSITIVE_INFINITY, MedFloat(-3, 1)) if bit[1] else None)
    assert m.measurement_status == (0xA5E0 if bit[2] else None)
    assert m.device_status == (0xFF7FFF if bit[3] else None)
    assert m.pulse_amplitude_index == (NoValue.NEGATIVE_INFINITY if bit[4] else None)
    # One byte short or long of what the flags imply is malformed (protocols.md 1.8).
    assert decode_plx_continuous(payload[:-1]) is None
    assert decode_plx_continuous(payload + b"\x00") is None


@pytest.mark.parametrize("flags", range(32))
def test_every_spot_check_flag_combination(flags: int) -> None:
    bit = [bool(flags & (1 << i)) for i in range(5)]
    stamp = DateTime(2025, 2, 28, 7, 5, 3)
    payload = encode_plx_spot_check(
        NoValue.RESERVED,
        MedFloat(61, 0),
        timestamp=stamp if bit[0] else None,
        measurement_status=0x2000 if bit[1] else None,
        device_status=0x008800 if bit[2] else None,
        pulse_amplitude_index=MedFloat(12, -1) if bit[3] else None,
        clock_not_set=bit[4],
    )
    assert payload[0] == flags
    expected_len = 5 + sum(n for n, on in zip(SPOT_FIELD_LENGTHS, bit, strict=True) if on)
    assert len(payload) == expected_len
    m = decode_plx_spot_check(payload)
    assert m == PlxSpotCheck(
        NoValue.RESERVED,
        MedFloat(61, 0),
        stamp if bit[0] else None,
        PlxMeasurementStatus.UNAVAILABLE if bit[1] else None,
        PlxDeviceStatus(0x008800) if bit[2] else None,
        MedFloat(12, -1) if bit[3] else None,
        bit[4],
    )
    assert decode_plx_spot_check(payload[:-1]) is None
    assert decode_plx_spot_check(payload + b"\x00") is None


@pytest.mark.parametrize("support", range(4))
def test_every_features_layout(support: int) -> None:
    payload = encode_plx_features(
        PlxFeature.FAST | PlxFeature.PULSE_AMPLITUDE_INDEX,
        measurement_status_support=0xFFE0 if support & 1 else None,
        device_status_support=0x00FFFF if support & 2 else None,
    )
    assert payload[0] == 0x50 | support
    assert len(payload) == 2 + 2 * bool(support & 1) + 3 * bool(support & 2)
    f = decode_plx_features(payload)
    assert f is not None
    assert (f.measurement_status_support is not None) == bool(support & 1)
    assert (f.device_status_support is not None) == bool(support & 2)
    assert decode_plx_features(payload[:-1]) is None


def test_reserved_flag_bits_carry_no_field_and_round_trip() -> None:
    payload = bytes([0xE0]) + h("62 00 48 00")
    m = decode_plx_continuous(payload)
    assert m is not None and m.reserved_flags == 0xE0
    assert m.encode() == payload


def test_encoders_refuse_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_plx_continuous(98.0, 72.0, measurement_status=0x10000)
    with pytest.raises(ValueError):
        encode_plx_continuous(98.0, 72.0, device_status=-1)
    with pytest.raises(ValueError):
        encode_plx_continuous(98.0, 72.0, reserved_flags=0x01)
    with pytest.raises(ValueError):
        encode_plx_spot_check(98.0, 72.0, timestamp=DateTime(70000, 1, 1, 0, 0, 0))


def test_date_time_judgement() -> None:
    assert DateTime(0, 1, 1, 0, 0, 0).epoch() is None  # year unknown
    assert DateTime(2024, 2, 30, 0, 0, 0).epoch() is None
    assert DateTime(2024, 1, 1, 24, 0, 0).epoch() is None
    assert DateTime(2024, 2, 29, 0, 0, 0).epoch() == 1709164800.0


# --- properties ---------------------------------------------------------------------------

med_values = st.one_of(
    st.sampled_from(list(NoValue)),
    st.builds(MedFloat, st.integers(-2045, 2045), st.integers(-8, 7)),
)
pairs = st.builds(SpO2PR, med_values, med_values)
continuous = st.builds(
    PlxContinuous,
    pairs,
    st.none() | pairs,
    st.none() | pairs,
    st.none() | st.integers(0, 0xFFFF).map(PlxMeasurementStatus),
    st.none() | st.integers(0, 0xFFFFFF).map(PlxDeviceStatus),
    st.none() | med_values,
    st.sampled_from([0, 0x20, 0x40, 0x80, 0xE0]),
)
date_times = st.builds(
    DateTime, *(st.integers(0, 0xFFFF),), *(st.integers(0, 0xFF) for _ in range(5))
)
spot_checks = st.builds(
    PlxSpotCheck,
    med_values,
    med_values,
    st.none() | date_times,
    st.none() | st.integers(0, 0xFFFF).map(PlxMeasurementStatus),
    st.none() | st.integers(0, 0xFFFFFF).map(PlxDeviceStatus),
    st.none() | med_values,
    st.booleans(),
    st.sampled_from([0, 0x20, 0xE0]),
)


@given(continuous)
def test_continuous_round_trips(m: PlxContinuous) -> None:
    assert decode_plx_continuous(m.encode()) == m


@given(spot_checks)
def test_spot_check_round_trips(m: PlxSpotCheck) -> None:
    assert decode_plx_spot_check(m.encode()) == m


@given(st.binary(max_size=24))
def test_arbitrary_bytes_never_raise_and_valid_ones_round_trip(data: bytes) -> None:
    for decode in (decode_plx_continuous, decode_plx_spot_check, decode_plx_features):
        decoded = decode(data)
        if decoded is not None:
            assert decoded.encode() == data


@given(st.binary(max_size=24), st.sampled_from([gatt.PLX_CONTINUOUS, gatt.PLX_SPOT_CHECK]))
def test_model_counts_every_payload(data: bytes, uuid: str) -> None:
    model = PlxOximeter("ox", PlxSettings())
    model.on_connect(0.0)
    readings = model.feed(uuid, data, 1.0)
    c = model.counters
    assert c.bytes_received == len(data)
    assert c.frames_decoded in (0, 1)
    if c.frames_decoded == 0:
        assert c.bytes_dropped == len(data)
        assert readings == []
    else:
        assert c.bytes_dropped == 0
        for r in readings:
            if isinstance(r, Numeric) and r.value is not None:
                assert r.value == r.value  # never NaN


# --- device model ---------------------------------------------------------------------------


def numerics(readings: object) -> dict[str, Numeric]:
    assert isinstance(readings, (list, tuple))
    return {r.code.refid: r for r in readings if isinstance(r, Numeric)}


def events(readings: object) -> list[DeviceEvent]:
    assert isinstance(readings, (list, tuple))
    return [r for r in readings if isinstance(r, DeviceEvent)]


@pytest.fixture
def model() -> PlxOximeter:
    m = PlxOximeter("bed1-ox", PlxSettings())
    writes, readings = m.on_connect(0.0)
    assert list(writes) == [] and list(readings) == []
    return m


def test_model_publishes_vector_4(model: PlxOximeter) -> None:
    out = numerics(model.feed(gatt.PLX_CONTINUOUS, h("1C 5F 00 5A 00 20 00 00 00 00 57 F0"), 5.0))
    assert out["MDC_PULS_OXIM_SAT_O2"] == Numeric("bed1-ox", codes.SPO2, 95.0, codes.PERCENT, 5.0)
    assert out["MDC_PULS_OXIM_PULS_RATE"].value == 90.0
    assert out["MDC_PULS_OXIM_PULS_RATE"].unit == codes.BEATS_PER_MINUTE
    assert out["MDC_PULS_OXIM_PERF_REL"].value == 8.7
    assert out["MDC_PULS_OXIM_PERF_REL"].unit == codes.PERCENT
    assert model.counters.frames_decoded == 1 and model.counters.bytes_dropped == 0


def test_model_specials_are_no_value_never_zero(model: PlxOximeter) -> None:
    out = numerics(model.feed(gatt.PLX_CONTINUOUS, h("00 FF 07 FF 07"), 1.0))  # 1.7 #6
    for n in out.values():
        assert n.value is None and n.status == MeasurementStatus.UNAVAILABLE
    out = numerics(
        model.feed(gatt.PLX_CONTINUOUS, encode_plx_continuous(NoValue.NRES, float("inf")), 2.0)
    )
    for n in out.values():
        assert n.value is None and n.status == MeasurementStatus.INVALID
    assert "MDC_PULS_OXIM_PERF_REL" not in out  # no PAI field, no PI numeric


def test_model_sensor_off_from_vector_7(model: PlxOximeter) -> None:
    out = model.feed(gatt.PLX_CONTINUOUS, h("08 FF 07 FF 07 00 80 00"), 3.0)
    assert events(out) == [
        DeviceEvent("bed1-ox", Condition.SENSOR_OFF, True, 3.0, events(out)[0].detail)
    ]
    assert "bit 11, 13 or 15" in events(out)[0].detail
    # The same status again raises nothing; a payload without the field keeps it raised.
    assert events(model.feed(gatt.PLX_CONTINUOUS, h("08 FF 07 FF 07 00 80 00"), 4.0)) == []
    assert events(model.feed(gatt.PLX_CONTINUOUS, h("00 62 00 48 00"), 5.0)) == []
    assert model.active_conditions == {Condition.SENSOR_OFF}
    cleared = model.feed(
        gatt.PLX_CONTINUOUS, encode_plx_continuous(98.0, 72.0, device_status=0), 6.0
    )
    assert [(e.condition, e.active) for e in events(cleared)] == [(Condition.SENSOR_OFF, False)]


def test_model_sensor_off_hides_a_value_the_device_still_sends(model: PlxOximeter) -> None:
    payload = encode_plx_continuous(97.0, 70.0, device_status=PlxDeviceStatus.SENSOR_DISPLACED)
    out = numerics(model.feed(gatt.PLX_CONTINUOUS, payload, 1.0))
    assert out["MDC_PULS_OXIM_SAT_O2"].value is None
    assert MeasurementStatus.UNAVAILABLE in out["MDC_PULS_OXIM_SAT_O2"].status


@pytest.mark.parametrize(
    ("bit", "condition"),
    [
        (PlxDeviceStatus.LOW_PERFUSION, Condition.LOW_PERFUSION),
        (PlxDeviceStatus.SENSOR_UNCONNECTED, Condition.SENSOR_OFF),
        (PlxDeviceStatus.UNKNOWN_SENSOR, Condition.SENSOR_FAULT),
        (PlxDeviceStatus.SENSOR_MALFUNCTIONING, Condition.SENSOR_FAULT),
        (PlxDeviceStatus.EQUIPMENT_MALFUNCTION, Condition.DEVICE_MALFUNCTION),
        (PlxDeviceStatus.POOR_SIGNAL, Condition.LOW_SIGNAL_QUALITY),
        (PlxDeviceStatus.ERRATIC_SIGNAL, Condition.ARTIFACT),
        (PlxDeviceStatus.SENSOR_INTERFERENCE, Condition.INTERFERENCE),
    ],
)
def test_model_device_status_bits_raise_conditions(
    model: PlxOximeter, bit: PlxDeviceStatus, condition: Condition
) -> None:
    out = model.feed(gatt.PLX_CONTINUOUS, encode_plx_continuous(95.0, 70.0, device_status=bit), 1.0)
    assert [(e.condition, e.active) for e in events(out)] == [(condition, True)]
    assert condition in CONDITIONS
    gone = model.on_disconnect(2.0)
    assert [(e.condition, e.active) for e in events(gone)] == [(condition, False)]


def test_model_low_perfusion_keeps_the_value_and_flags_it(model: PlxOximeter) -> None:
    payload = encode_plx_continuous(93.0, 64.0, device_status=PlxDeviceStatus.LOW_PERFUSION)
    out = numerics(model.feed(gatt.PLX_CONTINUOUS, payload, 1.0))
    assert out["MDC_PULS_OXIM_SAT_O2"].value == 93.0
    assert out["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.LOW_PERFUSION


@pytest.mark.parametrize(
    ("status", "value", "flags"),
    [
        (PlxMeasurementStatus.UNAVAILABLE, None, MeasurementStatus.UNAVAILABLE),
        (PlxMeasurementStatus.INVALID, None, MeasurementStatus.INVALID),
        (PlxMeasurementStatus.QUESTIONABLE, 96.0, MeasurementStatus.QUESTIONABLE),
        (PlxMeasurementStatus.EARLY_ESTIMATE, 96.0, MeasurementStatus.EARLY),
        (PlxMeasurementStatus.DEMONSTRATION, 96.0, MeasurementStatus.DEMO),
        (PlxMeasurementStatus.TESTING, 96.0, MeasurementStatus.DEMO),
        (PlxMeasurementStatus.VALIDATED, 96.0, MeasurementStatus.NONE),
    ],
)
def test_model_measurement_status_bits(
    model: PlxOximeter,
    status: PlxMeasurementStatus,
    value: float | None,
    flags: MeasurementStatus,
) -> None:
    payload = encode_plx_continuous(96.0, 80.0, measurement_status=status)
    out = numerics(model.feed(gatt.PLX_CONTINUOUS, payload, 1.0))
    assert out["MDC_PULS_OXIM_SAT_O2"].value == value
    assert out["MDC_PULS_OXIM_SAT_O2"].status == flags


def test_model_out_of_range_is_invalid(model: PlxOximeter) -> None:
    out = numerics(model.feed(gatt.PLX_CONTINUOUS, encode_plx_continuous(101.0, 400.0), 1.0))
    assert out["MDC_PULS_OXIM_SAT_O2"].value is None
    assert out["MDC_PULS_OXIM_SAT_O2"].status == MeasurementStatus.INVALID
    assert out["MDC_PULS_OXIM_PULS_RATE"].value is None


def test_model_spot_check_has_device_time(model: PlxOximeter) -> None:
    out = model.feed(
        gatt.PLX_SPOT_CHECK, h("0F AC F3 BE F5 E8 07 0B 1D 17 08 39 20 40 22 00 00 66 E3"), 9.0
    )
    n = numerics(out)
    assert n["MDC_PULS_OXIM_SAT_O2"].device_time == 1732921737.0
    # Equipment malfunction makes the values invalid; the conditions are raised too.
    assert n["MDC_PULS_OXIM_SAT_O2"].value is None
    assert {e.condition for e in events(out)} == {
        Condition.DEVICE_MALFUNCTION,
        Condition.LOW_PERFUSION,
    }


def test_model_spot_check_without_clock_or_from_storage(model: PlxOximeter) -> None:
    stamp = DateTime(2024, 1, 2, 3, 4, 5)
    unset = encode_plx_spot_check(95.0, 60.0, timestamp=stamp, clock_not_set=True)
    assert (
        numerics(model.feed(gatt.PLX_SPOT_CHECK, unset, 1.0))["MDC_PULS_OXIM_SAT_O2"].device_time
        is None
    )
    stored = encode_plx_spot_check(
        95.0,
        60.0,
        timestamp=stamp,
        measurement_status=PlxMeasurementStatus.FROM_STORAGE,
        device_status=PlxDeviceStatus.SENSOR_DISCONNECTED,
    )
    out = model.feed(gatt.PLX_SPOT_CHECK, stored, 2.0)
    assert events(out) == []  # the past raises no condition now
    assert numerics(out)["MDC_PULS_OXIM_SAT_O2"].value is None  # but the value was off


def test_model_reads_features_and_drops_other_uuids(model: PlxOximeter) -> None:
    assert model.feed(gatt.PLX_FEATURES, h("A3 00 40 10 80 01 00"), 1.0) == []
    assert model.features is not None and PlxFeature.SLOW in model.features.supported
    assert model.feed(gatt.HEART_RATE_MEASUREMENT, h("00 48"), 1.0) == []
    assert model.feed(gatt.PLX_CONTINUOUS, h("1C 5F 00"), 1.0) == []
    assert model.counters.as_dict() == {
        "bytes_received": 12,
        "frames_decoded": 1,
        "bytes_dropped": 5,
        "checksum_errors": 0,
        "resyncs": 0,
    }


def test_model_accepts_upper_case_uuids(model: PlxOximeter) -> None:
    assert numerics(model.feed(gatt.PLX_CONTINUOUS.upper(), h("00 62 00 48 00"), 1.0))


def test_model_reconnect_clears_conditions(model: PlxOximeter) -> None:
    model.feed(gatt.PLX_CONTINUOUS, h("08 FF 07 FF 07 00 80 00"), 1.0)
    writes, cleared = model.on_connect(2.0)
    assert list(writes) == []
    assert [(e.condition, e.active) for e in events(cleared)] == [(Condition.SENSOR_OFF, False)]
    assert model.active_conditions == frozenset()


def test_spec_is_registered() -> None:
    spec = registry.get("ble-plx")
    assert spec.transport == "ble" and spec.settings is PlxSettings
    assert set(spec.scenarios) >= {"normal", "disconnects", "battery_low", "sensor_off"}
    model = spec.make_model("ox", PlxSettings(address="AA:BB:CC:DD:EE:FF"))
    assert isinstance(model, PlxOximeter)
    assert model.service_uuid == "00001822-0000-1000-8000-00805f9b34fb"
    assert model.notify_uuids == (gatt.PLX_CONTINUOUS, gatt.PLX_SPOT_CHECK)


def test_settings_are_strict() -> None:
    from pydantic import ValidationError

    assert PlxSettings(name="Nonin 3230").name == "Nonin 3230"
    for bad in ({"port": "/dev/ttyUSB0"}, {"address": 5}, {"name": ""}):
        with pytest.raises(ValidationError):
            PlxSettings.model_validate(bad)
