"""The page server's JSON API and event stream, against a real Twin on a ManualClock.

Time only moves when a test calls ``clock.advance``. The few bounded real-time waits below
are for bytes to cross the loopback socket, never for time to pass.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest
from yarl import URL

from drivers.clock import ManualClock
from drivers.codes import BEATS_PER_MINUTE, PERCENT, PULSE_RATE, SPO2
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    MeasurementStatus,
    Numeric,
)
from gateway.twin.state import BedSpec, Twin
from gateway.web.server import CONTENT_SECURITY_POLICY, STATIC_DIR, WebBindError, WebServer

STALE_AFTER = 5.0
MIN_PUSH = 0.25
HEARTBEAT = 2.0
#: Real seconds allowed for bytes to cross the loopback socket.
IO_TIMEOUT = 5.0
#: Real seconds to watch for an event that must not come.
QUIET = 0.2


@dataclass
class Ward:
    """A real twin with two beds and one oximeter each, plus an HTTP client."""

    clock: ManualClock
    twin: Twin
    counters: dict[str, CodecCounters]
    session: aiohttp.ClientSession
    servers: list[WebServer] = field(default_factory=list)

    async def serve(self, **kwargs: Any) -> WebServer:
        kwargs.setdefault("stale_after", self.twin.stale_after)
        server = WebServer(
            host="127.0.0.1",
            port=0,
            beds=self.twin.snapshot,
            health=self.health,
            version=lambda: self.twin.version,
            wait_changed=self.twin.wait_changed,
            clock=self.clock,
            **kwargs,
        )
        await server.start()
        self.servers.append(server)
        return server

    def health(self) -> dict[str, Any]:
        return {"gateway": "ward-7", "beds": len(self.twin.beds), "uptime": 12.5}

    def numeric(self, source: str, code: Any, value: float | None, **kwargs: Any) -> None:
        unit = PERCENT if code is SPO2 else BEATS_PER_MINUTE
        self.twin.apply(Numeric(source, code, value, unit, self.clock.wall(), **kwargs))

    def event(self, source: str, condition: Condition, active: bool, detail: str = "") -> None:
        self.twin.apply(DeviceEvent(source, condition, active, self.clock.wall(), detail))

    def connect(self, source: str) -> None:
        self.event(source, Condition.DISCONNECTED, False, "port open")


@pytest.fixture
async def ward() -> AsyncIterator[Ward]:
    clock = ManualClock()
    twin = Twin([BedSpec("bed-1", "Bed 1"), BedSpec("bed-2", "Bed 2")], clock, STALE_AFTER)
    counters = {"ox-1": CodecCounters(), "ox-2": CodecCounters()}
    twin.register_device("bed-1", "ox-1", "nonin_xpod", counters["ox-1"])
    twin.register_device("bed-2", "ox-2", "nonin_xpod", counters["ox-2"])
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
    w = Ward(clock, twin, counters, session)
    try:
        yield w
    finally:
        for server in w.servers:
            await server.stop()
        await session.close()


def base(server: WebServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def get_json(ward: Ward, server: WebServer, path: str) -> Any:
    async with ward.session.get(base(server) + path) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        # Strict: a NaN or Infinity in the body would break the browser's JSON.parse.
        return json.loads(await response.text(), parse_constant=_reject_constant)


def _reject_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def bed(beds: list[dict[str, Any]], bed_id: str) -> dict[str, Any]:
    return next(b for b in beds if b["id"] == bed_id)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (bounded, real time) for something the loop does on its own, e.g. close a socket."""

    async def poll() -> None:
        # Polling: socket teardown inside aiohttp has no event a test could await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), IO_TIMEOUT)


def new_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Unfinished tasks that did not exist at ``before``, other than the caller's own."""
    return {t for t in asyncio.all_tasks() - before if not t.done()} - {asyncio.current_task()}


# -- /api/beds and /api/health -------------------------------------------------------------


async def test_beds_api_serves_the_twin_snapshot(ward: Ward) -> None:
    server = await ward.serve()
    ward.connect("ox-1")
    ward.numeric("ox-1", SPO2, 97.0)
    ward.numeric("ox-1", PULSE_RATE, 72.0, status=MeasurementStatus.QUESTIONABLE)
    ward.counters["ox-1"].frames_decoded = 12
    ward.counters["ox-1"].bytes_dropped = 3

    beds = await get_json(ward, server, "/api/beds")

    assert beds == json.loads(json.dumps(ward.twin.snapshot()))
    assert [b["id"] for b in beds] == ["bed-1", "bed-2"]
    one = bed(beds, "bed-1")
    assert one["label"] == "Bed 1"
    spo2 = one["vitals"]["MDC_PULS_OXIM_SAT_O2"]
    assert (spo2["value"], spo2["unit"], spo2["age"], spo2["stale"]) == (97.0, "%", 0.0, False)
    assert spo2["status"] == []
    pulse = one["vitals"]["MDC_PULS_OXIM_PULS_RATE"]
    assert (pulse["value"], pulse["unit"], pulse["status"]) == (72.0, "/min", ["questionable"])
    (device,) = one["devices"]
    assert device["id"] == "ox-1"
    assert device["driver"] == "nonin_xpod"
    assert device["state"] == "connected"
    assert (device["frames_decoded"], device["bytes_dropped"]) == (12, 3)
    two = bed(beds, "bed-2")
    assert two["vitals"] == {}
    assert two["devices"][0]["state"] == "connecting"


async def test_ages_grow_with_the_clock_and_values_go_stale(ward: Ward) -> None:
    server = await ward.serve()
    ward.connect("ox-1")
    ward.numeric("ox-1", SPO2, 96.0)

    await ward.clock.advance(3.0)
    spo2 = bed(await get_json(ward, server, "/api/beds"), "bed-1")["vitals"][SPO2.refid]
    assert (spo2["age"], spo2["stale"]) == (3.0, False)

    await ward.clock.advance(STALE_AFTER - 3.0 + 0.5)
    spo2 = bed(await get_json(ward, server, "/api/beds"), "bed-1")["vitals"][SPO2.refid]
    assert (spo2["age"], spo2["stale"]) == (STALE_AFTER + 0.5, True)
    assert spo2["value"] == 96.0  # still reported, flagged: the page decides how to grey it


async def test_a_disconnected_device_makes_its_values_stale_at_once(ward: Ward) -> None:
    server = await ward.serve()
    ward.connect("ox-2")
    ward.numeric("ox-2", SPO2, 95.0)
    ward.event("ox-2", Condition.DISCONNECTED, True, "port vanished")

    two = bed(await get_json(ward, server, "/api/beds"), "bed-2")
    assert two["vitals"][SPO2.refid]["stale"] is True
    assert two["devices"][0]["state"] == "disconnected"
    assert two["devices"][0]["detail"] == "port vanished"


async def test_non_finite_values_are_sent_as_null(ward: Ward) -> None:
    server = await ward.serve()
    ward.connect("ox-1")
    ward.numeric("ox-1", SPO2, float("nan"))

    spo2 = bed(await get_json(ward, server, "/api/beds"), "bed-1")["vitals"][SPO2.refid]
    assert spo2["value"] is None


async def test_health_is_served_as_json(ward: Ward) -> None:
    server = await ward.serve()
    assert await get_json(ward, server, "/api/health") == ward.health()


@pytest.mark.parametrize(
    "path",
    ["/", "/static/app.js", "/static/style.css", "/api/beds", "/api/health", "/no/such/page"],
)
async def test_every_response_carries_the_security_headers(ward: Ward, path: str) -> None:
    server = await ward.serve()
    async with ward.session.get(base(server) + path) as response:
        await response.read()
        headers = response.headers
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    if path.startswith("/api/"):
        assert headers["Cache-Control"] == "no-store"


async def test_page_and_files_are_served_with_their_types(ward: Ward) -> None:
    server = await ward.serve()
    expected = {
        "/": "text/html",
        "/static/app.js": "javascript",
        "/static/style.css": "text/css",
    }
    for path, content_type in expected.items():
        async with ward.session.get(base(server) + path) as response:
            assert response.status == 200, path
            assert content_type in response.content_type, path


class _PageAudit(HTMLParser):
    """Collects what would break the CSP or reach outside the box."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True
        if "style" in values or any(name.startswith("on") for name in values):
            self.inline.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script body")


def test_page_has_no_inline_script_or_style_and_no_external_urls() -> None:
    audit = _PageAudit()
    audit.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    assert audit.scripts == [{"src": "/static/app.js", "defer": None}]
    assert audit.inline == []
    assert all(url.startswith("/static/") for url in audit.urls), audit.urls
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in script
    assert "EventSource(" in script
    for name in ("app.js", "style.css"):
        assert "http://" not in (STATIC_DIR / name).read_text(encoding="utf-8")
        assert "https://" not in (STATIC_DIR / name).read_text(encoding="utf-8")


async def test_static_files_do_not_leave_the_static_folder(ward: Ward) -> None:
    server = await ward.serve()
    for raw in ("/static/%2e%2e/server.py", "/static/..%2fserver.py"):
        url = URL(base(server) + raw, encoded=True)
        async with ward.session.get(url) as response:
            body = await response.text()
        assert response.status in (403, 404), raw
        assert "class WebServer" not in body


# -- lifecycle -------------------------------------------------------------------------------


async def test_bind_error_names_the_address_and_the_reason(ward: Ward) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebServer(
            host="127.0.0.1",
            port=port,
            beds=ward.twin.snapshot,
            health=ward.health,
            version=lambda: ward.twin.version,
            wait_changed=ward.twin.wait_changed,
            clock=ward.clock,
        )
        with pytest.raises(WebBindError) as caught:
            await server.start()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "in use" in str(caught.value).lower()
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
    assert not isinstance(caught.value, OSError)
    await server.stop()  # nothing started: still safe


async def test_run_serves_until_cancelled(ward: Ward) -> None:
    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=ward.twin.snapshot,
        health=ward.health,
        version=lambda: ward.twin.version,
        wait_changed=ward.twin.wait_changed,
        clock=ward.clock,
    )
    task = asyncio.create_task(server.run())
    try:

        def started() -> bool:
            try:
                return server.port > 0
            except RuntimeError:
                return False

        await eventually(started)
        port = server.port
        async with ward.session.get(f"http://127.0.0.1:{port}/api/health") as response:
            assert response.status == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(aiohttp.ClientConnectionError):
        async with ward.session.get(f"http://127.0.0.1:{port}/api/health"):
            pass


def make_server(ward: Ward, **kwargs: Any) -> WebServer:
    return WebServer(
        host="127.0.0.1",
        port=0,
        beds=ward.twin.snapshot,
        health=ward.health,
        version=lambda: ward.twin.version,
        wait_changed=ward.twin.wait_changed,
        clock=ward.clock,
        **kwargs,
    )


def test_defaults_suit_the_pages_watchdog(ward: Ward) -> None:
    server = make_server(ward)
    assert (server.heartbeat_interval, server.stale_after) == (2.0, 5.0)
    # The page takes a stream silent for max(2 heartbeats, stale_after) + 1 s as lost, so
    # heartbeats must come well within that, and within stale_after.
    assert server.heartbeat_interval < server.stale_after


@pytest.mark.parametrize(
    "name", ["min_push_interval", "heartbeat_interval", "stale_check_interval", "stale_after"]
)
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_intervals_must_be_positive_and_finite(ward: Ward, name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        make_server(ward, **{name: value})


# -- /api/stream ---------------------------------------------------------------------------


class EventStream:
    """Reads Server-Sent Events into a queue, so a wait can time out without losing bytes."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: asyncio.Queue[dict[str, str] | None] = asyncio.Queue()
        #: ``clock`` events (the gateway's wall time after each push), kept apart.
        self.clock_events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for raw in self.response.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if fields.get("event") == "clock":
                        self.clock_events.append(json.loads(fields["data"]))
                    elif fields:
                        self.events.put_nowait(fields)
                    fields = {}
                elif line.startswith(":"):
                    self.events.put_nowait({"comment": line[1:].strip()})
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    fields[name] = f"{fields[name]}\n{value}" if name in fields else value
        except aiohttp.ClientError:
            pass
        self.events.put_nowait(None)

    async def next(self) -> dict[str, str] | None:
        """The next event, or None once the server ended the stream."""
        return await asyncio.wait_for(self.events.get(), IO_TIMEOUT)

    async def next_beds(self) -> tuple[int, list[dict[str, Any]]]:
        event = await self.next()
        assert event is not None, "stream ended"
        assert event.get("event") == "beds", event
        return int(event["id"]), json.loads(event["data"])

    async def assert_quiet(self) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.events.get(), QUIET)

    async def close(self) -> None:
        self.response.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def open_stream(ward: Ward, server: WebServer) -> EventStream:
    response = await ward.session.get(base(server) + "/api/stream")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    stream = EventStream(response)
    version, beds = await stream.next_beds()
    assert (version, beds) == (ward.twin.version, json.loads(json.dumps(ward.twin.snapshot())))
    hello = await stream.next()
    assert hello is not None and hello["event"] == "hello"
    assert json.loads(hello["data"]) == {
        "heartbeat_interval": server.heartbeat_interval,
        "min_push_interval": server.min_push_interval,
        "stale_after": server.stale_after,
    }
    return stream


async def test_hello_tells_the_page_the_twins_stale_after(ward: Ward) -> None:
    server = await ward.serve(stale_after=3.5, heartbeat_interval=1.5, min_push_interval=0.5)
    stream = await open_stream(ward, server)  # checks hello against the server's fields
    assert (server.stale_after, server.heartbeat_interval) == (3.5, 1.5)
    await stream.close()


async def test_stream_sends_the_beds_at_once(ward: Ward) -> None:
    ward.connect("ox-1")
    ward.numeric("ox-1", SPO2, 98.0)
    server = await ward.serve()
    stream = await open_stream(ward, server)  # no clock movement needed
    assert server.clients == 1
    await stream.assert_quiet()
    await stream.close()


async def test_stream_pushes_a_change(ward: Ward) -> None:
    server = await ward.serve(heartbeat_interval=60.0)
    ward.connect("ox-1")
    stream = await open_stream(ward, server)
    await ward.clock.advance(1.0)  # well past min_push_interval: the next change goes at once

    ward.numeric("ox-1", SPO2, 93.0)

    version, beds = await stream.next_beds()
    assert version == ward.twin.version
    assert bed(beds, "bed-1")["vitals"][SPO2.refid]["value"] == 93.0
    await stream.assert_quiet()
    await stream.close()


async def test_stream_coalesces_changes_within_the_push_interval(ward: Ward) -> None:
    server = await ward.serve(min_push_interval=MIN_PUSH, heartbeat_interval=60.0)
    ward.connect("ox-1")
    stream = await open_stream(ward, server)

    for value in (90.0, 91.0, 92.0, 93.0, 94.0):
        ward.numeric("ox-1", SPO2, value)
    await stream.assert_quiet()  # the connect push was just now: hold the changes

    await ward.clock.advance(MIN_PUSH)
    version, beds = await stream.next_beds()
    assert version == ward.twin.version
    assert bed(beds, "bed-1")["vitals"][SPO2.refid]["value"] == 94.0
    await stream.assert_quiet()  # one event for the five changes

    # The hold applies from each push: a change right after this one waits again.
    ward.numeric("ox-1", SPO2, 95.0)
    await stream.assert_quiet()
    await ward.clock.advance(MIN_PUSH / 2)
    await stream.assert_quiet()
    await ward.clock.advance(MIN_PUSH / 2)
    _, beds = await stream.next_beds()
    assert bed(beds, "bed-1")["vitals"][SPO2.refid]["value"] == 95.0
    await stream.close()


async def test_stream_sends_a_heartbeat_when_nothing_changes(ward: Ward) -> None:
    server = await ward.serve(heartbeat_interval=HEARTBEAT)
    ward.connect("ox-1")
    ward.numeric("ox-1", SPO2, 97.0)
    ward.twin.stale_after = 100.0  # keep staleness out of this test: only the heartbeat
    stream = await open_stream(ward, server)

    await ward.clock.advance(HEARTBEAT - 0.5)
    await stream.assert_quiet()
    await ward.clock.advance(0.5)
    version, beds = await stream.next_beds()
    assert version == ward.twin.version  # nothing changed: same state, ages re-based
    assert bed(beds, "bed-1")["vitals"][SPO2.refid]["age"] == HEARTBEAT

    await ward.clock.advance(HEARTBEAT)  # one advance covering the whole interval
    _, beds = await stream.next_beds()
    assert bed(beds, "bed-1")["vitals"][SPO2.refid]["age"] == 2 * HEARTBEAT
    await stream.close()


async def test_stream_pushes_when_a_value_goes_stale_without_new_readings(ward: Ward) -> None:
    server = await ward.serve(heartbeat_interval=60.0, stale_check_interval=1.0)
    ward.connect("ox-1")
    ward.numeric("ox-1", SPO2, 97.0)
    stream = await open_stream(ward, server)

    await ward.clock.advance(STALE_AFTER)  # exactly at the limit: not yet stale
    await stream.assert_quiet()
    await ward.clock.advance(2.0)
    _, beds = await stream.next_beds()
    spo2 = bed(beds, "bed-1")["vitals"][SPO2.refid]
    assert spo2["stale"] is True
    # Caught by the first check after the flip, not at the next heartbeat.
    assert STALE_AFTER < spo2["age"] <= STALE_AFTER + server.stale_check_interval
    await stream.assert_quiet()
    await stream.close()


async def test_every_open_stream_gets_the_change(ward: Ward) -> None:
    server = await ward.serve(heartbeat_interval=60.0)
    ward.connect("ox-1")
    first = await open_stream(ward, server)
    second = await open_stream(ward, server)
    assert server.clients == 2
    await ward.clock.advance(1.0)

    ward.numeric("ox-1", PULSE_RATE, 61.0)

    for stream in (first, second):
        _, beds = await stream.next_beds()
        assert bed(beds, "bed-1")["vitals"][PULSE_RATE.refid]["value"] == 61.0
        await stream.close()


async def test_client_disconnect_leaves_no_task_or_timer_behind(ward: Ward) -> None:
    server = await ward.serve()
    before = asyncio.all_tasks()
    stream = await open_stream(ward, server)
    assert ward.clock.sleepers > 0  # the stream's next deadline is on the clock

    await stream.close()

    await eventually(lambda: server.clients == 0)
    await eventually(lambda: not new_tasks(before))
    assert ward.clock.sleepers == 0


async def test_stopping_the_server_ends_open_streams(ward: Ward) -> None:
    server = await ward.serve()
    before = asyncio.all_tasks()
    stream = await open_stream(ward, server)

    await server.stop()

    assert await stream.next() is None
    assert server.clients == 0
    assert ward.clock.sleepers == 0
    await eventually(lambda: not new_tasks(before))
    await stream.close()


async def test_an_alarm_change_is_pushed_without_waiting_for_the_vitals_pacing(
    ward: Ward,
) -> None:
    from gateway.alarms import service
    from gateway.alarms.model import AlarmSettings
    from gateway.web.server import ALARM_PUSH_INTERVAL

    engine, page_version = service.build(
        beds=[("bed-1", "adult", None), ("bed-2", "adult", None)],
        settings=AlarmSettings(self_check_interval=3600.0, self_check_timeout=3600.0),
        clock=ward.clock,
        twin=ward.twin,
        bed_of={"ox-1": "bed-1", "ox-2": "bed-2"}.get,
        writer=None,
        pages=lambda: 1,
    )

    def beds() -> list[dict[str, Any]]:
        snapshot = ward.twin.snapshot()
        engine.decorate(snapshot)
        return snapshot

    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=beds,
        health=ward.health,
        version=page_version.version,
        wait_changed=page_version.wait_changed,
        clock=ward.clock,
        min_push_interval=MIN_PUSH,
        heartbeat_interval=60.0,
        alarms=engine,
    )
    await server.start()
    ward.servers.append(server)
    ward.connect("ox-1")
    response = await ward.session.get(base(server) + "/api/stream")
    stream = EventStream(response)
    _, first = await stream.next_beds()
    assert bed(first, "bed-1")["audio"] == {
        "priority": None,
        "paused_until": None,
        "paused_by": None,
    }
    assert (await stream.next())["event"] == "hello"  # type: ignore[index]

    ward.numeric("ox-1", SPO2, 96.0)  # a vitals change: held for MIN_PUSH
    await engine.pause_audio("bed-1", "alice", 60.0)  # an alarm change: not held as long
    await stream.assert_quiet()
    await ward.clock.advance(ALARM_PUSH_INTERVAL)
    _, beds_now = await stream.next_beds()
    audio = bed(beds_now, "bed-1")["audio"]
    assert audio["paused_by"] == "alice"
    assert audio["paused_until"] == ward.clock.wall() - ALARM_PUSH_INTERVAL + 60.0
    assert bed(beds_now, "bed-1")["vitals"][SPO2.refid]["value"] == 96.0
    assert stream.clock_events[-1] == {"wall": ward.clock.wall()}

    # Vitals alone are paced as before.
    ward.numeric("ox-1", SPO2, 95.0)
    await ward.clock.advance(ALARM_PUSH_INTERVAL)
    await stream.assert_quiet()
    await ward.clock.advance(MIN_PUSH - ALARM_PUSH_INTERVAL)
    _, beds_now = await stream.next_beds()
    assert bed(beds_now, "bed-1")["vitals"][SPO2.refid]["value"] == 95.0
    await stream.close()
