"""The running gateway: builds hub, twin, devices, simulators and page from a :class:`Config`.

Wiring only; each part's behaviour lives in its own module. Data path::

    simulator -> pty -> SerialTransport -> device model (codec) -> hub -> twin -> page/API
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, assert_never, cast

import structlog
from pydantic import BaseModel

from drivers import registry
from drivers.clock import Clock, SystemClock
from drivers.device import BleDeviceModel, SerialDeviceModel, SerialSettings
from drivers.infusion.pump import PumpSettings
from drivers.modbus_device import ModbusFleet, PumpModel
from drivers.readings import Condition, DeviceEvent, Reading
from drivers.registry import DeviceModel, Simulator
from drivers.serial_device import open_serial, run_serial_device
from drivers.simulate.replay import ReplaySimulator
from gateway import __version__
from gateway.alarms import service as alarm_service
from gateway.analysis.service import EcgAnalysisService
from gateway.config import Config, DeviceConfig
from gateway.health import LoopLag, install_healthz, key_status, loop_health
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.supervisor import SdNotify, Supervisor
from gateway.sync.api import add_sync_routes
from gateway.sync.desk import SyncDesk
from gateway.sync.factory import build as build_destination
from gateway.sync.factory import policy as sync_policy
from gateway.sync.worker import SyncWorker
from gateway.twin.crypto import DecryptionFailed, KeyProblem
from gateway.twin.errors import StoreError
from gateway.twin.state import BedSpec, Twin
from gateway.twin.store import OutboxItem, TwinStore
from gateway.twin.writer import SpacePolicy, StoreWriter
from gateway.web.auth import Auth, UserFile
from gateway.web.server import WebServer
from gateway.web.waveforms import WaveformBuffer

log = structlog.get_logger(__name__)


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        notify: SdNotify | None = None,
        listen_port: int | None = None,
        store: TwinStore | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.hub = Hub()
        self.twin = Twin(
            [BedSpec(b.id, b.label) for b in config.beds], self.clock, config.stale_after
        )
        self.supervisor = Supervisor(self.clock, notify=notify)
        self.models: dict[str, DeviceModel] = {}
        self._bed_of: dict[str, str] = {}
        self._started = self.clock.monotonic()
        self.sim_dir = config.data_dir / "sim"
        self.modbus = ModbusFleet(self.clock, self.sim_dir)
        self.pumps: dict[str, PumpModel] = {}

        for bed, device in config.devices:
            self._bed_of[device.id] = bed.id
            self._add_device(bed.id, device)

        twin_feed = self.hub.subscribe("twin", maxsize=4096)
        self.supervisor.add("twin", lambda: self.twin.consume(twin_feed), essential=True)

        # ECG analysis: every ECG lead and pleth waveform through its own streaming pipeline;
        # derived HR and rhythm events go back on the hub (gateway/analysis/service.py).
        self.analysis = EcgAnalysisService(
            self.hub, self.clock, config.analysis, bed_of=self._bed_of.get
        )
        analysis_feed = self.hub.subscribe(
            "analysis", maxsize=2048, accepts=EcgAnalysisService.accepts
        )
        self.supervisor.add("analysis", lambda: self.analysis.run(analysis_feed))

        # The store is not essential: live display (and, later, local alarms) must go on
        # when the disk fails; the writer raises store conditions instead.
        self.store = store
        self.writer: StoreWriter | None = None
        if store is not None:
            for problem in store.problems:
                log.error("damaged row in the store", problem=problem)
            self._bind_patients(store)
            self.writer = StoreWriter(
                store,
                self._bed_of.get,
                self.clock,
                data_dir=config.data_dir,
                retention=config.store.retention,
                space=SpacePolicy(
                    quota=config.store.quota_bytes, min_free_bytes=config.store.min_free_bytes
                ),
            )
            store_feed = self.hub.subscribe("store", maxsize=100_000)
            writer = self.writer
            self.supervisor.add("store", lambda: writer.run(store_feed))
        # Sync: one worker per destination, draining the store's outbox; restartable, never
        # essential (a dead network must not stop the ward), each with its own backoff.
        self.sync: list[SyncWorker] = []
        if store is not None and self.writer is not None:
            for dest in config.destinations:
                worker = SyncWorker(
                    build_destination(dest, config.gateway_id, self.clock),
                    store,
                    self.writer.call,
                    self.clock,
                    sync_policy(dest),
                    on_reachable=lambda name, ok, why: self.alarms.sync_status(name, ok, why),
                    on_conditions=lambda name, found: self.alarms.sync_conditions(name, found),
                    on_delivered=functools.partial(self._alarms_forwarded, dest.name),
                )
                self.sync.append(worker)
                self.supervisor.add(f"sync:{dest.name}", worker.run)
        self.sync_desk = (
            None
            if store is None or self.writer is None
            else SyncDesk(self.sync, store, self.writer.call, self.clock)
        )
        # Recent waveforms for the page's bed view: a lossy feed (shedding is fine here).
        self.waveforms = WaveformBuffer(self._bed_of.get)
        wave_feed = self.hub.subscribe("page-waveforms", accepts=WaveformBuffer.accepts)
        self.supervisor.add("page-waveforms", lambda: self.waveforms.consume(wave_feed))
        web_config = config.web
        self.auth = Auth(
            None if web_config.users_file is None else UserFile(web_config.users_file),
            self.clock,
            audit=self._audit,
            require_login_to_view=web_config.require_login_to_view,
            session_lifetime=web_config.session_lifetime,
            idle_timeout=web_config.idle_timeout,
            max_failures=web_config.max_failed_logins,
            lockout=web_config.lockout,
        )
        # Event-loop lateness, for /healthz and /metrics (installed by _ops_routes).
        self.loop_lag = LoopLag(self.clock)
        self.supervisor.add("loop-lag", self.loop_lag.run)
        self.metrics = Metrics(self, self.clock)
        # Local alarms: fed by the hub, never waiting on the disk or the network; every
        # state change goes to the store's alarm log (see gateway/alarms/service.py).
        self.alarms, self.page_version = alarm_service.build(
            beds=[(b.id, b.limit_profile, b.limits) for b in config.beds],
            settings=config.alarms,
            clock=self.clock,
            twin=self.twin,
            bed_of=self._bed_of.get,
            writer=self.writer,
            pages=lambda: self.web.clients,
            limit_file=config.data_dir / "alarm-limits.json",
        )
        if self.sync:
            self.alarms.log.on_committed = self._wake_sync
            self.alarms.expect_forwarding(
                {
                    d.name: d.confirm_alarms_within
                    for d in config.destinations
                    if d.confirm_alarms_within is not None
                }
            )
        alarm_feed = self.hub.subscribe("alarms", maxsize=4096, accepts=alarm_service.accepts)
        self.supervisor.add("alarms", lambda: self.alarms.consume(alarm_feed), essential=True)
        self.supervisor.add("alarm-timers", self.alarms.run_timers, essential=True)
        self.supervisor.add("alarm-log", self.alarms.log.run)
        self.web = WebServer(
            host=config.listen_host,
            port=config.listen_port if listen_port is None else listen_port,
            beds=self.beds,
            health=self.health,
            version=self.page_version.version,
            wait_changed=self.page_version.wait_changed,
            clock=self.clock,
            stale_after=config.stale_after,
            auth=self.auth,
            waveforms=self.waveforms,
            extra_routes=self._ops_routes,
            alarms=self.alarms,
        )
        self.supervisor.add("web", self._serve_page, essential=True)

    def _ops_routes(self, app: Any) -> None:
        """/healthz and /metrics beside the page's routes (for probes: no login)."""
        install_healthz(app, self)
        self.metrics.install(app)
        add_sync_routes(app, self.sync_status, self.sync_desk)

    def _add_device(self, bed_id: str, device: DeviceConfig) -> None:
        spec = registry.get(device.driver)
        if spec.transport == "serial":
            self._add_serial_device(bed_id, device)
        elif spec.transport == "modbus-tcp" or spec.transport == "modbus-rtu":
            self._add_modbus_device(bed_id, device)
        elif spec.transport == "ble":
            self._add_ble_device(bed_id, device)
        else:
            assert_never(spec.transport)

    def _publisher(self, device_id: str) -> Callable[[Reading], None]:
        """Publish a device's readings; its reconnect resets the supervisor's backoff."""
        task = f"device:{device_id}"

        def publish(reading: Reading) -> None:
            if (
                isinstance(reading, DeviceEvent)
                and reading.condition is Condition.DISCONNECTED
                and not reading.active
            ):
                self.supervisor.note_recovered(task)
            self.hub.publish(reading)

        return publish

    def _add_serial_device(self, bed_id: str, device: DeviceConfig) -> None:
        spec = registry.get(device.driver)
        model = cast(SerialDeviceModel, spec.make_model(device.id, device.settings))
        self.models[device.id] = model
        self.twin.register_device(bed_id, device.id, device.driver, model.counters)
        port: str | None = None
        settings = device.settings
        if device.played:
            link = str(self.sim_dir / device.id)
            simulator: Simulator
            if device.replay is not None:
                simulator = ReplaySimulator(device.replay, self.clock, link)
            else:
                assert spec.make_simulator is not None and device.simulate is not None
                simulator = spec.make_simulator(settings, device.simulate, self.clock, link)
            self.supervisor.add(f"simulator:{device.id}", simulator.run)
            port = simulator.port
            settings = _pty_settings(settings)
        publish = self._publisher(device.id)

        async def run_device() -> None:
            transport = open_serial(settings, port)  # type: ignore[arg-type]
            await run_serial_device(device.id, model, transport, publish, self.clock)

        self.supervisor.add(f"device:{device.id}", run_device)

    def _add_modbus_device(self, bed_id: str, device: DeviceConfig) -> None:
        """A pump: its line (shared with pumps on the same port) and its poller task."""
        spec = registry.get(device.driver)
        model = cast(PumpModel, spec.make_model(device.id, device.settings))
        self.models[device.id] = self.pumps[device.id] = model
        self.twin.register_device(bed_id, device.id, device.driver, model.counters)
        run_device = self.modbus.runner(
            device.id,
            model,
            cast(PumpSettings, device.settings),
            simulate=device.simulate,
            replay=device.replay,
            publish=self._publisher(device.id),
        )
        for name, simulator in self.modbus.take_simulators():
            self.supervisor.add(name, simulator.run)
        self.supervisor.add(f"device:{device.id}", run_device)

    def _add_ble_device(self, bed_id: str, device: DeviceConfig) -> None:
        # Imported here: bleak (and bumble for the virtual radio) load only when configured.
        from drivers.ble_device import run_ble_device
        from drivers.ble_settings import BleSettings
        from drivers.transport.ble import BleBackend, BleTarget, BleTransport

        spec = registry.get(device.driver)
        model = cast(BleDeviceModel, spec.make_model(device.id, device.settings))
        self.models[device.id] = model
        self.twin.register_device(bed_id, device.id, device.driver, model.counters)
        settings = cast(BleSettings, device.settings)
        address, name = settings.address, settings.name
        if device.simulate is not None:
            # The simulated peripheral joins the virtual radio; its address is its "port".
            assert spec.make_simulator is not None
            simulator = spec.make_simulator(settings, device.simulate, self.clock, device.id)
            self.supervisor.add(f"simulator:{device.id}", simulator.run)
            address, name = simulator.port, None
        target = BleTarget(address=address, name=name, service_uuid=model.service_uuid)
        backend = BleBackend.named(self.config.ble.backend)
        adapter = self.config.ble.adapter
        publish = self._publisher(device.id)

        async def run_device() -> None:
            transport = BleTransport(target, backend=backend, clock=self.clock, adapter=adapter)
            await run_ble_device(device.id, model, transport, publish, self.clock)

        self.supervisor.add(f"device:{device.id}", run_device)

    async def _serve_page(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.web.stop()

    async def _audit(self, actor: str, action: str, detail: str) -> None:
        """Page logins and logouts into the store's audit log, in the writer's thread (the
        only one that may use the store's connection while the gateway runs)."""
        writer = self.writer
        if writer is not None:
            store, now = writer.store, self.clock.wall()
            await writer.call(
                lambda: store.audit(actor, action, bed_id=None, detail=detail, now=now)
            )

    # -- views for the API -----------------------------------------------------------------
    def beds(self) -> list[dict[str, Any]]:
        beds = self.twin.snapshot(self._device_health)
        self.alarms.decorate(beds)
        return beds

    def _bind_patients(self, store: TwinStore) -> None:
        """Admit the patients the config names (the simulated ward's demo patients)."""
        now = self.clock.wall()
        for bed in self.config.beds:
            if bed.patient is None:
                continue
            try:
                current = store.current_admission(bed.id)
                if current is None or store.patient(current) != bed.patient:
                    store.admit(bed.id, bed.patient, now)
                    log.info("admission started from config", bed=bed.id)
            except (StoreError, DecryptionFailed, KeyProblem) as exc:
                # A damaged admission row must not keep the page and live data down.
                log.error("cannot bind the configured patient", bed=bed.id, error=str(exc))

    def _device_health(self, device_id: str) -> dict[str, Any]:
        health = self.supervisor.health[f"device:{device_id}"]
        extra: dict[str, Any] = {"restarts": health.restarts, "last_error": health.last_error}
        if self.writer is not None:
            extra["stored"] = self.writer.stored_by_device.get(device_id, 0)
        if device_id in self.pumps:
            extra["infusion"] = dict(self.pumps[device_id].program)
        return extra

    def health(self) -> dict[str, Any]:
        return {
            "gateway": self.config.gateway_id,
            "version": __version__,
            "uptime": round(self.clock.monotonic() - self._started, 3),
            "beds": len(self.config.beds),
            "devices": len(self.models),
            "tasks": self.supervisor.as_dict(),
            "hub": {"published": self.hub.published, "subscribers": self.hub.stats()},
            "store": None if self.writer is None else self.writer.health(),
            "loop": loop_health(self.loop_lag),
            "key": key_status(self.config.store.key_file, self.config.store.credential),
            "alarms": self.alarms.health(),
            "sync": self.sync_status(),
        }

    def _wake_sync(self) -> None:
        """An alarm record was committed: every destination looks at its outbox now."""
        for worker in self.sync:
            worker.wake()

    def _alarms_forwarded(self, destination: str, items: Sequence[OutboxItem]) -> None:
        """``destination`` confirmed these rows: tell the alarm engine which alarms it now
        knows to be forwarded."""
        # Only the records the engine waits for: a high alarm's raise or escalation (an AA
        # for a medium raise must not confirm a later escalation nobody has seen).
        ids = [
            i.record["alarm"]
            for i in items
            if i.kind == "alarm"
            and i.record.get("alarm")
            and i.record.get("priority") == "high"
            and i.record.get("change") in ("raised", "escalated")
        ]
        if ids:
            self.alarms.forwarded(destination, ids)

    def sync_status(self) -> list[dict[str, Any]]:
        """Per destination: state, backlog by class, oldest unsent age, last success and
        error, dead letters, and the technical conditions it raises now."""
        now = self.clock.wall()
        return [{**w.status.as_dict(now), "conditions": w.conditions()} for w in self.sync]

    async def run(self, *, handle_signals: bool = True) -> None:
        """Bind the page (failing fast if it cannot), then run every task until stopped."""
        await self.web.start()
        log.info(
            "page listening",
            url=self.config.page_url(self.web.port),
            gateway=self.config.gateway_id,
            beds=len(self.config.beds),
            devices=len(self.models),
        )
        await self.supervisor.run(handle_signals=handle_signals)


def _pty_settings(settings: BaseModel) -> BaseModel:
    """A played device's link is a pty, and ptys carry no parity: run it 8N1.

    The real setting still reaches pyserial for a real port (the transport's tests check
    that); a simulator's bytes are the device's bytes either way.
    """
    if isinstance(settings, SerialSettings):
        return settings.model_copy(update={"parity": "N", "bytesize": 8})
    return settings
