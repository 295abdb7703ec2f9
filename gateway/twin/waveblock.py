"""Lossless codec for blocks of integer waveform samples (one signal, e.g. 10 s of ECG).

Pure: bytes in, samples out, no I/O. The store encrypts the blob this module returns; the
codec only makes it small and self-describing.

Scheme, chosen by measurement (``bench/waveblock.py`` prints the comparison): a fixed
polynomial predictor (order 0 to 3, picked per block, as in FLAC's "fixed" subframes) whose
residuals are zigzag-mapped and Rice-coded in partitions of 256 samples, each partition with
its own Rice parameter. Numpy and stdlib only. On 10-s blocks of MIT-BIH ECG (360 Hz, and
resampled to 500 Hz) it is as small as zstandard level 19 and FLAC and 3-11 % smaller than
second difference + zigzag + zlib; on 16-bit ECG FLAC's LPC is about 2 % smaller. A block
where Rice coding does not pay (noise, very short blocks) is stored raw in the narrowest
width that holds its range.

Blob layout (all integers little-endian)::

    byte 0        format version << 4 | scheme (version 1; scheme 0 = RAW, 1 = RICE)
    bytes 1..4    sample count n (uint32)
    ...           scheme payload
    last 4 bytes  CRC-32 of every byte before it

    RAW payload   width w (1 byte: 1, 2 or 4) | base (int32) | n values of w bytes, unsigned,
                  sample = base + value
    RICE payload  order p (1 byte, 0..3, p <= n) | p warm-up residuals (zigzag LEB128) |
                  one Rice parameter byte per partition of the n - p coded residuals
                  (0..35, or 0xFF: every residual in the partition is zero, no bits) |
                  remainder bits (k per residual, MSB first, whole partitions in order,
                  zero-padded to a byte) | unary quotients (q zeros then a one per residual,
                  zero-padded to a byte)

The residuals are ``e = D^p x`` where ``D`` is the first difference with a zero before the
first sample, so decoding is ``p`` cumulative sums. Quotients and remainders are kept in two
bit streams so that both directions are vectorised numpy (no per-sample Python loop).

``decode_block`` checks the CRC first and then every structural rule (canonical padding, no
trailing bytes, bounded residuals, result inside int32) and raises :class:`WaveblockError`
naming what is wrong; it raises no other exception type for any input bytes.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FORMAT_VERSION",
    "MAX_SAMPLES",
    "Block",
    "Scheme",
    "WaveblockError",
    "block_scheme",
    "decode_block",
    "encode_block",
]

#: Version written in the high nibble of byte 0; a decoder refuses any other.
FORMAT_VERSION: Final = 1
#: Most samples one block may hold (about 9 h at 500 Hz); bounds what a blob can expand to.
MAX_SAMPLES: Final = 1 << 24
#: Residuals per Rice partition (one parameter byte each).
PARTITION: Final = 256
#: Highest predictor order tried.
MAX_ORDER: Final = 3

_INT32_MIN: Final = -(1 << 31)
_INT32_MAX: Final = (1 << 31) - 1
#: |D^p x| <= 2**(31 + p) for int32 x and p <= 3; zigzag maps that to at most 2**35.
_RESIDUAL_MAX: Final = 1 << (31 + MAX_ORDER)
_ZIGZAG_MAX: Final = 1 << (32 + MAX_ORDER)
_MAX_K: Final = 32 + MAX_ORDER
_ZERO_PARTITION: Final = 0xFF
_MAX_VARINT_BYTES: Final = 6  # 7 bits each: 42 bits >= 36

_HEAD = struct.Struct("<BI")  # version/scheme, count
_RAW_HEAD = struct.Struct("<Bi")  # width, base
_CRC = struct.Struct("<I")
_RAW_WIDTHS: Final[dict[int, np.dtype[np.unsignedinteger[Any]]]] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u2"),
    4: np.dtype("<u4"),
}


class WaveblockError(ValueError):
    """A blob is not a valid waveblock, or samples cannot be encoded as one."""


class Scheme(enum.IntEnum):
    """How a block's payload is coded (low nibble of byte 0)."""

    RAW = 0
    RICE = 1


@dataclass(frozen=True, eq=False)
class Block:
    """One block of consecutive integer samples of one signal.

    ``samples`` is a read-only 1-D int32 array: ECG ADC counts (int16 or int24 range), Nonin
    DF7 pleth (0..65535), DF2 pleth (0..255), or anything else inside int32. Construct with
    any 1-D integer array whose values fit int32; it is copied and frozen.
    """

    samples: npt.NDArray[np.int32]

    def __post_init__(self) -> None:
        frozen = _as_int64(self.samples).astype(np.int32)
        frozen.setflags(write=False)
        object.__setattr__(self, "samples", frozen)

    def encode(self) -> bytes:
        """The blob for this block (see :func:`encode_block`)."""
        return encode_block(self.samples)

    @classmethod
    def decode(cls, blob: bytes) -> Block:
        """The block a blob holds (see :func:`decode_block`)."""
        return cls(decode_block(blob))

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Block):
            return NotImplemented
        return bool(np.array_equal(self.samples, other.samples))


# --------------------------------------------------------------------------- encode


def encode_block(samples: npt.NDArray[np.integer[Any]]) -> bytes:
    """Losslessly encode a 1-D integer array whose values fit int32.

    Returns a self-describing blob (version/scheme byte, count, payload, CRC-32) that
    :func:`decode_block` turns back into exactly the same values as int32. The smaller of the
    Rice and raw codings is kept, so the blob is never more than 14 bytes above 4 bytes per
    sample and at most 14 bytes above the narrowest raw width of the block's range.

    Raises :class:`WaveblockError` if ``samples`` is not 1-D, not of an integer dtype, has a
    value outside int32, or holds more than :data:`MAX_SAMPLES` samples.
    """
    x = _as_int64(samples)
    best = _encode_raw(x)
    if x.shape[0] >= 2:
        rice = _encode_rice(x)
        if len(rice) < len(best):
            best = rice
    return best + _CRC.pack(zlib.crc32(best))


def _as_int64(samples: object) -> npt.NDArray[np.int64]:
    arr = np.asarray(samples)
    if arr.dtype.kind not in "iu":
        raise WaveblockError(f"waveblock samples must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise WaveblockError(f"waveblock samples must be 1-D, got shape {arr.shape}")
    if arr.shape[0] > MAX_SAMPLES:
        raise WaveblockError(
            f"waveblock holds at most {MAX_SAMPLES} samples, got {arr.shape[0]}; split it"
        )
    if arr.shape[0]:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < _INT32_MIN or hi > _INT32_MAX:
            raise WaveblockError(f"waveblock samples must fit int32, got range {lo}..{hi}")
    return arr.astype(np.int64)


def _head(scheme: Scheme, count: int) -> bytes:
    return _HEAD.pack(FORMAT_VERSION << 4 | scheme, count)


def _encode_raw(x: npt.NDArray[np.int64]) -> bytes:
    n = x.shape[0]
    base = int(x.min()) if n else 0
    span = int(x.max()) - base if n else 0
    width = next(w for w in (1, 2, 4) if span < 1 << (8 * w))
    values = (x - base).astype(_RAW_WIDTHS[width])
    return _head(Scheme.RAW, n) + _RAW_HEAD.pack(width, base) + values.tobytes()


def _difference(e: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """First difference with a zero before the first sample: ``D e``, same length."""
    out = np.empty_like(e)
    out[:1] = e[:1]
    np.subtract(e[1:], e[:-1], out=out[1:])
    return out


def _encode_rice(x: npt.NDArray[np.int64]) -> bytes:
    n = x.shape[0]
    # Pick the predictor order whose residuals have the least absolute sum (FLAC's rule).
    best_order, best_e, best_cost, e = 0, x, -1, x
    for order in range(min(MAX_ORDER, n) + 1):
        if order:
            e = _difference(e)
        cost = int(np.abs(e[order:]).sum())
        if best_cost < 0 or cost < best_cost:
            best_order, best_e, best_cost = order, e, cost
    order, e = best_order, best_e

    warm = b"".join(_varint(int(v)) for v in _zigzag(e[:order]))
    u = _zigzag(e[order:])
    m = u.shape[0]
    starts = np.arange(0, m, PARTITION)
    lens = np.diff(np.append(starts, m))
    ks = _rice_parameters(u, starts, lens)

    coded_part = ks != _ZERO_PARTITION
    per_sample_k = np.repeat(ks, lens)
    coded = np.repeat(coded_part, lens)
    uc = u[coded]
    kc = per_sample_k[coded].astype(np.uint64)
    q = uc >> kc
    r = uc & ((np.uint64(1) << kc) - np.uint64(1))

    return b"".join(
        (
            _head(Scheme.RICE, n),
            bytes((order,)),
            warm,
            ks.astype(np.uint8).tobytes(),
            _pack_fixed(r, kc.astype(np.int64)),
            _pack_unary(q),
        )
    )


def _rice_parameters(
    u: npt.NDArray[np.uint64], starts: npt.NDArray[np.intp], lens: npt.NDArray[np.intp]
) -> npt.NDArray[np.int64]:
    """Best Rice parameter per partition among three near log2(mean); 0xFF when all zero."""
    if u.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    sums = np.add.reduceat(u, starts)
    mean = sums.astype(np.float64) / lens
    with np.errstate(divide="ignore"):
        centre = np.floor(np.log2(np.maximum(mean, 1.0))).astype(np.int64)
    best_k = np.zeros(starts.shape[0], dtype=np.int64)
    best_bits = np.full(starts.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
    for delta in (-1, 0, 1):
        k = np.clip(centre + delta, 0, _MAX_K)
        quot = np.add.reduceat(u >> np.repeat(k, lens).astype(np.uint64), starts)
        bits = quot.astype(np.int64) + lens * (k + 1)
        better = bits < best_bits
        best_k[better] = k[better]
        best_bits[better] = bits[better]
    best_k[sums == 0] = _ZERO_PARTITION
    return best_k


def _zigzag(e: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    return ((e << 1) ^ (e >> 63)).astype(np.uint64)


def _unzigzag(u: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    return (u >> np.uint64(1)).astype(np.int64) ^ -((u & np.uint64(1)).astype(np.int64))


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pack_fixed(values: npt.NDArray[np.uint64], widths: npt.NDArray[np.int64]) -> bytes:
    """Each value in its own width of bits, MSB first, concatenated and zero-padded."""
    total = int(widths.sum())
    if total == 0:
        return b""
    which = np.repeat(np.arange(values.shape[0]), widths)
    offsets = np.cumsum(widths) - widths
    position = np.arange(total) - np.repeat(offsets, widths)
    shift = (np.repeat(widths, widths) - 1 - position).astype(np.uint64)
    bits = ((values[which] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes()


def _pack_unary(q: npt.NDArray[np.uint64]) -> bytes:
    """``q`` zero bits then a one bit per quotient, concatenated and zero-padded."""
    if q.shape[0] == 0:
        return b""
    ones = np.cumsum(q.astype(np.int64) + 1) - 1
    bits = np.zeros(int(ones[-1]) + 1, dtype=np.uint8)
    bits[ones] = 1
    return np.packbits(bits).tobytes()


# --------------------------------------------------------------------------- decode


def decode_block(blob: bytes) -> npt.NDArray[np.int32]:
    """The exact int32 samples a blob from :func:`encode_block` holds.

    Raises :class:`WaveblockError` with a message naming the fault for any blob that is
    truncated, corrupt, of another format version, or otherwise not a valid waveblock.
    """
    data = bytes(blob)
    try:
        return _decode(data)
    except WaveblockError:
        raise
    except (ValueError, IndexError, OverflowError, struct.error) as exc:  # pragma: no cover
        # Every rule is checked explicitly above this; this only keeps the promise that
        # nothing but WaveblockError escapes if a check was missed.
        raise WaveblockError(f"corrupt waveblock ({len(data)} bytes): {exc}") from exc


def block_scheme(blob: bytes) -> Scheme:
    """The scheme a valid blob was coded with (checks the CRC and version, not the payload)."""
    return _open(bytes(blob))[0]


def _open(data: bytes) -> tuple[Scheme, int, bytes]:
    """Check CRC, version and count; return scheme, count and the payload."""
    minimum = _HEAD.size + _CRC.size
    if len(data) < minimum:
        raise WaveblockError(
            f"waveblock truncated: {len(data)} bytes, a block is at least {minimum}"
        )
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise WaveblockError(
            f"waveblock checksum mismatch ({len(data)} bytes): corrupt or truncated"
        )
    tag, count = _HEAD.unpack_from(body)
    version, scheme = tag >> 4, tag & 0x0F
    if version != FORMAT_VERSION:
        raise WaveblockError(
            f"waveblock format version {version} is not supported "
            f"(this gateway reads version {FORMAT_VERSION})"
        )
    if scheme not in Scheme._value2member_map_:
        raise WaveblockError(f"waveblock scheme {scheme} is unknown")
    if count > MAX_SAMPLES:
        raise WaveblockError(f"waveblock claims {count} samples, more than {MAX_SAMPLES}")
    return Scheme(scheme), count, body[_HEAD.size :]


def _decode(data: bytes) -> npt.NDArray[np.int32]:
    scheme, count, payload = _open(data)
    if scheme is Scheme.RAW:
        return _decode_raw(count, payload)
    return _decode_rice(count, payload)


def _decode_raw(n: int, payload: bytes) -> npt.NDArray[np.int32]:
    if len(payload) < _RAW_HEAD.size:
        raise WaveblockError("raw waveblock truncated: no width/base header")
    width, base = _RAW_HEAD.unpack_from(payload)
    if width not in _RAW_WIDTHS:
        raise WaveblockError(f"raw waveblock width {width} is not 1, 2 or 4")
    values = payload[_RAW_HEAD.size :]
    if len(values) != n * width:
        raise WaveblockError(
            f"raw waveblock holds {len(values)} value bytes, expected {n} x {width}"
        )
    x = np.frombuffer(values, dtype=_RAW_WIDTHS[width]).astype(np.int64) + base
    return _to_int32(x)


def _decode_rice(n: int, payload: bytes) -> npt.NDArray[np.int32]:
    if not payload:
        raise WaveblockError("rice waveblock truncated: no predictor order")
    order, pos = payload[0], 1
    if order > MAX_ORDER or order > n:
        raise WaveblockError(f"rice waveblock predictor order {order} invalid for {n} samples")
    warm = np.zeros(order, dtype=np.uint64)
    for i in range(order):
        value, pos = _read_varint(payload, pos)
        warm[i] = value

    m = n - order
    starts = np.arange(0, m, PARTITION)
    lens = np.diff(np.append(starts, m))
    nparts = starts.shape[0]
    if len(payload) < pos + nparts:
        raise WaveblockError("rice waveblock truncated in its partition parameters")
    ks = np.frombuffer(payload, dtype=np.uint8, count=nparts, offset=pos).astype(np.int64)
    pos += nparts
    coded_part = ks != _ZERO_PARTITION
    if np.any(ks[coded_part] > _MAX_K):
        raise WaveblockError(f"rice waveblock has a Rice parameter above {_MAX_K}")

    per_sample_k = np.repeat(np.where(coded_part, ks, 0), lens)
    coded = np.repeat(coded_part, lens)
    kc = per_sample_k[coded]
    mc = kc.shape[0]

    rem_bits = int(kc.sum())
    rem_len = (rem_bits + 7) // 8
    if len(payload) < pos + rem_len:
        raise WaveblockError("rice waveblock truncated in its remainder bits")
    r = _unpack_fixed(payload[pos : pos + rem_len], kc, rem_bits)
    q = _unpack_unary(payload[pos + rem_len :], mc)

    limit = (np.uint64(_ZIGZAG_MAX) >> kc.astype(np.uint64)) if mc else np.zeros(0, np.uint64)
    if np.any(q > limit):
        raise WaveblockError("rice waveblock residual out of range")
    u = np.zeros(m, dtype=np.uint64)
    u[coded] = (q << kc.astype(np.uint64)) | r

    x = _unzigzag(np.concatenate((warm, u)))
    for _ in range(order):
        x = np.cumsum(x)
        # Legit partial sums are differences of int32 data: far inside int64. Stopping
        # here keeps a crafted blob from wrapping around int64 into plausible values.
        if x.shape[0] and int(np.abs(x).max()) > _RESIDUAL_MAX:
            raise WaveblockError("rice waveblock integrates out of range")
    return _to_int32(x)


def _read_varint(payload: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(payload):
            raise WaveblockError("rice waveblock truncated in its warm-up samples")
        byte = payload[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value > _ZIGZAG_MAX:
                raise WaveblockError("rice waveblock warm-up residual out of range")
            return value, pos + i + 1
    raise WaveblockError("rice waveblock warm-up residual is not a valid varint")


def _unpack_fixed(raw: bytes, widths: npt.NDArray[np.int64], total: int) -> npt.NDArray[np.uint64]:
    out = np.zeros(widths.shape[0], dtype=np.uint64)
    if total == 0:
        return out
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[total:].any():
        raise WaveblockError("rice waveblock remainder padding is not zero")
    bits = bits[:total]
    has_bits = widths > 0
    w = widths[has_bits]
    offsets = np.cumsum(w) - w
    position = np.arange(total) - np.repeat(offsets, w)
    shift = (np.repeat(w, w) - 1 - position).astype(np.uint64)
    out[has_bits] = np.add.reduceat(bits.astype(np.uint64) << shift, offsets)
    return out


def _unpack_unary(raw: bytes, count: int) -> npt.NDArray[np.uint64]:
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    ones = np.flatnonzero(bits)
    if ones.shape[0] != count:
        raise WaveblockError(
            f"rice waveblock quotient stream holds {ones.shape[0]} codes, expected {count}"
        )
    expected_len = int(ones[-1]) // 8 + 1 if count else 0
    if len(raw) != expected_len:
        raise WaveblockError(
            f"rice waveblock has {len(raw) - expected_len} bytes after its last code"
        )
    return (np.diff(ones, prepend=-1) - 1).astype(np.uint64)


def _to_int32(x: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    if x.shape[0] and (int(x.min()) < _INT32_MIN or int(x.max()) > _INT32_MAX):
        raise WaveblockError("waveblock decodes to values outside int32")
    return x.astype(np.int32)
