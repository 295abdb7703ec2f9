"""The runner every serial driver shares: binds a transport to a device model.

:func:`run_serial_device` handles one connection: open, greet, read and decode until the
link is lost, then report the loss and return control by raising. It never reconnects by
itself: the gateway's supervisor owns the retry policy (backoff with jitter) and calls it
again with a new transport; the model lives on across calls so its counters keep adding up.

Connection state is published as :class:`~drivers.readings.DeviceEvent` with
:attr:`~drivers.readings.Condition.DISCONNECTED`: ``active=True`` when the port cannot be
opened or the link drops, ``active=False`` once connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.clock import Clock
from drivers.device import DeviceUnavailable, SerialDeviceModel, SerialSettings
from drivers.link import link_event, link_session, publish_all
from drivers.readings import Reading
from drivers.transport.serial import SerialTransport

__all__ = ["open_serial", "run_serial_device"]


async def run_serial_device(
    device_id: str,
    model: SerialDeviceModel,
    transport: SerialTransport,
    publish: Callable[[Reading], None],
    clock: Clock,
) -> None:
    """Run one connection of ``device_id`` over an unopened ``transport`` until it ends.

    Readings are stamped with ``clock.wall()`` when their bytes arrived. It ends only by
    raising:

    * :class:`DeviceUnavailable`: the port could not be opened (after publishing
      DISCONNECTED active with the reason);
    * :class:`DeviceDisconnected`: the link dropped (after publishing the model's
      ``on_disconnect`` readings and DISCONNECTED active with the reason);
    * ``CancelledError``: the owner stopped it;
    * anything else: a bug (for example in the model), left for the supervisor to log
      with its traceback, after publishing DISCONNECTED active ("driver error") so the
      device is never shown as connected while its task is down.

    In every case the transport is closed before the exception leaves (the rules are
    :func:`drivers.link.link_session`'s, shared with the BLE runner).
    """
    async with link_session(
        device_id, publish, clock, on_disconnect=model.on_disconnect, close=transport.close
    ):
        await transport.open()
        greeting, readings = model.on_connect(clock.wall())
        if greeting:
            await transport.write(greeting)
        publish_all(publish, readings)
        publish(link_event(device_id, clock, active=False))
        while True:
            data = await transport.read()
            publish_all(publish, model.feed(data, clock.wall()))


def open_serial(settings: SerialSettings, port: str | None = None) -> SerialTransport:
    """Build an unopened transport from a driver's serial settings.

    ``port`` overrides ``settings.port`` (the gateway passes a simulator's port this way).
    Raises :class:`DeviceUnavailable` when neither names a port.
    """
    target = port if port is not None else settings.port
    if not target:
        raise DeviceUnavailable(
            "no serial port configured: set 'port' for this device, or run it simulated"
        )
    return SerialTransport(
        target,
        baudrate=settings.baudrate,
        bytesize=settings.bytesize,
        parity=settings.parity,
        stopbits=settings.stopbits,
    )


async def listen(
    transport: SerialTransport,
    clock: Clock,
    seconds: float,
    on_data: Callable[[bytes], None],
) -> None:
    """Pass everything an open ``transport`` receives to ``on_data`` for ``seconds`` of
    ``clock`` time, then close it. Never writes. A lost link ends it early and re-raises."""

    async def read_all() -> None:
        while True:
            on_data(await transport.read())

    reader = asyncio.ensure_future(read_all())
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((reader, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        reader.cancel()
        timer.cancel()
        await asyncio.gather(reader, timer, return_exceptions=True)
        await transport.close()
    if not reader.cancelled() and (error := reader.exception()) is not None:
        raise error
