"""sd_notify as systemd sees it, on a real datagram socket: what tests/gateway/test_supervisor.py
does not already cover (READY, periodic WATCHDOG, STOPPING, silence after an essential task
died are there). Here: the environment systemd sets (abstract socket, WATCHDOG_USEC), and the
watchdog withheld while the loop runs late, then resumed."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from drivers.clock import SystemClock
from gateway.supervisor import SdNotify, Supervisor


def receive_all(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def poll(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    """Bounded wait for work another party does in real time (the loop, the kernel)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_abstract_socket_and_watchdog_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"bedside-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)  # what systemd uses: NOTIFY_SOCKET=@...
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a ping every 0.05 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    sup = Supervisor(SystemClock())
    assert sup._notify.watchdog_interval == 0.05
    sup.add("web", asyncio.Event().wait, essential=True)
    runner = asyncio.create_task(sup.run(handle_signals=False))
    received: list[str] = []

    def pinged() -> bool:
        received.extend(receive_all(listener))
        return "WATCHDOG=1" in received

    try:
        await poll(pinged)
    finally:
        sup.stop()
        await asyncio.wait_for(runner, 5)
    received.extend(receive_all(listener))
    listener.close()
    assert received[0] == "READY=1\nSTATUS=running"
    assert received[-1] == "STOPPING=1"


async def test_watchdog_is_withheld_while_the_loop_is_late_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.setblocking(False)
    notify = SdNotify(address=str(path), watchdog_usec=200_000)  # ping every 0.1 s
    sup = Supervisor(SystemClock(), notify=notify)
    sup.add("web", asyncio.Event().wait, essential=True)
    received: list[str] = []

    def pings() -> int:
        received.extend(receive_all(listener))
        return received.count("WATCHDOG=1")

    with structlog.testing.capture_logs() as logs:
        runner = asyncio.create_task(sup.run(handle_signals=False))
        try:
            await poll(lambda: pings() >= 1)
            before = pings()
            # Hang the loop for three watchdog intervals: the next wake is late by more than
            # an interval (a lower bound the blocking call guarantees), so no ping is sent.
            time.sleep(0.35)  # noqa: ASYNC251 - hanging the loop is the point
            await poll(lambda: any(e["event"] == "watchdog withheld" for e in logs))
            withheld = next(e for e in logs if e["event"] == "watchdog withheld")
            assert withheld["late_seconds"] >= 0.1
            # Once the loop keeps time again, the pings come back.
            await poll(lambda: pings() > before)
        finally:
            sup.stop()
            await asyncio.wait_for(runner, 5)
    listener.close()
    assert received[0].startswith("READY=1")
