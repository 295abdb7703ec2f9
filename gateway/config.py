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
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivers import registry
from drivers.capture import CaptureError, read_capture
from drivers.device import SerialSettings
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


class BedSection(_Strict):
    id: str = Field(pattern=_ID_PATTERN)
    label: str = ""
    patient: PatientSection | None = None
    devices: list[DeviceSection] = Field(default_factory=list)


class ConfigFile(_Strict):
    gateway: GatewaySection
    store: StoreSection = Field(default_factory=StoreSection)
    beds: list[BedSection] = Field(min_length=1, max_length=16)


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
        patient = None
        if bed.patient is not None and not parsed.gateway.simulation:
            problems.append(
                f"{name}: beds[{b}].patient: patient identifiers belong in config.toml only for "
                "a simulated ward (set [gateway] simulation = true); admit real patients with "
                "bedside-gateway admit"
            )
        elif bed.patient is not None:
            patient = Patient(bed.patient.name, bed.patient.mrn, bed.patient.birth_date.isoformat())
        beds.append(BedConfig(bed.id, bed.label or bed.id, tuple(devices), patient))
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
