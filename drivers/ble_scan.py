"""Which BLE driver fits an advertising device, for ``bedside-gateway scan --ble``.

A driver fits a device that advertises its model's primary service. Some devices do not
advertise the service the driver needs (a Polar H10 advertises only the heart-rate
service; its PMD service is found after connecting), so a driver may also be recognised by
the advertised name (:data:`NAME_PREFIXES`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers import gatt, registry
from drivers.clock import Clock
from drivers.transport.ble import BleBackend, adapter_lock, translate

__all__ = ["NAME_PREFIXES", "Advertised", "ble_drivers", "scan_ble"]

#: Advertised-name prefixes that identify a device whose driver's service is not advertised.
NAME_PREFIXES: Final[dict[str, str]] = {"Polar H10": "polar-h10"}


@dataclass(frozen=True, slots=True)
class Advertised:
    """One device heard while scanning, with the drivers that fit it (best first)."""

    address: str
    name: str | None
    rssi: int
    service_uuids: tuple[str, ...]
    drivers: tuple[str, ...]

    def services(self) -> list[str]:
        """Advertised services by name where known."""
        return [gatt.NAMES.get(u, u) for u in self.service_uuids]


def ble_drivers() -> dict[str, str]:
    """Driver name -> the primary service UUID its model looks for, for every BLE driver."""
    found = {}
    for name in registry.names():
        spec = registry.get(name)
        if spec.transport == "ble":
            model = spec.make_model("scan", spec.settings())
            found[name] = getattr(model, "service_uuid", "")
    return found


def fitting(
    name: str | None, service_uuids: tuple[str, ...], drivers: dict[str, str]
) -> tuple[str, ...]:
    by_name = [d for prefix, d in NAME_PREFIXES.items() if name and name.startswith(prefix)]
    # A driver known by its name fits only by name (the H10's advertised service is the
    # plain heart-rate one, which every strap shares).
    named = set(NAME_PREFIXES.values())
    by_service = [d for d, uuid in drivers.items() if uuid in service_uuids and d not in named]
    return tuple(by_name + sorted(by_service))


async def scan_ble(
    backend: BleBackend,
    clock: Clock,
    seconds: float,
    *,
    adapter: str = "hci0",
    only_fitting: bool = True,
) -> list[Advertised]:
    """Listen for ``seconds`` of ``clock`` time; devices (fitting a driver unless
    ``only_fitting`` is false) sorted by signal strength. Errors come out as DeviceError."""
    drivers = ble_drivers()
    heard: dict[str, tuple[BLEDevice, AdvertisementData]] = {}

    def seen(device: BLEDevice, advertisement: AdvertisementData) -> None:
        heard[device.address] = (device, advertisement)

    try:
        async with adapter_lock(adapter):
            scanner = BleakScanner(seen, **backend.scanner_kwargs(adapter))
            await scanner.start()
            try:
                await clock.sleep(seconds)
            finally:
                await scanner.stop()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise translate(exc, adapter=adapter, what="BLE scan", connected=False) from exc
    found = []
    for device, adv in heard.values():
        name = adv.local_name or device.name
        uuids = tuple(u.lower() for u in adv.service_uuids)
        fits = fitting(name, uuids, drivers)
        if fits or not only_fitting:
            found.append(Advertised(device.address, name, adv.rssi, uuids, fits))
    return sorted(found, key=lambda a: (-a.rssi, a.address))
