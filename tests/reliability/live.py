"""An in-process gateway on a ManualClock for fault tests: real ptys, store, page."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from drivers.clock import ManualClock
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore
from tests.support.ops_ward import OpsWard

BED = """
[[beds]]
id = "bed-1"
  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  {device}
"""


def config_text(*, device: str = 'simulate = "normal"', extra: str = "", beds: str = "") -> str:
    return (
        textwrap.dedent(
            """
        [gateway]
        id = "ward-faults"
        data_dir = "state"
        listen = "127.0.0.1:8080"
        stale_after = 5.0
        """
        )
        + extra
        + textwrap.dedent(BED).format(device=device)
        + textwrap.dedent(beds)
    )


class LiveWard(OpsWard):
    async def alarms(self) -> set[tuple[str, str, str]]:
        """(bed, device, condition) of every active alarm, read through the page's API."""
        code, body = await self.get_json("/api/alarms")
        assert code == 200
        alarms = body["alarms"] if isinstance(body, dict) else body
        return {(a["bed"], a["source"], a["condition"]) for a in alarms if a["state"] == "active"}


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, text: str, clock: ManualClock | None = None
) -> AsyncIterator[LiveWard]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    clock = clock or ManualClock()
    config = load(path)
    store = TwinStore(
        config.store.path, KeyRing(generate_kek()), max_bytes=config.store.quota_bytes
    )
    gateway = Gateway(config, clock=clock, notify=SdNotify(), listen_port=0, store=store)
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
    try:
        async with aiohttp.ClientSession() as session:
            yield LiveWard(gateway, clock, session)
    finally:
        gateway.supervisor.stop()
        await asyncio.wait_for(runner, 5)
        store.close()
