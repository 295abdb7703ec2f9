"""Build the destination object a checked ``[[destinations]]`` table describes."""

from __future__ import annotations

from drivers.clock import Clock
from gateway.sync.delivery import Destination
from gateway.sync.fhir import FhirContext
from gateway.sync.hl7 import Sender
from gateway.sync.https import FhirDestination
from gateway.sync.mllp import MllpDestination
from gateway.sync.mqtt import MqttDestination
from gateway.sync.settings import DestinationConfig
from gateway.sync.worker import SyncPolicy


def build(config: DestinationConfig, gateway_id: str, clock: Clock) -> Destination:
    tls = config.ssl_context() if config.tls else None
    if config.protocol == "hl7-mllp":
        return MllpDestination(
            config.name,
            host=config.host,
            port=config.port,
            sender=Sender(gateway_id, facility=config.facility),
            clock=clock,
            tls=tls,
            server_hostname=config.server_name or config.host,
            timeout=config.timeout,
            carries=config.carries,
        )
    if config.protocol == "fhir":
        assert tls is not None  # settings.check refuses FHIR without TLS
        return FhirDestination(
            config.name,
            base_url=config.url,
            context=FhirContext(gateway_id, mrn_system=config.mrn_system),
            clock=clock,
            tls=tls,
            timeout=config.timeout,
            carries=config.carries,
        )
    password = (
        config.password_file.read_text(encoding="utf-8").strip()
        if config.password_file is not None
        else None
    )
    return MqttDestination(
        config.name,
        host=config.host,
        port=config.port,
        gateway_id=gateway_id,
        clock=clock,
        tls=tls,
        prefix=config.prefix,
        include_patient=config.include_patient,
        username=config.username,
        password=password,
        timeout=config.timeout,
        carries=config.carries,
    )


def policy(config: DestinationConfig) -> SyncPolicy:
    return SyncPolicy(
        batch=config.batch,
        bandwidth=config.bandwidth,
        unreachable_after=config.unreachable_after,
        lag_after=config.lag_alarm_after,
        expiry=dict(config.expiry),
    )
