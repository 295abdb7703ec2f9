"""One ECG lead's whole streaming analysis: beats, signal quality, rhythm.

``EcgPipeline.feed`` takes the next chunk of raw samples (mV, any length) and returns what
was decided during it. Each chunk goes, in this order, through

1. :class:`~gateway.analysis.beats.BeatAnalyzer` (filters, QRS detection, beat class):
   beats come out ``latency`` seconds after their R peak;
2. :class:`~gateway.analysis.quality.SignalQuality`: the chunk's quality index;
3. :class:`~gateway.analysis.rhythm.RhythmAnalyzer`: rhythm episodes, heart rate, ectopy.

The decision latency of the whole pipeline is the beat analyser's (the rhythm stage adds
none beyond its documented confirmation delays). Times in the output are on the stream
axis: seconds since the first sample fed (or since :meth:`reset`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gateway.analysis.beats import BeatAnalyzer
from gateway.analysis.quality import Quality, SignalQuality
from gateway.analysis.rhythm import Ectopy, RhythmAnalyzer, VfEvidence
from gateway.analysis.settings import RhythmSettings
from gateway.analysis.vocabulary import Beat, RhythmEvent


@dataclass(frozen=True, slots=True)
class PipelineOutput:
    """What one chunk produced.

    ``heart_rate`` is in /min (see :mod:`gateway.analysis.rhythm` for the averaging),
    ``None`` when it cannot be given; ``quality`` is the chunk's index 0..1.
    """

    beats: list[Beat]
    events: list[RhythmEvent]
    heart_rate: float | None
    quality: float
    analysable: bool = True
    problem: str = ""
    ectopy: list[Ectopy] = field(default_factory=list)
    pvc_per_minute: float = 0.0
    vf: VfEvidence | None = None


class EcgPipeline:
    """Streaming analysis of one ECG lead sampled at ``fs`` Hz (125-1000)."""

    def __init__(
        self, fs: float, *, mains_hz: float = 50.0, settings: RhythmSettings | None = None
    ) -> None:
        self.fs = float(fs)
        self.mains_hz = mains_hz
        self.settings = settings or RhythmSettings()
        self.beats = BeatAnalyzer(self.fs, mains_hz=mains_hz)
        self.quality = SignalQuality(self.fs, mains_hz=mains_hz)
        self.rhythm = RhythmAnalyzer(self.fs, self.settings, beat_latency=self.beats.latency)
        self.samples_fed = 0

    @property
    def latency(self) -> float:
        """Seconds between an R peak and the chunk in which its beat is reported."""
        return self.beats.latency

    def feed(self, samples_mV: npt.NDArray[np.float64]) -> PipelineOutput:
        """Analyse the next chunk (mV). Non-finite samples count as unanalysable signal."""
        x = np.asarray(samples_mV, dtype=np.float64)
        quality: Quality = self.quality.feed(x)
        clean = self.quality.clean  # non-finite samples zeroed, checked once
        beats = self.beats.feed(clean)
        out = self.rhythm.feed(clean, beats, quality, self.quality.band)
        self.samples_fed += len(x)
        return PipelineOutput(
            beats=beats,
            events=out.events,
            heart_rate=out.heart_rate,
            quality=quality.index,
            analysable=quality.analysable,
            problem=quality.problem,
            ectopy=out.ectopy,
            pvc_per_minute=out.pvc_per_minute,
            vf=out.vf,
        )

    def close(self) -> list[RhythmEvent]:
        """End every open episode at the current stream time (end of a record)."""
        return self.rhythm.close()

    def reset(self) -> list[RhythmEvent]:
        """Start over (a gap in the stream); returns the episodes this closed."""
        closed = self.rhythm.close()
        self.beats.reset()
        self.quality.reset()
        self.rhythm = RhythmAnalyzer(self.fs, self.settings, beat_latency=self.beats.latency)
        self.samples_fed = 0
        return closed
