"""Modbus transport: the only code in bedside-gateway that talks Modbus (pymodbus 3.x).

**Read-only by construction.** :class:`ModbusTransport` offers one operation,
:meth:`~ModbusTransport.read`, over the four *read* function codes (:class:`ReadTable`:
1 coils, 2 discrete inputs, 3 holding registers, 4 input registers). The pymodbus client is
private, and every PDU it is about to send passes :func:`_outgoing_guard`, which refuses any
function code outside 1-4 before a byte is framed. There is no write method to call, no
setting that enables one, and no path from configuration or the API to one.

One transport is one *line*: a TCP connection (:class:`TcpLine`; a pump, or a Modbus TCP
gateway in front of several) or an RS-485 serial port (:class:`RtuLine`) with several
pumps, each its own unit id. Requests on a line are strictly serialised (one FIFO lock, so
RTU frames never interleave and every caller gets its turn in order); each has a timeout
and retries on the injected clock, so a pump that stops answering costs the others at most
``timeout * (retries + 1)`` per poll and never stalls the line.

Reconnection: a line that cannot be opened, or that was lost, is reopened on the next
request, but not before its backoff deadline (doubling from ``backoff_initial`` to
``backoff_cap``, reset by a successful open); a request before that raises
:class:`~drivers.device.DeviceUnavailable` with ``retry_after``, which the supervisor's own
backoff respects, so pumps sharing a line do not hammer a dead port in turn. pymodbus's own
reconnection is switched off: one backoff policy per line, on the injected clock.

Errors leave as the :class:`~drivers.device.DeviceError` family: :class:`NoResponse` (the
unit did not answer), :class:`ExceptionReply` (it answered with a Modbus exception),
``DeviceUnavailable`` (cannot open), ``DeviceDisconnected`` (the line was lost).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.clock import Clock
from drivers.device import DeviceDisconnected, DeviceError, DeviceUnavailable

_T = TypeVar("_T")

#: Modbus function codes that only read: the only ones this transport can send.
READ_FUNCTION_CODES: Final = frozenset({1, 2, 3, 4})
#: pymodbus's own timeout, seconds: a backstop only; requests time out on the injected
#: clock first (see ``ModbusTransport.read``).
_LIBRARY_TIMEOUT_S: Final = 60.0


class ReadTable(enum.IntEnum):
    """The four Modbus tables, valued by the function code that *reads* each."""

    COILS = 1
    DISCRETE_INPUTS = 2
    HOLDING_REGISTERS = 3
    INPUT_REGISTERS = 4


class ReadOnlyViolation(RuntimeError):
    """Something tried to send a non-read function code: a bug, never sent."""


class NoResponse(DeviceError):
    """The unit did not answer (timeouts after every retry)."""


class ExceptionReply(DeviceError):
    """The unit answered with a Modbus exception (``code``: 2 illegal address, ...)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class TcpLine:
    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RtuLine:
    """An RS-485 port and its line settings (pumps on one port must share them)."""

    port: str
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "E"
    stopbits: int = 1

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


LineAddress = TcpLine | RtuLine


@dataclass(slots=True)
class LineStats:
    """Running totals of one line, for health views and the benchmark."""

    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    exception_replies: int = 0
    opens: int = 0
    losses: int = 0


def _outgoing_guard(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
    """pymodbus trace hook on every PDU: refuse to frame anything but a read request."""
    if sending and pdu.function_code not in READ_FUNCTION_CODES:
        raise ReadOnlyViolation(
            f"refusing to send Modbus function code {pdu.function_code}: the gateway only reads"
        )
    return pdu


class ModbusTransport:
    """One Modbus line (TCP connection or RS-485 port), read-only, shared by its pumps."""

    def __init__(
        self,
        line: LineAddress,
        clock: Clock,
        *,
        backoff_initial: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.line = line
        self.stats = LineStats()
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_cap = backoff_cap
        self._backoff = 0.0
        self._not_before = float("-inf")
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._lost = asyncio.Event()
        self._users = 0

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def hold(self) -> None:
        """A pump starts using the line (pair with :meth:`release`)."""
        self._users += 1

    def release(self) -> None:
        """A pump stops using the line; the last one out closes it."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self._drop()

    async def open(self) -> None:
        """Open the line if it is not open (respecting the reconnect backoff)."""
        async with self._lock:
            await self._open_locked()

    async def read(
        self,
        unit: int,
        table: ReadTable,
        address: int,
        count: int,
        *,
        answer_within: float,
        retries: int = 0,
    ) -> list[int]:
        """Read ``count`` registers (or bits, as 0/1) of ``table`` from ``address`` of
        ``unit``. Waits its turn on the line; each attempt is bounded by ``answer_within``
        seconds of the injected clock, and a timed-out attempt is retried ``retries`` times.
        """
        blocks = await self.read_blocks(
            unit, [(table, address, count)], answer_within=answer_within, retries=retries
        )
        return blocks[0]

    async def read_blocks(
        self,
        unit: int,
        requests: Sequence[tuple[ReadTable, int, int]],
        *,
        answer_within: float,
        retries: int = 0,
    ) -> list[list[int]]:
        """Several reads of one unit, back to back in one turn on the line, so they
        describe one moment and no other pump's request splits them. Each is
        ``(table, address, count)``; the first that gets no answer ends the turn."""
        checked = []
        for table, address, count in requests:
            table = ReadTable(table)  # a value outside 1-4 fails here, before any I/O
            if not 0 <= unit <= 247 or not 1 <= count <= 125 or not 0 <= address <= 0xFFFF:
                raise ValueError(f"bad read: unit {unit}, address {address}, count {count}")
            checked.append((table, address, count))
        async with self._lock:
            await self._open_locked()
            return [
                await self._read_locked(unit, table, address, count, answer_within, retries)
                for table, address, count in checked
            ]

    async def _read_locked(
        self,
        unit: int,
        table: ReadTable,
        address: int,
        count: int,
        answer_within: float,
        retries: int,
    ) -> list[int]:
        for _attempt in range(retries + 1):
            self.stats.requests += 1
            try:
                values = await self._attempt(unit, table, address, count, answer_within)
            except TimeoutError:
                self.stats.timeouts += 1
                continue
            self.stats.responses += 1
            return values
        raise NoResponse(
            f"unit {unit} on {self.line} did not answer ({retries + 1} requests, "
            f"{answer_within:g} s each)"
        )

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    # -- internals (called with the lock held) ---------------------------------------------
    async def _open_locked(self) -> None:
        if self._client is not None:
            return
        wait = self._not_before - self._clock.monotonic()
        if wait > 0:
            raise DeviceUnavailable(
                f"Modbus line {self.line} is backing off after a failure", retry_after=wait
            )
        self._lost = asyncio.Event()
        client = self._make_client()
        try:
            ok = await client.connect()
        except Exception as exc:  # pymodbus/pyserial raise many kinds while opening
            ok = False
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = "no connection"
        if not ok:
            client.close()
            self._backoff = min(self._backoff_cap, max(self._backoff_initial, 2 * self._backoff))
            self._not_before = self._clock.monotonic() + self._backoff
            raise DeviceUnavailable(
                f"cannot open Modbus line {self.line} ({reason}); retrying in {self._backoff:g} s",
                retry_after=self._backoff,
            )
        self._backoff = 0.0
        self.stats.opens += 1
        self._client = client

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        common: dict[str, Any] = {
            "reconnect_delay": 0,  # one backoff policy: ours
            "timeout": _LIBRARY_TIMEOUT_S,
            "retries": 0,
            "trace_pdu": _outgoing_guard,
            "trace_connect": self._on_connect_change,
        }
        if isinstance(self.line, TcpLine):
            return AsyncModbusTcpClient(self.line.host, port=self.line.port, **common)
        return AsyncModbusSerialClient(
            self.line.port,
            baudrate=self.line.baudrate,
            bytesize=self.line.bytesize,
            parity=self.line.parity,
            stopbits=self.line.stopbits,
            **common,
        )

    def _on_connect_change(self, connected: bool) -> None:
        if not connected:
            self._lost.set()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _lose(self, reason: str) -> DeviceDisconnected:
        self.stats.losses += 1
        self._drop()
        self._not_before = self._clock.monotonic() + self._backoff_initial
        self._backoff = self._backoff_initial
        return DeviceDisconnected(f"Modbus line {self.line} lost ({reason})")

    async def _attempt(
        self, unit: int, table: ReadTable, address: int, count: int, answer_within: float
    ) -> list[int]:
        client = self._client
        assert client is not None
        if self._lost.is_set():
            raise self._lose("connection closed")
        call: Callable[..., Awaitable[ModbusPDU]] = {
            ReadTable.COILS: client.read_coils,
            ReadTable.DISCRETE_INPUTS: client.read_discrete_inputs,
            ReadTable.HOLDING_REGISTERS: client.read_holding_registers,
            ReadTable.INPUT_REGISTERS: client.read_input_registers,
        }[table]
        try:
            reply = await self._race(call(address, count=count, device_id=unit), answer_within)
        except ConnectionException as exc:
            raise self._lose(str(exc) or "not connected") from None
        except ModbusException as exc:
            # A garbled or mismatched reply: as good as none (the attempt is retried).
            raise TimeoutError(str(exc)) from None
        if reply.isError():
            self.stats.exception_replies += 1
            code = int(getattr(reply, "exception_code", 0))
            raise ExceptionReply(
                f"unit {unit} on {self.line} refused function {int(table)} at {address} "
                f"(Modbus exception {code})",
                code,
            )
        if table in (ReadTable.COILS, ReadTable.DISCRETE_INPUTS):
            return [int(bit) for bit in reply.bits[:count]]
        registers = list(reply.registers)
        if len(registers) != count:
            raise TimeoutError(f"{len(registers)} registers instead of {count}")
        return registers

    async def _race(self, request: Awaitable[_T], answer_within: float) -> _T:
        """``request``'s result, unless ``answer_within`` (injected clock) passes or the line is
        lost first (TimeoutError / DeviceDisconnected)."""
        task = asyncio.ensure_future(request)
        timer = asyncio.ensure_future(self._clock.sleep(answer_within))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait((task, timer, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (task, timer, lost):
                if not waiter.done():
                    waiter.cancel()
            await asyncio.gather(task, timer, lost, return_exceptions=True)
        if task.done() and not task.cancelled():
            return task.result()
        if lost.done() and not lost.cancelled():
            raise self._lose("connection closed")
        raise TimeoutError(f"no answer within {answer_within:g} s")


# pymodbus logs every timeout and late reply as an error; the gateway counts them instead.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
