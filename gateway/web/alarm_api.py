"""The alarm JSON API: list alarms, acknowledge, pause audio, read and change limits.

Routes (registered by :func:`add_alarm_routes`)::

    GET  /api/alarms[?bed=ID]            JSON array: open alarms (highest priority first),
                                         then recently cleared ones (newest first); each is
                                         the alarm JSON of gateway.alarms.engine.Alarm.as_json
    POST /api/alarms/{id}/acknowledge    nurse -> {"alarm": {...}, "recorded": bool}
                                         404 unknown id, 409 already cleared
    POST /api/beds/{bed}/audio-pause     nurse; body {"seconds": 1-120} (default 120) pauses,
                                         {"seconds": 0} ends a pause
                                         -> {"audio": {...}, "recorded": bool}
    GET  /api/beds/{bed}/limits          viewer -> {"bed", "profile", "limits", "metrics"}
    PUT  /api/beds/{bed}/limits          nurse (technicians too: roles are ranked); body
                                         {"spo2": {"low": 92}, ...}; 400 with the reason when
                                         a limit is not sane; audited
                                         -> the new limits plus "recorded": bool
    POST /api/alarm-path/confirm         no login: the page's self-check confirmation,
                                         body {"seen": <SSE lastEventId>, "client": str}
                                         (see gateway.alarms.selfcheck) -> 204

``recorded`` is ``true`` once the action's record (alarm log, audit log) is committed with
``synchronous=FULL``; ``false`` means the store did not confirm within a couple of seconds:
the action still took effect (a failing disk must not keep a nurse from silencing or
acknowledging) and the store-trouble alarm says why. Errors are JSON ``{"error": reason}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.alarms.engine import AlarmEngine, AlarmFinished, UnknownAlarm, UnknownBed
from gateway.alarms.limits import LimitError
from gateway.alarms.states import MAX_AUDIO_PAUSE

Require = Callable[[web.Request, str], Awaitable[Any]]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(obj), status=status, content_type="application/json")


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=_dumps({"error": message}), content_type="application/json")


async def _body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _error(web.HTTPBadRequest, "the body must be JSON") from None


def add_alarm_routes(
    app: web.Application,
    engine: AlarmEngine,
    require: Require,
    page_version: Callable[[], int] | None = None,
) -> None:
    """Register the alarm routes on ``app``. ``require(request, role)`` returns the acting
    user (anything with a ``name``) or raises HTTP 401/403. ``page_version`` is the version
    the page stream sends as its event id (confirmations beyond it are refused)."""

    async def list_alarms(request: web.Request) -> web.Response:
        await require(request, "viewer")
        bed = request.query.get("bed")
        return _json(engine.all_alarms(bed))

    async def acknowledge(request: web.Request) -> web.Response:
        user = await require(request, "nurse")
        alarm_id = request.match_info["id"]
        try:
            alarm, recorded = await engine.acknowledge(alarm_id, user.name)
        except UnknownAlarm:
            raise _error(web.HTTPNotFound, f"no alarm {alarm_id!r}") from None
        except AlarmFinished as exc:
            raise _error(web.HTTPConflict, str(exc)) from None
        return _json({"alarm": alarm.as_json(), "recorded": recorded})

    async def audio_pause(request: web.Request) -> web.Response:
        user = await require(request, "nurse")
        bed = request.match_info["bed"]
        body = await _body(request)
        seconds: Any = body.get("seconds", MAX_AUDIO_PAUSE) if isinstance(body, dict) else None
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not (math.isfinite(seconds) and 0 <= seconds <= MAX_AUDIO_PAUSE)
        ):
            raise _error(
                web.HTTPBadRequest,
                f'send {{"seconds": 1-{MAX_AUDIO_PAUSE:g}}} to pause, {{"seconds": 0}} to end',
            )
        try:
            audio, recorded = await engine.pause_audio(bed, user.name, float(seconds))
        except UnknownBed:
            raise _error(web.HTTPNotFound, f"no bed {bed!r}") from None
        return _json({"audio": audio, "recorded": recorded})

    async def get_limits(request: web.Request) -> web.Response:
        await require(request, "viewer")
        bed = request.match_info["bed"]
        try:
            return _json(engine.limits(bed))
        except UnknownBed:
            raise _error(web.HTTPNotFound, f"no bed {bed!r}") from None

    async def put_limits(request: web.Request) -> web.Response:
        user = await require(request, "nurse")
        bed = request.match_info["bed"]
        body = await _body(request)
        if not isinstance(body, dict):
            raise _error(web.HTTPBadRequest, 'send {"<metric>": {"low": <number>, ...}}')
        try:
            limits, recorded = await engine.set_limits(bed, body, user.name)
        except UnknownBed:
            raise _error(web.HTTPNotFound, f"no bed {bed!r}") from None
        except LimitError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        return _json({**limits, "recorded": recorded})

    async def confirm(request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise _error(web.HTTPForbidden, "request from another origin refused")
        body = await _body(request)
        seen = body.get("seen") if isinstance(body, dict) else None
        client = body.get("client", "") if isinstance(body, dict) else ""
        if isinstance(seen, str) and seen.isdigit():
            seen = int(seen)  # EventSource's lastEventId is a string
        if not isinstance(seen, int) or isinstance(seen, bool) or not isinstance(client, str):
            raise _error(web.HTTPBadRequest, 'send {"seen": <event id>, "client": "<page id>"}')
        if page_version is not None and seen > page_version():
            # Nobody can have seen a version not yet sent: a guess must not mask a failure.
            raise _error(web.HTTPBadRequest, "that version has not been sent yet")
        engine.confirm_page(seen, client)
        return web.Response(status=204)

    app.router.add_get("/api/alarms", list_alarms)
    app.router.add_post("/api/alarms/{id}/acknowledge", acknowledge)
    app.router.add_post("/api/beds/{bed}/audio-pause", audio_pause)
    app.router.add_get("/api/beds/{bed}/limits", get_limits)
    app.router.add_put("/api/beds/{bed}/limits", put_limits)
    app.router.add_post("/api/alarm-path/confirm", confirm)
