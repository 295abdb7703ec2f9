"""Hub: bounded queues, shedding by class (waveforms, then numerics, never events)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from drivers import codes
from drivers.readings import Condition, DeviceEvent, Identity, Numeric, Reading, Waveform
from gateway.hub import Hub


def numeric(value: float) -> Numeric:
    return Numeric("dev", codes.SPO2, value, codes.PERCENT, time=0.0)


def wave(seq: int) -> Waveform:
    return Waveform("dev", codes.PLETH, codes.DIMENSIONLESS, 75.0, 0.0, np.zeros(25), seq)


def event(active: bool) -> DeviceEvent:
    return DeviceEvent("dev", Condition.SENSOR_OFF, active, 0.0)


def drain(sub: object) -> list[Reading]:
    out = []
    while (r := sub.get_nowait()) is not None:  # type: ignore[attr-defined]
        out.append(r)
    return out


def test_every_subscriber_gets_every_reading_in_order() -> None:
    hub = Hub()
    a, b = hub.subscribe("a"), hub.subscribe("b")
    readings = [numeric(90 + i) for i in range(5)]
    for r in readings:
        hub.publish(r)
    assert drain(a) == readings
    assert drain(b) == readings
    assert hub.published == 5


def test_filter_limits_what_a_subscriber_sees() -> None:
    hub = Hub()
    events_only = hub.subscribe("events", accepts=lambda r: isinstance(r, DeviceEvent))
    hub.publish(numeric(97))
    hub.publish(event(True))
    assert drain(events_only) == [event(True)]


def test_full_queue_sheds_waveforms_first() -> None:
    hub = Hub()
    slow = hub.subscribe("slow", maxsize=3)
    hub.publish(wave(0))
    hub.publish(numeric(97))
    hub.publish(wave(1))
    hub.publish(numeric(96))  # full: the oldest waveform makes room
    assert drain(slow) == [numeric(97), wave(1), numeric(96)]
    assert slow.stats.shed_waveforms == 1
    assert slow.stats.shed_numerics == 0


def test_incoming_waveform_is_shed_when_full() -> None:
    hub = Hub()
    slow = hub.subscribe("slow", maxsize=2)
    hub.publish(numeric(97))
    hub.publish(numeric(96))
    hub.publish(wave(0))
    assert drain(slow) == [numeric(97), numeric(96)]
    assert slow.stats.shed_waveforms == 1


def test_numerics_shed_oldest_first_when_no_waveform_left() -> None:
    hub = Hub()
    slow = hub.subscribe("slow", maxsize=2)
    for v in (90.0, 91.0, 92.0):
        hub.publish(numeric(v))
    assert drain(slow) == [numeric(91), numeric(92)]
    assert slow.stats.shed_numerics == 1


def test_events_are_never_shed() -> None:
    hub = Hub()
    slow = hub.subscribe("slow", maxsize=2)
    ident = Identity("dev", 0.0, manufacturer="Nonin")
    published: list[Reading] = [numeric(97), wave(0), event(True), event(False), ident]
    for r in published:
        hub.publish(r)
    kept = drain(slow)
    assert [r for r in kept if isinstance(r, DeviceEvent | Identity)] == published[2:]
    assert slow.stats.shed_waveforms == 1 and slow.stats.shed_numerics == 1


def test_numeric_arriving_at_a_queue_full_of_events_is_shed_not_an_event() -> None:
    hub = Hub()
    slow = hub.subscribe("slow", maxsize=1)
    hub.publish(event(True))
    hub.publish(numeric(97))
    assert drain(slow) == [event(True)]
    assert slow.stats.shed_numerics == 1


def test_publish_never_blocks_on_a_stalled_subscriber() -> None:
    hub = Hub()
    stalled = hub.subscribe("stalled", maxsize=10)
    for i in range(10_000):
        hub.publish(wave(i))
    assert len(stalled) == 10
    assert stalled.stats.shed_waveforms == 9_990


async def test_async_iteration_waits_and_ends_on_unsubscribe() -> None:
    hub = Hub()
    sub = hub.subscribe("live")
    got: list[Reading] = []

    async def consume() -> None:
        async for r in sub:
            got.append(r)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    hub.publish(numeric(95))
    await asyncio.sleep(0)
    assert got == [numeric(95)]
    hub.unsubscribe(sub)
    await asyncio.wait_for(task, 1)
    hub.publish(numeric(94))
    assert got == [numeric(95)]


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Hub().subscribe("bad", maxsize=0)
