"""Polar H10 PMD: control point vectors (protocols.md 3.2), the ECG frame of 3.4, frames
with a gap, timing across frames, and the PolarH10 device model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import codes, gatt, registry
from drivers.ecg.polar_h10 import (
    PMD_EPOCH_UNIX_NS,
    SAMPLES_LOST_CLEAR_S,
    START_ECG,
    STOP_ECG,
    EcgFrame,
    PmdControlResponse,
    PmdMeasurementType,
    PmdOpcode,
    PmdSetting,
    PmdStatus,
    PolarH10,
    PolarH10Settings,
    decode_ecg_frame,
    decode_pmd_control_response,
    decode_pmd_frame,
    decode_settings,
    encode_pmd_control_response,
    encode_pmd_ecg_frame,
    settings_request,
    start_request,
)
from drivers.readings import Condition, DeviceEvent, Waveform

RATE = 130
FRAME = 73  # samples per notification at an ATT MTU of 232: (232 - 3 - 10) // 3
NS = 1_000_000_000


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


# --- control point (protocols.md 3.2) ---------------------------------------------------------


def test_start_ecg_is_the_checked_constant() -> None:  # 3.2 "Start H10 ECG"
    assert h("02 00 00 01 82 00 01 01 0E 00") == START_ECG
    assert h("03 00") == STOP_ECG
    assert settings_request(PmdMeasurementType.ECG) == h("01 00")


def test_settings_vector() -> None:  # 3.2, BlePmdClientPmdSettingsTest vector
    params = h("00 01 34 00 01 01 10 00 02 04 F5 00 F4 01 E8 03 D0 07 04 01 03")
    assert decode_settings(params) == {
        PmdSetting.SAMPLE_RATE: (52,),
        PmdSetting.RESOLUTION: (16,),
        PmdSetting.RANGE: (245, 500, 1000, 2000),
        PmdSetting.CHANNELS: (3,),
    }
    request = start_request(
        PmdMeasurementType.ACC,
        {PmdSetting.SAMPLE_RATE: (52,), PmdSetting.RANGE: (245, 500, 1000, 2000)},
    )
    assert request == h("02 02 00 01 34 00 02 04 F5 00 F4 01 E8 03 D0 07")
    assert decode_settings(params[:-1]) is None
    assert decode_settings(h("09 01 00")) is None  # unknown setting type


def test_control_response_vector() -> None:  # 3.2, BlePmdClientControlPointResponseTest
    payload = h("F0 01 02 00 00 FF FF FF")
    response = decode_pmd_control_response(payload)
    assert response == PmdControlResponse(
        PmdOpcode.GET_MEASUREMENT_SETTINGS,
        PmdMeasurementType.ACC,
        PmdStatus.SUCCESS,
        False,
        h("FF FF FF"),
    )
    assert response.succeeded
    assert encode_pmd_control_response(1, 2, 0, parameters=h("FF FF FF")) == payload


def test_short_error_response_and_non_responses() -> None:
    response = decode_pmd_control_response(h("F0 02 00 05"))
    assert response is not None and not response.succeeded
    assert response.status_name == "invalid_parameter"
    assert decode_pmd_control_response(h("F0 02 00 63")).status_name == "status 99"  # type: ignore[union-attr]
    assert decode_pmd_control_response(h("F0 02 00")) is None
    assert decode_pmd_control_response(h("01 00 00 00 00")) is None


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.booleans(),
    st.binary(max_size=20),
)
def test_control_response_round_trip(
    opcode: int, kind: int, status: int, more: bool, params: bytes
) -> None:
    payload = encode_pmd_control_response(opcode, kind, status, more=more, parameters=params)
    assert decode_pmd_control_response(payload) == PmdControlResponse(
        opcode, kind, status, more, params
    )


# --- data frames (protocols.md 3.3, 3.4) ---------------------------------------------------------

EXAMPLE = h("00 | 00 94 35 77 00 00 00 00 | 00 | 02 80 FF 02 80 00")  # 3.4


def test_worked_ecg_frame() -> None:  # protocols.md 3.4
    frame = decode_ecg_frame(EXAMPLE)
    assert frame == EcgFrame(2_000_000_000, (-32766, 32770))
    assert frame.timestamp_unix == 946_684_802.0
    assert encode_pmd_ecg_frame(2_000_000_000, [-32766, 32770]) == EXAMPLE
    header = decode_pmd_frame(EXAMPLE)
    assert header is not None and header.frame_type == 0 and not header.compressed


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "00 00 94 35 77 00 00 00 00",  # header cut short
        "00 00 94 35 77 00 00 00 00 00",  # no samples
        "00 00 94 35 77 00 00 00 00 00 02 80",  # not whole samples
        "00 00 94 35 77 00 00 00 00 80 02 80 FF",  # compressed
        "00 00 94 35 77 00 00 00 00 01 02 80 FF",  # frame type 1 (not the H10's)
        "02 00 94 35 77 00 00 00 00 00 02 80 FF",  # accelerometer
    ],
)
def test_frames_the_h10_codec_does_not_decode(payload: str) -> None:
    assert decode_ecg_frame(h(payload)) is None


@given(
    st.integers(0, (1 << 64) - 1),
    st.lists(st.integers(-(1 << 23), (1 << 23) - 1), min_size=1, max_size=80),
)
def test_ecg_frame_round_trip(timestamp: int, samples: list[int]) -> None:
    frame = decode_ecg_frame(encode_pmd_ecg_frame(timestamp, samples))
    assert frame == EcgFrame(timestamp, tuple(samples))


def test_encoder_refuses_what_the_frame_cannot_carry() -> None:
    for timestamp, samples in ((-1, [0]), (1 << 64, [0]), (0, []), (0, [1 << 23])):
        with pytest.raises(ValueError):
            encode_pmd_ecg_frame(timestamp, samples)


@given(st.binary(max_size=40), st.sampled_from([gatt.PMD_DATA, gatt.PMD_CONTROL_POINT]))
def test_arbitrary_bytes_never_raise_and_are_counted(data: bytes, uuid: str) -> None:
    model = PolarH10("h10", PolarH10Settings())
    model.on_connect(0.0)
    model.feed(uuid, data, 1.0)
    c = model.counters
    assert c.bytes_received == len(data)
    if c.frames_decoded:
        assert c.frames_decoded == 1 and c.bytes_dropped == 0
    else:
        assert c.bytes_dropped == len(data)


@given(st.lists(st.tuples(st.integers(40, 80), st.booleans()), min_size=2, max_size=30))
def test_sequence_follows_the_true_sample_index_through_lost_frames(
    frames: list[tuple[int, bool]],
) -> None:
    model = PolarH10("h10", PolarH10Settings())
    model.on_connect(0.0)
    frames[0] = (frames[0][0], True)  # the first frame arrives: it anchors the count
    index, lost, expected, got = 0, 0, [], []
    pending_loss = 0
    for n, arrives in frames:
        if arrives:
            ts = NS + (index + n - 1) * NS // RATE
            readings = model.feed(
                gatt.PMD_DATA, encode_pmd_ecg_frame(ts, [7] * n), 5.0 + index / RATE
            )
            got += [r.sequence for r in readings if isinstance(r, Waveform)]
            expected.append(index)
            lost += pending_loss
            pending_loss = 0
        else:
            pending_loss += n
        index += n
    assert got == expected
    assert model.samples_lost == lost


# --- device model -------------------------------------------------------------------------------


def stream(
    model: PolarH10, frames: list[tuple[int, int]], start_ns: int, arrival: float
) -> list[list[object]]:
    """Feed frames given as (index of first sample, sample count); each arrives when its
    last sample was taken, counted from ``arrival`` for sample 0 of ``start_ns``."""
    out = []
    for first, n in frames:
        last = first + n - 1
        ts = start_ns + last * NS // RATE
        samples = [(first + i) % 2000 - 1000 for i in range(n)]
        out.append(
            list(
                model.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(ts, samples), arrival + last / RATE)
            )
        )
    return out


def waves(readings: list[object]) -> list[Waveform]:
    return [r for r in readings if isinstance(r, Waveform)]


def events_of(readings: list[object]) -> list[DeviceEvent]:
    return [r for r in readings if isinstance(r, DeviceEvent)]


@pytest.fixture
def h10() -> PolarH10:
    model = PolarH10("bed3-ecg", PolarH10Settings())
    writes, readings = model.on_connect(0.0)
    # The one write: starting the ECG stream on the control point.
    assert list(writes) == [(gatt.PMD_CONTROL_POINT, START_ECG)]
    assert list(readings) == []
    return model


def test_model_worked_frame_timing(h10: PolarH10) -> None:
    (wave,) = waves(list(h10.feed(gatt.PMD_DATA, EXAMPLE, 1_000.0)))
    assert wave.code == codes.ECG_LEAD_UNSPECIFIED and wave.unit == codes.MILLIVOLT
    assert wave.sample_rate == 130.0 and wave.resolution == 0.001
    assert wave.samples.tolist() == pytest.approx([-32.766, 32.770])
    # Sample 1 at 2.000 s - 1/130 s on the sensor's clock (protocols.md 3.4).
    assert wave.device_time == pytest.approx(946_684_802.0 - 1 / 130)
    # On the gateway's clock the last sample falls at the frame's arrival.
    assert wave.start_time == pytest.approx(1_000.0 - 1 / 130)
    assert wave.sequence == 0
    counts = np.round(wave.samples / wave.resolution)
    assert counts.tolist() == [-32766, 32770]


def test_model_consecutive_frames_join_exactly(h10: PolarH10) -> None:
    frames = [(i * FRAME, FRAME) for i in range(5)]
    out = [w for r in stream(h10, frames, 5 * NS, 500.0) for w in waves(r)]
    assert [w.sequence for w in out] == [0, 73, 146, 219, 292]
    for a, b in itertools.pairwise(out):
        assert b.start_time == pytest.approx(a.start_time + FRAME / RATE, abs=1e-9)
        assert b.device_time == pytest.approx(a.device_time + FRAME / RATE, abs=1e-6)
    assert h10.samples_lost == 0 and h10.reanchors == 0
    assert h10.counters.frames_decoded == 5


def test_model_frames_with_a_gap(h10: PolarH10) -> None:
    frames = [(0, FRAME), (FRAME, FRAME), (3 * FRAME, FRAME), (4 * FRAME, 60)]  # frame 2 lost
    out = stream(h10, frames, 7 * NS, 50.0)
    assert [w.sequence for r in out for w in waves(r)] == [0, 73, 219, 292]
    gap = events_of(out[2])
    assert [(e.condition, e.active) for e in gap] == [(Condition.SAMPLES_LOST, True)]
    assert gap[0].detail.startswith("73 samples lost")
    assert h10.samples_lost == 73 and h10.gaps == 1
    # The frame after the gap is placed where its samples were taken.
    (after,) = waves(out[2])
    assert after.start_time == pytest.approx(50.0 + 219 / RATE, abs=1e-9)
    assert events_of(out[3]) == []


def test_model_samples_lost_clears_after_clean_data(h10: PolarH10) -> None:
    frames = [(0, FRAME), (2 * FRAME, FRAME)]
    # The frame after the gap counts towards the clean run.
    clean = math.ceil(SAMPLES_LOST_CLEAR_S * RATE / FRAME) - 1
    frames += [((3 + i) * FRAME, FRAME) for i in range(clean)]
    out = stream(h10, frames, NS, 10.0)
    flat = [e for r in out for e in events_of(r)]
    assert [(e.condition, e.active) for e in flat] == [
        (Condition.SAMPLES_LOST, True),
        (Condition.SAMPLES_LOST, False),
    ]
    assert "73 lost" in flat[1].detail
    assert events_of(out[-1]) == [flat[1]]  # cleared exactly when 5 s had passed


def test_model_jitter_is_not_a_gap(h10: PolarH10) -> None:
    ts = NS
    for i, n in enumerate([FRAME] * 6):
        ts += n * NS // RATE + (3_000_000 if i % 2 else -3_000_000)  # +-3 ms jitter
        h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(ts, [0] * n), 1.0 + i * n / RATE)
    assert h10.samples_lost == 0 and h10.gaps == 0
    assert Condition.SAMPLES_LOST not in h10.active_conditions


def test_model_clock_going_backwards_reanchors_without_loss(h10: PolarH10) -> None:
    h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(100 * NS, [0] * FRAME), 10.0)
    out = waves(list(h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(NS, [0] * FRAME), 10.6)))
    assert out[0].sequence == FRAME and h10.samples_lost == 0 and h10.reanchors == 1
    assert out[0].start_time == pytest.approx(10.6 - (FRAME - 1) / RATE)


def test_model_reanchors_when_frames_would_be_in_the_future(h10: PolarH10) -> None:
    # The first frame arrived 1 s late; the next ones arrive on time.
    h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(NS, [0] * FRAME), 21.0)
    ts = NS + FRAME * NS // RATE
    (w,) = waves(
        list(h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(ts, [0] * FRAME), 20.0 + FRAME / RATE))
    )
    assert h10.reanchors == 1
    assert w.start_time == pytest.approx(20.0 + FRAME / RATE - (FRAME - 1) / RATE)


def test_model_reanchors_when_the_sensor_runs_slow(h10: PolarH10) -> None:
    ts = NS
    now = 0.0
    for _ in range(40):  # a 1 % slow sensor is 0.11 s behind after 11 s
        ts += FRAME * NS // RATE
        now += FRAME / RATE * 1.01
        h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(ts, [0] * FRAME), now)
    assert h10.reanchors >= 1 and h10.samples_lost == 0


def test_model_refused_start_and_stopped_stream_raise_no_data(h10: PolarH10) -> None:
    refused = list(h10.feed(gatt.PMD_CONTROL_POINT, encode_pmd_control_response(2, 0, 8), 1.0))
    assert [(e.condition, e.active) for e in events_of(refused)] == [(Condition.NO_DATA, True)]
    assert "invalid_sample_rate" in events_of(refused)[0].detail
    resumed = list(h10.feed(gatt.PMD_DATA, EXAMPLE, 2.0))
    assert [(e.condition, e.active) for e in events_of(resumed)] == [(Condition.NO_DATA, False)]
    stopped = list(h10.feed(gatt.PMD_CONTROL_POINT, h("01 00"), 3.0))
    assert [(e.condition, e.active) for e in events_of(stopped)] == [(Condition.NO_DATA, True)]
    assert "stopped" in events_of(stopped)[0].detail


def test_model_accepted_start_raises_nothing(h10: PolarH10) -> None:
    for status in (PmdStatus.SUCCESS, PmdStatus.ALREADY_IN_STATE):
        ok = encode_pmd_control_response(2, 0, status, parameters=h("05 04 00 00 80 3F"))
        assert list(h10.feed(gatt.PMD_CONTROL_POINT, ok, 1.0)) == []
    assert h10.last_response is not None and h10.last_response.succeeded


def test_model_drops_other_frames_and_uuids(h10: PolarH10) -> None:
    acc = h("02 00 94 35 77 00 00 00 00 01 00 00 00 00 00 00")
    assert list(h10.feed(gatt.PMD_DATA, acc, 1.0)) == []
    assert list(h10.feed(gatt.HEART_RATE_MEASUREMENT, h("00 48"), 1.0)) == []
    assert h10.counters.bytes_dropped == len(acc) + 2 and h10.counters.frames_decoded == 0


def test_model_reconnect_restarts_sequence_and_clears(h10: PolarH10) -> None:
    stream(h10, [(0, FRAME), (2 * FRAME, FRAME)], NS, 1.0)
    assert h10.active_conditions == {Condition.SAMPLES_LOST}
    writes, cleared = h10.on_connect(9.0)
    assert list(writes) == [(gatt.PMD_CONTROL_POINT, START_ECG)]
    assert [(e.condition, e.active) for e in cleared if isinstance(e, DeviceEvent)] == [
        (Condition.SAMPLES_LOST, False)
    ]
    (w,) = waves(list(h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(50 * NS, [1] * 10), 10.0)))
    assert w.sequence == 0


def test_spec_is_registered() -> None:
    spec = registry.get("polar-h10")
    assert spec.transport == "ble" and spec.settings is PolarH10Settings
    assert set(spec.scenarios) >= {"normal", "disconnects", "battery_low", "sensor_off", "replay"}
    model = spec.make_model("ecg", PolarH10Settings(name="Polar H10 1234ABCD"))
    assert isinstance(model, PolarH10)
    # H10s advertise the Heart Rate service; PMD is found once connected.
    assert model.service_uuid == gatt.HEART_RATE_SERVICE
    assert model.notify_uuids == (gatt.PMD_CONTROL_POINT, gatt.PMD_DATA)
    assert PMD_EPOCH_UNIX_NS == 946_684_800 * NS


def test_model_flat_frames_raise_lead_off(h10: PolarH10) -> None:
    flat = list(h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(NS, [0] * FRAME), 1.0))
    assert [(e.condition, e.active) for e in events_of(flat)] == [(Condition.LEAD_OFF, True)]
    assert waves(flat)[0].samples.tolist() == [0.0] * FRAME  # still published as sent
    ts = NS + FRAME * NS // RATE
    again = list(h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(ts, [5] * FRAME), 1.56))
    assert events_of(again) == []
    ts += FRAME * NS // RATE
    varies = list(h10.feed(gatt.PMD_DATA, encode_pmd_ecg_frame(ts, [5, 6] * 36 + [5]), 2.12))
    assert [(e.condition, e.active) for e in events_of(varies)] == [(Condition.LEAD_OFF, False)]
