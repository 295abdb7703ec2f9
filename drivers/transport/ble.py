"""Bluetooth LE transport: the only code in bedside-gateway that talks GATT.

Built on bleak. :class:`BleTransport` finds one peripheral (by address, by advertised name,
or as the first advertising a service UUID), connects, discovers its services, reads and
writes characteristics, subscribes to notifications and reports the loss of the link. It
knows nothing of any profile's meaning except the two every medical BLE device carries:
Device Information (0x180A, read into an :class:`~drivers.readings.Identity`) and Battery
(0x180F, its level in percent; :data:`LOW_BATTERY_PERCENT` and below is low).

Lifecycle: ``UNOPENED -> OPEN -> CLOSED``, like the serial transport; one connection per
transport, a retry builds a new one.

Adapters refuse parallel connection attempts (BlueZ answers ``InProgress``), so scanning and
connecting take :func:`adapter_lock` for their adapter: one connect at a time per adapter,
while devices already connected keep streaming (notifications need no lock).

Which bleak backend runs is configuration (:class:`BleBackend`): ``bluez`` is plain bleak on
BlueZ over D-Bus (production); ``virtual`` is the bumble virtual radio of
:mod:`drivers.simulate.virtual_ble` (tests and the simulated ward).

Every bleak, BlueZ, D-Bus and OS error is translated here by :func:`translate`:
:class:`~drivers.device.DeviceUnavailable` while finding or connecting (adapter missing,
powered off, permission denied, device not found), :class:`~drivers.device.DeviceDisconnected`
once connected. The link's loss is seen through bleak's disconnected callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)

from drivers import gatt
from drivers.clock import Clock
from drivers.device import (
    DeviceDisconnected,
    DeviceError,
    DeviceUnavailable,
    TransportStateError,
)
from drivers.readings import Identity

__all__ = [
    "LOW_BATTERY_PERCENT",
    "BackendKind",
    "BleBackend",
    "BleTarget",
    "BleTransport",
    "adapter_lock",
    "battery_is_low",
    "translate",
]

#: Battery level (percent) at or below which the device raises LOW_BATTERY. Most BLE
#: medical sensors warn their own user at 10-20 %; 20 % leaves a nurse time to swap it.
LOW_BATTERY_PERCENT: Final = 20
#: Seconds to wait before retrying when the adapter itself is unusable (off, missing, denied):
#: a technician has to act, so hammering BlueZ helps nobody.
ADAPTER_RETRY_S: Final = 30.0

BackendKind = Literal["bluez", "virtual"]

Notify = Callable[[str, bytes], None]


def battery_is_low(percent: int) -> bool:
    """Whether a Battery Level (0..100 %) counts as low (:data:`LOW_BATTERY_PERCENT`)."""
    return percent <= LOW_BATTERY_PERCENT


@dataclass(frozen=True, slots=True)
class BleBackend:
    """Which bleak backends run: ``None`` means bleak's platform default (BlueZ on Linux)."""

    kind: BackendKind
    client: type[BaseBleakClient] | None = None
    scanner: type[BaseBleakScanner] | None = None

    @classmethod
    def named(cls, kind: BackendKind) -> BleBackend:
        """The backend for ``[ble] backend`` in config.toml."""
        if kind == "bluez":
            return cls("bluez")
        # Imported only when chosen: production never loads bumble.
        from drivers.simulate.virtual_ble import VirtualBleakClient, VirtualBleakScanner

        return cls("virtual", VirtualBleakClient, VirtualBleakScanner)

    def scanner_kwargs(self, adapter: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"bluez": {"adapter": adapter}}
        if self.scanner is not None:
            kwargs["backend"] = self.scanner
        return kwargs

    def client_kwargs(self, adapter: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"bluez": {"adapter": adapter}}
        if self.client is not None:
            kwargs["backend"] = self.client
        return kwargs


@dataclass(frozen=True, slots=True)
class BleTarget:
    """Which peripheral to use: by ``address``, else by ``name``, else by ``service_uuid``.

    ``service_uuid`` is a full 128-bit lower-case UUID; a device matches it when it lists
    the service in its advertisement.
    """

    address: str | None = None
    name: str | None = None
    service_uuid: str | None = None

    def __post_init__(self) -> None:
        if not (self.address or self.name or self.service_uuid):
            raise ValueError("a BLE target needs an address, a name or a service UUID")

    def matches(self, device: BLEDevice, advertisement: AdvertisementData) -> bool:
        if self.address:
            return device.address.lower() == self.address.lower()
        if self.name:
            return self.name in (advertisement.local_name, device.name)
        assert self.service_uuid is not None
        return self.service_uuid.lower() in (u.lower() for u in advertisement.service_uuids)

    def describe(self) -> str:
        if self.address:
            return f"BLE device {self.address}"
        if self.name:
            return f"BLE device named {self.name!r}"
        label = gatt.NAMES.get(self.service_uuid or "", self.service_uuid)
        return f"a BLE device advertising the {label} service"


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def adapter_lock(adapter: str) -> asyncio.Lock:
    """The lock serialising scans and connection attempts on ``adapter`` (per event loop)."""
    loop = asyncio.get_running_loop()
    return _locks.setdefault(loop, {}).setdefault(adapter, asyncio.Lock())


def translate(exc: BaseException, *, adapter: str, what: str, connected: bool) -> DeviceError:
    """A bleak/BlueZ/D-Bus/OS error as a :class:`DeviceError` a technician can act on.

    ``what`` names the device; ``connected`` says whether a link was up (then a failure is
    a :class:`DeviceDisconnected`, unless the adapter itself is the problem).
    """
    if isinstance(exc, DeviceError):
        return exc
    adapter_problem = _adapter_problem(exc, adapter)
    if adapter_problem is not None:
        return DeviceUnavailable(adapter_problem, retry_after=ADAPTER_RETRY_S)
    kind = DeviceDisconnected if connected else DeviceUnavailable
    if isinstance(exc, BleakDeviceNotFoundError):
        return DeviceUnavailable(
            f"{what} not found on {adapter}: check it is switched on, in range and not "
            "connected to another host"
        )
    if isinstance(exc, BleakDBusError):
        name = exc.dbus_error
        if name == "org.bluez.Error.InProgress":
            return DeviceUnavailable(f"{adapter} is busy with another connection attempt")
        detail = exc.dbus_error_details or name
        return kind(f"{what}: Bluetooth error ({detail})")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        step = "link" if connected else "connection attempt"
        return kind(f"{what}: {step} timed out")
    if isinstance(exc, BleakError):
        return kind(f"{what}: {exc}")
    if isinstance(exc, OSError):
        return kind(f"{what}: {exc.strerror or exc}")
    return kind(f"{what}: {type(exc).__name__}: {exc}")


_PERMISSION_DBUS: Final = frozenset(
    {
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.bluez.Error.NotPermitted",
        "org.bluez.Error.NotAuthorized",
    }
)


def _adapter_problem(exc: BaseException, adapter: str) -> str | None:
    """The message for an error that is about the adapter or host, not the device."""
    permission = (
        f"permission denied using Bluetooth adapter {adapter}: run the gateway as a member of "
        "the 'bluetooth' group (or allow it in the BlueZ D-Bus policy)"
    )
    if isinstance(exc, BleakBluetoothNotAvailableError):
        reason = exc.reason
        if reason is BleakBluetoothNotAvailableReason.POWERED_OFF:
            return (
                f"Bluetooth adapter {adapter} is powered off: turn it on "
                f"(bluetoothctl power on; check rfkill)"
            )
        if reason in (
            BleakBluetoothNotAvailableReason.DENIED_BY_SYSTEM,
            BleakBluetoothNotAvailableReason.DENIED_BY_USER,
            BleakBluetoothNotAvailableReason.DENIED_BY_UNKNOWN,
        ):
            return permission
        if reason is BleakBluetoothNotAvailableReason.NO_BLE_CENTRAL_ROLE:
            return f"Bluetooth adapter {adapter} cannot act as a BLE central; use a BLE adapter"
        return (
            f"no Bluetooth adapter found ({adapter}): plug one in, or check that bluetoothd "
            "is running"
        )
    if isinstance(exc, BleakDBusError):
        if exc.dbus_error in _PERMISSION_DBUS:
            return permission
        if exc.dbus_error == "org.bluez.Error.NotReady":
            return f"Bluetooth adapter {adapter} is not ready (powered off?): turn it on"
        if exc.dbus_error == "org.freedesktop.DBus.Error.ServiceUnknown":
            return "BlueZ is not running (no org.bluez on D-Bus): start bluetooth.service"
        return None
    if isinstance(exc, BleakError) and str(exc).startswith("adapter ") and "not found" in str(exc):
        return (
            f"Bluetooth adapter {adapter} not found: check [ble] adapter in config.toml "
            "(hciconfig or bluetoothctl list shows the adapters)"
        )
    if isinstance(exc, PermissionError):
        return permission
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
    ):
        return (
            "cannot reach the system D-Bus (no /run/dbus/system_bus_socket): BlueZ needs "
            "dbus and bluetoothd running"
        )
    return None


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class BleTransport:
    """One connection to one BLE peripheral.

    ``scan_timeout`` and ``connect_timeout`` are seconds; the scan is timed on ``clock``
    (bleak times the connection attempt itself).
    """

    def __init__(
        self,
        target: BleTarget,
        *,
        backend: BleBackend,
        clock: Clock,
        adapter: str = "hci0",
        scan_timeout: float = 15.0,
        connect_timeout: float = 20.0,
    ) -> None:
        self.target = target
        self.backend = backend
        self.adapter = adapter
        self.scan_timeout = scan_timeout
        self.connect_timeout = connect_timeout
        self._clock = clock
        self._state = _State.UNOPENED
        self._client: BleakClient | None = None
        self._lost = asyncio.Event()
        self._on_lost: list[Callable[[], None]] = []
        self.address: str | None = None
        self.name: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Find the device and connect, one attempt per adapter at a time.

        Raises :class:`DeviceUnavailable` naming the reason; the transport is then closed.
        """
        if self._state is not _State.UNOPENED:
            raise TransportStateError(f"BLE transport is {self._state.value}; build a new one")
        self._state = _State.OPEN
        what = self.target.describe()
        try:
            async with adapter_lock(self.adapter):
                device = await self._find()
                what = f"BLE device {device.address}"
                client = BleakClient(
                    device,
                    disconnected_callback=self._disconnected,
                    timeout=self.connect_timeout,
                    **self.backend.client_kwargs(self.adapter),
                )
                await client.connect()
                self._client = client
            self.address = device.address
            self.name = device.name
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception):
                raise translate(exc, adapter=self.adapter, what=what, connected=False) from exc
            raise

    async def close(self) -> None:
        """Disconnect (if connected); safe to call more than once."""
        self._state = _State.CLOSED
        client, self._client = self._client, None
        if client is not None:
            # The link is going away either way; a failing disconnect changes nothing.
            with contextlib.suppress(Exception):
                await client.disconnect()

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN and self._client is not None

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the loop) when the link drops unasked."""
        self._on_lost.append(callback)
        if self._lost.is_set():
            callback()

    async def wait_lost(self) -> None:
        """Return when the link has dropped."""
        await self._lost.wait()

    # -- GATT --------------------------------------------------------------------------------
    def has(self, uuid: str) -> bool:
        """Whether the connected device offers characteristic ``uuid``."""
        client = self._require()
        return client.services.get_characteristic(uuid) is not None

    def has_service(self, uuid: str) -> bool:
        client = self._require()
        return client.services.get_service(uuid) is not None

    def can_notify(self, uuid: str) -> bool:
        client = self._require()
        found = client.services.get_characteristic(uuid)
        return found is not None and bool({"notify", "indicate"} & set(found.properties))

    async def read(self, uuid: str) -> bytes:
        """The value of characteristic ``uuid``."""
        client = self._require()
        try:
            return bytes(await client.read_gatt_char(uuid))
        except Exception as exc:
            raise self._failed(exc) from exc

    async def write(self, uuid: str, payload: bytes) -> None:
        """Write ``payload`` to ``uuid`` with response (the device confirms it)."""
        client = self._require()
        try:
            await client.write_gatt_char(uuid, payload, response=True)
        except Exception as exc:
            raise self._failed(exc) from exc

    async def subscribe(self, uuid: str, callback: Notify) -> None:
        """Pass every notification or indication of ``uuid`` to ``callback(uuid, payload)``."""
        client = self._require()

        def deliver(_characteristic: object, data: bytearray) -> None:
            callback(uuid, bytes(data))

        try:
            await client.start_notify(uuid, deliver)
        except Exception as exc:
            raise self._failed(exc) from exc

    async def read_identity(self, source: str, now: float) -> Identity | None:
        """Device Information (0x180A) as an Identity, or ``None`` if the device has none."""
        if not self.has_service(gatt.DEVICE_INFORMATION_SERVICE):
            return None

        async def text(uuid: str) -> str:
            if not self.has(uuid):
                return ""
            raw = await self.read(uuid)
            # Strings are UTF-8 by the spec; some devices pad with NULs.
            return raw.decode("utf-8", errors="replace").rstrip("\x00").strip()

        return Identity(
            source=source,
            time=now,
            manufacturer=await text(gatt.MANUFACTURER_NAME),
            model=await text(gatt.MODEL_NUMBER),
            serial=await text(gatt.SERIAL_NUMBER),
            firmware=await text(gatt.FIRMWARE_REVISION),
        )

    async def read_battery(self) -> int | None:
        """Battery Level in percent (0..100), or ``None`` if absent or out of range."""
        if not self.has(gatt.BATTERY_LEVEL):
            return None
        return parse_battery(await self.read(gatt.BATTERY_LEVEL))

    # -- internals ---------------------------------------------------------------------------
    async def _find(self) -> BLEDevice:
        loop = asyncio.get_running_loop()
        found: asyncio.Future[BLEDevice] = loop.create_future()

        def seen(device: BLEDevice, advertisement: AdvertisementData) -> None:
            if not found.done() and self.target.matches(device, advertisement):
                found.set_result(device)

        only = None if (self.target.address or self.target.name) else [self.target.service_uuid]
        scanner = BleakScanner(seen, only, **self.backend.scanner_kwargs(self.adapter))  # type: ignore[arg-type]
        await scanner.start()
        timer = asyncio.ensure_future(self._clock.sleep(self.scan_timeout))
        try:
            await asyncio.wait((found, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            await scanner.stop()
        if found.done():
            return found.result()
        found.cancel()
        raise DeviceUnavailable(
            f"{self.target.describe()} not found after {self.scan_timeout:g} s of scanning on "
            f"{self.adapter}: check it is switched on, in range and not connected to another host"
        )

    def _disconnected(self, _client: BleakClient) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        for callback in self._on_lost:
            callback()

    def _require(self) -> BleakClient:
        if self._state is not _State.OPEN or self._client is None:
            raise TransportStateError(f"BLE transport is {self._state.value}, not connected")
        return self._client

    def _failed(self, exc: Exception) -> DeviceError:
        what = f"BLE device {self.address}"
        return translate(exc, adapter=self.adapter, what=what, connected=True)


def parse_battery(payload: bytes) -> int | None:
    """Battery Level characteristic (uint8, percent) or ``None`` if malformed."""
    if len(payload) != 1 or payload[0] > 100:
        return None
    return payload[0]
