"""Modbus transport against a real pymodbus server: TCP on 127.0.0.1, RTU over a pty pair
(8N1: ptys refuse parity). Time is a ManualClock: timeouts and backoff pass only when the
test advances it; replies travel through real sockets and ptys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.pdu.register_message import (
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.clock import ManualClock
from drivers.device import DeviceDisconnected, DeviceUnavailable
from drivers.infusion.codec import PumpCodec
from drivers.infusion.profile import Role, Table, load_profile, parse_profile
from drivers.simulate.pump import SimulatedRtuLine, SimulatedTcpPumps
from drivers.transport.modbus import (
    READ_FUNCTION_CODES,
    ExceptionReply,
    ModbusTransport,
    NoResponse,
    ReadOnlyViolation,
    ReadTable,
    RtuLine,
    TcpLine,
    _outgoing_guard,
)
from tests.drivers.infusion.support import eventually

#: Every data type, and each of the four word/byte orders, in one map.
ALL_TYPES = parse_profile(
    {
        "profile": {"name": "all-types", "table": "holding"},
        "identify": {"address": 0, "type": "u16", "value": 0xBEEF},
        "values": {
            "rate": {"address": 1, "type": "u32", "scale": 0.01, "word_order": "little"},
            "volume_infused": {"address": 3, "type": "f32", "byte_order": "little"},
            "vtbi": {
                "address": 5,
                "type": "s32",
                "scale": 0.1,
                "word_order": "little",
                "byte_order": "little",
            },
            "vtbi_remaining": {"address": 7, "type": "s16", "scale": 0.5, "unit": "mL"},
            "battery": {"address": 8, "type": "u16", "table": "input"},
            "concentration": {"address": 9, "type": "f32", "unit": "ug/mL"},
        },
        "text": {
            "drug_name": {"address": 11, "type": "string", "words": 5, "byte_order": "little"}
        },
    }
)


async def _serve(server: SimulatedTcpPumps | SimulatedRtuLine) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def tcp(clock: ManualClock) -> AsyncIterator[SimulatedTcpPumps]:
    server = SimulatedTcpPumps(clock)
    server.add_pump(1, load_profile("generic"), serial="TCP-1")
    server.add_pump(2, ALL_TYPES)
    async for _ in _serve(server):
        yield server


@pytest.fixture
async def rtu(clock: ManualClock, tmp_path: Path) -> AsyncIterator[SimulatedRtuLine]:
    server = SimulatedRtuLine(clock, str(tmp_path / "rs485"), baudrate=115200, paced=False)
    server.add_pump(1, load_profile("generic"))
    server.add_pump(2, load_profile("cdab-tenths"))
    server.add_pump(3, ALL_TYPES)
    async for _ in _serve(server):
        yield server


async def _poll(
    transport: ModbusTransport, unit: int, codec: PumpCodec
) -> dict[Role, float | None]:
    blocks = {}
    for b in codec.plan:
        regs = await transport.read(unit, ReadTable(b.table), b.address, b.count, answer_within=1)
        blocks[(b.table, b.address)] = regs
    frame = codec.decode(blocks)
    assert frame is not None
    return dict(frame.numerics)


def _expected(server: SimulatedTcpPumps | SimulatedRtuLine, unit: int) -> dict[Role, float | None]:
    return dict(server.pumps[unit].model.frame().numerics)


def _close_enough(
    got: dict[Role, float | None],
    want: dict[Role, float | None],
    unit: int,
    server: SimulatedTcpPumps | SimulatedRtuLine,
) -> None:
    for role, f in server.pumps[unit].profile.numerics.items():
        expected = want[role]
        assert expected is not None
        lsb = abs(f.scale * f.factor) if f.type != "f32" else 1e-4 * max(1.0, abs(expected))
        assert got[role] == pytest.approx(expected, abs=lsb), role


async def test_tcp_reads_every_type_word_and_byte_order_and_scale(
    tcp: SimulatedTcpPumps, clock: ManualClock
) -> None:
    transport = ModbusTransport(TcpLine(tcp.host, tcp.tcp_port), clock)
    try:
        for unit in (1, 2):
            codec = PumpCodec(tcp.pumps[unit].profile)
            _close_enough(await _poll(transport, unit, codec), _expected(tcp, unit), unit, tcp)
        frame_codec = PumpCodec(ALL_TYPES)
        blocks = {
            (b.table, b.address): await transport.read(
                2, ReadTable(b.table), b.address, b.count, answer_within=1
            )
            for b in frame_codec.plan
        }
        frame = frame_codec.decode(blocks)
        assert frame is not None and frame.drug_name == "Heparin 25"  # 5 registers: 10 chars
        assert {(t, a) for t, a in blocks} == {(Table.HOLDING, 0), (Table.INPUT, 8)}
    finally:
        await transport.close()
    assert {fc for _, fc, _ in tcp.requests} == {3, 4}


async def test_rtu_line_carries_three_pumps_with_different_maps(
    rtu: SimulatedRtuLine, clock: ManualClock
) -> None:
    transport = ModbusTransport(RtuLine(rtu.port, 115200, 8, "N", 1), clock)
    try:
        await clock.advance(7.0)  # the pumps infuse for 7 s first
        for unit in (1, 2, 3):
            codec = PumpCodec(rtu.pumps[unit].profile)
            got = await _poll(transport, unit, codec)
            _close_enough(got, _expected(rtu, unit), unit, rtu)
        assert rtu.pumps[1].model.infused == pytest.approx(125.0 * 7 / 3600)
    finally:
        await transport.close()
    assert transport.stats.responses == len(rtu.requests)


async def test_a_unit_that_never_answers_times_out_on_the_injected_clock_and_is_retried(
    rtu: SimulatedRtuLine, clock: ManualClock
) -> None:
    transport = ModbusTransport(RtuLine(rtu.port, 115200, 8, "N", 1), clock)
    try:
        read = asyncio.ensure_future(
            transport.read(9, ReadTable.INPUT_REGISTERS, 0, 2, answer_within=0.3, retries=1)
        )
        for attempt in (1, 2):
            await eventually(lambda n=attempt: len(rtu.requests) == n and clock.sleepers == 1)
            assert not read.done()
            await clock.advance(0.3)
        with pytest.raises(NoResponse, match=r"unit 9 .* did not answer \(2 requests"):
            await read
        assert transport.stats.timeouts == 2
        # The line is still fine for the pumps that answer.
        assert len(await transport.read(1, ReadTable.INPUT_REGISTERS, 0, 2, answer_within=1)) == 2
    finally:
        await transport.close()


async def test_illegal_address_is_an_exception_reply_not_a_timeout(
    tcp: SimulatedTcpPumps, clock: ManualClock
) -> None:
    transport = ModbusTransport(TcpLine(tcp.host, tcp.tcp_port), clock)
    try:
        with pytest.raises(ExceptionReply) as caught:
            await transport.read(1, ReadTable.HOLDING_REGISTERS, 5000, 4, answer_within=1)
        assert caught.value.code == 2
        assert transport.stats.exception_replies == 1
    finally:
        await transport.close()


async def test_lost_line_is_reported_then_reopened_after_backoff(clock: ManualClock) -> None:
    server = SimulatedTcpPumps(clock)
    server.add_pump(1, load_profile("generic"))
    transport = ModbusTransport(TcpLine(server.host, server.tcp_port), clock, backoff_initial=0.5)
    try:
        with pytest.raises(DeviceUnavailable, match="cannot open") as refused:
            await transport.open()  # nothing listens yet
        assert refused.value.retry_after == 0.5
        with pytest.raises(DeviceUnavailable, match="backing off"):
            await transport.open()  # before the backoff deadline: not even tried
        async for _ in _serve(server):
            await clock.advance(0.5)
            await transport.read(1, ReadTable.INPUT_REGISTERS, 0, 2, answer_within=1)
            assert transport.stats.opens == 1
        # Server gone: the connection drops.
        with pytest.raises(DeviceDisconnected, match="lost"):
            await eventually(lambda: not transport.is_open or transport._lost.is_set())
            await transport.read(1, ReadTable.INPUT_REGISTERS, 0, 2, answer_within=1)
        assert transport.stats.losses == 1
        async for _ in _serve(server):
            await clock.advance(0.5)
            regs = await transport.read(1, ReadTable.INPUT_REGISTERS, 0, 2, answer_within=1)
            assert regs == [0x5055, 0x4D50]
            assert transport.stats.opens == 2
    finally:
        await transport.close()


def test_only_read_function_codes_exist() -> None:
    assert {int(t) for t in ReadTable} == READ_FUNCTION_CODES == {1, 2, 3, 4}
    public = {name for name in dir(ModbusTransport) if not name.startswith("_")}
    assert public == {"open", "read", "read_blocks", "close", "is_open", "hold", "release"}
    with pytest.raises(ValueError):
        ReadTable(6)


def test_outgoing_guard_refuses_every_write_pdu() -> None:
    read = ReadInputRegistersRequest(address=0, count=2, dev_id=1)
    assert _outgoing_guard(True, read) is read
    for pdu in (
        WriteSingleRegisterRequest(address=0, registers=[1], dev_id=1),
        WriteMultipleRegistersRequest(address=0, registers=[1, 2], dev_id=1),
    ):
        with pytest.raises(ReadOnlyViolation, match=f"function code {pdu.function_code}"):
            _outgoing_guard(True, pdu)


async def test_a_write_function_code_never_reaches_the_wire(
    tcp: SimulatedTcpPumps, clock: ManualClock
) -> None:
    transport = ModbusTransport(TcpLine(tcp.host, tcp.tcp_port), clock)
    try:
        for code in (5, 6, 15, 16, 22, 23):
            with pytest.raises(ValueError):
                await transport.read(1, code, 0, 1, answer_within=1)  # type: ignore[arg-type]
        # Even through the private client, the guard stops the PDU before it is framed.
        await transport.open()
        client = transport._client
        assert client is not None
        with pytest.raises(ReadOnlyViolation):
            await client.write_register(0, 1, device_id=1)
        await transport.read(1, ReadTable.INPUT_REGISTERS, 0, 2, answer_within=1)
    finally:
        await transport.close()
    assert tcp.requests == [(1, 4, 0)]
