"""The process ``test_store_crash.py`` kills: ingests into a TwinStore at full rate.

Run as ``python store_crash_child.py STORE KEY_FILE GENERATION``. It opens the store (WAL
recovery, staged waveform chunks and all), then writes batches as fast as it can: four
numeric streams (values repeating in runs of three, so the step function skips some), one
waveform chunk continuing the sequence the store already holds, a device event every fourth
batch, and an alarm (``write_alarm``, ``synchronous=FULL``) every sixth. After each call
returns, i.e. after its transaction committed, it prints one JSON line saying what it
committed and flushes; a line printed is a reading acknowledged. It never stops by itself
before ``MAX_BATCHES``: the test ends it with SIGKILL.

The pure functions below (times, values, samples) are shared with the test, which imports
this module to know what each acknowledged line stands for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from drivers.codes import (
    BEATS_PER_MINUTE,
    ECG_HEART_RATE,
    ECG_LEAD_II,
    MILLIVOLT,
    PERCENT,
    PERFUSION_INDEX,
    PULSE_RATE,
    SPO2,
    Code,
    Unit,
)
from drivers.readings import Condition, DeviceEvent, Numeric, Waveform

BED = "bed-crash"
#: (device id, metric, unit) of each numeric stream.
NUMERIC_STREAMS: tuple[tuple[str, Code, Unit], ...] = (
    ("ox-1", SPO2, PERCENT),
    ("ox-1", PULSE_RATE, BEATS_PER_MINUTE),
    ("ox-1", PERFUSION_INDEX, PERCENT),
    ("ecg-1", ECG_HEART_RATE, BEATS_PER_MINUTE),
)
WAVE_SOURCE = "ecg-1"
WAVE_STREAM = f"{WAVE_SOURCE}/{ECG_LEAD_II.refid}"
ALARM_SOURCE = "alarm-engine"
RATE = 250.0  # Hz
CHUNK = 40  # samples per waveform chunk
BLOCK_SECONDS = 1.0  # a block every 7 chunks: kills land in folds too
HEARTBEAT = 1.2  # seconds; numerics are 0.5 s apart, so runs of 3 equal values repeat
T_NUMERIC = 1_800_000_000.0
T_WAVE = 1_800_500_000.0
GENERATION_SPAN = 100_000.0  # seconds of numeric time reserved for each generation
MAX_BATCHES = 200_000  # safety bound should the test die without killing us


def numeric_time(generation: int, batch: int) -> float:
    return T_NUMERIC + generation * GENERATION_SPAN + batch * 0.5


def numeric_value(generation: int, batch: int, stream: int) -> float:
    return 60.0 + ((batch // 3) * 7 + 13 * stream + generation) % 40 + 0.125 * stream


def stream_name(stream: int) -> str:
    source, code, _ = NUMERIC_STREAMS[stream]
    return f"{source}/{code.refid}"


def sample_counts(first: int, count: int) -> npt.NDArray[np.int64]:
    """The waveform's integer samples ``first .. first + count - 1`` (a pure function)."""
    i = np.arange(first, first + count, dtype=np.int64)
    return (i * 37) % 2001 - 1000 + (i // 50) % 7


def event_detail(generation: int, batch: int) -> str:
    return f"probe fault g{generation} b{batch}"


def alarm_marker(generation: int, batch: int) -> str:
    return f"spo2-low g{generation} b{batch}"


def main(argv: list[str]) -> None:
    # sqlite-utils imports pandas when it is installed; the store never uses it, and without
    # it each restart of this process takes half the time.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
    from gateway.twin.crypto import KeyRing, read_key_file
    from gateway.twin.store import KIND_PRIORITY, Destination, TwinStore

    store_path, key_file, generation = Path(argv[1]), Path(argv[2]), int(argv[3])
    store = TwinStore(
        store_path,
        KeyRing(read_key_file(key_file)),
        destinations=[Destination("central", frozenset(KIND_PRIORITY))],
        block_seconds=BLOCK_SECONDS,
        numeric_heartbeat=HEARTBEAT,
    )
    # Continue the waveform where the file ends (blocks and staged chunks), as a device that
    # stayed connected while the gateway restarted would.
    (seq,) = store.db.conn.execute(
        "SELECT COALESCE(MAX(seq + samples), 0) FROM (SELECT seq, samples FROM waveform_blocks "
        "UNION ALL SELECT seq, samples FROM waveform_staging)"
    ).fetchone()
    out = sys.stdout
    for batch in range(MAX_BATCHES):
        t = numeric_time(generation, batch)
        readings: list[tuple[str, object]] = []
        acked: list[list[float]] = []
        for k, (source, code, unit) in enumerate(NUMERIC_STREAMS):
            value = numeric_value(generation, batch, k)
            readings.append((BED, Numeric(source, code, value, unit, t)))
            acked.append([k, t, value])
        samples = sample_counts(seq, CHUNK).astype(np.float64)
        readings.append(
            (
                BED,
                Waveform(
                    WAVE_SOURCE,
                    ECG_LEAD_II,
                    MILLIVOLT,
                    RATE,
                    T_WAVE + seq / RATE,
                    samples,
                    sequence=seq,
                ),
            )
        )
        detail = None
        if batch % 4 == 3:
            detail = event_detail(generation, batch)
            readings.append((BED, DeviceEvent("ox-1", Condition.SENSOR_OFF, True, t, detail)))
        store.write(readings, now=t)  # type: ignore[arg-type]
        seq += CHUNK
        out.write(json.dumps({"num": acked, "wave": seq, "event": detail}) + "\n")
        out.flush()
        if batch % 6 == 5:
            marker = alarm_marker(generation, batch)
            record = {
                "marker": marker,
                "condition": "spo2_low",
                "priority": "high",
                "value": numeric_value(generation, batch, 0),
                "limit": 90,
            }
            store.write_alarm(BED, ALARM_SOURCE, record, t, now=t)
            out.write(json.dumps({"alarm": marker}) + "\n")
            out.flush()
    store.close()


if __name__ == "__main__":
    main(sys.argv)
