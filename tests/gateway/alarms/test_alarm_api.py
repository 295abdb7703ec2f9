"""The alarm JSON API over real HTTP (aiohttp server on 127.0.0.1), with a ``require`` that
stands in for the page's login: a header names the user and role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from drivers.clock import ManualClock
from drivers.readings import Condition, DeviceEvent
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.limits import profile
from gateway.alarms.selfcheck import SelfCheck
from gateway.web.alarm_api import add_alarm_routes

RANK = {"viewer": 0, "nurse": 1, "technician": 2}


@dataclass(frozen=True)
class User:
    name: str
    role: str


async def require(request: web.Request, role: str) -> User:
    who = request.headers.get("X-Test-User")
    if who is None:
        if role == "viewer":
            return User("anonymous", "viewer")
        raise web.HTTPUnauthorized(text='{"error": "log in first"}')
    name, _, has = who.partition(":")
    if RANK[has] < RANK[role]:
        raise web.HTTPForbidden(text='{"error": "not allowed"}')
    return User(name, has)


class Api:
    def __init__(self, engine: AlarmEngine, clock: ManualClock, base: str, http: Any) -> None:
        self.engine, self.clock, self.base, self.http = engine, clock, base, http

    async def call(
        self, method: str, path: str, user: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {} if user is None else {"X-Test-User": user}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            text = await r.text()
            return r.status, (await r.json(content_type=None)) if text else None


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = ManualClock()
    pages = SelfCheck(clock, interval=2.0, timeout=5.0, clients=lambda: 1)
    engine = AlarmEngine(
        {"bed-1": ("adult", profile("adult"))},
        clock,
        bed_of={"ecg-1": "bed-1"}.get,
        self_check=pages,
    )
    app = web.Application()
    add_alarm_routes(app, engine, require, page_version=lambda: engine.version)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Api(engine, clock, str(server.make_url("")), http)
    await server.close()


def vf(clock: ManualClock, active: bool = True) -> DeviceEvent:
    return DeviceEvent("ecg-1", Condition.VENTRICULAR_FIBRILLATION, active, clock.wall())


async def test_list_alarms_gives_active_then_recent(api: Api) -> None:
    api.engine.observe(vf(api.clock))
    api.engine.observe(DeviceEvent("ecg-1", Condition.LEAD_OFF, True, api.clock.wall()))
    api.engine.observe(DeviceEvent("ecg-1", Condition.LEAD_OFF, False, api.clock.wall()))
    status, alarms = await api.call("GET", "/api/alarms")
    assert status == 200
    assert [(a["condition"], a["state"]) for a in alarms] == [("vf", "active")]
    await api.clock.advance(6)
    api.engine.observe(DeviceEvent("ecg-1", Condition.LEAD_OFF, True, api.clock.wall()))
    await api.clock.advance(5)
    api.engine.tick()
    api.engine.observe(DeviceEvent("ecg-1", Condition.LEAD_OFF, False, api.clock.wall()))
    status, alarms = await api.call("GET", "/api/alarms?bed=bed-1")
    assert [(a["condition"], a["state"]) for a in alarms] == [
        ("vf", "active"),
        ("lead_off", "cleared"),
    ]
    keys = {"id", "bed", "source", "condition", "kind", "priority", "state", "since", "value"}
    assert keys <= set(alarms[0])
    assert (alarms[0]["kind"], alarms[0]["priority"]) == ("physiological", "high")


async def test_acknowledge_needs_a_nurse(api: Api) -> None:
    api.engine.observe(vf(api.clock))
    alarm_id = api.engine.bed_alarms("bed-1")[0]["id"]
    path = f"/api/alarms/{alarm_id}/acknowledge"
    assert (await api.call("POST", path))[0] == 401
    assert (await api.call("POST", path, "visitor:viewer"))[0] == 403
    assert api.engine.bed_alarms("bed-1")[0]["state"] == "active"
    status, body = await api.call("POST", path, "ann:nurse")
    assert status == 200
    assert body["alarm"]["state"] == "acknowledged"
    assert body["alarm"]["acknowledged_by"] == "ann"
    assert body["recorded"] is False  # no store behind this engine
    assert (await api.call("POST", "/api/alarms/nope/acknowledge", "ann:nurse"))[0] == 404
    api.engine.observe(vf(api.clock, active=False))
    status, body = await api.call("POST", path, "ann:nurse")
    assert status == 409 and "cleared" in body["error"]


async def test_audio_pause_validates_and_reports_the_countdown(api: Api) -> None:
    api.engine.observe(vf(api.clock))
    path = "/api/beds/bed-1/audio-pause"
    assert (await api.call("POST", path, None, {"seconds": 60}))[0] == 401
    for bad in ({"seconds": 121}, {"seconds": -1}, {"seconds": "60"}, {"seconds": True}):
        status, body = await api.call("POST", path, "ann:nurse", bad)
        assert status == 400 and "seconds" in body["error"]
    status, body = await api.call("POST", "/api/beds/bed-9/audio-pause", "ann:nurse", {})
    assert status == 404
    status, body = await api.call("POST", path, "ann:nurse", {})
    assert status == 200
    assert body["audio"] == {
        "priority": None,
        "paused_until": api.clock.wall() + 120,
        "paused_by": "ann",
    }
    status, body = await api.call("POST", path, "ann:nurse", {"seconds": 0})
    assert body["audio"]["priority"] == "high"


async def test_limits_read_freely_changed_by_nurses_refused_when_insane(api: Api) -> None:
    status, body = await api.call("GET", "/api/beds/bed-1/limits")
    assert status == 200
    assert body["profile"] == "adult" and body["limits"]["spo2"]["low"] == 90
    assert body["metrics"]["spo2"]["sane_low"] == 50
    path = "/api/beds/bed-1/limits"
    assert (await api.call("PUT", path, "v:viewer", {"spo2": {"low": 92}}))[0] == 403
    status, body = await api.call("PUT", path, "ann:nurse", {"spo2": {"low": 20}})
    assert status == 400 and "sane range" in body["error"]
    status, body = await api.call("PUT", path, "ann:nurse", {"spo2": {"low": "x"}})
    assert status == 400 and "number" in body["error"]
    status, body = await api.call("PUT", path, "tom:technician", {"spo2": {"low": 92}})
    assert status == 200 and body["limits"]["spo2"]["low"] == 92
    assert (await api.call("GET", "/api/beds/nope/limits"))[0] == 404


async def test_page_confirmation_closes_the_self_check_loop(api: Api) -> None:
    engine = api.engine
    engine.tick()  # heartbeat issued
    await api.clock.advance(5.5)
    engine.tick()
    assert [a["condition"] for a in engine.bed_alarms("_gateway")] == ["alarm_path_failed"]
    path = "/api/alarm-path/confirm"
    status, body = await api.call("POST", path, None, {"seen": engine.version + 1000})
    assert status == 400 and "not been sent" in body["error"]  # nobody can have seen it
    status, _ = await api.call("POST", path, None, {"seen": str(engine.version), "client": "p1"})
    assert status == 204
    assert engine.bed_alarms("_gateway") == []
    async with api.http.post(
        api.base + path, json={"seen": 1}, headers={"Origin": "http://evil.example"}
    ) as r:
        assert r.status == 403
