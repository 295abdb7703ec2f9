"""Speed of the whole ECG pipeline as a ratio to its beat stage, on the same data.

Feeds the first ``--seconds`` of MIT-BIH records (MLII, 0.25 s chunks, mains 60 Hz)
through ``BeatAnalyzer`` alone and through the whole ``EcgPipeline``, interleaved, best
of ``--repeat`` runs of CPU time (``time.process_time``), so load from other jobs on a
shared machine hits both alike; the ratio pipeline / beat stage is the figure to compare.

``--against REV`` also runs the pipeline with ``quality.py`` and ``rhythm.py`` as they
are at git revision REV (the beat stage unchanged), in the same invocation, and checks
that both produce the same beats, events, heart rate, quality and ectopy at every chunk.

    .venv/bin/python bench/ecg_speed.py [--against HEAD] [--seconds 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.analysis.beats import BeatAnalyzer
from gateway.analysis.pipeline import EcgPipeline

ROOT = Path(__file__).resolve().parents[1]

RECORDS = ("119", "201", "208", "203")


def load(path: Path, seconds: float) -> tuple[float, list[np.ndarray]]:
    import wfdb

    names = list(wfdb.rdheader(str(path)).sig_name or [])
    channel = names.index("MLII") if "MLII" in names else 0
    rec = wfdb.rdrecord(str(path), channels=[channel])
    fs = float(rec.fs)
    x = np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64))[: int(seconds * fs)]
    n = round(0.25 * fs)
    return fs, [x[i : i + n] for i in range(0, len(x), n)]


def module_at(rev: str, name: str, tmp: Path) -> ModuleType:
    """``gateway/analysis/<name>.py`` as of git revision ``rev``, imported apart."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:gateway/analysis/{name}.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = tmp / f"{name}_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"{name}_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu(make: Callable[[], Any], chunks: list[np.ndarray]) -> tuple[float, list[Any]]:
    obj = make()
    outs = []
    start = time.process_time()
    for chunk in chunks:
        outs.append(obj.feed(chunk))
    return time.process_time() - start, outs


def decisions(outs: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            [(b.time, b.label) for b in o.beats],
            [(e.kind, e.onset, e.end, e.detail) for e in o.events],
            o.heart_rate,
            o.quality,
            o.analysable,
            o.problem,
            [(e.kind, e.time, e.active, e.detail) for e in o.ectopy],
            o.pvc_per_minute,
            None if o.vf is None else (o.vf.vf_like, o.vf.suspected),
        )
        for o in outs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mitdb")
    parser.add_argument("--seconds", type=float, default=200.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", default=None, help="git revision of quality/rhythm")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        old: tuple[ModuleType, ModuleType] | None = None
        if args.against:
            old = (module_at(args.against, "quality", Path(tmp)),)
            old += (module_at(args.against, "rhythm", Path(tmp)),)

        def old_pipeline(fs: float) -> EcgPipeline:
            assert old is not None
            p = EcgPipeline(fs, mains_hz=60.0)
            p.quality = old[0].SignalQuality(fs, mains_hz=60.0)
            p.rhythm = old[1].RhythmAnalyzer(fs, p.settings, beat_latency=p.beats.latency)
            # Code that predates SignalQuality.clean: give the pipeline what it expects.
            if not hasattr(p.quality, "clean"):
                feed = p.quality.feed

                def feed_with_clean(x: np.ndarray, q: Any = p.quality) -> Any:
                    finite = np.isfinite(x)
                    q.clean = x if bool(finite.all()) else np.where(finite, x, 0.0)
                    return feed(x)

                p.quality.feed = feed_with_clean
            return p

        kinds = ["beat stage", "pipeline"] + ([f"pipeline@{args.against}"] if old else [])
        total = dict.fromkeys(kinds, 0.0)
        seconds = 0.0
        for name in RECORDS:
            fs, chunks = load(args.data / name, args.seconds)
            makers: dict[str, Callable[[], Any]] = {
                "beat stage": lambda fs=fs: BeatAnalyzer(fs, mains_hz=60.0),
                "pipeline": lambda fs=fs: EcgPipeline(fs, mains_hz=60.0),
            }
            if old:
                makers[kinds[2]] = lambda fs=fs: old_pipeline(fs)
            best = dict.fromkeys(kinds, float("inf"))
            outs: dict[str, list[Any]] = {}
            for _ in range(args.repeat):
                for kind in kinds:
                    t, outs[kind] = cpu(makers[kind], chunks)
                    best[kind] = min(best[kind], t)
            span = sum(len(c) for c in chunks) / fs
            seconds += span
            same = ""
            if old:
                equal = decisions(outs["pipeline"]) == decisions(outs[kinds[2]])
                same = "  decisions identical" if equal else "  DECISIONS DIFFER"
            for kind in kinds:
                total[kind] += best[kind]
            print(
                f"{name}: "
                + ", ".join(f"{k} {span / best[k]:.0f}x" for k in kinds)
                + f"; pipeline / beat stage CPU {best['pipeline'] / best['beat stage']:.2f}"
                + same
            )
        print(
            f"all {seconds:.0f} s: "
            + ", ".join(f"{k} {seconds / total[k]:.0f}x real time" for k in kinds)
        )
        print(f"CPU pipeline / beat stage: {total['pipeline'] / total['beat stage']:.2f}")
        if old:
            ratio = total[kinds[2]] / total["beat stage"]
            print(f"CPU pipeline@{args.against} / beat stage: {ratio:.2f}")


if __name__ == "__main__":
    main()
