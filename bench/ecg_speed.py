"""Speed of the whole streaming ECG pipeline, and a check that its decisions are unchanged.

Feeds MIT-BIH (or any WFDB) records, MLII else channel 0, in 0.25 s chunks (the
``ecg analyze`` contract), mains 60 Hz, through the beat stage (``BeatAnalyzer``) alone and
through the whole ``EcgPipeline``, interleaved, best of ``--repeat`` runs of CPU time
(``time.process_time``), so load from other jobs on a shared machine hits both alike.
Also reported, as a figure less sensitive to that load: the sum over chunks of each
chunk's shortest wall time (``perf_counter``) across the repeats ("per-chunk best").

``--against REV`` also runs the whole pipeline as it is at git revision REV (every file of
``gateway/analysis`` loaded from git into a package of its own) in the same invocation:
the speed ratio current / REV is the figure to compare across machines and loads. It then
checks, at every chunk and at the end of the record, that both give the same decisions
(beats with their samples and labels, rhythm events, ectopy, analysable/problem, the VF
verdicts) and reports separately whether the values behind them (heart rate, quality
index, RR, QRS width, template correlation, VF features) are bit-identical.

    .venv/bin/python bench/ecg_speed.py [--against 7fe4d83] [--seconds 200] [--repeat 5]
    .venv/bin/python bench/ecg_speed.py --against 7fe4d83 --all --seconds 0 --repeat 1
"""

from __future__ import annotations

import argparse
import importlib
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.analysis.beats import BeatAnalyzer
from gateway.analysis.pipeline import EcgPipeline

ROOT = Path(__file__).resolve().parents[1]

RECORDS = ("119", "201", "208", "203")


def load(path: Path, seconds: float) -> tuple[float, list[np.ndarray]]:
    """The record's chunks of 0.25 s (mV); ``seconds`` <= 0 means the whole record."""
    import wfdb

    names = list(wfdb.rdheader(str(path)).sig_name or [])
    channel = names.index("MLII") if "MLII" in names else 0
    rec = wfdb.rdrecord(str(path), channels=[channel])
    fs = float(rec.fs)
    x = np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64))
    if seconds > 0:
        x = x[: int(seconds * fs)]
    n = round(0.25 * fs)
    return fs, [x[i : i + n] for i in range(0, len(x), n)]


def package_at(rev: str, tmp: Path) -> Any:
    """``gateway/analysis`` as of git revision ``rev``, imported as a package of its own.

    Its internal imports are rewritten to the new package name so that nothing of the
    current tree leaks into it; the pipeline module is returned.
    """
    name = "ecg_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "gateway/analysis/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    package = tmp / name
    package.mkdir()
    for file in files:
        if not file.endswith(".py"):
            continue
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{file}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / Path(file).name).write_text(source.replace("gateway.analysis", name))
    sys.path.insert(0, str(tmp))
    return importlib.import_module(f"{name}.pipeline")


def cpu(make: Callable[[], Any], chunks: list[np.ndarray]) -> tuple[float, np.ndarray, list[Any]]:
    """CPU seconds of the whole run, wall seconds of each chunk, and the outputs."""
    obj = make()
    outs = []
    walls = np.empty(len(chunks))
    clock = time.perf_counter
    start = time.process_time()
    for i, chunk in enumerate(chunks):
        t = clock()
        outs.append(obj.feed(chunk))
        walls[i] = clock() - t
    if hasattr(obj, "close"):
        outs.append(obj.close())
    return time.process_time() - start, walls, outs


def _value(v: Any) -> Any:
    """NaN as a string, so that equal NaN features compare equal."""
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def decisions(outs: list[Any]) -> list[tuple[Any, ...]]:
    """What the pipeline decided, chunk by chunk, then the episodes ``close`` ended."""
    *chunks, closed = outs
    return [
        (
            [(b.sample, b.time, b.label) for b in o.beats],
            [(e.kind, e.onset, e.end, e.detail) for e in o.events],
            o.analysable,
            o.problem,
            [(e.kind, e.time, e.active, e.detail) for e in o.ectopy],
            o.pvc_per_minute,
            None if o.vf is None else (o.vf.vf_like, o.vf.suspected),
        )
        for o in chunks
    ] + [[(e.kind, e.onset, e.end, e.detail) for e in closed]]


def values(outs: list[Any]) -> list[tuple[Any, ...]]:
    """The numbers behind the decisions (compared bit for bit)."""
    return [
        (
            [(b.rr, b.width, b.correlation) for b in o.beats],
            o.heart_rate,
            o.quality,
            None
            if o.vf is None
            else tuple(
                _value(v)
                for v in (o.vf.high_freq, o.vf.vf_band, o.vf.near_baseline, o.vf.amplitude_mV)
            ),
        )
        for o in outs[:-1]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mitdb")
    parser.add_argument("--records", nargs="*", default=list(RECORDS))
    parser.add_argument("--all", action="store_true", help="every record in --data")
    parser.add_argument("--seconds", type=float, default=200.0, help="<= 0: whole records")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-beat-stage", action="store_true", help="skip the beat stage")
    parser.add_argument("--against", default=None, help="git revision of gateway/analysis")
    args = parser.parse_args()
    records = sorted(p.stem for p in args.data.glob("*.hea")) if args.all else list(args.records)

    with tempfile.TemporaryDirectory() as tmp:
        old = package_at(args.against, Path(tmp)) if args.against else None
        ref = f"pipeline@{args.against}"
        kinds = [] if args.no_beat_stage else ["beat stage"]
        kinds += ["pipeline"] + ([ref] if old else [])
        total = dict.fromkeys(kinds, 0.0)
        per_chunk = dict.fromkeys(kinds, 0.0)
        seconds = 0.0
        same_decisions = same_values = 0
        for name in records:
            fs, chunks = load(args.data / name, args.seconds)
            makers: dict[str, Callable[[], Any]] = {
                "beat stage": lambda fs=fs: BeatAnalyzer(fs, mains_hz=60.0),
                "pipeline": lambda fs=fs: EcgPipeline(fs, mains_hz=60.0),
            }
            if old:
                makers[ref] = lambda fs=fs: old.EcgPipeline(fs, mains_hz=60.0)
            best = dict.fromkeys(kinds, float("inf"))
            fastest = {kind: np.full(len(chunks), np.inf) for kind in kinds}
            outs: dict[str, list[Any]] = {}
            for _ in range(args.repeat):
                for kind in kinds:
                    t, walls, outs[kind] = cpu(makers[kind], chunks)
                    best[kind] = min(best[kind], t)
                    np.minimum(fastest[kind], walls, out=fastest[kind])
            span = sum(len(c) for c in chunks) / fs
            seconds += span
            verdict = ""
            if old:
                new, was = outs["pipeline"], outs[ref]
                same = decisions(new) == decisions(was)
                exact = values(new) == values(was)
                same_decisions += same
                same_values += exact
                verdict = "  decisions identical" if same else "  DECISIONS DIFFER"
                verdict += ", values bit-identical" if exact else ", values differ"
            for kind in kinds:
                total[kind] += best[kind]
                per_chunk[kind] += float(fastest[kind].sum())
            ratio = f"; pipeline@{args.against} / pipeline CPU {best[ref] / best['pipeline']:.2f}"
            print(
                f"{name}: "
                + ", ".join(f"{k} {span / best[k]:.0f}x" for k in kinds)
                + (ratio if old else "")
                + verdict,
                flush=True,
            )
        print(
            f"all {len(records)} records, {seconds:.0f} s: "
            + ", ".join(f"{k} {seconds / total[k]:.0f}x real time" for k in kinds)
        )
        print(
            "per-chunk best: "
            + ", ".join(f"{k} {seconds / per_chunk[k]:.0f}x real time" for k in kinds)
            + (
                f"; pipeline@{args.against} / pipeline {per_chunk[ref] / per_chunk['pipeline']:.2f}"
                if old
                else ""
            )
        )
        if "beat stage" in total:
            print(f"CPU pipeline / beat stage: {total['pipeline'] / total['beat stage']:.2f}")
        if old:
            print(
                f"CPU pipeline@{args.against} / pipeline: {total[ref] / total['pipeline']:.2f} "
                f"(speed-up); decisions identical on {same_decisions}/{len(records)} records, "
                f"values bit-identical on {same_values}/{len(records)}"
            )


if __name__ == "__main__":
    main()
