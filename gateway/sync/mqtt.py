"""MQTT (TLS, QoS 1) for cloud platforms.

Topic layout (``<prefix>`` defaults to ``bedside``)::

    <prefix>/<gateway>/status                      retained "online"/"offline" (last will)
    <prefix>/<gateway>/beds/<bed>/numerics         JSON: a run of one bed's numerics
    <prefix>/<gateway>/beds/<bed>/alarms           JSON: one alarm state change
    <prefix>/<gateway>/beds/<bed>/events           JSON: a run of device conditions

Payload (UTF-8 JSON)::

    {"id": "<deterministic message id>", "gateway": "...", "bed": "...",
     "items": [{"id": "<uuid>", "kind": "numeric", "device": "ox-1",
                "code": "MDC_PULS_OXIM_SAT_O2", "t": "2026-...Z", "value": 96,
                "unit": "%", "status": []}, ...]}

Ids derive from the store's row ids, so a message resent after a crash (QoS 1 is
at-least-once) can be told apart from a new one. Patient identifiers are left out unless
the destination is configured with ``include_patient = true``: a broker is often shared.
The client id is the gateway id (one session per gateway); the last will marks the gateway
offline on the status topic when the connection dies without a goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiomqtt
import structlog

from drivers.clock import Clock, within
from gateway.sync.delivery import Batch, Delivery, DestinationInfo, DestinationUnavailable
from gateway.sync.fhir import FhirContext
from gateway.sync.instant import fhir_instant
from gateway.twin.store import OutboxItem
from gateway.twin.vocabulary import Patient

log = structlog.get_logger(__name__)

MQTT_KINDS = frozenset({"alarm", "event", "numeric"})
#: Publishes awaiting their PUBACK at once (paho's default in-flight window is 20).
_IN_FLIGHT = 8
_TOPIC_OF_KIND = {"numeric": "numerics", "alarm": "alarms", "event": "events"}


def _item_json(item: OutboxItem, ids: FhirContext) -> dict[str, Any]:
    device, _, code = item.stream.rpartition("/")
    body: dict[str, Any] = {
        "id": ids.resource_id(item.kind, str(item.row_id)),
        "kind": item.kind,
        "device": device,
        "t": fhir_instant(item.t),
    }
    if item.kind == "numeric":
        body["code"] = code
    body.update({k: v for k, v in item.record.items() if k != "counts"})
    value = body.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        body["value"] = None  # JSON has no NaN or infinity; strict parsers reject them
    return body


def payloads(
    items: Sequence[OutboxItem],
    *,
    gateway_id: str,
    prefix: str,
    patients: Mapping[int, Patient | None],
    include_patient: bool,
    per_message: int = 200,
) -> list[tuple[str, bytes, list[OutboxItem]]]:
    """(topic, payload, items carried) in outbox order: runs of one bed and kind share a
    message, alarms go one per message."""
    ids = FhirContext(gateway_id)
    out: list[tuple[str, bytes, list[OutboxItem]]] = []
    run: list[OutboxItem] = []

    def flush() -> None:
        if not run:
            return
        first = run[0]
        topic = f"{prefix}/{gateway_id}/beds/{first.bed_id}/{_TOPIC_OF_KIND[first.kind]}"
        message: dict[str, Any] = {
            "id": f"{first.kind}-{first.row_id}-{len(run)}",
            "gateway": gateway_id,
            "bed": first.bed_id,
            "items": [_item_json(i, ids) for i in run],
        }
        patient = patients.get(first.admission if first.admission is not None else -1)
        if include_patient and patient is not None:
            message["patient"] = {"mrn": patient.mrn}
        out.append((topic, json.dumps(message, separators=(",", ":")).encode(), list(run)))
        run.clear()

    for item in items:
        if item.kind not in _TOPIC_OF_KIND:
            continue
        same = (
            run
            and run[0].kind == item.kind
            and run[0].bed_id == item.bed_id
            and run[0].admission == item.admission
            and item.kind != "alarm"
            and len(run) < per_message
        )
        if not same:
            flush()
        run.append(item)
    flush()
    return out


class MqttDestination:
    """A broker reached over MQTT 3.1.1/5 with TLS; every publish is QoS 1 (PUBACK)."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        gateway_id: str,
        clock: Clock,
        tls: ssl.SSLContext | None,
        prefix: str = "bedside",
        include_patient: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        carries: frozenset[str] = MQTT_KINDS,
    ) -> None:
        scheme = "mqtts" if tls is not None else "mqtt"
        self.info = DestinationInfo(name, "mqtt", f"{scheme}://{host}:{port}", carries)
        self._host, self._port = host, port
        self._gateway = gateway_id
        self._clock = clock
        self._tls = tls
        self._prefix = prefix
        self._include_patient = include_patient
        self._username, self._password = username, password
        self._timeout = timeout
        self._client: aiomqtt.Client | None = None

    @property
    def status_topic(self) -> str:
        return f"{self._prefix}/{self._gateway}/status"

    def _status(self, state: str) -> bytes:
        return json.dumps({"gateway": self._gateway, "state": state}).encode()

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        client = aiomqtt.Client(
            self._host,
            self._port,
            # One session per gateway and destination: two destinations on one broker
            # must not take each other's session over.
            identifier=f"{self._gateway}-{self.info.name}",
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            will=aiomqtt.Will(self.status_topic, self._status("offline"), qos=1, retain=True),
            timeout=self._timeout,
        )
        try:
            await within(self._clock, self._timeout, client.__aenter__())
            await within(
                self._clock,
                self._timeout,
                client.publish(self.status_topic, self._status("online"), qos=1, retain=True),
            )
        except (TimeoutError, aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise DestinationUnavailable(f"cannot connect to {self.info.target}: {exc}") from None
        self._client = client
        return client

    async def send(self, batch: Batch) -> Delivery:
        messages = payloads(
            batch.items,
            gateway_id=self._gateway,
            prefix=self._prefix,
            patients=batch.patients,
            include_patient=self._include_patient,
        )
        client = await self._connected()
        # Several messages in flight at once (QoS 1 keeps one client's messages in order):
        # waiting for each PUBACK before the next would make the round trip, not the
        # broker, the limit. Confirmed is the prefix up to the first failure; what follows
        # it is sent again (at-least-once; the ids let a receiver drop repeats).
        results: list[BaseException | None] = []
        for start in range(0, len(messages), _IN_FLIGHT):
            window = messages[start : start + _IN_FLIGHT]
            publishes = [
                asyncio.ensure_future(client.publish(topic, payload, qos=1))
                for topic, payload, _ in window
            ]
            # One deadline for the window, but each publish judged on its own: a PUBACK
            # that came before a cut or a timeout is a delivery, not a loss to resend.
            with contextlib.suppress(TimeoutError):
                await within(self._clock, self._timeout, asyncio.wait(publishes))
            done: list[BaseException | None] = []
            for publish in publishes:
                if publish.done() and not publish.cancelled():
                    done.append(publish.exception())
                else:
                    publish.cancel()
                    done.append(TimeoutError(f"no PUBACK within {self._timeout:g} s"))
            results.extend(done)
            if any(isinstance(r, BaseException) for r in done):
                results.extend([TimeoutError("not sent")] * (len(messages) - len(results)))
                break
        accepted: list[OutboxItem] = []
        sent = 0
        for index, ((_topic, payload, carried), result) in enumerate(
            zip(messages, results, strict=True)
        ):
            if isinstance(result, BaseException):
                if not isinstance(result, (TimeoutError, aiomqtt.MqttError, OSError)):
                    raise result  # a bug, not the broker: the worker deals with it
                await self._drop()
                reason = f"publish to {self.info.target} failed: {result or type(result).__name__}"
                if not accepted:
                    raise DestinationUnavailable(reason)
                rest = tuple(i for _, _, c in messages[index:] for i in c)
                return Delivery(tuple(accepted), (), rest, reason, sent_bytes=sent)
            accepted.extend(carried)
            sent += len(payload)
        return Delivery(tuple(accepted), sent_bytes=sent)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        """Say goodbye: mark the gateway offline (a clean stop sends no last will)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                await within(
                    self._clock,
                    2.0,
                    client.publish(self.status_topic, self._status("offline"), qos=1, retain=True),
                )
        await self._drop()
