"""End to end over Bluetooth LE: simulated peripherals on the virtual radio -> the real
BleakScanner/BleakClient -> BLE runner -> models -> hub -> twin, in a whole Gateway.

Device time is a ManualClock (peripherals, scan timeouts, supervisor backoff, staleness);
bumble carries packets on the loop's real time, given a bounded poll after each step.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import ManualClock
from drivers.simulate.ble_peripherals import static_address
from drivers.simulate.virtual_ble import VirtualPeripheral, VirtualRadio
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify

CONFIG = """
[gateway]
id = "ble-ward"
data_dir = "state"
listen = "127.0.0.1:8080"
stale_after = 5.0
simulation = true

[ble]
backend = "virtual"

[[beds]]
id = "bed-1"

  [[beds.devices]]
  id = "w-spo2"
  driver = "ble-plx"
  simulate = "disconnects"

  [[beds.devices]]
  id = "w-ecg"
  driver = "polar-h10"
  simulate = "normal"

[[beds]]
id = "bed-2"

  [[beds.devices]]
  id = "w-hr"
  driver = "ble-heart-rate"
  simulate = "battery_low"
"""

SPO2 = "MDC_PULS_OXIM_SAT_O2"
HR = "MDC_ECG_HEART_RATE"


class Ward:
    def __init__(self, gateway: Gateway, clock: ManualClock) -> None:
        self.gateway, self.clock = gateway, clock

    def device(self, bed: str, device_id: str) -> dict[str, Any]:
        beds = {b["id"]: b for b in self.gateway.beds()}
        return next(d for d in beds[bed]["devices"] if d["id"] == device_id)

    def vital(self, bed: str, code: str) -> dict[str, Any] | None:
        beds = {b["id"]: b for b in self.gateway.beds()}
        found: dict[str, Any] | None = beds[bed]["vitals"].get(code)
        return found

    async def until(
        self, condition: Callable[[], bool], within: float, step: float = 0.25
    ) -> float:
        """Step device time until ``condition``; return the device seconds it took."""
        start = self.clock.monotonic()
        loop = asyncio.get_running_loop()
        while not condition():
            if self.clock.monotonic() - start > within:
                raise AssertionError(f"not reached within {within} s of device time")
            await self.clock.advance(step)
            deadline = loop.time() + 0.05
            # A bounded poll: bumble carries packets on the loop's real-time timers.
            while loop.time() < deadline and not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        return self.clock.monotonic() - start

    def state(self, bed: str, device_id: str) -> Callable[[], bool]:
        return lambda: self.device(bed, device_id)["state"] == "connected"


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[Ward]:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(CONFIG))
    clock = ManualClock()
    gateway = Gateway(load(path), clock=clock, notify=SdNotify(), listen_port=0)
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
    yield Ward(gateway, clock)
    gateway.supervisor.stop()
    await asyncio.wait_for(runner, 10)


def peripheral(device_id: str) -> VirtualPeripheral:
    found = VirtualRadio.shared().find(static_address(device_id))
    assert found is not None
    return found


async def test_ble_devices_stream_into_the_twin_side_by_side(ward: Ward) -> None:
    for bed, dev in (("bed-1", "w-spo2"), ("bed-1", "w-ecg"), ("bed-2", "w-hr")):
        await ward.until(ward.state(bed, dev), within=5)
    await ward.until(lambda: (ward.vital("bed-1", SPO2) or {}).get("value") is not None, 5)
    spo2 = ward.vital("bed-1", SPO2)
    assert spo2 is not None and 94 <= spo2["value"] <= 99 and not spo2["stale"]
    ecg = ward.device("bed-1", "w-ecg")
    await ward.until(lambda: ward.device("bed-1", "w-ecg")["waveform_samples"] >= 3 * 73, 5)
    assert ecg["identity"]["manufacturer"] == "Polar Electro Oy"
    assert ward.device("bed-1", "w-spo2")["identity"]["model"] == "PLX-SIM 1822"
    await ward.until(lambda: (ward.vital("bed-2", HR) or {}).get("value") is not None, 5)
    # The strap's battery drains below 20 %: a low-battery condition on that device only.
    await ward.until(
        lambda: "low_battery" in ward.device("bed-2", "w-hr")["conditions"], 70, step=1.0
    )
    assert "low_battery" not in ward.device("bed-1", "w-ecg")["conditions"]
    assert ward.device("bed-1", "w-ecg")["bytes_dropped"] == 0


async def test_a_virtual_disconnect_shows_within_5_s_and_recovers(ward: Ward) -> None:
    await ward.until(ward.state("bed-1", "w-ecg"), within=5)
    await ward.until(ward.state("bed-1", "w-spo2"), within=5)
    # The ECG strap is pulled out of range by hand ...
    await peripheral("w-ecg").pull()
    took = await ward.until(lambda: not ward.state("bed-1", "w-ecg")(), within=5)
    assert took < 5
    assert "BLE link lost" in ward.device("bed-1", "w-ecg")["detail"]
    assert ward.device("bed-1", "w-spo2")["state"] == "connected"  # the other keeps going
    samples = ward.device("bed-1", "w-spo2")["frames_decoded"]
    await ward.until(lambda: ward.device("bed-1", "w-spo2")["frames_decoded"] > samples, 3)
    await peripheral("w-ecg").restore()
    await ward.until(ward.state("bed-1", "w-ecg"), within=10)
    before = ward.device("bed-1", "w-ecg")["waveform_samples"]
    await ward.until(lambda: ward.device("bed-1", "w-ecg")["waveform_samples"] > before, 3)
    # ... and the oximeter's own scenario takes it out of range 20 s into its life.
    took = await ward.until(lambda: not ward.state("bed-1", "w-spo2")(), within=25)
    assert ward.vital("bed-1", SPO2) is not None
    await ward.until(lambda: bool((ward.vital("bed-1", SPO2) or {}).get("stale")), within=5)
    await ward.until(ward.state("bed-1", "w-spo2"), within=10)
    health = ward.gateway.supervisor.health["device:w-spo2"]
    assert health.restarts >= 1
