"""Quick EC57 beat scores of the causal beat stage alone, split into tuning and held-out halves.

    PYTHONPATH=. .venv/bin/python bench/beat_split.py [--data ../shared/data/mitdb] [--jobs 2]
    PYTHONPATH=. .venv/bin/python bench/beat_split.py --records 124 109 --confusion

Runs only ``BeatAnalyzer`` (0.25 s chunks, MLII) on the non-paced MIT-BIH records present
and scores it with ``gateway.analysis.scoring`` exactly as ``bench/ec57.py`` does, without
the reference detectors, so a change to the beat logic can be checked in a minute or two.
Records are split by number: odd-numbered records are the tuning half (decision rules were
adjusted while looking at them), even-numbered ones are held out (looked at only for the
pooled figures). ``--confusion`` adds, per record, what the reference V beats were called
and what the V calls were in the reference. ``--save DIR`` writes each record's detections
and matched reference classes to ``DIR/<record>.npz`` for closer looks.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.analysis.beats import BeatAnalyzer
from gateway.analysis.scoring import (
    BEAT_CLASS,
    LEARNING_PERIOD,
    MATCH_WINDOW,
    BeatScore,
    excluded_segments,
    match_beats,
    score_beats,
)

PACED = {"102", "104", "107", "217"}


@dataclass
class Result:
    name: str
    score: BeatScore
    v_called_as: Counter[str]
    v_calls_were: Counter[str]


def analyse(job: tuple[str, Path | None]) -> Result:
    import wfdb

    path, save = job
    rec = wfdb.rdrecord(path)
    names = list(rec.sig_name)
    x = np.nan_to_num(rec.p_signal[:, names.index("MLII") if "MLII" in names else 0])
    fs = float(rec.fs)
    ann = wfdb.rdann(path, "atr")
    analyzer = BeatAnalyzer(fs)
    n = round(0.25 * fs)
    beats = []
    for i in range(0, x.size, n):
        beats.extend(analyzer.feed(x[i : i + n]))
    det = [b.sample for b in beats]
    labels = [b.label for b in beats]
    score = score_beats(list(ann.sample), list(ann.symbol), det, labels, fs)

    keep = [
        (int(s), BEAT_CLASS[y])
        for s, y in zip(ann.sample, ann.symbol, strict=True)
        if y in BEAT_CLASS
    ]
    ref = np.array([s for s, _ in keep], dtype=np.int64)
    cls = [c for _, c in keep]
    matched = match_beats(ref, np.asarray(det, dtype=np.int64), round(MATCH_WINDOW * fs))
    start = round(LEARNING_PERIOD * fs)
    called: Counter[str] = Counter()
    were: Counter[str] = Counter()
    det_cls = ["-"] * len(det)
    for k in range(ref.size):
        if matched[k] >= 0:
            det_cls[matched[k]] = cls[k]
        if ref[k] < start or cls[k] != "V":
            continue
        called[labels[matched[k]] if matched[k] >= 0 else "missed"] += 1
    skip = excluded_segments(list(ann.sample), list(ann.symbol))
    for m, lab in enumerate(labels):
        if det_cls[m] == "-" and any(lo <= det[m] <= hi for lo, hi in skip):
            continue  # inside ventricular flutter: not scored
        if lab == "V" and det[m] >= start:
            were[det_cls[m]] += 1
    if save is not None:
        np.savez(
            save / f"{Path(path).name}.npz",
            sample=np.array(det),
            label=np.array(labels),
            rr=np.array([np.nan if b.rr is None else b.rr for b in beats]),
            width=np.array([np.nan if b.width is None else b.width for b in beats]),
            corr=np.array([np.nan if b.correlation is None else b.correlation for b in beats]),
            ref_class=np.array(det_cls),
            fs=fs,
        )
    return Result(Path(path).name, score, called, were)


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.2f}"


def row(label: str, s: BeatScore) -> str:
    return (
        f"| {label} | {s.tp + s.fn} | {s.fn} | {s.fp} | {fmt(s.se)} | {fmt(s.ppv)} "
        f"| {s.v_ref} | {fmt(s.veb_se)} | {fmt(s.veb_ppv)} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitdb"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--records", nargs="*")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--confusion", action="store_true")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    names = args.records or sorted(h.stem for h in args.data.glob("*.hea") if h.stem not in PACED)
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    jobs = [(str(args.data / name), args.save) for name in names]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(analyse, jobs))

    print("| record | beats | FN | FP | QRS Se | QRS +P | ref V | VEB Se | VEB +P |")
    print("|---|---|---|---|---|---|---|---|---|")
    halves = {"tuning (odd)": BeatScore(), "held-out (even)": BeatScore()}
    total = BeatScore()
    for r in results:
        print(row(r.name, r.score))
        halves["tuning (odd)" if int(r.name) % 2 else "held-out (even)"] += r.score
        total += r.score
    for label, s in halves.items():
        print(row(f"**{label}**", s))
    print(row("**all**", total))
    if args.confusion:
        print()
        for r in results:
            print(
                f"{r.name}: ref V called {dict(r.v_called_as.most_common())}; "
                f"V calls were {dict(r.v_calls_were.most_common())}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
