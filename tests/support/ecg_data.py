"""The reference ECG records in ../shared/data, for tests that need real signals.

Tests using them are marked with :data:`needs_data`, which skips them (with the reason)
when the folder is absent, as it is on a user's machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gateway.analysis.vocabulary import Beat, BeatLabel

DATA = Path(
    os.environ.get(
        "BEDSIDE_ECG_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)

needs_data = pytest.mark.skipif(
    not (DATA / "mitdb").is_dir(), reason=f"reference ECG records not present at {DATA}"
)

#: EC57 beat classes of the MIT-BIH annotation symbols.
EC57: dict[str, BeatLabel] = {
    **{c: "N" for c in "NLRej"},
    **{c: "S" for c in "AaJS"},
    **{c: "V" for c in "VE"},
    "F": "F",
    **{c: "Q" for c in "/fQ"},
}


def load(db: str, record: str, channel: int = 0) -> tuple[npt.NDArray[np.float64], float]:
    """A record's channel in mV and its sample rate."""
    import wfdb

    rec = wfdb.rdrecord(str(DATA / db / record), channels=[channel])
    return np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64)), float(rec.fs)


def reference_beats(db: str, record: str, fs: float) -> list[Beat]:
    """The expert-annotated beats of a record as :class:`Beat` (EC57 classes)."""
    import wfdb

    ann = wfdb.rdann(str(DATA / db / record), "atr")
    return [
        Beat(int(s), s / fs, EC57[y])
        for s, y in zip(ann.sample, ann.symbol, strict=True)
        if y in EC57
    ]


def reference_episodes(db: str, record: str) -> list[tuple[str, float, float]]:
    """Rhythm episodes (label without the parenthesis, onset s, end s) of a record."""
    import wfdb

    path = str(DATA / db / record)
    ann = wfdb.rdann(path, "atr")
    head = wfdb.rdheader(path)
    out: list[tuple[str, float, float]] = []
    current: tuple[str, float] | None = None
    for sample, note in zip(ann.sample, ann.aux_note, strict=True):
        note = note.strip("\x00")
        if note.startswith("("):
            if current is not None:
                out.append((current[0], current[1], sample / head.fs))
            current = (note[1:], sample / head.fs)
    if current is not None:
        out.append((current[0], current[1], head.sig_len / head.fs))
    return out
