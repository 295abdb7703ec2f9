"""Owns every long-running task of the daemon.

One asyncio loop, one :class:`asyncio.TaskGroup`. Two kinds of task:

* **restartable** (device drivers, simulators): when one fails it is restarted after an
  exponential backoff with jitter, capped; a failure never reaches the task group, so one
  device can never take down another, the twin or the page. Expected failures
  (:class:`~drivers.device.DeviceError`) are logged once when failing starts and once on
  recovery; unexpected ones are logged with a traceback every time.
* **essential** (twin consumer, web server): if one fails the daemon stops, because a gateway
  that silently lost its page or its twin is worse than one systemd restarts.

``stop()`` (wired to SIGTERM/SIGINT) cancels everything; tasks are expected to finish within
:data:`STOP_TIMEOUT`.

When ``NOTIFY_SOCKET`` is set the supervisor speaks the sd_notify protocol: ``READY=1`` once
all tasks are started, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while the loop is healthy
(it keeps its own schedule and every essential task is alive), and ``STOPPING=1`` on stop.
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.clock import Clock
from drivers.device import DeviceError

log = structlog.get_logger(__name__)

#: Seconds the daemon allows its tasks to finish after SIGTERM.
STOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits ``initial * factor**n`` up to ``cap``.

    The wait is multiplied by a uniform factor in [1 - jitter, 1], so devices sharing a bus
    or a failure cause do not retry in lockstep. ``healthy_after`` seconds of uninterrupted
    running reset the attempt count.
    """

    initial: float = 0.5
    factor: float = 2.0
    # A technician who re-plugs a cable expects data back within seconds; a retry of a
    # local port is cheap, so the cap is short.
    cap: float = 5.0
    jitter: float = 0.5
    healthy_after: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        # factor ** attempt overflows a float after ~1000 attempts (an unplugged device
        # fails every 5 s: about an hour): past 64 attempts the cap has long been reached.
        base = min(self.cap, self.initial * self.factor ** min(max(0, attempt), 64))
        wait = base * (1.0 - self.jitter * rng.random())
        return max(wait, retry_after or 0.0)


class TaskState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


@dataclass(slots=True)
class TaskHealth:
    """What the supervisor knows about one task, for the API and the CLI."""

    name: str
    essential: bool
    state: TaskState = TaskState.STARTING
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str = ""
    next_attempt_in: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "essential": self.essential,
            "state": self.state.value,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error,
        }


class EssentialTaskFailed(RuntimeError):
    pass


@dataclass
class _Spec:
    name: str
    factory: Callable[[], Awaitable[None]]
    essential: bool
    backoff: Backoff


class Supervisor:
    def __init__(
        self,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        notify: SdNotify | None = None,
        on_stuck: Callable[[list[str]], None] = lambda _names: os._exit(1),
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff()
        self._specs: list[_Spec] = []
        self.health: dict[str, TaskHealth] = {}
        self._notify = notify if notify is not None else SdNotify.from_environment()
        self._stopping = asyncio.Event()
        self._group_tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()
        self._on_stuck = on_stuck

    def add(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        essential: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        """Register a task before :meth:`run`. ``factory`` makes a fresh coroutine each start."""
        if name in self.health:
            raise ValueError(f"task {name!r} added twice")
        self._specs.append(_Spec(name, factory, essential, backoff or self._backoff))
        self.health[name] = TaskHealth(name, essential)

    def stop(self) -> None:
        """Ask every task to stop; :meth:`run` returns once they have."""
        self._stopping.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            async with asyncio.TaskGroup() as group:
                for spec in self._specs:
                    runner = self._run_essential if spec.essential else self._run_restartable
                    self._group_tasks.append(group.create_task(runner(spec), name=spec.name))
                if self._notify.enabled:
                    self._group_tasks.append(group.create_task(self._watchdog(), name="watchdog"))
                group.create_task(self._stop_when_asked(), name="stopper")
                await asyncio.sleep(0)
                self.ready.set()
                self._notify.send("READY=1\nSTATUS=running")
                log.info("gateway ready", tasks=len(self._specs))
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            for health in self.health.values():
                health.state = TaskState.STOPPED

    def _on_signal(self, sig: int) -> None:
        log.info("stop requested", signal=signal.Signals(sig).name)
        self.stop()

    async def _stop_when_asked(self) -> None:
        await self._stopping.wait()
        self._notify.send("STOPPING=1")
        for task in self._group_tasks:
            task.cancel()
        # asyncio cannot force a task that swallows its cancellation: give every task
        # STOP_TIMEOUT seconds, then name the stuck ones and leave anyway.
        timer = asyncio.ensure_future(self._clock.sleep(STOP_TIMEOUT))
        all_done = asyncio.ensure_future(asyncio.wait(self._group_tasks))
        await asyncio.wait((timer, all_done), return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        all_done.cancel()
        stuck = [t for t in self._group_tasks if not t.done()]
        if stuck:
            names = sorted(t.get_name() for t in stuck)
            log.error("tasks did not stop in time; exiting regardless", tasks=names)
            self._on_stuck(names)

    async def _run_essential(self, spec: _Spec) -> None:
        health = self.health[spec.name]
        health.state = TaskState.RUNNING
        try:
            await spec.factory()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            health.last_error = _describe(exc)
            log.exception("essential task failed; stopping the gateway", task=spec.name)
            raise EssentialTaskFailed(spec.name) from exc
        if not self._stopping.is_set():
            health.last_error = "returned unexpectedly"
            log.error("essential task ended; stopping the gateway", task=spec.name)
            raise EssentialTaskFailed(spec.name)

    async def _run_restartable(self, spec: _Spec) -> None:
        health = self.health[spec.name]
        while True:
            health.state = TaskState.RUNNING
            started = self._clock.monotonic()
            error: BaseException | None = None
            try:
                await spec.factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            ran_for = self._clock.monotonic() - started
            if ran_for >= spec.backoff.healthy_after:
                health.failures_in_a_row = 0
            self._record_failure(spec, health, error)
            retry_after = error.retry_after if isinstance(error, DeviceError) else None
            delay = spec.backoff.delay(health.failures_in_a_row - 1, self._rng, retry_after)
            health.state = TaskState.BACKING_OFF
            health.next_attempt_in = delay
            await self._clock.sleep(delay)
            health.next_attempt_in = None
            health.restarts += 1

    def _record_failure(self, spec: _Spec, health: TaskHealth, error: BaseException | None) -> None:
        health.failures_in_a_row += 1
        description = _describe(error) if error is not None else "ended"
        first = health.failures_in_a_row == 1
        health.last_error = description
        if error is None or isinstance(error, DeviceError):
            # Expected: log when failing starts, not on every retry.
            if first:
                log.warning(
                    "task failing; retrying with backoff", task=spec.name, error=description
                )
        else:
            log.error("task crashed; restarting", task=spec.name, error=description, exc_info=error)

    def note_recovered(self, name: str) -> None:
        """Called by a task when it is healthy again (e.g. a device link came up)."""
        health = self.health[name]
        if health.failures_in_a_row:
            log.info("task recovered", task=name, after_failures=health.failures_in_a_row)
        health.failures_in_a_row = 0
        health.last_error = ""

    def essential_tasks_alive(self) -> bool:
        return all(
            not t.done()
            for t, spec in zip(self._group_tasks, self._specs, strict=False)
            if spec.essential
        )

    async def _watchdog(self) -> None:
        interval = self._notify.watchdog_interval
        if interval is None:
            return
        while True:
            before = self._clock.monotonic()
            await self._clock.sleep(interval)
            late = self._clock.monotonic() - before - interval
            if self.healthy(late, interval):
                self._notify.send("WATCHDOG=1")
            else:
                log.error("watchdog withheld", late_seconds=round(late, 3))

    def healthy(self, late: float, interval: float) -> bool:
        """Whether to ping the watchdog.

        A loop that woke ``late`` seconds after its own schedule by a whole interval or
        more, or a dead essential task, is not healthy: stay silent and let systemd act.
        """
        return late < interval and self.essential_tasks_alive()

    def as_dict(self) -> list[dict[str, Any]]:
        return [h.as_dict() for h in self.health.values()]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass
class SdNotify:
    """Minimal sd_notify(3) client: datagrams to ``$NOTIFY_SOCKET``."""

    address: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_environment(cls) -> SdNotify:
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC")
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        watchdog = None
        if usec and usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the watchdog timeout, as systemd recommends."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def send(self, message: str) -> None:
        if self.address is None:
            return
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc))
