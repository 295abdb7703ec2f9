"""``bedside-gateway ecg analyze``: the fixed contract (file names, headers, labels, errors)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import wfdb

from drivers.simulate.ecg_synth import EcgSynth, Segment
from gateway.cli import main
from tests.support.ecg_data import DATA, needs_data

KINDS = {"asystole", "vf", "vt", "brady", "tachy", "pause", "afib", "noise"}


def write_record(folder: Path, name: str, names: list[str], fs: int = 360) -> EcgSynth:
    """A two-lead WFDB record: the synthetic ECG on ``MLII`` (if named), a flat line else."""
    synth = EcgSynth(
        [Segment("sinus", 30.0, pvc_every=5), Segment("asystole", 10.0), Segment("sinus", 20.0)],
        fs,
        seed=2,
    )
    ecg = synth.read(60 * fs)
    flat = np.zeros_like(ecg)
    columns = [ecg if n == "MLII" else flat for n in names]
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(names),
        sig_name=names,
        p_signal=np.column_stack(columns),
        fmt=["16"] * len(names),
        adc_gain=[200.0] * len(names),
        baseline=[0] * len(names),
        write_dir=str(folder),
    )
    return synth


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_default_channel_is_mlii_and_files_follow_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synth = write_record(tmp_path, "rec1", ["V1", "MLII"])
    out = tmp_path / "out"
    assert main(["ecg", "analyze", str(tmp_path / "rec1"), "--out", str(out)]) == 0
    assert "channel 1 (MLII)" in capsys.readouterr().out
    beats = read(out / "rec1.beats.csv")
    events = read(out / "rec1.events.csv")
    assert beats[0] == ["sample", "time_s", "label"]
    assert events[0] == ["onset_s", "end_s", "kind"]
    rows = beats[1:]
    assert {r[2] for r in rows} <= set("NSVFQ")
    assert all(float(r[1]) == pytest.approx(int(r[0]) / 360, abs=1e-3) for r in rows)
    assert abs(len(rows) - len(synth.truth.beats)) <= 2
    assert any(r[2] == "V" for r in rows)
    kinds = [r[2] for r in events[1:]]
    assert set(kinds) <= KINDS and "asystole" in kinds
    for onset, end, _ in events[1:]:
        assert float(onset) <= float(end)


def test_channel_option_picks_the_lead(tmp_path: Path) -> None:
    write_record(tmp_path, "rec2", ["MLII", "V5"])
    out = tmp_path / "o"
    assert (
        main(["ecg", "analyze", str(tmp_path / "rec2"), "--channel", "1", "--out", str(out)]) == 0
    )
    # Channel 1 is a flat line: no beats, and the whole record is "cannot analyse".
    assert read(out / "rec2.beats.csv") == [["sample", "time_s", "label"]]
    assert [r[2] for r in read(out / "rec2.events.csv")[1:]] == ["noise"]


def test_without_mlii_the_first_channel_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_record(tmp_path, "rec3", ["V2", "V5"])
    assert main(["ecg", "analyze", str(tmp_path / "rec3"), "--out", str(tmp_path)]) == 0
    assert "channel 0 (V2)" in capsys.readouterr().out


def test_missing_record_and_bad_channel_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ecg", "analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such WFDB record" in err and "nope.hea" in err
    assert not (tmp_path / "o").exists()
    write_record(tmp_path, "rec4", ["MLII", "V1"])
    assert (
        main(
            [
                "ecg",
                "analyze",
                str(tmp_path / "rec4"),
                "--channel",
                "5",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--channel 5" in err and "0..1: MLII, V1" in err


@needs_data
def test_a_real_record(tmp_path: Path) -> None:
    assert main(["ecg", "analyze", str(DATA / "mitdb" / "119"), "--out", str(tmp_path)]) == 0
    rows = read(tmp_path / "119.beats.csv")[1:]
    ann = wfdb.rdann(str(DATA / "mitdb" / "119"), "atr")
    true_v = sum(1 for s in ann.symbol if s == "V")
    assert abs(len(rows) - sum(1 for s in ann.symbol if s in "NLRejAaJSVEF/fQ")) < 40
    assert sum(1 for r in rows if r[2] == "V") > 0.8 * true_v
