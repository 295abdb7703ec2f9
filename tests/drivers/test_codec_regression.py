"""The serial codecs decode a large seeded corpus exactly as they did before their speed-up.

``codec_golden.json`` holds, per codec, the seed streams (real simulator output, stored so
that a change to a simulator cannot move the corpus) and one digest per corpus stream of
everything the codec produced for it: each read's frames (their ``repr``), the counters
and the buffered byte count after every read. The digests were recorded from the codecs of
commit 7fe4d83, before the resync and scanning rewrites; a mismatch names the first stream
that decodes differently. ``python -m tests.drivers.test_codec_regression`` re-records
them, which is only right when a behaviour change is intended.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from drivers.ecg.openbci import CytonCodec
from drivers.oximetry.contec import ContecCodec
from drivers.oximetry.masimo import MasimoCodec
from drivers.oximetry.nonin import NoninCodec, NoninDf8Codec
from drivers.readings import CodecCounters

GOLDEN = Path(__file__).with_name("codec_golden.json")
STREAMS = 1500
#: A fresh codec every this many streams; in between its state carries over.
FRESH_EVERY = 50
MASIMO_TALLIES = ("bytes_decoded", "lines_dropped", "overlong_lines")


class Codec(Protocol):
    counters: CodecCounters

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> list[Any]: ...


CODECS: dict[str, Callable[[], Codec]] = {
    "nonin-df7": lambda: NoninCodec(7),
    "nonin-df2": lambda: NoninCodec(2),
    "nonin-df8": NoninDf8Codec,
    "contec-cms50": ContecCodec,
    "masimo-ascii": MasimoCodec,
    "openbci-cyton": CytonCodec,
}


def corpus(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    """Mutated seed streams: intact, damaged (flips, cuts, insertions, duplications,
    splices, runs of one byte) and pure garbage, up to about 1.5 kB each."""
    while True:
        data = bytearray(rng.choice(seeds))
        start = rng.randrange(len(data))
        data = data[start : start + rng.choice((64, 300, 1500))]
        for _ in range(rng.choice((0, 1, 2, 4, 10))):
            op, n = rng.randrange(8), len(data)
            i = rng.randrange(n + 1)
            if op == 0 and i < n:
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1 and i < n:
                data[i] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0x81, 0xA0, 0xFF, 13, 10))
            elif op == 2:
                data[i:i] = rng.randbytes(rng.randint(1, 12))
            elif op == 3:
                del data[i : i + rng.randint(1, 12)]
            elif op == 4:
                data[i:i] = data[i : i + rng.randint(1, 130)]
            elif op == 5:
                other = rng.choice(seeds)
                data[i:] = other[rng.randrange(len(other)) :][:600]
            elif op == 6:
                data[i:i] = bytes([rng.randrange(256)]) * rng.randint(2, 30)
            else:
                data = bytearray(rng.randbytes(rng.randint(0, 200)))
        yield bytes(data)


def digests(name: str, seeds: list[bytes]) -> list[str]:
    """One digest per corpus stream of what the codec makes of it, read by random reads."""
    rng = random.Random(f"golden:{name}")
    out = []
    codec = CODECS[name]()
    for i, data in zip(range(STREAMS), corpus(seeds, rng), strict=False):
        if i % FRESH_EVERY == 0:
            codec = CODECS[name]()
        h = hashlib.sha256()
        at = 0
        while at < len(data):
            n = rng.choice((1, 1, 2, 3, 5, 7, 16, 33, 64, 125, 300, 1000))
            frames = codec.feed(data[at : at + n])
            at += n
            h.update(repr(frames).encode())
            h.update(repr((codec.counters.as_dict(), codec.buffered)).encode())
            if name == "masimo-ascii":  # a line's repr leaves its decoded values out
                h.update(repr([line.values for line in frames]).encode())
                tallies = vars(codec)  # MasimoCodec's own counters, besides ``counters``
                h.update(repr([tallies[k] for k in MASIMO_TALLIES]).encode())
        out.append(h.hexdigest()[:16])
    return out


def _load() -> dict[str, dict[str, list[str]]]:
    golden: dict[str, dict[str, list[str]]] = json.loads(GOLDEN.read_text())
    return golden


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_decodes_corpus_as_recorded(name: str) -> None:
    golden = _load()[name]
    seeds = [bytes.fromhex(s) for s in golden["seeds"]]
    got = digests(name, seeds)
    mismatched = [i for i, (a, b) in enumerate(zip(got, golden["digests"], strict=True)) if a != b]
    assert not mismatched, f"{name}: {len(mismatched)} streams differ, first #{mismatched[0]}"


def _record() -> None:
    from drivers import registry
    from drivers.clock import ManualClock

    settings: dict[str, tuple[str, dict[str, object]]] = {
        "nonin-df7": ("nonin", {"data_format": 7}),
        "nonin-df2": ("nonin", {"data_format": 2}),
        "nonin-df8": ("nonin", {"data_format": 8}),
        "contec-cms50": ("contec-cms50", {}),
        "masimo-ascii": ("masimo-ascii", {}),
        "openbci-cyton": ("openbci-cyton", {}),
    }
    golden: dict[str, dict[str, list[str]]] = {}
    for name, (driver, values) in settings.items():
        spec = registry.get(driver)
        assert spec.make_simulator is not None
        seeds = []
        for scenario in spec.scenarios:
            sim = spec.make_simulator(
                spec.settings.model_validate(values), scenario, ManualClock(), "/nonexistent"
            )
            wire = b"".join(sim.scenario.step().wire for _ in range(12))  # type: ignore[attr-defined]
            if wire:
                seeds.append(wire)
        golden[name] = {"seeds": [s.hex() for s in seeds], "digests": digests(name, seeds)}
    GOLDEN.write_text(json.dumps(golden, indent=0) + "\n")


if __name__ == "__main__":
    _record()
