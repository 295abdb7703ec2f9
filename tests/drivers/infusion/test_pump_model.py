"""The pump model: register blocks of a poll -> readings with MDC codes, UCUM units and
priorities; time to end of infusion; alarm edges."""

from __future__ import annotations

import dataclasses

import pytest

from drivers import codes, registry
from drivers.infusion.codec import PumpFrame, encode
from drivers.infusion.profile import AlarmBit, PumpState, Role, load_profile
from drivers.infusion.pump import InfusionPump, RtuPumpSettings, TcpPumpSettings, time_to_end
from drivers.readings import (
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Priority,
    Reading,
)

NOW = 1_767_225_600.0
RUNNING = PumpFrame(
    numerics={
        Role.RATE: 50.0,
        Role.VOLUME_INFUSED: 100.0,
        Role.VTBI: 250.0,
        Role.VTBI_REMAINING: 150.0,
        Role.BATTERY: 80.0,
        Role.CONCENTRATION: 4.0,
        Role.HEARTBEAT: 3.0,
    },
    state=PumpState.RUNNING,
    drug_name="Noradrenaline",
    serial="P-7",
)


def _alarmed(frame: PumpFrame, *conditions: Condition) -> PumpFrame:
    bits = tuple(AlarmBit(i, c, Priority.HIGH) for i, c in enumerate(conditions))
    return dataclasses.replace(frame, alarms=bits)


def poll(pump: InfusionPump, frame: PumpFrame, now: float = NOW) -> list[Reading]:
    return list(pump.on_poll(encode(pump.profile, frame), now))


def numerics(readings: list[Reading]) -> dict[str, Numeric]:
    return {r.code.refid: r for r in readings if isinstance(r, Numeric)}


def events(readings: list[Reading]) -> list[tuple[Condition, bool, Priority | None]]:
    return [(r.condition, r.active, r.priority) for r in readings if isinstance(r, DeviceEvent)]


@pytest.mark.parametrize("name", ["generic", "cdab-tenths"])
def test_poll_gives_every_value_with_its_code_and_unit(name: str) -> None:
    pump = InfusionPump("pump-1", load_profile(name))
    out = poll(pump, RUNNING)
    identity = [r for r in out if isinstance(r, Identity)]
    assert len(identity) == 1 and identity[0].model == pump.profile.model
    values = numerics(out)
    assert values["MDC_FLOW_FLUID_PUMP"].value == pytest.approx(50.0)
    assert values["MDC_FLOW_FLUID_PUMP"].unit == codes.MILLILITRE_PER_HOUR
    assert values["MDC_FLOW_FLUID_PUMP"].code.cf_code == 157784
    assert values["MDC_VOL_FLUID_DELIV"].value == pytest.approx(100.0)
    assert values["MDC_VOL_FLUID_DELIV"].unit.ucum == "mL"
    assert values["MDC_VOL_FLUID_TBI"].value == pytest.approx(250.0)
    assert values["MDC_VOL_FLUID_TBI_REMAIN"].value == pytest.approx(150.0)
    assert values["MDC_PUMP_STAT"].value == float(PumpState.RUNNING)
    assert values["MDC_PRIV_PUMP_BATT_CHARGE"].value == 80.0
    # 150 mL at 50 mL/h: 3 h to go.
    assert values["MDC_TIME_PD_REMAIN"].value == pytest.approx(180.0)
    assert values["MDC_TIME_PD_REMAIN"].unit == codes.MINUTE
    assert pump.program["drug"] == "Noradrenaline" and pump.program["state"] == "running"
    assert all(r.source == "pump-1" and r.time == NOW for r in out)
    assert not any(isinstance(r, Identity) for r in poll(pump, RUNNING))  # once per link


def test_time_to_end_only_while_delivering_with_a_vtbi() -> None:
    assert time_to_end(RUNNING) == pytest.approx(180.0)
    paused = dataclasses.replace(RUNNING, state=PumpState.PAUSED)
    assert time_to_end(paused) is None
    no_vtbi = dataclasses.replace(
        RUNNING, numerics={**RUNNING.numerics, Role.VTBI: None, Role.VTBI_REMAINING: None}
    )
    assert time_to_end(no_vtbi) is None
    stopped_flow = dataclasses.replace(RUNNING, numerics={**RUNNING.numerics, Role.RATE: 0.0})
    assert time_to_end(stopped_flow) is None
    derived = dataclasses.replace(RUNNING, numerics={**RUNNING.numerics, Role.VTBI_REMAINING: None})
    assert time_to_end(derived) == pytest.approx(180.0)  # VTBI - infused


def test_time_to_end_unavailable_is_published_as_no_value() -> None:
    pump = InfusionPump("pump-1", load_profile("generic"))
    value = numerics(poll(pump, dataclasses.replace(RUNNING, state=PumpState.PAUSED)))
    assert value["MDC_TIME_PD_REMAIN"].value is None
    assert value["MDC_TIME_PD_REMAIN"].status is MeasurementStatus.UNAVAILABLE


def test_alarm_raised_once_with_priority_then_cleared() -> None:
    pump = InfusionPump("pump-1", load_profile("generic"))
    poll(pump, RUNNING)
    occluded = _alarmed(dataclasses.replace(RUNNING, state=PumpState.ALARM), Condition.OCCLUSION)
    assert events(poll(pump, occluded)) == [(Condition.OCCLUSION, True, Priority.HIGH)]
    assert events(poll(pump, occluded)) == []
    both = _alarmed(RUNNING, Condition.OCCLUSION, Condition.NEAR_EMPTY)
    assert events(poll(pump, both)) == [(Condition.NEAR_EMPTY, True, Priority.LOW)]
    assert events(poll(pump, RUNNING)) == [
        (Condition.OCCLUSION, False, None),
        (Condition.NEAR_EMPTY, False, None),
    ]


@pytest.mark.parametrize(
    "condition",
    [Condition.OCCLUSION, Condition.AIR_IN_LINE, Condition.RESERVOIR_EMPTY, Condition.DOOR_OPEN],
)
def test_safety_alarms_are_high_priority_in_both_profiles(condition: Condition) -> None:
    for name in ("generic", "cdab-tenths"):
        pump = InfusionPump("p", load_profile(name))
        assert events(poll(pump, _alarmed(RUNNING, condition))) == [
            (condition, True, Priority.HIGH)
        ]


def test_complete_state_raises_infusion_complete_and_disconnect_clears_all() -> None:
    pump = InfusionPump("pump-1", load_profile("generic"))
    complete = _alarmed(dataclasses.replace(RUNNING, state=PumpState.COMPLETE), Condition.DOOR_OPEN)
    assert {e[0] for e in events(poll(pump, complete))} == {
        Condition.DOOR_OPEN,
        Condition.INFUSION_COMPLETE,
    }
    cleared = list(pump.on_disconnect(NOW + 1))
    assert {(e.condition, e.active) for e in cleared if isinstance(e, DeviceEvent)} == {
        (Condition.DOOR_OPEN, False),
        (Condition.INFUSION_COMPLETE, False),
    }
    assert pump.program == {}


def test_garbage_poll_yields_nothing_and_is_counted() -> None:
    pump = InfusionPump("pump-1", load_profile("generic"))
    assert pump.on_poll({}, NOW) == []
    assert pump.counters.frames_decoded == 0


def test_specs_are_registered_with_their_transports_and_scenarios() -> None:
    tcp, rtu = registry.get("modbus-pump-tcp"), registry.get("modbus-pump-rtu")
    assert tcp.transport == "modbus-tcp" and rtu.transport == "modbus-rtu"
    assert tcp.settings is TcpPumpSettings and rtu.settings is RtuPumpSettings
    for spec in (tcp, rtu):
        assert {
            "normal",
            "occlusion",
            "air_in_line",
            "near_empty",
            "battery_drain",
            "silence",
        } <= set(spec.scenarios)
    settings = rtu.settings.model_validate({"port": "/dev/ttyUSB0", "unit": 7})
    assert isinstance(settings, RtuPumpSettings)
    assert (settings.baudrate, settings.parity, settings.poll_interval, settings.stale_limit) == (
        19200,
        "E",
        1.0,
        10.0,
    )
    model = rtu.make_model("pump-9", settings)
    assert isinstance(model, InfusionPump) and model.profile.name == "generic"


def test_frozen_heartbeat_marks_values_invalid_and_the_poll_not_fresh() -> None:
    pump = InfusionPump("pump-1", load_profile("generic"), frozen_after=3.0)
    for t in range(4):  # the heartbeat stays at 3 while time moves on
        out = poll(pump, RUNNING, NOW + t)
    assert not pump.fresh
    rate = numerics(out)["MDC_FLOW_FLUID_PUMP"]
    assert rate.value == pytest.approx(50.0) and rate.status is MeasurementStatus.INVALID
    moving = dataclasses.replace(RUNNING, numerics={**RUNNING.numerics, Role.HEARTBEAT: 4.0})
    out = poll(pump, moving, NOW + 4)
    assert pump.fresh
    assert numerics(out)["MDC_FLOW_FLUID_PUMP"].status is MeasurementStatus.NONE
    no_beat = InfusionPump("p", load_profile("cdab-tenths"), frozen_after=1.0)
    for t in range(5):
        poll(no_beat, RUNNING, NOW + t)
    assert no_beat.fresh  # a map without a heartbeat cannot tell; it is taken as live
