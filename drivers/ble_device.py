"""The runner every Bluetooth LE driver shares: binds a BLE transport to a device model.

:func:`run_ble_device` handles one connection, like ``drivers.serial_device`` does for
byte streams (and with the same reporting rules, :func:`drivers.link.link_session`):

1. find and connect (:class:`~drivers.transport.ble.BleTransport`, one connect at a time
   per adapter);
2. read Device Information into an Identity and Battery Level into LOW_BATTERY;
3. subscribe to every characteristic the model lists, and to Battery Level when the device
   notifies it (otherwise re-read it every ``battery_interval`` seconds of the clock);
4. publish the model's connect readings, feed it the characteristics it wants read once
   (its optional ``read_uuids``, such as PLX Features), perform its connect writes
   (starting a stream; never a clinical setting) and publish DISCONNECTED off;
5. feed every notification, in arrival order and stamped with the wall time it arrived,
   to the model until the link drops; then publish the model's clean-up readings and
   DISCONNECTED on, and raise :class:`~drivers.device.DeviceDisconnected` so the
   supervisor reconnects with its backoff.

Notifications arrive in bleak's callback; they are queued and decoded in the runner's own
loop, so a model's bug surfaces here (as a driver error) rather than inside bleak.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final

from drivers import gatt
from drivers.clock import Clock
from drivers.conditions import ConditionTracker
from drivers.device import BleDeviceModel, DeviceDisconnected, DeviceError, DeviceUnavailable
from drivers.link import Publish, link_event, link_session, publish_all
from drivers.readings import Condition, Reading
from drivers.transport.ble import (
    LOW_BATTERY_PERCENT,
    BleTransport,
    Notify,
    battery_is_low,
    parse_battery,
)

__all__ = [
    "BATTERY_INTERVAL_S",
    "perform_writes",
    "record_notifications",
    "run_ble_device",
    "start_streams",
]

#: Seconds between Battery Level reads for a device that does not notify it.
BATTERY_INTERVAL_S: Final = 60.0
#: Retry floor when the device lacks a characteristic its driver needs: most likely the
#: wrong driver or the wrong device, which a technician must fix.
_WRONG_DEVICE_RETRY_S: Final = 60.0

_Item = tuple[str, bytes, float] | None


async def run_ble_device(
    device_id: str,
    model: BleDeviceModel,
    transport: BleTransport,
    publish: Publish,
    clock: Clock,
    *,
    battery_interval: float = BATTERY_INTERVAL_S,
    tap: Notify | None = None,
) -> None:
    """Run one connection of ``device_id`` over an unopened ``transport`` until it ends.

    Ends only by raising, exactly as :func:`drivers.serial_device.run_serial_device`
    (``DeviceUnavailable``, ``DeviceDisconnected``, cancellation, or a bug). ``tap``, when
    given, sees every notification as received (for capture).
    """
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    battery = ConditionTracker(
        device_id,
        [Condition.LOW_BATTERY],
        {Condition.LOW_BATTERY: f"battery level at or below {LOW_BATTERY_PERCENT} %"},
    )
    poller: asyncio.Task[None] | None = None

    def received(uuid: str, payload: bytes) -> None:
        queue.put_nowait((uuid, payload, clock.wall()))
        if tap is not None:
            tap(uuid, payload)

    def clean_up(now: float) -> list[Reading]:
        return [*model.on_disconnect(now), *battery.clear(now)]

    async def close() -> None:
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await transport.close()

    async def poll_battery() -> None:
        while True:
            await clock.sleep(battery_interval)
            try:
                payload = await transport.read(gatt.BATTERY_LEVEL)
            except DeviceError:
                queue.put_nowait(None)  # the pump raises the loss
                return
            queue.put_nowait((gatt.BATTERY_LEVEL, payload, clock.wall()))

    def battery_events(payload: bytes, now: float) -> Sequence[Reading]:
        level = parse_battery(payload)
        if level is None:
            model.counters.bytes_dropped += len(payload)
            return ()
        return battery.update({Condition.LOW_BATTERY: battery_is_low(level)}, now)

    async with link_session(device_id, publish, clock, on_disconnect=clean_up, close=close):
        await transport.open()
        transport.on_lost(lambda: queue.put_nowait(None))
        identity = await transport.read_identity(device_id, clock.wall())
        level = await transport.read_battery()
        await start_streams(transport, model, received)
        if transport.can_notify(gatt.BATTERY_LEVEL):
            await transport.subscribe(gatt.BATTERY_LEVEL, received)
        elif level is not None:
            poller = asyncio.create_task(poll_battery(), name=f"battery:{device_id}")
        now = clock.wall()
        writes, readings = model.on_connect(now)
        if identity is not None:
            publish(identity)
        publish_all(publish, readings)
        if level is not None:
            publish_all(
                publish, battery.update({Condition.LOW_BATTERY: battery_is_low(level)}, now)
            )
        # Optional one-off reads a model asks for (PLX Features), fed like notifications.
        for uuid in getattr(model, "read_uuids", ()):
            if transport.has(uuid):
                payload = await transport.read(uuid)
                publish_all(publish, model.feed(uuid, payload, clock.wall()))
        await perform_writes(transport, writes)
        publish(link_event(device_id, clock, active=False))
        while True:
            item = await queue.get()
            if item is None:
                raise DeviceDisconnected(
                    "BLE link lost (out of range, switched off or battery empty)"
                )
            uuid, payload, arrived = item
            if uuid == gatt.BATTERY_LEVEL:
                publish_all(publish, battery_events(payload, arrived))
            else:
                publish_all(publish, model.feed(uuid, payload, arrived))


async def start_streams(transport: BleTransport, model: BleDeviceModel, received: Notify) -> None:
    """Subscribe to the characteristics ``model`` lists that the device has.

    Profiles make some characteristics optional (a PLX oximeter needs continuous or
    spot-check, not both), so a missing one is skipped; a device with none of them is
    refused as the wrong device for this driver.
    """
    present = [uuid for uuid in model.notify_uuids if transport.has(uuid)]
    if not present:
        labels = " or ".join(gatt.NAMES.get(uuid, uuid) for uuid in model.notify_uuids)
        raise _wrong_device(transport, labels)
    for uuid in present:
        await transport.subscribe(uuid, received)


async def perform_writes(transport: BleTransport, writes: Sequence[tuple[str, bytes]]) -> None:
    """The model's connect writes, in order (starting a stream; never a clinical setting)."""
    for uuid, payload in writes:
        if not transport.has(uuid):
            raise _wrong_device(transport, gatt.NAMES.get(uuid, uuid))
        await transport.write(uuid, payload)


def _wrong_device(transport: BleTransport, label: str) -> DeviceUnavailable:
    return DeviceUnavailable(
        f"BLE device {transport.address} has no {label} characteristic: "
        "check the driver configured for this device",
        retry_after=_WRONG_DEVICE_RETRY_S,
    )


async def record_notifications(
    transport: BleTransport,
    model: BleDeviceModel,
    clock: Clock,
    seconds: float,
    received: Notify,
) -> None:
    """Connect, start the model's streams and pass every notification to ``received``
    for ``seconds`` of ``clock`` time (for ``capture``). Performs only the model's
    stream-start writes; a lost link ends it early and raises DeviceDisconnected."""
    await transport.open()
    try:
        await start_streams(transport, model, received)
        writes, _ = model.on_connect(clock.wall())
        await perform_writes(transport, writes)
        lost = asyncio.ensure_future(transport.wait_lost())
        timer = asyncio.ensure_future(clock.sleep(seconds))
        try:
            await asyncio.wait((lost, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (lost, timer):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(lost, timer, return_exceptions=True)
        if lost.done() and not lost.cancelled():
            raise DeviceDisconnected("BLE link lost during the capture")
    finally:
        await transport.close()
