"""run_serial_device: one connection of a serial driver, over a PtyLink, on a manual clock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from drivers import codes
from drivers.clock import ManualClock
from drivers.device import (
    DeviceDisconnected,
    DeviceUnavailable,
    SerialDeviceModel,
    SerialSettings,
)
from drivers.readings import (
    CodecCounters,
    Condition,
    DeviceEvent,
    Identity,
    Numeric,
    Reading,
)
from drivers.serial_device import open_serial, run_serial_device
from drivers.simulate.pty import PtyLink
from drivers.transport.serial import SerialTransport, TransportState
from tests.support.ptys import TIMEOUT, device_read, fds_on

DEVICE = "bed3-spo2"
GREETING = b"FORMAT 2\r\n"


class LineModel:
    """A toy device model: one SpO2 value per text line; other lines are dropped."""

    def __init__(self, greeting: bytes = GREETING, *, fail_on: bytes | None = None) -> None:
        self.counters = CodecCounters()
        self._greeting = greeting
        self._fail_on = fail_on
        self._buffer = b""
        self.connects = 0

    def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
        self.connects += 1
        self._buffer = b""
        return self._greeting, [Identity(DEVICE, now, manufacturer="Acme", model="Line-1")]

    def feed(self, data: bytes, now: float) -> Sequence[Reading]:
        if self._fail_on is not None and self._fail_on in data:
            raise RuntimeError("model bug")
        self.counters.bytes_received += len(data)
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        readings: list[Reading] = []
        for line in lines:
            try:
                value = float(line)
            except ValueError:
                self.counters.bytes_dropped += len(line) + 1
                continue
            self.counters.frames_decoded += 1
            readings.append(Numeric(DEVICE, codes.SPO2, value, codes.PERCENT, now))
        return readings

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        return [DeviceEvent(DEVICE, Condition.SENSOR_OFF, False, now, "link lost")]


class Published:
    """The ``publish`` callback: records readings and lets a test await the next one."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._queue: asyncio.Queue[Reading] = asyncio.Queue()

    def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._queue.put_nowait(reading)

    async def next(self) -> Reading:
        return await asyncio.wait_for(self._queue.get(), TIMEOUT)

    async def take(self, n: int) -> list[Reading]:
        return [await self.next() for _ in range(n)]


def connected(time: float) -> DeviceEvent:
    return DeviceEvent(DEVICE, Condition.DISCONNECTED, False, time)


async def start(
    link: PtyLink, model: SerialDeviceModel, clock: ManualClock
) -> tuple[asyncio.Task[None], SerialTransport, Published]:
    published = Published()
    transport = SerialTransport(link.link_path)
    task = asyncio.create_task(run_serial_device(DEVICE, model, transport, published, clock))
    return task, transport, published


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_connects_greets_and_publishes_decoded_readings(link: PtyLink) -> None:
    clock = ManualClock()
    model = LineModel()
    task, transport, published = await start(link, model, clock)
    try:
        t0 = clock.wall()
        assert await published.take(2) == [
            Identity(DEVICE, t0, manufacturer="Acme", model="Line-1"),
            connected(t0),
        ]
        assert await device_read(link, len(GREETING)) == GREETING

        link.write(b"97\n9")
        assert await published.next() == Numeric(DEVICE, codes.SPO2, 97.0, codes.PERCENT, t0)
        await clock.advance(2.5)  # readings carry the wall time their bytes arrived
        link.write(b"8\nnoise\n")
        assert await published.next() == Numeric(DEVICE, codes.SPO2, 98.0, codes.PERCENT, t0 + 2.5)
        assert model.counters.frames_decoded == 2
    finally:
        await stop(task)
    assert transport.state is TransportState.CLOSED


async def test_no_greeting_means_nothing_is_written(link: PtyLink) -> None:
    task, _, published = await start(link, LineModel(greeting=b""), ManualClock())
    try:
        await published.take(2)
        link.write(b"99\n")  # a reading after connect proves the greeting step is over
        await published.next()
        assert link.read() == b""
    finally:
        await stop(task)


async def test_pulled_cable_reports_and_raises_disconnected(link: PtyLink) -> None:
    clock = ManualClock()
    task, transport, published = await start(link, LineModel(), clock)
    await published.take(2)
    await clock.advance(10)
    link.unplug()

    with pytest.raises(DeviceDisconnected, match=re.escape(link.link_path)):
        await asyncio.wait_for(task, TIMEOUT)
    t1 = clock.wall()
    lost = published.readings[-2:]
    assert lost[0] == DeviceEvent(DEVICE, Condition.SENSOR_OFF, False, t1, "link lost")
    assert isinstance(lost[1], DeviceEvent)
    assert (lost[1].condition, lost[1].active, lost[1].time) == (Condition.DISCONNECTED, True, t1)
    assert link.link_path in lost[1].detail and "end of file" in lost[1].detail
    assert transport.state is TransportState.CLOSED


async def test_supervisor_style_reconnect_with_a_new_transport(link: PtyLink) -> None:
    clock = ManualClock()
    model = LineModel()
    task, _, published = await start(link, model, clock)
    await published.take(2)
    link.write(b"95\n")
    await published.next()
    link.unplug()
    with pytest.raises(DeviceDisconnected):
        await asyncio.wait_for(task, TIMEOUT)

    link.plug()
    task, _, published = await start(link, model, clock)
    try:
        assert (await published.take(2))[1] == connected(clock.wall())
        link.write(b"96\n")
        reading = await published.next()
        assert isinstance(reading, Numeric) and reading.value == 96.0
        assert model.connects == 2
        assert model.counters.frames_decoded == 2  # the model outlives its connections
    finally:
        await stop(task)


async def test_cancellation_closes_the_port(link: PtyLink) -> None:
    clock = ManualClock()
    task, transport, published = await start(link, LineModel(), clock)
    await published.take(2)
    slave = link.slave_name
    assert slave is not None
    assert fds_on(slave) == 2  # the link's own end and the driver's port

    await stop(task)
    assert fds_on(slave) == 1
    assert transport.state is TransportState.CLOSED
    assert published.readings[-1] == connected(clock.wall())  # nothing more published


async def test_port_missing_publishes_disconnected_and_raises_unavailable(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    model = LineModel()
    published = Published()
    missing = str(tmp_path / "serial" / "by-id" / "not-plugged")
    transport = SerialTransport(missing)

    with pytest.raises(DeviceUnavailable, match=re.escape(missing)):
        await run_serial_device(DEVICE, model, transport, published, clock)
    (event,) = published.readings
    assert isinstance(event, DeviceEvent)
    assert (event.condition, event.active, event.time) == (
        Condition.DISCONNECTED,
        True,
        clock.wall(),
    )
    assert missing in event.detail
    assert model.connects == 0
    assert transport.state is TransportState.CLOSED


async def test_a_model_bug_propagates_and_the_port_is_still_closed(link: PtyLink) -> None:
    clock = ManualClock()
    task, transport, published = await start(link, LineModel(fail_on=b"!"), clock)
    await published.take(2)
    slave = link.slave_name
    assert slave is not None
    link.write(b"!\n")
    with pytest.raises(RuntimeError, match="model bug"):
        await asyncio.wait_for(task, TIMEOUT)
    assert transport.state is TransportState.CLOSED
    assert fds_on(slave) == 1
    # The device must not look connected while its task is down: the link is reported lost.
    last = published.readings[-1]
    assert isinstance(last, DeviceEvent) and last.condition is Condition.DISCONNECTED
    assert last.active and last.detail == "driver error: RuntimeError; restarting"


async def test_a_failing_greeting_write_is_a_disconnection(link: PtyLink) -> None:
    class UnplugOnConnect(LineModel):
        def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
            link.unplug()  # the cable comes out right as the driver greets the device
            return super().on_connect(now)

    published = Published()
    transport = SerialTransport(link.link_path)
    with pytest.raises(DeviceDisconnected):
        await asyncio.wait_for(
            run_serial_device(DEVICE, UnplugOnConnect(), transport, published, ManualClock()),
            TIMEOUT,
        )
    kinds = [(type(r).__name__, getattr(r, "active", None)) for r in published.readings]
    assert kinds == [("DeviceEvent", False), ("DeviceEvent", True)]  # on_disconnect, lost
    assert transport.state is TransportState.CLOSED


# -- open_serial -----------------------------------------------------------------------------


def test_open_serial_builds_from_settings() -> None:
    settings = SerialSettings(port="/dev/ttyUSB0", baudrate=19200, bytesize=7, parity="E")
    transport = open_serial(settings)
    assert transport.port == "/dev/ttyUSB0"
    assert transport.line_settings == "19200 7E1"
    assert transport.state is TransportState.UNOPENED


def test_open_serial_port_override_is_for_simulators() -> None:
    settings = SerialSettings(port="/dev/ttyUSB0", stopbits=2)
    transport = open_serial(settings, port="/run/bedside/sim/bed3-spo2")
    assert transport.port == "/run/bedside/sim/bed3-spo2"
    assert transport.line_settings == "9600 8N2"
    assert open_serial(SerialSettings(), port="socket://127.0.0.1:7000").port.startswith(
        "socket://"
    )


def test_open_serial_without_any_port_is_unavailable() -> None:
    with pytest.raises(DeviceUnavailable, match="no serial port configured"):
        open_serial(SerialSettings())
