"""The daemon's ECG analysis: every ECG waveform on the hub through its own pipeline.

One :class:`EcgAnalysisService` subscribes to waveforms (ECG leads and pleth). Per ECG
device it runs one :class:`EcgPipeline` on one lead (lead II when the device sends it, else
I, III, then a single-lead strap's unspecified lead), at the waveform's own sample rate,
one call per chunk. Derived readings go back on the hub with the ECG device's id as
``source`` (the reading is derived from that device's signal, and the twin and alarm
engine already file it under that device's bed):

* ``Numeric`` heart rate (``MDC_ECG_HEART_RATE``, /min) and PVCs per minute
  (``ECG_PVC_RATE``, V beats in the last 60 s) at most once per second of signal, both
  ``UNAVAILABLE`` when the rhythm stage gives no heart rate (noise, VF);
* ``DeviceEvent`` for each rhythm episode (asystole, VF, VT, brady, tachy, pause, AF),
  ectopy (couplet, bigeminy, frequent PVCs) and the technical ``ECG_CANNOT_ANALYSE``
  (noise or lead-off episodes), with the priority from :class:`AnalysisSettings`;
  asystole, VF and VT are always high. Event times are wall times: the chunk's
  ``start_time`` anchors the stream axis.

A jump in a waveform's ``sequence`` (samples lost) or in its sample rate closes every open
episode and restarts the pipeline: the analysis never bridges a gap it cannot see.

Pleth cross-check (rules in :func:`gateway.analysis.spo2.cross_check`): each device's pleth
runs through a :class:`PulseDetector`; an ECG asystole on a bed whose oximeter shows a
clearly pulsatile fresh pleth is reported as ``ECG_CANNOT_ANALYSE`` instead (logged with the
evidence), and raised as asystole as soon as the pleth stops being pulsatile. VF is never
vetoed; a pulsatile pleth during VF is logged with its evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

from drivers import codes
from drivers.clock import Clock
from drivers.readings import (
    Condition,
    DeviceEvent,
    MeasurementStatus,
    Numeric,
    Reading,
    Waveform,
)
from gateway.analysis.pipeline import EcgPipeline, PipelineOutput
from gateway.analysis.rhythm import Ectopy
from gateway.analysis.settings import AnalysisSettings
from gateway.analysis.spo2 import PulseDetector, PulseState, cross_check
from gateway.analysis.vocabulary import RhythmEvent, RhythmKind
from gateway.hub import Hub, Subscription

log = structlog.get_logger(__name__)

#: Leads the service analyses, most preferred first.
ECG_LEADS: Final = (
    codes.ECG_LEAD_II,
    codes.ECG_LEAD_I,
    codes.ECG_LEAD_III,
    codes.ECG_LEAD_UNSPECIFIED,  # a single-lead chest strap (Polar H10)
)

CONDITION_OF: Final[dict[RhythmKind, Condition]] = {
    "asystole": Condition.ASYSTOLE,
    "vf": Condition.VENTRICULAR_FIBRILLATION,
    "vt": Condition.VENTRICULAR_TACHYCARDIA,
    "brady": Condition.EXTREME_BRADYCARDIA,
    "tachy": Condition.EXTREME_TACHYCARDIA,
    "pause": Condition.PAUSE,
    "afib": Condition.ATRIAL_FIBRILLATION,
    "noise": Condition.ECG_CANNOT_ANALYSE,
}
ECTOPY_CONDITION: Final = {
    "couplet": Condition.COUPLET,
    "bigeminy": Condition.BIGEMINY,
    "frequent_pvcs": Condition.FREQUENT_PVCS,
}
HR_EVERY_S: Final = 1.0


@dataclass(slots=True)
class _EcgStream:
    code: codes.Code
    fs: float
    pipeline: EcgPipeline
    anchor: float  # wall time of stream time 0
    next_sequence: int
    next_hr: float = 0.0
    vetoed_asystole: bool = False
    asystole_open: bool = False


@dataclass(slots=True)
class _PlethStream:
    fs: float
    detector: PulseDetector
    next_sequence: int
    state: PulseState | None = None
    updated: float = 0.0  # monotonic time of the last chunk


class EcgAnalysisService:
    """Consumes ECG and pleth waveforms from a hub subscription; publishes derived readings.

    ``bed_of`` maps a device id to its bed (for the pleth cross-check); ``clock`` gives the
    monotonic time used to judge whether a pleth is fresh.
    """

    def __init__(
        self,
        hub: Hub,
        clock: Clock,
        settings: AnalysisSettings | None = None,
        *,
        bed_of: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.hub = hub
        self.clock = clock
        self.settings = settings or AnalysisSettings()
        self.bed_of = bed_of
        self._ecg: dict[str, _EcgStream] = {}
        self._pleth: dict[str, _PlethStream] = {}
        self.resets = 0
        self.vetoes = 0

    @staticmethod
    def accepts(reading: Reading) -> bool:
        """What the service's hub subscription should be offered."""
        return isinstance(reading, Waveform) and (
            reading.code in ECG_LEADS or reading.code == codes.PLETH
        )

    async def run(self, feed: Subscription) -> None:
        async for reading in feed:
            self.handle(reading)

    def handle(self, reading: Reading) -> None:
        """Process one reading (synchronously; publishes what it derives)."""
        if not isinstance(reading, Waveform):
            return
        try:
            if reading.code == codes.PLETH:
                self._on_pleth(reading)
            elif reading.code in ECG_LEADS:
                self._on_ecg(reading)
        except ValueError as exc:
            # An unsupported sample rate: counted in the log, never a crash of the service.
            log.warning("waveform not analysed", source=reading.source, error=str(exc))

    # -- ECG -------------------------------------------------------------------------------
    def _on_ecg(self, wave: Waveform) -> None:
        stream = self._ecg.get(wave.source)
        if stream is not None and wave.code != stream.code:
            preferred = ECG_LEADS.index(wave.code) < ECG_LEADS.index(stream.code)
            if not preferred:
                return  # another lead of a device already analysed on a better one
            self._close(wave.source, stream, wave.start_time)
            stream = None
        if stream is not None and (
            wave.sequence != stream.next_sequence or wave.sample_rate != stream.fs
        ):
            self.resets += 1
            log.info(
                "ECG stream gap: analysis restarted",
                source=wave.source,
                expected=stream.next_sequence,
                got=wave.sequence,
            )
            self._close(wave.source, stream, wave.start_time)
            stream = None
        if stream is None:
            pipeline = EcgPipeline(
                wave.sample_rate, mains_hz=self.settings.mains_hz, settings=self.settings.rhythm
            )
            stream = _EcgStream(
                wave.code, wave.sample_rate, pipeline, wave.start_time, wave.sequence
            )
            self._ecg[wave.source] = stream
        stream.next_sequence = wave.sequence + len(wave.samples)
        scale = 1e-3 if wave.unit.ucum == "uV" else 1.0
        out = stream.pipeline.feed(wave.samples * scale)
        self._publish(wave.source, stream, out)

    def _close(self, source: str, stream: _EcgStream, wall: float) -> None:
        for event in stream.pipeline.close():
            self._rhythm_event(source, stream, event, wall_end=wall)
        self._ecg.pop(source, None)

    def _publish(self, source: str, stream: _EcgStream, out: PipelineOutput) -> None:
        for event in out.events:
            self._rhythm_event(source, stream, event)
        for ectopy in out.ectopy:
            self._ectopy(source, stream, ectopy)
        if stream.vetoed_asystole:
            self._recheck_veto(source, stream)
        t = stream.pipeline.samples_fed / stream.fs
        if t >= stream.next_hr:
            stream.next_hr = t + HR_EVERY_S
            value = None if out.heart_rate is None else round(out.heart_rate, 1)
            self.hub.publish(
                Numeric(
                    source=source,
                    code=codes.ECG_PVC_RATE,
                    value=None if value is None else out.pvc_per_minute,
                    unit=codes.BEATS_PER_MINUTE,
                    time=stream.anchor + t,
                    status=MeasurementStatus.UNAVAILABLE
                    if value is None
                    else MeasurementStatus.NONE,
                )
            )
            self.hub.publish(
                Numeric(
                    source=source,
                    code=codes.ECG_HEART_RATE,
                    value=value,
                    unit=codes.BEATS_PER_MINUTE,
                    time=stream.anchor + t,
                    status=MeasurementStatus.UNAVAILABLE
                    if value is None
                    else MeasurementStatus.NONE,
                )
            )

    def _event(
        self, source: str, condition: Condition, active: bool, time: float, detail: str
    ) -> None:
        self.hub.publish(
            DeviceEvent(
                source=source,
                condition=condition,
                active=active,
                time=time,
                detail=detail,
                priority=self.settings.priority(condition),
            )
        )

    def _rhythm_event(
        self, source: str, stream: _EcgStream, event: RhythmEvent, wall_end: float | None = None
    ) -> None:
        condition = CONDITION_OF[event.kind]
        active = event.end is None
        when = stream.anchor + (event.onset if active else event.end or event.onset)
        if wall_end is not None and not active:
            when = wall_end
        detail = event.detail
        if event.kind == "asystole":
            stream.asystole_open = active
            if active:
                check = cross_check("asystole", *self._pleth_of(source))
                if check.verdict == "vetoed":
                    self.vetoes += 1
                    stream.vetoed_asystole = True
                    log.warning(
                        "ECG asystole vetoed by a pulsatile pleth",
                        source=source,
                        evidence=check.reason,
                        ecg=detail,
                    )
                    self._event(
                        source,
                        Condition.ECG_CANNOT_ANALYSE,
                        True,
                        when,
                        f"asystole vetoed: {check.reason}",
                    )
                    return
            elif stream.vetoed_asystole:
                stream.vetoed_asystole = False
                self._event(source, Condition.ECG_CANNOT_ANALYSE, False, when, "QRS seen again")
                return
        if event.kind == "vf" and active:
            check = cross_check("vf", *self._pleth_of(source))
            if check.reason != "no fresh pleth":
                # Never vetoed; the evidence goes with the alarm and into the log.
                log.warning(
                    "ECG VF alarm with pleth evidence", source=source, evidence=check.reason
                )
                detail = f"{detail}; {check.reason}"
        self._event(source, condition, active, when, detail)

    def _recheck_veto(self, source: str, stream: _EcgStream) -> None:
        check = cross_check("asystole", *self._pleth_of(source))
        if check.verdict == "vetoed" or not stream.asystole_open:
            return
        stream.vetoed_asystole = False
        when = stream.anchor + stream.pipeline.samples_fed / stream.fs
        log.warning("asystole veto lifted: pleth no longer pulsatile", source=source)
        self._event(source, Condition.ECG_CANNOT_ANALYSE, False, when, "veto lifted")
        self._event(source, Condition.ASYSTOLE, True, when, f"pleth: {check.reason}")

    def _ectopy(self, source: str, stream: _EcgStream, ectopy: Ectopy) -> None:
        condition = ECTOPY_CONDITION[ectopy.kind]
        when = stream.anchor + ectopy.time
        self._event(source, condition, ectopy.active, when, ectopy.detail)
        if ectopy.kind == "couplet":
            self._event(source, condition, False, when, "")

    # -- pleth -----------------------------------------------------------------------------
    def _on_pleth(self, wave: Waveform) -> None:
        stream = self._pleth.get(wave.source)
        if stream is not None and (
            wave.sequence != stream.next_sequence or wave.sample_rate != stream.fs
        ):
            stream = None
        if stream is None:
            stream = _PlethStream(wave.sample_rate, PulseDetector(wave.sample_rate), wave.sequence)
            self._pleth[wave.source] = stream
        stream.next_sequence = wave.sequence + len(wave.samples)
        stream.state = stream.detector.feed(wave.samples)
        stream.updated = self.clock.monotonic()

    def _pleth_of(self, ecg_source: str) -> tuple[PulseState | None, float | None]:
        """The freshest pleth on the ECG device's bed, and its age in seconds."""
        bed = self.bed_of(ecg_source)
        if bed is None:
            return None, None
        best: _PlethStream | None = None
        for source, stream in self._pleth.items():
            if self.bed_of(source) == bed and (best is None or stream.updated > best.updated):
                best = stream
        if best is None:
            return None, None
        return best.state, self.clock.monotonic() - best.updated
