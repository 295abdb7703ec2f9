"""The alarm and audio state machines: complete tables and the rules they encode."""

from __future__ import annotations

import itertools

import pytest

from gateway.alarms.states import (
    AUDIO_TRANSITIONS,
    OPEN_STATES,
    SOUNDING_STATES,
    TRANSITIONS,
    AlarmState,
    AudioState,
    AudioTrigger,
    Trigger,
    audio_step,
    step,
)

ALL = list(itertools.product(AlarmState, Trigger, (False, True)))


def test_every_combination_has_exactly_one_transition() -> None:
    assert set(TRANSITIONS) == set(ALL)
    assert set(AUDIO_TRANSITIONS) == set(itertools.product(AudioState, AudioTrigger))


@pytest.mark.parametrize(("state", "trigger", "latching"), ALL)
def test_a_transition_that_changes_state_is_always_logged(
    state: AlarmState, trigger: Trigger, latching: bool
) -> None:
    new, change = step(state, trigger, latching)
    if new is not state:
        assert change is not None


@pytest.mark.parametrize(("trigger", "latching"), list(itertools.product(Trigger, (False, True))))
def test_cleared_is_terminal(trigger: Trigger, latching: bool) -> None:
    assert step(AlarmState.CLEARED, trigger, latching) == (AlarmState.CLEARED, None)


def test_only_latching_alarms_outlive_their_condition() -> None:
    assert step(AlarmState.ACTIVE, Trigger.CONDITION_OFF, False) == (AlarmState.CLEARED, "cleared")
    assert step(AlarmState.ACTIVE, Trigger.CONDITION_OFF, True) == (AlarmState.LATCHED, "latched")
    # A latched alarm sounds until someone acknowledges it; nothing else ends it.
    assert AlarmState.LATCHED in SOUNDING_STATES
    for trigger in (Trigger.CONDITION_OFF, Trigger.ESCALATE):
        assert step(AlarmState.LATCHED, trigger, True)[0] is AlarmState.LATCHED
    assert step(AlarmState.LATCHED, Trigger.ACKNOWLEDGE, True) == (
        AlarmState.CLEARED,
        "acknowledged",
    )
    assert step(AlarmState.LATCHED, Trigger.CONDITION_ON, True) == (
        AlarmState.ACTIVE,
        "reactivated",
    )


def test_acknowledged_alarms_are_silent_but_still_shown_and_never_escalate() -> None:
    assert AlarmState.ACKNOWLEDGED in OPEN_STATES
    assert AlarmState.ACKNOWLEDGED not in SOUNDING_STATES
    for latching in (False, True):
        assert step(AlarmState.ACTIVE, Trigger.ACKNOWLEDGE, latching) == (
            AlarmState.ACKNOWLEDGED,
            "acknowledged",
        )
        assert step(AlarmState.ACKNOWLEDGED, Trigger.ESCALATE, latching) == (
            AlarmState.ACKNOWLEDGED,
            None,
        )
        # An acknowledged alarm does not latch: the nurse has seen it.
        assert step(AlarmState.ACKNOWLEDGED, Trigger.CONDITION_OFF, latching)[0] is (
            AlarmState.CLEARED
        )


def test_escalation_is_logged_and_keeps_the_alarm_active() -> None:
    assert step(AlarmState.ACTIVE, Trigger.ESCALATE, False) == (AlarmState.ACTIVE, "escalated")


def test_audio_pause_machine() -> None:
    assert audio_step(AudioState.ON, AudioTrigger.PAUSE) == (AudioState.PAUSED, "paused")
    assert audio_step(AudioState.PAUSED, AudioTrigger.PAUSE) == (AudioState.PAUSED, "paused")
    assert audio_step(AudioState.PAUSED, AudioTrigger.EXPIRE) == (AudioState.ON, "pause expired")
    assert audio_step(AudioState.PAUSED, AudioTrigger.BREAK_THROUGH) == (
        AudioState.ON,
        "pause broken through",
    )
    assert audio_step(AudioState.PAUSED, AudioTrigger.RESUME) == (AudioState.ON, "pause ended")
    for trigger in (AudioTrigger.EXPIRE, AudioTrigger.BREAK_THROUGH, AudioTrigger.RESUME):
        assert audio_step(AudioState.ON, trigger) == (AudioState.ON, None)
