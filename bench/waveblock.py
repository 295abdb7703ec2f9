"""Lossless waveform block codecs compared on real ECG and synthetic pleth, 10 s per block.

Candidates, each encoding one 10-second block of one signal on its own (as the store does):

* ``zlib(raw16)``: zlib level 6 of the samples as 2-byte integers: the baseline.
* ``d1+zz+zlib`` / ``d2+zz+zlib``: first / second difference, zigzag, narrowest unsigned
  width, byte-shuffled (all low bytes, then all high bytes), zlib level 6 (stdlib only).
* ``d2+zz+zstd3`` / ``d2+zz+zstd19``: the same with zstandard levels 3 and 19.
* ``flac``: FLAC through soundfile (libsndfile), 16-bit mono, one FLAC stream per block
  (the codec of WFDB format 516); 0..65535 pleth is shifted by -32768 to fit int16.
* ``waveblock``: the codec the gateway uses (``gateway/twin/waveblock.py``): fixed predictor
  of order 0-3 per block + partitioned Rice coding, numpy only, raw fallback, CRC-32.

The d1/d2 candidates carry only what they need to decode (width byte and first values); the
FLAC and waveblock sizes are whole self-describing blobs. Every block is decoded again and
compared with the input; a mismatch aborts the run.

Data sets (``--data`` is the folder holding ``mitdb/`` and ``vfdb/``, see its README):

* ``mitdb 360 Hz``: every record and both leads of MIT-BIH as recorded (11-bit, 200 adu/mV).
* ``mitdb->500 Hz``: the same resampled to 500 Hz (scipy ``resample_poly`` 25/18, rounded):
  the rate the gateway stores, at the same amplitude resolution (5 uV per count).
* ``mitdb->500 Hz x4+n``: resampled, gain x4 (1.25 uV per count, like a 16-bit monitor
  front-end) plus Gaussian noise of 1 count rms so the new low bits are not empty: a
  pessimistic 16-bit case.
* ``vfdb 250 Hz``: MIT-BIH Malignant Ventricular Ectopy records as recorded (12-bit, VF/VT).
* ``pleth DF7`` / ``pleth DF2``: synthetic Nonin pleth at 75 Hz in 16-bit (0..65535) and
  8-bit (0..255) scale: the simulator's pulse shape (systolic + dicrotic Gaussian bumps, as in
  ``drivers/simulate/nonin.py``) at a pulse rate of 75/min drifting +-8/min over 10 min with
  +-3/min respiratory sinus arrhythmia, amplitude modulated +-10 % and baseline wandering
  +-5 % of the pulse height at the respiratory period (4.5 s), plus Gaussian noise of 0.1 %
  of the pulse height (about 33 counts in DF7), scaled like the simulator (baseline at 25 %,
  pulse height 50 % of full scale) and clipped to the format's range.

Columns: ratio = raw int16 bytes (2 per sample) / coded bytes; B/sample = coded bytes per
sample; encode and decode MB/s of raw int16 per CPU second of this process (process_time,
so other load on the machine does not count), one block per call;
MB/day = that stream for 24 h at the gateway's rate (ECG 500 Hz, pleth 75 Hz) with the same
bytes per sample, plus 88 bytes per block (AES-GCM nonce 12 + tag 16, SQLite row ~60).
The bed-day table adds one ECG lead at 500 Hz and one pleth at 75 Hz against the 40 MB target.

Data: MIT-BIH Arrhythmia and Malignant Ventricular Ectopy databases (PhysioNet, ODC-By 1.0):
Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. IEEE Eng in Med and Biol
20(3):45-50 (2001). Greenwald SD. Development and analysis of a ventricular fibrillation
detector. MS thesis, MIT (1986). Goldberger AL, et al. PhysioBank, PhysioToolkit, and
PhysioNet. Circulation 101(23):e215-e220 (2000).

    .venv/bin/python bench/waveblock.py --data /work/shared/data [--stride N] [--pleth-hours H]
        [--block-seconds S]

Needs wfdb and scipy; zstandard and soundfile are optional (their rows are skipped if absent).
"""

from __future__ import annotations

import argparse
import io
import math
import shlex
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.twin.waveblock import decode_block, encode_block

I32 = npt.NDArray[np.int32]
DAY_SECONDS = 86_400
OVERHEAD_PER_BLOCK = 12 + 16 + 60  # AES-GCM nonce + tag, SQLite row
ECG_RATE = 500
PLETH_RATE = 75
TARGET_MB = 40.0


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[I32], bytes]
    decode: Callable[[bytes, int], I32]
    fits: Callable[[I32], bool] = lambda x: True


def _is_int16(x: I32) -> bool:
    return x.size == 0 or bool(x.min() >= -32768 and x.max() <= 32767)


def _fits16(x: I32) -> bool:
    """Whether 2 bytes hold the block, as int16 or as uint16 (DF7 pleth)."""
    return _is_int16(x) or bool(x.min() >= 0 and x.max() <= 65535)


def zlib_raw16() -> Codec:
    def enc(x: I32) -> bytes:
        dt = np.dtype("<i2") if _is_int16(x) else np.dtype("<u2")
        return bytes([dt.kind == "u"]) + zlib.compress(x.astype(dt).tobytes(), 6)

    def dec(b: bytes, n: int) -> I32:
        dt = np.dtype("<u2") if b[0] else np.dtype("<i2")
        return np.frombuffer(zlib.decompress(b[1:]), dtype=dt).astype(np.int32)

    return Codec("zlib(raw16)", enc, dec, _fits16)


def _shuffle(u: npt.NDArray[np.unsignedinteger[Any]]) -> bytes:
    return u.view(np.uint8).reshape(-1, u.itemsize).T.tobytes()


def _unshuffle(raw: bytes, dt: np.dtype[Any], n: int) -> npt.NDArray[np.uint64]:
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(dt.itemsize, n)
    return planes.T.copy().view(dt).ravel().astype(np.uint64)


WIDTHS: list[np.dtype[np.unsignedinteger[Any]]] = [
    np.dtype("<u1"),
    np.dtype("<u2"),
    np.dtype("<u4"),
    np.dtype("<u8"),
]


def delta_codec(order: int, name: str, compress: Callable[[bytes], bytes],
                decompress: Callable[[bytes], bytes]) -> Codec:  # fmt: skip
    def enc(x: I32) -> bytes:
        head = x[:order].astype("<i4").tobytes()
        e = np.diff(x.astype(np.int64), n=order).astype(np.int64)
        u = ((e << 1) ^ (e >> 63)).astype(np.uint64)
        top = int(u.max()) if u.size else 0
        w = next(i for i, dt in enumerate(WIDTHS) if top <= np.iinfo(dt).max)
        return bytes([w]) + head + compress(_shuffle(u.astype(WIDTHS[w])))

    def dec(b: bytes, n: int) -> I32:
        dt = WIDTHS[b[0]]
        k = min(order, n)
        head = np.frombuffer(b[1 : 1 + 4 * k], dtype="<i4").astype(np.int64)
        u = _unshuffle(decompress(b[1 + 4 * k :]), dt, max(n - order, 0))
        e = (u >> np.uint64(1)).astype(np.int64) ^ -((u & np.uint64(1)).astype(np.int64))
        if order == 1 and n > 1:
            return np.concatenate((head, head[0] + np.cumsum(e))).astype(np.int32)
        if order == 2 and n > 2:
            d1 = np.concatenate(([head[1] - head[0]], (head[1] - head[0]) + np.cumsum(e)))
            return np.concatenate((head[:1], head[0] + np.cumsum(d1))).astype(np.int32)
        return head.astype(np.int32)

    return Codec(name, enc, dec)


def zstd_codecs() -> list[Codec]:
    try:
        import zstandard
    except ImportError:
        print("zstandard not installed: zstd rows skipped", file=sys.stderr)
        return []
    out = []
    for level in (3, 19):
        c = zstandard.ZstdCompressor(level=level)
        d = zstandard.ZstdDecompressor()
        out.append(delta_codec(2, f"d2+zz+zstd{level}", c.compress, d.decompress))
    return out


def flac_codec() -> list[Codec]:
    try:
        import soundfile  # type: ignore[import-untyped]
    except (ImportError, OSError):
        print("soundfile/libsndfile not available: FLAC row skipped", file=sys.stderr)
        return []

    def enc(x: I32) -> bytes:
        shift = 0 if _is_int16(x) else 32768
        buf = io.BytesIO()
        data = (x.astype(np.int64) - shift).astype(np.int16)
        soundfile.write(buf, data, 500, format="FLAC", subtype="PCM_16")
        return bytes([shift > 0]) + buf.getvalue()

    def dec(b: bytes, n: int) -> I32:
        data, _ = soundfile.read(io.BytesIO(b[1:]), dtype="int16", always_2d=False)
        return (np.asarray(data, dtype=np.int32) + (32768 if b[0] else 0)).astype(np.int32)

    return [Codec("flac", enc, dec, _fits16)]


def candidates() -> list[Codec]:
    return [
        zlib_raw16(),
        delta_codec(1, "d1+zz+zlib", lambda b: zlib.compress(b, 6), zlib.decompress),
        delta_codec(2, "d2+zz+zlib", lambda b: zlib.compress(b, 6), zlib.decompress),
        *zstd_codecs(),
        *flac_codec(),
        Codec("waveblock", encode_block, lambda b, n: decode_block(b)),
    ]


# --------------------------------------------------------------------------- data sets


@dataclass
class Dataset:
    name: str
    rate: int  # the gateway's rate for this kind of stream, for the MB/day projection
    blocks: list[I32] = field(default_factory=list)


def wfdb_signals(folder: Path) -> Iterator[tuple[str, float, I32]]:
    import wfdb  # type: ignore[import-untyped]

    for hea in sorted(folder.glob("*.hea")):
        rec = wfdb.rdrecord(str(hea.with_suffix("")), physical=False)
        assert rec.d_signal is not None
        for ch, lead in enumerate(rec.sig_name):
            yield f"{rec.record_name}/{lead}", float(rec.fs), rec.d_signal[:, ch].astype(np.int32)


def split(x: I32, fs: float, seconds: int, stride: int = 1) -> list[I32]:
    size = round(fs * seconds)
    return [x[i : i + size] for i in range(0, x.size - size + 1, size * stride)]


def ecg_datasets(data: Path, seconds: int, stride: int, seed: int) -> list[Dataset]:
    from scipy.signal import resample_poly  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed)
    native = Dataset("mitdb 360 Hz", ECG_RATE)
    up = Dataset("mitdb->500 Hz", ECG_RATE)
    up4 = Dataset("mitdb->500 Hz x4+n", ECG_RATE)
    for _, fs, x in wfdb_signals(data / "mitdb"):
        native.blocks += split(x, fs, seconds, stride)
        y: npt.NDArray[np.float64] = resample_poly(x.astype(np.float64), 25, 18)
        up.blocks += split(np.round(y).astype(np.int32), 500, seconds, stride)
        base = float(np.median(x))
        y4: npt.NDArray[np.float64] = resample_poly((x - base).astype(np.float64) * 4, 25, 18)
        y4 = np.round(y4 + rng.normal(0.0, 1.0, y4.size))
        up4.blocks += split(np.clip(y4, -32768.0, 32767.0).astype(np.int32), 500, seconds, stride)
    vf = Dataset("vfdb 250 Hz", ECG_RATE)
    for _, fs, x in wfdb_signals(data / "vfdb"):
        vf.blocks += split(x, fs, seconds, stride)
    return [native, up, up4, vf]


def pleth(hours: float, full_scale: int, seed: int) -> I32:
    """Synthetic pleth at 75 Hz (see the module docstring for the model)."""
    rng = np.random.default_rng(seed)
    n = round(hours * 3600 * PLETH_RATE)
    t = np.arange(n) / PLETH_RATE
    resp = 2 * math.pi * t / 4.5
    hr = 75 + 8 * np.sin(2 * math.pi * t / 600) + 3 * np.sin(resp)
    phase = np.cumsum(hr / 60 / PLETH_RATE) % 1.0
    shape = np.exp(-(((phase - 0.2) / 0.07) ** 2)) + 0.35 * np.exp(-(((phase - 0.5) / 0.08) ** 2))
    shape = shape * (1 + 0.1 * np.sin(resp)) + 0.05 * np.sin(resp + 1.0)
    shape += rng.normal(0.0, 0.001, n)
    scaled: npt.NDArray[np.float64] = np.round(full_scale * (0.25 + 0.5 * shape))
    return np.clip(scaled, 0.0, float(full_scale)).astype(np.int32)


def pleth_datasets(hours: float, seconds: int, seed: int) -> list[Dataset]:
    out = []
    for name, full in (("pleth DF7 75 Hz", 65535), ("pleth DF2 75 Hz", 255)):
        blocks = split(pleth(hours, full, seed), PLETH_RATE, seconds)
        out.append(Dataset(name, PLETH_RATE, blocks))
    return out


# --------------------------------------------------------------------------- measure


@dataclass
class Result:
    dataset: str
    codec: str
    samples: int
    coded: int
    encode_s: float
    decode_s: float
    rate: int
    block_seconds: int

    @property
    def bytes_per_sample(self) -> float:
        return self.coded / self.samples

    @property
    def ratio(self) -> float:
        return 2 * self.samples / self.coded

    def mb_per_day(self, rate: int | None = None) -> float:
        r = rate or self.rate
        blocks = DAY_SECONDS / self.block_seconds
        return (self.bytes_per_sample * r * DAY_SECONDS + blocks * OVERHEAD_PER_BLOCK) / 1e6


def measure(ds: Dataset, codec: Codec, block_seconds: int) -> Result | None:
    if not all(codec.fits(b) for b in ds.blocks):
        return None
    t0 = time.process_time()
    blobs = [codec.encode(b) for b in ds.blocks]
    t1 = time.process_time()
    decoded = [codec.decode(blob, b.size) for blob, b in zip(blobs, ds.blocks, strict=True)]
    t2 = time.process_time()
    for i, (got, want) in enumerate(zip(decoded, ds.blocks, strict=True)):
        if not np.array_equal(got, want):
            raise SystemExit(f"{codec.name}: block {i} of {ds.name} does not round-trip")
    samples = sum(b.size for b in ds.blocks)
    coded = sum(map(len, blobs))
    return Result(ds.name, codec.name, samples, coded, t1 - t0, t2 - t1, ds.rate, block_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with mitdb/ and vfdb/")
    parser.add_argument("--stride", type=int, default=1, help="use every Nth ECG block")
    parser.add_argument("--pleth-hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--block-seconds", type=int, default=10, help="seconds per block")
    args = parser.parse_args(argv)
    for sub in ("mitdb", "vfdb"):
        if not (args.data / sub).is_dir():
            parser.error(f"{args.data / sub} not found: --data must hold mitdb/ and vfdb/")

    argv_shown = sys.argv[1:] if argv is None else argv
    print("command: .venv/bin/python bench/waveblock.py " + shlex.join(argv_shown))
    seconds = args.block_seconds
    datasets = ecg_datasets(args.data, seconds, args.stride, args.seed)
    datasets += pleth_datasets(args.pleth_hours, seconds, args.seed)
    codecs = candidates()

    results: dict[tuple[str, str], Result] = {}
    head = (
        f"| {'data set':<19} | {'scheme':<13} | {'ratio':>5} | {'B/sample':>8} "
        f"| {'enc MB/s':>8} | {'dec MB/s':>8} | {'MB/day':>6} |"
    )
    print()
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for ds in datasets:
        for codec in codecs:
            res = measure(ds, codec, seconds)
            if res is None:
                continue
            results[ds.name, codec.name] = res
            raw_mb = 2 * res.samples / 1e6
            print(
                f"| {ds.name:<19} | {codec.name:<13} | {res.ratio:5.2f} "
                f"| {res.bytes_per_sample:8.3f} | {raw_mb / res.encode_s:8.1f} "
                f"| {raw_mb / res.decode_s:8.1f} | {res.mb_per_day():6.1f} |"
            )
    blocks = {ds.name: (len(ds.blocks), sum(b.size for b in ds.blocks)) for ds in datasets}
    print()
    print("blocks (samples): " + ", ".join(f"{k} {n} ({s})" for k, (n, s) in blocks.items()))

    print()
    print(
        f"Bed-day projection: 1 ECG lead at {ECG_RATE} Hz + pleth DF7 at {PLETH_RATE} Hz, "
        f"{seconds}-s blocks, {OVERHEAD_PER_BLOCK} B overhead per block; "
        f"target {TARGET_MB:.0f} MB"
    )
    print()
    print("| scheme        | ECG as mitdb->500 Hz | ECG as mitdb->500 Hz x4+n |")
    print("|---------------|----------------------|---------------------------|")
    for codec in codecs:
        cells = []
        for ecg in ("mitdb->500 Hz", "mitdb->500 Hz x4+n"):
            e, p = results.get((ecg, codec.name)), results.get(("pleth DF7 75 Hz", codec.name))
            if e is None or p is None:
                cells.append("n/a")
                continue
            total = e.mb_per_day() + p.mb_per_day()
            verdict = "ok" if total <= TARGET_MB else "OVER"
            cells.append(f"{total:5.1f} MB ({verdict})")
        print(f"| {codec.name:<13} | {cells[0]:<20} | {cells[1]:<25} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
