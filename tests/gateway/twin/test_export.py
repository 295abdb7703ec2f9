"""Export: csv/json records and WFDB records from a real store, read back; private files,
no overwriting, admissions told apart, damaged blocks reported, linear cost."""

from __future__ import annotations

import csv
import json
import os
import stat
from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import wfdb

from drivers.codes import ECG_LEAD_II, MILLIVOLT, PERCENT, SPO2
from drivers.readings import Condition, DeviceEvent, Numeric, Reading, Waveform
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.export import ExportError, export
from gateway.twin.store import Patient, TwinStore

T0 = 1_700_000_000.0
BED = "bed-1"
ECG_STREAM = f"ecg-1/{ECG_LEAD_II.refid}"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with TwinStore(tmp_path / "data" / "twin.sqlite", KeyRing(generate_kek())) as s:
        yield s


def spo2(value: float, t: float) -> Numeric:
    return Numeric("ox-1", SPO2, value, PERCENT, t)


def ecg(seq: int, counts: npt.ArrayLike, *, resolution: float = 1.0) -> Waveform:
    values = np.asarray(counts, dtype=np.int64)
    return Waveform(
        "ecg-1",
        ECG_LEAD_II,
        MILLIVOLT,
        500.0,
        T0 + seq / 500.0,
        values.astype(np.float64) * resolution,
        sequence=seq,
        resolution=resolution,
    )


def pairs(*readings: Reading) -> list[tuple[str, Reading]]:
    return [(BED, r) for r in readings]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def step_value(records: list[dict[str, Any]], t: float) -> Any:
    at = bisect_right([r["t"] for r in records], t) - 1
    assert at >= 0, f"nothing exported at or before {t}"
    return records[at]["value"]


# -- csv / json -------------------------------------------------------------------------------
def test_exported_numerics_give_every_ingested_readings_value_although_repeats_are_not_stored(
    store: TwinStore, tmp_path: Path
) -> None:
    """Numerics are stored as a step function (repeats left out): the export, read as one,
    still gives each ingested reading's exact value at its time."""
    rng = np.random.default_rng(8)
    values = [float(v) for v in rng.choice([94.0, 95.0, 96.0], p=[0.1, 0.8, 0.1], size=120)]
    ingested = [spo2(v, T0 + i) for i, v in enumerate(values)]
    result = store.write(pairs(*ingested), now=T0 + 120)
    assert result.numerics_repeated > 60  # the dedupe really was exercised
    report = export(store, BED, "json", tmp_path / "out.json")
    assert report.failures == []
    records = json.loads((tmp_path / "out.json").read_text())
    assert len(records) == result.numerics_written
    for reading in ingested:
        assert step_value(records, reading.time) == reading.value

    export(store, BED, "csv", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = [
            {**r, "t": float(r["t"]), "value": float(r["value"])} for r in csv.DictReader(handle)
        ]
    for reading in ingested:
        assert step_value(rows, reading.time) == reading.value


def test_records_say_which_admission_they_belong_to(store: TwinStore, tmp_path: Path) -> None:
    first = store.admit(BED, Patient("A", "MRN-A", "1950-01-01"), T0)
    store.write(pairs(spo2(95.0, T0 + 1)), now=T0 + 1)
    second = store.admit(BED, Patient("B", "MRN-B", "1960-01-01"), T0 + 2)  # next patient
    store.write(
        pairs(spo2(95.0, T0 + 3), DeviceEvent("ox-1", Condition.ARTIFACT, True, T0 + 3, "x")),
        now=T0 + 3,
    )
    store.write_alarm(BED, "alarm-engine", {"n": 1}, T0 + 4, T0 + 4)

    export(store, BED, "json", tmp_path / "out.json")
    records = json.loads((tmp_path / "out.json").read_text())
    assert [(r["kind"], r["admission"]) for r in records] == [
        ("numeric", first),
        ("event", second),
        ("numeric", second),
        ("alarm", second),
    ]
    export(store, BED, "csv", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["admission"]) for r in rows] == [first, second, second, second]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_files_are_private_and_never_overwritten(
    store: TwinStore, tmp_path: Path, fmt: str
) -> None:
    store.write(pairs(spo2(95.0, T0)), now=T0)
    out = tmp_path / "new" / "dir" / f"out.{fmt}"
    old_umask = os.umask(0o022)
    try:
        export(store, BED, fmt, out)
    finally:
        os.umask(old_umask)
    assert mode(out) == 0o600
    assert mode(out.parent) == 0o700 and mode(out.parent.parent) == 0o700
    before = out.read_bytes()
    with pytest.raises(ExportError, match="refusing to overwrite"):
        export(store, BED, fmt, out)
    assert out.read_bytes() == before
    # Nor through a symbolic link (to a file that exists or not).
    target = tmp_path / "elsewhere.txt"
    link = tmp_path / f"link.{fmt}"
    link.symlink_to(target)
    with pytest.raises(ExportError):
        export(store, BED, fmt, link)
    assert not target.exists()


# -- wfdb -------------------------------------------------------------------------------------
def test_wfdb_round_trip_in_physical_units_uses_the_resolution_as_gain(
    store: TwinStore, tmp_path: Path
) -> None:
    resolution = 0.005  # mV per count
    rng = np.random.default_rng(5)
    counts = rng.integers(-2000, 2000, 2500)
    store.write(
        pairs(*(ecg(i, counts[i : i + 250], resolution=resolution) for i in range(0, 2500, 250))),
        now=T0,
    )
    store.flush_waveforms(now=T0)
    out = tmp_path / "wfdb"
    report = export(store, BED, "wfdb", out)
    assert report.failures == [] and report.rows == 2500
    (header,) = report.files
    record = wfdb.rdrecord(str(header.with_suffix("")), physical=True)
    assert record.fs == 500.0 and record.units == ["mV"]
    assert record.adc_gain == [pytest.approx(1 / resolution)]
    assert np.allclose(record.p_signal[:, 0], counts * resolution, rtol=0, atol=1e-9)
    digital = wfdb.rdrecord(str(header.with_suffix("")), physical=False)
    assert np.array_equal(digital.d_signal[:, 0], counts)


def test_wfdb_output_is_private_and_never_overwrites(store: TwinStore, tmp_path: Path) -> None:
    store.write(pairs(ecg(0, np.arange(500))), now=T0)
    store.flush_waveforms(now=T0)
    out = tmp_path / "exports" / "wfdb"
    export(store, BED, "wfdb", out)
    assert mode(out) == 0o700
    files = list(out.iterdir())
    assert {f.suffix for f in files} == {".hea", ".dat"}
    assert all(mode(f) == 0o600 for f in files)
    before = {f.name: f.read_bytes() for f in files}
    with pytest.raises(ExportError, match="not empty"):
        export(store, BED, "wfdb", out)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(store, BED, "wfdb", empty).rows == 500  # an empty directory is fine


def test_a_damaged_block_is_reported_and_splits_the_record(
    store: TwinStore, tmp_path: Path
) -> None:
    store.block_seconds = 0.2  # 100 samples per block
    store.write(pairs(*(ecg(i, np.arange(i, i + 100)) for i in range(0, 500, 100))), now=T0)
    ids = [i for (i,) in store.db.conn.execute("SELECT id FROM waveform_blocks ORDER BY seq")]
    assert len(ids) == 5
    store.db.conn.execute(
        "UPDATE waveform_blocks SET sealed = zeroblob(80) WHERE id = ?", (ids[2],)
    )
    out = tmp_path / "wfdb"
    report = export(store, BED, "wfdb", out)
    [failure] = report.failures
    assert f"waveform_blocks row {ids[2]}" in failure
    assert report.rows == 400
    signals = [
        wfdb.rdrecord(str(h.with_suffix("")), physical=False).d_signal[:, 0] for h in report.files
    ]
    assert [s.tolist() for s in signals] == [list(range(200)), list(range(300, 500))]


def test_a_wfdb_record_never_spans_two_admissions(store: TwinStore, tmp_path: Path) -> None:
    first = store.admit(BED, None, T0)
    store.write(pairs(ecg(0, np.arange(100))), now=T0)
    second = store.admit(BED, None, T0 + 0.2)  # discharges (flushes) the first
    store.write(pairs(ecg(100, np.arange(100, 200))), now=T0 + 0.2)
    store.flush_waveforms(now=T0 + 1)
    report = export(store, BED, "wfdb", tmp_path / "wfdb")
    records = [wfdb.rdheader(str(h.with_suffix(""))) for h in report.files]
    assert [r.sig_len for r in records] == [100, 100]
    assert all(
        f"admission {a}" in r.comments for r, a in zip(records, (first, second), strict=True)
    )


def test_building_a_long_record_copies_each_sample_a_bounded_number_of_times(
    store: TwinStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Joining blocks one by one copied the whole record again for every block: 72 h of
    ECG (26,000 blocks) took about an hour. The pieces are now concatenated once."""
    store.block_seconds = 0.1  # 50 samples per block, 400 blocks
    store.write(pairs(*(ecg(i, np.arange(i, i + 50) % 1000) for i in range(0, 20_000, 50))), T0)
    store.flush_waveforms(now=T0)
    copied = [0]
    concatenate = np.concatenate

    def counting(arrays: Any, *args: Any, **kwargs: Any) -> Any:
        joined = concatenate(arrays, *args, **kwargs)
        copied[0] += joined.size
        return joined

    monkeypatch.setattr(np, "concatenate", counting)
    report = export(store, BED, "wfdb", tmp_path / "wfdb")
    assert report.rows == 20_000 and len(report.files) == 1
    # Linear: decoding, one join and the WFDB writer's own copies; joining block by block
    # would copy about 200 times the record (4 million samples).
    assert copied[0] <= 10 * 20_000, f"{copied[0]} samples copied to build 20000"
