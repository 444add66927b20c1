"""The voice model: scan == step, chunk invariance, determinism, odd input, marks, checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from npc_voice.model import CheckpointError, ModelConfig, load_voice, tiny_voice
from npc_voice.model.api import PhonemeInput, TextError, VoiceModel
from npc_voice.model.checkpoint import CONFIG, WEIGHTS, save_voice
from npc_voice.model.marks import phoneme_marks, viseme_marks, word_marks
from npc_voice.model.ssm import SSMDecoder
from npc_voice.model.voice import DEFAULT_CONTROLS, SSMVoice
from npc_voice.say import render_text


def line(text: str = "hello world.", ipa: str = "həlˈoʊ wˈɜːld.") -> PhonemeInput:
    symbols = tuple(ipa)
    word_of, w = [], 0
    for s in symbols:
        if s == " ":
            w += 1
        word_of.append(-1 if s in " ." else w)
    return PhonemeInput(text=text, symbols=symbols, word_of=tuple(word_of), visemes=("aa",) * len(symbols),
                        words=tuple(text.strip(".").split()))


@pytest.fixture(scope="module")
def voice() -> SSMVoice:
    return tiny_voice(seed=0)


def test_tiny_voice_implements_the_protocol(voice: SSMVoice) -> None:
    v: VoiceModel = voice  # mypy checks the structural match
    assert v.sample_rate == 22050 and v.hop == 256
    spec = v.state_spec()
    assert {"dec_conv", "dec_ssm"} <= set(spec)
    assert spec["dec_ssm"].dtype == torch.float32
    assert v.silence_cond().shape == (v.d_cond,)


def test_scan_equals_step_over_300_frames() -> None:
    torch.manual_seed(1)
    cfg = ModelConfig.tiny()
    dec = SSMDecoder(cfg).eval()
    T = 333  # several scan chunks plus a ragged tail
    cond = torch.randn(3, T, cfg.d_model)
    with torch.no_grad():
        scan = dec(cond)
        conv = torch.zeros(5, cfg.n_layers, cfg.d_conv - 1, cfg.conv_dim)
        ssm = torch.zeros(5, cfg.n_layers, cfg.nheads, cfg.headdim, cfg.d_state)
        slots = torch.tensor([4, 1, 2])
        step = torch.stack([dec.step(cond[:, t], conv, ssm, slots) for t in range(T)], dim=1)
    assert scan.abs().mean() > 0.1
    torch.testing.assert_close(step, scan, atol=2e-5, rtol=1e-4)
    assert conv[0].abs().sum() == 0 and ssm[3].abs().sum() == 0  # rows not named by slots untouched


def test_prepared_line_scan_equals_voice_step(voice: SSMVoice) -> None:
    prepared = voice.prepare(line())
    with torch.no_grad():
        scan = voice.net.denormalize(voice.net.decoder(prepared.cond[None]))
    state = voice.new_state(2)
    stepped = voice.step_params(state, torch.tensor([1]), prepared.cond[None])
    torch.testing.assert_close(stepped, scan, atol=2e-5, rtol=1e-4)


def test_k_frame_step_equals_single_steps(voice: SSMVoice) -> None:
    cond = voice.prepare(line()).cond[None, :24]
    controls = torch.tensor([[1.1, 1.0, 0.2, 0.8, 1.0, 0.0]])
    s1, s2 = voice.new_state(3), voice.new_state(3)
    slots = torch.tensor([2])
    chunked = torch.cat([voice.step(s1, slots, cond[:, t:t + 8], controls) for t in range(0, 24, 8)], dim=1)
    single = torch.cat([voice.step(s2, slots, cond[:, t:t + 1], controls) for t in range(24)], dim=1)
    assert chunked.shape == (1, 24 * 256)
    # K frames run layer by layer (one matmul over K rows, a fused recurrence): float rounding only,
    # -90 dB at most; the engine itself always steps K at a time, like the tests' direct render
    torch.testing.assert_close(chunked, single, atol=3e-5, rtol=0)


def test_batch_composition_does_not_change_a_stream(voice: SSMVoice) -> None:
    a, b = voice.prepare(line()), voice.prepare(line("hi.", "hˈaɪ."))
    n = min(a.n_frames, b.n_frames)
    controls = torch.tensor([DEFAULT_CONTROLS] * 3)
    alone = voice.new_state(4)
    pcm_alone = voice.step(alone, torch.tensor([3]), a.cond[None, :n], controls[:1])
    together = voice.new_state(4)
    cond = torch.stack([b.cond[:n], a.cond[:n], torch.zeros_like(a.cond[:n])])
    pcm = voice.step(together, torch.tensor([1, 3, 0]), cond, controls)  # row 3 is padding on scratch slot 0
    torch.testing.assert_close(pcm[1], pcm_alone[0], atol=5e-5, rtol=0)  # BLAS sums differ by batch size


def test_deterministic_and_seeded() -> None:
    a = tiny_voice(0).render_prepared(tiny_voice(0).prepare(line()))
    b = tiny_voice(0).render_prepared(tiny_voice(0).prepare(line()))
    c = tiny_voice(1).render_prepared(tiny_voice(1).prepare(line()))
    assert np.array_equal(a, b)
    assert not np.array_equal(a[: len(c)], c[: len(a)])


@pytest.mark.parametrize("ipa", [".", "?", "a", "ʃʃʃʃʃʃʃʃʃʃ", "!!!", " ", "ˈ", "a" * 100])
def test_odd_input_gives_finite_nonsilent_audio(voice: SSMVoice, ipa: str) -> None:
    ph = PhonemeInput(text=ipa, symbols=tuple(ipa), word_of=(-1,) * len(ipa), visemes=("sil",) * len(ipa), words=())
    speeds = (0.25, 1.0, 4.0) if len(ipa) < 3 else (1.0,)
    for speed in speeds:
        prepared = voice.prepare(ph, speed=speed)
        assert prepared.n_frames >= 1
        pcm = voice.render_prepared(prepared)
        assert pcm.dtype == np.float32 and pcm.shape == (prepared.n_frames * 256,)
        assert np.isfinite(pcm).all() and np.abs(pcm).max() <= 1.0
        assert np.abs(pcm).max() > 0


def test_speed_scales_duration(voice: SSMVoice) -> None:
    slow, fast = voice.prepare(line(), speed=0.5), voice.prepare(line(), speed=2.0)
    assert 3.0 < slow.n_frames / fast.n_frames < 5.0


def test_prepare_batch_matches_prepare(voice: SSMVoice) -> None:
    lines = [line(), line("hi.", "hˈaɪ.")]
    batch = voice.prepare_batch(lines, speeds=[1.0, 1.5])
    for ph, speed, got in zip(lines, [1.0, 1.5], batch, strict=True):
        alone = voice.prepare(ph, speed=speed)
        assert got.n_frames == alone.n_frames and got.words == alone.words
        torch.testing.assert_close(got.cond, alone.cond, atol=1e-5, rtol=1e-4)


def test_bad_input_is_rejected_clearly(voice: SSMVoice) -> None:
    with pytest.raises(TextError, match="no phoneme"):
        voice.prepare(PhonemeInput(text="", symbols=(), word_of=(), visemes=(), words=()))
    with pytest.raises(TextError, match="☃"):
        voice.prepare(PhonemeInput(text="x", symbols=("☃",), word_of=(0,), visemes=("sil",), words=("x",)))
    with pytest.raises(ValueError, match="speed"):
        voice.prepare(line(), speed=0.0)
    with pytest.raises(ValueError, match="durations"):
        voice.prepare(line(), durations=[1, 2])


def test_marks_from_durations() -> None:
    ph = line()  # h ə l ˈ o ʊ ␣ w ˈ ɜ ː l d .
    d = [2, 3, 1, 1, 4, 2, 1, 2, 1, 3, 2, 2, 2, 5]
    pm = phoneme_marks(ph.symbols, d)
    assert [m.label for m in pm] == ["h", "ə", "l", "o", "ʊ", "w", "ɜː", "l", "d"]
    assert (pm[3].start_frame, pm[3].end_frame) == (6, 11)  # stress frame joins the vowel after it
    assert (pm[6].start_frame, pm[6].end_frame) == (16, 22)  # length mark joins the vowel before it
    vis = viseme_marks(("sil", "PP", "PP", "sil", "aa"), [2, 0, 3, 1, 1])
    assert [(m.label, m.start_frame, m.end_frame) for m in vis] == [("sil", 0, 2), ("PP", 2, 5), ("sil", 5, 6),
                                                                     ("aa", 6, 7)]
    words = word_marks(ph, d)
    assert [(m.label, m.start_frame, m.end_frame) for m in words] == [("hello", 0, 13), ("world", 14, 26)]


def test_prepared_marks_span_the_line(voice: SSMVoice) -> None:
    prepared = voice.prepare(line(), durations=[2, 3, 1, 1, 4, 2, 1, 2, 1, 3, 2, 2, 2, 5])
    assert prepared.n_frames == 31
    assert prepared.visemes[0].start_frame == 0 and prepared.visemes[-1].end_frame == 31
    assert [m.label for m in prepared.words] == ["hello", "world"]


def test_checkpoint_round_trip(tmp_path: Path, voice: SSMVoice) -> None:
    meta = save_voice(tmp_path, voice.net, voice.symbols, "tester", {"steps": 0})
    loaded = load_voice(tmp_path)
    assert loaded.name == "tester" and loaded.version == meta.version and len(meta.version) == 16
    assert loaded.symbols == voice.symbols
    a = voice.render_prepared(voice.prepare(line()))
    b = loaded.render_prepared(loaded.prepare(line()))
    assert a.shape == b.shape and np.abs(a - b).max() < 0.02  # float16 storage


def test_checkpoint_rejects_corrupt_and_mismatched_files(tmp_path: Path, voice: SSMVoice) -> None:
    save_voice(tmp_path, voice.net, voice.symbols, "tester")
    weights, config = tmp_path / WEIGHTS, tmp_path / CONFIG
    good_w, good_c = weights.read_bytes(), config.read_text()

    weights.write_bytes(good_w[: len(good_w) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt, truncated"):
        load_voice(tmp_path)
    flipped = bytearray(good_w)
    flipped[-10] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_voice(tmp_path)
    weights.write_bytes(good_w)

    body = json.loads(good_c)
    config.write_text(json.dumps({**body, "format_version": 99}))
    with pytest.raises(CheckpointError, match="config.json.*format_version 99"):
        load_voice(tmp_path)
    config.write_text(json.dumps({**body, "name": "someone else"}))
    with pytest.raises(CheckpointError, match="version id"):
        load_voice(tmp_path)
    config.write_text(good_c[:-20])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_voice(tmp_path)
    config.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_voice(tmp_path)


def test_shipped_default_voice_loads_and_speaks() -> None:
    voice = load_voice()
    pcm = voice.render_prepared(voice.prepare(line()))
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 0


def test_render_text_through_the_frontend(voice: SSMVoice) -> None:
    pcm = render_text(voice, "Hello there, traveller!", [1.0, 1.0, 0.0, 0.5, 1.0, 0.0], speed=1.5)
    assert pcm.dtype == np.float32 and len(pcm) % 256 == 0 and len(pcm) > 10 * 256
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 0
    with pytest.raises(TextError):
        render_text(voice, "   ")


@pytest.mark.parametrize("k", [4, 3])
def test_step_over_more_rows_than_one_response_piece_equals_rows_alone(voice: SSMVoice, k: int) -> None:
    """Past CPU_RESPONSE_ROWS frames the CPU vocoder computes its frame responses in pieces (at
    K = 3 a stream's frames straddle two pieces); the per-stream work runs once for the call: no
    row may notice."""
    from npc_voice.audio.vocoder import CPU_RESPONSE_ROWS

    n = CPU_RESPONSE_ROWS // k + 7
    cond = voice.prepare(line()).cond[: 2 * k]
    gen = torch.Generator().manual_seed(3)
    conds = cond[None].repeat(n, 1, 1) + 0.1 * torch.randn(n, 2 * k, cond.shape[1], generator=gen)
    controls = torch.tensor([DEFAULT_CONTROLS], dtype=torch.float32).repeat(n, 1)
    batch_state, alone_state = voice.new_state(n + 1), voice.new_state(n + 1)
    slots = torch.arange(1, n + 1)
    batched = voice.step(batch_state, slots, conds[:, :k], controls)
    batched = torch.cat([batched, voice.step(batch_state, slots, conds[:, k:], controls)], dim=1)
    edge = CPU_RESPONSE_ROWS // k  # the first stream with a frame in the second piece
    for i in (0, edge - 1, edge, n - 1):
        s = slots[i : i + 1]
        alone = torch.cat([voice.step(alone_state, s, conds[i : i + 1, :k], controls[i : i + 1]),
                           voice.step(alone_state, s, conds[i : i + 1, k:], controls[i : i + 1])], dim=1)
        torch.testing.assert_close(batched[i], alone[0], atol=3e-5, rtol=0)


@pytest.mark.parametrize(("kernel", "dilation", "frames"), [(5, 1, 37), (3, 1, 2), (5, 3, 155), (5, 5, 7)])
def test_conv_over_time_is_the_convolution_with_its_gradients(kernel: int, dilation: int, frames: int) -> None:
    """The line encoder's convs run as windows @ weight (``conv_over_time``): the same outputs
    and gradients as nn.Conv1d on the transposed input, for dilated kernels and lines shorter
    than the kernel's reach."""
    from npc_voice.model.encoder import conv_over_time

    g = torch.Generator().manual_seed(kernel * 100 + dilation)
    conv = torch.nn.Conv1d(16, 12, kernel, padding=dilation * (kernel // 2), dilation=dilation)
    x = torch.randn(3, frames, 16, generator=g, requires_grad=True)
    ours = conv_over_time(x, conv)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    assert ours.shape == (3, frames, 12)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    up = torch.randn(ours.shape, generator=g)
    grads = torch.autograd.grad((ours * up).sum(), [x, conv.weight, conv.bias])
    ref_grads = torch.autograd.grad((ref * up).sum(), [x, conv.weight, conv.bias])
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
