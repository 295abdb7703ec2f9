"""The running gateway: builds hub, twin, devices, simulators and page from a :class:`Config`.

Wiring only; each part's behaviour lives in its own module. Data path::

    simulator -> pty -> SerialTransport -> device model (codec) -> hub -> twin -> page/API
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import structlog
from pydantic import BaseModel

from drivers import registry
from drivers.clock import Clock, SystemClock
from drivers.device import SerialDeviceModel, SerialSettings
from drivers.readings import Condition, DeviceEvent, Reading
from drivers.registry import DeviceModel, Simulator
from drivers.serial_device import open_serial, run_serial_device
from drivers.simulate.replay import ReplaySimulator
from gateway import __version__
from gateway.config import Config, DeviceConfig
from gateway.hub import Hub
from gateway.supervisor import SdNotify, Supervisor
from gateway.twin.crypto import DecryptionFailed, KeyProblem
from gateway.twin.errors import StoreError
from gateway.twin.state import BedSpec, Twin
from gateway.twin.store import TwinStore
from gateway.twin.writer import SpacePolicy, StoreWriter
from gateway.web.server import WebServer

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

        for bed, device in config.devices:
            self._bed_of[device.id] = bed.id
            self._add_device(bed.id, device)

        twin_feed = self.hub.subscribe("twin", maxsize=4096)
        self.supervisor.add("twin", lambda: self.twin.consume(twin_feed), essential=True)

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
        self.web = WebServer(
            host=config.listen_host,
            port=config.listen_port if listen_port is None else listen_port,
            beds=self.beds,
            health=self.health,
            version=lambda: self.twin.version,
            wait_changed=self.twin.wait_changed,
            clock=self.clock,
            stale_after=config.stale_after,
        )
        self.supervisor.add("web", self._serve_page, essential=True)

    def _add_device(self, bed_id: str, device: DeviceConfig) -> None:
        spec = registry.get(device.driver)
        if spec.transport == "serial":
            self._add_serial_device(bed_id, device)
        else:
            raise NotImplementedError(f"no runner for {spec.transport} devices yet")

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

    async def _serve_page(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.web.stop()

    # -- views for the API -----------------------------------------------------------------
    def beds(self) -> list[dict[str, Any]]:
        return self.twin.snapshot(self._device_health)

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
        }

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
