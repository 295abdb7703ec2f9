"""scan --ble and BLE capture/decode below the CLI: real bleak on the virtual radio."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers import gatt as uuids
from drivers.ble_capture import ble_capture_line, decode_ble, read_ble_capture, record_ble
from drivers.ble_scan import ble_drivers, fitting, scan_ble
from drivers.capture import CaptureError
from drivers.clock import ManualClock
from drivers.device import DeviceUnavailable
from drivers.ecg.heart_rate import HeartRateSettings
from drivers.ecg.polar_h10 import PolarH10, PolarH10Settings
from drivers.oximetry.plx import PlxSettings
from drivers.readings import Waveform
from drivers.simulate.ble_peripherals import (
    ECG_FRAME_SAMPLES,
    HeartRatePeripheral,
    PlxPeripheral,
    PolarH10Peripheral,
)
from drivers.simulate.virtual_ble import VirtualRadio
from drivers.transport.ble import BleBackend, BleTarget, BleTransport

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
async def ward(
    clock: ManualClock,
) -> AsyncIterator[tuple[PlxPeripheral, HeartRatePeripheral, PolarH10Peripheral]]:
    sims = (
        PlxPeripheral(PlxSettings(), "normal", clock, "s-plx"),
        HeartRatePeripheral(HeartRateSettings(), "normal", clock, "s-hr"),
        PolarH10Peripheral(PolarH10Settings(), "normal", clock, "s-h10"),
    )
    tasks = [asyncio.create_task(s.run()) for s in sims]
    radio = VirtualRadio.shared()
    await eventually(lambda: all(radio.find(s.address) is not None for s in sims))
    yield sims
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_every_ble_driver_names_its_service() -> None:
    drivers = ble_drivers()
    assert drivers["ble-plx"] == uuids.PLX_SERVICE
    assert drivers["ble-heart-rate"] == uuids.HEART_RATE_SERVICE
    assert {"ble-plx", "ble-heart-rate", "polar-h10"} <= set(drivers)


def test_fitting_by_service_and_by_name() -> None:
    drivers = ble_drivers()
    assert fitting("Oxi", (uuids.PLX_SERVICE,), drivers) == ("ble-plx",)
    # An H10 is a heart-rate strap too; its own driver comes first.
    assert fitting("Polar H10 1A2B3C4D", (uuids.HEART_RATE_SERVICE,), drivers) == (
        "polar-h10",
        "ble-heart-rate",
    )
    assert fitting("HR strap", (uuids.HEART_RATE_SERVICE,), drivers) == ("ble-heart-rate",)
    assert fitting(None, (uuids.BATTERY_SERVICE,), drivers) == ()


async def test_scan_lists_the_ward_with_fitting_drivers_on_the_clock(
    clock: ManualClock, ward: tuple[PlxPeripheral, HeartRatePeripheral, PolarH10Peripheral]
) -> None:
    plx, strap, h10 = ward
    scanning = asyncio.ensure_future(scan_ble(VIRTUAL, clock, 3.0))
    # Three peripherals and the scan wait on the clock; bumble advertises every 50 ms.
    await eventually(lambda: clock.sleepers == 4)
    await asyncio.sleep(0.2)
    assert not scanning.done()  # the scan lasts 3 s of the clock, not of the wall
    await clock.advance(3.0)
    found = {d.address: d for d in await asyncio.wait_for(scanning, 10)}
    assert found[plx.address].drivers == ("ble-plx",)
    assert found[strap.address].drivers == ("ble-heart-rate",)
    assert found[h10.address].drivers == ("polar-h10", "ble-heart-rate")
    assert found[h10.address].name == h10.name and h10.name.startswith("Polar H10 ")
    assert found[plx.address].services() == ["Pulse Oximeter"]


async def test_scan_reports_a_powered_off_adapter(clock: ManualClock) -> None:
    VirtualRadio.shared().state("hci0").powered = False
    with pytest.raises(DeviceUnavailable, match="powered off"):
        await scan_ble(VIRTUAL, clock, 1.0)


async def test_capture_then_decode_gives_the_live_readings(
    clock: ManualClock,
    ward: tuple[PlxPeripheral, HeartRatePeripheral, PolarH10Peripheral],
    tmp_path: Path,
) -> None:
    h10 = ward[2]
    out = io.StringIO()
    transport = BleTransport(BleTarget(address=h10.address), backend=VIRTUAL, clock=clock)
    model = PolarH10("cap", PolarH10Settings())
    recording = asyncio.ensure_future(record_ble(transport, model, clock, 2.0, out))
    await eventually(lambda: h10.streaming)  # capture performed the stream-start write
    for _ in range(40):  # bounded: the recording lasts 2 s of the clock
        if recording.done():
            break
        await clock.advance(0.25)
        await asyncio.sleep(0.02)
    recorded = await asyncio.wait_for(recording, 10)
    lines = out.getvalue().splitlines()
    assert recorded == len(lines) >= 3
    path = tmp_path / "h10.jsonl"
    path.write_text(out.getvalue())
    items = list(read_ble_capture(path))
    assert items[0][1] == uuids.PMD_CONTROL_POINT  # the start response comes first
    assert {u for _, u, _ in items[1:]} == {uuids.PMD_DATA}
    readings = list(decode_ble(PolarH10("dec", PolarH10Settings()), items))
    waves = [r for r in readings if isinstance(r, Waveform)]
    assert len(waves) == len(items) - 1
    assert all(len(w.samples) == ECG_FRAME_SAMPLES for w in waves)


def test_capture_lines_round_trip_and_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    line = ble_capture_line(1.5, uuids.PLX_CONTINUOUS.upper(), b"\x1c\x61\x00")
    assert line == ('{"t": 1.5, "char": "00002a5f-0000-1000-8000-00805f9b34fb", "rx": "1c 61 00"}')
    path.write_text(line + "\n\n" + '{"t": 2, "rx": "00"}\n')
    reader = read_ble_capture(path)
    assert next(reader) == (1.5, uuids.PLX_CONTINUOUS, b"\x1c\x61\x00")
    with pytest.raises(CaptureError, match=r"c.jsonl:3: not a BLE capture line \('char'\)"):
        next(reader)
    path.write_text('{"t": 1, "char": "2a5f", "rx": "00"}\n')
    with pytest.raises(CaptureError, match="not a 128-bit UUID"):
        list(read_ble_capture(path))
