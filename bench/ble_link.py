"""Cost of the BLE path: bumble peripheral -> virtual radio -> BleakClient -> runner -> model.

A simulated Polar H10 data characteristic is flooded with ECG frames (73 samples, 229
bytes, built by the driver's encoder); the gateway side is the production path
(``BleTransport`` on the real ``BleakClient`` with the virtual-radio backend, and
``run_ble_device`` feeding ``PolarH10``). Measured in the same invocation:

* reference: the same frames fed straight into a fresh ``PolarH10`` model (decode cost only);
* link: frames per second through the whole path, and the ratio to the reference (the
  share of the work that is radio simulation, bleak and the runner);
* latency: from ``notify`` on the peripheral to the Waveform published by the runner, at
  the H10's real rate (one frame each 73/130 s, sent as fast as the loop allows here).

The virtual radio is a test and demo fixture; on a real box BlueZ and the air replace it.

    .venv/bin/python bench/ble_link.py [--frames N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from bumble import gatt as bgatt

from drivers import gatt
from drivers.ble_device import run_ble_device
from drivers.clock import SystemClock
from drivers.ecg.polar_h10 import PolarH10, PolarH10Settings, encode_pmd_ecg_frame
from drivers.readings import Reading, Waveform
from drivers.simulate.virtual_ble import VirtualPeripheral, VirtualRadio, bumble_uuid
from drivers.transport.ble import BleBackend, BleTarget, BleTransport

SAMPLES = 73
STEP_NS = round(SAMPLES * 1e9 / 130)


def frames(n: int) -> list[bytes]:
    return [
        encode_pmd_ecg_frame(
            10**12 + i * STEP_NS, [(i * 37 + k * 11) % 2000 - 1000 for k in range(SAMPLES)]
        )
        for i in range(n)
    ]


def reference(payloads: list[bytes]) -> float:
    model = PolarH10("ref", PolarH10Settings())
    model.on_connect(0.0)
    start = time.perf_counter()
    for i, payload in enumerate(payloads):
        model.feed(gatt.PMD_DATA, payload, i * 0.56)
    return time.perf_counter() - start


async def link(payloads: list[bytes]) -> tuple[float, list[float]]:
    radio = VirtualRadio.shared()
    control = bgatt.Characteristic(
        bumble_uuid(gatt.PMD_CONTROL_POINT),
        bgatt.Characteristic.Properties.WRITE | bgatt.Characteristic.Properties.INDICATE,
        bgatt.Characteristic.WRITEABLE,
        bgatt.CharacteristicValue[bytes](write=lambda _c, _v: None),
    )
    data = bgatt.Characteristic(
        bumble_uuid(gatt.PMD_DATA),
        bgatt.Characteristic.Properties.NOTIFY,
        bgatt.Characteristic.READABLE,
        b"",
    )
    peripheral = VirtualPeripheral(
        radio,
        name="Polar H10 BENCH",
        address=radio.allocate_address("bench"),
        services=[bgatt.Service(bumble_uuid(gatt.PMD_SERVICE), [control, data])],
        advertised=[gatt.HEART_RATE_SERVICE],
    )
    await peripheral.start()
    clock = SystemClock()
    arrived: list[float] = []
    connected = asyncio.Event()
    more = asyncio.Event()

    async def until_arrived(count: int) -> None:
        while len(arrived) < count:
            more.clear()
            await more.wait()

    def publish(reading: Reading) -> None:
        if isinstance(reading, Waveform):
            arrived.append(time.perf_counter())
            more.set()
        elif not getattr(reading, "active", True):
            connected.set()

    transport = BleTransport(
        BleTarget(address=peripheral.address), backend=BleBackend.named("virtual"), clock=clock
    )
    model = PolarH10("bench", PolarH10Settings())
    runner = asyncio.create_task(run_ble_device("bench", model, transport, publish, clock))
    await connected.wait()
    # Throughput: back to back.
    start = time.perf_counter()
    for payload in payloads:
        await peripheral.notify(data, payload)
    await until_arrived(len(payloads))
    elapsed = time.perf_counter() - start
    # Latency: one frame at a time, each waited for.
    latencies = []
    for payload in payloads[:200]:
        before = len(arrived)
        sent = time.perf_counter()
        await peripheral.notify(data, payload)
        await until_arrived(before + 1)
        latencies.append(arrived[-1] - sent)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await peripheral.stop()
    return elapsed, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args(argv)
    payloads = frames(args.frames)
    ref = reference(payloads)
    elapsed, latencies = asyncio.run(link(payloads))
    real_rate = 130 / SAMPLES
    print(f"frames: {args.frames} PMD ECG frames of {SAMPLES} samples ({len(payloads[0])} bytes)")
    print(f"reference (model only): {args.frames / ref:,.0f} frames/s")
    print(
        f"virtual radio + BleakClient + runner + model: {args.frames / elapsed:,.0f} frames/s "
        f"({elapsed / ref:.1f}x the model alone; one H10 needs {real_rate:.2f} frames/s, "
        f"so one core carries about {args.frames / elapsed / real_rate:,.0f} H10s)"
    )
    q = statistics.quantiles(latencies, n=100)
    print(
        "latency notify -> Waveform published: "
        f"median {statistics.median(latencies) * 1e3:.2f} ms, "
        f"p99 {q[98] * 1e3:.2f} ms (n={len(latencies)})"
    )
    print(f"command: .venv/bin/python bench/ble_link.py --frames {args.frames}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
