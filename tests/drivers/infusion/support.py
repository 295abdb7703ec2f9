"""Helpers shared by the Modbus pump tests (driver, transport, simulator, integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.simulate.pump import PumpServer
    from drivers.transport.modbus import ModbusTransport

TIMEOUT = 5.0  # seconds: a bound on waiting for I/O through sockets and ptys, never a delay


async def eventually(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Give the loop turns (and the kernel time to move bytes) until ``predicate`` holds,
    failing after :data:`TIMEOUT` real seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {TIMEOUT} s")
        await asyncio.sleep(0.002)


def line_settled(transport: ModbusTransport, server: PumpServer) -> bool:
    """Every request on the line reached the simulator and was answered, except perhaps
    the latest, when it went to a pump that chose silence (only the clock ends that one)."""
    s = transport.stats
    sent = server.requests
    if s.requests != len(sent):
        return False
    done = s.responses + s.timeouts + s.exception_replies
    if done == s.requests:
        return True
    last = server.pumps.get(sent[-1][0]) if sent else None
    return done == s.requests - 1 and (last is None or last.model.silent)
