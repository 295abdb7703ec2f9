"""The simulated Nonin oximeter: the pure scenario model, then the simulator on a real pty.

Every scenario in DF2/DF7 (25-frame packets every 1/3 s) and DF8 (a 4-byte frame every
second, protocols.md 4a "Data Format 8").

Time only moves through :class:`~drivers.clock.ManualClock`; the pty tests wait for bytes
the kernel is still moving under a bounded timeout, never for time to pass.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterable

import pytest

from drivers import codes, registry
from drivers.clock import ManualClock
from drivers.oximetry.nonin import (
    DF8_FRAME_LEN,
    FRAME_RATE_HZ,
    FRAMES_PER_PACKET,
    PACKET_LEN,
    PACKET_PERIOD_S,
    PLETH_MAX,
    SCENARIOS,
    DataFormat,
    NoninCodec,
    NoninDf8Codec,
    NoninDf8Frame,
    NoninOximeter,
    NoninPacket,
    NoninSettings,
    PacketFormat,
    Status,
    encode_df8,
    encode_packet,
    set_format_command,
)
from drivers.readings import (
    Condition,
    DeviceEvent,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)
from drivers.simulate.nonin import NoninScenario, NoninSimulator, SimStep, desaturation_spo2
from tests.support.ptys import open_driver_end, read_exactly

FORMATS: tuple[PacketFormat, ...] = (2, 7)
ALL_FORMATS: tuple[DataFormat, ...] = (2, 7, 8)
ALARM_BITS = Status.SNSD | Status.ARTF | Status.OOT | Status.SNSA | Status.RPRF


def run(scenario: NoninScenario, seconds: float) -> list[SimStep]:
    return [scenario.step() for _ in range(round(seconds / scenario.period))]


def packets(steps: Iterable[SimStep]) -> list[NoninPacket]:
    return [s.packet for s in steps if s.packet is not None]


def df8_frames(steps: Iterable[SimStep]) -> list[NoninDf8Frame]:
    return [s.frame for s in steps if s.frame is not None]


def during(steps: Iterable[SimStep], start: float, end: float) -> list[SimStep]:
    return [s for s in steps if start <= s.elapsed < end]


def spo2_numerics(readings: Iterable[Reading]) -> list[Numeric]:
    return [r for r in readings if isinstance(r, Numeric) and r.code == codes.SPO2]


# --- scenario model -----------------------------------------------------------------------


def test_every_declared_scenario_exists_and_no_other() -> None:
    assert registry.get("nonin").scenarios == SCENARIOS
    for name in SCENARIOS:
        assert NoninScenario(name).step().elapsed == 0.0
    with pytest.raises(ValueError, match="unknown Nonin scenario"):
        NoninScenario("asystole")
    with pytest.raises(ValueError, match="data format"):
        NoninScenario("normal", data_format=13)  # type: ignore[arg-type]


@pytest.mark.parametrize("data_format", ALL_FORMATS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_bytes(name: str, data_format: DataFormat) -> None:
    def wire(seed: int) -> bytes:
        scenario = NoninScenario(name, data_format=data_format, seed=seed)
        return b"".join(s.wire for s in run(scenario, 30))

    assert wire(11) == wire(11) and wire(11) != wire(12)


def test_steps_advance_one_packet_period_exactly() -> None:
    steps = run(NoninScenario("normal"), 60)
    assert len(steps) == 180
    assert steps[3].elapsed == 1.0 and steps[-1].elapsed == pytest.approx(60 - PACKET_PERIOD_S)


def test_normal_vitals_and_a_pulse_at_the_heart_rate() -> None:
    steps = run(NoninScenario("normal", seed=1), 60)
    got = packets(steps)
    assert all(95 <= p.values.spo2 <= 99 for p in got if p.values.spo2 is not None)
    assert all(66 <= p.values.hr <= 78 for p in got if p.values.hr is not None)
    assert all(not p.status_union & ALARM_BITS for p in got)
    assert {p.values.firmware for p in got} == {0x94}
    # One green-perfusion flash per beat: count their onsets over the minute.
    statuses = [s for p in got for s in p.statuses]
    onsets = sum(1 for a, b in itertools.pairwise(statuses) if b & Status.GPRF > a & Status.GPRF)
    assert 68 <= onsets <= 76
    # The pleth pulses: a real swing over a baseline, 75 samples a second.
    pleth = [x for p in got for x in p.pleth]
    assert max(pleth) > 2 * min(pleth)
    assert len(pleth) == 60 * FRAME_RATE_HZ


def test_desaturation_reaches_86_percent_within_the_stated_time() -> None:
    steps = run(NoninScenario("desaturation", seed=2), 125)
    spo2 = {s.elapsed: s.packet.values.spo2 for s in steps if s.packet is not None}
    assert all(v is not None and v >= 95 for t, v in spo2.items() if t < 20)
    assert min(v for t, v in spo2.items() if t <= 80 and v is not None) <= 86
    assert all(v is not None and v <= 86 for t, v in spo2.items() if 80 <= t < 100)
    assert all(v is not None and v >= 95 for t, v in spo2.items() if t >= 120)
    # Pulse rises with the desaturation.
    hr = {s.elapsed: s.packet.values.hr for s in steps if s.packet is not None}
    assert sum(hr[t] or 0 for t in hr if 85 <= t < 95) > sum(hr[t] or 0 for t in hr if t < 10)


def test_desaturation_trajectory() -> None:
    assert desaturation_spo2(0) == desaturation_spo2(19.9) == 97
    assert desaturation_spo2(50) == pytest.approx(91)
    assert desaturation_spo2(80) == desaturation_spo2(99.9) == 85
    assert desaturation_spo2(120) == desaturation_spo2(0)


def test_probe_off_produces_sensor_off_then_searching_packets() -> None:
    steps = run(NoninScenario("probe_off", seed=3), 120)
    for cycle in (0.0, 60.0):
        off = packets(during(steps, cycle + 30, cycle + 45))
        assert len(off) == 45
        for p in off:
            assert all(s & Status.SNSD for s in p.statuses)
            assert (p.values.hr, p.values.spo2) == (None, None)
            # Sentinels on the wire, as the 4a table says.
            assert (p.frames[0].float_byte & 3, p.frames[1].float_byte) == (3, 0x7F)
            assert p.frames[2].float_byte == 127
        searching = packets(during(steps, cycle + 45, cycle + 49))
        assert searching and all(
            p.status_union & Status.OOT and not p.status_union & Status.SNSD for p in searching
        )
        assert all(p.values.spo2 is None for p in searching)
        assert all(not p.status_union & ALARM_BITS for p in packets(during(steps, cycle, 30)))
        assert all(p.values.spo2 is not None for p in packets(during(steps, cycle + 49, 60)))


def test_noise_costs_only_the_packets_it_hits() -> None:
    steps = run(NoninScenario("noise", seed=4), 60)
    fmt: PacketFormat = 7
    noisy = [s for s in steps if s.packet is not None and len(s.wire) > PACKET_LEN]
    assert len(noisy) == 6  # one burst every 10 s
    assert [round(s.elapsed) for s in noisy] == [10, 20, 30, 40, 50, 60]
    intact = [
        s.packet
        for s in steps
        if s.packet is not None
        and encode_packet(s.packet, fmt) in (s.wire[:PACKET_LEN], s.wire[-PACKET_LEN:])
    ]
    codec = NoninCodec(fmt)
    assert codec.feed(b"".join(s.wire for s in steps)) == intact
    assert len(intact) >= len(steps) - len(noisy)
    assert codec.counters.bytes_dropped >= sum(len(s.wire) - PACKET_LEN for s in noisy)


def test_unplug_cycle() -> None:
    steps = run(NoninScenario("unplug", seed=5), 110)
    plugged = [s.plugged for s in steps]
    assert all(plugged[:120])  # 40 s
    assert not any(plugged[120:165])  # 15 s
    assert all(plugged[165:285])
    assert not any(plugged[285:])
    assert all(s.packet is None and s.wire == b"" for s in steps if not s.plugged)


@pytest.mark.parametrize("data_format", FORMATS)
def test_pleth_uses_the_format_scale(data_format: PacketFormat) -> None:
    scenario = NoninScenario("normal", data_format=data_format, seed=6)
    pleth = [x for p in packets(run(scenario, 5)) for x in p.pleth]
    top = PLETH_MAX[data_format]
    assert min(pleth) >= 0 and top // 2 < max(pleth) <= top


# --- DF8 scenarios (protocols.md 4a "Data Format 8") ---------------------------------------


def df8_scenario(name: str, seed: int = 0) -> NoninScenario:
    return NoninScenario(name, data_format=8, seed=seed)


def test_df8_steps_are_one_four_byte_frame_per_second() -> None:
    scenario = df8_scenario("normal", seed=1)
    assert scenario.period == 1.0
    steps = run(scenario, 60)
    assert len(steps) == 60
    assert [s.elapsed for s in steps] == [float(i) for i in range(60)]
    for step in steps:
        assert step.packet is None and step.frame is not None
        assert step.wire == encode_df8(step.frame) and len(step.wire) == DF8_FRAME_LEN


def test_df8_normal_vitals_and_no_flags() -> None:
    got = df8_frames(run(df8_scenario("normal", seed=1), 60))
    assert all(f.spo2 is not None and 95 <= f.spo2 <= 99 for f in got)
    assert all(f.hr is not None and 66 <= f.hr <= 78 for f in got)
    assert all(f.flags == 0 and f.status2 == 0 for f in got)


def test_df8_desaturation_reaches_86_percent_within_the_stated_time() -> None:
    got = {s.elapsed: s.frame for s in run(df8_scenario("desaturation", seed=2), 125)}
    spo2 = {t: f.spo2 for t, f in got.items() if f is not None}
    assert all(v is not None and v >= 95 for t, v in spo2.items() if t < 20)
    assert min(v for t, v in spo2.items() if t <= 80 and v is not None) <= 86
    assert all(v is not None and v <= 86 for t, v in spo2.items() if 80 <= t < 100)
    assert all(v is not None and v >= 95 for t, v in spo2.items() if t >= 120)


def test_df8_probe_off_sends_the_protocols_sensor_off_frame() -> None:
    steps = run(df8_scenario("probe_off", seed=3), 120)
    for cycle in (0.0, 60.0):
        off = during(steps, cycle + 30, cycle + 45)
        assert len(off) == 15
        # Exactly the 4a worked example: SNSD set, HR 511 and SpO2 127 (missing).
        assert {s.wire for s in off} == {bytes.fromhex("C3 7F 7F 00")}
        searching = during(steps, cycle + 45, cycle + 49)
        # Searching: OOT (DF8 bit 5), values still missing.
        assert {s.wire for s in searching} == {bytes.fromhex("A3 7F 7F 00")}
        assert all(f.flags == 0 for f in df8_frames(during(steps, cycle, cycle + 30)))
        assert all(f.spo2 is not None for f in df8_frames(during(steps, cycle + 49, cycle + 60)))


def test_df8_noise_costs_only_the_frames_it_hits() -> None:
    steps = run(df8_scenario("noise", seed=4), 61)
    noisy = [s for s in steps if len(s.wire) > DF8_FRAME_LEN]
    assert [round(s.elapsed) for s in noisy] == [9, 19, 29, 39, 49, 59]  # every 10 s
    intact = [
        s.frame
        for s in steps
        if s.frame is not None
        and encode_df8(s.frame) in (s.wire[:DF8_FRAME_LEN], s.wire[-DF8_FRAME_LEN:])
    ]
    assert len(intact) >= len(steps) - len(noisy)
    codec = NoninDf8Codec()
    got = codec.feed(b"".join(s.wire for s in steps))
    # No checksum: noise may forge frames, but never costs an intact one. A forged frame
    # comes out unconfirmed, or (noise splitting a frame late) right before dropped bytes,
    # which then leave the next frame unconfirmed: the limits NoninDf8Codec documents.
    it = iter(got)
    assert all(any(frame == g for g in it) for frame in intact)
    forged = [i for i, g in enumerate(got) if g not in intact]
    assert forged
    assert all(not got[i].confirmed or not got[i + 1].confirmed for i in forged)
    # Noise costs exactly its bytes and the frames it split: dropped, or forged.
    wire = sum(len(s.wire) for s in steps)
    c = codec.counters
    assert DF8_FRAME_LEN * len(forged) + c.bytes_dropped + codec.buffered == (
        wire - DF8_FRAME_LEN * len(intact)
    )


def test_df8_unplug_cycle() -> None:
    steps = run(df8_scenario("unplug", seed=5), 110)
    plugged = [s.plugged for s in steps]
    assert all(plugged[:40]) and not any(plugged[40:55]) and all(plugged[55:95])
    assert not any(plugged[95:])
    assert all(s.frame is None and s.wire == b"" for s in steps if not s.plugged)


# --- the driver's model fed by the pure scenario ------------------------------------------


def model_readings(name: str, seconds: float, data_format: DataFormat = 7) -> list[Reading]:
    """Readings of the driver's model fed each step's bytes at the end of its period."""
    model = NoninOximeter("ox1", NoninSettings(data_format=data_format))
    model.on_connect(0.0)
    readings: list[Reading] = []
    scenario = NoninScenario(name, data_format=data_format, seed=8)
    for step in run(scenario, seconds):
        readings += model.feed(step.wire, step.elapsed + scenario.period)
    readings += model.on_disconnect(seconds)
    return readings


@pytest.mark.parametrize("data_format", ALL_FORMATS)
def test_model_sees_the_desaturation(data_format: DataFormat) -> None:
    readings = model_readings("desaturation", 100, data_format)
    spo2 = spo2_numerics(readings)
    # SpO2 three times a second in DF2/DF7, once a second in DF8.
    assert len(spo2) == (100 if data_format == 8 else 300)
    assert min(n.value for n in spo2 if n.value is not None) <= 86
    assert all(n.status == MeasurementStatus.NONE for n in spo2)
    assert not [r for r in readings if isinstance(r, DeviceEvent)]


@pytest.mark.parametrize("data_format", ALL_FORMATS)
def test_model_raises_and_clears_probe_off_once_per_cycle(data_format: DataFormat) -> None:
    period = NoninScenario("probe_off", data_format=data_format).period
    events = [
        (r.time, r.condition, r.active)
        for r in model_readings("probe_off", 119, data_format)
        if isinstance(r, DeviceEvent)
    ]
    # Raised by the first packet or frame of each phase, when it arrives.
    per_cycle = [
        (30.0, Condition.SENSOR_OFF, True),
        (45.0, Condition.SENSOR_OFF, False),
        (45.0, Condition.OUT_OF_TRACK, True),
        (49.0, Condition.OUT_OF_TRACK, False),
    ]
    expected = [(t + period + k, c, a) for k in (0, 60) for t, c, a in per_cycle]
    assert [(round(t, 6), c, a) for t, c, a in events] == [
        (round(t, 6), c, a) for t, c, a in expected
    ]


# --- the simulator on a real pty ----------------------------------------------------------


def _lexists(path: str) -> bool:
    return os.path.lexists(path)


async def test_simulator_feeds_the_driver_over_a_pty(link_path: str) -> None:
    clock = ManualClock()
    settings = NoninSettings(select_format=True)
    make_simulator = registry.get("nonin").make_simulator
    assert make_simulator is not None
    sim = make_simulator(settings, "normal", clock, link_path)
    assert isinstance(sim, NoninSimulator) and sim.port == link_path
    model = NoninOximeter("ox1", settings)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.run())
        await clock.advance(0)
        assert sim.plugged and _lexists(link_path)
        fd = open_driver_end(link_path)
        try:
            command, _ = model.on_connect(clock.wall())
            os.write(fd, command)
            readings: list[Reading] = []
            for _ in range(6):
                await clock.advance(PACKET_PERIOD_S)
                readings += model.feed(
                    await read_exactly(fd, PACKET_LEN, eio_is_hangup=True), clock.wall()
                )
        finally:
            os.close(fd)
        task.cancel()
    spo2 = spo2_numerics(readings)
    assert len(spo2) == 6
    assert all(n.value is not None and 95 <= n.value <= 99 for n in spo2)
    assert model.counters.bytes_dropped == 0
    assert sim.received == set_format_command(7)
    assert not sim.plugged and not _lexists(link_path)  # cancelling unplugs


@pytest.mark.parametrize(
    ("data_format", "period", "length"),
    [(2, PACKET_PERIOD_S, PACKET_LEN), (8, 1.0, DF8_FRAME_LEN)],
    ids=["df2", "df8"],
)
async def test_simulator_unplugs_and_replugs(
    link_path: str, data_format: DataFormat, period: float, length: int
) -> None:
    clock = ManualClock()
    settings = NoninSettings(data_format=data_format)
    sim = NoninSimulator(settings, "unplug", clock, link_path, seed=9)
    model = NoninOximeter("ox1", settings)

    async def first_packet() -> list[Reading]:
        fd = open_driver_end(link_path)
        try:
            model.on_connect(clock.wall())
            await clock.advance(period)
            return list(
                model.feed(await read_exactly(fd, length, eio_is_hangup=True), clock.wall())
            )
        finally:
            os.close(fd)

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.run())
        await clock.advance(0)
        assert len(spo2_numerics(await first_packet())) == 1

        fd = open_driver_end(link_path)
        try:
            # Past 40 s: the cable is pulled; the open port drains and then hangs up.
            await clock.advance(40.0 - period / 2)
            assert not sim.plugged and not _lexists(link_path)
            await read_exactly(fd, 1 << 20, eio_is_hangup=True)
        finally:
            os.close(fd)
        model.on_disconnect(clock.wall())

        # Back in at 55 s behind the same path, on a new pty.
        await clock.advance(15.0)
        assert sim.plugged and _lexists(link_path)
        assert len(spo2_numerics(await first_packet())) == 1
        task.cancel()
    assert not _lexists(link_path)
    frames_per_read = FRAMES_PER_PACKET if data_format != 8 else 1
    assert model.counters.frames_decoded == 2 * frames_per_read


async def test_df8_simulator_feeds_the_driver_over_a_pty(link_path: str) -> None:
    # DF8 end to end: set-format 8 from the driver, a 4-byte frame per second of clock time.
    clock = ManualClock()
    settings = NoninSettings(data_format=8, select_format=True)
    make_simulator = registry.get("nonin").make_simulator
    assert make_simulator is not None
    sim = make_simulator(settings, "probe_off", clock, link_path)
    assert isinstance(sim, NoninSimulator) and sim.scenario.period == 1.0
    model = NoninOximeter("ox1", settings)
    readings: list[Reading] = []
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.run())
        await clock.advance(0)
        fd = open_driver_end(link_path)
        try:
            command, _ = model.on_connect(clock.wall())
            os.write(fd, command)
            for _ in range(35):  # into the probe-off phase, which starts at 30 s
                await clock.advance(1.0)
                wire = await read_exactly(fd, DF8_FRAME_LEN, eio_is_hangup=True)
                assert len(wire) == DF8_FRAME_LEN
                readings += model.feed(wire, clock.wall())
        finally:
            os.close(fd)
        task.cancel()
    spo2 = spo2_numerics(readings)
    assert len(spo2) == 35  # once per second
    assert all(n.value is not None and 95 <= n.value <= 99 for n in spo2[:30])
    assert all(n.value is None for n in spo2[30:])  # the missing sentinels
    assert not [r for r in readings if isinstance(r, Waveform)]  # no pleth in DF8
    events = [(r.condition, r.active) for r in readings if isinstance(r, DeviceEvent)]
    assert events == [(Condition.SENSOR_OFF, True)]
    assert model.counters.bytes_dropped == 0 and model.counters.frames_decoded == 35
    assert sim.received == set_format_command(8) == bytes.fromhex("02 70 04 02 08 21 9F 03")
    assert not sim.plugged and not _lexists(link_path)
