"""A small simulated ward for the ops endpoints (/healthz, /metrics) and ``status``.

Bed 1 has a Nonin oximeter played by its simulator on a pty; bed 2's oximeter is configured
on a serial port that does not exist, exactly as a technician's typo or an unplugged adapter
looks to the gateway. Everything real (ptys, transport, codec, supervisor, SQLite store,
aiohttp page) except time: a ManualClock the test advances.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from drivers.clock import ManualClock
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore
from tests.integration.test_ward import Ward

CONFIG = """
[gateway]
id = "ward-ops"
data_dir = "state"
listen = "127.0.0.1:8080"
stale_after = 5.0

[[beds]]
id = "bed-1"

  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  simulate = "normal"

[[beds]]
id = "bed-2"

  [[beds.devices]]
  id = "ox-missing"
  driver = "nonin"
  port = "{missing}"
"""


class OpsWard(Ward):
    async def get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) of a GET on the running gateway."""
        url = f"http://127.0.0.1:{self.gateway.web.port}{path}"
        async with self.session.get(url) as response:
            return response.status, response.headers.get("Content-Type", ""), await response.text()

    async def get_json(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.gateway.web.port}{path}"
        async with self.session.get(url) as response:
            return response.status, await response.json()

    async def until_status(self, path: str, status: int, within: float) -> Any:
        """Step the clock until ``path`` answers ``status``; its JSON body then."""
        start = self.clock.monotonic()
        while self.clock.monotonic() - start <= within:
            code, body = await self.get_json(path)
            if code == status:
                return body
            await self.step()
        raise AssertionError(f"{path} never answered {status} within {within} s: {body}")

    async def until_polled(
        self, path: str, predicate: Callable[[int, Any], bool], polls: int = 400
    ) -> Any:
        """Poll ``path`` until ``predicate(status, json)`` holds, stepping the clock a little
        each time and giving work in the store's thread real time to finish (bounded by
        ``polls``); the JSON body then."""
        body: Any = None
        for _ in range(polls):
            code, body = await self.get_json(path)
            if predicate(code, body):
                return body
            await self.step(0.1)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{path} never reached the expected state in {polls} polls: {body}")


@contextlib.asynccontextmanager
async def running_ward(
    tmp_path: Path, *, with_missing: bool = True, web: str = ""
) -> AsyncIterator[OpsWard]:
    """The ward above; ``with_missing=False`` leaves bed 2's absent oximeter out; ``web`` is
    the body of a ``[web]`` section."""
    path = tmp_path / "config.toml"
    missing = tmp_path / "dev" / "ttyUSB-not-plugged"
    text = textwrap.dedent(CONFIG).format(missing=missing)
    if not with_missing:
        text = text[: text.index('[[beds]]\nid = "bed-2"')]
    if web:
        text += f"\n[web]\n{web}\n"
    path.write_text(text)
    clock = ManualClock()
    config = load(path)
    store = TwinStore(config.store.path, KeyRing(generate_kek()))
    gateway = Gateway(config, clock=clock, notify=SdNotify(), listen_port=0, store=store)
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
    try:
        async with aiohttp.ClientSession() as session:
            yield OpsWard(gateway, clock, session)
    finally:
        gateway.supervisor.stop()
        await asyncio.wait_for(runner, 5)
        store.close()
