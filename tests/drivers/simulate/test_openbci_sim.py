"""The simulated OpenBCI Cyton: the pure scenario model, then the simulator on a real pty
through the real runner (:func:`drivers.serial_device.run_serial_device`).

Time only moves through :class:`~drivers.clock.ManualClock`; the pty tests wait for bytes
the kernel is still moving under a bounded timeout, never for time to pass.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from drivers.clock import ManualClock
from drivers.device import DeviceDisconnected
from drivers.ecg.openbci import (
    COUNT_MAX,
    PACKET_LEN,
    SCENARIOS,
    SPEC,
    CytonCodec,
    CytonEcg,
    CytonPacket,
    OpenBCISettings,
    counts_of,
    encode_packet,
)
from drivers.readings import Condition, DeviceEvent, Identity, Reading, Waveform
from drivers.serial_device import run_serial_device
from drivers.simulate.openbci import (
    PACKETS_PER_STEP,
    RESET_BANNER,
    CytonScenario,
    CytonSimulator,
    SimStep,
    pqrst,
)
from drivers.transport.serial import SerialTransport
from tests.support.ptys import TIMEOUT

RATE = 250
STEP_S = PACKETS_PER_STEP / RATE
LEADS = {1: "I", 2: "II", 3: "III"}


def run(scenario: CytonScenario, seconds: float) -> list[SimStep]:
    return [scenario.step() for _ in range(round(seconds / STEP_S))]


def packets(steps: Iterable[SimStep]) -> list[CytonPacket]:
    return [p for s in steps for p in s.packets]


def millivolts(ps: list[CytonPacket], scenario: CytonScenario) -> np.ndarray:
    """(packets, 8) channel values in mV."""
    return counts_of(b"".join(p.raw_channels for p in ps)) * scenario.mv_per_count


def r_peaks(lead: np.ndarray, threshold: float) -> int:
    """Upward crossings of ``threshold`` (mV): one per beat for a clean R wave."""
    above = lead > threshold
    return int(np.count_nonzero(above[1:] & ~above[:-1]))


# --- scenario model -----------------------------------------------------------------------


def test_every_declared_scenario_exists_and_no_other() -> None:
    assert SPEC.scenarios == SCENARIOS
    for name in SCENARIOS:
        assert CytonScenario(name).step().elapsed == 0.0
    with pytest.raises(ValueError, match="unknown OpenBCI scenario"):
        CytonScenario("asystole")
    with pytest.raises(ValueError, match="lead mapping"):
        CytonScenario("normal", leads={9: "II"})


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_bytes(name: str) -> None:
    a = b"".join(s.wire for s in run(CytonScenario(name, seed=11), 12))
    b = b"".join(s.wire for s in run(CytonScenario(name, seed=11), 12))
    c = b"".join(s.wire for s in run(CytonScenario(name, seed=12), 12))
    assert a == b and a != c


def test_steps_advance_at_the_sample_rate() -> None:
    steps = run(CytonScenario("normal"), 10)
    assert len(steps) == 10 * RATE // PACKETS_PER_STEP
    assert steps[25].elapsed == 1.0
    assert all(len(s.packets) == PACKETS_PER_STEP for s in steps)
    assert all(len(s.wire) == PACKETS_PER_STEP * PACKET_LEN for s in steps)
    numbers = [p.sample_number for p in packets(steps)]
    assert numbers == [i % 256 for i in range(len(numbers))]


def test_pqrst_shape() -> None:
    assert pqrst(0.0, 0.8) == pytest.approx(1.2, abs=0.02)  # R
    assert pqrst(0.03, 0.8) < -0.2  # S
    assert 0.1 < pqrst(-0.16, 0.8) < 0.2  # P
    assert 0.25 < pqrst(0.27 * 0.8**0.5, 0.8) < 0.35  # T
    assert abs(pqrst(0.6, 0.8)) < 0.02  # baseline after T


@pytest.mark.parametrize(("name", "low", "high"), [("normal", 68, 76), ("tachycardia", 145, 155)])
def test_heart_rate_and_lead_scaling(name: str, low: int, high: int) -> None:
    scenario = CytonScenario(name, leads=LEADS, seed=1)
    mv = millivolts(packets(run(scenario, 60)), scenario)
    lead_i, lead_ii, lead_iii = mv[:, 0], mv[:, 1], mv[:, 2]
    assert low <= r_peaks(lead_ii, 0.6) <= high
    assert 1.1 < lead_ii.max() < 1.4 and -0.45 < lead_ii.min() < -0.2
    assert lead_i.max() == pytest.approx(0.6 * lead_ii.max(), rel=0.1)
    assert lead_iii.max() == pytest.approx(0.4 * lead_ii.max(), rel=0.15)
    # Einthoven: I + III = II, up to the per-lead noise (10 uV each).
    assert float(np.std(lead_i + lead_iii - lead_ii)) < 0.03
    # Unconnected channels only carry a little noise.
    assert float(np.max(np.abs(mv[:, 3:]))) < 0.02


def test_accelerometer_every_tenth_packet() -> None:
    got = packets(run(CytonScenario("normal"), 1))
    assert all(p.accel == ((0, 0, 8000) if p.sample_number % 10 == 0 else (0, 0, 0)) for p in got)


def test_noise_costs_only_the_packets_it_hits() -> None:
    steps = run(CytonScenario("noise", seed=4), 60)
    noisy = [s for s in steps if len(s.wire) > len(s.packets) * PACKET_LEN]
    assert [round(s.elapsed) for s in noisy] == [10, 20, 30, 40, 50, 60][: len(noisy)]
    assert len(noisy) >= 5
    codec = CytonCodec()
    got = codec.feed(b"".join(s.wire for s in steps))
    sent = packets(steps)
    assert len(got) >= len(sent) - 2 * len(noisy)
    sent_wire = {encode_packet(p) for p in sent}
    assert all(encode_packet(p) in sent_wire for p in got)
    assert codec.counters.bytes_dropped >= sum(len(s.wire) for s in noisy) - sum(
        len(s.packets) * PACKET_LEN for s in noisy
    )


def test_dropped_packets_skip_sample_numbers() -> None:
    steps = run(CytonScenario("dropped_packets", seed=5), 39)
    dropped = sum(s.dropped for s in steps)
    numbers = [p.sample_number for p in packets(steps)]
    jumps = [(b - a - 1) % 256 for a, b in itertools.pairwise(numbers)]
    gaps = [j for j in jumps if j]
    assert len(gaps) == 5  # at 8, 16, 24, 32 s, and the dropout at 30 s
    # Short drops show as jumps; the 300-packet dropout wraps to 300 - 256 = 44.
    assert sum(gaps) == dropped - 256


def test_lead_off_rails_the_first_lead_channel() -> None:
    scenario = CytonScenario("lead_off", leads={2: "II", 5: "I"}, seed=6)
    got = packets(run(scenario, 30))
    ch2 = np.array([p.channels[1] for p in got])
    t = np.arange(len(got)) / RATE
    assert np.all(ch2[(t >= 15) & (t < 25)] == COUNT_MAX)
    assert np.all(np.abs(ch2[(t < 15) | (t >= 25)]) < COUNT_MAX // 100)
    assert all(abs(p.channels[4]) < COUNT_MAX // 100 for p in got)


def test_unplug_cycle() -> None:
    steps = run(CytonScenario("unplug", seed=7), 110)
    per_s = RATE // PACKETS_PER_STEP
    plugged = [s.plugged for s in steps]
    assert all(plugged[: 40 * per_s]) and not any(plugged[40 * per_s : 55 * per_s])
    assert all(plugged[55 * per_s : 95 * per_s]) and not any(plugged[95 * per_s :])
    assert all(s.packets == () and s.wire == b"" for s in steps if not s.plugged)


# --- the driver's model fed by the pure scenario ------------------------------------------


def model_readings(name: str, seconds: float, **kwargs: object) -> tuple[CytonEcg, list[Reading]]:
    settings = OpenBCISettings.model_validate({"leads": LEADS, **kwargs})
    model = CytonEcg("ecg1", settings)
    model.on_connect(0.0)
    readings: list[Reading] = []
    scenario = CytonScenario(name, leads=settings.leads, seed=8)
    for step in run(scenario, seconds):
        readings += model.feed(step.wire, step.elapsed + STEP_S)
    readings += model.on_disconnect(seconds)
    return model, readings


def test_model_counts_every_dropped_packet_and_keeps_time() -> None:
    model, readings = model_readings("dropped_packets", 70)
    steps = run(CytonScenario("dropped_packets", leads=LEADS, seed=8), 70)
    assert model.samples_lost == sum(s.dropped for s in steps)
    waves = [r for r in readings if isinstance(r, Waveform) and r.code.refid.endswith("_II")]
    for w in waves:
        # Sequence counts lost samples, so it is the true sample index: time follows.
        assert w.start_time == pytest.approx(w.sequence / RATE, abs=STEP_S + 1e-6)
    events = [(round(r.time), r.active) for r in readings if isinstance(r, DeviceEvent)]
    assert events[:2] == [(8, True), (13, False)]
    assert model.reanchors == 0


def test_model_sees_the_lead_off() -> None:
    _, readings = model_readings("lead_off", 59)
    events = [
        (round(r.time), r.condition, r.active, r.detail)
        for r in readings
        if isinstance(r, DeviceEvent)
    ]
    off = (Condition.LEAD_OFF, True, "railed: lead I (channel 1)")
    on = (Condition.LEAD_OFF, False, "no lead railed")
    assert events == [(15, *off), (25, *on), (45, *off), (55, *on)]


# --- the simulator on a real pty, through the real runner ---------------------------------


class Published:
    """The runner's ``publish`` callback, recording readings."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)

    def waves(self) -> list[Waveform]:
        return [r for r in self.readings if isinstance(r, Waveform)]

    def links(self) -> list[bool]:
        """The DISCONNECTED events' ``active`` flags, in order."""
        return [
            r.active
            for r in self.readings
            if isinstance(r, DeviceEvent) and r.condition is Condition.DISCONNECTED
        ]


async def until(condition: Callable[[], bool], step: Callable[[], object] | None = None) -> None:
    """Give the loop turns (running ``step`` each time) until ``condition`` holds, within
    :data:`TIMEOUT`: a bound on waiting for the kernel to move pty bytes, never a delay."""

    async def spin() -> None:
        while not condition():
            if step is not None:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            await asyncio.sleep(0)

    await asyncio.wait_for(spin(), TIMEOUT)


def _received_at_least(model: CytonEcg, n: int) -> bool:
    return model.counters.bytes_received >= n


async def next_step(clock: ManualClock) -> None:
    """Advance the clock to the simulator's next deadline (just past it: its deadlines are
    on its own timeline, which repeated float steps would miss by an ulp)."""
    deadline = clock.next_deadline()
    assert deadline is not None
    await clock.advance(deadline - clock.monotonic() + 1e-9)


async def stream(clock: ManualClock, model: CytonEcg, steps: int) -> None:
    """Run ``steps`` simulator steps, each time until the driver has read the step's
    bytes, so the pty never overflows."""
    for _ in range(steps):
        expected = model.counters.bytes_received + PACKETS_PER_STEP * PACKET_LEN
        await next_step(clock)
        await until(functools.partial(_received_at_least, model, expected))


def runner(
    model: CytonEcg, path: str, published: Published, clock: ManualClock
) -> asyncio.Task[None]:
    """One connection of the real runner, as the gateway's supervisor starts it."""
    transport = SerialTransport(path, baudrate=115200)
    return asyncio.create_task(run_serial_device("ecg1", model, transport, published, clock))


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_simulator_waits_for_the_start_command_then_feeds_the_driver(
    link_path: str,
) -> None:
    clock = ManualClock()
    settings = OpenBCISettings(leads={1: "I", 2: "II"})
    assert SPEC.make_simulator is not None
    sim = SPEC.make_simulator(settings, "normal", clock, link_path)
    assert isinstance(sim, CytonSimulator) and sim.port == link_path
    model = CytonEcg("ecg1", settings)
    published = Published()
    sim_task = asyncio.create_task(sim.run())
    driver = None
    try:
        await clock.advance(1.0)  # a second of board life: plugged, silent
        assert sim.plugged and not sim.streaming and _lexists(link_path)
        driver = runner(model, link_path, published, clock)
        await until(lambda: published.links() == [False])
        assert model.counters.bytes_received == 0  # nothing before b
        # The driver's b crosses the pty; the board obeys it at its next step.
        await until(lambda: sim.streaming, lambda: next_step(clock))
        assert sim.received == b"b"
        await stream(clock, model, 25)  # one second
    finally:
        await stop(sim_task, *([driver] if driver else []))
    waves = published.waves()
    lead_ii = [w for w in waves if w.code.refid == "MDC_ECG_ELEC_POTL_II"]
    assert len(lead_ii) == 10 and len([w for w in waves if w.code.refid.endswith("_I")]) == 10
    assert [w.sequence for w in lead_ii] == list(range(0, 250, 25))
    for a, b in itertools.pairwise(lead_ii):
        assert b.start_time == pytest.approx(a.start_time + 0.1, abs=1e-6)
    samples = np.concatenate([w.samples for w in lead_ii])
    assert samples.max() > 0.9  # at least one R wave in a second
    [identity] = [r for r in published.readings if isinstance(r, Identity)]
    assert identity.manufacturer == "OpenBCI"
    assert model.counters.bytes_dropped == 0 and model.samples_lost == 0
    assert not sim.plugged and not _lexists(link_path)  # cancelling unplugs


async def test_stop_and_soft_reset_commands(link_path: str) -> None:
    clock = ManualClock()
    sim = CytonSimulator(OpenBCISettings(), "normal", clock, link_path, seed=1)
    task = asyncio.create_task(sim.run())
    received = bytearray()
    try:
        await clock.advance(0)
        fd = os.open(link_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            os.write(fd, b"b")
            await until(lambda: sim.streaming, lambda: next_step(clock))
            os.write(fd, b"s")
            await until(lambda: not sim.streaming, lambda: next_step(clock))
            os.write(fd, b"bv")
            await until(lambda: sim.received == b"bsbv", lambda: next_step(clock))
            assert not sim.streaming
            # What the board sent: the packets streamed between b and s, then the banner.
            await until(lambda: received.endswith(b"$$$"), lambda: received.extend(_read(fd)))
        finally:
            os.close(fd)
    finally:
        await stop(task)
    assert received.endswith(RESET_BANNER)
    streamed = CytonCodec().feed(bytes(received[: -len(RESET_BANNER)]))
    assert streamed and streamed[0].sample_number == 0


def _lexists(path: str) -> bool:
    return os.path.lexists(path)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


async def test_unplug_and_replug(link_path: str) -> None:
    clock = ManualClock()
    start = clock.monotonic()
    settings = OpenBCISettings()
    sim = CytonSimulator(settings, "unplug", clock, link_path, seed=9)
    model = CytonEcg("ecg1", settings)
    first, second = Published(), Published()
    sim_task = asyncio.create_task(sim.run())
    tasks = [sim_task]
    try:
        await clock.advance(0)
        driver = runner(model, link_path, first, clock)
        tasks.append(driver)
        await until(lambda: first.links() == [False])
        await until(lambda: sim.streaming, lambda: next_step(clock))
        await stream(clock, model, 25)
        # Run to 40 s: the dongle comes out and the open port hangs up.
        await clock.advance(start + 40.0 + STEP_S / 2 - clock.monotonic())
        assert not sim.plugged and not _lexists(link_path)
        with pytest.raises(DeviceDisconnected):
            await asyncio.wait_for(driver, TIMEOUT)
        assert first.links() == [False, True]
        # Back in at 55 s behind the same path; the supervisor would reconnect like this.
        await clock.advance(15.0)
        assert sim.plugged and sim.streaming  # the board kept streaming on its battery
        driver = runner(model, link_path, second, clock)
        tasks.append(driver)
        await until(lambda: second.links() == [False])
        await until(lambda: sim.received == b"bb", lambda: next_step(clock))
        await stream(clock, model, 25)
    finally:
        await stop(*tasks)
    assert len([r for r in second.readings if isinstance(r, Identity)]) == 1
    waves = second.waves()
    assert waves and waves[0].sequence == 0  # a new connection counts from 0
    assert [w.sequence for w in waves] == list(range(0, 25 * len(waves), 25))
