"""``bedside-gateway ecg analyze``: a WFDB record through the streaming pipeline, to CSV.

The record is read with ``wfdb`` and fed to :class:`EcgPipeline` in chunks of
:data:`CHUNK_S` (0.25 s), exactly as a live stream would be. Output, in ``out_dir``:

* ``<name>.beats.csv``: ``sample,time_s,label`` (label one of N S V F Q), one row per beat;
* ``<name>.events.csv``: ``onset_s,end_s,kind`` (kind one of asystole, vf, vt, brady,
  tachy, pause, afib, noise), one row per episode; episodes still open at the end of the
  record end there.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from gateway.analysis.pipeline import EcgPipeline
from gateway.analysis.settings import RhythmSettings
from gateway.analysis.vocabulary import Beat, RhythmEvent

CHUNK_S: Final = 0.25
BEATS_HEADER: Final = ("sample", "time_s", "label")
EVENTS_HEADER: Final = ("onset_s", "end_s", "kind")


class RecordError(Exception):
    """The record cannot be analysed (missing, unreadable, bad channel); message says why."""


@dataclass(frozen=True, slots=True)
class Analysis:
    beats_csv: Path
    events_csv: Path
    channel: int
    channel_name: str
    beats: int
    episodes: int


def default_channel(names: list[str]) -> int:
    """The lead named MLII if present, else the first."""
    return names.index("MLII") if "MLII" in names else 0


def analyze_record(
    record: Path,
    out_dir: Path,
    *,
    channel: int | None = None,
    mains_hz: float = 60.0,
    settings: RhythmSettings | None = None,
) -> Analysis:
    """Analyse ``record`` (path without extension) and write the two CSV files.

    ``mains_hz`` defaults to 60 Hz: PhysioNet's MIT-BIH recordings were made in the USA.
    """
    import wfdb  # imported here: the daemon never needs it

    header = (
        record.with_suffix(record.suffix + ".hea") if record.suffix else record.with_suffix(".hea")
    )
    if not header.is_file():
        raise RecordError(
            f"{record}: no such WFDB record (expected {header}); give the path without extension"
        )
    try:
        head = wfdb.rdheader(str(record))
    except Exception as exc:  # wfdb raises many kinds for a bad header
        raise RecordError(f"{record}: cannot read the header: {exc}") from None
    names = [str(n) for n in (head.sig_name or [])]
    if channel is None:
        channel = default_channel(names)
    if not 0 <= channel < max(1, head.n_sig):
        raise RecordError(
            f"--channel {channel}: the record has {head.n_sig} channel(s) "
            f"(0..{head.n_sig - 1}: {', '.join(names)}); pick one of those"
        )
    try:
        rec = wfdb.rdrecord(str(record), channels=[channel], physical=True)
    except Exception as exc:
        raise RecordError(f"{record}: cannot read the signal: {exc}") from None
    fs = float(rec.fs)
    if not 125.0 <= fs <= 1000.0:
        raise RecordError(
            f"{record}: sampling rate {fs:g} Hz is outside the supported 125..1000 Hz"
        )
    units = str((rec.units or ["mV"])[0])
    scale = {"mV": 1.0, "uV": 1e-3, "V": 1e3}.get(units, 1.0)
    x = np.asarray(rec.p_signal[:, 0], dtype=np.float64) * scale

    pipeline = EcgPipeline(fs, mains_hz=mains_hz, settings=settings)
    step = max(1, round(CHUNK_S * fs))
    beats: list[Beat] = []
    events: list[RhythmEvent] = []
    for start in range(0, len(x), step):
        out = pipeline.feed(x[start : start + step])
        beats += out.beats
        events += out.events
    events += pipeline.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    name = record.name
    beats_csv = out_dir / f"{name}.beats.csv"
    events_csv = out_dir / f"{name}.events.csv"
    with beats_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(BEATS_HEADER)
        for b in beats:
            w.writerow((b.sample, f"{b.sample / fs:.3f}", b.label))
    episodes = [e for e in events if e.end is not None]
    episodes.sort(key=lambda e: (e.onset, e.kind))
    with events_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(EVENTS_HEADER)
        for e in episodes:
            assert e.end is not None
            w.writerow((f"{e.onset:.3f}", f"{e.end:.3f}", e.kind))
    return Analysis(
        beats_csv,
        events_csv,
        channel,
        names[channel] if channel < len(names) else "",
        len(beats),
        len(episodes),
    )
