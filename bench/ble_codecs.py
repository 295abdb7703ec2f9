"""Decode cost of the BLE device models, per GATT payload and at the device's real rate.

For each BLE driver, a run of notifications built by the driver's own encoder (what its
simulated peripheral sends) is fed through the whole device model (``SPEC.make_model`` +
``on_connect`` + ``feed``: decoding plus mapping to readings):

* ble-plx: PLX Continuous Measurement with every optional field (20 bytes), 1 per second;
* ble-heart-rate: Heart Rate Measurement with two RR intervals (6 bytes), 1 per second;
* polar-h10: PMD ECG frames of 73 samples (229 bytes), 130/73 per second.

Reported: payloads/s, MB/s, the share of one core the device's real rate costs, and the
time relative to a pure-Python loop that touches every payload byte once (the machine's
yardstick, measured in the same invocation).

    .venv/bin/python bench/ble_codecs.py [--seconds-of-traffic N] [--repeat R]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers import gatt
from drivers.ecg import heart_rate, polar_h10
from drivers.oximetry import plx
from drivers.registry import DriverSpec

ECG_FRAME_SAMPLES = 73


@dataclass(frozen=True)
class Case:
    name: str
    spec: DriverSpec
    uuid: str
    payloads: list[bytes]
    payloads_per_second: float


def plx_case(seconds: int, rng: random.Random) -> Case:
    payloads = [
        plx.encode_plx_continuous(
            float(rng.randint(90, 99)),
            float(rng.randint(55, 95)),
            fast=(float(rng.randint(90, 99)), float(rng.randint(55, 95))),
            slow=(float(rng.randint(90, 99)), float(rng.randint(55, 95))),
            measurement_status=int(plx.PlxMeasurementStatus.MEASUREMENT_ONGOING),
            device_status=0,
            pulse_amplitude_index=rng.randint(10, 120) / 10,
        )
        for _ in range(seconds)
    ]
    return Case("ble-plx", plx.SPEC, gatt.PLX_CONTINUOUS, payloads, 1.0)


def heart_rate_case(seconds: int, rng: random.Random) -> Case:
    payloads = [
        heart_rate.encode_heart_rate(
            rng.randint(55, 95), contact_bits=3, rr_intervals=[rng.randint(600, 1100)] * 2
        )
        for _ in range(seconds)
    ]
    return Case("ble-heart-rate", heart_rate.SPEC, gatt.HEART_RATE_MEASUREMENT, payloads, 1.0)


def polar_case(seconds: int, rng: random.Random) -> Case:
    rate = polar_h10.ECG_SAMPLE_RATE_HZ
    frames = math.ceil(seconds * rate / ECG_FRAME_SAMPLES)
    payloads = []
    for i in range(frames):
        last = (i + 1) * ECG_FRAME_SAMPLES - 1
        samples = [
            int(1000 * math.sin(0.05 * (last + k))) + rng.randint(-20, 20)
            for k in range(ECG_FRAME_SAMPLES)
        ]
        payloads.append(polar_h10.encode_pmd_ecg_frame(10**9 + last * 10**9 // rate, samples))
    return Case("polar-h10", polar_h10.SPEC, gatt.PMD_DATA, payloads, rate / ECG_FRAME_SAMPLES)


def run_model(case: Case) -> int:
    model = case.spec.make_model("bench", case.spec.settings())
    model.on_connect(0.0)  # type: ignore[attr-defined]
    feed: Callable[[str, bytes, float], Sequence[object]] = model.feed  # type: ignore[attr-defined]
    period = 1.0 / case.payloads_per_second
    readings = 0
    for i, payload in enumerate(case.payloads):
        readings += len(feed(case.uuid, payload, 1.0 + i * period))
    decoded = model.counters.frames_decoded
    if decoded != len(case.payloads):
        raise SystemExit(f"{case.name}: decoded {decoded} of {len(case.payloads)} payloads")
    return readings


def reference(case: Case) -> int:
    """Touch every payload byte once in pure Python: the machine's speed yardstick."""
    total = 0
    for payload in case.payloads:
        for b in payload:
            total += b
    return total


def best_of(repeat: int, fn: Callable[[Case], int], case: Case) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(case)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-of-traffic", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    seconds = args.seconds_of_traffic
    cases = [plx_case(seconds, rng), heart_rate_case(seconds, rng), polar_case(seconds, rng)]
    print(f"{dt.date.today()}, {seconds} s of traffic per driver, best of {args.repeat}")
    print()
    print(
        "| driver | payload B | payloads/s | MB/s | x ref | device payloads/s "
        "| core % at device rate |"
    )
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        model_s = best_of(args.repeat, run_model, case)
        ref_s = best_of(args.repeat, reference, case)
        size = sum(map(len, case.payloads))
        per_s = len(case.payloads) / model_s
        core = case.payloads_per_second / per_s * 100
        print(
            f"| {case.name} | {size / len(case.payloads):.0f} | {per_s:,.0f} | "
            f"{size / model_s / 1e6:.3f} | {model_s / ref_s:.1f} | "
            f"{case.payloads_per_second:.2f} | {core:.4f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
