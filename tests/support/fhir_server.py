"""A real HTTPS FHIR receiver for tests: aiohttp on 127.0.0.1 with a server certificate
the test made and (by default) a client certificate required; every Bundle it gets is
validated as FHIR R4 by an independent library (fhir.resources, R4B models)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from fhir.resources.R4B.bundle import Bundle


@dataclass
class FhirState:
    #: Answers in order: "ok", "500", "400", "401", "entry-422" (the last entry refused),
    #: "hold" (answer only when ``release`` is set); when empty, "ok".
    script: list[str] = field(default_factory=list)
    bundles: list[Bundle] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def fhir_server(tls: ssl.SSLContext) -> AsyncIterator[tuple[FhirState, str]]:
    state = FhirState()

    async def batch(request: web.Request) -> web.Response:
        body = await request.json()
        state.raw.append(body)
        state.bundles.append(Bundle.model_validate(body))
        answer = state.script.pop(0) if state.script else "ok"
        if answer == "hold":
            await state.release.wait()
            answer = "ok"
        if answer in ("500", "400", "401"):
            return web.json_response(
                {"resourceType": "OperationOutcome", "issue": []}, status=int(answer)
            )
        entries = [{"response": {"status": "201 Created"}} for _ in body.get("entry", [])]
        if answer == "entry-422" and entries:
            entries[-1] = {"response": {"status": "422 Unprocessable Entity"}}
        return web.json_response(
            {"resourceType": "Bundle", "type": "batch-response", "entry": entries},
            content_type="application/fhir+json",
        )

    app = web.Application()
    app.router.add_post("/fhir", batch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, f"https://localhost:{port}/fhir"
    finally:
        state.release.set()
        await runner.cleanup()
