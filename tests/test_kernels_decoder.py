"""The fused small-call decoder step (kernels/decoder_cpu.py) against the eager decoder.

Real model code: a random-init voice (the tiny configuration and the shipped one's shapes),
its states and weights; the eager path is ``denormalize(SSMDecoder.step_chunk(...))``.
"""
from __future__ import annotations

import npc_voice_kernels.decoder_cpu as decoder_cpu
import numpy as np
import pytest
import torch

from npc_voice.model import ModelConfig, random_voice, tiny_voice
from npc_voice.model.voice import SSMVoice

pytestmark = pytest.mark.skipif(decoder_cpu._decoder_cpu is None, reason="numba is not installed")


def _eager(voice: SSMVoice, state: dict[str, torch.Tensor], slots: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return voice.net.denormalize(voice.net.decoder.step_chunk(cond, state["dec_conv"], state["dec_ssm"], slots))


def _random_state(voice: SSMVoice, slots: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = voice.new_state(slots)
    for t in state.values():
        if t.is_floating_point():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    return state


@pytest.mark.parametrize("default_shapes", [False, True], ids=["tiny", "default-shapes"])
@pytest.mark.parametrize(("rows", "frames"), [(1, 8), (3, 1), (4, 8), (2, 5), (20, 8)])
def test_fused_step_equals_the_eager_decoder(default_shapes: bool, rows: int, frames: int) -> None:
    """Outputs (vocoder parameters, voicing as a probability) and both states, over consecutive
    calls on slots with gaps: the compiled step is the same step as the eager one, in one call
    (up to FUSED_MAX_ROWS rows) and between BLAS projections (20 x 8 = 160 rows)."""
    voice = random_voice(ModelConfig(), seed=3, name="t", device="cpu") if default_shapes else tiny_voice(0)
    gen = torch.Generator().manual_seed(rows * 10 + frames)
    with torch.no_grad():  # random feature statistics: the de-normalisation must be applied, not skipped
        voice.net.set_stats(torch.randn(voice.cfg.n_features, generator=gen), torch.rand(voice.cfg.n_features,
                                                                                          generator=gen) + 0.5)
    slots = torch.tensor([5, 2, 7, 3][:rows]) if rows <= 4 else torch.arange(1, rows + 1) * 2
    state_a = _random_state(voice, int(slots.max()) + 2, torch.Generator().manual_seed(rows * 10 + frames))
    state_b = {k: t.clone() for k, t in state_a.items()}
    for call in range(3):
        cond = torch.randn(rows, frames, voice.d_cond, generator=gen)
        fused = decoder_cpu.decoder_step_cpu(voice._decoder_arrays(), cond, state_a["dec_conv"], state_a["dec_ssm"],
                                             slots)
        eager = _eager(voice, state_b, slots, cond)
        assert fused.shape == eager.shape == (rows, frames, voice.cfg.n_features)
        torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-4, msg=f"parameters, call {call}")
    for name in ("dec_conv", "dec_ssm"):
        torch.testing.assert_close(state_a[name], state_b[name], rtol=1e-4, atol=1e-5, msg=name)
    untouched = [s for s in range(len(state_a["dec_ssm"])) if s not in slots.tolist()]
    before = _random_state(voice, len(state_a["dec_ssm"]), torch.Generator().manual_seed(rows * 10 + frames))
    assert torch.equal(state_a["dec_ssm"][untouched], before["dec_ssm"][untouched])
    assert torch.equal(state_a["dec_conv"][untouched], before["dec_conv"][untouched])
    assert not torch.equal(state_a["dec_ssm"][slots], before["dec_ssm"][slots])  # the call moved its states


def test_step_params_takes_the_compiled_step_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    voice = tiny_voice(1)
    calls: list[int] = []
    real = decoder_cpu.decoder_step_cpu

    def counting(arrays, cond, conv, ssm, slots):  # type: ignore[no-untyped-def]
        calls.append(cond.shape[0] * cond.shape[1])
        return real(arrays, cond, conv, ssm, slots)

    monkeypatch.setattr("npc_voice.model.voice.decoder_step_cpu", counting)
    state = voice.new_state(40)
    small = torch.randn(2, 8, voice.d_cond)
    large = torch.randn(32, 8, voice.d_cond)
    voice.step_params(state, torch.tensor([1, 2]), small)
    voice.step_params(state, torch.arange(3, 35), large)
    assert calls == [16, 256]
    monkeypatch.setenv("NPC_VOICE_CPU_STEP", "torch")  # the operator's switch turns it off with the other kernels
    voice.step_params(state, torch.tensor([1, 2]), small)
    assert calls == [16, 256]
    monkeypatch.delenv("NPC_VOICE_CPU_STEP")
    state["dec_ssm"] = state["dec_ssm"].to(torch.bfloat16)  # states it cannot take: the eager decoder
    voice.step_params(state, torch.tensor([1, 2]), small)
    assert calls == [16, 256]


def test_vectorized_exp_is_within_3_ulp() -> None:
    """``_neg_exp`` (the SiLU's exp, written to vectorize) against float64, over its whole range."""
    x = np.concatenate([np.linspace(-88.0, 87.3, 200_001), np.random.default_rng(0).normal(0, 5, 50_000)])
    x = x.astype(np.float32)
    got = np.empty_like(x)
    decoder_cpu._neg_exp(x, got, np.empty(x.shape, dtype=np.int32))
    want = np.exp(-x.astype(np.float64))
    ulp = np.abs(got - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
    assert float(ulp.max()) <= 3.0, float(ulp.max())
    assert np.all(np.isfinite(got)) and float(got.min()) > 0.0


def test_changed_weights_are_packed_again() -> None:
    """The packed arrays follow the weights: an in-place update (an optimizer step) and a
    load_state_dict both reach the next fused call."""
    voice = tiny_voice(0)
    state_a, state_b = voice.new_state(2), voice.new_state(2)
    slots = torch.tensor([1])
    cond = torch.randn(1, 4, voice.d_cond, generator=torch.Generator().manual_seed(0))
    before = voice._decoder_arrays()
    with torch.no_grad():
        voice.net.decoder.blocks[0].in_proj.weight.mul_(1.5)
    assert voice._decoder_arrays() is not before
    fused = decoder_cpu.decoder_step_cpu(voice._decoder_arrays(), cond, state_a["dec_conv"], state_a["dec_ssm"], slots)
    torch.testing.assert_close(fused, _eager(voice, state_b, slots, cond), rtol=1e-4, atol=1e-4)
    other = tiny_voice(5)
    voice.net.load_state_dict(other.net.state_dict())
    again = voice._decoder_arrays()
    assert again is not before and again is voice._decoder_arrays()  # packed once per weights version
    state_c, state_d = voice.new_state(2), voice.new_state(2)
    fused = decoder_cpu.decoder_step_cpu(again, cond, state_c["dec_conv"], state_c["dec_ssm"], slots)
    torch.testing.assert_close(fused, _eager(other, state_d, slots, cond), rtol=1e-4, atol=1e-4)


def test_fused_step_rejects_what_it_cannot_take() -> None:
    voice = tiny_voice(0)
    state = voice.new_state(2)
    with pytest.raises(ValueError, match="width"):
        decoder_cpu.decoder_step_cpu(voice._decoder_arrays(), torch.randn(1, 2, voice.d_cond + 1),
                                     state["dec_conv"], state["dec_ssm"], torch.tensor([1]))
    with pytest.raises(ValueError, match="float32"):
        decoder_cpu.decoder_step_cpu(voice._decoder_arrays(), torch.randn(1, 2, voice.d_cond),
                                     state["dec_conv"].double(), state["dec_ssm"], torch.tensor([1]))


def test_the_install_step_steps_every_compiled_path() -> None:
    """``python -m npc_voice.model.compile`` (make install's last step) runs the step at 1 and 32
    streams: the whole-call decoder, the layered one and the vocoder's passes, on their real types."""
    from npc_voice.model.compile import compile_cpu_kernels

    seconds = compile_cpu_kernels()
    assert 0.0 < seconds < 600.0
