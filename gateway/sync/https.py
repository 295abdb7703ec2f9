"""FHIR over HTTPS: POST a batch Bundle to the server's base URL, with mutual TLS.

Certificate verification is always on (the context comes from the config's CA file, or
the system's trust store); a client certificate is sent when configured. Outcome per HTTP
status, for the whole request and then per entry of the batch-response:

* 2xx: accepted.
* 413 (the request is too large): the batch is sent again in halves; a single entry too
  large is refused for good.
* 400, 404 (on an entry), 409, 410, 412, 422 and other 4xx on an entry: that resource is
  refused for good (dead letter).
* 401, 403, 404 (on the request), 405, 408, 429, 5xx, timeouts, TLS and connection
  failures: retried; these are configuration or server trouble, not a bad message, and
  dead-lettering a whole backlog because a certificate expired would lose it.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import replace
from typing import Any

import httpx
import structlog

from drivers.clock import Clock, within
from gateway.sync.delivery import Batch, Delivery, DestinationInfo, DestinationUnavailable, Refusal
from gateway.sync.fhir import FHIR_KINDS, FhirContext, batch_bundle, entry_statuses
from gateway.twin.store import OutboxItem

log = structlog.get_logger(__name__)

_RETRY_REQUEST = frozenset({401, 403, 404, 405, 408, 425, 429})


def _retryable(status: int) -> bool:
    return status >= 500 or status in _RETRY_REQUEST


class FhirDestination:
    """A FHIR R4 server taking batch Bundles."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        context: FhirContext,
        clock: Clock,
        tls: ssl.SSLContext,
        timeout: float = 15.0,
        carries: frozenset[str] = FHIR_KINDS,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ValueError("FHIR destinations must use https://")
        self.info = DestinationInfo(name, "fhir", base_url, carries)
        self._url = base_url.rstrip("/")
        self._context = context
        self._clock = clock
        self._timeout = timeout
        self._tls = tls
        self._client: httpx.AsyncClient | None = None

    async def send(self, batch: Batch) -> Delivery:
        carried = list(batch.items)
        refused: list[Refusal] = []
        bundle, owners = batch_bundle(carried, batch.patients, self._context)
        body = json.dumps(bundle, separators=(",", ":")).encode()
        response = await self._post(body)
        if response.status_code == 413 and len(carried) > 1:
            # Too large for the server (nginx's default limit is 1 MB): not a bad message.
            # Halves are sent instead of dead-lettering a whole backlog batch by batch.
            log.warning(
                "FHIR server refused the batch as too large; sending halves",
                destination=self.info.name,
                entries=len(carried),
            )
            return await self._send_halves(batch, len(body))
        if response.status_code >= 300:
            reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
            if _retryable(response.status_code):
                raise DestinationUnavailable(reason)
            refused.append(Refusal(tuple(carried), reason))
            return Delivery(refused=tuple(refused), sent_bytes=len(body))
        try:
            statuses = entry_statuses(response.json())
        except (ValueError, json.JSONDecodeError) as exc:
            raise DestinationUnavailable(f"unreadable answer: {exc}") from None
        if len(statuses) != len(owners):
            raise DestinationUnavailable(
                f"answer has {len(statuses)} entries for {len(owners)} sent"
            )
        accepted: list[OutboxItem] = []
        retry: list[OutboxItem] = []
        for status, owner in zip(statuses, owners, strict=True):
            if owner is None:
                continue  # a Device entry: it is sent again with the next batch anyway
            if status < 300:
                accepted.append(owner)
            elif status >= 500 or status in (408, 429):
                retry.append(owner)
            else:
                refused.append(Refusal((owner,), f"entry HTTP {status}"))
        return Delivery(
            tuple(accepted),
            tuple(refused),
            tuple(retry),
            "server asked to retry some entries" if retry else "",
            sent_bytes=len(body),
        )

    async def _send_halves(self, batch: Batch, spent: int) -> Delivery:
        items = batch.items
        half = len(items) // 2
        first = await self.send(Batch(items[:half], batch.patients))
        if first.retry:
            return replace(
                first, retry=first.retry + items[half:], sent_bytes=first.sent_bytes + spent
            )
        try:
            second = await self.send(Batch(items[half:], batch.patients))
        except DestinationUnavailable as exc:
            if not first.accepted and not first.refused:
                raise
            return replace(
                first,
                retry=items[half:],
                retry_reason=str(exc),
                sent_bytes=first.sent_bytes + spent,
            )
        return Delivery(
            first.accepted + second.accepted,
            first.refused + second.refused,
            second.retry,
            second.retry_reason,
            sent_bytes=first.sent_bytes + second.sent_bytes + spent,
        )

    async def _post(self, body: bytes) -> httpx.Response:
        if self._client is None:
            # httpx's own timeout is a backstop in real time; the clock's decides in tests.
            # trust_env off: a proxy or CA bundle from the environment must not change
            # where patient data goes or which certificates are trusted.
            self._client = httpx.AsyncClient(
                verify=self._tls, timeout=self._timeout * 2, trust_env=False
            )
        try:
            return await within(
                self._clock,
                self._timeout,
                self._client.post(
                    self._url,
                    content=body,
                    headers={
                        "Content-Type": "application/fhir+json",
                        "Accept": "application/fhir+json",
                    },
                ),
            )
        except TimeoutError:
            raise DestinationUnavailable(f"no answer within {self._timeout:g} s") from None
        except httpx.ConnectError as exc:
            cause: Any = exc.__cause__ or exc
            if isinstance(cause, ssl.SSLError) or "certificate" in str(exc).lower():
                raise DestinationUnavailable(f"TLS with {self.info.target} failed: {exc}") from None
            raise DestinationUnavailable(f"cannot connect to {self.info.target}: {exc}") from None
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
