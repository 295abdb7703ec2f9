"""scan (which units answer, which profile fits), Modbus capture lines, and decode, against
the simulated pumps (real pymodbus server on an RTU pty line; ManualClock)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.capture import CaptureError
from drivers.clock import ManualClock
from drivers.infusion.capture import (
    ModbusRecord,
    capture_line,
    decode,
    polls,
    read_modbus_capture,
    record,
)
from drivers.infusion.profile import Table, load_profile
from drivers.infusion.pump import InfusionPump
from drivers.infusion.scan import scan_bound, scan_line
from drivers.readings import Numeric
from drivers.simulate.pump import SimulatedRtuLine
from drivers.transport.modbus import ModbusTransport, RtuLine
from gateway.cli import main
from tests.drivers.infusion.support import eventually, line_settled

PROFILES = [load_profile("generic"), load_profile("cdab-tenths")]


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[tuple[SimulatedRtuLine, ManualClock]]:
    clock = ManualClock()
    server = SimulatedRtuLine(clock, str(tmp_path / "rs485"), paced=False)
    server.add_pump(2, PROFILES[0])
    server.add_pump(5, PROFILES[1])
    task = asyncio.ensure_future(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    yield server, clock
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_scan_finds_the_answering_units_and_the_profile_of_each(
    line: tuple[SimulatedRtuLine, ManualClock],
) -> None:
    server, clock = line
    transport = ModbusTransport(RtuLine(server.port, 115200, 8, "N", 1), clock)
    scan = asyncio.ensure_future(scan_line(transport, PROFILES, range(1, 7), answer_within=0.1))
    try:
        # Each silent unit costs one timeout: move the clock whenever the scan waits on it.
        while not scan.done():
            await eventually(
                lambda: scan.done() or (clock.sleepers == 1 and line_settled(transport, server)),
                "the scan to wait on a silent unit",
            )
            if not scan.done():
                await clock.advance(0.1)
        found = scan.result()
    finally:
        await transport.close()
    assert [(f.unit, f.fits) for f in found] == [(2, ("generic",)), (5, ("cdab-tenths",))]
    # unit 2 has no holding registers at 100: it answered the second profile with exception 2
    assert found[0].exceptions == {"cdab-tenths": 2}
    silent_requests = [u for u, _, _ in server.requests if u not in (2, 5)]
    assert sorted(silent_requests) == [1, 3, 4, 6]  # one request per silent unit
    assert {fc for _, fc, _ in server.requests} <= {3, 4}
    assert scan_bound(range(1, 248), 0.1) == pytest.approx(24.7)


async def test_capture_records_every_read_and_decode_replays_it(
    line: tuple[SimulatedRtuLine, ManualClock], tmp_path: Path
) -> None:
    server, clock = line
    transport = ModbusTransport(RtuLine(server.port, 115200, 8, "N", 1), clock)
    out = io.StringIO()
    model = InfusionPump("capture", PROFILES[1])
    job = asyncio.ensure_future(
        record(transport, clock, 5, model, seconds=3.0, interval=1.0, out=out)
    )
    for polled in (1, 2, 3):
        await eventually(
            lambda n=polled: transport.stats.responses == 2 * n and clock.sleepers == 1
        )
        await clock.advance(1.0)
    assert await job == 3
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["address"] for x in lines] == [100, 200] * 3
    first = json.loads(lines[0])
    assert (first["unit"], first["fc"]) == (5, 3)
    assert bytes.fromhex(first["rx"])[:4] == bytes.fromhex("4d 50 50 55")  # CDAB magic
    path = tmp_path / "pump.jsonl"
    path.write_text(out.getvalue())
    readings = list(decode(InfusionPump("p", PROFILES[1]), read_modbus_capture(path)))
    volumes = [
        r.value
        for r in readings
        if isinstance(r, Numeric) and r.code.refid == "MDC_VOL_FLUID_DELIV"
    ]
    assert volumes == pytest.approx([0.0, 125 / 3600, 2 * 125 / 3600], abs=1e-4)
    # Decoded with the wrong profile, every poll is refused and counted, nothing invented.
    wrong = InfusionPump("p", PROFILES[0])
    assert list(decode(wrong, read_modbus_capture(path))) == []
    assert wrong.counters.frames_decoded == 0 and wrong.counters.bytes_dropped > 0


def test_capture_lines_round_trip_and_group_into_polls(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        "\n".join(
            [
                capture_line(1.0, 1, 3, 100, [0x4D50, 0x5055]),
                capture_line(1.01, 1, 3, 200, [0x4865]),
                capture_line(2.0, 1, 3, 100, [1, 2]),
                capture_line(2.0, 2, 4, 0, [7]),
            ]
        )
    )
    records = list(read_modbus_capture(path))
    assert records[0] == ModbusRecord(1.0, 1, 3, 100, (0x4D50, 0x5055))
    grouped = list(polls(records))
    assert [(t, unit, sorted(blocks)) for t, unit, blocks in grouped] == [
        (1.01, 1, [(Table.HOLDING, 100), (Table.HOLDING, 200)]),
        (2.0, 1, [(Table.HOLDING, 100)]),
        (2.0, 2, [(Table.INPUT, 0)]),
    ]


@pytest.mark.parametrize(
    "line",
    [
        '{"t": 1, "unit": 1, "fc": 6, "address": 0, "rx": "00 01"}',  # a write code
        '{"t": 1, "unit": 1, "fc": 3, "address": 0, "rx": "00"}',  # half a register
        '{"t": 1, "rx": "00 01"}',  # a serial capture line
        "not json",
    ],
)
def test_bad_capture_line_is_refused_naming_it(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(capture_line(0.5, 1, 4, 0, [1]) + "\n" + line + "\n")
    with pytest.raises(CaptureError, match=r"bad\.jsonl:2: not a Modbus capture line"):
        list(read_modbus_capture(path))


def test_decode_command_takes_a_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from drivers.infusion.codec import encode
    from drivers.simulate.pump import PumpSimModel

    sim = PumpSimModel("occlusion")
    sim.advance(25.0)
    image = encode(PROFILES[0], sim.frame())
    path = tmp_path / "pump.jsonl"
    path.write_text(capture_line(5.0, 1, 4, 0, image[(Table.INPUT, 0)]) + "\n")
    assert main(["decode", "--driver", "modbus-pump-rtu", "--profile", "generic", str(path)]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    events = [(o["condition"], o["active"], o["priority"]) for o in out if o["type"] == "event"]
    assert events == [("occlusion", True, "high")]
    assert {o["code"] for o in out if o["type"] == "numeric"} >= {
        "MDC_FLOW_FLUID_PUMP",
        "MDC_TIME_PD_REMAIN",
        "MDC_PUMP_STAT",
    }
    assert main(["decode", "--driver", "modbus-pump-rtu", "--profile", "nope", str(path)]) == 2
    assert "profile 'nope'" in capsys.readouterr().err


async def test_a_capture_replays_as_a_pump_the_driver_reads_back(tmp_path: Path) -> None:
    from drivers.codes import PUMP_VOLUME_INFUSED
    from drivers.infusion.codec import encode
    from drivers.infusion.pump import TcpPumpSettings
    from drivers.modbus_device import ModbusFleet, run_modbus_device
    from drivers.simulate.pump import PumpSimModel

    sim = PumpSimModel("normal")
    lines = []
    for second in range(3):
        image = encode(PROFILES[0], sim.frame())
        lines.append(capture_line(100.0 + second, 7, 4, 0, image[(Table.INPUT, 0)]))
        sim.advance(36.0)  # 1.25 mL a step at 125 mL/h
    path = tmp_path / "pump.jsonl"
    path.write_text("\n".join(lines) + "\n")

    clock = ManualClock()
    fleet = ModbusFleet(clock, tmp_path)
    link = fleet.link("p", TcpPumpSettings.model_validate({"unit": 1}), None, path)
    [(name, server)] = fleet.take_simulators()
    assert name == "simulator:p" and sorted(server.replays) == [1]
    serving = asyncio.ensure_future(server.run())
    published: list[object] = []
    model = InfusionPump("p", PROFILES[0])
    await asyncio.wait_for(server.ready.wait(), 5)
    runner = asyncio.ensure_future(run_modbus_device("p", model, link, published.append, clock))
    try:
        for polled in (1, 2, 3):
            await eventually(lambda n=polled: model.counters.frames_decoded == n)
            await clock.advance(1.0)
    finally:
        runner.cancel()
        serving.cancel()
        await asyncio.gather(runner, serving, return_exceptions=True)
        await link.transport.close()
    volumes = [
        r.value for r in published if isinstance(r, Numeric) and r.code == PUMP_VOLUME_INFUSED
    ]
    assert volumes[:3] == pytest.approx([0.0, 1.25, 2.5])
    with pytest.raises(Exception, match="holds no Modbus polls"):
        (tmp_path / "empty.jsonl").write_text("")
        fleet.link("q", TcpPumpSettings.model_validate({"unit": 1}), None, tmp_path / "empty.jsonl")


def test_scan_command_reports_units_and_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from drivers.clock import SystemClock
    from drivers.simulate.pump import SimulatedTcpPumps

    # The command runs its own event loop; the simulated pumps get theirs in a thread.
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, SimulatedTcpPumps] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = SimulatedTcpPumps(SystemClock())
        server.add_pump(2, PROFILES[1])
        holder["server"] = server

        async def run() -> None:
            task = asyncio.ensure_future(server.run())
            await server.ready.wait()
            started.set()
            await task

        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(run())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    server = holder["server"]
    try:
        args = ["scan", "--modbus", server.port, "--units", "1-3", "--timeout", "0.05", "--json"]
        assert main(args) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["units"] == [
            {"unit": 2, "fits": ["cdab-tenths"], "exceptions": {"generic": 2}}
        ]
        assert main(["scan", "--modbus", server.port, "--units", "0-300"]) == 2
        assert "unit ids are 1-247" in capsys.readouterr().err
    finally:

        def cancel_all() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()

        loop.call_soon_threadsafe(cancel_all)
        thread.join(10)
    assert {fc for _, fc, _ in server.requests} <= {3, 4}
