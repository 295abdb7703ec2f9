"""The sync API: how each destination is doing, and the technician's dead-letter desk.

Routes (registered by :func:`add_sync_routes`)::

    GET  /api/sync                          no login: per destination, name, protocol,
                                            target, state (idle, sending, backing_off),
                                            backlog per class, oldest unsent age (s),
                                            delivered counts, dead letters (open), last
                                            success (UTC s), last error, failures in a row,
                                            next attempt (s) and the conditions it raises
    GET  /api/sync/{name}/dead-letters      technician; ?all=1 includes closed ones,
                                            ?limit=N (1-1000, default 100)
                                            -> {"destination", "open", "dead_letters": [...]}
    POST /api/sync/{name}/dead-letters      technician; body {"action": "replay"|"dismiss",
                                            "ids": [dead letter ids]} (no "ids": all open
                                            ones); audited -> {"closed": n, "open": n}

A dead letter carries the destination's reason (never patient data), the kind and the
store's row id: a technician can see why a receiver refused a message without being shown
the message. Replay queues the rows again (after the receiver's configuration is fixed);
dismiss closes them for good. Either ends the ``sync_dead_letters`` alarm once none is
left open. Errors are JSON ``{"error": reason}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from gateway.web.auth import require

_MAX_LIMIT = 1000


class DeadLetterDesk(Protocol):
    """What the routes need from the daemon (store calls run on the store thread)."""

    def destinations(self) -> Sequence[str]: ...

    def dead_letters(
        self, destination: str, limit: int, open_only: bool
    ) -> Awaitable[tuple[int, list[dict[str, Any]]]]: ...

    def resolve(
        self, destination: str, ids: Sequence[int] | None, replay: bool, actor: str
    ) -> Awaitable[tuple[int, int]]: ...


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def add_sync_routes(
    app: web.Application,
    status: Callable[[], list[dict[str, Any]]],
    desk: DeadLetterDesk | None = None,
) -> None:
    async def sync(_request: web.Request) -> web.Response:
        return web.json_response({"destinations": status()})

    app.router.add_get("/api/sync", sync)
    if desk is None:
        return

    def destination(request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in desk.destinations():
            raise _error(web.HTTPNotFound, f"no destination {name!r}")
        return name

    async def list_letters(request: web.Request) -> web.Response:
        await require(request, "technician")
        name = destination(request)
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= _MAX_LIMIT:
            raise _error(web.HTTPBadRequest, f"limit must be 1-{_MAX_LIMIT}")
        open_only = request.query.get("all", "") not in ("1", "true", "yes")
        count, letters = await desk.dead_letters(name, limit, open_only)
        return web.json_response({"destination": name, "open": count, "dead_letters": letters})

    async def resolve(request: web.Request) -> web.Response:
        user = await require(request, "technician")
        name = destination(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        action = body.get("action") if isinstance(body, dict) else None
        ids = body.get("ids") if isinstance(body, dict) else None
        valid_ids = ids is None or (
            isinstance(ids, list)
            and len(ids) <= 10_000
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        )
        if action not in ("replay", "dismiss") or not valid_ids:
            raise _error(
                web.HTTPBadRequest,
                'send {"action": "replay" or "dismiss", "ids": [dead letter ids]} '
                "(leave out ids for every open one)",
            )
        closed, still_open = await desk.resolve(name, ids, action == "replay", user.name)
        return web.json_response({"closed": closed, "open": still_open})

    app.router.add_get("/api/sync/{name}/dead-letters", list_letters)
    app.router.add_post("/api/sync/{name}/dead-letters", resolve)
