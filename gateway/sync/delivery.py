"""What a destination tells its worker after a send, and how it can fail.

A destination (HL7 over MLLP, FHIR over HTTPS, MQTT) gets a batch of outbox items and
answers with a :class:`Delivery`: which items the receiver confirmed, which it refused for
good (dead letters: they must not block the queue), and whether the rest should be tried
again later. A destination that cannot be reached at all raises
:class:`DestinationUnavailable` instead; the worker backs off and retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.twin.store import OutboxItem
from gateway.twin.vocabulary import Patient


class DestinationUnavailable(Exception):
    """The destination could not be reached or did not answer in time: retry later."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Outbox items for one send, in outbox order, with the patients they belong to.

    ``patients`` maps each admission among the items to its patient (``None`` when the
    admission has none bound): the PID of an HL7 message, the subject of a FHIR resource.
    """

    items: tuple[OutboxItem, ...]
    patients: Mapping[int, Patient | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Items the receiver refused outright, and its reason (never patient data)."""

    items: tuple[OutboxItem, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """Outcome of one send.

    ``accepted``: confirmed by the receiver (the outbox entry is done). ``refused``: the
    receiver will never take them (dead-lettered). ``retry``: neither; tried again after a
    backoff, with ``retry_reason`` in the status.
    """

    accepted: tuple[OutboxItem, ...] = ()
    refused: tuple[Refusal, ...] = ()
    retry: tuple[OutboxItem, ...] = ()
    retry_reason: str = ""
    #: Bytes that went on the wire, for the bandwidth cap.
    sent_bytes: int = 0


@dataclass(frozen=True, slots=True)
class DestinationInfo:
    """Static facts for status output: name, protocol and where it sends."""

    name: str
    protocol: str
    target: str
    carries: frozenset[str] = field(default_factory=frozenset)


class Destination(Protocol):
    """One central system. Implementations own their connection and reconnect lazily."""

    info: DestinationInfo

    async def send(self, batch: Batch) -> Delivery:
        """Deliver the batch's items (in outbox order).

        Raises :class:`DestinationUnavailable` when nothing could be delivered because the
        receiver is unreachable, slow or closed the connection.
        """
        ...

    async def close(self) -> None:
        """Drop the connection, if any."""
        ...
