"""Decode throughput of every serial codec, and its cost at the device's real byte rate.

For each codec: a stream of valid packets built by the driver's own encoder from its
simulator's ``normal`` scenario, with a burst of line noise every 10 s (as on a real
cable), is fed in chunks the size a serial read returns, through the codec alone and
through the whole device model (``SPEC.make_model`` + ``on_connect`` + ``feed``: codec plus
mapping to readings). Reported per codec: MB/s, frames/s, the device's real byte rate and
the share of one core that rate costs. A reference loop that only touches every byte runs
in the same invocation, so figures can be compared across machines as a ratio.

Codecs: Nonin DF7, DF2 and DF8, Contec CMS50 (legacy live), Masimo ASCII 1, OpenBCI Cyton.
"Frames" are what each codec counts: Nonin 5-byte (DF2/DF7) or 4-byte (DF8) frames, Contec
packets, Masimo lines, Cyton packets.

    .venv/bin/python bench/serial_codecs.py [--seconds-of-traffic N] [--repeat R]
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel

from drivers.device import SerialDeviceModel
from drivers.oximetry import contec, masimo, nonin
from drivers.readings import CodecCounters
from drivers.registry import DriverSpec
from drivers.simulate.contec import ContecScenario
from drivers.simulate.masimo import DEFAULT_START, MasimoScenario
from drivers.simulate.nonin import NoninScenario

#: Bytes a serial read hands the codec in this benchmark.
READ_SIZE = 64
#: One burst of this many random bytes every NOISE_PERIOD_S of traffic, between packets.
NOISE_BYTES = 16
NOISE_PERIOD_S = 10
#: Share of one core each codec may cost at its device's real rate (issue 4).
TARGET_CORE_PERCENT = 0.1

T = TypeVar("T")


class Codec(Protocol):
    """What the benchmark needs of a bare codec."""

    counters: CodecCounters

    def feed(self, data: bytes) -> Sequence[object]: ...


@dataclass(frozen=True)
class Case:
    name: str
    stream: bytes
    chunk: int
    device_bytes_per_second: float
    #: How the device's real byte rate is made up, for the notes under the table.
    rate_note: str
    #: Frames of the encoded traffic (noise excluded) and the range the codec may decode:
    #: a codec without checksum can forge a frame out of noise, or lose one to it.
    intact_frames: int
    frames_range: tuple[int, int]
    run_codec: Callable[[bytes, int], int]
    run_model: Callable[[bytes, int], int]


def noise(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(NOISE_BYTES))


def present(value: T | None) -> T:
    """A scenario step's packet, frame or line (``normal`` never unplugs)."""
    if value is None:
        raise RuntimeError("the normal scenario sent nothing in a step")
    return value


def build_case(
    name: str,
    units: Sequence[bytes],
    units_per_burst: int,
    rng: random.Random,
    *,
    device_bytes_per_second: float,
    rate_note: str,
    intact_frames: int,
    slack_per_burst: tuple[int, int],
    make_codec: Callable[[], Codec],
    spec: DriverSpec,
    settings: BaseModel,
    start_time: float = 0.0,
) -> Case:
    """A case from the encoded traffic ``units`` (each one write of the device), with a
    noise burst after every ``units_per_burst`` of them.

    ``slack_per_burst`` is (frames a burst may cost, frames a burst may forge). The model
    is fed the wall time at which each read's last device byte arrives at the device's
    real rate from ``start_time``; noise takes no time (it corrupts the line, it does not
    lengthen it), so timing-sensitive models (Cyton timeline, Masimo clock skew) see a
    true clock whatever the traffic length.
    """
    parts: list[bytes] = []
    burst_at: list[int] = []  # stream offset of each noise burst
    offset = 0
    for i, unit in enumerate(units):
        parts.append(unit)
        offset += len(unit)
        if i % units_per_burst == units_per_burst - 1:
            burst_at.append(offset)
            parts.append(noise(rng))
            offset += NOISE_BYTES
    stream = b"".join(parts)

    def device_bytes_before(end: int) -> int:
        k = bisect.bisect_right(burst_at, end) - 1
        if k < 0:
            return end
        return end - k * NOISE_BYTES - min(end - burst_at[k], NOISE_BYTES)

    # The read schedule is fixed (READ_SIZE), so its clock is computed outside the timing.
    read_times = [
        start_time + device_bytes_before(min(i + READ_SIZE, len(stream))) / device_bytes_per_second
        for i in range(0, len(stream), READ_SIZE)
    ]

    def run_codec(data: bytes, chunk: int) -> int:
        codec = make_codec()
        for i in range(0, len(data), chunk):
            codec.feed(data[i : i + chunk])
        return codec.counters.frames_decoded

    def run_model(data: bytes, chunk: int) -> int:
        if chunk != READ_SIZE:
            raise ValueError(f"the model's clock is laid out for {READ_SIZE}-byte reads")
        model: SerialDeviceModel = spec.make_model("bench", settings)
        model.on_connect(start_time)
        for i, now in zip(range(0, len(data), chunk), read_times, strict=True):
            model.feed(data[i : i + chunk], now)
        return model.counters.frames_decoded

    lose, forge = slack_per_burst
    bursts = len(burst_at)
    return Case(
        name,
        stream,
        chunk=READ_SIZE,
        device_bytes_per_second=device_bytes_per_second,
        rate_note=rate_note,
        intact_frames=intact_frames,
        frames_range=(intact_frames - lose * bursts, intact_frames + forge * bursts),
        run_codec=run_codec,
        run_model=run_model,
    )


def nonin_case(data_format: nonin.PacketFormat, seconds: int, rng: random.Random) -> Case:
    scenario = NoninScenario("normal", data_format=data_format, seed=1)
    packets = round(seconds / nonin.PACKET_PERIOD_S)
    units = [
        nonin.encode_packet(present(scenario.step().packet), data_format) for _ in range(packets)
    ]
    rate = nonin.FRAME_LEN * nonin.FRAME_RATE_HZ
    return build_case(
        f"nonin DF{data_format}",
        units,
        round(NOISE_PERIOD_S / nonin.PACKET_PERIOD_S),
        rng,
        device_bytes_per_second=rate,
        rate_note=(
            f"{nonin.FRAME_RATE_HZ:.0f} frames/s x {nonin.FRAME_LEN} B = {rate:.0f} B/s "
            "(the 9600 8N1 line could carry 960 B/s)"
        ),
        intact_frames=packets * nonin.FRAMES_PER_PACKET,
        # A packet needs 25 checksummed frames: noise can neither forge nor cost one.
        slack_per_burst=(0, 0),
        make_codec=lambda: nonin.NoninCodec(data_format),
        spec=nonin.SPEC,
        settings=nonin.NoninSettings(data_format=data_format),
    )


def nonin_df8_case(seconds: int, rng: random.Random) -> Case:
    scenario = NoninScenario("normal", data_format=8, seed=1)
    frames = round(seconds / nonin.DF8_FRAME_PERIOD_S)
    units = [nonin.encode_df8(present(scenario.step().frame)) for _ in range(frames)]
    rate = nonin.DF8_FRAME_LEN / nonin.DF8_FRAME_PERIOD_S
    return build_case(
        "nonin DF8",
        units,
        round(NOISE_PERIOD_S / nonin.DF8_FRAME_PERIOD_S),
        rng,
        device_bytes_per_second=rate,
        rate_note=f"1 frame/s x {nonin.DF8_FRAME_LEN} B = {rate:.0f} B/s",
        intact_frames=frames,
        # No checksum: noise between frames may pass as frames, never costs a real one.
        slack_per_burst=(0, NOISE_BYTES // nonin.DF8_FRAME_LEN),
        make_codec=nonin.NoninDf8Codec,
        spec=nonin.SPEC,
        settings=nonin.NoninSettings(data_format=8),
    )


def contec_case(seconds: int, rng: random.Random) -> Case:
    scenario = ContecScenario("normal", seed=1)
    packets = round(seconds * contec.PACKET_RATE_HZ)
    units = [contec.encode_packet(present(scenario.step().packet)) for _ in range(packets)]
    rate = contec.PACKET_LEN * contec.PACKET_RATE_HZ
    return build_case(
        "contec CMS50",
        units,
        round(NOISE_PERIOD_S * contec.PACKET_RATE_HZ),
        rng,
        device_bytes_per_second=rate,
        rate_note=(
            f"{contec.PACKET_RATE_HZ:.0f} packets/s x {contec.PACKET_LEN} B = {rate:.0f} B/s "
            "(the 19200 8O1 line could carry 1745 B/s)"
        ),
        intact_frames=packets,
        # No checksum: noise between packets may pass as packets, never costs a real one.
        slack_per_burst=(0, NOISE_BYTES // contec.PACKET_LEN),
        make_codec=contec.ContecCodec,
        spec=contec.SPEC,
        settings=contec.ContecSettings(),
    )


def masimo_case(seconds: int, rng: random.Random) -> Case:
    scenario = MasimoScenario("normal", seed=1)
    lines = round(seconds / masimo.LINE_PERIOD_S)
    units = [masimo.encode_line(present(scenario.step().line)) for _ in range(lines)]
    line_len = sum(map(len, units)) / len(units)
    rate = line_len / masimo.LINE_PERIOD_S
    return build_case(
        "masimo ASCII 1",
        units,
        round(NOISE_PERIOD_S / masimo.LINE_PERIOD_S),
        rng,
        device_bytes_per_second=rate,
        rate_note=(
            f"1 line/s x {line_len:.0f} B (mean encoded {scenario.variant.value} line, "
            f"CR LF included) = {rate:.0f} B/s"
        ),
        intact_frames=lines,
        # Decoding starts at a line's date: noise before it costs only itself.
        slack_per_burst=(0, 0),
        make_codec=masimo.MasimoCodec,
        spec=masimo.SPEC,
        settings=masimo.MasimoSettings(),
        # The simulated device's clock (device_utc_offset_minutes 0): no clock skew.
        start_time=DEFAULT_START.replace(tzinfo=dt.UTC).timestamp(),
    )


def cyton_case(seconds: int, rng: random.Random) -> Case | str:
    """The OpenBCI Cyton case, or why it could not be built."""
    try:
        from drivers.ecg import openbci
        from drivers.simulate.openbci import PACKETS_PER_STEP, CytonScenario

        settings = openbci.OpenBCISettings()
        scenario = CytonScenario(
            "normal",
            leads=settings.leads,
            gain=settings.gain,
            sample_rate=settings.sample_rate,
            seed=1,
        )
        steps = round(seconds * settings.sample_rate / PACKETS_PER_STEP)
        units = [
            b"".join(openbci.encode_packet(p) for p in scenario.step().packets)
            for _ in range(steps)
        ]
        rate = openbci.PACKET_LEN * settings.sample_rate
        return build_case(
            "openbci cyton",
            units,
            round(NOISE_PERIOD_S * settings.sample_rate / PACKETS_PER_STEP),
            rng,
            device_bytes_per_second=rate,
            rate_note=(
                f"{settings.sample_rate} packets/s x {openbci.PACKET_LEN} B = {rate} B/s "
                "(the 115200 8N1 line could carry 11520 B/s)"
            ),
            intact_frames=steps * PACKETS_PER_STEP,
            # No checksum: a stray 0xA0 in the noise that frames as a packet with the
            # expected sample number takes the real packet's place.
            slack_per_burst=(1, 1),
            make_codec=openbci.CytonCodec,
            spec=openbci.SPEC,
            settings=settings,
        )
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def reference(data: bytes, chunk: int) -> int:
    """Touch every byte once in pure Python: the machine's speed yardstick."""
    total = 0
    for i in range(0, len(data), chunk):
        for b in data[i : i + chunk]:
            total += b
    return total


def best_of(repeat: int, fn: Callable[[bytes, int], int], data: bytes, chunk: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(data, chunk)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-of-traffic", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    seconds = args.seconds_of_traffic
    if seconds < NOISE_PERIOD_S:
        parser.error(f"--seconds-of-traffic must be at least {NOISE_PERIOD_S}")
    rng = random.Random(7)
    cases = [
        nonin_case(7, seconds, rng),
        nonin_case(2, seconds, rng),
        nonin_df8_case(seconds, rng),
        contec_case(seconds, rng),
        masimo_case(seconds, rng),
    ]
    not_measured: dict[str, str] = {}
    cyton = cyton_case(seconds, rng)
    if isinstance(cyton, Case):
        cases.append(cyton)
    else:
        not_measured["openbci cyton"] = cyton

    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print(
        f"traffic: {seconds} s per codec, best of {args.repeat}, {READ_SIZE}-byte reads, "
        f"{NOISE_BYTES} bytes of noise every {NOISE_PERIOD_S} s"
    )
    header = (
        f"{'codec':<14} {'path':<6} {'MB/s':>7} {'frames/s':>10} {'x ref':>6} "
        f"{'device B/s':>10} {'core % at device rate':>22}"
    )
    print(header)
    over: list[str] = []
    for case in cases:
        ref = best_of(args.repeat, reference, case.stream, case.chunk)
        for path, fn in (("codec", case.run_codec), ("model", case.run_model)):
            frames = fn(case.stream, case.chunk)
            low, high = case.frames_range
            assert low <= frames <= high, (case.name, path, frames, case.frames_range)
            elapsed = best_of(args.repeat, fn, case.stream, case.chunk)
            mb_s = len(case.stream) / elapsed / 1e6
            core = case.device_bytes_per_second / (len(case.stream) / elapsed) * 100
            if core >= TARGET_CORE_PERCENT:
                over.append(f"{case.name} {path}")
            print(
                f"{case.name:<14} {path:<6} {mb_s:>7.3f} {frames / elapsed:>10.0f} "
                f"{elapsed / ref:>6.1f} {case.device_bytes_per_second:>10.0f} {core:>21.4f}%"
            )
    print("device rates:")
    for case in cases:
        print(f"  {case.name}: {case.rate_note}")
    for name, reason in not_measured.items():
        print(f"  {name}: not measured; its driver could not be loaded ({reason})")
    verdict = "met by every measured path" if not over else f"missed by {', '.join(over)}"
    print(f"target < {TARGET_CORE_PERCENT} % of one core at the device's rate: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
