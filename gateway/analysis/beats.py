"""Beat classification (EC57 classes N, S, V, F, Q) on top of the streaming QRS detector.

Each detected beat is cut from the clean signal (``WINDOW_BEFORE`` .. ``WINDOW_AFTER``
around the R peak) and compared with the patient's own morphology clusters: up to
``MAX_CLUSTERS`` running templates, matched by Pearson correlation over a +-``SHIFT``
alignment search, all clusters in one matrix product. The dominant (normal) morphology is
the cluster with the most beats that came on time (RR >= ``REGULAR`` x the running normal
RR, counts decaying per beat), so PVCs in bigeminy or couplets never become "normal", while
a lasting change (a lead swapped, a new conduction pattern) takes over within about 20
beats.

A beat is then labelled from morphology (correlation with the dominant template, QRS width
against the dominant's) and timing (RR against the median of recent intervals between two
normal beats; the pause after an ectopic beat is left out):

* no dominant morphology yet (the first few beats): ``Q``;
* correlation >= ``N_CORRELATION``: ``S`` if premature (RR < ``PREMATURE`` x normal RR),
  else ``N``; but in a regular rhythm ``V`` if of a (non-dominant) cluster whose beats
  were mostly V;
* different morphology and premature (< ``V_PREMATURE``), or ``V_WIDER`` wider than the
  dominant QRS, or of a cluster whose beats were mostly V: ``V``; while the rhythm is
  irregular (more than ``IRREGULAR`` of the recent beats of the dominant morphology came
  premature, as in AF) prematurity and width count only for a clearly different beat
  (correlation below ``IRREGULAR_V_CORRELATION``): aberrant conduction widens
  supraventricular beats there;
* different, on time, fairly similar (>= ``F_CORRELATION``) and a little wider: ``F``;
* otherwise ``N`` (a change of shape alone, on time and not wide, is not ectopy).

The compensatory pause (the RR after an ectopic beat) is not used: waiting for the next
beat would break the fixed decision latency, which is the detector's (``qrs.LATENCY``,
0.3 s after the R peak). Times in seconds, amplitudes in mV.
"""

from __future__ import annotations

from statistics import median

import numpy as np
from numpy.typing import NDArray

from gateway.analysis.qrs import QrsDetection, QrsDetector
from gateway.analysis.vocabulary import Beat, BeatLabel

#: Beat window around the R peak (s).
WINDOW_BEFORE = 0.10
WINDOW_AFTER = 0.12
#: Alignment search (s) when correlating with a template.
SHIFT = 0.015
#: Morphology clusters kept per patient.
MAX_CLUSTERS = 6
#: Correlation at which a beat joins a cluster.
JOIN = 0.90
#: Per-beat decay of cluster counts: the dominant morphology follows lasting changes.
DECAY = 0.97
#: Template learning rate for beats that join a cluster.
LEARN = 0.05
#: RR below this fraction of the running normal RR is premature (for S).
PREMATURE = 0.80
#: RR at or above this fraction is on time: counts towards the dominant morphology.
REGULAR = 0.90
#: Correlation with the dominant template at or above which morphology is normal.
N_CORRELATION = 0.90
#: A beat of different morphology is V when its RR is below this fraction, ...
V_PREMATURE = 0.85
#: ... or when its QRS is this much wider (s) than the dominant's, ...
V_WIDER = 0.08
#: ... or when most beats of its morphology cluster were V.
ECTOPIC_LEARN = 0.2
#: Beats without a normal one after which the RR reference follows every beat.
RELEARN = 8
#: Share of recent beats of the dominant morphology that came premature (< ``V_PREMATURE``)
#: above which the rhythm counts as irregular (AF, frequent APCs): prematurity and width
#: then say little, and count for V only when the correlation is below
#: ``IRREGULAR_V_CORRELATION``. The share is a running mean over about ``EARLY_BEATS``.
IRREGULAR = 0.15
IRREGULAR_V_CORRELATION = 0.5
EARLY_BEATS = 32
#: Otherwise it is F (fusion) when still fairly similar but wider (s).
F_CORRELATION = 0.70
F_WIDER = 0.03


class _Cluster:
    __slots__ = ("ectopic", "regular", "template", "width")

    def __init__(self, template: NDArray[np.float64], width: float) -> None:
        self.template = template
        self.width = width
        #: Decaying count of this morphology's beats that came on time (not premature);
        #: the dominant, normal morphology is the one with most.
        self.regular = 0.0
        #: Decaying share of this morphology's beats labelled V (0..1).
        self.ectopic = 0.0


class BeatAnalyzer:
    """Raw ECG in mV, chunks of any length, in; classified beats out after ``latency`` s.

    ``fs`` is the sampling rate in Hz (125..1000); ``mains_hz`` the local mains frequency
    (50 or 60 Hz) to notch out.
    """

    def __init__(self, fs: float, *, mains_hz: float = 50.0) -> None:
        self.fs = float(fs)
        self._detector = QrsDetector(self.fs, mains_hz=mains_hz)
        self.latency: float = self._detector.latency
        self._before = round(WINDOW_BEFORE * self.fs)
        self._after = round(WINDOW_AFTER * self.fs)
        self._shift = max(1, round(SHIFT * self.fs))
        m = self._before + self._after + 1
        # Row j of seg[_shifts] is the beat window shifted by j - SHIFT samples.
        self._shifts = np.arange(2 * self._shift + 1)[:, None] + np.arange(m)[None, :]
        self.reset()

    def reset(self) -> None:
        """Forget the patient: detector state, templates and RR history."""
        self._detector.reset()
        self._clusters: list[_Cluster] = []
        # Templates (zero mean, unit norm), one row per cluster slot; empty slots are 0.
        self._bank = np.zeros((MAX_CLUSTERS, self._before + self._after + 1), dtype=np.float64)
        self._slots: list[_Cluster | None] = [None] * MAX_CLUSTERS
        self._dominant: _Cluster | None = None
        self._last_r: int | None = None
        self._normal_rr: list[float] = []
        self._since_normal = 0
        self._last_label: BeatLabel = "Q"
        self._early = 0.0

    def feed(self, samples: NDArray[np.float64]) -> list[Beat]:
        """Process the next chunk (mV); return the beats decided in it, in order."""
        return [self._classify(d) for d in self._detector.feed(samples)]

    def _classify(self, det: QrsDetection) -> Beat:
        r = det.sample
        t = r / self.fs
        rr = None if self._last_r is None else (r - self._last_r) / self.fs
        self._last_r = r
        s = self._shift
        seg = self._detector.clean_history(r - self._before - s, r + self._after + s + 1)
        if seg.size != self._before + self._after + 2 * s + 1:
            return Beat(r, t, "Q", rr)
        width = self._width(seg[s:-s])
        windows = seg[self._shifts]
        # ufunc reduce: what ndarray.sum and .min call, minus a Python-level wrapper.
        sums = np.add.reduce(windows, axis=1)
        m = windows.shape[1]
        var = np.einsum("ij,ij->i", windows, windows) - sums * sums / m
        if not np.minimum.reduce(var) > 1e-12:  # (a NaN fails too, as with .all())
            return Beat(r, t, "Q", rr, width)
        norms = np.sqrt(var)
        # Templates have zero mean, so the window's own mean drops out of the product.
        corrs = (windows @ self._bank.T) / norms[:, None]
        ratio = 1.0
        if rr is not None and self._normal_rr:
            ratio = rr / median(self._normal_rr)

        # Morphology cluster: join the best-matching template or start a new one.
        shift, row = divmod(int(corrs.argmax()), MAX_CLUSTERS)
        joined = self._slots[row]
        if joined is not None and float(corrs[shift, row]) >= JOIN:
            cluster = joined
            aligned = (windows[shift] - sums[shift] / m) / norms[shift]
            cluster.template += LEARN * (aligned - cluster.template)
            cluster.template /= float(np.sqrt(cluster.template @ cluster.template))
            cluster.width += LEARN * (width - cluster.width)
        else:
            cluster = self._add((windows[s] - sums[s] / m) / norms[s], width)
        for c in self._clusters:
            c.regular *= DECAY
        if ratio >= REGULAR:
            cluster.regular += 1.0
        leader = max(self._clusters, key=lambda c: c.regular)
        if leader.regular >= 3.0 * DECAY and (
            self._dominant is None or leader.regular > self._dominant.regular
        ):
            self._dominant = leader
        dominant = self._dominant
        if dominant is None:
            return Beat(r, t, "Q", rr, width)

        if cluster is dominant and cluster is joined:
            corr = float(corrs[shift, row])
        else:
            corr = float(np.maximum.reduce((windows @ dominant.template) / norms))
        irregular = self._early > IRREGULAR
        if cluster is dominant:
            self._early += (float(ratio < V_PREMATURE) - self._early) / EARLY_BEATS
        # The dominant morphology is normal by definition, whatever its beats were called.
        ectopic = 0.0 if cluster is dominant else cluster.ectopic
        label = self._label(corr, width - dominant.width, ratio, ectopic, irregular)
        cluster.ectopic += ECTOPIC_LEARN * (float(label == "V") - cluster.ectopic)
        self._since_normal = 0 if label == "N" else self._since_normal + 1
        # The RR reference follows intervals between two normal beats (the pause after an
        # ectopic beat is no normal interval: with it, sinus beats in trigeminy would look
        # premature); after a long run without one (a new rhythm, a lead change) it
        # follows every beat so it cannot freeze.
        normal_interval = label == "N" and self._last_label == "N"
        self._last_label = label
        if rr is not None and (normal_interval or self._since_normal >= RELEARN):
            self._normal_rr.append(rr)
            if len(self._normal_rr) > 8:
                del self._normal_rr[0]
        return Beat(r, t, label, rr, width, corr)

    @staticmethod
    def _label(
        corr: float, wider: float, ratio: float, ectopic: float, irregular: bool = False
    ) -> BeatLabel:
        """The class from correlation, extra width (s), RR ratio, the cluster's V share and
        whether the rhythm is irregular (prematurity is then weak evidence)."""
        if corr >= N_CORRELATION:
            # Similar shape, but of a morphology mostly called V: still ventricular (in a
            # regular rhythm; in AF such a cluster may be aberrant conduction).
            if ectopic > 0.5 and not irregular:
                return "V"
            return "S" if ratio < PREMATURE else "N"
        # In an irregular rhythm prematurity says little and aberrant conduction widens
        # supraventricular beats: only a clearly different shape counts there.
        clear = not irregular or corr < IRREGULAR_V_CORRELATION
        if (clear and (ratio < V_PREMATURE or wider > V_WIDER)) or ectopic > 0.5:
            return "V"
        if corr >= F_CORRELATION and wider > F_WIDER:
            return "F"
        return "N"

    def _add(self, template: NDArray[np.float64], width: float) -> _Cluster:
        """A new cluster in a free slot, evicting the least regular non-dominant one."""
        if None not in self._slots:
            weakest = min(
                (c for c in self._clusters if c is not self._dominant), key=lambda c: c.regular
            )
            self._clusters.remove(weakest)
            self._slots[self._slots.index(weakest)] = None
        row = self._slots.index(None)
        self._bank[row] = template
        cluster = _Cluster(self._bank[row], width)  # a view: updates land in the bank
        self._slots[row] = cluster
        self._clusters.append(cluster)
        return cluster

    def _width(self, core: NDArray[np.float64]) -> float:
        """QRS duration (s): span where the slope exceeds a fifth of its maximum."""
        slope = np.abs(core[1:] - core[:-1])  # np.diff, without its Python wrapper
        peak = float(np.maximum.reduce(slope)) if slope.size else 0.0
        if peak == 0.0:
            return 0.0
        above = (slope > 0.2 * peak).nonzero()[0]
        return float(above[-1] - above[0] + 1) / self.fs
