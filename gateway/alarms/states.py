"""Every transition of an alarm, and of a bed's audio, in one place.

Alarm states (an alarm is one occurrence of a condition; the next occurrence of the same
condition is a new alarm with a new id)::

    ACTIVE        the condition holds and nobody has acknowledged it: the alarm sounds
    ACKNOWLEDGED  the condition holds, a user acknowledged it: shown steadily, silent
    LATCHED       the condition ended, but the alarm was high priority and physiological
                  and nobody acknowledged it: it keeps sounding until acknowledged
    CLEARED       finished (terminal); kept in the recent history

An alarm is born ACTIVE (logged ``raised``). Then, for each trigger:

    state         CONDITION_ON       CONDITION_OFF                 ACKNOWLEDGE        ESCALATE
    ACTIVE        ACTIVE             LATCHED if latching           ACKNOWLEDGED       ACTIVE
                                     (latched), else CLEARED       (acknowledged)     (escalated)
                                     (cleared)
    ACKNOWLEDGED  ACKNOWLEDGED       CLEARED (cleared)             ACKNOWLEDGED       ACKNOWLEDGED
    LATCHED       ACTIVE             LATCHED                       CLEARED            LATCHED
                  (reactivated)                                    (acknowledged)
    CLEARED       CLEARED            CLEARED                       CLEARED            CLEARED

The word in brackets is the change written to the durable log; a transition without one
changes nothing worth a record. "Latching" means high priority and physiological (IEC
60601-1-8 latching alarm signals). ``ESCALATE`` is only fired by the engine for an
unacknowledged medium alarm; it raises the priority to high, which is why an escalated
physiological alarm then latches.

A bed's audio (the signal that sounds at the bedside page) has its own small machine::

    state     PAUSE            EXPIRE      BREAK_THROUGH     RESUME
    ON        PAUSED (paused)  ON          ON                ON
    PAUSED    PAUSED (paused)  ON (pause   ON (pause broken  ON (pause
                               expired)    through)          ended)

A pause lasts at most :data:`MAX_AUDIO_PAUSE` seconds; pausing again restarts the countdown
(never beyond 120 s from now). A new alarm, or an escalation, whose priority is higher than
what was sounding when the pause began breaks through it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

#: IEC 60601-1-8: audio pause of at most this many seconds.
MAX_AUDIO_PAUSE = 120.0


class AlarmState(enum.Enum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    LATCHED = "latched"
    CLEARED = "cleared"


class Trigger(enum.Enum):
    CONDITION_ON = "condition_on"
    CONDITION_OFF = "condition_off"
    ACKNOWLEDGE = "acknowledge"
    ESCALATE = "escalate"


#: States in which an alarm is still shown on its bed (not finished).
OPEN_STATES = frozenset({AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED, AlarmState.LATCHED})
#: States in which an alarm sounds (unless the bed's audio is paused).
SOUNDING_STATES = frozenset({AlarmState.ACTIVE, AlarmState.LATCHED})

_A, _K, _L, _C = (
    AlarmState.ACTIVE,
    AlarmState.ACKNOWLEDGED,
    AlarmState.LATCHED,
    AlarmState.CLEARED,
)
_ON, _OFF, _ACK, _ESC = (
    Trigger.CONDITION_ON,
    Trigger.CONDITION_OFF,
    Trigger.ACKNOWLEDGE,
    Trigger.ESCALATE,
)

#: (state, trigger, latching) -> (next state, change to log or None). Complete: every
#: combination has an entry (the tests check it), so a missing one cannot hide a case.
TRANSITIONS: Mapping[tuple[AlarmState, Trigger, bool], tuple[AlarmState, str | None]] = {
    (_A, _ON, False): (_A, None),
    (_A, _ON, True): (_A, None),
    (_A, _OFF, False): (_C, "cleared"),
    (_A, _OFF, True): (_L, "latched"),
    (_A, _ACK, False): (_K, "acknowledged"),
    (_A, _ACK, True): (_K, "acknowledged"),
    (_A, _ESC, False): (_A, "escalated"),
    (_A, _ESC, True): (_A, "escalated"),
    (_K, _ON, False): (_K, None),
    (_K, _ON, True): (_K, None),
    (_K, _OFF, False): (_C, "cleared"),
    (_K, _OFF, True): (_C, "cleared"),
    (_K, _ACK, False): (_K, None),
    (_K, _ACK, True): (_K, None),
    (_K, _ESC, False): (_K, None),
    (_K, _ESC, True): (_K, None),
    (_L, _ON, False): (_A, "reactivated"),
    (_L, _ON, True): (_A, "reactivated"),
    (_L, _OFF, False): (_L, None),
    (_L, _OFF, True): (_L, None),
    (_L, _ACK, False): (_C, "acknowledged"),
    (_L, _ACK, True): (_C, "acknowledged"),
    (_L, _ESC, False): (_L, None),
    (_L, _ESC, True): (_L, None),
    (_C, _ON, False): (_C, None),
    (_C, _ON, True): (_C, None),
    (_C, _OFF, False): (_C, None),
    (_C, _OFF, True): (_C, None),
    (_C, _ACK, False): (_C, None),
    (_C, _ACK, True): (_C, None),
    (_C, _ESC, False): (_C, None),
    (_C, _ESC, True): (_C, None),
}


def step(state: AlarmState, trigger: Trigger, latching: bool) -> tuple[AlarmState, str | None]:
    """Next state of an alarm and the change to log (``None``: nothing to log)."""
    return TRANSITIONS[(state, trigger, latching)]


class AudioState(enum.Enum):
    ON = "on"
    PAUSED = "paused"


class AudioTrigger(enum.Enum):
    PAUSE = "pause"
    EXPIRE = "expire"
    BREAK_THROUGH = "break_through"
    RESUME = "resume"


_ON_A, _PAUSED = AudioState.ON, AudioState.PAUSED

#: (state, trigger) -> (next state, change to log or None). Complete, like TRANSITIONS.
AUDIO_TRANSITIONS: Mapping[tuple[AudioState, AudioTrigger], tuple[AudioState, str | None]] = {
    (_ON_A, AudioTrigger.PAUSE): (_PAUSED, "paused"),
    (_ON_A, AudioTrigger.EXPIRE): (_ON_A, None),
    (_ON_A, AudioTrigger.BREAK_THROUGH): (_ON_A, None),
    (_ON_A, AudioTrigger.RESUME): (_ON_A, None),
    (_PAUSED, AudioTrigger.PAUSE): (_PAUSED, "paused"),
    (_PAUSED, AudioTrigger.EXPIRE): (_ON_A, "pause expired"),
    (_PAUSED, AudioTrigger.BREAK_THROUGH): (_ON_A, "pause broken through"),
    (_PAUSED, AudioTrigger.RESUME): (_ON_A, "pause ended"),
}


def audio_step(state: AudioState, trigger: AudioTrigger) -> tuple[AudioState, str | None]:
    return AUDIO_TRANSITIONS[(state, trigger)]
