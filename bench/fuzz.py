"""Fuzz every wire codec: inputs tried and crashes found, per codec.

A *crash* is any exception leaving a codec or device model (the rule is: bad input is
counted and dropped, never raised). Targets, each on a fresh model that lives across inputs
so buffers, resync and state machines are exercised (and reset every ``RESET_EVERY`` inputs):

* serial device models (codec + mapping to readings), fed as a byte stream in random
  chunks: every serial driver in the registry and, for the Nonin, each data format;
* BLE device models (one GATT notification per input, on each notified characteristic);
* the IEEE 11073 SFLOAT/FLOAT decoders (16/32-bit words);
* the Modbus pump codec (register blocks of a poll, per shipped profile);
* the HL7 ACK parser of the MLLP sync (text).

Engines: ``mutate`` (default), a seeded structure-aware mutation fuzzer: seeds are real
frames from each driver's encoder or simulator, mutated by bit flips, byte changes,
insertions, deletions, duplications, splices of two seeds, truncation and pure random
bytes; fast enough for millions of inputs per codec in minutes. ``hypothesis``: the same
targets under ``hypothesis.given(st.binary())`` with ``--inputs`` as ``max_examples``
(slower per input, with shrinking of a failure).

    .venv/bin/python bench/fuzz.py --inputs 1000000            # every codec
    .venv/bin/python bench/fuzz.py --seconds 60 --codec nonin-df7
    .venv/bin/python bench/fuzz.py --engine hypothesis --inputs 20000

Crashing inputs are written (hex) to ``--crash-dir``; the exit status is 1 if any crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers import gatt, registry  # noqa: E402
from drivers.clock import ManualClock  # noqa: E402

RESET_EVERY = 1000
MAX_LEN = 512
#: Serial reads are 1..64 bytes, drawn from a table of this many sizes made once per target
#: (one random draw per input instead of one per read: the harness, not the codec, was the
#: bottleneck for the fast codecs).
READ_SIZES = 4096


@dataclass
class Target:
    """One codec under fuzz: ``run(data)`` must never raise; ``reset()`` starts afresh."""

    name: str
    seeds: list[bytes]
    make: Callable[[], Callable[[bytes], None]]
    #: Exceptions the target documents as its answer to bad input (not crashes).
    expected: tuple[type[Exception], ...] = ()
    run: Callable[[bytes], None] = field(init=False)

    def reset(self) -> None:
        self.run = self.make()


# -- targets ------------------------------------------------------------------------------
def _serial_target(
    name: str, driver: str, codec: Callable[[], object] | None = None, **settings: object
) -> Target:
    """The driver's codec (``codec`` given) or its whole device model, fed a byte stream."""
    spec = registry.get(driver)
    values = spec.settings.model_validate(settings)
    seeds: list[bytes] = []
    assert spec.make_simulator is not None
    for scenario in spec.scenarios:
        sim = spec.make_simulator(values, scenario, ManualClock(), f"/nonexistent/{name}")
        wire = [sim.scenario.step().wire for _ in range(12)]  # type: ignore[attr-defined]
        seeds.append(b"".join(wire))
    rng = random.Random(name)
    sizes = [rng.randint(1, 64) for _ in range(READ_SIZES)]

    def reads(data: bytes) -> Iterator[bytes]:
        """``data`` cut into reads of random sizes, as a serial port returns them."""
        k = rng.randrange(READ_SIZES)
        at, end = 0, len(data)
        while at < end:
            n = sizes[k]
            yield data[at : at + n]
            at += n
            k = (k + 1) % READ_SIZES

    def make() -> Callable[[bytes], None]:
        if codec is not None:
            feed = codec().feed  # type: ignore[attr-defined]

            def decode(data: bytes) -> None:
                for chunk in reads(data):
                    feed(chunk)

            return decode
        model: Any = spec.make_model("fuzz", values)
        model.on_connect(0.0)
        now = [0.0]

        def run(data: bytes) -> None:
            for chunk in reads(data):
                now[0] += 0.01
                model.feed(chunk, now[0])

        return run

    return Target(name, [s for s in seeds if s], make)


def _ble_target(name: str, driver: str, seeds: list[bytes]) -> Target:
    spec = registry.get(driver)
    values = spec.settings.model_validate({})

    def make() -> Callable[[bytes], None]:
        model: Any = spec.make_model("fuzz", values)
        model.on_connect(0.0)
        uuids = list(model.notify_uuids)
        now = [0.0]

        def run(data: bytes) -> None:
            now[0] += 0.05
            uuid = uuids[data[0] % len(uuids)] if data else uuids[0]
            model.feed(uuid, data[1:], now[0])

        return run

    return Target(name, seeds, make)


def _ieee_target() -> Target:
    from drivers.ieee11073 import decode_float, decode_sfloat

    def make() -> Callable[[bytes], None]:
        def run(data: bytes) -> None:
            for i in range(0, len(data) - 1, 2):
                decode_sfloat(int.from_bytes(data[i : i + 2], "little"))
            for i in range(0, len(data) - 3, 4):
                decode_float(int.from_bytes(data[i : i + 4], "little"))

        return run

    return Target("ieee11073", [bytes(range(16)), b"\xff\x07\x00\x08\xfe\x07\x02\x08"], make)


def _pump_target(profile_name: str) -> Target:
    from drivers.infusion.codec import PumpCodec
    from drivers.infusion.profile import load_profile

    profile = load_profile(profile_name)

    def make() -> Callable[[bytes], None]:
        codec = PumpCodec(profile)

        def run(data: bytes) -> None:
            # The bytes become the registers of one poll; the first byte decides which
            # blocks are short or missing, so incomplete polls are fuzzed too.
            words = [int.from_bytes(data[i : i + 2], "big") for i in range(1, len(data) - 1, 2)]
            shape = data[0] if data else 0
            blocks: dict[object, list[int]] = {}
            at = 0
            for k, block in enumerate(codec.plan):
                if shape >> (k % 8) & 1 and k % 3 == 0:
                    continue
                blocks[(block.table, block.address)] = words[at : at + block.count]
                at += block.count
            codec.decode(blocks)  # type: ignore[arg-type]

        return run

    seed = bytes([0]) + bytes(range(256))
    return Target(f"pump-{profile_name}", [seed], make)


def _hl7_target() -> Target:
    from gateway.sync.hl7 import AckError, parse_ack

    seeds = [
        b"MSH|^~\\&|RCV||GW||20260101000000||ACK^R01|ack1|P|2.6\rMSA|AA|ctl1\r",
        b"MSH|^~\\&|RCV||GW||20260101000000||ACK|a|P|2.6\rMSA|AE|ctl1|bad\rERR|||207\r",
    ]

    def make() -> Callable[[bytes], None]:
        def run(data: bytes) -> None:
            parse_ack(data.decode("latin-1"))

        return run

    return Target("hl7-ack", seeds, make, expected=(AckError,))


def _ble_seeds() -> dict[str, list[bytes]]:
    from drivers.ecg.heart_rate import encode_heart_rate
    from drivers.ecg.polar_h10 import encode_pmd_ecg_frame
    from drivers.oximetry.plx import encode_plx_continuous

    return {
        "ble-plx": [
            b"\x00" + encode_plx_continuous(97, 72),
            b"\x00" + encode_plx_continuous(95, 80, fast=(96, 81), pulse_amplitude_index=4.2),
            b"\x01" + bytes(range(19)),
        ],
        "ble-heart-rate": [
            b"\x00" + encode_heart_rate(72, rr_intervals=[830, 845]),
            b"\x00" + encode_heart_rate(300, contact_bits=2, energy_expended=5),
        ],
        "polar-h10": [
            b"\x01" + encode_pmd_ecg_frame(10**15, [100, -200, 300] * 20),
            b"\x00" + bytes([0xF0, 0x02, 0x00, 0x00, 0x00]),
        ],
    }


def targets() -> list[Target]:
    from drivers.ecg.openbci import CytonCodec
    from drivers.infusion.profile import shipped_profiles
    from drivers.oximetry.contec import ContecCodec
    from drivers.oximetry.masimo import MasimoCodec
    from drivers.oximetry.nonin import NoninCodec, NoninDf8Codec

    found = [
        _serial_target("nonin-df7", "nonin", lambda: NoninCodec(7), data_format=7),
        _serial_target("nonin-df2", "nonin", lambda: NoninCodec(2), data_format=2),
        _serial_target("nonin-df8", "nonin", NoninDf8Codec, data_format=8),
        _serial_target("contec-cms50", "contec-cms50", ContecCodec),
        _serial_target("masimo-ascii", "masimo-ascii", MasimoCodec),
        _serial_target("openbci-cyton", "openbci-cyton", CytonCodec),
    ]
    # The whole device models (codec, mapping, conditions) too: slower per input.
    found += [
        _serial_target("model:nonin-df7", "nonin", data_format=7),
        _serial_target("model:nonin-df8", "nonin", data_format=8),
        _serial_target("model:contec-cms50", "contec-cms50"),
        _serial_target("model:masimo-ascii", "masimo-ascii"),
        _serial_target("model:openbci-cyton", "openbci-cyton"),
    ]
    for driver, seeds in _ble_seeds().items():
        found.append(_ble_target(driver, driver, seeds))
    found.append(_ieee_target())
    found.extend(_pump_target(p) for p in shipped_profiles())
    found.append(_hl7_target())
    assert gatt  # the BLE targets need the UUID table loaded
    return found


# -- the mutation engine --------------------------------------------------------------------
def mutations(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    # int(rand() * n) rather than randrange(n): the same uniform choice at a tenth of the
    # cost, which matters when the codec under test takes a few microseconds per input.
    rand = rng.random
    randbytes = rng.randbytes
    n_seeds = len(seeds)
    boundary = (0, 1, 0x7F, 0x80, 0xFF)
    counts = (1, 1, 2, 3, 8)
    while True:
        data = bytearray(seeds[int(rand() * n_seeds)])
        for _ in range(counts[int(rand() * 5)]):
            op = int(rand() * 9)
            n = len(data)
            if op == 0 and n:  # flip a bit
                data[int(rand() * n)] ^= 1 << int(rand() * 8)
            elif op == 1 and n:  # replace a byte, often with a boundary value
                k = int(rand() * 6)
                data[int(rand() * n)] = boundary[k] if k < 5 else int(rand() * 256)
            elif op == 2:  # insert random bytes
                i = int(rand() * (n + 1))
                data[i:i] = randbytes(1 + int(rand() * 16))
            elif op == 3 and n:  # delete a range
                i = int(rand() * n)
                del data[i : i + 1 + int(rand() * 16)]
            elif op == 4 and n:  # duplicate a range
                i = int(rand() * n)
                data[i:i] = data[i : i + 1 + int(rand() * 32)]
            elif op == 5:  # splice with another seed
                other = seeds[int(rand() * n_seeds)]
                data = data[: int(rand() * (n + 1))] + other[int(rand() * (len(other) + 1)) :]
            elif op == 6 and n:  # truncate
                del data[int(rand() * n) :]
            elif op == 7:  # pure garbage
                data = bytearray(randbytes(int(rand() * 97)))
            else:  # repeat a byte (runs of sync-looking bytes)
                i = int(rand() * (n + 1))
                data[i:i] = bytes((int(rand() * 256),)) * (2 + int(rand() * 39))
        yield bytes(data[:MAX_LEN])


@dataclass
class Result:
    codec: str
    inputs: int = 0
    crashes: int = 0
    seconds: float = 0.0
    #: CPU seconds of this process: on a shared, loaded machine the wall-clock rate says
    #: more about the other load than about the codec, the CPU rate does not.
    cpu_seconds: float = 0.0
    first_crash: str = ""

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    @property
    def cpu_rate(self) -> float:
        return self.inputs / self.cpu_seconds if self.cpu_seconds else 0.0


def _crashed(result: Result, target: Target, data: bytes, crash_dir: Path) -> None:
    result.crashes += 1
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{target.name}-{result.crashes}.hex"
    path.write_text(data.hex() + "\n" + traceback.format_exc())
    if not result.first_crash:
        result.first_crash = traceback.format_exc(limit=-1).strip().splitlines()[-1]
    target.reset()


def fuzz_mutate(target: Target, inputs: int, seconds: float, seed: int, crash_dir: Path) -> Result:
    rng = random.Random(f"{seed}:{target.name}")
    result = Result(target.name)
    target.reset()
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    for data in mutations(target.seeds, rng):
        if result.inputs >= inputs or (
            result.inputs % 1000 == 0 and time.perf_counter() > deadline
        ):
            break
        result.inputs += 1
        if result.inputs % RESET_EVERY == 0:
            target.reset()
        try:
            target.run(data)
        except target.expected:
            pass
        except Exception:
            _crashed(result, target, data, crash_dir)
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result


def fuzz_hypothesis(target: Target, inputs: int, crash_dir: Path) -> Result:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    result = Result(target.name)
    target.reset()

    @settings(
        max_examples=inputs,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.binary(max_size=MAX_LEN) | st.sampled_from(target.seeds))
    def run(data: bytes) -> None:
        result.inputs += 1
        with contextlib.suppress(*target.expected):
            target.run(data)

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        run()
    except Exception:
        _crashed(result, target, b"", crash_dir)
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("mutate", "hypothesis"), default="mutate")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="per codec")
    parser.add_argument("--seconds", type=float, default=float("inf"), help="per codec cap")
    parser.add_argument("--codec", action="append", help="only these (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    chosen = [t for t in targets() if not args.codec or t.name in args.codec]
    if not chosen:
        parser.error(f"no such codec; choose from {[t.name for t in targets()]}")
    results = []
    print(
        f"{'codec':<24}{'inputs':>12}{'crashes':>9}{'seconds':>10}{'inputs/s':>11}"
        f"{'cpu s':>9}{'inputs/cpu s':>14}"
    )
    for target in chosen:
        if args.engine == "mutate":
            result = fuzz_mutate(target, args.inputs, args.seconds, args.seed, args.crash_dir)
        else:
            result = fuzz_hypothesis(target, args.inputs, args.crash_dir)
        results.append(result)
        print(
            f"{result.codec:<24}{result.inputs:>12,}{result.crashes:>9}"
            f"{result.seconds:>10.1f}{result.rate:>11,.0f}"
            f"{result.cpu_seconds:>9.1f}{result.cpu_rate:>14,.0f}"
            + (f"  first: {result.first_crash}" if result.crashes else ""),
            flush=True,
        )
    total = sum(r.inputs for r in results)
    crashes = sum(r.crashes for r in results)
    print(f"{'total':<24}{total:>12,}{crashes:>9}")
    if args.json:
        rows = [
            {**r.__dict__, "rate": round(r.rate), "cpu_rate": round(r.cpu_rate)} for r in results
        ]
        args.json.write_text(json.dumps({"engine": args.engine, "results": rows}, indent=1))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
