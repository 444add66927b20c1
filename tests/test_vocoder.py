"""Vocoder: streaming exactness, batch independence, controls, robustness, levels."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npc_voice.audio import features as F
from npc_voice.audio import vocoder as vocoder_module
from npc_voice.audio.vocoder import HOP, MAX_PULSES, NEUTRAL_CONTROLS, Vocoder
from npc_voice.model import api

SR = F.SAMPLE_RATE


@pytest.fixture(scope="module")
def voc() -> Vocoder:
    return Vocoder()


def speechlike(t: int, seed: int = 0, f0: float = 120.0) -> torch.Tensor:
    """[t, 68] features: a gliding f0, voiced/unvoiced stretches, a formant-like envelope."""
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(t, F.FEATURE_DIM)
    p[:, F.LF0] = math.log(f0) + 0.2 * torch.sin(torch.arange(t) / 7.0 + seed)
    p[:, F.VUV] = (torch.arange(t) % 23 < 16).float()
    centres = torch.tensor(F.env_centres_hz(), dtype=torch.float32)
    formants = -2.0 * torch.log1p(centres / 3000.0) + torch.exp(-((centres - 600.0) / 200.0) ** 2)
    p[:, F.ENV] = -4.0 + formants + 0.3 * torch.randn(t, F.N_ENV, generator=g)
    p[:, F.AP] = torch.tensor([-30.0, -25.0, -20.0, -10.0, -5.0, -2.0])
    return p


def neutral(b: int = 1) -> torch.Tensor:
    return torch.tensor([NEUTRAL_CONTROLS]).repeat(b, 1)


def controls(pitch: float = 1.0, formant: float = 1.0, breathiness: float = 0.0, volume: float = 1.0,
             voicing: float = 1.0, tilt: float = 0.0) -> torch.Tensor:
    return torch.tensor([pitch, formant, breathiness, volume, voicing, tilt])


def test_control_columns_match_the_model_api() -> None:
    from npc_voice.audio import vocoder

    assert (vocoder.CONTROL_PITCH, vocoder.CONTROL_FORMANT, vocoder.CONTROL_BREATHINESS, vocoder.CONTROL_VOLUME,
            vocoder.CONTROL_VOICING, vocoder.CONTROL_TILT, vocoder.N_CONTROLS) == (
        api.CONTROL_PITCH, api.CONTROL_FORMANT, api.CONTROL_BREATHINESS, api.CONTROL_VOLUME, api.CONTROL_VOICING,
        api.CONTROL_TILT, api.N_CONTROLS)


def test_state_spec_names_and_pool_shapes(voc: Vocoder) -> None:
    spec = voc.state_spec()
    assert spec and all(name.startswith("voc_") for name in spec)
    assert all(isinstance(s, api.StateSpec) for s in spec.values())
    state = voc.new_state(3)
    assert {k: tuple(v.shape[1:]) for k, v in state.items()} == {k: s.shape for k, s in spec.items()}


def test_k_frames_at_once_equal_one_frame_k_times(voc: Vocoder) -> None:
    t = 24  # > N_FFT / HOP frames, so the overlap-add tail crosses several call boundaries
    params = torch.stack([speechlike(t, seed=s) for s in range(3)])  # [3, t, 68]
    ctl = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0, 0.0], [1.5, 0.8, 0.3, 0.7, 0.0, 3.0],
                        [0.7, 1.3, 0.0, 1.2, 0.5, -2.0]])
    slots = torch.tensor([2, 1, 3])
    whole_state = voc.new_state(4)
    whole = voc.step(whole_state, slots, params, ctl)
    for chunk in (1, 7):
        state = voc.new_state(4)
        parts = [voc.step(state, slots, params[:, i:i + chunk], ctl) for i in range(0, t, chunk)]
        torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-6, rtol=0)
        for name in state:
            torch.testing.assert_close(state[name], whole_state[name], atol=1e-5, rtol=0)
    assert whole.shape == (3, t * HOP) and whole.abs().max() > 0.01


def test_a_stream_sounds_the_same_in_any_batch(voc: Vocoder) -> None:
    p = speechlike(20, seed=5)
    alone = voc.step(voc.new_state(2), torch.tensor([1]), p[None], neutral())
    # same stream at slot 5 among others, plus two padding rows pointing at scratch slot 0
    batch = torch.stack([speechlike(20, seed=1), p, torch.zeros(20, F.FEATURE_DIM), speechlike(20, seed=2),
                         torch.zeros(20, F.FEATURE_DIM)])
    out = voc.step(voc.new_state(7), torch.tensor([3, 5, 0, 4, 0]), batch, neutral(5))
    torch.testing.assert_close(out[1], alone[0], atol=1e-6, rtol=0)


def test_pulse_slots_cut_to_the_call_leave_the_samples(voc: Vocoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU a call's pulse slots are cut to the most pulses any frame holds: a 100 Hz stream beside
    one at 1 kHz (13 per frame) or alone (2) gives the same samples as stepping every slot. (The
    torch timing path; the compiled one cuts the same way: test_compiled_pulse_timing...)"""
    monkeypatch.setattr(vocoder_module, "_pulses_cpu", None)
    low, high = speechlike(12, seed=3, f0=100.0), speechlike(12, seed=4, f0=1000.0)
    ctl = torch.stack([controls(), controls(pitch=1.5)])
    def slots_used(f0: float) -> int:
        pos, amp, _ = voc._pulses(torch.full((1, 12), f0), torch.zeros(1), torch.zeros(1))
        return voc._used_pulses(pos, amp)[0].shape[-1]

    assert slots_used(100.0) <= 3 and slots_used(1000.0) >= 12  # the cut differs between the calls below
    cut_pair = voc.step(voc.new_state(3), torch.tensor([1, 2]), torch.stack([low, high]), ctl)
    cut_alone = voc.step(voc.new_state(2), torch.tensor([1]), low[None], ctl[:1])
    monkeypatch.setattr(Vocoder, "_used_pulses", staticmethod(lambda p, a: (p, a)))
    every_pair = voc.step(voc.new_state(3), torch.tensor([1, 2]), torch.stack([low, high]), ctl)
    assert torch.equal(cut_pair, every_pair)
    assert torch.equal(cut_alone[0], every_pair[0])


@pytest.mark.skipif(vocoder_module._pulses_cpu is None, reason="numba is not installed")
def test_compiled_pulse_timing_equals_the_torch_one(voc: Vocoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the pulse timing runs compiled (``_pulses_kernel``): the same pulse positions, final
    phases and slot cut as ``_pulses`` + ``_used_pulses``, bit for bit; amplitudes within 2 ULP
    (torch's vectorised sqrt is not correctly rounded, numba's is) — over f0 from 20 Hz to 1 kHz,
    streams with and without a previous frame, 1 to 8 frames per call."""
    gen = torch.Generator().manual_seed(7)
    for _ in range(60):
        b, k = int(torch.randint(1, 24, (1,), generator=gen)), int(torch.randint(1, 9, (1,), generator=gen))
        f0 = torch.exp(torch.empty(b, k).uniform_(math.log(20.0), math.log(1000.0), generator=gen))
        prev = torch.where(torch.rand(b, generator=gen) < 0.3, 0.0, torch.empty(b).uniform_(50, 400, generator=gen))
        phase = torch.rand(b, generator=gen)
        pos, amp, end = voc._pulses(f0, prev, phase)
        pos, amp = voc._used_pulses(pos, amp)
        cpos, camp, cend = voc._pulses_numba(f0, prev, phase)
        assert cpos.shape == pos.shape and 1 <= pos.shape[-1] <= MAX_PULSES
        assert torch.equal(cpos, pos) and torch.equal(cend, end)
        torch.testing.assert_close(camp, amp, rtol=2.5e-7, atol=0.0)
    # and through the whole vocoder: the samples agree to float rounding
    params = torch.stack([speechlike(10, seed=5, f0=110.0), speechlike(10, seed=6, f0=240.0)])
    ctl = torch.stack([controls(), controls(pitch=1.3)])
    compiled = voc.step(voc.new_state(3), torch.tensor([1, 2]), params, ctl)
    monkeypatch.setattr(vocoder_module, "_pulses_cpu", None)
    eager = voc.step(voc.new_state(3), torch.tensor([1, 2]), params, ctl)
    torch.testing.assert_close(compiled, eager, rtol=0.0, atol=1e-5)


@pytest.mark.skipif(vocoder_module._inputs_cpu is None, reason="numba is not installed")
@pytest.mark.parametrize("k", [1, 3, 8])
def test_compiled_step_edges_equal_the_torch_ones(voc: Vocoder, monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """On CPU the work around the frame responses runs compiled (``_inputs_kernel``,
    ``_output_kernel``): the same samples and the same four states as the torch code, over
    consecutive calls with pitch/formant/volume/tilt changing per row, out-of-range and
    non-finite controls and parameters, and padding rows sharing the scratch slot 0."""
    taken: list[int] = []
    compiled = vocoder_module._inputs_cpu

    def counting(*args):  # type: ignore[no-untyped-def]
        taken.append(args[0].shape[0])
        return compiled(*args)

    gen = torch.Generator().manual_seed(k)
    slots = torch.tensor([3, 5, 0, 4, 0, 1])
    real = slots != 0
    state_a = voc.new_state(7)
    for t in state_a.values():
        if t.is_floating_point():
            t.copy_(torch.rand(t.shape, generator=gen) * 0.3)
    state_b = {n: t.clone() for n, t in state_a.items()}
    ctl = torch.stack([controls(pitch=1.4), controls(formant=1.3, volume=0.5), controls(), controls(tilt=20.0),
                       controls(breathiness=float("nan")), controls(volume=30.0, voicing=-1.0)])
    for call in range(4):
        params = torch.stack([speechlike(k, seed=call * 10 + i, f0=90.0 + 40 * i) for i in range(6)])
        if call == 1:
            params[0, 0, F.LF0] = float("nan")
            params[1, -1, F.ENV.start + 3] = float("inf")
            params[3, 0, F.AP.start] = -float("inf")
            ctl[2, 0] = float("nan")
        monkeypatch.setattr(vocoder_module, "_inputs_cpu", counting)
        got = voc.step(state_a, slots, params, ctl)
        monkeypatch.setattr(vocoder_module, "_inputs_cpu", None)  # the torch code, as on CUDA
        want = voc.step(state_b, slots, params, ctl)
        assert got.shape == want.shape == (6, k * HOP) and bool(torch.isfinite(got).all())
        torch.testing.assert_close(got[real], want[real], rtol=0.0, atol=1e-6, msg=f"samples, call {call}")
    assert taken == [6, 6, 6, 6]
    for name in state_a:
        torch.testing.assert_close(state_a[name][1:], state_b[name][1:], rtol=0.0, atol=1e-6, msg=name)
    assert int(state_a["voc_counter"][5, 0]) == 4 * k


def test_deterministic_and_noise_does_not_repeat_per_frame(voc: Vocoder) -> None:
    p = speechlike(30)
    p[:, F.VUV] = 0.0  # noise only
    a, b = voc.synthesize(p), voc.synthesize(p)
    assert torch.equal(a, b)
    frames = a[HOP * 5:HOP * 25].reshape(-1, HOP)
    assert (frames[1:] - frames[:-1]).abs().mean() > 0.1 * frames.abs().mean()


def dominant_f0(x: np.ndarray, lo: float = 50.0, hi: float = 800.0) -> float:
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    lags = np.arange(int(SR / hi), int(SR / lo))
    first = lags[ac[lags] >= 0.9 * ac[lags].max()][0]  # shortest period among the top peaks (no octave-down)
    peak = first + int(np.argmax(ac[first:first + 4]))
    y0, y1, y2 = ac[peak - 1], ac[peak], ac[peak + 1]
    return SR / (peak + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2))  # parabolic interpolation


def steady(f0: float = 150.0, t: int = 60, env: float = -3.0, vuv: float = 1.0) -> torch.Tensor:
    p = torch.zeros(t, F.FEATURE_DIM)
    p[:, F.LF0] = math.log(f0)
    p[:, F.VUV] = vuv
    centres = torch.tensor(F.env_centres_hz(), dtype=torch.float32)
    tilt = -2.0 * torch.log1p(centres / 1000.0)
    bumps = torch.exp(-((centres - 700.0) / 150.0) ** 2) + torch.exp(-((centres - 1800.0) / 200.0) ** 2)
    p[:, F.ENV] = env + tilt + bumps
    p[:, F.AP] = F.AP_MIN_DB
    return p


def test_pitch_follows_f0_and_the_pitch_control(voc: Vocoder) -> None:
    y = voc.synthesize(steady(150.0)).numpy()[HOP * 10:]
    assert dominant_f0(y) == pytest.approx(150.0, rel=0.01)
    up = voc.synthesize(steady(150.0), controls(pitch=2.0)).numpy()[HOP * 10:]
    assert dominant_f0(up) == pytest.approx(300.0, rel=0.01)


def centroid(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    return float((spec * freqs).sum() / spec.sum())


def test_formant_control_moves_the_spectrum(voc: Vocoder) -> None:
    p = steady(120.0)
    base = centroid(voc.synthesize(p).numpy()[HOP * 10:])
    child = centroid(voc.synthesize(p, controls(formant=1.4)).numpy()[HOP * 10:])
    giant = centroid(voc.synthesize(p, controls(formant=0.7)).numpy()[HOP * 10:])
    assert giant < 0.85 * base and child > 1.15 * base


def harmonicity(x: np.ndarray, f0: float, lo: float = 0.0, hi: float = 4000.0) -> float:
    """Power at harmonics over power between them in [lo, hi) Hz (a crude harmonics-to-noise ratio)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    phase = (freqs / f0) % 1.0
    band = (freqs >= lo) & (freqs < hi)
    near = (np.minimum(phase, 1 - phase) < 0.1) & band
    between = (np.abs(phase - 0.5) < 0.2) & band
    return float(spec[near].mean() / spec[between].mean())


def test_breathiness_adds_noise_above_the_low_harmonics(voc: Vocoder) -> None:
    p = steady(150.0)
    clean, breathy = (voc.synthesize(p, controls(breathiness=b)).numpy()[HOP * 10:] for b in (0.0, 0.8))
    assert harmonicity(clean, 150.0, 3000, 6000) > 100.0
    assert harmonicity(breathy, 150.0, 3000, 6000) < harmonicity(clean, 150.0, 3000, 6000) / 10.0
    assert harmonicity(breathy, 150.0, 0, 500) > 0.5 * harmonicity(clean, 150.0, 0, 500)  # low harmonics kept


def test_voicing_zero_whispers(voc: Vocoder) -> None:
    p = steady(150.0)
    whisper = voc.synthesize(p, controls(voicing=0.0)).numpy()[HOP * 10:]
    assert harmonicity(whisper, 150.0) < 3.0  # noise only: no harmonic peaks left
    voiced = voc.synthesize(p).numpy()[HOP * 10:]
    assert float(np.sqrt(np.mean(whisper ** 2))) == pytest.approx(float(np.sqrt(np.mean(voiced ** 2))), rel=0.3)


def test_tilt_brightens_by_about_its_slope(voc: Vocoder) -> None:
    p = steady(150.0)

    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
        return float(10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].mean()))

    flat, bright = (voc.synthesize(p, controls(tilt=t)).numpy()[HOP * 10:] for t in (0.0, 4.0))
    low = band_db(bright, 200, 400) - band_db(flat, 200, 400)  # ~2.3 octaves below 1 kHz: ~ -9 dB
    high = band_db(bright, 3000, 5000) - band_db(flat, 3000, 5000)  # ~2 octaves above: ~ +8 dB
    assert low < -5.0 and high > 5.0


def test_volume_scales_the_output(voc: Vocoder) -> None:
    p = steady(150.0, env=-5.0)
    full = voc.synthesize(p)
    half = voc.synthesize(p, controls(volume=0.5))
    torch.testing.assert_close(half, 0.5 * full, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("vuv", [1.0, 0.0])
def test_output_level_follows_the_envelope(voc: Vocoder, vuv: float) -> None:
    """cheaptrick's envelope is a power spectral density: a flat log envelope c gives rms ~ exp(c)."""
    p = steady(130.0, vuv=vuv)
    p[:, F.ENV] = -3.0  # flat
    rms = float(voc.synthesize(p)[HOP * 10:].pow(2).mean().sqrt())
    assert rms == pytest.approx(math.exp(-3.0), rel=0.15)


def test_garbage_in_gives_finite_bounded_audio(voc: Vocoder) -> None:
    g = torch.Generator().manual_seed(3)
    p = 50.0 * torch.randn(4, 12, F.FEATURE_DIM, generator=g)
    p[0, 3] = float("nan")
    p[1, :, F.LF0] = float("inf")
    p[2, :, F.ENV] = 1e6
    ctl = torch.tensor([[float("nan"), 1.0, 0.0, 1.0, 1.0, 0.0], [100.0, -3.0, 5.0, 1e9, 9.0, 1e9],
                        [0.0, 0.0, -1.0, -1.0, -1.0, -1e9], [1.0, float("inf"), float("nan"), 1.0, float("nan"), 0.0]])
    state = voc.new_state(5)
    out = voc.step(state, torch.tensor([1, 2, 3, 4]), p, ctl)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    again = voc.step(state, torch.tensor([1, 2, 3, 4]), speechlike(12).expand(4, -1, -1).clone(), neutral(4))
    assert torch.isfinite(again).all()


def test_postfilter_deepens_formants_and_keeps_the_level() -> None:
    p = steady(120.0)
    p[:, F.AP] = 0.0  # noise only: a smooth spectrum shows the envelope itself
    p[:, F.VUV] = 0.0
    plain = Vocoder().synthesize(p).numpy()[HOP * 10:]
    sharp = Vocoder(postfilter=0.5).synthesize(p).numpy()[HOP * 10:]

    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
        return float(10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].mean()))

    contrast = [band_db(y, 600, 800) - band_db(y, 1100, 1300) for y in (plain, sharp)]  # formant vs valley
    assert contrast[1] > contrast[0] + 1.0
    assert float(np.sqrt(np.mean(sharp ** 2))) == pytest.approx(float(np.sqrt(np.mean(plain ** 2))), rel=0.2)
    with pytest.raises(ValueError, match="-1"):
        Vocoder(postfilter=-1.0)


def test_envelope_is_reconstructed_and_sharpened_above_1khz_only() -> None:
    from npc_voice.audio.vocoder import N_BINS, _env_to_bins

    m = _env_to_bins().numpy()
    plain = F.interp_matrix(F.env_centres_hz(), N_BINS)
    freqs = np.linspace(0.0, F.NYQUIST, N_BINS)
    assert np.allclose(m.sum(axis=0), 1.0)  # a flat envelope stays flat: the level calibration holds
    np.testing.assert_allclose(m[:, freqs <= 500.0], plain[:, freqs <= 500.0], atol=1e-9)  # low bands interpolated
    centres = F.env_centres_hz()
    env = -4.0 + 1.5 * np.exp(-((centres - 2500.0) / 300.0) ** 2)  # a formant at 2.5 kHz
    peak, valley = np.argmin(np.abs(freqs - 2500.0)), np.argmin(np.abs(freqs - 4000.0))
    contrast = [(env @ x)[peak] - (env @ x)[valley] for x in (plain, m)]
    assert contrast[1] > contrast[0] + 0.1  # the bands' smoothing undone (natural log units)


@pytest.mark.parametrize("path", ["compiled", "per-formant"])
@pytest.mark.parametrize("n_formants", [1, 3, 20])
def test_the_cpu_filter_equals_the_per_row_warp(voc: Vocoder, n_formants: int, path: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the filter runs compiled after one matrix product (``_filter_kernel``: bit for bit the
    per-row gather the GPU path uses); without numba the warp is folded into one matrix per
    distinct formant (20 distinct values take the per-row path), within float rounding of it."""
    if path == "compiled" and vocoder_module._filter_cpu is None:
        pytest.skip("numba is not installed")
    if path == "per-formant":
        monkeypatch.setattr(vocoder_module, "_filter_cpu", None)
    g = torch.Generator().manual_seed(n_formants)
    rows = 96
    env = -6.0 + 2.0 * torch.randn(rows, F.N_ENV, generator=g)
    values = torch.linspace(0.7, 1.4, n_formants)
    formant = values[torch.randint(0, n_formants, (rows,), generator=g)]
    tilt = 3.0 * torch.randn(rows, generator=g)
    mag, phase = voc._filter(env, formant, tilt)
    mag_ref, phase_ref = voc._filter_gather(env, formant, tilt)
    assert torch.allclose(mag, mag_ref, atol=1e-4) and torch.allclose(phase, phase_ref, atol=1e-4)
    assert (mag - mag_ref).abs().max() < 1e-4 < (mag_ref.max() - mag_ref.min())  # not trivially equal
    if path == "compiled":
        assert torch.equal(mag, mag_ref) and torch.equal(phase, phase_ref)


def test_the_warp_matrix_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from npc_voice.audio.vocoder import WARP_CACHE

    monkeypatch.setattr(vocoder_module, "_filter_cpu", None)  # the per-formant matrices (no numba)
    voc = Vocoder()
    env = torch.zeros(4, F.N_ENV)
    for i in range(3 * WARP_CACHE):  # e.g. a client sweeping a formant override
        voc._filter(env, torch.full((4,), 0.7 + 0.01 * i), torch.zeros(4))
        assert len(voc._warp_cache) <= WARP_CACHE
