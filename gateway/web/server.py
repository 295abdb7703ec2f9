"""The nurse page server: the page itself, a small JSON API and a Server-Sent Events stream.

Routes::

    GET /              the page (static/index.html)
    GET /static/...    its script and style sheet; nothing is fetched from elsewhere
    GET /api/beds      JSON array, exactly what ``beds()`` returns (the twin snapshot)
    GET /api/health    JSON object, exactly what ``health()`` returns
    GET /api/stream    text/event-stream of ``beds`` events (see :class:`_Stream`)
    GET /api/beds/{bed}/waveforms?CODE=END...
                       JSON, the bed's recent thinned waveform samples after each cursor
                       (see :class:`~gateway.web.waveforms.WaveformBuffer`)
    POST /api/login, POST /api/logout, GET /api/session
                       see :mod:`gateway.web.auth`
    /api/alarms, /api/beds/{bed}/audio-pause, /api/beds/{bed}/limits
                       see :mod:`gateway.web.alarm_api` (when an alarm engine is given)

Viewing (the page, ``/api/beds``, ``/api/health``, the stream, waveforms) needs no login
unless the :class:`~gateway.web.auth.Auth` says ``require_login_to_view``; every action does.

The server never decides what is stale: it forwards the twin's ``stale`` flags and ages. Its
job is to get them to the page soon enough that a value is never shown as current after the
twin has called it stale, and to let the page notice when the gateway has gone away. The page
does not rely on pushes alone: ``hello`` tells it the twin's ``stale_after``, and it greys a
value whose age, counted on in the browser since the last push, passes that limit, so a
stream that stalls without closing (gateway hung) cannot keep an old value looking current.

Time is the injected :class:`~drivers.clock.Clock`: push pacing, heartbeats and stale checks all
run on it, so tests drive them with ``ManualClock.advance`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from drivers.clock import Clock
from gateway.web import auth as auth_
from gateway.web.alarm_api import add_alarm_routes
from gateway.web.auth import Auth
from gateway.web.waveforms import WaveformBuffer

if TYPE_CHECKING:
    from gateway.alarms.engine import AlarmEngine

log = structlog.get_logger(__name__)

#: Files served under ``/static/``; ``/`` is ``index.html`` from here.
STATIC_DIR = Path(__file__).resolve().with_name("static")

#: Seconds ``stop()`` grants open requests before their connections are closed. Streams end
#: at once on stop; this only bounds a request that is stuck writing to a dead client.
STOP_GRACE = 2.0

#: Seconds between clock readings that compare to the nearest microsecond count as the same
#: instant (``now + (deadline - now)`` need not round back to ``deadline`` exactly).
_EPSILON = 1e-6

#: Everything the page needs is served from this origin; no inline script or style, no
#: framing, no plugins, no forms. Setting element.style from app.js is still allowed.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=(), serial=()",
}

#: Browsers keep vitals out of their caches; the page and its files are revalidated so an
#: upgraded gateway never runs with a stale script.
API_CACHE_CONTROL = "no-store"
PAGE_CACHE_CONTROL = "no-cache"

#: Seconds between pushes when the alarm engine's state changed (instead of
#: ``min_push_interval``, which paces vitals): an alarm is shown without waiting, and an
#: engine changing many times at once still cannot flood a page.
ALARM_PUSH_INTERVAL = 0.05

#: Milliseconds the browser waits before reconnecting a dropped stream (SSE ``retry:``).
RECONNECT_MS = 2000


class WebBindError(Exception):
    """The page server could not listen on its address (in use, not ours, not resolvable)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot listen on {_format_address(host, port)}: {reason}")


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dumps(obj: Any) -> str:
    """Compact JSON that a browser's ``JSON.parse`` accepts.

    Python writes NaN and Infinity, which are not JSON: one bad device value would break the
    whole page. They are sent as ``null``, which the page shows as "no value".
    """
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _stale_signature(beds: list[dict[str, Any]]) -> tuple[tuple[Any, Any, Any], ...]:
    """The part of a snapshot that changes with time alone: which values are stale."""
    return tuple(
        (bed.get("id"), refid, vital.get("stale"))
        for bed in beds
        for refid, vital in (bed.get("vitals") or {}).items()
        if isinstance(vital, dict)
    )


class WebServer:
    """Serves the nurse page and its data for one gateway.

    ``beds``, ``health``, ``version`` and ``wait_changed`` are the twin's views, passed in
    as callables so this layer needs nothing from above it. ``stale_check_interval`` is how
    often (clock seconds) each stream re-reads the snapshot to catch values that went stale
    without any new reading arriving. ``stale_after`` is the twin's own threshold (the daemon
    passes ``config.stale_after``); it is only forwarded to the page in ``hello``, so the page
    can age values by itself between pushes and when pushes stop coming.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        beds: Callable[[], list[dict[str, Any]]],
        health: Callable[[], dict[str, Any]],
        version: Callable[[], int],
        wait_changed: Callable[[int], Awaitable[int]],
        clock: Clock,
        min_push_interval: float = 0.25,
        heartbeat_interval: float = 2.0,
        stale_check_interval: float = 1.0,
        stale_after: float = 5.0,
        auth: Auth | None = None,
        waveforms: WaveformBuffer | None = None,
        extra_routes: Callable[[web.Application], None] | None = None,
        alarms: AlarmEngine | None = None,
    ) -> None:
        for name, value in (
            ("min_push_interval", min_push_interval),
            ("heartbeat_interval", heartbeat_interval),
            ("stale_check_interval", stale_check_interval),
            ("stale_after", stale_after),
        ):
            # Also rejects NaN; infinity would reach the page as null (not JSON).
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.host = host
        self._port = port
        self.beds = beds
        self.health = health
        self.version = version
        self.wait_changed = wait_changed
        self.clock = clock
        self.min_push_interval = min_push_interval
        self.heartbeat_interval = heartbeat_interval
        self.stale_check_interval = stale_check_interval
        self.stale_after = stale_after
        # Without an Auth nobody can log in: the page can be viewed, nothing can be done.
        self.auth = auth if auth is not None else Auth(None, clock)
        self.waveforms = waveforms
        # The alarm routes (gateway/web/alarm_api.py); the caller passes beds, version and
        # wait_changed that already include the engine's alarms and version.
        self.alarms = alarms
        # Routes owned elsewhere (/healthz, /metrics: gateway/health.py, gateway/metrics.py).
        self.extra_routes = extra_routes
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._streams: set[_Stream] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving; raise :class:`WebBindError` if the address is unusable."""
        if self._runner is not None:
            raise RuntimeError("web server already started")
        self._closing = False
        runner = web.AppRunner(
            self._make_app(),
            # Every request would be an access-log line (the page polls nothing, but
            # browsers reconnect); the few events worth keeping are logged here instead.
            access_log=None,
            # A stream whose browser went away is otherwise only noticed at its next write.
            handler_cancellation=True,
            shutdown_timeout=STOP_GRACE,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise WebBindError(self.host, self._port, exc.strerror or str(exc)) from exc
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        log.debug("page server started", host=self.host, port=self._bound_port)

    @property
    def port(self) -> int:
        """The port actually bound (differs from the configured one when that was 0)."""
        if self._bound_port is None:
            raise RuntimeError("web server not started")
        return self._bound_port

    @property
    def clients(self) -> int:
        """Number of open event streams (pages currently connected)."""
        return len(self._streams)

    async def stop(self) -> None:
        """End every stream, close every connection and stop listening. Safe to repeat."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        for stream in list(self._streams):
            stream.close()
        await runner.cleanup()
        self._bound_port = None
        log.debug("page server stopped", host=self.host)

    async def run(self) -> None:
        """Start, serve until cancelled, then stop: the body of a supervisor-owned task."""
        await self.start()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await self.stop()

    # -- application -----------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        # Nothing is ever uploaded; a small limit keeps a bad client from using memory.
        app = web.Application(client_max_size=64 * 1024)
        app.on_response_prepare.append(self._add_headers)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/beds", self._api_beds)
        app.router.add_get("/api/health", self._api_health)
        # No HEAD: it would hold a connection open for a stream with no body.
        app.router.add_get("/api/stream", self._api_stream, allow_head=False)
        app.router.add_get("/api/beds/{bed}/waveforms", self._api_waveforms)
        self.auth.install(app)
        if self.alarms is not None:
            add_alarm_routes(app, self.alarms, auth_.require, page_version=self.version)
        if self.extra_routes is not None:
            self.extra_routes(app)
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, show_index=False)
        return app

    @staticmethod
    async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
        # A response-prepare hook rather than a middleware: it also covers streamed,
        # static-file and error responses, which middlewares see too late or not at all.
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = API_CACHE_CONTROL
        else:
            response.headers.setdefault("Cache-Control", PAGE_CACHE_CONTROL)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _api_beds(self, request: web.Request) -> web.Response:
        await self.auth.require(request, "viewer")
        return web.Response(text=dumps(self.beds()), content_type="application/json")

    async def _api_health(self, request: web.Request) -> web.Response:
        await self.auth.require(request, "viewer")
        return web.Response(text=dumps(self.health()), content_type="application/json")

    async def _api_waveforms(self, request: web.Request) -> web.Response:
        await self.auth.require(request, "viewer")
        bed = request.match_info["bed"]
        if not any(b.get("id") == bed for b in self.beds()):
            raise web.HTTPNotFound(text=f"no bed {bed!r}")
        after: dict[str, int] = {}
        for code, value in request.query.items():
            try:
                after[code] = int(value)
            except ValueError:
                raise web.HTTPBadRequest(text=f"{code}: cursor must be an integer") from None
        if self.waveforms is None:
            body: dict[str, Any] = {"channels": []}
        else:
            body = self.waveforms.recent(bed, after)
        return web.Response(text=dumps(body), content_type="application/json")

    async def _api_stream(self, request: web.Request) -> web.StreamResponse:
        await self.auth.require(request, "viewer")
        if self._closing:
            raise web.HTTPServiceUnavailable(text="gateway page server is stopping")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                # A buffering reverse proxy in front of the box would hold events back.
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        stream = _Stream(self, response)
        self._streams.add(stream)
        log.debug("page stream opened", clients=len(self._streams))
        try:
            await stream.run()
        finally:
            self._streams.discard(stream)
            log.debug("page stream closed", clients=len(self._streams))
        return response


class _Stream:
    """One connected page: decides when to push and writes the events.

    Wire format (each block ends with a blank line)::

        retry: 2000                      first block only: reconnect delay for EventSource
        id: <twin version>
        event: beds
        data: <JSON array, exactly beds()>

        event: hello                     once, right after the first beds event
        data: {"heartbeat_interval": s, "min_push_interval": s, "stale_after": s}

        event: clock                     after every beds event (and hello)
        data: {"wall": UTC seconds}      the gateway's time, to count down to UTC deadlines
                                         (audio pause) on the gateway's clock, not the
                                         browser's

    A ``beds`` event is pushed:

    * at once on connect;
    * when the twin's version changes, but never sooner than ``min_push_interval`` after the
      previous push: changes in between are coalesced into one event with the latest state;
    * when the alarm engine's version changes (``alarms`` given), after only
      ``ALARM_PUSH_INTERVAL``: a new alarm does not wait for the vitals' pacing;
    * when a periodic re-read (every ``stale_check_interval``) finds a value whose ``stale``
      flag differs from what the page was last sent (values go stale without any reading);
    * when nothing else was pushed for ``heartbeat_interval``, so the page's ages are
      re-based and it can tell a quiet ward from a dead connection (the page treats a stream
      silent for ``max(2 * heartbeat_interval, stale_after) + 1`` seconds as lost; ``hello``
      tells it both).

    Three tasks, owned by a task group: this writer, a watcher on ``wait_changed`` and a
    one-shot timer on the clock for the next deadline. Both of the latter only set an event
    the writer waits on, so a timer is re-armed in the same loop turn the writer decides on
    the next deadline (``ManualClock.advance`` relies on sleepers re-registering promptly).
    """

    def __init__(self, server: WebServer, response: web.StreamResponse) -> None:
        self._server = server
        self._response = response
        self._wake = asyncio.Event()
        self._closing = False
        self._pending = False
        self._last_push = -math.inf
        self._last_check = -math.inf
        self._sent_version: int | None = None
        self._sent_alarms: int | None = None
        self._sent_signature: tuple[tuple[Any, Any, Any], ...] = ()
        self._timer: asyncio.Task[None] | None = None
        self._timer_deadline = math.inf

    def _alarms_version(self) -> int | None:
        alarms = self._server.alarms
        return None if alarms is None else alarms.version

    def close(self) -> None:
        """Ask the stream to end (server stopping); the writer returns at its next wake."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(self._watch(self._server.version()))
            try:
                await self._serve(group)
            finally:
                watcher.cancel()
                if self._timer is not None:
                    self._timer.cancel()

    async def _watch(self, seen: int) -> None:
        while True:
            seen = await self._server.wait_changed(seen)
            self._wake.set()

    async def _ring(self, delay: float) -> None:
        await self._server.clock.sleep(delay)
        self._wake.set()

    async def _serve(self, group: asyncio.TaskGroup) -> None:
        server = self._server
        clock = server.clock
        try:
            await self._push(first=True)
            while not self._closing:
                now = clock.monotonic()
                if now >= self._last_check + server.stale_check_interval - _EPSILON:
                    self._last_check = now
                    if _stale_signature(server.beds()) != self._sent_signature:
                        self._pending = True
                if server.version() != self._sent_version:
                    self._pending = True
                # An alarm change is not held back to pace vitals: it goes out at once.
                interval = (
                    ALARM_PUSH_INTERVAL
                    if self._alarms_version() != self._sent_alarms
                    else server.min_push_interval
                )
                next_allowed = self._last_push + interval
                heartbeat_due = self._last_push + server.heartbeat_interval
                if (self._pending and now >= next_allowed - _EPSILON) or (
                    now >= heartbeat_due - _EPSILON
                ):
                    await self._push()
                    continue
                deadline = min(
                    heartbeat_due,
                    self._last_check + server.stale_check_interval,
                    next_allowed if self._pending else math.inf,
                )
                self._arm(group, deadline, now)
                await self._wake.wait()
                self._wake.clear()
        except ConnectionError:
            # The browser went away between two writes; nothing to tell anyone.
            return

    def _arm(self, group: asyncio.TaskGroup, deadline: float, now: float) -> None:
        timer = self._timer
        if timer is not None and not timer.done():
            if deadline == self._timer_deadline:
                return
            timer.cancel()
        self._timer_deadline = deadline
        self._timer = group.create_task(self._ring(deadline - now))

    async def _push(self, *, first: bool = False) -> None:
        server = self._server
        # Read version and snapshot in the same loop turn so the id names this state.
        version = server.version()
        beds = server.beds()
        now = server.clock.monotonic()
        self._sent_version = version
        self._sent_alarms = self._alarms_version()
        self._sent_signature = _stale_signature(beds)
        self._last_push = self._last_check = now
        self._pending = False
        head = f"retry: {RECONNECT_MS}\n" if first else ""
        block = f"{head}id: {version}\nevent: beds\ndata: {dumps(beds)}\n\n"
        if first:
            hello = {
                "heartbeat_interval": server.heartbeat_interval,
                "min_push_interval": server.min_push_interval,
                "stale_after": server.stale_after,
            }
            block += f"event: hello\ndata: {dumps(hello)}\n\n"
        block += f"event: clock\ndata: {dumps({'wall': server.clock.wall()})}\n\n"
        await self._response.write(block.encode())
