"""Technician tools on real ptys: probe recognises a protocol, record captures, replay plays.

The device side is the real Nonin simulator writing to a PtyLink; time is a ManualClock the
test advances, so the probe's and the recording's listening windows are exact.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from drivers.capture import decode, read_capture, record
from drivers.clock import ManualClock
from drivers.oximetry.nonin import NoninOximeter, NoninSettings
from drivers.probe import probe_port
from drivers.serial_device import open_serial
from drivers.simulate.nonin import NoninSimulator
from drivers.simulate.replay import ReplaySimulator
from drivers.transport.serial import SerialTransport
from tests.support.ptys import TIMEOUT


async def advance_while(clock: ManualClock, task: asyncio.Future[object], step: float) -> None:
    """Advance the clock in device-sized steps until ``task`` finishes (bounded)."""
    for _ in range(int(60 / step)):
        if task.done():
            return
        await clock.advance(step)
        await asyncio.sleep(0)
    raise AssertionError("did not finish within 60 s of clock time")


async def test_probe_recognises_the_nonin_format_and_nothing_else(link_path: str) -> None:
    clock = ManualClock()
    simulator = NoninSimulator(NoninSettings(data_format=2), "normal", clock, link_path)
    sim = asyncio.ensure_future(simulator.run())
    await clock.advance(0)
    probe = asyncio.ensure_future(probe_port(link_path, clock, seconds=3.0, drivers=["nonin"]))
    await advance_while(clock, probe, 1 / 3)
    results = probe.result()
    recognised = [(r.driver, r.variant) for r in results if r.recognised]
    assert recognised == [("nonin", {"data_format": 2})]
    df7 = next(r for r in results if r.variant == {"data_format": 7})
    assert df7.bytes_received > 0 and df7.frames_decoded == 0 and not df7.recognised
    assert simulator.received == b""  # probing never writes to the device
    sim.cancel()
    await asyncio.gather(sim, return_exceptions=True)


async def test_probe_reports_a_port_it_cannot_open(tmp_path: Path) -> None:
    results = await probe_port(str(tmp_path / "absent"), ManualClock(), drivers=["nonin"])
    assert results and all(r.error and not r.recognised for r in results)
    assert "absent" in results[0].error


async def test_record_then_decode_then_replay_reproduces_the_readings(
    link_path: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    settings = NoninSettings()
    simulator = NoninSimulator(settings, "normal", clock, link_path)
    sim = asyncio.ensure_future(simulator.run())
    await clock.advance(0)
    out = io.StringIO()
    transport = open_serial(settings, link_path)
    recording = asyncio.ensure_future(record(transport, clock, 4.0, out))
    await advance_while(clock, recording, 1 / 3)
    assert recording.result() > 0
    sim.cancel()
    await asyncio.gather(sim, return_exceptions=True)

    capture = tmp_path / "bed.jsonl"
    capture.write_text(out.getvalue())
    assert all(set(json.loads(line)) == {"t", "rx"} for line in out.getvalue().splitlines())
    recorded = list(decode(NoninOximeter("x", settings), read_capture(capture)))
    spo2 = [
        r.value for r in recorded if getattr(r, "code", None) and r.code.refid.endswith("SAT_O2")
    ]  # type: ignore[union-attr]
    assert len(spo2) >= 10

    # Replay the capture onto a new pty; the production model decodes the same values.
    replay_path = str(tmp_path / "replay-port")
    replay = ReplaySimulator(capture, clock, replay_path, loop=False)
    player = asyncio.ensure_future(replay.run())
    await clock.advance(0)
    reader = SerialTransport(replay_path)
    await reader.open()
    model = NoninOximeter("x", settings)
    model.on_connect(clock.wall())
    replayed = []

    async def collect() -> None:
        while len(
            [r for r in replayed if getattr(r, "code", None) and r.code.refid.endswith("SAT_O2")]
        ) < len(spo2):  # type: ignore[union-attr]
            replayed.extend(model.feed(await reader.read(), clock.wall()))

    collector = asyncio.ensure_future(collect())
    await advance_while(clock, collector, 1 / 3)
    await asyncio.wait_for(collector, TIMEOUT)
    await reader.close()
    await clock.advance(1.0)  # past the pause that ends the pass
    player.cancel()
    await asyncio.gather(player, return_exceptions=True)
    replayed_spo2 = [
        r.value for r in replayed if getattr(r, "code", None) and r.code.refid.endswith("SAT_O2")
    ]  # type: ignore[union-attr]
    assert replayed_spo2 == spo2
    assert replay.passes == 1 and replay.bytes_written == recording.result()
