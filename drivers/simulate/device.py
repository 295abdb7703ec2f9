"""The run loop every pty device simulator shares.

A simulator pairs a pure, seeded scenario (each ``step()`` is the next period of the
device's life, with the exact bytes it puts on the wire) with a
:class:`~drivers.simulate.pty.PtyLink`. :class:`PtyDeviceSimulator` plays the scenario in
real (or injected) time: it plugs and unplugs the link as each step says, sleeps to
deadlines on the scenario's own timeline, writes the step's bytes at the end of its
period and drains what the driver sent, keeping the latest in :attr:`~PtyDeviceSimulator.received`.

Device simulators subclass it and override the hooks: :meth:`~PtyDeviceSimulator._bursts`
(what to write and when), :meth:`~PtyDeviceSimulator._heard` (what to do with the bytes
the driver sent).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

from drivers.clock import Clock
from drivers.simulate.pty import PtyLink

#: How many of the latest bytes the driver sent are kept in ``received``.
RECEIVED_KEEP: Final = 256


class ScenarioStep(Protocol):
    """One period of a scenario: whether the cable is in, and the bytes on the wire."""

    @property
    def plugged(self) -> bool: ...

    @property
    def wire(self) -> bytes: ...


class Scenario(Protocol):
    """A pure, deterministic device timeline."""

    @property
    def elapsed(self) -> float:
        """Seconds of the scenario's timeline consumed by the steps taken so far."""
        ...

    def step(self) -> ScenarioStep: ...


ScenarioT = TypeVar("ScenarioT", bound=Scenario)


@dataclass(frozen=True, slots=True)
class Burst:
    """Bytes to write in one go: ``end`` is the scenario time their last byte leaves."""

    plugged: bool
    wire: bytes
    end: float


def default_seed(link_path: str, seed: int | None) -> int:
    """``seed``, or one derived from ``link_path`` so beds differ but runs repeat."""
    return zlib.crc32(link_path.encode()) if seed is None else seed


class PtyDeviceSimulator(Generic[ScenarioT]):
    """Plays ``scenario`` into a pty whose slave is reachable at ``link_path``.

    By default each step is one burst written at the end of its period (the scenario's
    ``elapsed`` after the step), and bytes the driver sends are drained after each write,
    so the pty never fills, the latest :data:`RECEIVED_KEEP` kept in :attr:`received`.
    """

    def __init__(self, scenario: ScenarioT, clock: Clock, link_path: str) -> None:
        self.scenario = scenario
        self._clock = clock
        self._link_path = link_path
        self._link = PtyLink(link_path)
        self._received = bytearray()

    @property
    def port(self) -> str:
        """The symlink the driver opens (present only while plugged)."""
        return self._link_path

    @property
    def plugged(self) -> bool:
        """Whether the simulated cable is in."""
        return self._link.plugged

    @property
    def received(self) -> bytes:
        """The last bytes (up to :data:`RECEIVED_KEEP`) the driver sent to the device."""
        return bytes(self._received)

    async def run(self) -> None:
        """Produce traffic until cancelled; the link is closed on the way out."""
        # Sleep to deadlines on the scenario's own timeline, not for fixed periods, so slow
        # writes and float rounding never make the stream drift.
        start = self._clock.monotonic() - self.scenario.elapsed
        try:
            while True:
                for burst in self._bursts():
                    if burst.plugged and not self._link.plugged:
                        self._link.plug()
                    elif not burst.plugged and self._link.plugged:
                        self._link.unplug()
                    # The burst's last byte leaves the device at the end of its period.
                    await self._clock.sleep(start + burst.end - self._clock.monotonic())
                    if burst.plugged:
                        if burst.wire:
                            self._link.write(burst.wire)
                        self._heard(self._link.read())
        finally:
            self._link.close()

    def _bursts(self) -> Iterable[Burst]:
        """The next bursts to write, in order; by default one per scenario step."""
        step = self.scenario.step()
        return (Burst(step.plugged, step.wire, self.scenario.elapsed),)

    def _heard(self, data: bytes) -> None:
        """Take ``data``, what the driver sent since the last drain (maybe ``b""``)."""
        self._received += data
        del self._received[:-RECEIVED_KEEP]
