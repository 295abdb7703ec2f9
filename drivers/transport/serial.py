"""Serial transport: the only code in bedside-gateway that reads or writes a serial port.

:class:`SerialTransport` moves bytes and knows nothing of any protocol. ``port`` is a device
path (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``) or a pyserial URL (``socket://host:port``
for ser2net or a TCP simulator, ``loop://`` for tests), so one driver runs unchanged on a
port, through a terminal server, or against a simulator.

Lifecycle (as in httpx): ``UNOPENED -> OPEN -> CLOSED``. A transport opens at most once;
after a failed open it is closed, and a retry builds a new transport. Opening twice, or
using it unopened or after close, raises :class:`~drivers.device.TransportStateError`.

Every pyserial, termios and OS error is translated here:

* the port cannot be opened (absent, busy, permission denied, settings refused):
  :class:`~drivers.device.DeviceUnavailable`, naming the port and the reason;
* an open link fails (end of file when the cable is pulled, the device node vanished, an I/O
  error): :class:`~drivers.device.DeviceDisconnected`.

I/O never blocks the event loop. Ports with a pollable file descriptor (device paths,
``socket://``) are read and written when the loop reports the descriptor ready; other URL
handlers (``loop://``) are served by short blocking calls in a small per-transport thread
pool.

Receiving on a pollable port costs one loop callback per arrival, not a task switch: the
descriptor is registered with the loop once per connection, and its callback takes what has
arrived with one ``os.read`` into a receive buffer that :meth:`SerialTransport.read` empties
(pyserial's ``read`` would ``select()`` again, and registering per read churned epoll).
``coalesce_s`` optionally holds a reader back for that long after its previous read, so a
device writing hundreds of small packets a second wakes its reader a few dozen times a
second with several packets each; bytes arriving after a quiet spell are delivered at once,
so the hold-off only adds latency (at most ``coalesce_s``) to a stream that is already busy.
The hold-off runs in loop (real) time; the gateway leaves it off because its serial runner
stamps readings with the injected clock when they are read, and in the ward benchmark the
simulators write whole packets and 0.1 s chunks, so it saved nothing measurable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import errno
import logging
import os
import termios
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import serial

from drivers.device import DeviceDisconnected, DeviceUnavailable, TransportStateError

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: pyserial read timeout, seconds, of a fallback worker read: how long close() may wait for
#: a worker to notice, and how late a cancelled read's thread ends.
_WORKER_POLL_S: Final = 0.05
#: Seconds close() waits for fallback workers before closing the port under them anyway;
#: a worker blocked in a write to a peer that never drains must not hang shutdown.
_WORKER_JOIN_S: Final = 2.0
#: Bytes one receive callback takes from the descriptor at most (a serial port's kernel
#: buffer is 4 KiB; a socket's more).
_RX_CHUNK: Final = 16384
#: Bytes buffered for a reader that is not reading: above this the descriptor is left to
#: the kernel's buffer until the reader drains below half of it, so memory stays bounded.
_RX_HIGH_WATER: Final = 256 * 1024
_EOF_TEXT: Final = "end of file (cable pulled or device gone)"

_PARITIES: Final = frozenset("NEOMS")
_BYTESIZES: Final = frozenset({5, 6, 7, 8})
_STOPBITS: Final = frozenset({1, 1.5, 2})

# Linux value; the termios module does not export it everywhere (pyserial does the same).
_CMSPAR: Final[int] = getattr(termios, "CMSPAR", 0o10000000000)
_CSIZE_BITS: Final = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}

# errno -> what a technician should read; anything else is reported as pyserial words it.
_OPEN_REASONS: Final = {
    errno.ENOENT: "no such device (not plugged in, or wrong path)",
    errno.ENODEV: "no such device (not plugged in, or wrong path)",
    errno.ENXIO: "no such device (not plugged in, or wrong path)",
    errno.EACCES: "permission denied (the service user needs access, e.g. the dialout group)",
    errno.EPERM: "permission denied (the service user needs access, e.g. the dialout group)",
    errno.EBUSY: "port busy (another program has it open)",
    errno.EAGAIN: "port busy (another program holds its lock)",
    errno.ENOTTY: "not a serial port",
}


class TransportState(enum.Enum):
    """Where a transport is in its one-way lifecycle."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class SerialTransport:
    """One serial link, opened once, read and written asynchronously, then closed.

    ``baudrate`` is in bits per second; ``bytesize`` 5-8 data bits; ``parity`` one of
    ``N E O M S``; ``stopbits`` 1, 1.5 or 2. ``read_size`` caps the bytes one :meth:`read`
    returns. ``coalesce_s`` (0-1 s, default 0: none) is the least time between the returns
    of two reads on a pollable port while bytes keep arriving (module docstring). Invalid
    settings raise ``ValueError`` at construction (a configuration bug, not a device
    failure). Nothing touches the port before :meth:`open`.
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        read_size: int = 4096,
        coalesce_s: float = 0.0,
    ) -> None:
        if not port:
            raise ValueError("serial port must be a non-empty path or URL")
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        if bytesize not in _BYTESIZES:
            raise ValueError(f"bytesize must be 5, 6, 7 or 8, got {bytesize}")
        if parity not in _PARITIES:
            raise ValueError(f"parity must be one of N, E, O, M, S, got {parity!r}")
        if stopbits not in _STOPBITS:
            raise ValueError(f"stopbits must be 1, 1.5 or 2, got {stopbits}")
        if read_size < 1:
            raise ValueError(f"read_size must be at least 1, got {read_size}")
        if not 0.0 <= coalesce_s <= 1.0:
            raise ValueError(f"coalesce_s must be 0 to 1 seconds, got {coalesce_s}")
        self._port = port
        self._baudrate = baudrate
        self._bytesize = bytesize
        self._parity = parity
        self._stopbits = stopbits
        self._read_size = read_size
        self._coalesce_s = coalesce_s

        self._state = TransportState.UNOPENED
        self._opening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serial: Any = None  # pyserial has no type information
        # Set when the loop can poll the port; None means the worker-thread fallback.
        self._fd: int | None = None
        # Device paths open and close without blocking; URL handlers may not (socket://
        # connects with a 5 s timeout and sleeps 0.3 s in close), so they use threads.
        self._native = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._workers: set[concurrent.futures.Future[Any]] = set()
        # A fallback read whose caller was cancelled: its bytes belong to the next read().
        self._pending_read: concurrent.futures.Future[bytes] | None = None
        self._reading = False
        self._write_lock = asyncio.Lock()
        self._waiters: set[asyncio.Future[None]] = set()
        self._close_job: concurrent.futures.Future[None] | None = None
        # Receiving on a pollable port (see the module docstring): bytes the loop callback
        # took, the link failure it saw (raised once those bytes are read), the read waiting
        # for them, and the earliest loop time the next read returns (the hold-off).
        self._rx = bytearray()
        self._rx_error: DeviceDisconnected | None = None
        self._rx_waiter: asyncio.Future[None] | None = None
        self._rx_paused = False
        self._hold_until = 0.0
        self._hold_timer: asyncio.TimerHandle | None = None

    # -- description -------------------------------------------------------------------

    @property
    def port(self) -> str:
        """The device path or URL this transport opens."""
        return self._port

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def line_settings(self) -> str:
        """Configured framing for messages and the CLI, e.g. ``"9600 8N1"``."""
        stop = "1.5" if self._stopbits == 1.5 else str(int(self._stopbits))
        return f"{self._baudrate} {self._bytesize}{self._parity}{stop}"

    def __repr__(self) -> str:
        return f"<SerialTransport {self._port} {self.line_settings} {self._state.value}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open and configure the port.

        Raises :class:`DeviceUnavailable` (port absent, busy, no permission, settings
        refused or silently ignored by the port); the transport is then closed.
        """
        if self._state is not TransportState.UNOPENED or self._opening:
            raise TransportStateError(f"{self!r} cannot be opened again")
        self._opening = True
        self._loop = asyncio.get_running_loop()
        try:
            ser = self._make_serial()
            if isinstance(ser, serial.Serial):
                self._native = True
                self._open_native(ser)
            else:
                await self._open_url_handler(ser)
            self._serial = ser
            self._state = TransportState.OPEN
            if self._fd is not None:
                try:
                    self._start_receiving(self._fd)
                except DeviceUnavailable:
                    await self.close()  # releases the port it just opened
                    raise
        except BaseException:
            self._state = TransportState.CLOSED
            raise
        finally:
            self._opening = False

    async def close(self) -> None:
        """Close the port; idempotent. A read or write waiting on it fails with
        :class:`DeviceDisconnected`. Device paths close without yielding to the loop, so a
        cancelled owner closing in ``finally`` always releases the port."""
        if self._state is TransportState.CLOSED:
            if self._close_job is not None:
                await asyncio.shield(asyncio.wrap_future(self._close_job))
            return
        self._state = TransportState.CLOSED
        ser, self._serial = self._serial, None
        fd, self._fd = self._fd, None
        if fd is not None and self._loop is not None:
            # Unregister before the descriptor closes: the number may be reused at once.
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(self._closed_while_waiting())
        if ser is None:
            return
        if self._native:
            _close_quietly(ser, self._port)
            return
        assert self._executor is not None
        executor = self._executor
        self._close_job = executor.submit(
            _close_url_handler, ser, self._port, list(self._workers), self._pending_read
        )
        self._pending_read = None
        try:
            await asyncio.shield(asyncio.wrap_future(self._close_job))
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- I/O -----------------------------------------------------------------------------

    async def read(self) -> bytes:
        """Wait until at least one byte has arrived; return what is there, at most
        ``read_size`` bytes. Cancelling a waiting read loses no data.

        Raises :class:`DeviceDisconnected` when the link is lost (or closed meanwhile)
        and :class:`TransportStateError` if another read is already waiting.
        """
        ser = self._require_open()
        if self._reading:
            raise TransportStateError(f"{self!r}: read() is already in progress")
        self._reading = True
        try:
            if self._fd is not None:
                return await self._read_polled()
            return await self._read_in_worker(ser)
        finally:
            self._reading = False

    async def write(self, data: bytes) -> None:
        """Send all of ``data``. Concurrent writes go out one after another, never
        interleaved. Raises :class:`DeviceDisconnected` when the link is lost."""
        self._require_open()
        async with self._write_lock:
            ser = self._require_open()
            if not data:
                return
            if self._fd is not None:
                await self._write_polled(ser, self._fd, bytes(data))
            else:
                await self._run_in_worker(_write_blocking, ser, self._port, bytes(data))

    # -- opening -------------------------------------------------------------------------

    def _make_serial(self) -> Any:
        try:
            ser = serial.serial_for_url(self._port, do_not_open=True)
            ser.baudrate = self._baudrate
            ser.bytesize = self._bytesize
            ser.parity = self._parity
            ser.stopbits = self._stopbits
            # Zero timeouts make pyserial calls non-blocking; the loop does the waiting.
            ser.timeout = 0
            ser.write_timeout = 0
            # flock the device so two drivers never share (and garble) one port.
            ser.exclusive = True
        except (ValueError, serial.SerialException) as err:
            raise DeviceUnavailable(f"cannot open serial port {self._port}: {err}") from err
        return ser

    def _open_native(self, ser: Any) -> None:
        try:
            ser.open()
        except (serial.SerialException, OSError, termios.error, ValueError) as err:
            raise self._unavailable(err) from err
        try:
            self._fd = ser.fileno()
            self._check_line_settings(self._fd)
        except BaseException:
            self._fd = None
            _close_quietly(ser, self._port)
            raise

    async def _open_url_handler(self, ser: Any) -> None:
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="serial-transport"
        )
        self._executor = executor
        job = executor.submit(ser.open)
        try:
            await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # The connect goes on in its thread; close whatever it manages to open.
            job.add_done_callback(lambda _: _close_quietly(ser, self._port))
            executor.shutdown(wait=False)
            raise
        except (serial.SerialException, OSError, ValueError) as err:
            executor.shutdown(wait=False)
            raise self._unavailable(err) from err
        if self._state is TransportState.CLOSED:
            # close() ran while the connect was in its thread: honour it.
            await asyncio.wrap_future(executor.submit(_close_quietly, ser, self._port))
            executor.shutdown(wait=False)
            raise DeviceUnavailable(f"serial port {self._port} was closed while opening")
        try:
            fd = ser.fileno()
        except (serial.SerialException, OSError, ValueError, AttributeError):
            fd = None
        if isinstance(fd, int) and fd >= 0:
            self._fd = fd
            return
        # No descriptor to poll: worker threads read with a short timeout and write
        # without one (a zero write timeout means "fail at once" to some handlers).
        try:
            ser.timeout = _WORKER_POLL_S
            ser.write_timeout = None
        except (serial.SerialException, OSError, ValueError) as err:
            await asyncio.wrap_future(executor.submit(_close_quietly, ser, self._port))
            executor.shutdown(wait=False)
            raise self._unavailable(err) from err

    def _check_line_settings(self, fd: int) -> None:
        """Read the framing back: ptys and some USB adapters accept a parity or character
        size change without error and ignore it, which would garble every byte."""
        try:
            cflag = termios.tcgetattr(fd)[2]
        except termios.error as err:
            raise self._unavailable(err) from err
        actual = _framing_from_cflag(cflag)
        wanted = (self._bytesize, self._parity, 1 if self._stopbits == 1 else 2)
        if actual == wanted:
            return
        refused = [
            f"{name} {want}"
            for name, want, got in zip(
                ("bytesize", "parity", "stopbits"), wanted, actual, strict=True
            )
            if want != got
        ]
        raise DeviceUnavailable(
            f"cannot open serial port {self._port}: it does not support "
            f"{', '.join(refused)} (asked for {self.line_settings}, "
            f"port is set to {actual[0]}{actual[1]}{actual[2]})"
        )

    def _unavailable(self, err: BaseException) -> DeviceUnavailable:
        code = getattr(err, "errno", None)
        if code is None and isinstance(err.__context__, termios.error):
            # pyserial rewraps termios failures without their errno ("Could not configure
            # port: (25, ...)"); the errno says what went wrong.
            code = err.__context__.args[0] if err.__context__.args else None
        if isinstance(err, termios.error):
            # termios.error is not an OSError; it carries (errno, text) in args.
            return DeviceUnavailable(
                f"cannot open serial port {self._port}: it refused the line settings "
                f"{self.line_settings}: {err.args[-1] if err.args else err}"
            )
        reason = _OPEN_REASONS.get(code) if isinstance(code, int) else None
        return DeviceUnavailable(f"cannot open serial port {self._port}: {reason or err}")

    # -- reading and writing -------------------------------------------------------------

    def _require_open(self) -> Any:
        if self._state is not TransportState.OPEN:
            raise TransportStateError(f"{self!r} is not open")
        return self._serial

    def _closed_while_waiting(self) -> DeviceDisconnected:
        return DeviceDisconnected(f"serial port {self._port} was closed while in use")

    def _start_receiving(self, fd: int) -> None:
        assert self._loop is not None
        try:
            # pyserial leaves device paths non-blocking already; a socket:// handler's
            # socket too. Made sure of: a blocking os.read would freeze the loop.
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_readable)
        except (OSError, ValueError) as err:
            raise self._unavailable(err) from err

    def _on_readable(self) -> None:
        """Loop callback: take what has arrived, or note that the link has gone."""
        fd = self._fd
        if fd is None or self._loop is None:
            return
        try:
            data = os.read(fd, _RX_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            lost = f"serial port {self._port} lost: read failed: {err}"
            self._lose_link(fd, DeviceDisconnected(lost))
            return
        if not data:
            # A hung-up tty (cable pulled, pty master gone) or a closed socket reads empty.
            lost = f"serial port {self._port} lost: {_EOF_TEXT}"
            self._lose_link(fd, DeviceDisconnected(lost))
            return
        self._rx += data
        if len(self._rx) >= _RX_HIGH_WATER:
            self._loop.remove_reader(fd)
            self._rx_paused = True
        self._wake_reader()

    def _lose_link(self, fd: int, error: DeviceDisconnected) -> None:
        assert self._loop is not None
        # A dead descriptor stays readable; unregister it so the loop does not spin on it.
        self._loop.remove_reader(fd)
        self._rx_paused = True
        self._rx_error = error
        self._wake_reader(at_once=True)

    def _wake_reader(self, *, at_once: bool = False) -> None:
        """Wake a waiting read now, or when its hold-off ends (one timer, not a task
        switch per arrival)."""
        waiter = self._rx_waiter
        if waiter is None or waiter.done():
            return
        assert self._loop is not None
        if at_once or self._loop.time() >= self._hold_until:
            waiter.set_result(None)
        elif self._hold_timer is None:
            self._hold_timer = self._loop.call_at(self._hold_until, self._hold_elapsed)

    def _hold_elapsed(self) -> None:
        self._hold_timer = None
        self._wake_reader(at_once=True)

    async def _read_polled(self) -> bytes:
        assert self._loop is not None
        loop = self._loop
        while True:
            if self._rx and (
                self._rx_error is not None
                or len(self._rx) >= self._read_size
                or loop.time() >= self._hold_until
            ):
                return self._take_received()
            if not self._rx and self._rx_error is not None:
                # Kept: every later read fails the same way until the owner closes.
                raise self._rx_error
            waiter: asyncio.Future[None] = loop.create_future()
            self._rx_waiter = waiter
            self._waiters.add(waiter)
            if self._rx:
                self._wake_reader()  # bytes wait for the hold-off to end
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
                self._rx_waiter = None
                if self._hold_timer is not None:
                    self._hold_timer.cancel()
                    self._hold_timer = None
            if self._state is not TransportState.OPEN:
                raise self._closed_while_waiting()

    def _take_received(self) -> bytes:
        assert self._loop is not None
        data = bytes(self._rx[: self._read_size])
        del self._rx[: self._read_size]
        if (
            self._rx_paused
            and self._rx_error is None
            and self._fd is not None
            and len(self._rx) < _RX_HIGH_WATER // 2
        ):
            self._loop.add_reader(self._fd, self._on_readable)
            self._rx_paused = False
        self._hold_until = self._loop.time() + self._coalesce_s
        return data

    async def _write_polled(self, ser: Any, fd: int, data: bytes) -> None:
        while data:
            # Wait first: with a zero write timeout pyserial retries EAGAIN in a busy loop,
            # which would freeze the event loop; a ready descriptor takes at least a byte.
            await self._wait_writable(fd)
            try:
                written = ser.write(data)
            except (serial.SerialException, OSError) as err:
                raise _disconnected(self._port, err) from err
            data = data[int(written or 0) :]

    async def _wait_writable(self, fd: int) -> None:
        assert self._loop is not None
        loop = self._loop
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_writer(fd, wake)
        except (OSError, ValueError) as err:
            raise _disconnected(self._port, err) from err
        self._waiters.add(ready)
        try:
            await ready
        finally:
            self._waiters.discard(ready)
            # After close() the number is no longer ours: close() already unregistered it.
            if self._state is TransportState.OPEN:
                loop.remove_writer(fd)
        if self._state is not TransportState.OPEN:
            raise self._closed_while_waiting()

    async def _read_in_worker(self, ser: Any) -> bytes:
        assert self._executor is not None
        while True:
            job = self._pending_read
            if job is None or job.cancelled():
                job = self._submit(_read_blocking, ser, self._port, self._read_size)
                self._pending_read = job
            # Cancelling the wrapper cancels a queued job (nothing read yet) but leaves a
            # running one to finish; it stays pending so its bytes reach the next read().
            try:
                data = await asyncio.wrap_future(job)
            except DeviceDisconnected:
                self._pending_read = None
                raise
            self._pending_read = None
            if self._state is not TransportState.OPEN:
                raise self._closed_while_waiting()
            if data:
                return data

    async def _run_in_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        assert self._executor is not None
        job = self._executor.submit(fn, *args)
        self._workers.add(job)
        job.add_done_callback(self._workers.discard)
        return job


# -- helpers that also run in worker threads ------------------------------------------------


def _framing_from_cflag(cflag: int) -> tuple[int, str, int]:
    """(data bits, parity letter, stop bits) that a termios ``c_cflag`` describes."""
    bytesize = _CSIZE_BITS.get(cflag & termios.CSIZE, 0)
    if not cflag & termios.PARENB:
        parity = "N"
    elif cflag & _CMSPAR:
        parity = "M" if cflag & termios.PARODD else "S"
    else:
        parity = "O" if cflag & termios.PARODD else "E"
    return bytesize, parity, 2 if cflag & termios.CSTOPB else 1


def _disconnected(port: str, err: BaseException) -> DeviceDisconnected:
    text = str(err)
    if text.startswith("device reports readiness to read but returned no data"):
        # pyserial's words for end of file: the other end hung up.
        text = "end of file (cable pulled or device gone)"
    return DeviceDisconnected(f"serial port {port} lost: {text}")


def _read_blocking(ser: Any, port: str, read_size: int) -> bytes:
    """Worker-thread read: wait up to the poll timeout for one byte, then take whatever
    else has already arrived, so a waiting reader gets data as soon as it exists."""
    try:
        data: bytes = ser.read(1)
        if data and read_size > 1:
            waiting = ser.in_waiting
            if waiting:
                data += ser.read(min(waiting, read_size - 1))
    except (serial.SerialException, OSError) as err:
        raise _disconnected(port, err) from err
    return data


def _write_blocking(ser: Any, port: str, data: bytes) -> None:
    try:
        ser.write(data)
    except (serial.SerialException, OSError) as err:
        raise _disconnected(port, err) from err


def _close_quietly(ser: Any, port: str) -> None:
    # Closing is best effort: the link may already be dead, and the caller is leaving.
    try:
        ser.close()
    except Exception as err:
        _log.debug("closing serial port %s failed: %s", port, err)


def _close_url_handler(
    ser: Any,
    port: str,
    workers: list[concurrent.futures.Future[Any]],
    pending_read: concurrent.futures.Future[bytes] | None,
) -> None:
    """Close a URL-handler port from a worker thread once its other workers let go."""
    if pending_read is not None:
        workers.append(pending_read)
    if any(not w.done() for w in workers):
        for abort in ("cancel_read", "cancel_write"):
            try:
                getattr(ser, abort, lambda: None)()
            except Exception as err:
                _log.debug("%s on serial port %s failed: %s", abort, port, err)
        concurrent.futures.wait(workers, timeout=_WORKER_JOIN_S)
    _close_quietly(ser, port)


# -- what is plugged in ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A serial port the system knows, as a technician needs to identify it.

    ``by_id`` lists the stable ``/dev/serial/by-id`` names that point at ``device`` (use one
    of those in config.toml: they survive re-plugging into another USB socket).
    """

    device: str
    description: str = ""
    vid: int | None = None
    pid: int | None = None
    serial_number: str = ""
    manufacturer: str = ""
    by_id: tuple[str, ...] = ()


def list_serial_ports(by_id_dir: str = "/dev/serial/by-id") -> list[PortInfo]:
    """Serial ports the system reports (USB adapters, on-board UARTs), with their by-id names."""
    from serial.tools import list_ports

    aliases: dict[str, list[str]] = {}
    if os.path.isdir(by_id_dir):
        for name in sorted(os.listdir(by_id_dir)):
            link = os.path.join(by_id_dir, name)
            aliases.setdefault(os.path.realpath(link), []).append(link)
    ports = []
    for info in sorted(list_ports.comports(), key=lambda p: p.device):
        ports.append(
            PortInfo(
                device=info.device,
                description=info.description or "",
                vid=info.vid,
                pid=info.pid,
                serial_number=info.serial_number or "",
                manufacturer=info.manufacturer or "",
                by_id=tuple(aliases.get(os.path.realpath(info.device), ())),
            )
        )
    return ports
