"""Pieces shared by the sync tests: a real store with one destination, readings, polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import ManualClock
from drivers.codes import BEATS_PER_MINUTE, PERCENT, PULSE_RATE, SPO2
from drivers.readings import Numeric
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import Destination, TwinStore
from gateway.twin.vocabulary import Patient

T0 = 1_767_225_600.0
HIE = Destination("hie", frozenset({"numeric", "alarm"}))
PATIENT = Patient("Ann Lee", "MRN-0042", "1970-01-02")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TwinStore]:
    with TwinStore(tmp_path / "twin.sqlite", KeyRing(generate_kek()), destinations=[HIE]) as s:
        s.admit("bed-1", PATIENT, T0)
        yield s


def spo2(value: float | None, t: float, source: str = "ox-1") -> Numeric:
    return Numeric(source, SPO2, value, PERCENT, t)


def pulse(value: float, t: float, source: str = "ox-1") -> Numeric:
    return Numeric(source, PULSE_RATE, value, BEATS_PER_MINUTE, t)


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """The worker's store call, run in place (tests own the only connection)."""
    return fn(*args)


async def until(
    predicate: Callable[[], bool],
    *,
    clock: ManualClock | None = None,
    step: float = 1.0,
    rounds: int = 3000,
    when: Callable[[], bool] = lambda: True,
) -> None:
    """Poll for work done by the peer's thread; advance ``clock`` by ``step`` whenever
    something sleeps on it and ``when()`` holds (e.g. the worker is idle or backing off,
    not waiting for a real answer). The short real sleep is for the other thread."""
    for _ in range(rounds):
        if predicate():
            return
        if clock is not None and clock.sleepers and when():
            await clock.advance(step)
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")
