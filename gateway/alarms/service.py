"""The alarm engine inside the running gateway: built from the config, fed by the hub.

Decisions recorded here:

* Alarms are not published on the hub: they are not readings, and no driver or analysis
  stage needs them. Every alarm state change is in the store's ``alarm_log`` (and its
  outbox, for destinations that carry ``alarm``), which is where the sync layer reads them;
  it reports each destination's reachability back through :meth:`AlarmEngine.sync_status`.
* The page's version (the SSE event id, what the page stream waits on) is the twin's
  version plus the engine's (:class:`PageVersion`): both only grow, so the sum changes
  whenever either does, and the page re-renders on alarm changes as on new vitals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog

from drivers.clock import Clock
from drivers.readings import DeviceEvent, Numeric, Reading
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.limits import Limits, profile
from gateway.alarms.log import AlarmLog
from gateway.alarms.model import AlarmSettings
from gateway.alarms.persist import LimitFile
from gateway.alarms.selfcheck import SelfCheck, SoundOutput
from gateway.twin.state import Twin
from gateway.twin.writer import StoreWriter

log = structlog.get_logger(__name__)


def accepts(reading: Reading) -> bool:
    """What the engine takes from the hub: numerics and device events (never waveforms)."""
    return isinstance(reading, Numeric | DeviceEvent)


class PageVersion:
    """The twin's and the engine's versions as one, for the page stream."""

    def __init__(self, twin: Twin, engine_version: Callable[[], int], engine_wait: Any) -> None:
        self._twin = twin
        self._engine_version = engine_version
        self._engine_wait = engine_wait

    def version(self) -> int:
        return self._twin.version + self._engine_version()

    async def wait_changed(self, seen: int) -> int:
        """Return the combined version once it differs from ``seen``."""
        while self.version() == seen:
            twin = asyncio.ensure_future(self._twin.wait_changed(self._twin.version))
            engine = asyncio.ensure_future(self._engine_wait(self._engine_version()))
            try:
                await asyncio.wait({twin, engine}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                twin.cancel()
                engine.cancel()
        return self.version()


def build(
    *,
    beds: Iterable[tuple[str, str, Mapping[str, Limits] | None]],
    settings: AlarmSettings,
    clock: Clock,
    twin: Twin,
    bed_of: Callable[[str], str | None],
    writer: StoreWriter | None,
    pages: Callable[[], int],
    limit_file: Path | None = None,
) -> tuple[AlarmEngine, PageVersion]:
    """The engine for a gateway. ``beds``: (bed id, profile name, limits or ``None`` for the
    profile's defaults). ``pages``: how many pages are connected now (the web server's
    open streams). ``limit_file``: where bedside limit changes are kept across restarts
    (:mod:`gateway.alarms.persist`; ``None``: not kept)."""
    holder: dict[str, AlarmEngine] = {}

    def on_trouble(detail: str | None) -> None:
        holder["engine"].log_trouble(detail)

    alarm_log = AlarmLog(writer, clock, on_trouble)

    async def audit(actor: str, action: str, bed_id: str | None, detail: str) -> bool:
        if writer is None:
            return False
        store = writer.store
        now = clock.wall()
        try:
            await writer.call(
                lambda: store.audit(actor, action, bed_id=bed_id, detail=detail, now=now)
            )
        except Exception as exc:  # the action stands; the store alarm says the disk is failing
            alarm_log.report(f"audit entry not stored: {type(exc).__name__}: {exc}")
            return False
        return True

    check = SelfCheck(
        clock,
        interval=settings.self_check_interval,
        timeout=settings.self_check_timeout,
        expect_page=settings.expect_page,
        clients=pages,
    )
    configured = {
        bed: (name, dict(limits) if limits is not None else profile(name))
        for bed, name, limits in beds
    }
    saved = None if limit_file is None else LimitFile(limit_file)
    current = dict(configured)
    if saved is not None:
        for bed, (name, limits) in configured.items():
            restored = saved.restore(bed, limits)
            if restored is not None:
                current[bed] = (name, restored)
                log.info("bedside alarm limits restored", bed=bed)

    async def persist(bed: str, limits: Mapping[str, Limits]) -> bool:
        if saved is None:
            return True  # nowhere to keep them: the audit entry is the record
        try:
            await asyncio.to_thread(saved.save, bed, configured[bed][1], limits)
        except OSError as exc:
            log.error("alarm limits not saved; they hold until restart", bed=bed, error=str(exc))
            return False
        return True

    engine = AlarmEngine(
        current,
        clock,
        bed_of=bed_of,
        settings=settings,
        twin=twin,
        alarm_log=alarm_log,
        store_conditions=None if writer is None else (lambda: writer.conditions),
        auditor=audit,
        self_check=check,
        sound=SoundOutput(settings.sound),
        persist=persist,
    )
    holder["engine"] = engine
    page = PageVersion(twin, lambda: engine.version, engine.wait_changed)
    engine.set_page_version(page.version)
    return engine, page
