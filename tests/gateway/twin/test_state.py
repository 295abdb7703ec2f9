"""Twin live state: latest values with age, staleness, device link transitions, conditions."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Waveform,
)
from gateway.twin.state import LINK_TRANSITIONS, BedSpec, Link, Twin


def make_twin(clock: ManualClock) -> tuple[Twin, CodecCounters]:
    twin = Twin([BedSpec("bed-1", "Bed 1"), BedSpec("bed-2", "Bed 2")], clock, stale_after=5.0)
    counters = CodecCounters()
    twin.register_device("bed-1", "ox-1", "nonin", counters)
    return twin, counters


def spo2(
    clock: ManualClock, value: float | None, status: MeasurementStatus = MeasurementStatus.NONE
) -> Numeric:
    return Numeric("ox-1", codes.SPO2, value, codes.PERCENT, clock.wall(), status=status)


def connected(clock: ManualClock, up: bool = True) -> DeviceEvent:
    return DeviceEvent("ox-1", Condition.DISCONNECTED, not up, clock.wall(), "" if up else "pulled")


def vital(twin: Twin, bed: str = "bed-1") -> dict[str, object]:
    snap = {b["id"]: b for b in twin.snapshot()}
    return snap[bed]["vitals"]["MDC_PULS_OXIM_SAT_O2"]  # type: ignore[no-any-return]


async def test_value_ages_with_the_clock_and_turns_stale() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(connected(clock))
    twin.apply(spo2(clock, 97.0))
    assert vital(twin)["value"] == 97.0 and vital(twin)["stale"] is False
    await clock.advance(4.9)
    assert vital(twin)["age"] == pytest.approx(4.9) and vital(twin)["stale"] is False
    await clock.advance(0.2)
    assert vital(twin)["stale"] is True
    twin.apply(spo2(clock, 96.0))
    assert vital(twin)["stale"] is False and vital(twin)["age"] == 0.0


def test_value_from_a_disconnected_device_is_stale_at_once() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(connected(clock))
    twin.apply(spo2(clock, 97.0))
    twin.apply(connected(clock, up=False))
    assert vital(twin)["stale"] is True
    device = twin.snapshot()[0]["devices"][0]
    assert device["state"] == "disconnected" and device["detail"] == "pulled"


def test_value_from_a_device_reporting_no_data_is_stale_at_once() -> None:
    # A pump whose polls fail says no_data at its own (shorter) limit: its values must not
    # look current until the twin's own stale_after catches up.
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(connected(clock))
    twin.apply(spo2(clock, 97.0))
    twin.apply(DeviceEvent("ox-1", Condition.NO_DATA, True, clock.wall(), "no answer"))
    assert vital(twin)["stale"] is True
    twin.apply(DeviceEvent("ox-1", Condition.NO_DATA, False, clock.wall(), ""))
    twin.apply(spo2(clock, 96.0))
    assert vital(twin)["stale"] is False


def test_missing_value_is_stale_and_carries_its_status() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(connected(clock))
    twin.apply(spo2(clock, None, MeasurementStatus.UNAVAILABLE))
    assert vital(twin)["value"] is None
    assert vital(twin)["stale"] is True
    assert vital(twin)["status"] == ["unavailable"]


def test_link_transition_table_is_complete() -> None:
    assert {(s, up) for s in Link for up in (True, False)} == set(LINK_TRANSITIONS)


def test_conditions_raise_clear_and_vanish_on_disconnect() -> None:
    clock = ManualClock()
    twin, counters = make_twin(clock)
    twin.apply(connected(clock))
    twin.apply(DeviceEvent("ox-1", Condition.SENSOR_OFF, True, clock.wall()))
    twin.apply(DeviceEvent("ox-1", Condition.ARTIFACT, True, clock.wall()))
    twin.apply(DeviceEvent("ox-1", Condition.ARTIFACT, False, clock.wall()))
    counters.frames_decoded = 250
    device = twin.snapshot()[0]["devices"][0]
    assert device["conditions"] == ["sensor_off"]
    assert device["frames_decoded"] == 250
    twin.apply(connected(clock, up=False))
    assert twin.snapshot()[0]["devices"][0]["conditions"] == []


def test_waveforms_and_identity_are_recorded_for_the_device() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(Waveform("ox-1", codes.PLETH, codes.DIMENSIONLESS, 75.0, 0.0, np.arange(25.0)))
    twin.apply(Identity("ox-1", 0.0, manufacturer="Nonin", firmware="148"))
    device = twin.snapshot()[0]["devices"][0]
    assert device["waveform_samples"] == 25
    assert device["identity"]["manufacturer"] == "Nonin"
    assert device["last_data_age"] == 0.0


def test_readings_from_unknown_devices_are_ignored() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(Numeric("stranger", codes.SPO2, 50.0, codes.PERCENT, 0.0))
    assert all(not bed["vitals"] for bed in twin.snapshot())


def test_registering_a_device_twice_is_an_error() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    with pytest.raises(ValueError):
        twin.register_device("bed-2", "ox-1", "nonin", CodecCounters())


async def test_wait_changed_wakes_on_the_next_reading() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    seen = twin.version
    waiter = asyncio.create_task(twin.wait_changed(seen))
    await asyncio.sleep(0)
    assert not waiter.done()
    twin.apply(spo2(clock, 95.0))
    assert await asyncio.wait_for(waiter, 1) == seen + 1


def test_a_value_the_device_marks_invalid_is_never_current() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(connected(clock))
    twin.apply(spo2(clock, 93.0, MeasurementStatus.INVALID))
    assert vital(twin)["value"] == 93.0 and vital(twin)["stale"] is True
    twin.apply(spo2(clock, 94.0, MeasurementStatus.QUESTIONABLE))
    assert vital(twin)["stale"] is False and vital(twin)["status"] == ["questionable"]


async def test_a_connected_but_silent_device_shows_no_data() -> None:
    clock = ManualClock()
    twin, _ = make_twin(clock)
    twin.apply(connected(clock))
    await clock.advance(5.1)
    assert twin.snapshot()[0]["devices"][0]["conditions"] == ["no_data"]
    twin.apply(spo2(clock, 97.0))
    assert twin.snapshot()[0]["devices"][0]["conditions"] == []
    await clock.advance(6.0)
    assert twin.snapshot()[0]["devices"][0]["conditions"] == ["no_data"]
    twin.apply(connected(clock, up=False))
    assert twin.snapshot()[0]["devices"][0]["conditions"] == []  # disconnected says it all
