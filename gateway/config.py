"""``config.toml`` -> validated, frozen objects; or every problem at once, each naming its field.

The schema is declared with pydantic; each driver contributes the schema of its own table
through ``drivers.registry``. Problems come back as one line each, in the form::

    config.toml: beds[1].devices[0].port: required for driver 'nonin' (or set simulate = "...")

and the CLI exits with status 2.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers import registry
from drivers.capture import CaptureError, read_capture
from drivers.device import SerialSettings
from drivers.readings import Priority
from gateway.alarms.limits import LimitError, Limits, apply_changes, profile
from gateway.alarms.model import AlarmSettings
from gateway.alarms.rules import RuleError, event_rules
from gateway.analysis.settings import AnalysisSettings, RhythmSettings
from gateway.sync.settings import DestinationConfig, DestinationSection
from gateway.sync.settings import check as check_destination
from gateway.twin.vocabulary import Patient, Retention

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ID_HINT = "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one line per mistake."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Strict(BaseModel):
    # strict: a wrong type is refused, never coerced (true is not a baud rate of 1).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GatewaySection(_Strict):
    id: str = Field(pattern=_ID_PATTERN)
    data_dir: str = Field(default="var", min_length=1)
    listen: str = "127.0.0.1:8080"
    stale_after: float = Field(default=5.0, gt=0, le=300, description="seconds")
    # Marks a demonstration setup: only then may `run` create an encryption key by itself.
    simulation: bool = False

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _split_listen(value)
        return value


class RetentionSection(_Strict):
    numerics_days: float = Field(default=30, gt=0)
    waveforms_hours: float = Field(default=72, gt=0)
    alarms_days: float = Field(default=365, gt=0)
    discharged_days: float = Field(default=30, ge=0)


class StoreSection(_Strict):
    key_file: str = Field(default="keys/kek", min_length=1)
    credential: str = "bedside-gateway-kek"
    quota_mb: float | None = Field(default=None, gt=0)
    min_free_mb: float = Field(default=200, ge=0)
    retention: RetentionSection = Field(default_factory=RetentionSection)


class PatientSection(_Strict):
    name: str = Field(min_length=1)
    mrn: str = Field(min_length=1)
    birth_date: date = Field(strict=False)  # a TOML date or an ISO 8601 string


class DeviceSection(BaseModel):
    """Common keys of a device; the rest belongs to its driver and is checked by it."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    id: str = Field(pattern=_ID_PATTERN)
    driver: str
    simulate: str | None = None
    replay: str | None = Field(default=None, min_length=1)


class LimitsSection(_Strict):
    """One metric's alarm limits in its unit, delay in seconds (gateway/alarms/limits.py)."""

    low: float | None = None
    high: float | None = None
    extreme_low: float | None = None
    extreme_high: float | None = None
    delay: float | None = None


class BedAlarmsSection(_Strict):
    profile: str | None = None  # adult, paediatric or neonatal; default: [alarms] profile
    limits: dict[str, LimitsSection] = Field(default_factory=dict)


class AlarmsSection(_Strict):
    """The alarm engine (gateway/alarms); times in seconds."""

    profile: str = "adult"
    stale_data_seconds: float = Field(default=30.0, gt=0, le=3600)
    escalate_after_seconds: float = Field(default=120.0, ge=0, le=3600)  # 0: never
    sync_unreachable_seconds: float = Field(default=300.0, gt=0, le=86400)
    self_check_interval: float = Field(default=2.0, gt=0, le=60)
    self_check_timeout: float = Field(default=5.0, gt=0, le=60)
    expect_page: bool = False
    sound: str = "bell"  # "none", "bell" or a command run with start/stop
    priorities: dict[str, str] = Field(default_factory=dict)


class BedSection(_Strict):
    id: str = Field(pattern=_ID_PATTERN)
    label: str = ""
    patient: PatientSection | None = None
    devices: list[DeviceSection] = Field(default_factory=list)
    alarms: BedAlarmsSection = Field(default_factory=BedAlarmsSection)


class WebSection(_Strict):
    """The nurse page: who may see it and how long a login lasts (see gateway/web/auth.py)."""

    require_login_to_view: bool = False
    users_file: str = Field(default="users.json", min_length=1)  # relative to data_dir
    session_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    max_failed_logins: int = Field(default=5, ge=1, le=100)
    lockout_minutes: float = Field(default=5.0, gt=0, le=24 * 60)


class BleSection(_Strict):
    """Bluetooth LE: which bleak backend and adapter (see drivers/transport/ble.py)."""

    # "bluez": real devices through BlueZ; "virtual": the in-process radio of the simulated
    # ward (drivers/simulate/virtual_ble.py), where simulated BLE devices live.
    backend: Literal["bluez", "virtual"] = "bluez"
    adapter: str = Field(default="hci0", pattern=r"^[A-Za-z0-9_-]{1,32}$")


class AnalysisSection(_Strict):
    """ECG analysis (gateway/analysis): mains frequency, rhythm limits, alarm priorities."""

    mains_hz: Literal[50, 60] = 50
    asystole_s: float = Field(default=4.0, ge=1.0, le=15.0, description="seconds")
    pause_s: float = Field(default=2.5, ge=1.0, le=15.0, description="seconds")
    brady_bpm: float = Field(default=40.0, ge=15.0, le=120.0, description="/min")
    tachy_bpm: float = Field(default=150.0, ge=60.0, le=300.0, description="/min")
    pvc_per_minute: float = Field(default=10.0, gt=0, le=100.0)
    brady_priority: Literal["high", "medium", "low"] = "high"
    tachy_priority: Literal["high", "medium", "low"] = "high"
    pause_priority: Literal["high", "medium", "low"] = "medium"
    afib_priority: Literal["high", "medium", "low"] = "medium"
    ectopy_priority: Literal["high", "medium", "low"] = "low"

    @model_validator(mode="after")
    def _ordered(self) -> AnalysisSection:
        if self.pause_s > self.asystole_s:
            raise ValueError("pause_s must not exceed asystole_s; lower pause_s")
        if self.brady_bpm >= self.tachy_bpm:
            raise ValueError("brady_bpm must be below tachy_bpm; fix one of them")
        return self

    def settings(self) -> AnalysisSettings:
        return AnalysisSettings(
            mains_hz=float(self.mains_hz),
            rhythm=RhythmSettings(
                asystole_s=self.asystole_s,
                pause_s=self.pause_s,
                brady_bpm=self.brady_bpm,
                tachy_bpm=self.tachy_bpm,
                pvc_per_minute=self.pvc_per_minute,
            ),
            brady_priority=Priority(self.brady_priority),
            tachy_priority=Priority(self.tachy_priority),
            pause_priority=Priority(self.pause_priority),
            afib_priority=Priority(self.afib_priority),
            ectopy_priority=Priority(self.ectopy_priority),
        )


class ConfigFile(_Strict):
    gateway: GatewaySection
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)
    store: StoreSection = Field(default_factory=StoreSection)
    web: WebSection = Field(default_factory=WebSection)
    alarms: AlarmsSection = Field(default_factory=AlarmsSection)
    ble: BleSection = Field(default_factory=BleSection)
    beds: list[BedSection] = Field(min_length=1, max_length=16)
    destinations: list[DestinationSection] = Field(default_factory=list, max_length=8)


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One configured device. At most one of ``simulate`` (a scenario name) and ``replay``
    (a capture file) is set; then the gateway plays the device on a pty itself."""

    id: str
    driver: str
    settings: BaseModel
    simulate: str | None
    replay: Path | None = None

    @property
    def played(self) -> bool:
        """Whether the gateway plays this device itself (simulator or replay)."""
        return self.simulate is not None or self.replay is not None


@dataclass(frozen=True, slots=True)
class BedConfig:
    id: str
    label: str
    devices: tuple[DeviceConfig, ...]
    patient: Patient | None = None
    limit_profile: str = "adult"
    limits: dict[str, Limits] | None = None  # None: the profile's defaults


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Page login settings; times in seconds."""

    users_file: Path | None = None  # None: no users, nobody can log in
    require_login_to_view: bool = False
    session_lifetime: float = 12 * 3600.0
    idle_timeout: float = 30 * 60.0
    max_failed_logins: int = 5
    lockout: float = 5 * 60.0


@dataclass(frozen=True, slots=True)
class BleConfig:
    """Bluetooth LE backend ("bluez" or "virtual") and adapter name."""

    backend: Literal["bluez", "virtual"] = "bluez"
    adapter: str = "hci0"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    key_file: Path
    credential: str
    quota_bytes: int | None
    min_free_bytes: int
    retention: Retention


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    gateway_id: str
    data_dir: Path
    listen_host: str
    listen_port: int
    stale_after: float
    beds: tuple[BedConfig, ...]
    simulation: bool
    store: StoreConfig
    web: WebConfig = WebConfig()
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    ble: BleConfig = BleConfig()
    destinations: tuple[DestinationConfig, ...] = ()
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)

    @property
    def devices(self) -> list[tuple[BedConfig, DeviceConfig]]:
        return [(bed, dev) for bed in self.beds for dev in bed.devices]

    def page_url(self, port: int | None = None) -> str:
        """URL of the page: a wildcard listen address becomes loopback, IPv6 gets brackets."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listen_host, self.listen_host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.listen_port if port is None else port}/"


def load(path: Path, *, data_dir: Path | None = None) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem."""
    name = path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no such file; pass --config PATH or copy the shipped config.toml"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{name}: not UTF-8 text; save the file as UTF-8"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: not valid TOML: {exc}"]) from None
    return parse(raw, path=path, data_dir=data_dir)


def parse(raw: dict[str, Any], *, path: Path, data_dir: Path | None = None) -> Config:
    name = path.name
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{name}: {line}" for line in _explain(exc, (), raw)]) from None

    problems: list[str] = []
    seen: dict[str, str] = {}
    base = path.resolve().parent

    def claim(identifier: str, where: str) -> None:
        if identifier in seen:
            problems.append(
                f"{name}: {where}: duplicate id {identifier!r} (also at {seen[identifier]}); "
                "give every bed and device its own id"
            )
        else:
            seen[identifier] = where

    beds: list[BedConfig] = []
    for b, bed in enumerate(parsed.beds):
        claim(bed.id, f"beds[{b}].id")
        devices: list[DeviceConfig] = []
        for d, dev in enumerate(bed.devices):
            where = f"beds[{b}].devices[{d}]"
            claim(dev.id, f"{where}.id")
            device = _device(dev, where, raw["beds"][b]["devices"][d], problems, name, base)
            if device is not None:
                devices.append(device)
                _check_ble(device, where, parsed.ble, problems, name)
        patient = None
        if bed.patient is not None and not parsed.gateway.simulation:
            problems.append(
                f"{name}: beds[{b}].patient: patient identifiers belong in config.toml only for "
                "a simulated ward (set [gateway] simulation = true); admit real patients with "
                "bedside-gateway admit"
            )
        elif bed.patient is not None:
            patient = Patient(bed.patient.name, bed.patient.mrn, bed.patient.birth_date.isoformat())
        limit_profile, limits = _bed_limits(bed.alarms, parsed.alarms, f"beds[{b}]", problems, name)
        beds.append(
            BedConfig(bed.id, bed.label or bed.id, tuple(devices), patient, limit_profile, limits)
        )
    _check_alarms(parsed.alarms, problems, name)
    destinations: list[DestinationConfig] = []
    named: set[str] = set()
    for i, wanted in enumerate(parsed.destinations):
        if wanted.name in named:
            problems.append(
                f"{name}: destinations[{i}].name: duplicate name {wanted.name!r}; "
                "give every destination its own name"
            )
        named.add(wanted.name)
        checked = check_destination(wanted, f"destinations[{i}]", base, problems, name)
        if checked is not None:
            destinations.append(checked)
    if problems:
        raise ConfigError(problems)

    host, port = _split_listen(parsed.gateway.listen)
    # The config's data_dir is relative to the config file; a --data-dir override is
    # relative to where the command runs, like any other command-line path.
    if data_dir is not None:
        root = data_dir.absolute()
    else:
        chosen = Path(parsed.gateway.data_dir)
        root = chosen if chosen.is_absolute() else base / chosen
    section = parsed.store
    key_file = Path(section.key_file)
    days = 86400.0
    store = StoreConfig(
        path=root / "twin.sqlite",
        key_file=key_file if key_file.is_absolute() else root / key_file,
        credential=section.credential,
        quota_bytes=None if section.quota_mb is None else int(section.quota_mb * 1024 * 1024),
        min_free_bytes=int(section.min_free_mb * 1024 * 1024),
        retention=Retention(
            numerics=section.retention.numerics_days * days,
            waveforms=section.retention.waveforms_hours * 3600.0,
            alarms=section.retention.alarms_days * days,
            discharged=section.retention.discharged_days * days,
        ),
    )
    return Config(
        path=path,
        gateway_id=parsed.gateway.id,
        data_dir=root,
        listen_host=host,
        listen_port=port,
        stale_after=parsed.gateway.stale_after,
        beds=tuple(beds),
        simulation=parsed.gateway.simulation,
        store=store,
        analysis=parsed.analysis.settings(),
        web=WebConfig(
            users_file=_under(root, parsed.web.users_file),
            require_login_to_view=parsed.web.require_login_to_view,
            session_lifetime=parsed.web.session_hours * 3600.0,
            idle_timeout=parsed.web.idle_minutes * 60.0,
            max_failed_logins=parsed.web.max_failed_logins,
            lockout=parsed.web.lockout_minutes * 60.0,
        ),
        ble=BleConfig(backend=parsed.ble.backend, adapter=parsed.ble.adapter),
        alarms=_alarm_settings(parsed.alarms),
        destinations=tuple(destinations),
    )


def _under(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def _bed_limits(
    section: BedAlarmsSection, alarms: AlarmsSection, where: str, problems: list[str], name: str
) -> tuple[str, dict[str, Limits] | None]:
    """A bed's limit profile and limits (its overrides applied and checked for sanity)."""
    chosen = section.profile or alarms.profile
    try:
        limits = profile(chosen)
    except LimitError as exc:
        where_ = f"{where}.alarms.profile" if section.profile else "alarms.profile"
        problems.append(f"{name}: {where_}: {exc}")
        return chosen, None
    changes = {m: v.model_dump(exclude_unset=True) for m, v in section.limits.items()}
    try:
        return chosen, apply_changes(limits, changes)
    except LimitError as exc:
        problems.append(f"{name}: {where}.alarms.limits: {exc}; fix or remove it")
        return chosen, None


def _check_alarms(alarms: AlarmsSection, problems: list[str], name: str) -> None:
    try:
        event_rules(alarms.priorities)
    except RuleError as exc:
        problems.append(f"{name}: alarms.priorities: {exc}")
    if alarms.self_check_timeout < alarms.self_check_interval:
        problems.append(
            f"{name}: alarms.self_check_timeout: must be at least self_check_interval "
            f"({alarms.self_check_interval:g} s), or every heartbeat would count as late"
        )


def _alarm_settings(alarms: AlarmsSection) -> AlarmSettings:
    return AlarmSettings(
        stale_data_after=alarms.stale_data_seconds,
        escalate_after=alarms.escalate_after_seconds or None,
        sync_unreachable_after=alarms.sync_unreachable_seconds,
        priorities=tuple(sorted(alarms.priorities.items())),
        self_check_interval=alarms.self_check_interval,
        self_check_timeout=alarms.self_check_timeout,
        expect_page=alarms.expect_page,
        sound=alarms.sound,
    )


def _device(
    dev: DeviceSection,
    where: str,
    raw: dict[str, Any],
    problems: list[str],
    name: str,
    base: Path,
) -> DeviceConfig | None:
    try:
        spec = registry.get(dev.driver)
    except KeyError:
        problems.append(
            f"{name}: {where}.driver: unknown driver {dev.driver!r}; "
            f"use one of: {', '.join(registry.names())}"
        )
        return None
    if dev.simulate is not None and dev.simulate not in spec.scenarios:
        choices = ", ".join(spec.scenarios) or "(this driver has no simulator)"
        problems.append(
            f"{name}: {where}.simulate: unknown scenario {dev.simulate!r} for driver "
            f"{dev.driver!r}; use one of: {choices}"
        )
    driver_keys = {k: v for k, v in raw.items() if k not in DeviceSection.model_fields}
    try:
        settings = spec.settings.model_validate(driver_keys)
    except ValidationError as exc:
        problems.extend(
            f"{name}: {line}"
            for line in _explain(exc, (where,), driver_keys, driver=dev.driver, spec=spec)
        )
        return None
    replay = _replay_file(dev, where, base, problems, name)
    played = dev.simulate is not None or dev.replay is not None
    if dev.simulate is not None and dev.replay is not None:
        problems.append(
            f"{name}: {where}.replay: a device is either simulated or replayed; "
            "remove simulate or remove replay"
        )
    if isinstance(settings, SerialSettings):
        if not played and not settings.port:
            problems.append(
                f"{name}: {where}.port: required for driver {dev.driver!r} "
                '(a device path such as "/dev/ttyUSB0", simulate = "<scenario>", '
                'or replay = "<capture file>")'
            )
        if played and settings.port:
            problems.append(
                f"{name}: {where}.port: a simulated or replayed device gets its port from the "
                "gateway; remove port, or remove simulate/replay"
            )
    return DeviceConfig(dev.id, dev.driver, settings, dev.simulate, replay)


def _check_ble(
    device: DeviceConfig, where: str, ble: BleSection, problems: list[str], name: str
) -> None:
    """A simulated BLE device lives on the virtual radio: only that backend can reach it."""
    if registry.get(device.driver).transport != "ble":
        return
    if device.replay is not None:
        problems.append(
            f"{name}: {where}.replay: BLE devices are not replayed from captures; use "
            'simulate = "<scenario>" or a real device'
        )
    if device.simulate is not None and ble.backend != "virtual":
        problems.append(
            f"{name}: {where}.simulate: a simulated BLE device needs the virtual radio; "
            'set [ble] backend = "virtual", or remove simulate to use a real device'
        )


def _replay_file(
    dev: DeviceSection, where: str, base: Path, problems: list[str], name: str
) -> Path | None:
    if dev.replay is None:
        return None
    path = Path(dev.replay)
    path = path if path.is_absolute() else base / path
    try:
        if next(read_capture(path), None) is None:
            problems.append(
                f"{name}: {where}.replay: {path} holds no traffic; record one with "
                "bedside-gateway capture"
            )
    except OSError as exc:
        problems.append(
            f"{name}: {where}.replay: cannot read {path} ({exc.strerror}); record "
            "one with bedside-gateway capture"
        )
    except CaptureError as exc:
        problems.append(f"{name}: {where}.replay: {exc}")
    return path


def _explain(
    exc: ValidationError,
    prefix: tuple[str, ...],
    raw: Any,
    *,
    driver: str | None = None,
    spec: registry.DriverSpec | None = None,
) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field_path = _format_loc(prefix, loc)
        kind = err["type"]
        if kind == "missing":
            owner = f" for driver {driver!r}" if driver else ""
            lines.append(f"{field_path}: required{owner}; add it")
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(raw, loc, spec)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{field_path}: unknown key; remove it or fix its spelling{hint}")
        elif kind == "string_pattern_mismatch":
            lines.append(f"{field_path}: {err['input']!r} is not a valid id; {_ID_HINT}")
        else:
            given = err.get("input")
            # Never echo what was given under patient: it may identify someone.
            private = "patient" in loc
            shown = "" if private or isinstance(given, dict | list) else f" (got {given!r})"
            lines.append(f"{field_path}: {err['msg'].rstrip('.')}{shown}")
    return lines


def _format_loc(prefix: tuple[str, ...], loc: tuple[Any, ...]) -> str:
    text = ".".join(prefix)
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _allowed_keys(raw: Any, loc: tuple[Any, ...], spec: registry.DriverSpec | None) -> list[str]:
    if spec is not None and len(loc) == 1:
        return sorted(set(spec.settings.model_fields) | set(DeviceSection.model_fields))
    model: type[BaseModel] | None = ConfigFile
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_of(info.annotation) if info is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")


def _split_listen(value: str) -> tuple[str, int]:
    match = _LISTEN.match(value)
    port = int(match["port"]) if match else -1
    if match is None or not 0 < port < 65536:
        raise ValueError('expected "HOST:PORT", e.g. "127.0.0.1:8080"')
    return match["host"].strip("[]"), port
