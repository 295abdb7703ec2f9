"""The alarm-path self-check: a heartbeat from the engine to the page and back.

Every ``interval`` seconds the engine issues a heartbeat: it bumps its version, so the page
stream pushes a fresh ``beds`` event whose SSE ``id`` is at least the heartbeat's version.
A page that received and rendered such an event proves the whole path worked (engine ->
snapshot -> server -> network -> browser -> script), and says so::

    POST /api/alarm-path/confirm
    Content-Type: application/json
    {"seen": <the SSE event's lastEventId, an integer>, "client": "<random id of this page>"}

(no login needed: a viewer's page counts). A heartbeat is confirmed by any ``seen`` at least
its version. If one stays unconfirmed for ``timeout`` seconds while at least one page is
connected (an open event stream), or ever while ``expect_page`` is set, the path is failing:
the engine raises the high-priority technical alarm ``alarm_path_failed`` on the gateway
pseudo-bed, which logs it, shows it in ``/api/health`` and in ``/api/alarms``, and sounds the
local sound output (:class:`SoundOutput`), because the page may be exactly what is broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from drivers.clock import Clock

log = structlog.get_logger(__name__)


class SelfCheck:
    def __init__(
        self,
        clock: Clock,
        *,
        interval: float = 2.0,
        timeout: float = 5.0,
        expect_page: bool = False,
        clients: Callable[[], int] = lambda: 0,
    ) -> None:
        if not (interval > 0 and timeout > 0):
            raise ValueError("self-check interval and timeout must be > 0 s")
        self._clock = clock
        self.interval = interval
        self.timeout = timeout
        self.expect_page = expect_page
        self.clients = clients
        self._pending: deque[tuple[int, float]] = deque()  # (version, issued monotonic)
        self._next = clock.monotonic()
        self.confirmed_version = -1
        self.last_confirmed: float | None = None  # monotonic
        self.confirmations = 0
        self._confirmers: dict[str, float] = {}

    def due(self, now: float) -> bool:
        return now >= self._next

    @property
    def next_due(self) -> float:
        return self._next

    def issue(self, version: int, now: float) -> None:
        """Record a heartbeat carried by ``version`` (the page-visible version)."""
        self._next = now + self.interval
        if self.expected():
            self._pending.append((version, now))
        else:
            self._pending.clear()  # nobody to confirm: no heartbeat can be late

    def expected(self) -> bool:
        return self.expect_page or self.clients() > 0

    def confirm(self, seen: int, client: str, now: float) -> None:
        """A page has rendered the state of version ``seen``."""
        self.confirmations += 1
        self.last_confirmed = now
        self._confirmers[client[:64]] = now
        if len(self._confirmers) > 64:  # forget the longest-silent pages
            oldest = min(self._confirmers, key=self._confirmers.__getitem__)
            del self._confirmers[oldest]
        self.confirmed_version = max(self.confirmed_version, seen)
        while self._pending and self._pending[0][0] <= seen:
            self._pending.popleft()

    def failing(self, now: float) -> str | None:
        """Why the path is failing now, or ``None``."""
        if not self.expected():
            self._pending.clear()
            return None
        if self._pending and now - self._pending[0][1] > self.timeout:
            late = now - self._pending[0][1]
            return f"no page confirmed a heartbeat for {late:.1f} s"
        if not self._pending and self.expect_page and self.clients() == 0:
            # A page must be connected and none is: nothing can ever confirm.
            return "no page connected"
        return None

    def health(self, now: float) -> dict[str, Any]:
        return {
            "pages": self.clients(),
            "expect_page": self.expect_page,
            "unconfirmed": len(self._pending),
            "confirmed_version": self.confirmed_version,
            "last_confirmed_age": None
            if self.last_confirmed is None
            else round(now - self.last_confirmed, 3),
            "confirmations": self.confirmations,
            "failing": self.failing(now),
        }


class SoundOutput:
    """The gateway's own sound for when the page cannot be trusted to sound.

    ``"none"``: silent. ``"bell"``: the console bell (BEL on stderr, which a journal-attached
    console or a terminal rings), repeated by :meth:`repeat` while on. Anything else is a
    command line run with ``start`` or ``stop`` appended (e.g. ``/usr/local/bin/buzzer`` for a
    GPIO buzzer); its failure is logged, never raised.
    """

    def __init__(self, spec: str = "bell", stream: TextIO | None = None) -> None:
        self.spec = spec.strip()
        self._stream = stream
        self.on = False
        self.rings = 0
        self.runs: list[list[str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        self.on = on
        if self.spec in ("", "none"):
            return
        if self.spec == "bell":
            if on:
                self._ring()
            return
        argv = [*shlex.split(self.spec), "start" if on else "stop"]
        self.runs.append(argv)
        task = asyncio.get_running_loop().create_task(self._run(argv))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def repeat(self) -> None:
        """Called every self-check interval: the bell rings again while on."""
        if self.on and self.spec == "bell":
            self._ring()

    def _ring(self) -> None:
        self.rings += 1
        stream = self._stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write("\a")
            stream.flush()

    async def _run(self, argv: list[str]) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            code = await process.wait()
        except OSError as exc:
            log.error("alarm sound command failed", command=argv[0], error=str(exc))
            return
        if code != 0:
            log.error("alarm sound command failed", command=argv[0], exit_status=code)
