"""Infusion pumps over Modbus: settings, the pump model (frames -> readings) and the specs.

Two drivers share everything but the link: ``modbus-pump-tcp`` (Modbus TCP, host and
port) and ``modbus-pump-rtu`` (Modbus RTU on an RS-485 line, several pumps per port). Each
reads its pump's registers through a register-map ``profile`` (see ``profile.py``) and never
writes: the transport has no write function code at all.

:class:`InfusionPump` is the sans-I/O model: :meth:`~InfusionPump.on_poll` takes the
register blocks of one poll and returns readings:

* ``MDC_FLOW_FLUID_PUMP`` rate (mL/h), ``MDC_VOL_FLUID_DELIV`` volume infused (mL),
  ``MDC_VOL_FLUID_TBI`` and ``MDC_VOL_FLUID_TBI_REMAIN`` (mL), battery (%), concentration
  (mg/mL), each only when the map has it; a sentinel ("not set") is a value of ``None``
  marked unavailable;
* ``MDC_PUMP_STAT``: the state as :class:`~drivers.infusion.profile.PumpState` (0 off,
  1 standby, 2 stopped, 3 running, 4 paused, 5 KVO, 6 bolus, 7 complete, 8 alarm,
  9 priming);
* ``MDC_TIME_PD_REMAIN``: time to end of infusion in minutes, derived here as VTBI
  remaining / rate while the pump runs (unavailable when stopped, rate 0 or no VTBI);
* one :class:`~drivers.readings.DeviceEvent` per alarm condition edge, with the priority
  the profile gives it (occlusion, air-in-line, empty, door open: high);
* :class:`~drivers.readings.Identity` (profile's manufacturer and model, pump's serial).

The drug name (text, which no reading carries) is kept in :attr:`InfusionPump.program`
for the live view, with the rate, VTBI remaining and time to end of this pump (a bed's
vitals keep one value per code, so two pumps at one bed need this per-pump view).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers import codes
from drivers.conditions import ConditionTracker
from drivers.device import Parity, SerialSettings
from drivers.infusion.codec import Blocks, PumpCodec, PumpFrame
from drivers.infusion.profile import (
    ALARM_CONDITIONS,
    Profile,
    ProfileError,
    PumpState,
    ReadBlock,
    Role,
    load_profile,
)
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Priority,
    Reading,
)
from drivers.registry import DriverSpec

#: Simulator scenarios (drivers/simulate/pump.py plays them).
SCENARIOS: Final = ("normal", "occlusion", "air_in_line", "near_empty", "battery_drain", "silence")

_NUMERIC_CODES: Final[Mapping[Role, tuple[codes.Code, codes.Unit]]] = {
    Role.RATE: (codes.PUMP_RATE, codes.MILLILITRE_PER_HOUR),
    Role.VOLUME_INFUSED: (codes.PUMP_VOLUME_INFUSED, codes.MILLILITRE),
    Role.VTBI: (codes.PUMP_VTBI, codes.MILLILITRE),
    Role.VTBI_REMAINING: (codes.PUMP_VTBI_REMAINING, codes.MILLILITRE),
    Role.BATTERY: (codes.PUMP_BATTERY, codes.PERCENT),
    Role.CONCENTRATION: (codes.PUMP_CONCENTRATION, codes.MILLIGRAM_PER_MILLILITRE),
}
#: States in which fluid is delivered at the displayed rate, so time to end means something.
_DELIVERING: Final = frozenset({PumpState.RUNNING, PumpState.BOLUS})


# -- settings -------------------------------------------------------------------------------


class PumpSettings(BaseModel):
    """Keys every Modbus pump accepts. Times in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    unit: int = Field(default=1, ge=1, le=247, description="Modbus unit (slave) id")
    profile: str = Field(default="generic", min_length=1)
    #: Folder of site profiles (NAME.toml), searched before the shipped ones; absolute.
    profile_dir: str | None = None
    poll_interval: float = Field(default=1.0, ge=0.05, le=3600)
    #: No successful poll for this long raises the no_data condition.
    stale_limit: float = Field(default=10.0, gt=0, le=3600)
    #: Per-request timeout and retries (a retry only after a timeout).
    timeout: float = Field(default=0.5, gt=0, le=30)
    retries: int = Field(default=1, ge=0, le=5)

    @model_validator(mode="after")
    def _profile_loads(self) -> PumpSettings:
        if self.profile_dir is not None and not Path(self.profile_dir).is_absolute():
            raise ValueError(
                f"profile_dir {self.profile_dir!r} must be an absolute path (the daemon's "
                "working directory is not the config's)"
            )
        try:
            self.load_profile()
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return self

    def load_profile(self) -> Profile:
        """The checked profile (cached per file version)."""
        folder = Path(self.profile_dir) if self.profile_dir else None
        return load_profile(self.profile, folder)


class TcpPumpSettings(PumpSettings):
    """A pump (or a Modbus TCP gateway in front of RS-485 pumps) on the network.

    ``host`` may be omitted only when the pump is simulated.
    """

    host: str | None = Field(default=None, min_length=1)
    port: int = Field(default=502, gt=0, lt=65536)


class RtuPumpSettings(PumpSettings, SerialSettings):
    """A pump on an RS-485 line. Pumps configured with the same ``port`` share the line,
    so they must agree on its settings. Modbus RTU's usual line is 19200 8E1."""

    baudrate: int = Field(default=19200, gt=0, description="bits per second")
    parity: Parity = "E"


# -- the model ------------------------------------------------------------------------------


class InfusionPump:
    """Sans-I/O pump model: register blocks of a poll in, readings out. Never raises on bad
    registers (the codec counts and drops them)."""

    def __init__(self, device_id: str, profile: Profile, *, frozen_after: float = 10.0) -> None:
        self.device_id = device_id
        self.profile = profile
        #: Seconds a heartbeat may stay unchanged before the registers count as frozen.
        self.frozen_after = frozen_after
        #: Whether the last poll carried live data: False when its heartbeat has not moved
        #: for ``frozen_after`` seconds (an adapter answering for a pump that stopped
        #: refreshing it). The runner counts such polls as unanswered.
        self.fresh = True
        self._beat: tuple[float, float] | None = None  # (heartbeat value, time it changed)
        self.codec = PumpCodec(profile)
        self.counters: CodecCounters = self.codec.counters
        #: The read requests one poll consists of.
        self.plan: tuple[ReadBlock, ...] = self.codec.plan
        self._priority: dict[Condition, Priority] = {}
        rank = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2}
        for bit in profile.alarm_bits:
            known = self._priority.get(bit.condition)
            if known is None or rank[bit.priority] > rank[known]:
                self._priority[bit.condition] = bit.priority
        conditions = [c for c in ALARM_CONDITIONS if c in self._priority]
        if profile.state is not None:
            self._priority.setdefault(
                Condition.INFUSION_COMPLETE, ALARM_CONDITIONS[Condition.INFUSION_COMPLETE]
            )
            if Condition.INFUSION_COMPLETE not in conditions:
                conditions.append(Condition.INFUSION_COMPLETE)
        self._tracker = ConditionTracker(
            device_id, conditions, {c: "pump alarm" for c in conditions}
        )
        self._identity: Identity | None = None
        #: Live view of the current program (state name, drug), for the twin's device entry.
        self.program: dict[str, Any] = {}

    def on_connect(self, now: float) -> Sequence[Reading]:
        """A fresh link: the identity is sent again with the next good poll."""
        self._identity = None
        self._beat = None
        return ()

    def on_poll(self, blocks: Blocks, now: float) -> list[Reading]:
        """Readings from the register blocks of one poll at gateway time ``now``."""
        frame = self.codec.decode(blocks)
        if frame is None:
            return []
        return self.readings(frame, now)

    def readings(self, frame: PumpFrame, now: float) -> list[Reading]:
        out: list[Reading] = []
        self.fresh = self._heartbeat_moves(frame.numerics.get(Role.HEARTBEAT), now)
        # Frozen registers are last known values, not current ones: marked invalid, so the
        # twin shows them stale and nothing alarms on them as if they were live.
        status = MeasurementStatus.NONE if self.fresh else MeasurementStatus.INVALID
        serial = frame.serial or ""
        if self._identity is None or self._identity.serial != serial:
            self._identity = Identity(
                self.device_id, now, self.profile.manufacturer, self.profile.model, serial
            )
            out.append(self._identity)
        for role, value in frame.numerics.items():
            if role in _NUMERIC_CODES:
                code, unit = _NUMERIC_CODES[role]
                out.append(self._numeric(code, value, unit, now, status))
        if self.profile.state is not None:
            state = None if frame.state is None else float(frame.state)
            out.append(self._numeric(codes.PUMP_STATUS, state, codes.DIMENSIONLESS, now, status))
        minutes = time_to_end(frame)
        out.append(self._numeric(codes.PUMP_TIME_REMAINING, minutes, codes.MINUTE, now, status))
        active = {bit.condition for bit in frame.alarms}
        state_map = {c: c in active for c in self._priority}
        if frame.state is PumpState.COMPLETE:
            state_map[Condition.INFUSION_COMPLETE] = True
        for event in self._tracker.update(state_map, now):
            out.append(self._prioritised(event))
        # Per pump, since the bed's vitals hold one value per code and a bed may have two
        # pumps; "time" (UTC seconds of the poll) lets a reader judge its age.
        self.program = {
            "state": None if frame.state is None else frame.state.name.lower(),
            "drug": frame.drug_name,
            "profile": self.profile.name,
            "rate_ml_h": frame.numerics.get(Role.RATE),
            "vtbi_remaining_ml": frame.numerics.get(Role.VTBI_REMAINING),
            "time_to_end_min": minutes,
            "time": now,
        }
        return out

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Clear the conditions this model raised: the link, not the pump, ended them."""
        self.program = {}
        return self._tracker.clear(now)

    def _prioritised(self, event: DeviceEvent) -> DeviceEvent:
        if not event.active:
            return event
        return dataclasses.replace(event, priority=self._priority.get(event.condition))

    def _numeric(
        self,
        code: codes.Code,
        value: float | None,
        unit: codes.Unit,
        now: float,
        status: MeasurementStatus = MeasurementStatus.NONE,
    ) -> Numeric:
        if value is None:
            status |= MeasurementStatus.UNAVAILABLE
        return Numeric(self.device_id, code, value, unit, now, status=status)

    def _heartbeat_moves(self, beat: float | None, now: float) -> bool:
        """False once the map's heartbeat has stayed the same for ``frozen_after`` s (always
        True for a map without one)."""
        if beat is None:
            return True
        if self._beat is None or self._beat[0] != beat:
            self._beat = (beat, now)
        return now - self._beat[1] < self.frozen_after


def time_to_end(frame: PumpFrame) -> float | None:
    """Minutes to the end of the programmed volume at the current rate, or ``None``.

    VTBI remaining comes from the pump, else VTBI minus volume infused. ``None`` when the
    pump is not delivering (stopped, paused, KVO ...), the rate is not positive, or no
    VTBI is set (unlimited): there is then no end to count down to.
    """
    if frame.state is not None and frame.state not in _DELIVERING:
        return None
    n = frame.numerics
    rate = n.get(Role.RATE)
    remaining = n.get(Role.VTBI_REMAINING)
    if remaining is None:
        vtbi, infused = n.get(Role.VTBI), n.get(Role.VOLUME_INFUSED)
        remaining = None if vtbi is None or infused is None else max(0.0, vtbi - infused)
    if rate is None or rate <= 0 or remaining is None:
        return None
    return round(remaining / rate * 60.0, 2)


def _make(device_id: str, settings: PumpSettings) -> InfusionPump:
    return InfusionPump(device_id, settings.load_profile(), frozen_after=settings.stale_limit)


_DESCRIPTION = (
    "infusion pump read through a register-map profile (read-only: function codes 3/4 only): "
    "rate, volumes, VTBI, time to end, state, battery, drug and each pump alarm with its "
    "priority"
)

TCP_SPEC = DriverSpec.typed(
    name="modbus-pump-tcp",
    description=f"Modbus TCP {_DESCRIPTION}",
    settings=TcpPumpSettings,
    make_model=_make,
    scenarios=SCENARIOS,
    transport="modbus-tcp",
)

RTU_SPEC = DriverSpec.typed(
    name="modbus-pump-rtu",
    description=f"Modbus RTU (RS-485, several pumps per line) {_DESCRIPTION}",
    settings=RtuPumpSettings,
    make_model=_make,
    scenarios=SCENARIOS,
    probe_variants=(),
    transport="modbus-rtu",
)
