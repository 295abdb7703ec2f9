"""Shared helpers for tests that drive ptys: descriptor inspection and bounded reads.

Pty data crosses a kernel work queue, so nothing here expects bytes to be there at once:
each read waits for I/O readiness (or gives the loop turns) under :data:`TIMEOUT`, a bound
on waiting, never a delay. The fixtures built on these live in ``tests/drivers/conftest.py``.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable

from drivers.simulate.pty import PtyLink
from drivers.transport.serial import SerialTransport

TIMEOUT = 5.0  # seconds: a bound on waiting for I/O, never a delay

_PROC_FDS = "/proc/self/fd"


# -- this process's descriptors --------------------------------------------------------------


def fd_targets() -> dict[int, str]:
    """What each of this process's open descriptors points at (from ``/proc/self/fd``).

    Descriptors that close while being listed (such as the one listing the directory) are
    left out.
    """
    targets: dict[int, str] = {}
    for fd in os.listdir(_PROC_FDS):
        try:
            targets[int(fd)] = os.readlink(f"{_PROC_FDS}/{fd}")
        except OSError:
            continue
    return targets


def pty_fds() -> set[str]:
    """This process's descriptors on ptys (slaves and ``/dev/ptmx``), as ``'fd -> target'``."""
    return {
        f"{fd} -> {target}"
        for fd, target in fd_targets().items()
        if target.startswith("/dev/pts/") or target == "/dev/ptmx"
    }


def fds_on(path: str) -> int:
    """How many of this process's descriptors are open on ``path``."""
    return sum(1 for target in fd_targets().values() if target == path)


# -- the driver's end of a port --------------------------------------------------------------


def open_driver_end(path: str) -> int:
    """Open a port the way a serial driver does (pyserial's flags): non-blocking, and
    without making it the controlling terminal."""
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


async def read_exactly(fd: int, n: int, *, eio_is_hangup: bool = False) -> bytes:
    """``n`` bytes from the non-blocking ``fd``, or fewer if it hangs up first.

    Waits for readability with ``loop.add_reader``; the whole read is bounded by
    :data:`TIMEOUT` (``TimeoutError`` past it). A hangup is end of file, which is how a pty's
    slave reads once its master is gone. A read racing that hangup, or a master whose slave
    closed, fails with ``EIO`` instead: with ``eio_is_hangup`` that ends the read like end
    of file, otherwise the ``OSError`` propagates.
    """
    loop = asyncio.get_running_loop()

    async def collect() -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = os.read(fd, n - len(buf))
            except BlockingIOError:
                ready = asyncio.Event()
                loop.add_reader(fd, ready.set)
                try:
                    await ready.wait()
                finally:
                    loop.remove_reader(fd)
                continue
            except OSError as err:
                if eio_is_hangup and err.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break  # hung up
            buf += chunk
        return bytes(buf)

    return await asyncio.wait_for(collect(), TIMEOUT)


# -- collecting from non-blocking readers ----------------------------------------------------


async def collect_bytes(read: Callable[[], Awaitable[bytes]], n: int) -> bytes:
    """Call ``read`` until at least ``n`` bytes came back, all within :data:`TIMEOUT`.

    ``read`` may return less than asked, or nothing, but must await something each call,
    so the loop keeps turning and the bound can fire.
    """

    async def collect() -> bytes:
        buf = b""
        while len(buf) < n:
            buf += await read()
        return buf

    return await asyncio.wait_for(collect(), TIMEOUT)


async def device_read(link: PtyLink, n: int) -> bytes:
    """What the driver sent, as seen by the simulator on ``link``, once ``n`` bytes arrived.

    :meth:`PtyLink.read` never blocks, so this gives the loop a turn after each call.
    """

    async def read_turn() -> bytes:
        data = link.read()
        await asyncio.sleep(0)
        return data

    return await collect_bytes(read_turn, n)


async def read_n(transport: SerialTransport, n: int) -> bytes:
    """Read until ``n`` bytes arrived; the transport returns what is there, maybe less."""
    return await collect_bytes(transport.read, n)
