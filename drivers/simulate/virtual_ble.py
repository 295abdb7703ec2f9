"""The virtual radio: bleak's real client and scanner talking to bumble peripherals in-process.

There is no Bluetooth here (no BlueZ, no ``AF_BLUETOOTH``), yet the gateway's BLE path
should run exactly as in production, through :class:`bleak.BleakClient` and
:class:`bleak.BleakScanner`. bleak accepts a custom backend; this module is one, built on
bumble, which simulates whole Bluetooth controllers and hosts in pure Python:

* :class:`VirtualRadio` is the air: one bumble ``LocalLink`` per event loop (so one per
  running gateway, and a fresh one per test), holding the gateway's adapters (a bumble
  central ``Device`` per adapter name, created on first use) and the peripherals.
* :class:`VirtualBleakClient` and :class:`VirtualBleakScanner` are the bleak backends: they
  map connect, service discovery, reads, writes, notifications and the disconnected
  callback onto the adapter's bumble central. Failures are raised as the exceptions the
  BlueZ backend raises for the same situation (``BleakDeviceNotFoundError``,
  ``BleakBluetoothNotAvailableError``, ``BleakDBusError`` with BlueZ error names), so the
  transport's error translation is exercised by the same code paths.
* :class:`VirtualPeripheral` is a bumble GATT server on the same air, which advertises its
  services and can be dropped (link lost, device keeps advertising), pulled (out of range:
  link lost and silent) and restored, for tests and the demo.

Addresses are static random addresses: bumble's own default is random-type, and a
peripheral advertising one type while the central connects with the other never connects.

bumble runs on the event loop's real time (advertising intervals of tens of ms, link
events immediately); nothing here uses the gateway's injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bumble import gatt
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData, BaseBumbleError
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

__all__ = [
    "AdapterState",
    "VirtualBleakClient",
    "VirtualBleakScanner",
    "VirtualPeripheral",
    "VirtualRadio",
    "bleak_uuid",
    "bumble_uuid",
]

#: How often a virtual peripheral advertises, in ms (real devices: 20 ms to 10 s).
ADVERTISING_INTERVAL_MS = 50.0
#: ATT MTU the central asks for: large, as the Polar SDK does, so a PMD frame fits.
REQUESTED_MTU = 232
#: HCI reason a central sees when a peripheral goes out of range.
_SUPERVISION_TIMEOUT = 0x08
#: HCI reason the central sends when it disconnects on purpose.
_LOCAL_HOST_TERMINATED = 0x16

_PROPERTY_NAMES: tuple[tuple[gatt.Characteristic.Properties, str], ...] = (
    (gatt.Characteristic.Properties.BROADCAST, "broadcast"),
    (gatt.Characteristic.Properties.READ, "read"),
    (gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (gatt.Characteristic.Properties.WRITE, "write"),
    (gatt.Characteristic.Properties.NOTIFY, "notify"),
    (gatt.Characteristic.Properties.INDICATE, "indicate"),
    (gatt.Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
    (gatt.Characteristic.Properties.EXTENDED_PROPERTIES, "extended-properties"),
)


def bleak_uuid(value: UUID) -> str:
    """A bumble UUID as bleak spells it: full 128-bit, lower case."""
    little_endian = value.to_bytes(force_128=True)
    return str(uuidlib.UUID(bytes=bytes(reversed(little_endian))))


def bumble_uuid(text: str) -> UUID:
    """A bleak-style UUID string (or a 4-hex-digit SIG short form) as a bumble UUID.

    SIG-base UUIDs become their 16-bit form so advertisements carry them compactly.
    """
    text = text.lower()
    if (
        len(text) == 36
        and text.startswith("0000")
        and text.endswith("-0000-1000-8000-00805f9b34fb")
    ):
        return UUID.from_16_bits(int(text[4:8], 16))
    return UUID(text)


class AdapterState:
    """What the host would say about one adapter; tests flip these to provoke failures."""

    def __init__(self) -> None:
        self.present = True
        self.powered = True
        self.permitted = True

    def check(self, name: str) -> None:
        """Raise what bleak's BlueZ backend raises when the adapter cannot be used."""
        if not self.permitted:
            raise BleakDBusError(
                "org.freedesktop.DBus.Error.AccessDenied",
                [f"Rejected send message: the caller may not use adapter {name}"],
            )
        if not self.present:
            raise BleakError(f"adapter '{name}' not found")
        if not self.powered:
            raise BleakBluetoothNotAvailableError(
                "No powered Bluetooth adapters found. Turn on Bluetooth and try again.",
                BleakBluetoothNotAvailableReason.POWERED_OFF,
            )


class _Adapter:
    """One of the gateway's adapters: a bumble central and the scanners listening on it."""

    def __init__(self, radio: VirtualRadio, name: str, address: str) -> None:
        controller = Controller(f"adapter {name}", link=radio.link, public_address=address)
        self.device = Device(
            name=f"gateway {name}",
            address=Address(address, Address.RANDOM_DEVICE_ADDRESS),
            host=Host(controller, AsyncPipeSink(controller)),
        )
        self.device.on(self.device.EVENT_ADVERTISEMENT, self._on_advertisement)
        self.scanners: set[VirtualBleakScanner] = set()
        self._powered = False
        self._scanning = False
        #: A connection attempt is under way: the controller refuses a second one (bumble's
        #: state machine would break on it; BlueZ answers InProgress).
        self.connecting = False

    async def power_on(self) -> None:
        if not self._powered:
            await self.device.power_on()
            self._powered = True

    async def add_scanner(self, scanner: VirtualBleakScanner) -> None:
        self.scanners.add(scanner)
        if not self._scanning:
            self._scanning = True
            await self.device.start_scanning(filter_duplicates=False)

    async def remove_scanner(self, scanner: VirtualBleakScanner) -> None:
        self.scanners.discard(scanner)
        if not self.scanners and self._scanning:
            self._scanning = False
            await self.device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for scanner in list(self.scanners):
            scanner.heard(advertisement)


class VirtualRadio:
    """The simulated air of one event loop: a bumble ``LocalLink``, adapters and peripherals.

    Use :meth:`shared` to get the one of the running loop (the gateway, its simulated
    peripherals and bleak's backends all meet there).
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VirtualRadio] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self.adapter_states: dict[str, AdapterState] = {}
        self._adapters: dict[str, _Adapter] = {}
        self._adapter_lock = asyncio.Lock()
        self.peripherals: dict[str, VirtualPeripheral] = {}
        self._addresses: set[str] = set()

    @classmethod
    def shared(cls) -> VirtualRadio:
        """The radio of the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        radio = cls._by_loop.get(loop)
        if radio is None:
            radio = cls._by_loop[loop] = cls()
        return radio

    def allocate_address(self, seed: str) -> str:
        """A static random address derived from ``seed``, unique on this radio.

        Static random addresses have the two top bits set; the rest comes from a CRC of
        the seed, so a simulated device keeps its address across runs.
        """
        value = zlib.crc32(seed.encode()) << 8 | 0x01
        while True:
            octets = [(value >> (8 * i)) & 0xFF for i in range(5, -1, -1)]
            octets[0] |= 0xC0
            address = ":".join(f"{o:02X}" for o in octets)
            if address not in self._addresses:
                self._addresses.add(address)
                return address
            value += 1

    def state(self, adapter: str) -> AdapterState:
        """The host's view of ``adapter``; change it to simulate a missing or off adapter."""
        return self.adapter_states.setdefault(adapter, AdapterState())

    async def adapter(self, name: str) -> _Adapter:
        """The powered central for adapter ``name``; raises as BlueZ would if it is unusable."""
        self.state(name).check(name)
        async with self._adapter_lock:
            found = self._adapters.get(name)
            if found is None:
                address = self.allocate_address(f"adapter:{name}")
                found = self._adapters[name] = _Adapter(self, name, address)
            await found.power_on()
        return found

    def find(self, address: str) -> VirtualPeripheral | None:
        return self.peripherals.get(address.upper())


class VirtualPeripheral:
    """A bumble GATT server on the virtual radio.

    ``services`` are bumble ``gatt.Service`` objects; ``advertised`` the service UUIDs put
    in the advertisement (bleak spelling). :meth:`start` powers it on and advertises;
    :meth:`drop` loses the link (the device keeps advertising, so it comes back),
    :meth:`pull` takes it out of range (link lost, silent until :meth:`restore`).
    """

    def __init__(
        self,
        radio: VirtualRadio,
        *,
        name: str,
        address: str,
        services: Sequence[gatt.Service],
        advertised: Sequence[str],
    ) -> None:
        self.radio = radio
        self.name = name
        self.address = address.upper()
        self._services = list(services)
        self._advertised = [bumble_uuid(u) for u in advertised]
        controller = Controller(f"peripheral {name}", link=radio.link, public_address=self.address)
        self.device = Device(
            name=name,
            address=Address(self.address, Address.RANDOM_DEVICE_ADDRESS),
            host=Host(controller, AsyncPipeSink(controller)),
        )
        self.device.add_services(self._services)
        self.device.on(self.device.EVENT_CONNECTION, self._on_connection)
        self.connections: list[Connection] = []
        self.in_range = False
        self._started = False
        self._advertising_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Power on, join the radio and advertise."""
        if self._started:
            return
        if self.radio.peripherals.get(self.address) not in (None, self):
            raise ValueError(f"address {self.address} is already on the virtual radio")
        self.radio.peripherals[self.address] = self
        await self.device.power_on()
        self._started = True
        await self.restore()

    @property
    def advertising(self) -> bool:
        return self.in_range and not self.connections

    async def restore(self) -> None:
        """Come (back) into range: advertise again, connectable."""
        self.in_range = True
        await self._update_advertising()

    async def drop(self) -> None:
        """Lose the link (as when the radio fades for a moment); keep advertising."""
        for connection in list(self.connections):
            await connection.disconnect(reason=_SUPERVISION_TIMEOUT)

    async def pull(self) -> None:
        """Go out of range: lose the link and stop advertising until :meth:`restore`."""
        self.in_range = False
        await self._update_advertising()
        await self.drop()

    async def stop(self) -> None:
        """Leave the radio for good."""
        if self._started:
            await self.pull()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.device.power_off()
            self.radio.peripherals.pop(self.address, None)
            self._started = False

    async def notify(self, characteristic: gatt.Characteristic[Any], value: bytes) -> None:
        """Send ``value`` to every subscriber of ``characteristic`` (notify)."""
        if self.connections:
            await self.device.notify_subscribers(characteristic, value)

    async def indicate(self, characteristic: gatt.Characteristic[Any], value: bytes) -> None:
        """Send ``value`` to every subscriber of ``characteristic`` (indicate, confirmed)."""
        if self.connections:
            await self.device.indicate_subscribers(characteristic, value)

    async def _advertise(self) -> None:
        data = AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),  # LE general discoverable, no BR/EDR
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                *(
                    (
                        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS
                        if len(u.to_bytes()) == 2
                        else AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                        u.to_bytes(),
                    )
                    for u in self._advertised
                ),
            ]
        )
        self.device.advertising_data = bytes(data)
        await self.device.start_advertising(
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )

    def _on_connection(self, connection: Connection) -> None:
        self.connections.append(connection)

        def gone(_reason: int) -> None:
            if connection in self.connections:
                self.connections.remove(connection)
            if self._started:
                # A real peripheral advertises again once its link is gone.
                task = asyncio.get_running_loop().create_task(self._update_advertising())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        connection.on(connection.EVENT_DISCONNECTION, gone)

    async def _update_advertising(self) -> None:
        """Advertise exactly when in range and unconnected (one change at a time: bumble's
        advertising set must not be stopped twice concurrently)."""
        async with self._advertising_lock:
            device = self.device
            if device.legacy_advertising_set is not None or device.legacy_advertiser is not None:
                await device.stop_advertising()
            if self.advertising and device.powered_on:
                await self._advertise()


class VirtualBleakScanner(BaseBleakScanner):
    """bleak scanner backend: advertisements heard by the adapter's bumble central.

    Takes bleak's usual arguments; the adapter comes from ``bluez={"adapter": ...}`` as
    with the BlueZ backend, and ``radio`` (default: the running loop's) picks the air.
    """

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        *,
        bluez: dict[str, Any] | None = None,
        radio: VirtualRadio | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._radio = radio
        self._adapter_name = str((bluez or {}).get("adapter") or "hci0")
        self._adapter: _Adapter | None = None

    async def start(self) -> None:
        radio = self._radio or VirtualRadio.shared()
        self.seen_devices = {}
        self._adapter = await radio.adapter(self._adapter_name)
        await self._adapter.add_scanner(self)

    async def stop(self) -> None:
        if self._adapter is not None:
            await self._adapter.remove_scanner(self)
            self._adapter = None

    def heard(self, advertisement: Advertisement) -> None:
        data = advertisement.data
        names = data.get_all(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get_all(
            AdvertisingData.SHORTENED_LOCAL_NAME
        )
        name = str(names[0]) if names else None
        uuids: list[str] = []
        for kind in (
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        ):
            for group in data.get_all(kind):
                # dict: bumble merges the scan response, which may repeat the list.
                uuids.extend(
                    u for u in dict.fromkeys(bleak_uuid(u) for u in group) if u not in uuids
                )
        if not self.is_allowed_uuid(uuids):
            return
        address = str(advertisement.address).split("/")[0]
        adv = AdvertisementData(
            local_name=name,
            manufacturer_data={},
            service_data={},
            service_uuids=uuids,
            tx_power=None,
            rssi=advertisement.rssi,
            platform_data=(advertisement,),
        )
        device = self.create_or_update_device(address, address, name, advertisement, adv)
        self.call_detection_callbacks(device, adv)


class VirtualBleakClient(BaseBleakClient):
    """bleak client backend: a GATT client on the adapter's bumble central.

    Takes bleak's usual arguments; the adapter comes from ``bluez={"adapter": ...}`` as
    with the BlueZ backend, and ``radio`` (default: the running loop's) picks the air.
    """

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        bluez: dict[str, Any] | None = None,
        radio: VirtualRadio | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._radio = radio
        self._adapter_name = str((bluez or {}).get("adapter") or "hci0")
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._name = (
            address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._closing = False

    @property
    def name(self) -> str:
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._connection is not None:
            raise BleakError("Client is already connected")
        radio = self._radio or VirtualRadio.shared()
        adapter = await radio.adapter(self._adapter_name)
        peripheral = radio.find(self.address)
        if peripheral is None or not peripheral.advertising:
            # BlueZ only connects to a device it has seen advertising.
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            )
        if adapter.connecting or adapter.device.is_le_connecting:
            raise BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"])
        adapter.connecting = True
        try:
            connection = await adapter.device.connect(
                Address(self.address, Address.RANDOM_DEVICE_ADDRESS), timeout=self._timeout
            )
        except TimeoutError:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            ) from None
        except BaseBumbleError as exc:
            raise BleakDBusError("org.bluez.Error.Failed", [str(exc)]) from exc
        finally:
            adapter.connecting = False
        self._connection = connection
        self._closing = False
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        peer = Peer(connection)
        try:
            await peer.request_mtu(REQUESTED_MTU)
            self.services = await self._discover(peer)
        except (TimeoutError, BaseBumbleError) as exc:
            await self.disconnect()
            raise BleakError("failed to discover services, device disconnected") from exc
        self._peer = peer
        if peripheral.name:
            self._name = peripheral.name

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        await peer.discover_services()
        for service_proxy in peer.services:
            service = BleakGATTService(
                service_proxy, service_proxy.handle, bleak_uuid(service_proxy.uuid)
            )
            collection.add_service(service)
            await service_proxy.discover_characteristics()
            for char_proxy in service_proxy.characteristics:
                await char_proxy.discover_descriptors()
                names = [n for flag, n in _PROPERTY_NAMES if char_proxy.properties & flag]
                characteristic = BleakGATTCharacteristic(
                    char_proxy,
                    char_proxy.handle,
                    bleak_uuid(char_proxy.uuid),
                    names,  # type: ignore[arg-type]
                    lambda: self.mtu_size - 3,
                    service,
                )
                collection.add_characteristic(characteristic)
                for desc_proxy in char_proxy.descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            desc_proxy,
                            desc_proxy.handle,
                            bleak_uuid(desc_proxy.type),
                            characteristic,
                        )
                    )
        return collection

    def _on_disconnection(self, _reason: int) -> None:
        self._connection = None
        self._peer = None
        if not self._closing and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        with contextlib.suppress(BaseBumbleError):  # already gone
            await connection.disconnect(reason=_LOCAL_HOST_TERMINATED)
        self._connection = None
        self._peer = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("pairing is not supported by the virtual radio")

    async def unpair(self) -> None:
        raise BleakError("pairing is not supported by the virtual radio")

    def _require(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        return bytearray(await self._att(proxy.read_value()))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require()
        proxy: DescriptorProxy = descriptor.obj
        return bytearray(await self._att(proxy.read_value()))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        self._require()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        await self._att(proxy.write_value(bytes(data), with_response=response))

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        self._require()
        proxy: DescriptorProxy = descriptor.obj
        await self._att(proxy.write_value(bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        peer = self._require()
        proxy: CharacteristicProxy[bytes] = characteristic.obj

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        await self._att(peer.subscribe(proxy, deliver, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        await self._att(peer.unsubscribe(proxy))

    @staticmethod
    async def _att(operation: Any) -> Any:
        # bumble raises its own errors for ATT failures and lost links; bleak users expect
        # BleakError (BlueZ reports both as D-Bus errors).
        try:
            return await operation
        except BaseBumbleError as exc:
            raise BleakDBusError("org.bluez.Error.Failed", [str(exc)]) from exc
