"""Feature layout and WORLD analysis (analysis <-> vocoder calibration, the resumable CLI)."""
from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from npc_voice.audio import features as F

SR = F.SAMPLE_RATE


def test_layout_is_the_one_the_model_uses() -> None:
    assert F.FEATURE_DIM == 68 and (F.LF0, F.VUV) == (0, 1)
    assert (F.ENV.start, F.ENV.stop, F.AP.start, F.AP.stop) == (2, 62, 62, 68)
    assert (F.N_ENV, F.N_AP) == (60, 6) and len(F.AP_EDGES_HZ) == F.N_AP + 1
    c = F.env_centres_hz()
    assert c[0] == 0.0 and c[-1] == pytest.approx(SR / 2) and np.all(np.diff(c) > 0)


def test_filterbank_then_interpolation_keeps_a_smooth_envelope() -> None:
    n_bins = 513
    fb = F.env_filterbank(n_bins)
    np.testing.assert_allclose(fb.sum(axis=1), 1.0, atol=1e-9)
    freqs = np.linspace(0, SR / 2, n_bins)
    env = -2.0 * np.log1p(freqs / 1000.0) + np.exp(-(((freqs - 700.0) / 300.0) ** 2))
    back = (fb @ env) @ F.interp_matrix(F.env_centres_hz(), n_bins)
    assert np.abs(back - env).max() < 0.1


@pytest.fixture(scope="module")
def tf() -> ModuleType:  # npc_voice.train.features; skipped loudly without pyworld
    from npc_voice.train import features as tf

    try:
        tf.load_pyworld()
    except ModuleNotFoundError as e:
        pytest.skip(f"pyworld missing: {e}")
    return tf


def glide(t: int) -> torch.Tensor:
    p = torch.zeros(t, F.FEATURE_DIM)
    p[:, F.LF0] = torch.log(torch.linspace(110.0, 180.0, t))
    p[:, F.VUV] = 1.0
    c = torch.tensor(F.env_centres_hz(), dtype=torch.float32)
    p[:, F.ENV] = -3.0 - 1.5 * torch.log1p(c / 1000.0) + torch.exp(-((c - 600.0) / 200.0) ** 2)
    p[:, F.AP] = torch.tensor([-40.0, -35.0, -30.0, -20.0, -10.0, -5.0])
    return p


def test_vocoder_output_analyses_back_to_its_features(tf: ModuleType) -> None:
    """The analysis and the vocoder agree on f0, voicing and the envelope's level and shape."""
    from npc_voice.audio.vocoder import Vocoder

    p = glide(120)
    audio = Vocoder().synthesize(p).numpy()
    got = tf.analyse((audio * 32767).astype(np.int16))
    assert got.shape == (120, F.FEATURE_DIM) and got.dtype == np.float32
    mid = slice(10, 110)
    cents = 1200 / math.log(2) * (got[mid, F.LF0] - p[mid, F.LF0].numpy())
    assert np.abs(cents).max() < 20.0
    assert got[mid, F.VUV].min() == 1.0
    env_err = got[mid, F.ENV][:, 5:55] - p[mid, F.ENV].numpy()[:, 5:55]  # away from DC and Nyquist
    assert abs(env_err.mean()) < 0.3 and np.abs(env_err).mean() < 0.5
    assert got[mid, F.AP].mean(axis=0)[0] < -15.0  # periodic at low frequencies


def test_noise_is_unvoiced_and_aperiodic(tf: ModuleType) -> None:
    noise = np.random.default_rng(0).standard_normal(SR // 2) * 3000
    got = tf.analyse(noise.astype(np.int16))
    assert got.shape[0] == len(noise) // F.HOP
    assert got[:, F.VUV].mean() < 0.2
    assert got[got[:, F.VUV] == 0][:, F.AP].mean() > -3.0
    assert np.all(np.isfinite(got))


def test_bad_audio_is_refused(tf: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"\(2, 512\)"):
        tf.analyse(np.zeros((2, 512), dtype=np.int16))
    with pytest.raises(ValueError, match="100 samples"):
        tf.analyse(np.zeros(100, dtype=np.int16))


def test_cli_writes_features_and_stats_and_resumes(tf: ModuleType, tmp_path: Path) -> None:
    from npc_voice.audio.vocoder import Vocoder

    audio = (Vocoder().synthesize(glide(40)).numpy() * 32767).astype(np.int16)
    for i in range(2):
        np.savez(tmp_path / f"utt_{i:05d}.npz", audio=audio, text=np.array("hello"))
    (tmp_path / "utt_00002.npz").write_bytes(b"not a zip")  # corrupt: skipped, not fatal
    import os
    import time

    old = time.time() - 10
    for f in tmp_path.iterdir():
        os.utime(f, (old, old))  # settled files (fresh ones are left for the next poll)
    assert tf.run(tmp_path, workers=1) == 2
    feats = np.load(tmp_path / "feat_00000.npy")
    assert feats.shape == (40, F.FEATURE_DIM)
    stats = np.load(tmp_path / "stats.npz")
    assert stats["mean"].shape == (F.FEATURE_DIM,) and int(stats["n_frames"]) == 80
    assert tf.pending(tmp_path) == [str(tmp_path / "utt_00002.npz")]
    assert tf.run(tmp_path, workers=1) == 0  # done ones are skipped


# -- evaluation metrics (npc_voice.train.evaluate), on features --------------------------------------

def test_closeness_metrics_are_zero_for_identical_and_see_a_pitch_shift() -> None:
    from npc_voice.train.evaluate import compare_features

    ref = glide(50).numpy()
    speech = np.ones(50, dtype=bool)
    same = compare_features(ref, ref.copy(), speech)
    assert same["mcd_db"] == 0.0 and same["f0_rmse_cents"] == 0.0 and same["voicing_error_pct"] == 0.0
    shifted = ref.copy()
    shifted[:, F.LF0] += math.log(2.0) / 12.0  # one semitone up
    shifted[:10, F.VUV] = 0.0
    shifted[20:, F.ENV] += 0.1 * np.cos(np.arange(F.N_ENV) * np.pi / 8)  # a ripple: cepstral change
    got = compare_features(ref, shifted, speech)
    assert got["f0_rmse_cents"] == pytest.approx(100.0, abs=0.01)
    assert got["voicing_error_pct"] == pytest.approx(20.0)
    assert got["mcd_db"] > 0.1


def test_mcd_ignores_overall_level() -> None:
    from npc_voice.train.evaluate import mel_cepstrum

    ref = glide(5).numpy()
    louder = ref.copy()
    louder[:, F.ENV] += 1.0
    np.testing.assert_allclose(mel_cepstrum(ref), mel_cepstrum(louder), atol=1e-9)


def test_wer_normalization_treats_both_sides_alike() -> None:
    from npc_voice.train.evaluate import normalize_words

    assert normalize_words("It costs 3 coins, friend!") == normalize_words("it costs three coins friend")
    assert normalize_words("Don't go--it's 42.") == normalize_words("dont go its forty two")


def test_octave_errors_count_as_gross_not_fine() -> None:
    from npc_voice.train.evaluate import compare_features

    ref = glide(40).numpy()
    test = ref.copy()
    test[:10, F.LF0] += math.log(2.0)  # an octave up on a quarter of the frames
    test[10:, F.LF0] += math.log(2.0) / 24.0  # a quarter tone elsewhere
    got = compare_features(ref, test, np.ones(40, dtype=bool))
    assert got["f0_gross_error_pct"] == pytest.approx(25.0)
    assert got["f0_fine_rmse_cents"] == pytest.approx(50.0, abs=0.01)
    assert got["f0_rmse_cents"] > 500.0


# -- pitch tracker (npc_voice.train.pitch) ---------------------------------------------------------

def _pulses(f0: np.ndarray, jitter: float, seed: int = 0) -> np.ndarray:
    """A glottal-like pulse train through a two-formant filter, with per-period jitter (creak)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    x = np.zeros(len(f0))
    t = 0.0
    while t < len(f0) - 1:
        x[int(t)] = 1.0
        t += SR / f0[int(t)] * (1.0 + jitter * rng.standard_normal())
    for fc, bw in ((500.0, 80.0), (1500.0, 120.0)):
        r = math.exp(-math.pi * bw / SR)
        x = lfilter([1.0], [1.0, -2 * r * math.cos(2 * math.pi * fc / SR), r * r], x)
    return 0.3 * x / np.abs(x).max()


@pytest.mark.parametrize("jitter", [0.0, 0.02])
def test_pitch_tracker_follows_a_low_creaky_glide_without_octave_errors(jitter: float) -> None:
    from npc_voice.train import pitch

    n = SR  # 1 s, 86 frames: 75 Hz (creak) rising to 190 Hz
    f0_true = np.geomspace(75.0, 190.0, n)
    f0 = pitch.track(_pulses(f0_true, jitter))
    centres = f0_true[np.arange(len(f0)) * F.HOP + F.HOP // 2]
    mid = slice(3, len(f0) - 3)
    assert (f0[mid] > 0).mean() > 0.95  # voiced throughout, creak included
    cents = 1200 * np.log2(np.maximum(f0[mid], 1e-3) / centres[mid])
    assert np.mean(np.abs(cents) < 100) > 0.9 and np.median(np.abs(cents)) < 30


def test_pitch_tracker_calls_noise_and_silence_unvoiced_and_finds_voicing_onsets() -> None:
    from npc_voice.train import pitch

    rng = np.random.default_rng(1)
    noise = 0.1 * rng.standard_normal(SR // 2)
    voiced = _pulses(np.full(SR // 2, 120.0), 0.0)
    x = np.concatenate([np.zeros(SR // 4), noise, voiced, np.zeros(SR // 4)])
    f0 = pitch.track(x)
    q, n = SR // 4 // F.HOP, SR // 2 // F.HOP
    assert (f0[: q - 1] == 0).all() and (f0[-(q - 1):] == 0).all()  # silence
    assert (f0[q + 2: q + n - 2] > 0).mean() < 0.15  # noise
    v = f0[q + n + 2: q + 2 * n - 2]
    assert (v > 0).mean() > 0.95 and np.abs(v[v > 0] - 120.0).max() < 6.0
    assert len(pitch.track(np.zeros(100))) == 0
