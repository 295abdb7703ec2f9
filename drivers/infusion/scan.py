"""Which unit ids answer on a Modbus line, and which register-map profile fits each.

:func:`scan_line` asks every unit id in turn for the magic value of the first profile
(read requests only). A unit that does not answer within ``answer_within`` seconds is
passed over, so a scan of all 247 ids on a quiet line takes at most ``247 *
answer_within`` plus, per answering unit, one more short read per other profile. A profile
*fits* when its magic value reads back exactly (its table, address, type and word order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.infusion.codec import raw_bits
from drivers.infusion.profile import Profile
from drivers.transport.modbus import ExceptionReply, ModbusTransport, NoResponse, ReadTable


@dataclass(frozen=True, slots=True)
class UnitFound:
    """A unit that answered: the profiles that fit it, and the Modbus exceptions it gave."""

    unit: int
    fits: tuple[str, ...] = ()
    exceptions: dict[str, int] = field(default_factory=dict)


def scan_bound(units: Sequence[int], answer_within: float) -> float:
    """Seconds a scan of ``units`` takes at most when none answers."""
    return len(units) * answer_within


async def scan_line(
    transport: ModbusTransport,
    profiles: Sequence[Profile],
    units: Sequence[int] = range(1, 248),
    *,
    answer_within: float = 0.1,
) -> list[UnitFound]:
    """Units that answer on the (unopened or open) line, in id order. The line is left open
    for the caller to close."""
    found = []
    for unit in units:
        fits: list[str] = []
        exceptions: dict[str, int] = {}
        answered = False
        for i, profile in enumerate(profiles):
            magic = profile.magic
            try:
                regs = await transport.read(
                    unit,
                    ReadTable(magic.table),
                    magic.address,
                    magic.words,
                    answer_within=answer_within,
                )
            except NoResponse:
                if i == 0:
                    break  # silent: do not spend one timeout per profile on it
                continue
            except ExceptionReply as exc:
                answered = True
                exceptions[profile.name] = exc.code
                continue
            answered = True
            if raw_bits(regs, magic) == profile.magic_value & ((1 << 16 * magic.words) - 1):
                fits.append(profile.name)
        if answered:
            found.append(UnitFound(unit, tuple(fits), exceptions))
    return found
