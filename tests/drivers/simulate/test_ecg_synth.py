"""The synthetic ECG: rates, beat shapes, scripted rhythms and the truth it records."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulate.ecg_synth import EcgSynth, Segment, generate, normal_beat, pqrst


@pytest.mark.parametrize("fs", [125.0, 250.0, 360.0, 500.0, 1000.0])
def test_sinus_rate_and_r_peaks_at_any_sample_rate(fs: float) -> None:
    x, truth = generate([Segment("sinus", 30.0, rate=80.0)], fs, 30.0, seed=1)
    assert len(x) == round(30 * fs)
    times = np.array([b.time for b in truth.beats])
    assert 60.0 / np.median(np.diff(times)) == pytest.approx(80.0, rel=0.03)
    assert {b.label for b in truth.beats} == {"N"}
    # Each truth beat sits on the R peak: the largest sample within 50 ms.
    half = round(0.05 * fs)
    for b in truth.beats[1:-1]:
        window = x[b.sample - half : b.sample + half + 1]
        assert abs(int(np.argmax(window)) - half) <= max(1, round(0.004 * fs))
        assert 1.0 < x[b.sample] < 1.5  # R about 1.2 mV plus wander and noise


def test_scalar_and_vector_beat_models_agree() -> None:
    dts = np.linspace(-0.3, 0.7, 101)
    vector = normal_beat(dts, 0.8)
    assert [pqrst(float(t), 0.8) for t in dts] == pytest.approx(list(vector), abs=1e-12)


def test_pvcs_bigeminy_and_couplets_are_labelled() -> None:
    _, truth = generate([Segment("sinus", 30.0, pvc_every=2)], 250.0, 30.0)
    labels = "".join(b.label for b in truth.beats)
    assert "NVNVNVNV" in labels
    _, truth = generate([Segment("sinus", 40.0, pvc_every=5, pvc_run=2)], 250.0, 40.0)
    labels = "".join(b.label for b in truth.beats)
    assert "NVVN" in labels and "VVV" not in labels


def test_pvc_is_premature_with_compensatory_pause() -> None:
    _, truth = generate([Segment("sinus", 30.0, rate=60.0, pvc_every=4)], 360.0, 30.0)
    beats = truth.beats
    for i in range(1, len(beats) - 1):
        if beats[i].label == "V":
            before = beats[i].time - beats[i - 1].time
            after = beats[i + 1].time - beats[i].time
            assert before < 0.7 and after > 1.2


def test_episodes_and_their_signals() -> None:
    fs = 250.0
    script = [
        Segment("sinus", 10.0),
        Segment("af", 20.0),
        Segment("vt", 10.0),
        Segment("vf", 10.0),
        Segment("asystole", 10.0),
        Segment("noise", 5.0),
        Segment("lead_off", 5.0, rail_mV=4.0),
        Segment("sinus", 10.0),
    ]
    synth = EcgSynth(script, fs, seed=5)
    chunks = [synth.read(50) for _ in range(int(80 * fs / 50))]
    x = np.concatenate(chunks)
    kinds = [(e.kind, e.onset, e.end) for e in synth.truth.episodes]
    assert kinds == [
        ("afib", 10.0, 30.0),
        ("vt", 30.0, 40.0),
        ("vf", 40.0, 50.0),
        ("asystole", 50.0, 60.0),
        ("noise", 60.0, 70.0),
    ]
    beats = synth.truth.beats
    assert not [b for b in beats if 40.0 <= b.time < 60.0]  # no beats in VF or asystole
    assert all(b.label == "V" for b in beats if 30.5 <= b.time < 39.5)
    af_rr = np.diff([b.time for b in beats if 10.0 <= b.time < 30.0])
    assert np.std(af_rr) / np.mean(af_rr) > 0.1  # irregularly irregular
    vf = x[int(41 * fs) : int(49 * fs)]
    spectrum = np.abs(np.fft.rfft(vf - vf.mean()))
    peak = np.fft.rfftfreq(len(vf), 1 / fs)[int(np.argmax(spectrum))]
    assert 3.5 <= peak <= 6.5
    asys = x[int(51 * fs) : int(59 * fs)]
    assert np.ptp(asys) < 0.3
    assert np.all(x[int(65 * fs) : int(70 * fs)] == 4.0)
    noisy = x[int(60 * fs) : int(65 * fs)]
    assert np.std(np.diff(noisy)) > 10 * np.std(np.diff(x[: int(9 * fs)]))


def test_deterministic_and_streaming() -> None:
    a = EcgSynth([Segment("af", 20.0)], 360.0, seed=9)
    b = EcgSynth([Segment("af", 20.0)], 360.0, seed=9)
    xa = np.concatenate([a.read(90) for _ in range(40)])
    xb = np.concatenate([b.read(90) for _ in range(40)])
    assert np.array_equal(xa, xb)
    assert a.truth == b.truth


def test_loop_replays_the_script() -> None:
    synth = EcgSynth([Segment("sinus", 5.0), Segment("asystole", 5.0)], 250.0, loop=True)
    synth.read(round(25 * 250.0))
    assert [(e.onset, e.end) for e in synth.truth.episodes] == [(5.0, 10.0), (15.0, 20.0)]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match=r"125\.\.1000"):
        EcgSynth([Segment("sinus", 1.0)], 100.0)
    with pytest.raises(ValueError, match="positive"):
        Segment("sinus", 0.0)
    with pytest.raises(ValueError, match=r"10\.\.600"):
        Segment("sinus", 5.0, rate=5.0)
    with pytest.raises(ValueError, match="at least one"):
        EcgSynth([], 250.0)
