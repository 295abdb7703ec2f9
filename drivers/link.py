"""What every device runner does around one connection, whatever the transport.

A runner (``drivers.serial_device`` for byte streams, ``drivers.ble_device`` for GATT)
opens a link, publishes what the device says, and on the end of the link reports why and
raises so the gateway's supervisor retries with its backoff. The reporting rules are the
same for every transport and live here once:

* the link could not be opened (:class:`~drivers.device.DeviceUnavailable`): publish
  DISCONNECTED active with the reason;
* an open link dropped (:class:`~drivers.device.DeviceDisconnected`): publish the model's
  clean-up readings, then DISCONNECTED active with the reason;
* anything else is a bug (for example in a model): publish the clean-up readings and
  DISCONNECTED active ("driver error"), so a device is never shown as connected while its
  task is down, and let the supervisor log the traceback;
* in every case, close the transport before the exception leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

from drivers.clock import Clock
from drivers.device import DeviceDisconnected, DeviceUnavailable
from drivers.readings import Condition, DeviceEvent, Reading

Publish = Callable[[Reading], None]


def publish_all(publish: Publish, readings: Iterable[Reading]) -> None:
    for reading in readings:
        publish(reading)


def link_event(device_id: str, clock: Clock, *, active: bool, detail: str = "") -> DeviceEvent:
    """DISCONNECTED turning on (``active``, with the reason) or off (connected)."""
    return DeviceEvent(
        source=device_id,
        condition=Condition.DISCONNECTED,
        active=active,
        time=clock.wall(),
        detail=detail,
    )


@asynccontextmanager
async def link_session(
    device_id: str,
    publish: Publish,
    clock: Clock,
    *,
    on_disconnect: Callable[[float], Sequence[Reading]],
    close: Callable[[], Awaitable[None]],
) -> AsyncIterator[None]:
    """Apply the rules above to the connection run inside the ``async with`` block.

    ``on_disconnect(now)`` gives the readings that clean up after the link (the model's,
    plus any the runner itself raised); ``close`` closes the transport.
    """
    try:
        yield
    except DeviceDisconnected as err:
        publish_all(publish, on_disconnect(clock.wall()))
        publish(link_event(device_id, clock, active=True, detail=str(err)))
        raise
    except DeviceUnavailable as err:
        publish(link_event(device_id, clock, active=True, detail=str(err)))
        raise
    except Exception as err:
        try:
            publish_all(publish, on_disconnect(clock.wall()))
        finally:
            detail = f"driver error: {type(err).__name__}; restarting"
            publish(link_event(device_id, clock, active=True, detail=detail))
        raise
    finally:
        await close()
