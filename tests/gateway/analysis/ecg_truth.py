"""Synthetic ECG with known beat times and classes, for detector and classifier tests.

Each beat is a sum of Gaussian waves (P, Q, R, S, T); the R wave (or, for a ventricular
beat, its main deflection) is centred exactly on the beat time, so the true R-peak sample
is known. Deliberately simple and separate from the simulator's generator: the tests need
exact truth, not realism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# (offset from R in s, amplitude in mV, sigma in s)
NORMAL = (
    (-0.20, 0.15, 0.025),
    (-0.03, -0.10, 0.008),
    (0.0, 1.0, 0.010),
    (0.03, -0.25, 0.010),
    (0.26, 0.30, 0.045),
)
VENTRICULAR = ((0.0, 1.5, 0.028), (0.08, -0.6, 0.035), (0.32, -0.45, 0.07))


@dataclass(frozen=True)
class Beat:
    time: float  # s
    kind: str  # "N" normal, "S" premature normal-shaped, "V" ventricular


def rhythm(
    duration: float,
    *,
    rr: float = 0.8,
    pvc_every: int = 0,
    apc_every: int = 0,
    premature: float = 0.6,
    start: float = 0.5,
) -> list[Beat]:
    """Sinus beats every ``rr`` s, with every n-th beat a PVC/APC coming ``premature`` x RR
    early; PVCs are followed by a compensatory pause, APCs reset the sinus node."""
    beats: list[Beat] = []
    t = start
    n = 0
    while t < duration - 0.6:
        n += 1
        if pvc_every and n % pvc_every == 0:
            beats.append(Beat(t - (1 - premature) * rr, "V"))
            t += rr  # compensatory: the next sinus beat keeps its time
            continue
        if apc_every and n % apc_every == 0:
            tp = t - (1 - premature) * rr
            beats.append(Beat(tp, "S"))
            t = tp + rr
            continue
        beats.append(Beat(t, "N"))
        t += rr
    return beats


def render(
    beats: list[Beat],
    fs: float,
    duration: float,
    *,
    t_wave: float = 0.30,
    seed: int = 0,
    noise: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Signal (mV) and the true R-peak sample of every beat."""
    n = round(duration * fs)
    x = np.zeros(n)
    truth = []
    half = round(0.6 * fs)
    for beat in beats:
        centre = round(beat.time * fs)
        waves = VENTRICULAR if beat.kind == "V" else NORMAL
        lo, hi = max(centre - half, 0), min(centre + half, n)
        t = (np.arange(lo, hi) - centre) / fs
        for offset, amp, sigma in waves:
            if waves is NORMAL and offset > 0.2:
                amp = t_wave
            x[lo:hi] += amp * np.exp(-0.5 * ((t - offset) / sigma) ** 2)
        truth.append(centre)
    if noise:
        x += np.random.default_rng(seed).normal(0.0, noise, n)
    return x, np.array(truth, dtype=np.int64)


def feed(stage: object, x: NDArray[np.float64], chunk: float, fs: float) -> list:  # type: ignore[type-arg]
    """Feed ``x`` to ``stage.feed`` in chunks of ``chunk`` s; all outputs concatenated."""
    step = max(1, round(chunk * fs))
    out: list = []  # type: ignore[type-arg]
    for i in range(0, x.size, step):
        out.extend(stage.feed(x[i : i + step]))  # type: ignore[attr-defined]
    return out
