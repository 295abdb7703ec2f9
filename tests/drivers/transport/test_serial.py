"""SerialTransport against real ports: pty pairs, a socat-made pair, a TCP socket, loop://.

No test waits for time to pass: each waits for I/O readiness under a bounded timeout.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import socket
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers.device import DeviceDisconnected, DeviceUnavailable, TransportStateError
from drivers.simulate.pty import PtyLink
from drivers.transport.serial import SerialTransport, TransportState
from tests.support.ptys import TIMEOUT, read_exactly, read_n

# -- helpers ---------------------------------------------------------------------------------


class Pty:
    """A pty pair; the test plays the device on the non-blocking master."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.name = os.ttyname(self._slave)
        self.master_open = True

    def pull(self) -> None:
        """Unplug: close both ends of the pty held by the test."""
        if self.master_open:
            os.close(self.master)
            os.close(self._slave)
            self.master_open = False

    def send(self, data: bytes) -> None:
        assert os.write(self.master, data) == len(data)

    async def receive(self, n: int) -> bytes:
        return await read_exactly(self.master, n)


@pytest.fixture
def pty() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.pull()


async def settle() -> None:
    """Let other tasks run until they block (loop turns, not time)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- reading and writing over a pty ----------------------------------------------------------


async def test_reads_what_the_device_sends(pty: Pty) -> None:
    async with SerialTransport(pty.name) as transport:
        pty.send(b"\x01\x02 SpO2 97\r\n")
        assert await read_n(transport, 12) == b"\x01\x02 SpO2 97\r\n"


async def test_read_returns_at_most_read_size(pty: Pty) -> None:
    async with SerialTransport(pty.name, read_size=4) as transport:
        pty.send(b"0123456789")
        chunks: list[bytes] = []
        while sum(len(c) for c in chunks) < 10:
            chunks.append(await asyncio.wait_for(transport.read(), TIMEOUT))
        assert b"".join(chunks) == b"0123456789"
        assert all(1 <= len(c) <= 4 for c in chunks)


async def test_writes_reach_the_device(pty: Pty) -> None:
    async with SerialTransport(pty.name) as transport:
        await transport.write(b"\x02FMT 7\x03")
        assert await pty.receive(7) == b"\x02FMT 7\x03"
        await transport.write(b"")  # nothing to send is not an error


async def test_write_larger_than_the_pty_buffer_arrives_whole(pty: Pty) -> None:
    # Far beyond the pty's buffer: the transport must wait for room, not spin or drop.
    payload = bytes(range(256)) * 400
    async with SerialTransport(pty.name) as transport:
        receiver = asyncio.create_task(pty.receive(len(payload)))
        await asyncio.wait_for(transport.write(payload), TIMEOUT)
        assert await receiver == payload


async def test_read_waits_without_blocking_the_loop_and_is_cancellable(pty: Pty) -> None:
    async with SerialTransport(pty.name) as transport:
        waiting = asyncio.create_task(transport.read())
        await settle()
        assert not waiting.done()  # nothing sent yet, and the loop still runs this test
        await cancel_and_wait(waiting)

        # A cancelled read leaves the transport usable and loses nothing.
        pty.send(b"after")
        assert await read_n(transport, 5) == b"after"

        reader = asyncio.create_task(transport.read())
        await settle()
        assert not reader.done()
        pty.send(b"x")
        assert await asyncio.wait_for(reader, TIMEOUT) == b"x"


async def test_two_concurrent_reads_are_a_state_error(pty: Pty) -> None:
    async with SerialTransport(pty.name) as transport:
        first = asyncio.create_task(transport.read())
        await settle()
        with pytest.raises(TransportStateError, match="already in progress"):
            await transport.read()
        await cancel_and_wait(first)


async def test_closing_wakes_a_waiting_read(pty: Pty) -> None:
    transport = SerialTransport(pty.name)
    await transport.open()
    reader = asyncio.create_task(transport.read())
    await settle()
    await transport.close()
    with pytest.raises(DeviceDisconnected, match="closed while in use"):
        await asyncio.wait_for(reader, TIMEOUT)


# -- unplug and replug -----------------------------------------------------------------------


async def test_pulled_cable_fails_a_waiting_read_with_disconnected(pty: Pty) -> None:
    async with SerialTransport(pty.name) as transport:
        reader = asyncio.create_task(transport.read())
        await settle()
        pty.pull()
        lost = rf"{re.escape(pty.name)}.*end of file"
        with pytest.raises(DeviceDisconnected, match=lost) as caught:
            await asyncio.wait_for(reader, TIMEOUT)
        assert not isinstance(caught.value.__cause__, DeviceDisconnected)
        assert transport.state is TransportState.OPEN  # the owner decides when to close


async def test_pulled_cable_fails_the_next_read_and_write(pty: Pty) -> None:
    async with SerialTransport(pty.name) as transport:
        pty.pull()
        with pytest.raises(DeviceDisconnected, match=re.escape(pty.name)):
            await asyncio.wait_for(transport.read(), TIMEOUT)
        with pytest.raises(DeviceDisconnected, match=re.escape(pty.name)):
            await asyncio.wait_for(transport.write(b"hello?"), TIMEOUT)


async def test_replug_a_new_transport_on_the_same_link_reads_the_new_pty(
    link: PtyLink,
) -> None:
    first = SerialTransport(link.link_path)
    await first.open()
    link.unplug()
    with pytest.raises(DeviceDisconnected):
        await asyncio.wait_for(first.read(), TIMEOUT)
    await first.close()

    # The cable is back, possibly on another /dev/pts number, behind the same path.
    link.plug()
    async with SerialTransport(link.link_path) as second:
        assert link.write(b"back") == 4
        assert await read_n(second, 4) == b"back"


# -- opening failures ------------------------------------------------------------------------


async def test_missing_port_is_unavailable_and_names_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB7")
    transport = SerialTransport(missing)
    with pytest.raises(DeviceUnavailable, match=re.escape(f"{missing}: no such device")) as caught:
        await transport.open()
    assert not isinstance(caught.value, serial.SerialException)
    assert transport.state is TransportState.CLOSED


async def test_second_opener_of_a_port_finds_it_busy(pty: Pty) -> None:
    async with SerialTransport(pty.name):
        with pytest.raises(DeviceUnavailable, match=re.escape(f"{pty.name}: port busy")):
            await SerialTransport(pty.name).open()


async def test_a_file_that_is_not_a_tty_is_unavailable(tmp_path: Path) -> None:
    not_a_port = tmp_path / "capture.bin"
    not_a_port.write_bytes(b"")
    with pytest.raises(DeviceUnavailable, match=re.escape(f"{not_a_port}: not a serial port")):
        await SerialTransport(str(not_a_port)).open()


async def test_unknown_url_scheme_is_unavailable() -> None:
    with pytest.raises(DeviceUnavailable, match=r"bogus://x.*not known"):
        await SerialTransport("bogus://x").open()


class _RefusingPort:
    """Stands in for a pyserial port whose open() fails with an OS error."""

    def __init__(self, code: int) -> None:
        self._code = code
        self.is_open = False

    def open(self) -> None:
        raise serial.SerialException(
            self._code, f"could not open port /dev/ttyUSB0: [Errno {self._code}]"
        )

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.EBUSY, "port busy"),
        (errno.ENOENT, "no such device"),
        (errno.EIO, r"\[Errno 5\]"),  # no friendly words: pyserial's text stands
    ],
)
async def test_open_errors_are_worded_for_a_technician(
    monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    monkeypatch.setattr(serial, "serial_for_url", lambda *a, **k: _RefusingPort(code))
    with pytest.raises(DeviceUnavailable, match=f"/dev/ttyUSB0: {reason}"):
        await SerialTransport("/dev/ttyUSB0").open()


# -- line settings ---------------------------------------------------------------------------


async def test_line_settings_reach_pyserial_and_a_pty_ignoring_parity_is_refused(
    pty: Pty, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []
    real = serial.serial_for_url

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(serial, "serial_for_url", recording)
    transport = SerialTransport(pty.name, baudrate=19200, bytesize=7, parity="E", stopbits=2)
    # A pty accepts the settings call but keeps 8 bits without parity; reading the
    # framing back turns that silent corruption into a clear refusal.
    with pytest.raises(DeviceUnavailable, match=r"bytesize 7, parity E .*19200 7E2") as caught:
        await transport.open()
    assert pty.name in str(caught.value)
    (port,) = made
    assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (19200, 7, "E", 2)
    assert port.exclusive is True
    assert not port.is_open  # refused ports are closed again


@pytest.mark.parametrize(("parity", "name"), [("O", "parity O"), ("M", "parity M")])
async def test_a_pty_refuses_each_parity(pty: Pty, parity: str, name: str) -> None:
    with pytest.raises(DeviceUnavailable, match=name):
        await SerialTransport(pty.name, parity=parity).open()


async def test_two_stop_bits_work_on_a_pty(pty: Pty) -> None:
    async with SerialTransport(pty.name, baudrate=115200, stopbits=2) as transport:
        assert transport.line_settings == "115200 8N2"
        pty.send(b"ok")
        assert await read_n(transport, 2) == b"ok"


@pytest.mark.parametrize(
    "settings",
    [
        {"parity": "X"},
        {"bytesize": 9},
        {"stopbits": 3},
        {"baudrate": 0},
        {"read_size": 0},
    ],
)
def test_invalid_settings_fail_at_construction(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SerialTransport("/dev/ttyUSB0", **settings)


# -- lifecycle -------------------------------------------------------------------------------


async def test_lifecycle_is_one_way(pty: Pty) -> None:
    transport = SerialTransport(pty.name)
    assert transport.state is TransportState.UNOPENED
    with pytest.raises(TransportStateError):
        await transport.read()
    with pytest.raises(TransportStateError):
        await transport.write(b"x")

    await transport.open()
    assert transport.state is TransportState.OPEN
    with pytest.raises(TransportStateError, match="cannot be opened again"):
        await transport.open()

    await transport.close()
    await transport.close()  # idempotent
    assert transport.state is TransportState.CLOSED
    with pytest.raises(TransportStateError):
        await transport.read()
    with pytest.raises(TransportStateError):
        await transport.write(b"x")
    with pytest.raises(TransportStateError):
        await transport.open()


async def test_a_failed_open_cannot_be_retried_on_the_same_transport(tmp_path: Path) -> None:
    transport = SerialTransport(str(tmp_path / "absent"))
    with pytest.raises(DeviceUnavailable):
        await transport.open()
    with pytest.raises(TransportStateError):
        await transport.open()
    await transport.close()


async def test_async_with_closes_on_error(pty: Pty) -> None:
    with pytest.raises(KeyError):
        async with SerialTransport(pty.name) as transport:
            raise KeyError("boom")
    assert transport.state is TransportState.CLOSED


async def test_closing_an_unopened_transport_is_fine() -> None:
    transport = SerialTransport("/dev/does-not-matter")
    await transport.close()
    assert transport.state is TransportState.CLOSED


# -- socket:// URL (ser2net, TCP simulators) -------------------------------------------------


@pytest.fixture
async def tcp_device() -> AsyncIterator[tuple[str, asyncio.Queue[Any]]]:
    """A local TCP server; each accepted connection arrives on the queue as (reader, writer)."""
    conns: asyncio.Queue[Any] = asyncio.Queue()
    accepted: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await conns.put((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"socket://127.0.0.1:{port}", conns
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_socket_url_reads_writes_and_sees_the_peer_hang_up(
    tcp_device: tuple[str, asyncio.Queue[Any]],
) -> None:
    url, conns = tcp_device
    transport = SerialTransport(url)
    await asyncio.wait_for(transport.open(), TIMEOUT)
    try:
        reader, writer = await asyncio.wait_for(conns.get(), TIMEOUT)
        await transport.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"hello"

        writer.write(b"world")
        await writer.drain()
        assert await read_n(transport, 5) == b"world"

        writer.close()
        await writer.wait_closed()
        with pytest.raises(DeviceDisconnected, match=re.escape(f"{url} lost")):
            await read_n(transport, 1)
    finally:
        await transport.close()
    assert transport.state is TransportState.CLOSED


async def test_close_during_a_threaded_open_wins(
    tcp_device: tuple[str, asyncio.Queue[Any]],
) -> None:
    url, conns = tcp_device
    transport = SerialTransport(url)
    opening = asyncio.create_task(transport.open())
    await asyncio.sleep(0)  # open() now waits for its connect thread
    await transport.close()
    with pytest.raises(DeviceUnavailable, match="closed while opening"):
        await asyncio.wait_for(opening, TIMEOUT)
    assert transport.state is TransportState.CLOSED
    # The connection the thread made was closed, not leaked: the peer sees end of file.
    reader, _ = await asyncio.wait_for(conns.get(), TIMEOUT)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""


async def test_socket_url_with_nobody_listening_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"socket://127.0.0.1:{port}"
    with pytest.raises(DeviceUnavailable, match=rf"{re.escape(url)}.*refused"):
        await asyncio.wait_for(SerialTransport(url).open(), TIMEOUT)


# -- loop:// (no descriptor: the worker-thread fallback) -------------------------------------


async def test_loop_url_echoes_through_worker_threads() -> None:
    async with SerialTransport("loop://") as transport:
        await transport.write(b"ping")
        assert await read_n(transport, 4) == b"ping"


async def test_loop_url_cancelled_read_loses_no_bytes() -> None:
    async with SerialTransport("loop://") as transport:
        waiting = asyncio.create_task(transport.read())
        await settle()
        await cancel_and_wait(waiting)
        # The cancelled read's thread may still be polling: whatever it picks up must
        # reach the next read.
        await transport.write(b"abc")
        assert await read_n(transport, 3) == b"abc"


async def test_loop_url_close_wakes_a_waiting_read() -> None:
    transport = SerialTransport("loop://")
    await transport.open()
    reader = asyncio.create_task(transport.read())
    await settle()
    await asyncio.wait_for(transport.close(), TIMEOUT)
    with pytest.raises(DeviceDisconnected, match="closed while in use"):
        await asyncio.wait_for(reader, TIMEOUT)


# -- a second real pty source: socat ---------------------------------------------------------


@pytest.fixture
async def socat_pair(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: .ci/run installs it (apt-get install socat)")
    a, b = str(tmp_path / "ttyA"), str(tmp_path / "ttyB")
    proc = await asyncio.create_subprocess_exec(
        "socat",
        "-d",
        "-d",
        f"pty,raw,echo=0,link={a}",
        f"pty,raw,echo=0,link={b}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        # socat reports this once both ptys and their links exist.
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = await proc.stderr.readline()
                assert line, "socat exited before creating the ptys"
                if b"starting data transfer loop" in line:
                    break
        assert _is_link(a) and _is_link(b)
        yield a, b
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()


def _is_link(path: str) -> bool:
    return os.path.islink(path)


async def test_socat_pty_pair_carries_bytes_both_ways(socat_pair: tuple[str, str]) -> None:
    a, b = socat_pair
    async with SerialTransport(a) as left, SerialTransport(b) as right:
        await left.write(b"\x02frame-1\x03")
        assert await read_n(right, 9) == b"\x02frame-1\x03"
        await right.write(b"ack")
        assert await read_n(left, 3) == b"ack"
