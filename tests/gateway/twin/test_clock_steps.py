"""The wall-clock step detector and where the store keeps the steps it saw."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.twin.clock_steps import STEP_TOLERANCE, ClockStep, ClockStepDetector
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore
from tests.support.sync import T0, spo2


def test_the_first_look_and_steady_clocks_are_no_step() -> None:
    detector = ClockStepDetector()
    assert detector.observe(T0, 100.0) is None
    # A minute on both clocks, with drift well inside the tolerance.
    assert detector.observe(T0 + 60.0 + STEP_TOLERANCE / 2, 160.0) is None
    assert detector.observe(T0 + 120.0, 220.0) is None


@pytest.mark.parametrize("step", [-3600.0, 3600.0, -3.0, 3.0])
def test_a_step_beyond_the_tolerance_is_reported_once(step: float) -> None:
    detector = ClockStepDetector()
    detector.observe(T0, 100.0)
    seen = detector.observe(T0 + 10.0 + step, 110.0)
    assert seen == ClockStep(wall_before=T0 + 10.0, wall_after=T0 + 10.0 + step, step=step)
    # The stepped clock is the new reference: the next commit sees no further step.
    assert detector.observe(T0 + 20.0 + step, 120.0) is None


def test_a_step_back_and_forth_is_two_steps() -> None:
    detector = ClockStepDetector(tolerance=1.0)
    detector.observe(T0, 0.0)
    back = detector.observe(T0 - 3599.0, 1.0)
    forth = detector.observe(T0 + 2.0, 2.0)
    assert back is not None and back.step == pytest.approx(-3600.0)
    assert forth is not None and forth.step == pytest.approx(3600.0)


def test_a_tolerance_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ClockStepDetector(tolerance=0.0)


def test_the_store_keeps_each_step_after_the_rows_before_it(tmp_path: Path) -> None:
    path = tmp_path / "twin.sqlite"
    with TwinStore(path, KeyRing(generate_kek())) as store:
        store.write([("bed-1", spo2(97.0, T0)), ("bed-1", spo2(96.0, T0 + 1))], T0 + 1)
        store.record_clock_step(T0 + 2.0, T0 - 3598.0)
        store.write([("bed-1", spo2(95.0, T0 - 3597.0))], T0 - 3597.0)
        first = store.clock_steps()
    with TwinStore(path, KeyRing(generate_kek())) as reopened:
        assert reopened.clock_steps() == first  # durable
    assert [(s["seq_at"], s["wall_before"], s["wall_after"], s["step_s"]) for s in first] == [
        (2, T0 + 2.0, T0 - 3598.0, -3600.0)
    ]
