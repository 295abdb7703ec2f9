"""The BLE runner: simulated peripherals -> virtual radio -> BleakClient -> model -> readings.

Device time is a ManualClock (the peripherals send on it, the runner polls the battery on
it); bumble moves packets on the loop's real time, awaited with bounded polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest

from drivers import codes
from drivers import gatt as uuids
from drivers.ble_device import run_ble_device
from drivers.clock import ManualClock
from drivers.ecg.heart_rate import HeartRateSettings, HeartRateStrap
from drivers.ecg.polar_h10 import PolarH10, PolarH10Settings
from drivers.oximetry.plx import PlxOximeter, PlxSettings
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    Numeric,
    Reading,
    Waveform,
)
from drivers.simulate.ble_peripherals import (
    ECG_FRAME_SAMPLES,
    HeartRatePeripheral,
    PlxPeripheral,
    PolarH10Peripheral,
)
from drivers.transport.ble import BleBackend, BleTarget, BleTransport

VIRTUAL = BleBackend.named("virtual")


class Run:
    """A peripheral playing its scenario and one runner connection to it."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.readings: list[Reading] = []
        self.tasks: list[asyncio.Task[None]] = []

    def play(self, simulator: PlxPeripheral | HeartRatePeripheral | PolarH10Peripheral) -> None:
        self.tasks.append(asyncio.create_task(simulator.run()))

    def connect(self, device_id: str, model: object, address: str) -> asyncio.Task[None]:
        link = BleTransport(BleTarget(address=address), backend=VIRTUAL, clock=self.clock)
        task = asyncio.create_task(
            run_ble_device(device_id, model, link, self.readings.append, self.clock)  # type: ignore[arg-type]
        )
        self.tasks.append(task)
        return task

    async def until(
        self, condition: Callable[[], bool], step: float = 0.25, within: float = 120
    ) -> None:
        """Advance device time in ``step`` s until ``condition``; fail after ``within`` s.

        Between steps, give bumble a bounded amount of real time to carry packets."""
        start = self.clock.monotonic()
        loop = asyncio.get_running_loop()
        while not condition():
            if self.clock.monotonic() - start > within:
                raise AssertionError(f"not reached in {within} s of device time")
            await self.clock.advance(step)
            deadline = loop.time() + 0.05
            # A bounded poll: bumble carries packets on the loop's real-time timers.
            while loop.time() < deadline and not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.002)

    def events(self, condition: Condition) -> list[DeviceEvent]:
        return [r for r in self.readings if isinstance(r, DeviceEvent) and r.condition is condition]

    def numerics(self, code: codes.Code) -> list[Numeric]:
        return [r for r in self.readings if isinstance(r, Numeric) and r.code == code]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    r = Run(ManualClock())
    yield r
    await r.stop()


def connected(run: Run) -> Callable[[], bool]:
    return lambda: any(not e.active for e in run.events(Condition.DISCONNECTED))


async def test_plx_oximeter_end_to_end(run: Run) -> None:
    sim = PlxPeripheral(PlxSettings(), "normal", run.clock, "bed-1-plx")
    run.play(sim)
    model = PlxOximeter("ox", PlxSettings())
    run.connect("ox", model, sim.address)
    await run.until(connected(run))
    identity = next(r for r in run.readings if isinstance(r, Identity))
    assert (identity.manufacturer, identity.serial) == ("Simulated Medical", sim.serial)
    await run.until(lambda: len(run.numerics(codes.SPO2)) >= 3)
    for spo2 in run.numerics(codes.SPO2):
        assert spo2.value is not None and 94 <= spo2.value <= 99
    assert all(p.value is not None and 60 <= p.value <= 90 for p in run.numerics(codes.PULSE_RATE))
    assert model.counters.frames_decoded >= 3 and model.counters.bytes_dropped == 0
    assert model.features is not None  # PLX Features was read once after connecting
    # Readings are stamped with the clock's wall time at arrival, one a second.
    times = [n.time for n in run.numerics(codes.SPO2)]
    assert np.allclose(np.diff(times), 1.0, atol=0.3)
    assert run.events(Condition.LOW_BATTERY) == []  # 85 %: never raised


async def test_sensor_off_raises_and_clears_the_condition(run: Run) -> None:
    sim = PlxPeripheral(PlxSettings(), "sensor_off", run.clock, "bed-2-plx")
    run.play(sim)
    run.connect("ox", PlxOximeter("ox", PlxSettings()), sim.address)
    await run.until(lambda: any(e.active for e in run.events(Condition.SENSOR_OFF)), step=1.0)
    assert run.numerics(codes.SPO2)[-1].value is None  # no value, never a zero
    await run.until(lambda: any(not e.active for e in run.events(Condition.SENSOR_OFF)), step=1.0)
    assert run.numerics(codes.SPO2)[-1].value is not None


async def test_low_battery_is_raised_from_battery_notifications(run: Run) -> None:
    sim = HeartRatePeripheral(HeartRateSettings(), "battery_low", run.clock, "bed-3-hr")
    run.play(sim)
    run.connect("hr", HeartRateStrap("hr", HeartRateSettings()), sim.address)
    await run.until(connected(run))
    assert run.events(Condition.LOW_BATTERY) == []  # 50 % at the start
    await run.until(lambda: bool(run.events(Condition.LOW_BATTERY)), step=1.0)
    (low,) = run.events(Condition.LOW_BATTERY)
    assert low.active and "20 %" in low.detail
    assert sim.battery_level <= 20
    rr = run.numerics(codes.ECG_RR_INTERVAL)
    assert rr and all(700 <= n.value <= 950 for n in rr if n.value is not None)


async def test_polar_ecg_streams_after_the_start_command(run: Run) -> None:
    sim = PolarH10Peripheral(PolarH10Settings(), "normal", run.clock, "bed-4-h10")
    run.play(sim)
    model = PolarH10("ecg", PolarH10Settings())
    run.connect("ecg", model, sim.address)
    waves = lambda: [r for r in run.readings if isinstance(r, Waveform)]  # noqa: E731
    await run.until(lambda: len(waves()) >= 4)
    assert sim.streaming  # the runner performed the model's start write
    chunks = waves()
    assert all(w.sample_rate == 130 and len(w.samples) == ECG_FRAME_SAMPLES for w in chunks)
    # Contiguous: each chunk's sequence continues the previous one.
    assert [w.sequence for w in chunks] == [i * ECG_FRAME_SAMPLES for i in range(len(chunks))]
    signal = np.concatenate([w.samples for w in chunks])
    assert 0.5 < signal.max() - signal.min() < 3.0  # mV: a QRS-sized swing
    assert model.counters.bytes_dropped == 0


async def test_pulled_device_publishes_disconnected_and_clean_up(run: Run) -> None:
    sim = PlxPeripheral(PlxSettings(), "sensor_off", run.clock, "bed-5-plx")
    run.play(sim)
    task = run.connect("ox", PlxOximeter("ox", PlxSettings()), sim.address)
    await run.until(lambda: any(e.active for e in run.events(Condition.SENSOR_OFF)), step=1.0)
    assert sim.peripheral is not None
    await sim.peripheral.pull()
    await run.until(lambda: task.done(), step=0.01, within=0.5)
    from drivers.device import DeviceDisconnected

    with pytest.raises(DeviceDisconnected, match="BLE link lost"):
        task.result()
    last_two = run.readings[-2:]
    # The model's conditions are cleared (the link ended them), then the link is reported.
    assert isinstance(last_two[0], DeviceEvent) and last_two[0].condition is Condition.SENSOR_OFF
    assert not last_two[0].active
    assert isinstance(last_two[1], DeviceEvent) and last_two[1].condition is Condition.DISCONNECTED
    assert last_two[1].active and "BLE link lost" in last_two[1].detail


async def test_a_device_without_the_drivers_characteristic_is_refused(run: Run) -> None:
    sim = PlxPeripheral(PlxSettings(), "normal", run.clock, "bed-6-plx")
    run.play(sim)
    task = run.connect("hr", HeartRateStrap("hr", HeartRateSettings()), sim.address)
    await run.until(lambda: task.done(), step=0.05, within=5)
    from drivers.device import DeviceUnavailable

    with pytest.raises(DeviceUnavailable, match="no Heart Rate Measurement characteristic") as e:
        task.result()
    assert e.value.retry_after is not None and e.value.retry_after >= 60
    (event,) = run.events(Condition.DISCONNECTED)
    assert event.active and "Heart Rate Measurement" in event.detail


class Broken:
    """A model whose decoding has a bug."""

    service_uuid = uuids.PLX_SERVICE
    notify_uuids = (uuids.PLX_CONTINUOUS,)

    def __init__(self) -> None:
        self.counters = CodecCounters()

    def on_connect(self, now: float) -> tuple[Sequence[tuple[str, bytes]], Sequence[Reading]]:
        return (), ()

    def feed(self, uuid: str, payload: bytes, now: float) -> Sequence[Reading]:
        raise ZeroDivisionError("bug")

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        return ()


async def test_a_model_bug_ends_the_connection_as_a_driver_error(run: Run) -> None:
    sim = PlxPeripheral(PlxSettings(), "normal", run.clock, "bed-7-plx")
    run.play(sim)
    task = run.connect("ox", Broken(), sim.address)
    await run.until(lambda: task.done(), step=0.5, within=10)
    with pytest.raises(ZeroDivisionError):
        task.result()
    assert run.events(Condition.DISCONNECTED)[-1].detail == (
        "driver error: ZeroDivisionError; restarting"
    )
    assert sim.peripheral is not None
    await run.until(lambda: sim.peripheral.advertising, step=0.01, within=1)  # type: ignore[union-attr]


async def test_battery_without_notify_is_polled_on_the_clock(run: Run) -> None:
    from bumble import gatt

    from drivers.ble_device import BATTERY_INTERVAL_S
    from drivers.simulate.virtual_ble import VirtualPeripheral, VirtualRadio, bumble_uuid

    level = [50]
    radio = VirtualRadio.shared()
    peripheral = VirtualPeripheral(
        radio,
        name="polled",
        address=radio.allocate_address("polled"),
        services=[
            gatt.Service(
                bumble_uuid(uuids.PLX_SERVICE),
                [
                    gatt.Characteristic(
                        bumble_uuid(uuids.PLX_CONTINUOUS),
                        gatt.Characteristic.Properties.NOTIFY,
                        gatt.Characteristic.READABLE,
                        b"",
                    )
                ],
            ),
            gatt.Service(
                bumble_uuid(uuids.BATTERY_SERVICE),
                [
                    gatt.Characteristic(
                        bumble_uuid(uuids.BATTERY_LEVEL),
                        gatt.Characteristic.Properties.READ,  # no notify: must be polled
                        gatt.Characteristic.READABLE,
                        gatt.CharacteristicValue[bytes](read=lambda _c: bytes(level)),
                    )
                ],
            ),
        ],
        advertised=[uuids.PLX_SERVICE],
    )
    await peripheral.start()
    run.connect("ox", PlxOximeter("ox", PlxSettings()), peripheral.address)
    await run.until(connected(run), step=0.01, within=1)  # spot-check is optional
    assert not any(isinstance(r, Identity) for r in run.readings)  # it has no 0x180A
    level[0] = 12
    start = run.clock.monotonic()
    while run.clock.monotonic() - start < BATTERY_INTERVAL_S - 1:
        await run.clock.advance(1.0)
    await asyncio.sleep(0.05)
    assert run.events(Condition.LOW_BATTERY) == []  # not read again before the interval
    await run.until(lambda: bool(run.events(Condition.LOW_BATTERY)), step=0.5, within=2)
    assert run.events(Condition.LOW_BATTERY)[0].active
    level[0] = 80
    await run.until(lambda: len(run.events(Condition.LOW_BATTERY)) == 2, step=1, within=61)
    assert not run.events(Condition.LOW_BATTERY)[1].active
    await peripheral.stop()
