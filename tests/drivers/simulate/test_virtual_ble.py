"""The virtual radio as a bleak backend: the real BleakScanner and BleakClient on bumble.

Nothing is mocked: bumble simulates the controllers and hosts of the gateway's adapter and
of each peripheral on one LocalLink; bleak's public API drives them through the backend.
bumble's link runs on the loop's real time (advertisements every 50 ms), so tests wait for
it with bounded polls (:func:`eventually`), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bumble import gatt

from drivers import gatt as uuids
from drivers.simulate.virtual_ble import (
    VirtualBleakClient,
    VirtualBleakScanner,
    VirtualPeripheral,
    VirtualRadio,
    bleak_uuid,
    bumble_uuid,
)

VENDOR_SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
VENDOR_CHAR = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll (bounded, real time) for work bumble does on the loop's own timers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Oximeter:
    """A small peripheral: a notify+read characteristic and a writable one."""

    def __init__(self, radio: VirtualRadio, seed: str = "ox") -> None:
        self.written: list[bytes] = []
        self.measurement = gatt.Characteristic(
            bumble_uuid(uuids.PLX_CONTINUOUS),
            gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            b"\x07",
        )
        self.command = gatt.Characteristic(
            bumble_uuid(VENDOR_CHAR),
            gatt.Characteristic.Properties.WRITE,
            gatt.Characteristic.WRITEABLE,
            gatt.CharacteristicValue[bytes](write=lambda _c, v: self.written.append(v)),
        )
        self.peripheral = VirtualPeripheral(
            radio,
            name=f"Oxi {seed}",
            address=radio.allocate_address(seed),
            services=[
                gatt.Service(bumble_uuid(uuids.PLX_SERVICE), [self.measurement]),
                gatt.Service(bumble_uuid(VENDOR_SERVICE), [self.command]),
            ],
            advertised=[uuids.PLX_SERVICE, VENDOR_SERVICE],
        )


@pytest.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    yield VirtualRadio.shared()


@pytest.fixture
async def oximeter(radio: VirtualRadio) -> AsyncIterator[Oximeter]:
    device = Oximeter(radio)
    await device.peripheral.start()
    yield device
    await device.peripheral.stop()


def test_uuids_convert_both_ways() -> None:
    assert bleak_uuid(bumble_uuid(uuids.PLX_SERVICE)) == uuids.PLX_SERVICE
    assert bleak_uuid(bumble_uuid(VENDOR_SERVICE)) == VENDOR_SERVICE
    # SIG-base UUIDs become 16-bit on the air, vendor ones stay 128-bit.
    assert len(bumble_uuid(uuids.PLX_SERVICE).to_bytes()) == 2
    assert len(bumble_uuid(VENDOR_SERVICE).to_bytes()) == 16


async def test_each_loop_has_its_own_radio_and_addresses_are_static_random(
    radio: VirtualRadio,
) -> None:
    assert VirtualRadio.shared() is radio
    first, second = radio.allocate_address("a"), radio.allocate_address("a")
    assert first != second  # unique on one radio even for the same seed
    assert int(first[:2], 16) & 0xC0 == 0xC0  # static random: two top bits set
    assert VirtualRadio().allocate_address("a") == first  # but repeatable across radios


async def test_scanner_reports_name_and_service_uuids(oximeter: Oximeter) -> None:
    seen: dict[str, AdvertisementData] = {}

    def heard(device: BLEDevice, adv: AdvertisementData) -> None:
        seen[device.address] = adv

    async with BleakScanner(heard, backend=VirtualBleakScanner):
        await eventually(lambda: oximeter.peripheral.address in seen)
    adv = seen[oximeter.peripheral.address]
    assert adv.local_name == "Oxi ox"
    assert adv.service_uuids == [uuids.PLX_SERVICE, VENDOR_SERVICE]


async def test_scanner_filters_by_service_uuid(radio: VirtualRadio, oximeter: Oximeter) -> None:
    seen: set[str] = set()
    scanner = BleakScanner(
        lambda d, _a: seen.add(d.address), [uuids.HEART_RATE_SERVICE], backend=VirtualBleakScanner
    )
    wanted = BleakScanner(lambda d, _a: None, [uuids.PLX_SERVICE], backend=VirtualBleakScanner)
    async with scanner, wanted:
        await eventually(lambda: bool(wanted.discovered_devices))
    assert seen == set()  # the oximeter does not advertise the heart-rate service
    assert [d.address for d in wanted.discovered_devices] == [oximeter.peripheral.address]


async def test_client_discovers_reads_writes_and_gets_notifications(oximeter: Oximeter) -> None:
    received: list[bytes] = []
    async with BleakClient(oximeter.peripheral.address, backend=VirtualBleakClient) as client:
        assert client.is_connected and client.name == "Oxi ox"
        service_uuids = {s.uuid for s in client.services}
        assert {uuids.PLX_SERVICE, VENDOR_SERVICE} <= service_uuids
        char = client.services.get_characteristic(uuids.PLX_CONTINUOUS)
        assert char is not None and set(char.properties) == {"read", "notify"}
        assert [d.uuid for d in char.descriptors] == ["00002902-0000-1000-8000-00805f9b34fb"]
        assert client.mtu_size == 232
        assert await client.read_gatt_char(uuids.PLX_CONTINUOUS) == bytearray(b"\x07")
        await client.write_gatt_char(VENDOR_CHAR, b"\x02\x00", response=True)
        assert oximeter.written == [b"\x02\x00"]
        await client.start_notify(uuids.PLX_CONTINUOUS, lambda _c, d: received.append(bytes(d)))
        for value in (b"\x01", b"\x02\x03"):
            await oximeter.peripheral.notify(oximeter.measurement, value)
        await eventually(lambda: len(received) == 2)
    assert received == [b"\x01", b"\x02\x03"]
    await eventually(lambda: oximeter.peripheral.advertising)  # advertises again after


async def test_pulled_peripheral_calls_the_disconnected_callback_and_cannot_be_found(
    oximeter: Oximeter,
) -> None:
    lost = asyncio.Event()
    client = BleakClient(
        oximeter.peripheral.address, lambda _c: lost.set(), backend=VirtualBleakClient
    )
    await client.connect()
    await oximeter.peripheral.pull()
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected
    assert not oximeter.peripheral.advertising
    with pytest.raises(BleakDeviceNotFoundError):
        await BleakClient(oximeter.peripheral.address, backend=VirtualBleakClient).connect()
    await oximeter.peripheral.restore()
    again = BleakClient(oximeter.peripheral.address, backend=VirtualBleakClient)
    await again.connect()
    assert again.is_connected
    await again.disconnect()


async def test_dropped_link_keeps_advertising_and_reconnects(oximeter: Oximeter) -> None:
    lost = asyncio.Event()
    client = BleakClient(
        oximeter.peripheral.address, lambda _c: lost.set(), backend=VirtualBleakClient
    )
    await client.connect()
    await oximeter.peripheral.drop()
    await asyncio.wait_for(lost.wait(), 5)
    await eventually(lambda: oximeter.peripheral.advertising)
    await client.connect()  # the same client object reconnects, as with BlueZ
    assert client.is_connected
    await client.disconnect()


async def test_disconnecting_on_purpose_does_not_call_the_callback(oximeter: Oximeter) -> None:
    calls: list[object] = []
    client = BleakClient(oximeter.peripheral.address, calls.append, backend=VirtualBleakClient)
    await client.connect()
    await client.disconnect()
    assert not client.is_connected
    await eventually(lambda: oximeter.peripheral.advertising)
    assert calls == []


async def test_unknown_address_is_not_found(radio: VirtualRadio) -> None:
    with pytest.raises(BleakDeviceNotFoundError):
        await BleakClient("C0:11:22:33:44:55", backend=VirtualBleakClient).connect()


async def test_operations_after_the_link_is_gone_raise_bleak_errors(oximeter: Oximeter) -> None:
    client = BleakClient(oximeter.peripheral.address, backend=VirtualBleakClient)
    await client.connect()
    await oximeter.peripheral.pull()
    await eventually(lambda: not client.is_connected)
    with pytest.raises(BleakError):
        await client.read_gatt_char(uuids.PLX_CONTINUOUS)


async def test_adapter_problems_raise_what_bluez_raises(
    radio: VirtualRadio, oximeter: Oximeter
) -> None:
    state = radio.state("hci0")
    state.powered = False
    with pytest.raises(BleakBluetoothNotAvailableError) as off:
        await BleakScanner(backend=VirtualBleakScanner).start()
    assert off.value.reason is BleakBluetoothNotAvailableReason.POWERED_OFF
    state.powered, state.permitted = True, False
    with pytest.raises(BleakDBusError) as denied:
        await BleakClient(oximeter.peripheral.address, backend=VirtualBleakClient).connect()
    assert denied.value.dbus_error == "org.freedesktop.DBus.Error.AccessDenied"
    with pytest.raises(BleakError, match="adapter 'hci1' not found"):
        radio.state("hci1").present = False
        await BleakScanner(backend=VirtualBleakScanner, bluez={"adapter": "hci1"}).start()


async def test_parallel_connects_on_one_adapter_are_refused_like_bluez(radio: VirtualRadio) -> None:
    first, second = Oximeter(radio, "one"), Oximeter(radio, "two")
    await first.peripheral.start()
    await second.peripheral.start()
    clients = [
        BleakClient(o.peripheral.address, backend=VirtualBleakClient) for o in (first, second)
    ]
    results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], BleakDBusError)
    assert refused[0].dbus_error == "org.bluez.Error.InProgress"
    for client in clients:
        await client.disconnect()
    await first.peripheral.stop()
    await second.peripheral.stop()


async def test_two_adapters_are_two_centrals(radio: VirtualRadio, oximeter: Oximeter) -> None:
    one = await radio.adapter("hci0")
    two = await radio.adapter("hci1")
    assert one is not two and one.device.random_address != two.device.random_address
    async with BleakClient(
        oximeter.peripheral.address, backend=VirtualBleakClient, bluez={"adapter": "hci1"}
    ) as client:
        assert client.is_connected
