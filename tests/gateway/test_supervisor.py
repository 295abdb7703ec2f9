"""Supervisor: restart with capped exponential backoff and jitter, isolation, stop, sd_notify."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
from pathlib import Path

import pytest

from drivers.clock import ManualClock
from drivers.device import DeviceUnavailable
from gateway.supervisor import Backoff, EssentialTaskFailed, SdNotify, Supervisor, TaskState


def test_backoff_doubles_and_caps() -> None:
    policy = Backoff(initial=0.5, factor=2.0, cap=30.0, jitter=0.0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_backoff_stays_at_the_cap_after_days_of_failures() -> None:
    # An unplugged device fails every 5 s; 2**1025 would overflow a float after an hour.
    policy = Backoff(initial=0.5, factor=2.0, cap=5.0, jitter=0.0)
    assert policy.delay(2000, random.Random()) == 5.0
    assert policy.delay(10**9, random.Random()) == 5.0


def test_jitter_stays_within_its_band_and_varies() -> None:
    policy = Backoff(initial=1.0, factor=2.0, cap=30.0, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100


def test_retry_after_is_a_lower_bound() -> None:
    policy = Backoff(initial=0.5, jitter=0.0)
    assert policy.delay(0, random.Random(), retry_after=12.0) == 12.0


async def _until(predicate: object, clock: ManualClock | None = None, turns: int = 200) -> None:
    for _ in range(turns):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_failing_task_restarts_on_backoff_schedule_of_the_injected_clock() -> None:
    clock = ManualClock()
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(clock.monotonic())
        raise DeviceUnavailable("/dev/ttyUSB9: no such file")

    sup = Supervisor(
        clock, backoff=Backoff(initial=1.0, factor=2.0, cap=8.0, jitter=0.0), notify=SdNotify()
    )
    sup.add("device:a", flaky)
    runner = asyncio.create_task(sup.run(handle_signals=False))
    await _until(lambda: len(starts) == 1)
    for _ in range(6):
        deadline = clock.next_deadline()
        assert deadline is not None
        await clock.advance(deadline - clock.monotonic())
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    health = sup.health["device:a"]
    assert health.state is TaskState.BACKING_OFF
    assert health.restarts == 6
    assert "no such file" in health.last_error
    sup.stop()
    await asyncio.wait_for(runner, 5)


async def test_a_crashing_device_does_not_affect_another() -> None:
    clock = ManualClock()
    healthy_ticks = 0

    async def crasher() -> None:
        raise ZeroDivisionError("bug in a driver")

    async def steady() -> None:
        nonlocal healthy_ticks
        while True:
            await clock.sleep(1.0)
            healthy_ticks += 1

    sup = Supervisor(clock, rng=random.Random(3), notify=SdNotify())
    sup.add("device:bad", crasher)
    sup.add("device:good", steady)
    runner = asyncio.create_task(sup.run(handle_signals=False))
    await _until(lambda: sup.ready.is_set())
    for _ in range(20):
        await clock.advance(1.0)
    assert healthy_ticks == 20
    assert sup.health["device:bad"].restarts >= 4
    assert sup.health["device:good"].state is TaskState.RUNNING
    assert not runner.done()
    sup.stop()
    await asyncio.wait_for(runner, 5)


async def test_recovery_resets_the_backoff() -> None:
    clock = ManualClock()
    attempts = 0
    sup: Supervisor

    async def device() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 4:
            sup.note_recovered("device:a")  # the link came up, then dropped again
        raise DeviceUnavailable("gone")

    sup = Supervisor(clock, backoff=Backoff(initial=1.0, jitter=0.0, cap=60), notify=SdNotify())
    sup.add("device:a", device)
    runner = asyncio.create_task(sup.run(handle_signals=False))
    delays = []
    await _until(lambda: attempts == 1)
    for _ in range(5):
        deadline = clock.next_deadline()
        assert deadline is not None
        delays.append(deadline - clock.monotonic())
        await clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 1.0, 2.0]
    sup.stop()
    await asyncio.wait_for(runner, 5)


async def test_essential_task_failure_stops_the_gateway() -> None:
    clock = ManualClock()

    async def page() -> None:
        raise RuntimeError("page died")

    async def device() -> None:
        await asyncio.Event().wait()

    sup = Supervisor(clock, notify=SdNotify())
    sup.add("web", page, essential=True)
    sup.add("device:a", device)
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(sup.run(handle_signals=False), 5)
    assert caught.group_contains(EssentialTaskFailed)


async def test_sigterm_stops_every_task_and_notifies(tmp_path: Path) -> None:
    clock = ManualClock()
    cancelled: list[str] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.setblocking(False)

    def make(name: str):  # type: ignore[no-untyped-def]
        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.append(name)

        return forever

    notify = SdNotify(address=str(tmp_path / "notify"), watchdog_usec=2_000_000)
    sup = Supervisor(clock, notify=notify)
    for name in ("device:a", "device:b"):
        sup.add(name, make(name))
    sup.add("web", make("web"), essential=True)
    runner = asyncio.create_task(sup.run())
    await _until(lambda: sup.ready.is_set())
    await clock.advance(1.0)  # one watchdog period (half of WATCHDOG_USEC)
    os.kill(os.getpid(), 15)
    await asyncio.wait_for(runner, 5)
    assert sorted(cancelled) == ["device:a", "device:b", "web"]
    messages = drain_datagrams(listener)
    listener.close()
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in messages
    assert messages[-1] == "STOPPING=1"


def drain_datagrams(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def test_watchdog_pings_each_period_and_goes_silent_when_an_essential_task_dies(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.setblocking(False)
    sup = Supervisor(
        clock, notify=SdNotify(address=str(tmp_path / "notify"), watchdog_usec=2_000_000)
    )
    page_dies = asyncio.Event()

    async def page() -> None:
        await page_dies.wait()
        raise RuntimeError("page crashed")

    async def device() -> None:
        await asyncio.Event().wait()

    sup.add("web", page, essential=True)
    sup.add("device:a", device)
    runner = asyncio.create_task(sup.run(handle_signals=False))
    await _until(lambda: sup.ready.is_set())
    for _ in range(3):
        await clock.advance(1.0)
    assert drain_datagrams(listener).count("WATCHDOG=1") == 3
    assert sup.healthy(late=0.0, interval=1.0)
    assert not sup.healthy(late=1.5, interval=1.0)  # the loop missed a whole period
    page_dies.set()
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(runner, 5)
    assert not sup.essential_tasks_alive()
    assert "WATCHDOG=1" not in drain_datagrams(listener)
    listener.close()


async def test_tasks_that_ignore_cancellation_are_named_and_do_not_block_stop() -> None:
    clock = ManualClock()
    stuck_names: list[list[str]] = []

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()  # swallows the first cancellation

    sup = Supervisor(clock, notify=SdNotify(), on_stuck=stuck_names.append)
    sup.add("device:stubborn", stubborn)
    runner = asyncio.create_task(sup.run(handle_signals=False))
    await _until(lambda: sup.ready.is_set())
    sup.stop()
    await _until(lambda: clock.sleepers == 1)  # the stop timer is running
    await clock.advance(4.9)
    assert stuck_names == []
    await clock.advance(0.2)  # STOP_TIMEOUT passed
    assert stuck_names == [["device:stubborn"]]
    # In production on_stuck exits the process; here the test tidies up instead.
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 5)


def test_sd_notify_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@abstract")
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notify = SdNotify.from_environment()
    assert notify.enabled and notify.watchdog_interval == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert SdNotify.from_environment().watchdog_interval is None
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not SdNotify.from_environment().enabled


def test_adding_a_task_twice_is_an_error() -> None:
    sup = Supervisor(ManualClock(), notify=SdNotify())

    async def noop() -> None:
        return None

    sup.add("x", noop)
    with pytest.raises(ValueError):
        sup.add("x", noop)
