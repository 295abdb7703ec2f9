"""Rhythm episodes of the whole streaming pipeline against the expert annotations.

Runs ``EcgPipeline`` (QRS, beat class, quality, rhythm) causally in 0.25 s chunks over
every record of the given WFDB folders and scores, with the EC57 episode conventions of
``gateway.analysis.scoring`` (whole record; a reference episode is detected if a detected
episode of the same kind overlaps it; alarm delay = when the overlapping detection was
first reported minus the reference onset):

* AF (``(AFIB``), VT (``(VT``) and VF/VFL (``(VF``, ``(VFL``, ``(VFIB``) episode Se/+P,
  duration Se/+P and median alarm delay; VF also for episodes of at least 5 s only;
* asystole: for each ``(ASYS`` episode, when the pipeline's asystole alarm came after the
  last QRS it reported before the reference onset;
* false alarms per hour of VF, VT and asystole on records (or parts) without them;
* speed: signal seconds per CPU second of the pipeline (one lead).

Paced MIT-BIH records (102 104 107 217) are reported apart and not pooled.

    .venv/bin/python bench/rhythm.py [--data ../shared/data] [--jobs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.analysis.pipeline import EcgPipeline
from gateway.analysis.scoring import EpisodeScore, score_episodes
from gateway.analysis.scoring import reference_episodes as scored_reference

PACED = {"102", "104", "107", "217"}
#: MIT-BIH records with atrial fibrillation (those of 201 202 203 219 221 222 present).
AF_RECORDS = {"201", "202", "203", "219", "221", "222"}
KINDS = ("afib", "vt", "vf")


@dataclass
class RecordResult:
    name: str
    seconds: float
    cpu: float
    scores: dict[str, EpisodeScore]
    vf_long: EpisodeScore
    asystole_delays: list[float] = field(default_factory=list)
    asystole_missed: int = 0
    false_alarms: dict[str, int] = field(default_factory=dict)


def analyse(path: str) -> RecordResult:
    import wfdb

    head = wfdb.rdheader(path)
    names = list(head.sig_name or [])
    channel = names.index("MLII") if "MLII" in names else 0
    rec = wfdb.rdrecord(path, channels=[channel])
    fs = float(rec.fs)
    x = np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64))
    ann = wfdb.rdann(path, "atr")
    duration = len(x) / fs

    pipeline = EcgPipeline(fs, mains_hz=60.0)
    n = round(0.25 * fs)
    detected: dict[str, list[tuple[float, float, float]]] = {}
    reported: dict[tuple[str, float], float] = {}
    beats: list[float] = []
    start = time.process_time()
    for i in range(0, len(x), n):
        out = pipeline.feed(x[i : i + n])
        now = (i + len(x[i : i + n])) / fs
        beats += [b.time for b in out.beats]
        for e in out.events:
            if e.end is None:
                reported.setdefault((e.kind, e.onset), now)
            else:
                t = reported.get((e.kind, e.onset), now)
                detected.setdefault(e.kind, []).append((e.onset, e.end, t))
    for e in pipeline.close():
        if e.end is not None:
            t = reported.get((e.kind, e.onset), duration)
            detected.setdefault(e.kind, []).append((e.onset, e.end, t))
    cpu = time.process_time() - start

    notes = [str(a) for a in ann.aux_note]
    ref = scored_reference(list(ann.sample), list(ann.symbol), notes, fs, duration)
    scores = {
        k: score_episodes(ref.get(k, []), detected.get(k, []), start=0.0, end=duration)
        for k in KINDS
    }
    long_vf = [(a, b) for a, b in ref.get("vf", []) if b - a >= 5.0]
    vf_long = score_episodes(long_vf, detected.get("vf", []), start=0.0, end=duration)
    result = RecordResult(Path(path).name, duration, cpu, scores, vf_long)

    # Asystole: (ASYS episodes and the pipeline's alarm after the last reported QRS.
    asys: list[tuple[float, float]] = []
    onset: float | None = None
    for s, note in zip(ann.sample, notes, strict=True):
        note = note.rstrip("\x00").strip()
        if note.startswith("("):
            if onset is not None:
                asys.append((onset, s / fs))
                onset = None
            if note == "(ASYS":
                onset = s / fs
    if onset is not None:
        asys.append((onset, duration))
    for a, b in asys:
        hits = [t for da, db, t in detected.get("asystole", []) if da < b and db > a]
        before = [t for t in beats if t <= a + 1.0]
        if hits and before:
            result.asystole_delays.append(min(hits) - before[-1])
        else:
            result.asystole_missed += 1
    # False alarms: detected episodes overlapping no reference episode of their kind.
    for kind in ("vf", "vt"):
        s = scores[kind]
        result.false_alarms[kind] = s.det_episodes - s.det_true
    result.false_alarms["asystole"] = sum(
        1
        for da, db, _ in detected.get("asystole", [])
        if not any(da < b and db > a for a, b in asys)
    )
    return result


def synthetic(seeds: int = 20) -> None:
    """Alarm delays on the synthetic generator, where the truth is exact."""
    from drivers.simulate.ecg_synth import EcgSynth, Segment

    asys: list[float] = []
    vf: list[float] = []
    for seed in range(seeds):
        for kind, delays in (("asystole", asys), ("vf", vf)):
            fs = (125.0, 250.0, 360.0, 500.0)[seed % 4]
            script = [Segment("sinus", 30.0, rate=60.0 + 3 * seed), Segment(kind, 20.0)]  # type: ignore[arg-type]
            synth = EcgSynth(script, fs, seed=seed)
            pipeline = EcgPipeline(fs)
            n = round(0.25 * fs)
            found = None
            for i in range(round(50 * fs / n)):
                out = pipeline.feed(synth.read(n))
                hits = [e.onset for e in out.events if e.kind == kind and e.end is None]
                if hits and found is None:
                    found = (i + 1) * n / fs
            last = max(b.time for b in synth.truth.beats if b.time < 30.0)
            reference = last if kind == "asystole" else 30.0
            delays.append(float("inf") if found is None else found - reference)
    print(
        f"Synthetic ({seeds} runs each, 125-500 Hz): asystole alarm after the last beat "
        f"median {np.median(asys):.2f} s, max {max(asys):.2f} s; VF alarm after VF onset "
        f"median {np.median(vf):.2f} s, max {max(vf):.2f} s"
    )


def pct(v: float) -> str:
    return "n/a" if v != v else f"{v:.1f}"  # scoring's ratios are already percent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--db", action="append", default=None, help="mitdb, vfdb (default both)")
    parser.add_argument("--synthetic-only", action="store_true", help="only the synthetic delays")
    args = parser.parse_args()
    synthetic()
    if args.synthetic_only:
        return 0
    paths = []
    for db in args.db or ["mitdb", "vfdb"]:
        paths += sorted(str(h.with_suffix("")) for h in (args.data / db).glob("*.hea"))
    if not paths:
        print(f"no WFDB records under {args.data}", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(analyse, paths))

    pooled = {k: EpisodeScore() for k in KINDS}
    af_records = EpisodeScore()
    vf_long = EpisodeScore()
    delays: list[float] = []
    missed = 0
    false = {"vf": 0, "vt": 0, "asystole": 0}
    hours = 0.0
    seconds = cpu = 0.0
    print("| record | AF ref/det/hit | VT ref/det/hit | VF ref/det/hit | CPU x real time |")
    print("|---|---|---|---|---|")
    for r in results:
        cells = [f"{s.ref_episodes}/{s.det_episodes}/{s.ref_detected}" for s in r.scores.values()]
        paced = " (paced)" if r.name in PACED else ""
        print(f"| {r.name}{paced} | {' | '.join(cells)} | {r.seconds / r.cpu:.0f} |")
        seconds += r.seconds
        cpu += r.cpu
        if r.name in PACED:
            continue
        for k in KINDS:
            pooled[k] += r.scores[k]
        if r.name in AF_RECORDS:
            af_records += r.scores["afib"]
        vf_long += r.vf_long
        delays += r.asystole_delays
        missed += r.asystole_missed
        for k, v in r.false_alarms.items():
            false[k] += v
        hours += r.seconds / 3600.0
    print()
    print(
        "| episodes (non-paced, pooled) | ref | Se % | +P % | duration Se % | duration +P % "
        "| median alarm delay s |"
    )
    print("|---|---|---|---|---|---|---|")
    af_names = "+".join(sorted(r.name for r in results if r.name in AF_RECORDS))
    rows = [
        (f"AF, MIT-BIH AF records ({af_names})", af_records),
        ("AF", pooled["afib"]),
        ("VT", pooled["vt"]),
        ("VF/VFL", pooled["vf"]),
        ("VF/VFL >= 5 s", vf_long),
    ]
    for label, s in rows:
        print(
            f"| {label} | {s.ref_episodes} | {pct(s.se)} | {pct(s.ppv)} | {pct(s.duration_se)} "
            f"| {pct(s.duration_ppv)} | {s.median_delay:.1f} |"
        )
    print()
    shown = ", ".join(f"{d:.2f}" for d in delays) or "none"
    print(f"Asystole alarm after the last QRS (s): {shown}; missed episodes: {missed}")
    print(
        "False alarm episodes per hour: "
        + ", ".join(
            f"{k} {v / max(hours, 1e-9):.2f} ({v} in {hours:.1f} h)" for k, v in false.items()
        )
    )
    print(
        f"Speed: {seconds / cpu:.0f}x real time per lead "
        f"(whole pipeline, {seconds / 3600:.1f} h of signal)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
