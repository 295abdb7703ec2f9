"""EC57-style benchmark of the streaming ECG analysis against two open-source references.

    .venv/bin/python bench/ec57.py                      # mitdb + vfdb under ../shared/data
    .venv/bin/python bench/ec57.py /path/to/mitdb --records 100 101 --no-write

For every record in the given WFDB folders (default ``../shared/data/mitdb`` and
``../shared/data/vfdb`` relative to the repository) it runs, in this one invocation and on
the same lead (MLII when present, else channel 0):

* this project's ``BeatAnalyzer`` (and ``EcgPipeline`` when importable), fed causally in
  0.25 s chunks as the gateway would;
* wfdb's ``xqrs_detect`` and neurokit2's ``pantompkins1985`` (``ecg_clean`` + ``ecg_peaks``),
  both offline and non-causal, with library defaults;

then scores them the EC57 way (``gateway.analysis.scoring``: 150 ms match window, first
5 minutes not scored, paced records 102 104 107 217 reported apart, VF segments not scored
for QRS), and measures speed as real-time factor per lead (signal seconds / CPU seconds of
``time.process_time``) for each, with this pipeline's ratio to each reference. Rhythm
episodes (AF, VT, VF) are scored when ``gateway.analysis.pipeline.EcgPipeline`` exists.

The Markdown tables go to stdout and replace this benchmark's section of
docs/BENCHMARKS.md (between the ``ec57`` marker comments); one record is plotted to
docs/ec57-record.png.

Data: PhysioNet, Open Data Commons Attribution License v1.0.
- Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. IEEE Eng in Med and
  Biol 20(3):45-50 (2001).
- Greenwald SD. Development and analysis of a ventricular fibrillation detector. MS
  thesis, MIT Dept. of Electrical Engineering and Computer Science (1986).
- Goldberger AL, et al. PhysioBank, PhysioToolkit, and PhysioNet. Circulation
  101(23):e215-e220 (2000).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.analysis.beats import BeatAnalyzer  # noqa: E402
from gateway.analysis.scoring import (  # noqa: E402
    LEARNING_PERIOD,
    BeatScore,
    EpisodeScore,
    reference_episodes,
    score_beats,
    score_episodes,
)

PACED = {"102", "104", "107", "217"}
CHUNK = 0.25
EPISODE_KINDS = ("afib", "vt", "vf")
BEGIN = "<!-- ec57:begin -->"
END = "<!-- ec57:end -->"

try:
    from gateway.analysis.pipeline import EcgPipeline
except ImportError:  # part of the analysis not written yet: episodes "not available"
    EcgPipeline = None


@dataclass
class Run:
    """One detector on one record."""

    samples: list[int]
    labels: list[str]
    cpu: float
    score: BeatScore | None = None


@dataclass
class Record:
    name: str
    database: str
    fs: float
    seconds: float
    has_beats: bool
    runs: dict[str, Run] = field(default_factory=dict)
    episodes: dict[str, EpisodeScore] = field(default_factory=dict)
    events: list[tuple[str, float, float, float]] = field(default_factory=list)
    ref_episodes: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def lead(record: Any) -> int:
    names = list(record.sig_name)
    return names.index("MLII") if "MLII" in names else 0


def run_ours(x: np.ndarray, fs: float) -> Run:
    analyzer = BeatAnalyzer(fs)
    step = round(CHUNK * fs)
    chunks = [x[i : i + step] for i in range(0, x.size, step)]
    beats = []
    start = time.process_time()
    for chunk in chunks:
        beats.extend(analyzer.feed(chunk))
    cpu = time.process_time() - start
    return Run([b.sample for b in beats], [b.label for b in beats], cpu)


def run_pipeline(x: np.ndarray, fs: float) -> tuple[Run, list[tuple[str, float, float, float]]]:
    """The whole pipeline: beats, and episodes as (kind, onset, end, first reported at)."""
    assert EcgPipeline is not None
    pipeline = EcgPipeline(fs)
    step = round(CHUNK * fs)
    chunks = [x[i : i + step] for i in range(0, x.size, step)]
    beats = []
    open_: dict[tuple[str, float], float] = {}
    episodes: list[tuple[str, float, float, float]] = []
    end_of_record = x.size / fs
    start = time.process_time()
    fed = 0
    for chunk in chunks:
        out = pipeline.feed(chunk)
        fed += chunk.size
        beats.extend(out.beats)
        for ev in out.events:
            key = (ev.kind, ev.onset)
            if ev.end is None:
                open_.setdefault(key, fed / fs)
            else:
                reported = open_.pop(key, fed / fs)
                episodes.append((ev.kind, ev.onset, ev.end, reported))
    cpu = time.process_time() - start
    for (kind, onset), reported in open_.items():
        episodes.append((kind, onset, end_of_record, reported))
    return Run([b.sample for b in beats], [b.label for b in beats], cpu), episodes


def run_xqrs(x: np.ndarray, fs: float) -> Run:
    from wfdb import processing

    start = time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        peaks = processing.xqrs_detect(sig=x, fs=fs, verbose=False)
    cpu = time.process_time() - start
    return Run([int(p) for p in peaks], ["N"] * len(peaks), cpu)


def run_pantompkins(x: np.ndarray, fs: float) -> Run:
    import neurokit2 as nk

    start = time.process_time()
    cleaned = nk.ecg_clean(x, sampling_rate=fs, method="pantompkins1985")
    _, info = nk.ecg_peaks(cleaned, sampling_rate=fs, method="pantompkins1985")
    cpu = time.process_time() - start
    peaks = info["ECG_R_Peaks"]
    return Run([int(p) for p in peaks], ["N"] * len(peaks), cpu)


def evaluate(path: Path, references: bool) -> Record:
    header = wfdb.rdrecord(str(path))
    ann = wfdb.rdann(str(path), "atr")
    fs = float(header.fs)
    x = np.nan_to_num(np.asarray(header.p_signal[:, lead(header)], dtype=np.float64))
    symbols = list(ann.symbol)
    aux = [a or "" for a in ann.aux_note]
    has_beats = any(s not in '+~|!x[]"' for s in symbols)
    rec = Record(path.name, path.parent.name, fs, x.size / fs, has_beats)
    rec.runs["ours"] = run_ours(x, fs)
    if EcgPipeline is not None:
        rec.runs["pipeline"], rec.events = run_pipeline(x, fs)
    if references and has_beats:  # without beat labels there is nothing to score them on
        rec.runs["xqrs"] = run_xqrs(x, fs)
        rec.runs["pt"] = run_pantompkins(x, fs)
    if has_beats:
        for run in rec.runs.values():
            run.score = score_beats(ann.sample, symbols, run.samples, run.labels, fs)
    rec.ref_episodes = reference_episodes(ann.sample, symbols, aux, fs, rec.seconds)
    if EcgPipeline is not None:
        for kind in EPISODE_KINDS:
            detected = [(a, b, t) for k, a, b, t in rec.events if k == kind]
            rec.episodes[kind] = score_episodes(
                rec.ref_episodes.get(kind, []), detected, start=LEARNING_PERIOD, end=rec.seconds
            )
    return rec


# --- report -------------------------------------------------------------------------


def pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def rtf(rec_seconds: float, cpu: float) -> float:
    return rec_seconds / cpu if cpu > 0 else float("inf")


def report(records: list[Record], references: bool, command: str) -> str:
    names = ["ours"] + (["xqrs", "pt"] if references else [])
    title = {"ours": "this (causal)", "xqrs": "wfdb XQRS", "pt": "nk2 pantompkins1985"}
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d}, `{command}`",
        "",
        "Per record (QRS Se / +P in %, VEB Se / +P in %, first 5 min not scored):",
        "",
        "| record | ref beats | "
        + " | ".join(f"{title[n]} Se / +P" for n in names)
        + " | VEB Se / +P (this) |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    beat_records = [r for r in records if r.has_beats]
    for rec in beat_records:
        s0 = rec.runs["ours"].score
        assert s0 is not None
        cells = []
        for n in names:
            sc = rec.runs[n].score
            assert sc is not None
            cells.append(f"{pct(sc.se)} / {pct(sc.ppv)}")
        mark = " (paced)" if rec.name in PACED else ""
        lines.append(
            f"| {rec.name}{mark} | {s0.tp + s0.fn} | "
            + " | ".join(cells)
            + f" | {pct(s0.veb_se)} / {pct(s0.veb_ppv)} |"
        )
    lines += ["", "Gross (counts pooled over records):", ""]
    lines.append(
        "| set | detector | beats | TP | FN | FP | QRS Se % | QRS +P % | VEB Se % | VEB +P % |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for label, group in (
        ("non-paced", [r for r in beat_records if r.name not in PACED]),
        ("paced", [r for r in beat_records if r.name in PACED]),
    ):
        if not group:
            continue
        for n in names:
            tot = BeatScore()
            for rec in group:
                sc = rec.runs[n].score
                assert sc is not None
                tot += sc
            veb = f"{pct(tot.veb_se)} | {pct(tot.veb_ppv)}" if n == "ours" else "- | -"
            lines.append(
                f"| {label} ({len(group)}) | {title[n]} | {tot.tp + tot.fn} | {tot.tp} | "
                f"{tot.fn} | {tot.fp} | {pct(tot.se)} | {pct(tot.ppv)} | {veb} |"
            )

    lines += ["", "Speed, real-time factor per lead (signal s / CPU s, one core), all records:", ""]
    speed_names = ["ours"] + (["pipeline"] if EcgPipeline is not None else []) + names[1:]
    title["pipeline"] = "whole EcgPipeline"
    # Every detector is timed on the same records: those it ran on (the references only
    # run where there are beat labels to score).
    lines.append(
        "| detector | records | signal h | CPU s | x real time | CPU of it / CPU of this "
        "(beats) on its records |"
    )
    lines.append("|---|---|---|---|---|---|")
    for n in speed_names:
        ran = [r for r in records if n in r.runs]
        signal_s = sum(r.seconds for r in ran)
        cpu = sum(r.runs[n].cpu for r in ran)
        ours = sum(r.runs["ours"].cpu for r in ran)
        ratio = cpu / ours if ours > 0 else float("nan")
        lines.append(
            f"| {title[n]} | {len(ran)} | {signal_s / 3600:.2f} | {cpu:.2f} | "
            f"{rtf(signal_s, cpu):,.0f} | {ratio:.2f} |"
        )

    lines += ["", "Rhythm episodes (after the first 5 min):", ""]
    if EcgPipeline is None:
        lines.append(
            "not available: `gateway.analysis.pipeline.EcgPipeline` is not importable yet."
        )
    else:
        lines.append(
            "| kind | ref episodes | episode Se % | episode +P % | duration Se % | "
            "duration +P % | median alarm delay s |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for kind in EPISODE_KINDS:
            tot = EpisodeScore()
            for rec in records:
                if kind in rec.episodes:
                    tot += rec.episodes[kind]
            delay = "-" if math.isnan(tot.median_delay) else f"{tot.median_delay:.1f}"
            lines.append(
                f"| {kind} | {tot.ref_episodes} | {pct(tot.se)} | {pct(tot.ppv)} | "
                f"{pct(tot.duration_se)} | {pct(tot.duration_ppv)} | {delay} |"
            )
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path) -> None:
    """Replace this benchmark's block in BENCHMARKS.md (append the section the first time)."""
    doc = path.read_text()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + block + tail
    else:
        doc = doc.rstrip("\n") + "\n\n## ECG analysis, EC57 (`bench/ec57.py`)\n\n" + block + "\n"
    path.write_text(doc)


def plot(rec_path: Path, out: Path, records: dict[str, Record]) -> None:
    """ECG with reference and detected beats, and a rhythm strip of the whole record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header = wfdb.rdrecord(str(rec_path))
    ann = wfdb.rdann(str(rec_path), "atr")
    fs = float(header.fs)
    x = header.p_signal[:, lead(header)]
    rec = records.get(rec_path.name) or evaluate(rec_path, references=False)
    ours = rec.runs["ours"]
    # Ten seconds around the first reference V beat after the learning period.
    v_times = [s for s, y in zip(ann.sample, ann.symbol, strict=True) if y == "V" and s > 300 * fs]
    centre = v_times[0] / fs if v_times else 330.0
    lo, hi = centre - 4.0, centre + 6.0
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(12, 5.5), gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    i0, i1 = int(lo * fs), int(hi * fs)
    t = np.arange(i0, i1) / fs
    ax.plot(t, x[i0:i1], lw=0.8, color="black")
    top = float(np.max(x[i0:i1]))
    bottom = float(np.min(x[i0:i1]))
    for s, y in zip(ann.sample, ann.symbol, strict=True):
        if i0 <= s < i1 and y not in '+~|!x[]"':
            ax.annotate(y, (s / fs, top + 0.25), ha="center", color="tab:blue", fontsize=9)
            ax.axvline(s / fs, color="tab:blue", lw=0.4, alpha=0.4)
    for s, lab in zip(ours.samples, ours.labels, strict=True):
        if i0 <= s < i1:
            colour = "tab:red" if lab == "V" else "tab:green"
            ax.plot(s / fs, x[s], "o", ms=5, mfc="none", color=colour)
            ax.annotate(lab, (s / fs, bottom - 0.35), ha="center", color=colour, fontsize=9)
    ax.set_ylim(bottom - 0.6, top + 0.6)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{header.sig_name[lead(header)]} (mV)")
    ax.set_title(
        f"MIT-BIH {rec_path.name}: reference beats (blue, top) and this detector's causal "
        "beats with labels (bottom; red = V)"
    )
    rows = [("ref", rec.ref_episodes, "tab:blue")]
    if rec.events:
        detected: dict[str, list[tuple[float, float]]] = {}
        for kind, a, b, _ in rec.events:
            detected.setdefault(kind, []).append((a, b))
        rows.append(("detected", detected, "tab:red"))
    kinds = sorted({k for _, eps, _ in rows for k in eps})
    for yi, (_, eps, colour) in enumerate(rows):
        for ki, kind in enumerate(kinds):
            spans = [(a / 60, (b - a) / 60) for a, b in eps.get(kind, [])]
            strip.broken_barh(spans, (yi * len(kinds) + ki + 0.1, 0.8), color=colour)
    strip.set_yticks(
        [yi * len(kinds) + ki + 0.5 for yi in range(len(rows)) for ki in range(len(kinds))],
        [f"{name} {kind}" for name, _, _ in rows for kind in kinds],
    )
    strip.set_xlim(0, rec.seconds / 60)
    strip.set_xlabel("time (min)")
    strip.set_title("rhythm strip: reference episodes" + (" vs detected" if rec.events else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    data = REPO.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        default=[data / "mitdb", data / "vfdb"],
        help="WFDB record folders (default: ../shared/data/mitdb and vfdb)",
    )
    parser.add_argument("--records", nargs="*", help="only these record names")
    parser.add_argument("--no-references", action="store_true", help="skip XQRS and Pan-Tompkins")
    parser.add_argument("--no-write", action="store_true", help="stdout only, no docs/ files")
    parser.add_argument("--plot-record", default="208", help="record to plot (default 208)")
    args = parser.parse_args(argv)

    paths: list[Path] = []
    for folder in args.folders:
        if not folder.is_dir():
            print(f"{folder}: not a folder, skipped", file=sys.stderr)
            continue
        for hea in sorted(folder.glob("*.hea")):
            if args.records is None or hea.stem in args.records:
                paths.append(hea.with_suffix(""))
    if not paths:
        print("no WFDB records found; pass a folder holding NNN.hea/.dat/.atr", file=sys.stderr)
        return 2
    references = not args.no_references
    records: dict[str, Record] = {}
    for path in paths:
        rec = evaluate(path, references)
        records[path.name] = rec
        ours = rec.runs["ours"]
        score = ours.score
        summary = "" if score is None else f" Se {pct(score.se)} +P {pct(score.ppv)}"
        speeds = " ".join(f"{n} x{rtf(rec.seconds, r.cpu):,.0f}" for n, r in rec.runs.items())
        print(f"{path.parent.name}/{path.name}:{summary} {speeds}", file=sys.stderr, flush=True)
    command = "python bench/ec57.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    text = report(list(records.values()), references, command.strip())
    print(text)
    if not args.no_write:
        write_section(text, REPO / "docs" / "BENCHMARKS.md")
        plot_path = next((p for p in paths if p.name == args.plot_record), None)
        if plot_path is not None:
            plot(plot_path, REPO / "docs" / "ec57-record.png", records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
