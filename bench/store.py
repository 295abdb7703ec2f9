"""Ingest cost of the encrypted twin store: a whole ward at real rates, as fast as possible.

Per bed: ECG lead II at 500 Hz in 0.1 s chunks (0.005 mV per count), pleth at 75 Hz in
25-sample chunks with SpO2 and pulse rate at 3 Hz (as the Nonin driver emits them), pump
rate and volume infused at 1 Hz, occasional device events (artifact episodes), one identity
per device, and one alarm state change per minute through ``write_alarm``. Readings are
grouped into batches of ``--batch-ms`` of ward time (sorted by arrival, the way the
``StoreWriter`` takes them off the hub) and committed with ``TwinStore.write`` under
simulated timestamps. ECG comes from MIT-BIH records (``--data DIR`` holding ``mitdb/``,
resampled 360 -> 500 Hz with wfdb) or, without it, from a synthetic PQRST generator with
heart-rate variability, baseline wander and noise.

The same batches then go into a plain SQLite reference in the same invocation (WAL,
``synchronous=NORMAL``, one ``executemany`` per table per batch, raw float values and raw
sample counts, no encryption, compression, dedupe or outbox; alarms in their own
``synchronous=FULL`` commit as in the store), and the store/reference ratios are printed.

    .venv/bin/python bench/store.py [--beds 16] [--minutes 10] [--batch-ms 250]
                                    [--data /work/shared/data] [--dir DIR] [--destinations 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import random
import resource
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from drivers import codes
from drivers.codes import Code, Unit
from drivers.oximetry.nonin import PLETH_MAX
from drivers.readings import (
    Condition,
    DeviceEvent,
    Identity,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import Destination, Patient, TwinStore, WriteResult

# --- the ward ---------------------------------------------------------------------------------
T0: Final = 1_800_000_000.0  # simulated UTC start (2027-01-15)
ECG_RATE: Final = 500.0
ECG_CHUNK: Final = 50  # samples: 0.1 s
ECG_RESOLUTION: Final = 0.005  # mV per count (MIT-BIH's 200 adu/mV)
PLETH_RATE: Final = 75.0
PLETH_CHUNK: Final = 25  # one Nonin packet: 1/3 s
PLETH_FULL: Final = PLETH_MAX[7]  # DF7: 16-bit pleth
PUMP_PERIOD: Final = 1.0
ALARM_PERIOD: Final = 60.0
ARTIFACT_MEAN_INTERVAL: Final = 180.0  # s between artifact episodes per bed, on average

# Infusion pump terms (IHE PCD TF Vol 3 section 7; not in drivers/codes.py until a pump driver).
PUMP_RATE: Final = Code("MDC_FLOW_FLUID_PUMP", 157784)
PUMP_VOLUME: Final = Code("MDC_VOL_FLUID_DELIV", 157864)
ML_PER_HOUR: Final = Unit("mL/h", "MDC_DIM_MILLI_L_PER_HR", 265266)
MILLILITRE: Final = Unit("mL", "MDC_DIM_MILLI_L", 263762)

# --- targets (issue 3) ------------------------------------------------------------------------
TARGET_READINGS_PER_S: Final = 50_000.0
TARGET_CORE_PERCENT: Final = 5.0
TARGET_WAVE_MB_PER_BED_DAY: Final = 40.0

Counts = npt.NDArray[np.int64]


class EcgSource(Protocol):
    def chunk(self, n: int) -> Counts: ...


class SyntheticEcg:
    """PQRST beats (sums of Gaussians) with RR variability, respiratory modulation,
    baseline wander and white noise (sd ``noise_mv``), in counts of ``ECG_RESOLUTION``."""

    # (offset from R in s, width in s, amplitude in mV) for P, Q, R, S, T.
    WAVES: Final = (
        (-0.16, 0.025, 0.12),
        (-0.025, 0.008, -0.12),
        (0.0, 0.009, 1.10),
        (0.025, 0.010, -0.25),
        (0.26, 0.050, 0.28),
    )
    SEGMENT: Final = 10.0  # seconds generated at a time
    REACH: Final = 0.5  # seconds a beat reaches either side of its R peak

    def __init__(self, rng: np.random.Generator, mean_hr: float, noise_mv: float = 0.010) -> None:
        self._rng = rng
        self._mean_rr = 60.0 / mean_hr
        self._noise = noise_mv
        self._resp_hz = rng.uniform(0.2, 0.3)
        self._phase = rng.uniform(0, 2 * math.pi)
        self._beats: list[tuple[float, float]] = []  # (R time, amplitude factor)
        self._next_beat = rng.uniform(-0.5, 0.5)
        self._segment_start = 0.0
        self._buffer: Counts = np.zeros(0, dtype=np.int64)
        self._pos = 0

    def chunk(self, n: int) -> Counts:
        while self._buffer.shape[0] - self._pos < n:
            rest = self._buffer[self._pos :]
            self._buffer = np.concatenate((rest, self._segment()))
            self._pos = 0
        out = self._buffer[self._pos : self._pos + n]
        self._pos += n
        return out

    def _segment(self) -> Counts:
        start, stop = self._segment_start, self._segment_start + self.SEGMENT
        self._segment_start = stop
        t = start + np.arange(round(self.SEGMENT * ECG_RATE)) / ECG_RATE
        while self._next_beat < stop + self.REACH:
            resp = math.sin(2 * math.pi * self._resp_hz * self._next_beat + self._phase)
            self._beats.append((self._next_beat, 1.0 + 0.05 * resp + self._rng.normal(0, 0.02)))
            rr = self._mean_rr * (1.0 + 0.03 * resp + self._rng.normal(0.0, 0.02))
            self._next_beat += max(0.3, rr)
        self._beats = [b for b in self._beats if b[0] > start - self.REACH]
        mv = 0.08 * np.sin(2 * np.pi * self._resp_hz * t + self._phase)
        mv += 0.05 * np.sin(2 * np.pi * 0.05 * t + 2 * self._phase)
        for r_time, amplitude in self._beats:
            lo = max(0, int((r_time - self.REACH - start) * ECG_RATE))
            hi = min(t.shape[0], int((r_time + self.REACH - start) * ECG_RATE) + 1)
            if lo >= hi:
                continue
            dt = t[lo:hi] - r_time
            for offset, width, height in self.WAVES:
                mv[lo:hi] += amplitude * height * np.exp(-(((dt - offset) / width) ** 2))
        mv += self._rng.normal(0.0, self._noise, t.shape[0])
        return np.rint(mv / ECG_RESOLUTION).astype(np.int64)


class RecordedEcg:
    """Counts of a real record, served in order and reused from the start when exhausted."""

    def __init__(self, counts: npt.NDArray[np.int16]) -> None:
        self._counts = counts
        self._pos = 0

    def chunk(self, n: int) -> Counts:
        parts = []
        while n:
            take = min(n, self._counts.shape[0] - self._pos)
            parts.append(self._counts[self._pos : self._pos + take])
            self._pos = (self._pos + take) % self._counts.shape[0]
            n -= take
        return np.concatenate(parts).astype(np.int64)


def load_mitdb(
    folder: Path, beds: int, seconds: float
) -> tuple[dict[str, npt.NDArray[np.int16]], list[str]]:
    """MLII (else the first lead) of one MIT-BIH record per bed, as 500 Hz int16 counts of
    ``ECG_RESOLUTION``; returns the records by name and the name each bed plays. Non-paced
    records first; records are reused when beds outnumber them. Runs in a child process
    (see :func:`load_mitdb_aside`) so that wfdb, scipy and the resampling do not count in
    the peak RSS measured here."""
    import wfdb
    from wfdb.processing import resample_sig

    names = sorted(p.stem for p in folder.glob("*.hea"))
    if not names:
        raise SystemExit(f"--data: no WFDB records (*.hea) in {folder}")
    paced = {"102", "104", "107", "217"}
    names = [n for n in names if n not in paced] + [n for n in names if n in paced]
    used = [names[bed % len(names)] for bed in range(beds)]
    records: dict[str, npt.NDArray[np.int16]] = {}
    for name in dict.fromkeys(used):
        header = wfdb.rdheader(str(folder / name))
        fs = float(header.fs)
        need = min(int(header.sig_len), math.ceil((seconds + 1.0) * fs))
        channel = header.sig_name.index("MLII") if "MLII" in header.sig_name else 0
        record = wfdb.rdrecord(str(folder / name), sampto=need, channels=[channel])
        mv = np.nan_to_num(record.p_signal[:, 0])
        if fs != ECG_RATE:
            mv, _ = resample_sig(mv, fs, ECG_RATE)
        counts: npt.NDArray[np.float64] = np.rint(np.asarray(mv, dtype=np.float64) / ECG_RESOLUTION)
        records[name] = counts.clip(-(1 << 15), (1 << 15) - 1).astype(np.int16)
    return records, used


def load_mitdb_aside(
    folder: Path, beds: int, seconds: float
) -> tuple[dict[str, npt.NDArray[np.int16]], list[str]]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(load_mitdb, folder, beds, seconds).result()


class OrnsteinUhlenbeck:
    """A mean-reverting random walk: ``sd`` stationary spread, ``tau`` seconds memory."""

    def __init__(self, rng: random.Random, mean: float, sd: float, tau: float) -> None:
        self.rng, self.mean, self.sd, self.tau = rng, mean, sd, tau
        self.x = rng.gauss(mean, sd)

    def step(self, dt: float) -> float:
        a = math.exp(-dt / self.tau)
        self.x = (
            self.mean
            + a * (self.x - self.mean)
            + self.sd * math.sqrt(1 - a * a) * (self.rng.gauss(0.0, 1.0))
        )
        return self.x


@dataclass
class Bed:
    """The devices of one bed and the readings they send, in simulated time."""

    index: int
    ecg: EcgSource
    seed: int
    id: str = ""
    ecg_id: str = ""
    ox_id: str = ""
    pump_id: str = ""
    record: dict[str, list[Any]] = field(default_factory=dict)  # what was sent, if kept

    def __post_init__(self) -> None:
        n = self.index + 1
        self.id, self.ecg_id, self.ox_id, self.pump_id = (
            f"bed-{n:02d}",
            f"ecg-{n:02d}",
            f"ox-{n:02d}",
            f"pump-{n:02d}",
        )
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        # Each device starts at its own phase, so beds do not all send at the same instant.
        self.ecg_offset = self.rng.uniform(0.0, 0.1)
        self.ox_offset = self.rng.uniform(0.0, 1 / 3)
        self.pump_offset = self.rng.uniform(0.0, 1.0)
        self.ecg_k = self.ox_k = self.pump_k = 0
        self.identified = False
        base_hr = self.rng.uniform(60.0, 95.0)
        self.pr = OrnsteinUhlenbeck(self.rng, base_hr, 3.0, 30.0)
        self.spo2 = OrnsteinUhlenbeck(self.rng, self.rng.uniform(94.5, 98.5), 0.8, 20.0)
        self.resp_hz = self.rng.uniform(0.2, 0.3)
        self.pleth_phase = self.rng.random()
        self.beats: tuple[float, ...] = (base_hr,)
        self.shown_spo2 = float(min(100, round(self.spo2.x)))
        self.artifact_until: float | None = None
        self.pump_rate = self.rng.choice((21.0, 42.0, 83.0, 125.0))
        self.pump_volume = self.rng.uniform(0.0, 200.0)
        self.alarm_offset = self.index * ALARM_PERIOD / 16.0 % ALARM_PERIOD + 1.0
        self.alarm_k = 0

    def until(self, t_end: float) -> list[tuple[float, Reading]]:
        """Every reading that arrives at the gateway before ``t_end`` and has not been sent."""
        out: list[tuple[float, Reading]] = []
        if not self.identified:
            self.identified = True
            for source, maker, model in (
                (self.ecg_id, "Bench", "ECG"),
                (self.ox_id, "Nonin", "bench"),
                (self.pump_id, "Bench", "Pump"),
            ):
                out.append((T0, Identity(source, T0, manufacturer=maker, model=model)))
        while (start := T0 + self.ecg_offset + self.ecg_k * 0.1) + 0.1 <= t_end:
            out.append((start + 0.1, self._ecg_chunk(start)))
            self.ecg_k += 1
        while (start := T0 + self.ox_offset + self.ox_k / 3.0) + 1 / 3 <= t_end:
            out.extend((start + 1 / 3, r) for r in self._ox_packet(start, start + 1 / 3))
            self.ox_k += 1
        while (at := T0 + self.pump_offset + (self.pump_k + 1) * PUMP_PERIOD) <= t_end:
            out.extend((at, r) for r in self._pump(at))
            self.pump_k += 1
        return out

    def alarms_until(self, t_end: float) -> list[tuple[float, dict[str, Any]]]:
        out: list[tuple[float, dict[str, Any]]] = []
        while (at := T0 + self.alarm_offset + self.alarm_k * ALARM_PERIOD) < t_end:
            active = self.alarm_k % 2 == 0
            out.append(
                (
                    at,
                    {
                        "condition": "spo2_low",
                        "state": "active" if active else "cleared",
                        "priority": "medium",
                        "value": round(self.spo2.x),
                        "limit": 90.0,
                        "by": "bench",
                    },
                )
            )
            self.alarm_k += 1
        return out

    def _ecg_chunk(self, start: float) -> Waveform:
        counts = self.ecg.chunk(ECG_CHUNK)
        if "ecg" in self.record:
            self.record["ecg"].append(counts)
        return Waveform(
            source=self.ecg_id,
            code=codes.ECG_LEAD_II,
            unit=codes.MILLIVOLT,
            sample_rate=ECG_RATE,
            start_time=start,
            samples=(counts * ECG_RESOLUTION).astype(np.float64),
            sequence=self.ecg_k * ECG_CHUNK,
            resolution=ECG_RESOLUTION,
        )

    def _ox_packet(self, start: float, now: float) -> list[Reading]:
        out: list[Reading] = []
        # Artifact episodes: an event when they start and when they end; numerics
        # are QUESTIONABLE meanwhile (as the Nonin driver marks ARTF).
        if self.artifact_until is not None and now >= self.artifact_until:
            self.artifact_until = None
            out.append(DeviceEvent(self.ox_id, Condition.ARTIFACT, False, now, "bench"))
        elif self.artifact_until is None and self.rng.random() < (1 / 3) / ARTIFACT_MEAN_INTERVAL:
            self.artifact_until = now + self.rng.uniform(2.0, 8.0)
            out.append(DeviceEvent(self.ox_id, Condition.ARTIFACT, True, now, "bench"))
        status = (
            MeasurementStatus.NONE
            if self.artifact_until is None
            else MeasurementStatus.QUESTIONABLE
        )
        # The oximeter updates SpO2 and pulse rate once per detected pulse, as 4-beat
        # averages; between pulses every packet repeats the last values.
        hr = self.pr.x + 2.0 * math.sin(2 * math.pi * self.resp_hz * start)
        phase = self.pleth_phase + np.arange(1, PLETH_CHUNK + 1) * (hr / 60.0 / PLETH_RATE)
        for _ in range(int(phase[-1])):  # pulses in this packet
            self.pr.step(60.0 / hr)
            self.spo2.step(60.0 / hr)
            self.beats = (*self.beats[-3:], hr)
            self.shown_spo2 = float(min(100, round(self.spo2.x)))
        self.pleth_phase = float(phase[-1] % 1.0)
        spo2 = self.shown_spo2
        pr = float(round(sum(self.beats) / len(self.beats)))
        out.append(Numeric(self.ox_id, codes.SPO2, spo2, codes.PERCENT, now, status=status))
        out.append(
            Numeric(self.ox_id, codes.PULSE_RATE, pr, codes.BEATS_PER_MINUTE, now, status=status)
        )
        # Pleth: the Nonin simulator's pulse shape, respiratory amplitude swing, sensor noise.
        p = phase % 1.0
        shape = np.exp(-(((p - 0.2) / 0.07) ** 2)) + 0.35 * np.exp(-(((p - 0.5) / 0.08) ** 2))
        swing = 1.0 + 0.1 * math.sin(2 * math.pi * self.resp_hz * start)
        level = PLETH_FULL * (0.25 + 0.5 * swing * shape / 1.1)
        noisy: npt.NDArray[np.float64] = level + self.np_rng.normal(0.0, 20.0, PLETH_CHUNK)
        pleth = np.rint(noisy).clip(0, PLETH_FULL)
        if "pleth" in self.record:
            self.record["pleth"].append(pleth.astype(np.int64))
        if "numeric" in self.record:
            self.record["numeric"].extend(out[-2:])
        out.append(
            Waveform(
                source=self.ox_id,
                code=codes.PLETH,
                unit=codes.DIMENSIONLESS,
                sample_rate=PLETH_RATE,
                start_time=start,
                samples=pleth.astype(np.float64),
                sequence=self.ox_k * PLETH_CHUNK,
            )
        )
        return out

    def _pump(self, now: float) -> list[Reading]:
        if self.rng.random() < PUMP_PERIOD / 1800.0:  # the nurse changes the rate now and then
            self.pump_rate = self.rng.choice((21.0, 42.0, 83.0, 125.0, 250.0))
        self.pump_volume += self.pump_rate * PUMP_PERIOD / 3600.0
        out: list[Reading] = [
            Numeric(self.pump_id, PUMP_RATE, self.pump_rate, ML_PER_HOUR, now),
            Numeric(self.pump_id, PUMP_VOLUME, round(self.pump_volume, 1), MILLILITRE, now),
        ]
        if "numeric" in self.record:
            self.record["numeric"].extend(out)
        return out


@dataclass(frozen=True)
class Batch:
    now: float  # gateway wall time of the commit: the end of the window
    readings: list[tuple[str, Reading]]
    alarms: list[tuple[str, str, dict[str, Any], float]]  # bed, source, record, t


def ward_batches(
    ecg: Callable[[int], EcgSource], beds: int, seconds: float, batch_s: float, keep_bed: int
) -> Iterator[Batch]:
    """The ward's readings, window by window of ``batch_s`` of ward time. Deterministic."""
    ward = [Bed(i, ecg(i), seed=1000 + i) for i in range(beds)]
    if 0 <= keep_bed < beds:
        ward[keep_bed].record.update(ecg=[], pleth=[], numeric=[])
    windows = round(seconds / batch_s)
    for w in range(1, windows + 1):
        t_end = T0 + w * batch_s
        timed: list[tuple[float, int, str, Reading]] = []
        alarms: list[tuple[float, str, str, dict[str, Any]]] = []
        for bed in ward:
            timed.extend((t, i, bed.id, r) for i, (t, r) in enumerate(bed.until(t_end)))
            alarms.extend((t, bed.id, "alarms/spo2_low", rec) for t, rec in bed.alarms_until(t_end))
        timed.sort(key=lambda x: (x[0], x[1]))
        alarms.sort(key=lambda x: x[0])
        yield Batch(
            t_end,
            [(bed_id, r) for _, _, bed_id, r in timed],
            [(b, s, rec, t) for t, b, s, rec in alarms],
        )
    bench_beds.clear()
    bench_beds.extend(ward)


bench_beds: list[Bed] = []  # the last ward simulated, for checking what the store kept


# --- the two sinks ----------------------------------------------------------------------------
class Sink(Protocol):
    def write(self, batch: Sequence[tuple[str, Reading]], now: float) -> object: ...

    def write_alarm(
        self, bed_id: str, source: str, record: dict[str, Any], t: float, now: float
    ) -> object: ...

    def finish(self, now: float) -> None: ...


class StoreSink:
    def __init__(self, path: Path, beds: int, destinations: int) -> None:
        dests = [
            Destination(
                f"central-{i + 1}", frozenset({"alarm", "audit", "event", "numeric", "waveform"})
            )
            for i in range(destinations)
        ]
        self.store = TwinStore(path, KeyRing(generate_kek()), destinations=dests)
        for i in range(beds):
            patient = Patient(f"Bench Patient {i + 1}", f"BENCH{i + 1:05d}", "1970-01-01")
            self.store.admit(f"bed-{i + 1:02d}", patient, T0)
        self.totals = WriteResult()

    def write(self, batch: Sequence[tuple[str, Reading]], now: float) -> WriteResult:
        result = self.store.write(batch, now)
        t = self.totals
        t.stored += result.stored
        t.numerics_written += result.numerics_written
        t.numerics_repeated += result.numerics_repeated
        t.waveform_chunks += result.waveform_chunks
        t.blocks_written += result.blocks_written
        t.events_written += result.events_written
        return result

    def write_alarm(
        self, bed_id: str, source: str, record: dict[str, Any], t: float, now: float
    ) -> int:
        return self.store.write_alarm(bed_id, source, record, t, now)

    def finish(self, now: float) -> None:
        self.totals.blocks_written += self.store.flush_waveforms(now)


class ReferenceSink:
    """Plain SQLite: raw values and raw sample counts, no encryption, compression or dedupe."""

    SCHEMA: Final = (
        "CREATE TABLE numerics (id INTEGER PRIMARY KEY, bed TEXT, stream TEXT, t REAL, "
        "value REAL, unit TEXT, status INTEGER)",
        "CREATE INDEX numerics_by_time ON numerics (bed, stream, t)",
        "CREATE TABLE waveforms (id INTEGER PRIMARY KEY, bed TEXT, stream TEXT, seq INTEGER, "
        "t REAL, sample_rate REAL, resolution REAL, samples BLOB)",
        "CREATE INDEX waveforms_by_time ON waveforms (bed, stream, t)",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, bed TEXT, source TEXT, t REAL, body TEXT)",
        "CREATE INDEX events_by_time ON events (bed, source, t)",
        "CREATE TABLE alarms (id INTEGER PRIMARY KEY, bed TEXT, source TEXT, t REAL, body TEXT)",
        "CREATE INDEX alarms_by_time ON alarms (bed, source, t)",
    )

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        for statement in self.SCHEMA:
            self.conn.execute(statement)

    def write(self, batch: Sequence[tuple[str, Reading]], now: float) -> None:
        numerics: list[tuple[Any, ...]] = []
        waves: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for bed, r in batch:
            if isinstance(r, Numeric):
                stream = f"{r.source}/{r.code.refid}"
                numerics.append((bed, stream, r.time, r.value, r.unit.ucum, r.status.value))
            elif isinstance(r, Waveform):
                counts = np.rint(r.samples / r.resolution)
                lo, hi = counts.min(), counts.max()
                dtype = (
                    "<i2"
                    if lo >= -32768 and hi < 32768
                    else "<u2"
                    if lo >= 0 and hi < 65536
                    else "<i4"
                )
                waves.append(
                    (bed, f"{r.source}/{r.code.refid}", r.sequence, r.start_time,
                     r.sample_rate, r.resolution, counts.astype(dtype).tobytes())
                )  # fmt: skip
            elif isinstance(r, DeviceEvent):
                body = {"condition": r.condition.value, "active": r.active, "detail": r.detail}
                events.append((bed, r.source, r.time, json.dumps(body)))
            else:
                body = {"manufacturer": r.manufacturer, "model": r.model, "serial": r.serial}
                events.append((bed, r.source, r.time, json.dumps(body)))
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.executemany(
            "INSERT INTO numerics (bed, stream, t, value, unit, status) VALUES (?, ?, ?, ?, ?, ?)",
            numerics,
        )
        c.executemany(
            "INSERT INTO waveforms (bed, stream, seq, t, sample_rate, resolution, samples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            waves,
        )
        c.executemany("INSERT INTO events (bed, source, t, body) VALUES (?, ?, ?, ?)", events)
        c.execute("COMMIT")

    def write_alarm(
        self, bed_id: str, source: str, record: dict[str, Any], t: float, now: float
    ) -> None:
        c = self.conn
        c.execute("PRAGMA synchronous = FULL")
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT INTO alarms (bed, source, t, body) VALUES (?, ?, ?, ?)",
            (bed_id, source, t, json.dumps(record)),
        )
        c.execute("COMMIT")
        c.execute("PRAGMA synchronous = NORMAL")

    def finish(self, now: float) -> None:
        pass


# --- measuring --------------------------------------------------------------------------------
def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


@dataclass
class Run:
    name: str
    readings: int = 0
    values: int = 0  # samples + numeric values + events
    alarms: int = 0
    batches: int = 0
    wall: float = 0.0  # seconds inside the sink's calls
    cpu: float = 0.0  # process CPU seconds inside the sink's calls
    process_cpu: float = 0.0  # whole process, generation of the ward included
    commit: list[float] = field(default_factory=list)
    alarm_commit: list[float] = field(default_factory=list)


def ingest(name: str, sink: Sink, batches: Iterator[Batch]) -> Run:
    run = Run(name)
    cpu_start = cpu_seconds()
    now = T0
    for batch in batches:
        now = batch.now
        c0, w0 = cpu_seconds(), time.perf_counter()
        sink.write(batch.readings, now)
        w1 = time.perf_counter()
        c1 = cpu_seconds()
        run.commit.append(w1 - w0)
        run.wall += w1 - w0
        run.cpu += c1 - c0
        for bed_id, source, record, t in batch.alarms:
            c0, w0 = cpu_seconds(), time.perf_counter()
            sink.write_alarm(bed_id, source, record, t, now)
            w1 = time.perf_counter()
            c1 = cpu_seconds()
            run.alarm_commit.append(w1 - w0)
            run.wall += w1 - w0
            run.cpu += c1 - c0
        run.batches += 1
        run.readings += len(batch.readings)
        run.alarms += len(batch.alarms)
        run.values += sum(
            len(r.samples) if isinstance(r, Waveform) else 1 for _, r in batch.readings
        )
    c0, w0 = cpu_seconds(), time.perf_counter()
    sink.finish(now)
    run.wall += time.perf_counter() - w0
    run.cpu += cpu_seconds() - c0
    run.process_cpu = cpu_seconds() - cpu_start
    return run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else 0.0


def file_bytes(conn: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """Size of the database file after a truncating checkpoint, and bytes in free pages."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0), free * page


def bytes_by_table(conn: sqlite3.Connection) -> dict[str, int]:
    """Pages each table holds in the file, its indexes included (SQLite's dbstat)."""
    owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master"))
    out: dict[str, int] = {}
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # SQLite built without dbstat
        return out
    for name, size in rows:
        table = owner.get(name, name)
        out[table] = out.get(table, 0) + int(size)
    return out


def sealed_bytes(conn: sqlite3.Connection) -> dict[str, int]:
    out: dict[str, int] = {}
    for label, table in (
        ("numerics", "numerics"),
        ("events", "device_events"),
        ("alarms", "alarm_log"),
        ("waveform staging (left)", "waveform_staging"),
    ):
        out[label] = int(conn.execute(f"SELECT total(length(sealed)) FROM {table}").fetchone()[0])
    for name, size, samples in conn.execute(
        "SELECT s.name, total(length(w.sealed)), total(w.samples) FROM waveform_blocks w "
        "JOIN streams s ON s.id = w.stream_id GROUP BY s.name"
    ):
        kind = "ECG" if name.endswith(codes.ECG_LEAD_II.refid) else "pleth"
        out[f"waveforms {kind}"] = out.get(f"waveforms {kind}", 0) + int(size)
        out[f"samples {kind}"] = out.get(f"samples {kind}", 0) + int(samples)
    return out


def verify(store: TwinStore, bed: Bed) -> str:
    """Compare what the store gives back for one bed with what that bed sent."""
    problems = []
    for kind, code in (("ecg", codes.ECG_LEAD_II), ("pleth", codes.PLETH)):
        source = bed.ecg_id if kind == "ecg" else bed.ox_id
        blocks = list(store.waveform_blocks(bed.id, f"{source}/{code.refid}"))
        got = np.concatenate([b["counts"] for b in blocks]) if blocks else np.zeros(0)
        sent = np.concatenate(bed.record[kind])
        if not np.array_equal(got, sent):
            problems.append(f"{kind}: {got.shape[0]} samples back, {sent.shape[0]} sent, differ")
    stored: dict[str, list[dict[str, Any]]] = {}
    for row in store.rows("numeric", bed.id):
        stored.setdefault(row["stream"], []).append(row)
    index: dict[str, int] = {}
    mismatches = 0
    for r in bed.record["numeric"]:
        assert isinstance(r, Numeric)
        rows = stored.get(f"{r.source}/{r.code.refid}", [])
        i = index.get(r.source + r.code.refid, 0)
        while i + 1 < len(rows) and rows[i + 1]["t"] <= r.time:
            i += 1
        index[r.source + r.code.refid] = i
        if (
            not rows
            or rows[i]["t"] > r.time
            or rows[i]["value"] != r.value
            or rows[i]["status"] != r.status.names()
        ):
            mismatches += 1
    if mismatches:
        problems.append(f"{mismatches} numerics differ from the stored step function")
    n = len(bed.record["numeric"])
    ecg_n = sum(len(c) for c in bed.record["ecg"])
    pleth_n = sum(len(c) for c in bed.record["pleth"])
    what = f"{bed.id}: {ecg_n} ECG + {pleth_n} pleth samples, {n} numerics"
    return f"{what}: " + ("; ".join(problems) if problems else "read back equal (step function)")


# --- report ---------------------------------------------------------------------------------
def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else ""


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class StoreFigures:
    run: Run
    totals: WriteResult
    sealed: dict[str, int]
    size: int
    free: int
    by_table: dict[str, int]
    counts: dict[str, int]
    checked: str
    rss: float


@dataclass
class ReferenceFigures:
    run: Run
    size: int
    wave: int
    rss: float


def measure_store(
    path: Path, args: argparse.Namespace, ecg: Callable[[int], EcgSource]
) -> StoreFigures:
    sink = StoreSink(path, args.beds, args.destinations)
    batches = ward_batches(ecg, args.beds, args.minutes * 60.0, args.batch_ms / 1e3, keep_bed=0)
    run = ingest("store", sink, batches)
    rss = peak_rss_mib()
    conn = sink.store.db.conn
    sealed = sealed_bytes(conn)
    size, free = file_bytes(conn, path)
    figures = StoreFigures(
        run,
        sink.totals,
        sealed,
        size,
        free,
        bytes_by_table(conn),
        sink.store.counts(),
        verify(sink.store, bench_beds[0]),
        rss,
    )
    sink.store.close()
    return figures


def measure_reference(
    path: Path, args: argparse.Namespace, ecg: Callable[[int], EcgSource]
) -> ReferenceFigures:
    sink = ReferenceSink(path)
    batches = ward_batches(ecg, args.beds, args.minutes * 60.0, args.batch_ms / 1e3, keep_bed=-1)
    run = ingest("reference", sink, batches)
    rss = peak_rss_mib()
    size, _ = file_bytes(sink.conn, path)
    wave = int(sink.conn.execute("SELECT total(length(samples)) FROM waveforms").fetchone()[0])
    sink.conn.close()
    return ReferenceFigures(run, size, wave, rss)


def report(
    args: argparse.Namespace, store: StoreFigures, ref: ReferenceFigures, rss_base: float
) -> None:
    seconds = args.minutes * 60.0
    bed_hours = args.beds * seconds / 3600.0
    bed_days = bed_hours / 24.0
    run, rr, totals = store.run, ref.run, store.totals

    def per_day(n: float) -> float:
        return float(n / bed_days / 1e6)

    offered = totals.numerics_written + totals.numerics_repeated
    print(
        f"offered: {fmt(run.readings)} readings "
        f"({fmt(run.readings / seconds / args.beds, 1)} per bed-second; {fmt(run.values)} values "
        f"counting each sample), {fmt(run.alarms)} alarms, {fmt(run.batches)} batches of "
        f"{fmt(run.readings / run.batches, 1)} readings"
    )
    print(
        f"store kept: numerics {fmt(totals.numerics_written)} written of {fmt(offered)} "
        f"({fmt(100 * totals.numerics_repeated / max(1, offered), 1)} % deduplicated by the step "
        f"function); {fmt(totals.waveform_chunks)} waveform chunks -> "
        f"{fmt(totals.blocks_written)} blocks; {fmt(totals.events_written)} events; rows: "
        + ", ".join(f"{k} {v}" for k, v in store.counts.items() if v)
    )
    print(f"check: {store.checked}")
    print()

    rows: list[tuple[str, str, str, str, str]] = []

    def row(metric: str, mine: float, theirs: float | None, digits: int, note: str = "") -> None:
        rows.append(
            (
                metric,
                fmt(mine, digits),
                "" if theirs is None else fmt(theirs, digits),
                "" if theirs is None else ratio(mine, theirs),
                note,
            )
        )

    target = TARGET_READINGS_PER_S
    rate, ref_rate = run.readings / run.wall, rr.readings / rr.wall
    vrate, ref_vrate = run.values / run.wall, rr.values / rr.wall
    row("readings/s sustained (Reading objects)", rate, ref_rate, 0,
        f">= {fmt(target)}: {met(rate >= target)}")  # fmt: skip
    row("values/s sustained (each sample one)", vrate, ref_vrate, 0,
        f">= {fmt(target)}: {met(vrate >= target)}")  # fmt: skip
    row("x real time", seconds / run.wall, seconds / rr.wall, 1)
    row("CPU s per bed-hour", run.cpu / bed_hours, rr.cpu / bed_hours, 3)
    core, ref_core = run.cpu / seconds * 100, rr.cpu / seconds * 100
    row(f"% of one core, {args.beds} beds at real rate", core, ref_core, 2,
        f"< {TARGET_CORE_PERCENT:.0f} %: {met(core < TARGET_CORE_PERCENT)}")  # fmt: skip
    for label, q, mine_list, ref_list in (
        ("commit p50, write (ms)", 0.5, run.commit, rr.commit),
        ("commit p99, write (ms)", 0.99, run.commit, rr.commit),
        ("commit max, write (ms)", 1.0, run.commit, rr.commit),
        ("commit p50, write_alarm FULL (ms)", 0.5, run.alarm_commit, rr.alarm_commit),
        ("commit p99, write_alarm FULL (ms)", 0.99, run.alarm_commit, rr.alarm_commit),
    ):
        mine_ms, ref_ms = percentile(mine_list, q) * 1e3, percentile(ref_list, q) * 1e3
        note = f"batch latency bound {fmt(args.batch_ms)} ms" if "p99, write (" in label else ""
        row(label, mine_ms, ref_ms, 2, note)
    row("peak RSS, process (MiB)", store.rss, ref.rss, 0,
        f"{rss_base:.0f} before ingest; reference runs after the store")  # fmt: skip
    for label, table in (
        ("numerics", "numerics"),
        ("events", "events"),
        ("alarms", "alarms"),
        ("waveform staging left", "waveform staging (left)"),
    ):
        row(f"MB/bed-day sealed {label}", per_day(store.sealed[table]), None, 3)
    for kind in ("ECG", "pleth"):
        n = store.sealed.get(f"waveforms {kind}", 0)
        bits = 8 * n / max(1, store.sealed.get(f"samples {kind}", 0))
        row(f"MB/bed-day sealed waveforms {kind}", per_day(n), None, 2, f"{bits:.2f} bits/sample")
    wave = store.sealed.get("waveforms ECG", 0) + store.sealed.get("waveforms pleth", 0)
    wave_ok = per_day(wave) <= TARGET_WAVE_MB_PER_BED_DAY
    row("MB/bed-day sealed waveforms total", per_day(wave), per_day(ref.wave), 2,
        f"<= {TARGET_WAVE_MB_PER_BED_DAY:.0f}: {met(wave_ok)}")  # fmt: skip
    row("MB/bed-day whole file, checkpointed", per_day(store.size), per_day(ref.size), 2,
        f"{per_day(store.free):.2f} of it free pages")  # fmt: skip

    head = ("metric", "store", "reference", "store/ref", "target / note")
    widths = [max(len(r[i]) for r in (*rows, head)) for i in range(4)]
    for line in (head, *rows):
        print(
            f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:>{widths[2]}}  "
            f"{line[3]:>{widths[3]}}  {line[4]}".rstrip()
        )
    print()
    if store.by_table:
        parts = [
            f"{k} {per_day(v):.2f}"
            for k, v in sorted(store.by_table.items(), key=lambda kv: -kv[1])
            if per_day(v) >= 0.005
        ]
        print("store file by table, indexes included (MB/bed-day): " + ", ".join(parts))
    print(
        f"wall in store calls {run.wall:.1f} s (reference {rr.wall:.1f} s); process CPU during "
        f"the store run {run.process_cpu:.1f} s, {run.cpu:.1f} s of it in store calls (the rest "
        f"simulates the ward); {os.cpu_count()} CPUs"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated ward minutes")
    parser.add_argument("--batch-ms", type=float, default=250.0, help="ward time per commit")
    parser.add_argument(
        "--data", type=Path, help="folder holding mitdb/ for real ECG (else synthetic)"
    )
    parser.add_argument("--dir", type=Path, help="keep the databases here (default: a temp dir)")
    parser.add_argument("--destinations", type=int, default=1, help="sync destinations (outbox)")
    args = parser.parse_args(argv)

    python = os.path.relpath(sys.executable) if sys.prefix != sys.base_prefix else "python"
    print(f"command: {shlex.join([python, *sys.argv])}")
    seconds = args.minutes * 60.0

    ecg: Callable[[int], EcgSource]
    if args.data is not None:
        folder = args.data / "mitdb" if (args.data / "mitdb").is_dir() else args.data
        records, names = load_mitdb_aside(folder, args.beds, seconds)
        described = (
            f"real MIT-BIH ({folder}), MLII resampled 360 -> 500 Hz with wfdb, "
            f"one record per bed: {' '.join(names)}"
        )

        def ecg(i: int) -> EcgSource:
            return RecordedEcg(records[names[i]])

    else:
        described = (
            "synthetic (PQRST Gaussians, RR and amplitude variability, baseline wander, "
            "white noise sd 0.010 mV)"
        )

        def ecg(i: int) -> EcgSource:
            return SyntheticEcg(np.random.default_rng(2000 + i), random.Random(i).uniform(60, 95))

    print(
        f"ward: {args.beds} beds x {fmt(args.minutes, 1)} simulated min = "
        f"{fmt(args.beds * seconds / 3600, 2)} bed-hours; one commit per "
        f"{fmt(args.batch_ms)} ms of ward time; sync destinations: {args.destinations}"
    )
    print(
        f"ECG lead II: {described}; 500 Hz in {ECG_CHUNK}-sample chunks, {ECG_RESOLUTION} mV/count"
    )
    print(
        "per bed also: pleth 75 Hz in 25-sample chunks (DF7 scale, noise sd 20 counts); "
        "SpO2 + pulse rate at 3 Hz (integers, updated once per pulse; random walks, 4-beat "
        "average pulse rate with respiratory swing); pump rate + volume (0.1 mL) at 1 Hz; "
        "artifact episodes (event on + off) every ~3 min; one identity "
        "per device; 1 alarm state change per minute via write_alarm (synchronous=FULL)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("store.sqlite", "reference.sqlite"):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{directory / name}{suffix}").unlink(missing_ok=True)
        print(f"databases in: {directory}")
        print()
        rss_base = peak_rss_mib()
        store = measure_store(directory / "store.sqlite", args, ecg)
        ref = measure_reference(directory / "reference.sqlite", args, ecg)
    report(args, store, ref, rss_base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
