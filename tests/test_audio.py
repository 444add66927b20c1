"""Resampling (chunk invariance, exact lengths, frequencies kept, aliasing rejected) and PCM encoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from npc_voice.audio.pcm import decode_pcm, encode_pcm
from npc_voice.audio.resample import SUPPORTED_RATES, StreamResampler, resample

IN = 22050


def tone(freq: float, n: int, rate: int = IN) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec))
    a, b, c = spec[k - 1], spec[k], spec[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x)


@pytest.mark.parametrize("out_rate", SUPPORTED_RATES)
def test_chunks_of_any_size_give_the_one_call_output(out_rate: int) -> None:
    x = np.random.default_rng(0).standard_normal(5000) * 0.3
    whole = resample(x, IN, out_rate)
    for sizes in ([1] * 300 + [4700], [256] * 19 + [136], [7, 1000, 3, 3990]):
        r = StreamResampler(IN, out_rate)
        parts, at = [], 0
        for s in sizes:
            parts.append(r.process(x[at:at + s]))
            at += s
        parts.append(r.flush())
        got = np.concatenate(parts)
        assert len(got) == len(whole)
        np.testing.assert_allclose(got, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("out_rate", SUPPORTED_RATES)
@pytest.mark.parametrize("n_in", [0, 1, 255, 256, 22050, 22051])
def test_total_length_is_rounded_exactly(out_rate: int, n_in: int) -> None:
    r = StreamResampler(IN, out_rate)
    total = len(r.process(np.zeros(n_in))) + len(r.flush())
    assert total == round(n_in * out_rate / IN) == r.expected_out(n_in)
    assert r.total_out == total


@pytest.mark.parametrize("out_rate", SUPPORTED_RATES)
@pytest.mark.parametrize("freq", [220.0, 3000.0, 6000.0])
def test_a_sine_stays_a_sine_at_the_new_rate(out_rate: int, freq: float) -> None:
    y = resample(tone(freq, IN), IN, out_rate)
    body = y[2000:-2000]
    assert peak_hz(body, out_rate) == pytest.approx(freq, abs=1.0)
    ideal = tone(freq, len(y), out_rate)[2000:-2000]
    # amplitude kept in the passband (at 16 kHz it is flat to ~6.5 kHz, -6 dB at 7.5 kHz)
    assert np.sqrt(np.mean(body ** 2)) == pytest.approx(np.sqrt(np.mean(ideal ** 2)), rel=0.02)


def test_identity_rate_passes_samples_through() -> None:
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(resample(x, IN, IN), x)


def test_downsampling_rejects_what_would_alias() -> None:
    """A 10 kHz tone cannot exist at 16 kHz: it must be filtered out, not folded to 6 kHz."""
    y = resample(tone(10000.0, IN), IN, 16000)[1000:-1000]
    assert np.sqrt(np.mean(y ** 2)) < 1e-3 * 0.5


def test_torch_in_torch_out() -> None:
    r = StreamResampler(IN, 48000)
    out = r.process(torch.from_numpy(tone(440.0, 2048)).float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and len(out) > 0


def test_bad_rates_and_shapes_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="8000"):
        StreamResampler(IN, 8000)
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        StreamResampler(IN, 16000).process(np.zeros((2, 5)))


def test_encode_pcm_s16le_clips_and_rounds() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, np.nan], dtype=np.float32)
    data = encode_pcm(x, "s16le")
    ints = np.frombuffer(data, dtype="<i2")
    assert ints.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767, 0]
    np.testing.assert_allclose(decode_pcm(data, "s16le")[:5], np.clip(x[:5], -1, 1), atol=1 / 32767)


def test_encode_pcm_f32le_roundtrip_from_torch() -> None:
    x = torch.tensor([0.25, -0.75, 1.5])
    data = encode_pcm(x, "f32le")
    assert len(data) == 12
    np.testing.assert_array_equal(decode_pcm(data, "f32le"), np.array([0.25, -0.75, 1.0], dtype=np.float32))


def test_unknown_encoding_is_named() -> None:
    with pytest.raises(ValueError, match="mp3"):
        encode_pcm(np.zeros(3), "mp3")
