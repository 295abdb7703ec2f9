"""The last few seconds of each bed's waveforms, thinned for drawing on the page.

The page draws ECG and pleth at 25 mm/s: about 95 CSS pixels a second, so more than
``max_rate`` (125 Hz by default) samples a second cannot be seen. Channels faster than that
are thinned by a whole factor ``k``, keeping from each group of ``k`` samples the one
farthest from the sample kept before it, so a QRS spike stays a spike instead of being
stepped over.
This copy is for display only; the store keeps every sample.

Thinning is lazy: :meth:`WaveformBuffer.add` only queues a chunk (per-sample Python work for
every bed all the time cost 6 % of a 16-bed ward's event loop while nobody looked at a bed
view); :meth:`WaveformBuffer.recent` thins a bed's queued chunks in arrival order before
answering, so a polling page gets exactly what thinning on arrival gave. A queue longer
than the window plus ``LAZY_MARGIN_S`` drops its oldest chunks only counting them (cursors,
gaps and the carried remainder stay exact; their thinned samples would have rolled off
anyway); the spike choice of the first thinned group after them then starts from that
group's own first sample instead of the previous kept one, ``LAZY_MARGIN_S`` before the
oldest sample shown, where the difference has died out in practice.

Each channel counts the samples it has kept since it was first seen (``end``); the page asks
for those after the count it already has, so a poll costs a few hundred numbers. A gap in the
device's ``sequence`` is kept as one ``null`` so the page breaks the trace there instead of
joining across missing data.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.readings import Reading, Waveform

#: Highest sample rate (Hz) kept per channel.
DEFAULT_MAX_RATE = 125.0
#: Seconds of each channel kept.
DEFAULT_SECONDS = 10.0
#: Seconds of unthinned chunks queued beyond the window before the oldest are only counted.
LAZY_MARGIN_S = 2.0


@dataclass(slots=True)
class _Channel:
    code: str
    unit: str
    source_rate: float
    factor: int
    capacity: int
    samples: deque[float | None] = field(default_factory=deque)
    end: int = 0
    end_time: float = 0.0
    next_sequence: int | None = None
    pending: list[float] = field(default_factory=list)
    last: float | None = None

    @property
    def rate(self) -> float:
        return self.source_rate / self.factor

    def keep(self, value: float | None) -> None:
        self.last = value
        self.samples.append(value)
        if len(self.samples) > self.capacity:
            self.samples.popleft()
        self.end += 1


class WaveformBuffer:
    """Recent, thinned samples per (bed, signal code), fed from a hub subscription.

    ``bed_of`` maps a device id to its bed (None: not a configured device, ignored).
    """

    def __init__(
        self,
        bed_of: Callable[[str], str | None],
        *,
        max_rate: float = DEFAULT_MAX_RATE,
        seconds: float = DEFAULT_SECONDS,
    ) -> None:
        if not (max_rate > 0 and seconds > 0):
            raise ValueError("max_rate and seconds must be > 0")
        self.bed_of = bed_of
        self.max_rate = max_rate
        self.seconds = seconds
        self._channels: dict[str, dict[str, _Channel]] = {}
        # Per bed and signal code: chunks not thinned yet, and how many samples they hold.
        self._queued: dict[str, dict[str, tuple[deque[Waveform], list[int]]]] = {}

    @staticmethod
    def accepts(reading: Reading) -> bool:
        """Hub filter: only waveforms."""
        return isinstance(reading, Waveform)

    def add(self, wave: Waveform) -> None:
        """Queue a chunk for its bed; it is thinned when the bed's waveforms are asked for."""
        bed = self.bed_of(wave.source)
        if bed is None or not (wave.sample_rate > 0 and math.isfinite(wave.sample_rate)):
            return
        queues = self._queued.setdefault(bed, {})
        queue, count = queues.setdefault(wave.code.refid, (deque(), [0]))
        queue.append(wave)
        count[0] += len(wave.samples)
        limit = (self.seconds + LAZY_MARGIN_S) * wave.sample_rate
        while count[0] - len(queue[0].samples) >= limit:
            oldest = queue.popleft()
            count[0] -= len(oldest.samples)
            self._apply(bed, oldest, thin=False)

    def _catch_up(self, bed: str) -> None:
        for queue, count in self._queued.get(bed, {}).values():
            while queue:
                self._apply(bed, queue.popleft(), thin=True)
            count[0] = 0

    def _apply(self, bed: str, wave: Waveform, *, thin: bool) -> None:
        """Thin ``wave`` into its channel, or (``thin`` false) only advance the channel's
        cursor, sequence, remainder and end time as thinning would have."""
        channels = self._channels.setdefault(bed, {})
        key = wave.code.refid
        channel = channels.get(key)
        if channel is None or channel.source_rate != wave.sample_rate:
            factor = max(1, math.ceil(wave.sample_rate / self.max_rate))
            channel = _Channel(
                key,
                wave.unit.ucum,
                wave.sample_rate,
                factor,
                capacity=max(1, int(self.seconds * wave.sample_rate / factor)),
            )
            if key in channels:
                channel.end = channels[key].end  # the page's cursor stays meaningful
                channel.keep(None)
            channels[key] = channel
        elif channel.next_sequence is not None and wave.sequence != channel.next_sequence:
            channel.pending.clear()
            channel.keep(None)
        channel.next_sequence = wave.sequence + len(wave.samples)
        k = channel.factor
        if not thin:
            total = len(channel.pending) + len(wave.samples)
            tail = total % k
            channel.end += total // k
            channel.samples.clear()  # what it held is older than the window
            channel.last = None
            carried = channel.pending + [float(x) for x in wave.samples[-tail:]] if tail else []
            channel.pending = carried[-tail:] if tail else []
            channel.end_time = wave.start_time + len(wave.samples) / wave.sample_rate
            return
        values = channel.pending + [float(x) for x in wave.samples]
        whole = len(values) - len(values) % k
        if k == 1:
            for x in values:
                channel.keep(x if math.isfinite(x) else None)
        else:
            groups = np.asarray(values[:whole], dtype=np.float64).reshape(-1, k)
            for group in groups:
                finite = group[np.isfinite(group)]
                if finite.size == 0:
                    channel.keep(None)
                    continue
                ref = finite[0] if channel.last is None else channel.last
                channel.keep(float(finite[int(np.argmax(np.abs(finite - ref)))]))
        channel.pending = values[whole:]
        channel.end_time = wave.start_time + len(wave.samples) / wave.sample_rate

    async def consume(self, subscription: Any) -> None:
        """Keep every waveform from a hub subscription, forever."""
        async for reading in subscription:
            if isinstance(reading, Waveform):
                self.add(reading)

    def recent(self, bed: str, after: dict[str, int] | None = None) -> dict[str, Any]:
        """JSON-ready channels of ``bed``: for each, the kept samples after ``after[code]``
        (all kept ones if absent or too old) and ``end``, the count to pass next time.

        ``{"channels": [{"code", "unit", "rate" (Hz), "end", "end_time" (UTC s),
        "samples": [float | null]}]}``
        """
        after = after or {}
        self._catch_up(bed)
        out = []
        for code, channel in sorted(self._channels.get(bed, {}).items()):
            have = len(channel.samples)
            start = channel.end - have
            since = after.get(code)
            skip = 0 if since is None or since < start or since > channel.end else since - start
            out.append(
                {
                    "code": code,
                    "unit": channel.unit,
                    "rate": channel.rate,
                    "end": channel.end,
                    "end_time": channel.end_time,
                    # Five significant figures are far below a pixel; JSON stays small.
                    "samples": [
                        None if x is None else float(f"{x:.5g}")
                        for x in list(channel.samples)[skip:]
                    ],
                }
            )
        return {"channels": out}
