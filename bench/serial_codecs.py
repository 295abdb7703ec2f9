"""Decode throughput of every serial codec, and its cost at the device's real byte rate.

For each codec: a stream of valid packets (with a little line noise mixed in, as on a real
cable) is fed in chunks the size a serial read returns, through the codec alone and through
the whole device model (codec + mapping to readings). Reported per codec: MB/s, frames/s,
and the share of one core the device's real byte rate costs. A reference loop that only
touches every byte runs in the same invocation, so figures can be compared across machines
as a ratio.

    .venv/bin/python bench/serial_codecs.py [--seconds-of-traffic N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.oximetry.nonin import (
    FRAME_LEN,
    FRAMES_PER_PACKET,
    NoninCodec,
    NoninOximeter,
    NoninSettings,
    encode_packet,
)
from drivers.simulate.nonin import NoninScenario


@dataclass(frozen=True)
class Case:
    name: str
    stream: bytes
    chunk: int
    device_bytes_per_second: float
    frame_len: int
    run_codec: Callable[[bytes, int], int]
    run_model: Callable[[bytes, int], int]


def nonin_case(data_format: int, seconds: int, rng: random.Random) -> Case:
    scenario = NoninScenario("normal", data_format=data_format, seed=1)  # type: ignore[arg-type]
    parts = []
    for i in range(seconds * 3):
        parts.append(encode_packet(scenario.step().packet, data_format))  # type: ignore[arg-type]
        if i % 30 == 29:  # about one burst of noise every 10 s
            parts.append(bytes(rng.randrange(256) for _ in range(16)))
    stream = b"".join(parts)

    def codec(data: bytes, chunk: int) -> int:
        c = NoninCodec(data_format)  # type: ignore[arg-type]
        for i in range(0, len(data), chunk):
            c.feed(data[i : i + chunk])
        return c.counters.frames_decoded

    def model(data: bytes, chunk: int) -> int:
        m = NoninOximeter("bench", NoninSettings(data_format=data_format))  # type: ignore[arg-type]
        m.on_connect(0.0)
        for i in range(0, len(data), chunk):
            m.feed(data[i : i + chunk], i / 960.0)
        return m.counters.frames_decoded

    # 9600 baud 8N1 carries 960 bytes/s; the device sends 75 frames/s = 375 bytes/s.
    return Case(
        f"nonin DF{data_format}",
        stream,
        chunk=64,
        device_bytes_per_second=FRAME_LEN * 75.0,
        frame_len=FRAME_LEN,
        run_codec=codec,
        run_model=model,
    )


def reference(data: bytes, chunk: int) -> int:
    """Touch every byte once in pure Python: the machine's speed yardstick."""
    total = 0
    for i in range(0, len(data), chunk):
        for b in data[i : i + chunk]:
            total += b
    return total


def best_of(repeat: int, fn: Callable[[bytes, int], int], data: bytes, chunk: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(data, chunk)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-of-traffic", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    cases = [
        nonin_case(7, args.seconds_of_traffic, rng),
        nonin_case(2, args.seconds_of_traffic, rng),
    ]

    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print(f"traffic: {args.seconds_of_traffic} s per codec, best of {args.repeat}, 64-byte reads")
    header = (
        f"{'codec':<10} {'path':<6} {'MB/s':>7} {'frames/s':>10} {'x ref':>6} "
        f"{'core % at device rate':>22}"
    )
    print(header)
    for case in cases:
        ref = best_of(args.repeat, reference, case.stream, case.chunk)
        for path, fn in (("codec", case.run_codec), ("model", case.run_model)):
            frames = fn(case.stream, case.chunk)
            expected = args.seconds_of_traffic * 75
            assert frames == expected // FRAMES_PER_PACKET * FRAMES_PER_PACKET, (frames, expected)
            elapsed = best_of(args.repeat, fn, case.stream, case.chunk)
            mb_s = len(case.stream) / elapsed / 1e6
            core = case.device_bytes_per_second / (len(case.stream) / elapsed) * 100
            print(
                f"{case.name:<10} {path:<6} {mb_s:>7.3f} {frames / elapsed:>10.0f} "
                f"{elapsed / ref:>6.1f} {core:>21.4f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
