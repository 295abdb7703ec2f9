"""SerialTransport's receive path over a real pty: one registration per connection, the
read hold-off (``coalesce_s``) and the link's loss while bytes are held back.

The hold-off is the transport's own pacing in loop time; each test waits only for I/O
under :data:`~tests.support.ptys.TIMEOUT`, never for time to pass.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.device import DeviceDisconnected
from drivers.transport.serial import SerialTransport
from tests.support.ptys import TIMEOUT


class Pty:
    """A pty pair; the test plays the device on the master."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        self.name = os.ttyname(self._slave)
        self.open = True

    def send(self, data: bytes) -> None:
        assert os.write(self.master, data) == len(data)

    def pull(self) -> None:
        if self.open:
            os.close(self.master)
            os.close(self._slave)
            self.open = False


@pytest.fixture
def pty() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.pull()


async def test_the_port_is_registered_with_the_loop_once_per_connection(
    pty: Pty, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    registered: list[int] = []
    add_reader = loop.add_reader

    def counting_add_reader(fd: int, callback: Any, *args: Any) -> None:
        registered.append(fd)
        add_reader(fd, callback, *args)

    monkeypatch.setattr(loop, "add_reader", counting_add_reader)
    async with SerialTransport(pty.name) as transport:
        for i in range(20):
            pty.send(bytes([i]))
            assert await asyncio.wait_for(transport.read(), TIMEOUT) == bytes([i])
    assert len(registered) == 1


async def test_bytes_arriving_during_the_hold_off_come_in_one_read(pty: Pty) -> None:
    async with SerialTransport(pty.name, coalesce_s=1.0) as transport:
        pty.send(b"a")
        # After a quiet spell the first bytes are not held back.
        assert await asyncio.wait_for(transport.read(), TIMEOUT) == b"a"
        pty.send(b"bc")
        pty.send(b"def")
        assert await asyncio.wait_for(transport.read(), TIMEOUT) == b"bcdef"


async def test_a_link_lost_during_the_hold_off_delivers_its_bytes_then_fails(pty: Pty) -> None:
    async with SerialTransport(pty.name, coalesce_s=1.0) as transport:
        pty.send(b"a")
        assert await asyncio.wait_for(transport.read(), TIMEOUT) == b"a"
        pty.send(b"xyz")
        # The pty passes bytes on in a kernel worker: poll (bounded) until the transport
        # has taken them; a hangup discards what the kernel still holds, not what was taken.
        for _ in range(int(TIMEOUT / 0.001)):
            if transport._rx:
                break
            await asyncio.sleep(0.001)
        pty.pull()
        assert await asyncio.wait_for(transport.read(), TIMEOUT) == b"xyz"
        with pytest.raises(DeviceDisconnected, match="end of file"):
            await asyncio.wait_for(transport.read(), TIMEOUT)
        with pytest.raises(DeviceDisconnected, match="end of file"):
            await asyncio.wait_for(transport.read(), TIMEOUT)


async def test_a_cancelled_read_in_the_hold_off_loses_nothing(pty: Pty) -> None:
    async with SerialTransport(pty.name, coalesce_s=1.0) as transport:
        pty.send(b"a")
        assert await asyncio.wait_for(transport.read(), TIMEOUT) == b"a"
        waiting = asyncio.create_task(transport.read())
        pty.send(b"kept")
        for _ in range(10):
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await asyncio.wait_for(transport.read(), TIMEOUT) == b"kept"


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan")])
def test_a_hold_off_outside_0_to_1_s_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="coalesce_s"):
        SerialTransport("/dev/ttyUSB0", coalesce_s=value)
