"""The ``[[destinations]]`` tables of ``config.toml``: where sync sends, checked up front.

Example::

    [[destinations]]
    name = "hie"                      # id used in status, logs and the outbox
    protocol = "hl7-mllp"             # hl7-mllp | fhir | mqtt
    host = "10.1.2.3"
    port = 2575
    tls = true                        # MLLP over TLS (optional for HL7; always on for FHIR)
    ca_file = "/etc/bedside-gateway/hie-ca.pem"
    cert_file = "/etc/bedside-gateway/gw.pem"   # client certificate (mutual TLS)
    key_file = "/etc/bedside-gateway/gw.key"
    facility = "WARD3"

Relative file paths are relative to the config file. Secrets are never inline: an MQTT
password comes from ``password_file``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Protocol = Literal["hl7-mllp", "fhir", "mqtt"]
Kind = Literal["alarm", "event", "numeric", "waveform", "audit"]

#: What each protocol can carry; ``carries`` defaults to all of it.
CARRIABLE: dict[str, frozenset[str]] = {
    "hl7-mllp": frozenset({"alarm", "numeric"}),
    "fhir": frozenset({"numeric"}),
    "mqtt": frozenset({"alarm", "event", "numeric"}),
}
DEFAULT_PORT = {"hl7-mllp": 2575}


class DestinationSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    protocol: Protocol
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = None
    carries: list[Kind] | None = None
    tls: bool | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=300, description="seconds")
    batch: int = Field(default=200, ge=1, le=5000)
    bandwidth_kbps: float | None = Field(default=None, gt=0)
    unreachable_after: float = Field(default=60.0, gt=0, description="seconds")
    #: The oldest unsent entry older than this (seconds) raises ``sync_lagging``; 0: never.
    lag_alarm_after: float = Field(default=900.0, ge=0, description="seconds")
    expiry_hours: dict[Kind, float] = Field(default_factory=dict)
    #: Seconds this destination has to confirm a high-priority alarm before the bedside is
    #: told forwarding failed; default 30 for HL7 (the alert manager), none for the others.
    confirm_alarms_within: float | None = Field(default=None, gt=0, le=3600)
    facility: str = ""
    mrn_system: str = "urn:oid:2.16.840.1.113883.19.5"
    prefix: str = Field(default="bedside", pattern=r"^[^#+\s]+$")
    include_patient: bool = False
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """A checked destination; paths resolved, defaults applied."""

    name: str
    protocol: str
    carries: frozenset[str]
    host: str = ""
    port: int = 0
    url: str = ""
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    timeout: float = 10.0
    batch: int = 200
    bandwidth: float | None = None  # bytes per second
    unreachable_after: float = 60.0
    lag_alarm_after: float | None = 900.0  # seconds; None: never
    expiry: dict[str, float] = field(default_factory=dict)  # seconds per kind
    confirm_alarms_within: float | None = None
    facility: str = ""
    mrn_system: str = ""
    prefix: str = "bedside"
    include_patient: bool = False
    username: str | None = None
    password_file: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """Verification always on: the configured CA, else the system's trust store."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None:
            context.load_cert_chain(
                self.cert_file, self.key_file if self.key_file is not None else None
            )
        return context


def check(
    section: DestinationSection, where: str, base: Path, problems: list[str], name: str
) -> DestinationConfig | None:
    """The destination, or ``None`` with its problems added (one line each, with the fix)."""
    before = len(problems)

    def problem(key: str, text: str) -> None:
        problems.append(f"{name}: {where}.{key}: {text}")

    protocol = section.protocol
    can = CARRIABLE[protocol]
    carries = frozenset(section.carries) if section.carries is not None else can
    if not carries <= can:
        problem(
            "carries",
            f"{protocol} cannot carry {', '.join(sorted(carries - can))}; "
            f"use some of {', '.join(sorted(can))}",
        )
    tls = section.tls if section.tls is not None else protocol != "hl7-mllp"
    if protocol == "fhir":
        if not section.url or not section.url.startswith("https://"):
            problem("url", 'a FHIR destination needs url = "https://host/fhir-base"')
        if section.tls is False:
            problem("tls", "FHIR is only sent over verified TLS; remove tls = false")
    elif not section.host:
        problem("host", f"required for protocol {protocol!r} (the receiver's name or address)")
    confirm = section.confirm_alarms_within
    if confirm is None and protocol == "hl7-mllp" and "alarm" in carries:
        confirm = 30.0
    if confirm is not None and "alarm" not in carries:
        problem("confirm_alarms_within", "this destination carries no alarms; remove it")
    if section.password_file is not None and protocol != "mqtt":
        problem("password_file", "only MQTT destinations take a password")

    def path_of(key: str, value: str | None) -> Path | None:
        if value is None:
            return None
        found = Path(value) if Path(value).is_absolute() else base / value
        if not found.is_file():
            problem(key, f"{found}: no such file")
        return found

    ca = path_of("ca_file", section.ca_file)
    cert = path_of("cert_file", section.cert_file)
    key = path_of("key_file", section.key_file)
    password = path_of("password_file", section.password_file)
    if (cert is None) != (key is None):
        problem("cert_file", "a client certificate needs both cert_file and key_file")
    if (ca or cert) and not tls:
        problem("tls", "certificates are set but tls = false; set tls = true")
    if len(problems) > before:
        return None
    if section.port is not None:
        port = section.port
    elif protocol == "mqtt":
        port = 8883 if tls else 1883
    else:
        port = DEFAULT_PORT.get(protocol, 0)
    return DestinationConfig(
        name=section.name,
        protocol=protocol,
        carries=carries,
        host=section.host or "",
        port=port,
        url=section.url or "",
        tls=tls,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        server_name=section.server_name,
        timeout=section.timeout,
        batch=section.batch,
        bandwidth=None if section.bandwidth_kbps is None else section.bandwidth_kbps * 1000 / 8,
        unreachable_after=section.unreachable_after,
        lag_alarm_after=section.lag_alarm_after or None,
        expiry={k: v * 3600.0 for k, v in section.expiry_hours.items()},
        confirm_alarms_within=confirm,
        facility=section.facility,
        mrn_system=section.mrn_system,
        prefix=section.prefix,
        include_patient=section.include_patient,
        username=section.username,
        password_file=password,
    )
