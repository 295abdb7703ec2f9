"""HL7 v2 over MLLP (optionally TLS): send each message, wait for its acknowledgement.

One connection per destination, opened on first use and after any failure; messages go
one at a time (the receiver's ACK for one before the next), which is what interface engines
expect and what keeps a stream's order. AA advances; AE or AR dead-letters the message
without blocking those after it; no answer within the timeout, a wrong control id or a
broken connection retries from the first unacknowledged message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import structlog
from hl7.mllp import InvalidBlockError, open_hl7_connection
from hl7.mllp.streams import HL7StreamReader, HL7StreamWriter

from drivers.clock import Clock, within
from gateway.sync.delivery import (
    Batch,
    Delivery,
    DestinationInfo,
    DestinationUnavailable,
    Refusal,
)
from gateway.sync.hl7 import Ack, AckError, Message, Sender, messages_for, parse_ack
from gateway.twin.store import OutboxItem

log = structlog.get_logger(__name__)

#: What HL7 carries: numerics as PCD-01 observations, alarm state changes as PCD-04.
HL7_KINDS = frozenset({"numeric", "alarm"})


class _ConnectionLost(DestinationUnavailable):
    """The connection broke mid-exchange (as opposed to a receiver that is silent)."""


class MllpDestination:
    """An interface engine or alert manager reached over MLLP."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: Sender,
        clock: Clock,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        per_message: int = 50,
        carries: frozenset[str] = HL7_KINDS,
    ) -> None:
        scheme = "mllps" if tls is not None else "mllp"
        self.info = DestinationInfo(name, "hl7-mllp", f"{scheme}://{host}:{port}", carries)
        self._host, self._port = host, port
        self._sender = sender
        self._clock = clock
        self._tls = tls
        self._server_hostname = server_hostname
        self._timeout = timeout
        self._per_message = per_message
        self._stream: tuple[HL7StreamReader, HL7StreamWriter] | None = None
        # The message last sent without an answer. The receiver may have stored it (its ACK
        # lost or late), so it goes again exactly as it was, same MSH-10: rebuilt from a
        # later batch, its rows could fall into differently cut messages with new control
        # ids, and a receiver de-duplicating by MSH-10 would store them twice.
        self._unconfirmed: Message | None = None
        self._written = False  # the message being exchanged reached the socket

    async def send(self, batch: Batch) -> Delivery:
        refused: list[Refusal] = []
        items = batch.items
        messages: list[Message] = []
        pending, self._unconfirmed = self._unconfirmed, None
        if pending is not None:
            carried = {i.outbox_id for i in pending.items}
            if carried <= {i.outbox_id for i in items}:  # none expired, refused or sent since
                items = tuple(i for i in items if i.outbox_id not in carried)
            else:
                pending = None
        built, skipped = messages_for(
            items,
            sender=self._sender,
            patients=batch.patients,
            now=self._clock.wall(),
            per_message=self._per_message,
        )
        messages.extend(built)
        if pending is not None:
            # Alarms queued since still go first; then the old message, before any newer
            # data of its streams.
            alarms = 0
            while alarms < len(messages) and _alarms_only(messages[alarms]):
                alarms += 1
            messages.insert(alarms, pending)
        accepted: list[OutboxItem] = list(skipped)  # nothing HL7 sends for these
        sent = 0
        for index, message in enumerate(messages):
            try:
                ack = await self._exchange(message)
            except DestinationUnavailable as exc:
                if self._written:  # it may have arrived: it goes again as it is
                    self._unconfirmed = message
                await self.close()
                if not accepted and not refused:
                    raise
                rest = tuple(item for m in messages[index:] for item in m.items)
                return Delivery(tuple(accepted), tuple(refused), rest, str(exc), sent_bytes=sent)
            sent += len(message.text)
            if ack.accepted:
                accepted.extend(message.items)
            else:
                refused.append(Refusal(message.items, f"{ack.code} {ack.text}".strip()))
        return Delivery(tuple(accepted), tuple(refused), sent_bytes=sent)

    async def _exchange(self, message: Message) -> Ack:
        self._written = False
        reused = self._stream is not None
        try:
            return await self._exchange_once(message)
        except _ConnectionLost:
            await self.close()
            if not reused:
                raise
        # Many receivers close a connection after each message or when idle; a connection
        # that was already open may simply be gone. One fresh connection decides.
        return await self._exchange_once(message)

    async def _exchange_once(self, message: Message) -> Ack:
        reader, writer = await self._connection()
        try:
            writer.writeblock(message.text.encode("utf-8"))
            self._written = True
            await within(self._clock, self._timeout, writer.drain())
            block = await within(self._clock, self._timeout, reader.readblock())
        except TimeoutError:
            raise DestinationUnavailable(f"no acknowledgement within {self._timeout:g} s") from None
        except (OSError, asyncio.IncompleteReadError, ValueError, InvalidBlockError) as exc:
            raise _ConnectionLost(f"connection lost: {exc or type(exc).__name__}") from None
        try:
            ack = parse_ack(block.decode("utf-8", "replace"))
        except AckError as exc:
            raise DestinationUnavailable(str(exc)) from None
        if ack.control_id != message.control_id:
            # An answer to another message: the connection's state is unknown, start over.
            raise DestinationUnavailable(
                f"acknowledgement for {ack.control_id!r}, expected {message.control_id!r}"
            )
        return ack

    async def _connection(self) -> tuple[HL7StreamReader, HL7StreamWriter]:
        if self._stream is not None:
            return self._stream
        try:
            stream = await within(
                self._clock,
                self._timeout,
                open_hl7_connection(
                    self._host,
                    self._port,
                    encoding="utf-8",
                    ssl=self._tls,
                    server_hostname=self._server_hostname if self._tls else None,
                ),
            )
        except TimeoutError:
            raise DestinationUnavailable(
                f"cannot connect to {self.info.target} within {self._timeout:g} s"
            ) from None
        except ssl.SSLError as exc:
            raise DestinationUnavailable(f"TLS with {self.info.target} failed: {exc}") from None
        except OSError as exc:
            raise DestinationUnavailable(f"cannot connect to {self.info.target}: {exc}") from None
        self._stream = (stream[0], stream[1])
        return self._stream

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            writer = stream[1]
            writer.close()
            with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
                await within(self._clock, 1.0, writer.wait_closed())


def _alarms_only(message: Message) -> bool:
    return all(item.kind == "alarm" for item in message.items)
