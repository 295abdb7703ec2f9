"""BleTransport through the real BleakClient/BleakScanner on the virtual radio.

Scan timeouts run on a ManualClock; bumble's link runs on the loop's real time, so work
it does is awaited with bounded polls.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import pytest
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bumble import gatt

from drivers import gatt as uuids
from drivers.clock import ManualClock
from drivers.device import DeviceDisconnected, DeviceUnavailable, TransportStateError
from drivers.oximetry.plx import PlxSettings
from drivers.simulate.ble_peripherals import PlxPeripheral
from drivers.simulate.virtual_ble import VirtualPeripheral, VirtualRadio, bumble_uuid
from drivers.transport.ble import (
    ADAPTER_RETRY_S,
    LOW_BATTERY_PERCENT,
    BleBackend,
    BleTarget,
    BleTransport,
    adapter_lock,
    battery_is_low,
    parse_battery,
    translate,
)

VIRTUAL = BleBackend.named("virtual")


async def eventually(condition: object, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def oximeter(clock: ManualClock) -> AsyncIterator[PlxPeripheral]:
    """A simulated PLX oximeter advertising on the loop's radio (its scenario not played)."""
    device = PlxPeripheral(PlxSettings(), "normal", clock, "bed-9-spo2")
    device.peripheral = VirtualPeripheral(
        VirtualRadio.shared(),
        name=device.name,
        address=device.address,
        services=device._services(),
        advertised=device._advertised(),
    )
    await device.peripheral.start()
    yield device
    await device.peripheral.stop()


def transport(clock: ManualClock, **target: str) -> BleTransport:
    return BleTransport(BleTarget(**target), backend=VIRTUAL, clock=clock, scan_timeout=10.0)


@pytest.mark.parametrize("by", ["address", "name", "service_uuid"])
async def test_finds_and_connects_by_address_name_or_service(
    clock: ManualClock, oximeter: PlxPeripheral, by: str
) -> None:
    target = {
        "address": oximeter.address.lower(),  # addresses match in any case
        "name": oximeter.name,
        "service_uuid": uuids.PLX_SERVICE,
    }[by]
    link = transport(clock, **{by: target})
    await link.open()
    try:
        assert link.is_open and link.address == oximeter.address
        assert link.has(uuids.PLX_CONTINUOUS) and link.can_notify(uuids.PLX_CONTINUOUS)
        assert not link.has(uuids.HEART_RATE_MEASUREMENT)
    finally:
        await link.close()
    assert not link.is_open


async def test_device_information_and_battery(clock: ManualClock, oximeter: PlxPeripheral) -> None:
    link = transport(clock, address=oximeter.address)
    await link.open()
    identity = await link.read_identity("bed-9-spo2", 123.0)
    assert identity is not None
    assert (identity.source, identity.time) == ("bed-9-spo2", 123.0)
    assert identity.manufacturer == "Simulated Medical"
    assert identity.model == "PLX-SIM 1822"
    assert identity.serial == oximeter.serial and identity.firmware == "1.4.2"
    assert await link.read_battery() == 85
    oximeter.battery_level = 17
    assert await link.read_battery() == 17
    await link.close()


async def test_a_missing_device_is_unavailable_after_the_scan_timeout_on_the_clock(
    clock: ManualClock,
) -> None:
    link = transport(clock, service_uuid=uuids.HEART_RATE_SERVICE)
    opening = asyncio.ensure_future(link.open())
    await eventually(lambda: clock.sleepers == 1)
    await clock.advance(9.9)
    assert not opening.done()  # still scanning: time is the clock's
    await clock.advance(0.2)
    with pytest.raises(DeviceUnavailable, match="advertising the Heart Rate service not found"):
        await opening
    with pytest.raises(TransportStateError):
        await link.open()  # a failed transport is closed; retries build a new one


async def test_the_link_loss_is_reported_and_later_operations_fail_as_disconnected(
    clock: ManualClock, oximeter: PlxPeripheral
) -> None:
    link = transport(clock, address=oximeter.address)
    await link.open()
    lost: list[bool] = []
    link.on_lost(lambda: lost.append(True))
    assert oximeter.peripheral is not None
    await oximeter.peripheral.pull()
    await asyncio.wait_for(link.wait_lost(), 5)
    assert lost == [True]
    with pytest.raises(DeviceDisconnected, match=r"Bluetooth error|Not connected"):
        await link.read(uuids.BATTERY_LEVEL)
    await link.close()


async def test_subscriptions_deliver_payloads_with_their_uuid(
    clock: ManualClock, oximeter: PlxPeripheral
) -> None:
    link = transport(clock, address=oximeter.address)
    await link.open()
    got: list[tuple[str, bytes]] = []
    await link.subscribe(uuids.PLX_CONTINUOUS, lambda u, p: got.append((u, p)))
    assert oximeter.peripheral is not None
    payload = oximeter.measurement(1.0)
    await oximeter.peripheral.notify(oximeter.continuous, payload)
    await eventually(lambda: got)
    assert got == [(uuids.PLX_CONTINUOUS, payload)]
    await link.close()


async def test_adapter_lock_serialises_connects_that_the_adapter_would_refuse(
    clock: ManualClock,
) -> None:
    radio = VirtualRadio.shared()
    devices = [PlxPeripheral(PlxSettings(), "normal", clock, f"dev-{i}") for i in range(3)]
    for device in devices:
        device.peripheral = VirtualPeripheral(
            radio,
            name=device.name,
            address=device.address,
            services=device._services(),
            advertised=device._advertised(),
        )
        await device.peripheral.start()
    links = [transport(clock, address=d.address) for d in devices]
    # All three at once: the lock queues them; without it the adapter says InProgress
    # (tests/drivers/simulate/test_virtual_ble.py shows that refusal).
    await asyncio.gather(*(link.open() for link in links))
    assert all(link.is_open for link in links)
    assert not adapter_lock("hci0").locked()
    assert adapter_lock("hci0") is adapter_lock("hci0") is not adapter_lock("hci1")
    for link in links:
        await link.close()
    for device in devices:
        assert device.peripheral is not None
        await device.peripheral.stop()


@pytest.mark.parametrize(
    ("flip", "message"),
    [
        ("powered", "Bluetooth adapter hci0 is powered off: turn it on"),
        ("permitted", "permission denied using Bluetooth adapter hci0"),
        ("present", "Bluetooth adapter hci0 not found: check \\[ble\\] adapter"),
    ],
)
async def test_adapter_problems_are_clear_and_back_off(
    clock: ManualClock, oximeter: PlxPeripheral, flip: str, message: str
) -> None:
    setattr(VirtualRadio.shared().state("hci0"), flip, False)
    link = transport(clock, address=oximeter.address)
    with pytest.raises(DeviceUnavailable, match=message) as failed:
        await link.open()
    assert failed.value.retry_after == ADAPTER_RETRY_S
    assert not link.is_open


def test_target_needs_something_to_look_for() -> None:
    with pytest.raises(ValueError, match="address, a name or a service UUID"):
        BleTarget()
    assert BleTarget(address="AA:BB").describe() == "BLE device AA:BB"
    assert "Pulse Oximeter" in BleTarget(service_uuid=uuids.PLX_SERVICE).describe()


def test_battery_threshold_and_parsing() -> None:
    assert LOW_BATTERY_PERCENT == 20
    assert battery_is_low(20) and battery_is_low(0) and not battery_is_low(21)
    assert parse_battery(b"\x55") == 85
    assert parse_battery(b"\x65") is None  # 101 %: out of range
    assert parse_battery(b"") is None and parse_battery(b"\x10\x00") is None


def test_backend_selection() -> None:
    bluez = BleBackend.named("bluez")
    assert bluez.client is None and bluez.scanner is None  # bleak's platform default
    assert bluez.client_kwargs("hci1") == {"bluez": {"adapter": "hci1"}}
    assert VIRTUAL.client is not None
    assert VIRTUAL.scanner_kwargs("hci0")["backend"] is VIRTUAL.scanner


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (
            BleakBluetoothNotAvailableError(
                "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
            ),
            DeviceUnavailable,
            "no Bluetooth adapter found (hci0)",
        ),
        (
            BleakBluetoothNotAvailableError("x", BleakBluetoothNotAvailableReason.POWERED_OFF),
            DeviceUnavailable,
            "hci0 is powered off",
        ),
        (
            BleakBluetoothNotAvailableError("x", BleakBluetoothNotAvailableReason.DENIED_BY_SYSTEM),
            DeviceUnavailable,
            "permission denied",
        ),
        (
            BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]),
            DeviceUnavailable,
            "not ready (powered off?)",
        ),
        (
            BleakDBusError("org.bluez.Error.NotPermitted", []),
            DeviceUnavailable,
            "permission denied",
        ),
        (
            BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", []),
            DeviceUnavailable,
            "BlueZ is not running",
        ),
        (BleakError("adapter 'hci3' not found"), DeviceUnavailable, "hci0 not found"),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            DeviceUnavailable,
            "cannot reach the system D-Bus",
        ),
        (PermissionError(errno.EACCES, "Permission denied"), DeviceUnavailable, "permission"),
        (
            BleakDeviceNotFoundError("AA", "Device with address AA was not found."),
            DeviceUnavailable,
            "dev not found on hci0",
        ),
        (
            BleakDBusError("org.bluez.Error.InProgress", []),
            DeviceUnavailable,
            "busy with another connection",
        ),
    ],
)
def test_error_translation(error: Exception, kind: type[Exception], text: str) -> None:
    for connected in (False, True):  # adapter problems are never a mere disconnect
        translated = translate(error, adapter="hci0", what="dev", connected=connected)
        assert type(translated) is kind
        assert text in str(translated)


def test_device_errors_depend_on_whether_a_link_was_up() -> None:
    failure = BleakDBusError("org.bluez.Error.Failed", ["Software caused connection abort"])
    before = translate(failure, adapter="hci0", what="dev", connected=False)
    after = translate(failure, adapter="hci0", what="dev", connected=True)
    assert type(before) is DeviceUnavailable and type(after) is DeviceDisconnected
    assert "Software caused connection abort" in str(after)
    timeout = translate(TimeoutError(), adapter="hci0", what="dev", connected=False)
    assert str(timeout) == "dev: connection attempt timed out"


async def test_use_before_open_is_a_state_error(clock: ManualClock) -> None:
    link = transport(clock, address="C0:00:00:00:00:01")
    with pytest.raises(TransportStateError):
        link.has(uuids.PLX_CONTINUOUS)
    with pytest.raises(TransportStateError):
        await link.read(uuids.PLX_CONTINUOUS)


async def test_a_readonly_characteristic_cannot_notify(clock: ManualClock) -> None:
    radio = VirtualRadio.shared()
    level = gatt.Characteristic(
        bumble_uuid(uuids.BATTERY_LEVEL),
        gatt.Characteristic.Properties.READ,
        gatt.Characteristic.READABLE,
        bytes([42]),
    )
    peripheral = VirtualPeripheral(
        radio,
        name="plain",
        address=radio.allocate_address("plain"),
        services=[gatt.Service(bumble_uuid(uuids.BATTERY_SERVICE), [level])],
        advertised=[uuids.BATTERY_SERVICE],
    )
    await peripheral.start()
    link = transport(clock, name="plain")
    await link.open()
    assert link.has(uuids.BATTERY_LEVEL) and not link.can_notify(uuids.BATTERY_LEVEL)
    assert await link.read_battery() == 42
    assert await link.read_identity("x", 0.0) is None  # no Device Information service
    await link.close()
    await peripheral.stop()
