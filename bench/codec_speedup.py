"""Serial codecs now against the same codecs at a reference commit: speed ratio, same output.

The reference modules are read with ``git show <commit>:<path>`` into a temporary
directory and imported under other names (git state is not touched), so both run in this
one process on the same bytes, interleaved, best of ``--repeat``. Two workloads per codec:

* ``fuzz``: the inputs ``bench/fuzz.py`` feeds it (mutated simulator frames, random
  reads of 1-64 bytes, state kept across inputs): damaged data, resync-heavy;
* ``clean``: ``bench/serial_codecs.py``'s stream (the encoder's packets with a 16-byte
  noise burst every 10 s, 64-byte reads).

Each pair must produce identical frames and counters, or the run fails. ``--models``
also runs the device models (codec plus mapping to readings) of the drivers whose model
code changed, on the fuzz workload, and requires identical readings.

    .venv/bin/python bench/codec_speedup.py [--reference 7fe4d83] [--inputs 20000] [--models]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import fuzz  # noqa: E402
import serial_codecs  # noqa: E402

#: codec name -> (module path, class name, constructor arguments)
CODECS: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "nonin-df7": ("drivers/oximetry/nonin.py", "NoninCodec", (7,)),
    "nonin-df2": ("drivers/oximetry/nonin.py", "NoninCodec", (2,)),
    "nonin-df8": ("drivers/oximetry/nonin.py", "NoninDf8Codec", ()),
    "contec-cms50": ("drivers/oximetry/contec.py", "ContecCodec", ()),
    "masimo-ascii": ("drivers/oximetry/masimo.py", "MasimoCodec", ()),
    "openbci-cyton": ("drivers/ecg/openbci.py", "CytonCodec", ()),
}


def reference_module(commit: str, path: str, tmp: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "reference_" + path.replace("/", "_").removesuffix(".py")
    file = tmp / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def current_module(path: str) -> ModuleType:
    return importlib.import_module(path.removesuffix(".py").replace("/", "."))


def fuzz_reads(name: str, inputs: int) -> list[list[bytes]]:
    """The reads ``bench/fuzz.py`` would feed, one list per input."""
    target = next(t for t in fuzz.targets() if t.name == name)
    rng = random.Random(f"1:{name}")
    chunks = random.Random(name)
    out = []
    for _, data in zip(range(inputs), fuzz.mutations(target.seeds, rng), strict=False):
        reads, at = [], 0
        while at < len(data):
            n = chunks.randint(1, 64)
            reads.append(data[at : at + n])
            at += n
        out.append(reads)
    return out


def clean_reads(name: str, seconds: int) -> list[list[bytes]]:
    rng = random.Random(7)
    case: Any
    if name.startswith("nonin-df8"):
        case = serial_codecs.nonin_df8_case(seconds, rng)
    elif name.startswith("nonin"):
        case = serial_codecs.nonin_case(int(name[-1]), seconds, rng)  # type: ignore[arg-type]
    elif name == "contec-cms50":
        case = serial_codecs.contec_case(seconds, rng)
    elif name == "masimo-ascii":
        case = serial_codecs.masimo_case(seconds, rng)
    else:
        case = serial_codecs.cyton_case(seconds, rng)
    data, chunk = case.stream, case.chunk
    return [[data[i : i + chunk] for i in range(0, len(data), chunk)]]


def run(make: Callable[[], Any], workload: Sequence[Sequence[bytes]]) -> tuple[float, str]:
    """Seconds to decode the workload (a fresh codec every ``fuzz.RESET_EVERY`` inputs),
    and a fingerprint of everything it produced."""
    out: list[str] = []
    started = time.perf_counter()
    codec = make()
    for i, reads in enumerate(workload):
        if i % fuzz.RESET_EVERY == 0:
            out.append(repr(codec.counters))
            codec = make()
        for data in reads:
            codec.feed(data)
    elapsed = time.perf_counter() - started
    out.append(repr(codec.counters))
    return elapsed, "|".join(out)


def check_same(
    make_old: Callable[[], Any], make_new: Callable[[], Any], reads: list[bytes]
) -> None:
    old, new = make_old(), make_new()
    for data in reads:
        a, b = old.feed(data), new.feed(data)
        assert repr(a) == repr(b), "frames differ"
        assert repr(old.counters) == repr(new.counters), "counters differ"


#: model name -> (module path, settings, fuzz workload)
MODELS: dict[str, tuple[str, dict[str, object], str]] = {
    "model:nonin-df7": ("drivers/oximetry/nonin.py", {"data_format": 7}, "nonin-df7"),
    "model:nonin-df8": ("drivers/oximetry/nonin.py", {"data_format": 8}, "nonin-df8"),
}


def run_model(
    module: ModuleType, settings: dict[str, object], workload: list[list[bytes]]
) -> tuple[float, list[str]]:
    """Seconds to turn the workload into readings (a fresh model every ``fuzz.RESET_EVERY``
    inputs, 10 ms between reads), and the ``repr`` of each read's readings."""
    spec = module.SPEC
    values = spec.settings.model_validate(settings)
    out: list[str] = []
    now = 0.0
    elapsed = 0.0
    model: Any = None
    for i, reads in enumerate(workload):
        if i % fuzz.RESET_EVERY == 0:
            model = spec.make_model("bench", values)
            model.on_connect(0.0)
        for data in reads:
            now += 0.01
            started = time.perf_counter()
            readings = model.feed(data, now)
            elapsed += time.perf_counter() - started
            out.append(repr(readings))
    return elapsed, out


def compare_models(reference: str, inputs: int, tmp: Path) -> None:
    for name, (path, settings, workload_name) in MODELS.items():
        workload = fuzz_reads(workload_name, inputs)
        t_old, old = run_model(reference_module(reference, path, tmp), settings, workload)
        t_new, new = run_model(current_module(path), settings, workload)
        assert old == new, f"{name}: readings differ"
        size = sum(len(r) for reads in workload for r in reads)
        print(f"{name:<17}{'fuzz':<9}{size:>10,}{t_old:>9.3f}{t_new:>9.3f}{t_old / t_new:>9.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="7fe4d83", help="git commit of the old codecs")
    parser.add_argument("--inputs", type=int, default=20000, help="fuzz inputs per codec")
    parser.add_argument("--seconds-of-traffic", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codec", action="append", help="only these (repeatable)")
    parser.add_argument("--models", action="store_true", help="compare the device models too")
    args = parser.parse_args(argv)
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print(f"{'codec':<17}{'workload':<9}{'bytes':>10}{'old s':>9}{'new s':>9}{'speed-up':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, cls, ctor) in CODECS.items():
            if args.codec and name not in args.codec:
                continue
            old_cls = getattr(reference_module(args.reference, path, Path(tmp)), cls)
            new_cls = getattr(current_module(path), cls)

            def make_old(c: type = old_cls, a: tuple[Any, ...] = ctor) -> Any:
                return c(*a)

            def make_new(c: type = new_cls, a: tuple[Any, ...] = ctor) -> Any:
                return c(*a)

            workloads = {
                "fuzz": fuzz_reads(name, args.inputs),
                "clean": clean_reads(name, args.seconds_of_traffic),
            }
            for label, workload in workloads.items():
                check_same(make_old, make_new, [r for reads in workload[:3000] for r in reads])
                old_best = new_best = float("inf")
                for _ in range(args.repeat):
                    t_old, f_old = run(make_old, workload)
                    t_new, f_new = run(make_new, workload)
                    assert f_old == f_new, f"{name} {label}: counters differ"
                    old_best, new_best = min(old_best, t_old), min(new_best, t_new)
                size = sum(len(r) for reads in workload for r in reads)
                print(
                    f"{name:<17}{label:<9}{size:>10,}{old_best:>9.3f}{new_best:>9.3f}"
                    f"{old_best / new_best:>9.1f}x",
                    flush=True,
                )
        if args.models:
            compare_models(args.reference, args.inputs, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
