"""A TCP hop between the gateway and a real receiver that a test can break.

The receiver behind it is real (an MLLP peer, a FHIR server, mosquitto); the hop only
carries their bytes, and on the test's word it goes down (connections refused, open ones
cut), slows the receiver's answers by seconds of the injected clock, refuses connections
(closing them, or first sending bytes the test gives, such as an MQTT CONNACK refusal), or
cuts each connection after a number of the receiver's packets. Nothing sleeps in real time:
a held answer waits on the clock, which the test advances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from drivers.clock import ManualClock
from tests.support.net import free_port

#: Splits what a receiver sent so far into whole packets (removing them from the buffer).
Framing = Callable[[bytearray], list[bytes]]


def whole(buffer: bytearray) -> list[bytes]:
    """Each read is one packet (an MLLP acknowledgement arrives in one piece here)."""
    data = bytes(buffer)
    buffer.clear()
    return [data] if data else []


def mqtt_packets(buffer: bytearray) -> list[bytes]:
    """Whole MQTT control packets (fixed header, remaining length as a varint; MQTT 3.1.1
    section 2.2), leaving a partial packet in the buffer."""
    out: list[bytes] = []
    while len(buffer) >= 2:
        length, shift, index = 0, 0, 1
        while True:
            if index >= len(buffer) or index > 4:
                return out
            byte = buffer[index]
            length |= (byte & 0x7F) << shift
            shift += 7
            index += 1
            if not byte & 0x80:
                break
        end = index + length
        if len(buffer) < end:
            break
        out.append(bytes(buffer[:end]))
        del buffer[:end]
    return out


def is_puback(packet: bytes) -> bool:
    return packet[0] >> 4 == 4


#: CONNACK, return code 3 "server unavailable" (MQTT 3.1.1 section 3.2.2.3).
CONNACK_UNAVAILABLE = b"\x20\x02\x00\x03"


class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream``, faults as set.

    ``latency``: when not ``None``, each read of the receiver's answer that contains a
    packet ``hold`` selects is delivered that many clock seconds after it arrived (drawn in
    turn from the iterator, counted from the first request the answers follow: answers to
    one burst come together); answers stay in order, as on a real link. ``refuse``: when not
    ``None``, every new connection gets these bytes (after the client's first packet) and
    is closed. ``cut_after``: each connection is cut before the receiver's packet number
    ``cut_after + 1`` reaches the gateway.
    """

    def __init__(
        self,
        upstream: int,
        clock: ManualClock,
        *,
        framing: Framing = whole,
        hold: Callable[[bytes], bool] = lambda _: True,
    ) -> None:
        self.port = free_port()
        self.upstream = upstream
        self.latency: Iterator[float] | None = None
        self.refuse: bytes | None = None
        self.cut_after: int | None = None
        self.refused = 0
        self.cuts = 0
        self.delayed = 0
        self._clock = clock
        self._framing = framing
        self._hold = hold
        self._holding = 0
        self._moved = 0  # reads in either direction, to tell when the peers are quiet
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def holding(self) -> bool:
        """An answer is waiting on the clock."""
        return self._holding > 0

    async def quiet(self, rounds: int = 200) -> None:
        """Wait (bounded, real time) until no bytes have moved for a few loop turns: the
        gateway has written the whole burst it will write before the clock moves."""
        last = -1
        for _ in range(rounds):
            if self._moved == last:
                return
            last = self._moved
            await asyncio.sleep(0.005)

    async def up(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Stop listening (connections are refused) and cut every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.refuse is not None:
                self.refused += 1
                if self.refuse:
                    await reader.read(65536)
                    writer.write(self.refuse)
                    await writer.drain()
                return
            try:
                up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                return
            self._links.add(upstream)
            burst: list[float | None] = [None, None]  # [first request, its answers due]
            there = asyncio.create_task(self._forward(reader, upstream, burst))
            back = asyncio.create_task(self._answer(up_reader, writer, burst))
            try:
                await asyncio.wait((there, back), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (there, back):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._links.discard(end)
                    end.transport.abort()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, burst: list[float | None]
    ) -> None:
        while data := await reader.read(65536):
            self._moved += 1
            if burst[0] is None:
                burst[0] = self._clock.monotonic()
            writer.write(data)
            await writer.drain()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, burst: list[float | None]
    ) -> None:
        # The delay counts from the request: everything the gateway sent since the last
        # answer it got is one burst, answered together after one delay, as a slow
        # receiver would (the clock may move while the gateway is still writing a burst).
        queue: asyncio.Queue[tuple[float, list[bytes]] | None] = asyncio.Queue()

        async def read() -> None:
            buffer = bytearray()
            try:
                while data := await reader.read(65536):
                    buffer += data
                    self._moved += 1
                    packets = self._framing(buffer)
                    if not packets:
                        continue
                    due = self._clock.monotonic()
                    held = self.latency is not None and any(self._hold(p) for p in packets)
                    if held and self.latency is not None and burst[0] is not None:
                        answered = burst[1]
                        if answered is None:
                            answered = burst[1] = burst[0] + next(self.latency)
                        due = answered
                    queue.put_nowait((due, packets))
            finally:
                queue.put_nowait(None)  # the receiver closed or reset: so does the hop

        reading = asyncio.create_task(read())
        sent = 0
        try:
            while (entry := await queue.get()) is not None:
                due, packets = entry
                wait = due - self._clock.monotonic()
                if wait > 0:
                    self._holding += 1
                    self.delayed += 1
                    try:
                        await self._clock.sleep(wait)
                    finally:
                        self._holding -= 1
                for packet in packets:
                    if self.cut_after is not None and sent >= self.cut_after:
                        self.cuts += 1
                        return
                    writer.write(packet)
                    sent += 1
                burst[0] = burst[1] = None
                await writer.drain()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
