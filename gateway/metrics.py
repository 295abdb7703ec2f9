"""``GET /metrics``: the gateway's figures in the Prometheus text format (prometheus-client).

Each scrape builds the families from what the gateway already knows (its ``health()`` and
``beds()`` views, the loop monitor, the store writer): nothing is counted twice and nothing
here keeps state of its own but a cache of the slower store figures. Names and units:

=================================================  ===========================================
``bedside_gateway_info{gateway,version}``          1
``bedside_healthy``                                1 when ``/healthz`` would answer 200
``bedside_health_check_ok{check}``                 loop, store, alarm_path: 1 ok, 0 failing
``bedside_event_loop_lag_seconds``                 last lateness of the loop (and ``_max_``)
``bedside_task_running{task}``                     1 running, 0 starting/backing off/stopped
``bedside_task_restarts_total{task}``              supervisor restarts
``bedside_device_connected{bed,device,driver}``    1 connected
``bedside_device_frames_decoded_total``            codec frames decoded (same labels)
``bedside_device_bytes_received_total``            bytes from the device
``bedside_device_bytes_dropped_total``             bytes the codec could not use
``bedside_device_checksum_errors_total``           frames failing their checksum
``bedside_device_resyncs_total``                   codec resynchronisations
``bedside_device_reconnects_total``                link restarts by the supervisor
``bedside_device_last_reading_age_seconds``        since the device's last data (absent: none)
``bedside_device_stored_total``                    readings committed to the store
``bedside_device_condition{...,condition}``        1 per active technical condition
``bedside_store_commits_total`` and friends        writer counters (failed, refused, dropped)
``bedside_store_backlog``                          readings waiting for a commit
``bedside_store_commit_seconds{quantile}``         commit latency over the last 4096 commits
``bedside_store_condition{condition}``             1 per raised store condition
``bedside_store_used_bytes``                       bytes of the store file holding data
``bedside_store_free_page_bytes``                  bytes of free pages the file will reuse
``bedside_store_rows{table}``                      rows per table: the size of each data class
``bedside_hub_published_total``                    readings published by drivers
``bedside_hub_shed_total{subscriber,class}``       readings a slow consumer lost (by policy)
``bedside_sync_backlog{destination,kind}``         outbox rows not yet confirmed (with sync)
``bedside_alarm_engine_present``                   1 when an alarm engine reports in health()
``bedside_alarms_active{priority}``                open alarms: high, medium, low
=================================================  ===========================================

Commit latency is per commit, not per data class: the writer commits readings of every
class in one transaction (group commit), so there is no per-class latency to report. The
size per class is the row count of each table. Row counts take a full scan of big tables in
the store's one thread, so they are refreshed at most every ``ROWS_REFRESH`` seconds; the
byte figures are two PRAGMAs and are read on every scrape. A store that does not answer
within ``STORE_TIMEOUT`` seconds is reported by ``bedside_store_figures_ok 0``.

The endpoint needs no login (probes cannot log in) and carries no patient data: device ids,
counts and ages only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.clock import Clock
from gateway.health import LoopLag, Verdict, current_verdict, finite_or_none

log = structlog.get_logger(__name__)

#: Seconds between two refreshes of the store's row counts.
ROWS_REFRESH = 300.0
#: Seconds a scrape waits for the store's figures before reporting them missing.
STORE_TIMEOUT = 2.0

_DEVICE_LABELS = ["bed", "device", "driver"]
_PRIORITIES = ("high", "medium", "low")
# Codec counters, as CodecCounters.as_dict() names them.
_CODEC_COUNTERS = {
    "frames_decoded": "codec frames decoded",
    "bytes_received": "bytes received from the device",
    "bytes_dropped": "bytes the codec dropped (garbage, resync, bad frames)",
    "checksum_errors": "frames that failed their checksum",
    "resyncs": "codec resynchronisations",
}


class StoreCalls(Protocol):
    """The part of :class:`~gateway.twin.writer.StoreWriter` the metrics use."""

    store: Any

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any: ...


class MetricsView(Protocol):
    loop_lag: LoopLag
    writer: Any  # StoreWriter | None: read through StoreCalls

    def health(self) -> dict[str, Any]: ...

    def beds(self) -> list[dict[str, Any]]: ...


@dataclass(slots=True)
class StoreFigures:
    ok: bool = False
    used_bytes: int | None = None
    free_page_bytes: int | None = None
    rows: dict[str, int] = field(default_factory=dict)


def _bytes_figures(store: Any) -> tuple[int, int]:
    return int(store.used_bytes()), int(store.free_page_bytes())


class Metrics:
    """Renders ``/metrics`` for one gateway."""

    def __init__(self, view: MetricsView, clock: Clock) -> None:
        self.view = view
        self.clock = clock
        self._rows: dict[str, int] = {}
        self._rows_at: float | None = None
        #: Seconds between two row counts (full table scans); the bytes are read every time.
        self.rows_refresh = ROWS_REFRESH

    async def store_figures(self) -> StoreFigures:
        writer = getattr(self.view, "writer", None)
        if writer is None:
            return StoreFigures()
        figures = StoreFigures()
        try:
            used, free = await asyncio.wait_for(
                writer.call(_bytes_figures, writer.store), STORE_TIMEOUT
            )
            now = self.clock.monotonic()
            if self._rows_at is None or now - self._rows_at >= self.rows_refresh:
                self._rows = dict(
                    await asyncio.wait_for(writer.call(writer.store.counts), STORE_TIMEOUT)
                )
                self._rows_at = now
        except Exception as exc:  # a failing store is a figure, not a failed scrape
            log.warning("store figures unavailable for /metrics", error=type(exc).__name__)
            return figures
        figures.ok = True
        figures.used_bytes, figures.free_page_bytes = used, free
        figures.rows = dict(self._rows)
        return figures

    async def render(self) -> bytes:
        figures = await self.store_figures()
        health = self.view.health()
        beds = self.view.beds()
        result = current_verdict(self.view)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(health, beds, result, self.view.loop_lag, figures))
        return generate_latest(registry)

    def install(self, app: web.Application) -> None:
        """``GET /metrics`` on the page's application (no login: for scrapers)."""

        async def handle(request: web.Request) -> web.Response:
            body = await self.render()
            response = web.Response(body=body, headers={"Cache-Control": "no-store"})
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        app.router.add_get("/metrics", handle)


class _Snapshot(Collector):
    """One scrape's families, built from JSON views taken just before."""

    def __init__(
        self,
        health: Mapping[str, Any],
        beds: list[dict[str, Any]],
        verdict: Verdict,
        loop: LoopLag,
        store: StoreFigures,
    ) -> None:
        self.health = health
        self.beds = beds
        self.verdict = verdict
        self.loop = loop
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield from self._gateway()
        yield from self._devices()
        yield from self._store()
        yield from self._hub()
        yield from self._sync()
        yield from self._alarms()

    def _gateway(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "bedside_gateway_info", "gateway id and version", labels=["gateway", "version"]
        )
        info.add_metric([str(self.health.get("gateway")), str(self.health.get("version"))], 1)
        yield info
        yield GaugeMetricFamily(
            "bedside_healthy", "1 when /healthz answers 200", value=int(self.verdict.healthy)
        )
        checks = GaugeMetricFamily(
            "bedside_health_check_ok", "1 when this part of /healthz passes", labels=["check"]
        )
        for name, check in (
            ("loop", self.verdict.loop),
            ("store", self.verdict.store),
            ("alarm_path", self.verdict.alarm_path),
        ):
            checks.add_metric([name], int(check.ok))
        yield checks
        yield GaugeMetricFamily(
            "bedside_event_loop_lag_seconds",
            "seconds the event loop woke late at its last tick",
            value=self.loop.lag,
        )
        yield GaugeMetricFamily(
            "bedside_event_loop_lag_max_seconds",
            "largest event loop lateness since start, seconds",
            value=self.loop.max_lag,
        )
        running = GaugeMetricFamily(
            "bedside_task_running", "1 when the supervised task runs", labels=["task"]
        )
        restarts = CounterMetricFamily(
            "bedside_task_restarts", "restarts of a supervised task", labels=["task"]
        )
        for task in _list(self.health.get("tasks")):
            name = str(task.get("name"))
            running.add_metric([name], int(task.get("state") == "running"))
            restarts.add_metric([name], _number(task.get("restarts")))
        yield running
        yield restarts

    def _devices(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "bedside_device_connected", "1 when the device link is up", labels=_DEVICE_LABELS
        )
        codec = {
            key: CounterMetricFamily(f"bedside_device_{key}", text, labels=_DEVICE_LABELS)
            for key, text in _CODEC_COUNTERS.items()
        }
        reconnects = CounterMetricFamily(
            "bedside_device_reconnects",
            "times the supervisor restarted the device's link",
            labels=_DEVICE_LABELS,
        )
        stored = CounterMetricFamily(
            "bedside_device_stored", "readings committed to the store", labels=_DEVICE_LABELS
        )
        age = GaugeMetricFamily(
            "bedside_device_last_reading_age_seconds",
            "seconds since the device last sent data (absent before its first data)",
            labels=_DEVICE_LABELS,
        )
        conditions = GaugeMetricFamily(
            "bedside_device_condition",
            "1 per active technical condition of the device",
            labels=[*_DEVICE_LABELS, "condition"],
        )
        for bed, device in _devices(self.beds):
            labels = [bed, str(device.get("id")), str(device.get("driver"))]
            connected.add_metric(labels, int(device.get("state") == "connected"))
            for key, family in codec.items():
                if key in device:
                    family.add_metric(labels, _number(device.get(key)))
            reconnects.add_metric(labels, _number(device.get("restarts")))
            if "stored" in device:
                stored.add_metric(labels, _number(device.get("stored")))
            last = finite_or_none(device.get("last_data_age"))
            if last is not None:
                age.add_metric(labels, last)
            for condition in device.get("conditions") or []:
                conditions.add_metric([*labels, str(condition)], 1)
        yield connected
        yield from codec.values()
        yield reconnects
        yield stored
        yield age
        yield conditions

    def _store(self) -> Iterator[Metric]:
        health = self.health.get("store")
        store = health if isinstance(health, Mapping) else {}
        yield GaugeMetricFamily(
            "bedside_store_present", "1 when the gateway has a store", value=int(bool(store))
        )
        for key, text in (
            ("commits", "store commits"),
            ("stored", "readings committed"),
            ("failed_commits", "commits that failed (disk or database error)"),
            ("refused_full", "commits refused for lack of space"),
            ("rejected", "readings refused on their own (no usable time)"),
            ("evicted_blocks", "waveform blocks evicted for space"),
        ):
            if key in store:
                yield CounterMetricFamily(f"bedside_store_{key}", text, value=_number(store[key]))
        dropped = CounterMetricFamily(
            "bedside_store_dropped",
            "readings dropped from an overlong backlog, by class",
            labels=["class"],
        )
        for cls in ("waveforms", "numerics"):
            if f"dropped_{cls}" in store:
                dropped.add_metric([cls], _number(store[f"dropped_{cls}"]))
        yield dropped
        if "backlog" in store:
            yield GaugeMetricFamily(
                "bedside_store_backlog",
                "readings waiting for a commit",
                value=_number(store["backlog"]),
            )
        latency = GaugeMetricFamily(
            "bedside_store_commit_seconds",
            "commit latency quantile over the last 4096 commits, seconds",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "commit_seconds_p50"), ("0.99", "commit_seconds_p99")):
            value = finite_or_none(store.get(key))
            if value is not None:
                latency.add_metric([quantile], value)
        yield latency
        conditions = GaugeMetricFamily(
            "bedside_store_condition", "1 per raised store condition", labels=["condition"]
        )
        for condition in store.get("conditions") or {}:
            conditions.add_metric([str(condition)], 1)
        yield conditions
        figures = self.store
        yield GaugeMetricFamily(
            "bedside_store_figures_ok",
            "1 when the store answered this scrape's size queries",
            value=int(figures.ok),
        )
        if figures.used_bytes is not None:
            yield GaugeMetricFamily(
                "bedside_store_used_bytes",
                "bytes of the store file holding data",
                value=figures.used_bytes,
            )
        if figures.free_page_bytes is not None:
            yield GaugeMetricFamily(
                "bedside_store_free_page_bytes",
                "bytes of free pages in the store file, reused before it grows",
                value=figures.free_page_bytes,
            )
        rows = GaugeMetricFamily(
            "bedside_store_rows",
            "rows per store table (size of each data class)",
            labels=["table"],
        )
        for table, count in sorted(figures.rows.items()):
            rows.add_metric([table], count)
        yield rows

    def _hub(self) -> Iterator[Metric]:
        hub = self.health.get("hub")
        if not isinstance(hub, Mapping):
            return
        yield CounterMetricFamily(
            "bedside_hub_published",
            "readings published by drivers",
            value=_number(hub.get("published")),
        )
        shed = CounterMetricFamily(
            "bedside_hub_shed",
            "readings a slow consumer lost, by class (waveforms first, never events)",
            labels=["subscriber", "class"],
        )
        queued = GaugeMetricFamily(
            "bedside_hub_queued", "readings queued for a consumer", labels=["subscriber"]
        )
        subscribers = hub.get("subscribers")
        for name, stats in subscribers.items() if isinstance(subscribers, Mapping) else ():
            if not isinstance(stats, Mapping):
                continue
            for cls in ("waveforms", "numerics"):
                if f"shed_{cls}" in stats:
                    shed.add_metric([str(name), cls], _number(stats[f"shed_{cls}"]))
            if "queued" in stats:
                queued.add_metric([str(name)], _number(stats["queued"]))
        yield shed
        yield queued

    def _sync(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "bedside_sync_backlog",
            "outbox entries not yet confirmed by the destination",
            labels=["destination", "kind"],
        )
        sync = self.health.get("sync")
        destinations: Iterable[Any]
        if isinstance(sync, Mapping):
            destinations = [{"name": k, **v} for k, v in sync.items() if isinstance(v, Mapping)]
        else:
            destinations = _list(sync)
        for destination in destinations:
            name = str(destination.get("name"))
            kinds = destination.get("backlog")
            if isinstance(kinds, Mapping):
                for kind, count in kinds.items():
                    backlog.add_metric([name, str(kind)], _number(count))
            elif kinds is not None:
                backlog.add_metric([name, "all"], _number(kinds))
        yield backlog

    def _alarms(self) -> Iterator[Metric]:
        engine = self.health.get("alarms")
        present = isinstance(engine, Mapping)
        yield GaugeMetricFamily(
            "bedside_alarm_engine_present",
            "1 when an alarm engine reports in health()",
            value=int(present),
        )
        if not present:
            return
        assert isinstance(engine, Mapping)
        counts = dict.fromkeys(_PRIORITIES, 0)
        alarms = [a for bed in self.beds for a in _list(bed.get("alarms"))]
        alarms += _list(engine.get("gateway_alarms"))
        for alarm in alarms:
            priority = str(alarm.get("priority"))
            if priority in counts:
                counts[priority] += 1
        active = GaugeMetricFamily(
            "bedside_alarms_active", "open alarms by priority", labels=["priority"]
        )
        for priority, count in counts.items():
            active.add_metric([priority], count)
        yield active


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _devices(beds: list[dict[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for bed in beds:
        for device in _list(bed.get("devices")):
            yield str(bed.get("id")), device


def _number(value: Any) -> float:
    number = finite_or_none(value)
    return 0.0 if number is None else number
