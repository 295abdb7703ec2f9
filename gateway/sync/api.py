"""``GET /api/sync``: per destination, what a technician needs to judge the link.

Each entry: name, protocol, target, state (idle, sending, backing_off), backlog per class,
oldest unsent age (s), delivered counts, dead letters, last success (UTC s), last error,
failures in a row, next attempt (s) and the technical conditions it raises now. No patient
data: like ``/api/health`` it needs no login.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web


def add_sync_routes(app: web.Application, status: Callable[[], list[dict[str, Any]]]) -> None:
    async def sync(_request: web.Request) -> web.Response:
        return web.json_response({"destinations": status()})

    app.router.add_get("/api/sync", sync)
