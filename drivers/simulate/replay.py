"""Replay a capture onto a pty, so a whole daemon can run on a recording.

Works for any serial driver: the capture holds the bytes as they arrived and when
(``drivers.capture``), and the replay writes them to a :class:`PtyLink` with the same
spacing on the injected clock, looping at the end (after a pause of one typical gap) unless
told not to, in which case it falls silent after one pass. The driver under test cannot tell
it from the device.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from drivers.capture import read_capture
from drivers.clock import Clock
from drivers.simulate.pty import PtyLink

#: Longest pause the replay keeps between two chunks, seconds; a capture that was paused
#: for minutes (a technician's lunch) replays without the wait.
MAX_GAP = 5.0


class ReplaySimulator:
    """Plays ``capture`` into a pty reached at ``link_path`` (``Simulator`` protocol)."""

    def __init__(self, capture: Path, clock: Clock, link_path: str, *, loop: bool = True) -> None:
        # Read (and validate) the whole capture up front: a bad line is a start-up error,
        # not a surprise in the middle of a replay.
        self._chunks = list(read_capture(capture))
        if not self._chunks:
            raise ValueError(f"{capture}: the capture holds no traffic")
        self._clock = clock
        self._link = PtyLink(link_path)
        self._loop = loop
        self.bytes_written = 0
        self.passes = 0

    @property
    def port(self) -> str:
        return self._link.link_path

    async def run(self) -> None:
        self._link.plug()
        try:
            # Like a device switched on, start after a moment: a driver opening the port
            # right away sees the recording from its first byte.
            await self._clock.sleep(self._typical_gap())
            while True:
                await self._play_once()
                self.passes += 1
                if not self._loop:
                    # Played once: the device falls silent but stays plugged in, as a real
                    # one that stopped sending would, until the owner stops the replay.
                    await asyncio.Event().wait()
        finally:
            self._link.close()

    async def _play_once(self) -> None:
        previous = self._chunks[0][0]
        for t, data in self._chunks:
            gap = min(MAX_GAP, max(0.0, t - previous))
            previous = t
            if gap:
                await self._clock.sleep(gap)
            self.bytes_written += self._link.write(data)
            self._link.read()  # drain whatever the driver sent, as a device would
        await self._clock.sleep(self._typical_gap())

    def _typical_gap(self) -> float:
        times = [t for t, _ in self._chunks]
        gaps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
        return min(MAX_GAP, gaps[len(gaps) // 2]) if gaps else 0.1
