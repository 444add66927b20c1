"""Bucket and padding logic of kernels/cuda_graphs.py, on CPU (capture itself needs CUDA), and the
engine capturing every bucket at start-up, never in a tick (mode "padded" runs the same path)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from npc_voice_kernels.cuda_graphs import (
    DEFAULT_BUCKETS,
    GraphedStep,
    bucket_for,
    check_buckets,
    pad_rows,
    pad_slots,
)
from npc_voice_kernels.ssm_step import ssm_step_ref

from npc_voice.engine import Engine, EngineConfig, LineRequest, VoiceControls
from npc_voice.engine import engine as engine_module
from npc_voice.engine.device import DeviceStep
from npc_voice.model import tiny_voice


def test_kernel_bucket_for_picks_smallest_fitting_bucket() -> None:
    assert DEFAULT_BUCKETS[0] == 1 and DEFAULT_BUCKETS[-1] == 4096
    assert [bucket_for(n) for n in (1, 2, 3, 4, 5, 63, 64, 65, 4096)] == [1, 2, 4, 4, 8, 64, 64, 128, 4096]
    assert bucket_for(5, (3, 6, 12)) == 6
    with pytest.raises(ValueError, match="4097"):
        bucket_for(4097)
    with pytest.raises(ValueError, match="0"):
        bucket_for(0)


def test_kernel_check_buckets_rejects_unsorted_or_empty() -> None:
    assert check_buckets([1, 8, 64]) == (1, 8, 64)
    for bad in ([], [0, 1], [4, 2], [2, 2]):
        with pytest.raises(ValueError, match="ascending"):
            check_buckets(bad)


def test_kernel_pad_rows_repeats_last_row_and_slots_pad_with_zero() -> None:
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(pad_rows(t, 4), torch.tensor([[1.0, 2.0], [3.0, 4.0], [3.0, 4.0], [3.0, 4.0]]))
    assert torch.equal(pad_rows(t, 4, fill_from_last=False)[2:], torch.zeros(2, 2))
    assert pad_rows(t, 2) is t
    assert torch.equal(pad_slots(torch.tensor([5, 3, 9]), 4), torch.tensor([5, 3, 9, 0]))
    with pytest.raises(ValueError, match="3 rows down to 2"):
        pad_rows(torch.zeros(3, 1), 2)


def test_kernel_graphed_step_modes_on_cpu() -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedStep(lambda s: s, "cpu", mode="graphs")
    with pytest.raises(ValueError, match="'fast'"):
        GraphedStep(lambda s: s, "cpu", mode="fast")
    calls: list[int] = []

    def fn(slots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(int(slots.shape[0]))
        return x * 2

    eager = GraphedStep(fn, "cpu")
    assert eager.mode == "eager"
    out = eager(torch.tensor([1, 2, 3]), torch.ones(3, 2))
    assert calls == [3] and out.shape == (3, 2)
    padded = GraphedStep(fn, "cpu", buckets=(1, 2, 4, 8), mode="padded")
    with pytest.raises(RuntimeError, match="bucket 4 was not captured"):
        padded(torch.tensor([1, 2, 3]), torch.ones(3, 2))  # a call never captures in passing
    padded.capture_all(torch.ones(1, 2))
    out = padded(torch.tensor([1, 2, 3]), torch.arange(6.0).view(3, 2))
    assert calls[-1] == 4 and torch.equal(out, torch.arange(6.0).view(3, 2) * 2)
    with pytest.raises(ValueError, match="input 0 has 2 rows, slots has 3"):
        padded(torch.tensor([1, 2, 3]), torch.ones(2, 2))
    with pytest.raises(ValueError, match="largest bucket 8"):
        padded(torch.arange(9), torch.ones(9, 2))


def test_kernel_capture_all_visits_every_bucket_largest_first_on_scratch_slot_0() -> None:
    seen: list[tuple[int, list[int]]] = []

    def fn(slots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        seen.append((int(slots.shape[0]), sorted(set(slots.tolist()))))
        return x

    step = GraphedStep(fn, "cpu", buckets=(1, 2, 4, 8), mode="padded", warmup_iters=1)
    step.capture_all(torch.ones(3, 2))
    assert seen == [(8, [0]), (4, [0]), (2, [0]), (1, [0])]
    step.capture_all(torch.ones(1, 2))  # already captured: nothing runs again
    assert len(seen) == 4
    GraphedStep(fn, "cpu", buckets=(1, 2), mode="eager").capture_all(torch.ones(1, 2))  # nothing to capture
    assert len(seen) == 4


def test_kernel_padded_step_equals_unpadded_on_the_state_pool() -> None:
    """Padding rows write only scratch slot 0: real rows and real slots match an unpadded run."""
    gen = torch.Generator().manual_seed(0)
    n_slots, layers, nheads, headdim, d_state, d_conv = 9, 2, 2, 4, 4, 4
    d_inner = nheads * headdim
    conv_dim = d_inner + 2 * d_state
    weights = (
        torch.randn(conv_dim, d_conv, generator=gen),
        torch.randn(conv_dim, generator=gen),
        torch.randn(nheads, generator=gen),
        torch.randn(nheads, generator=gen),
        torch.randn(nheads, generator=gen),
    )
    pools = {
        "eager": (
            torch.randn(n_slots, layers, d_conv - 1, conv_dim, generator=gen),
            torch.randn(n_slots, layers, nheads, headdim, d_state, generator=gen),
        ),
    }
    pools["padded"] = (pools["eager"][0].clone(), pools["eager"][1].clone())
    initial = (pools["eager"][0].clone(), pools["eager"][1].clone())

    def make(name: str):  # type: ignore[no-untyped-def]
        conv, ssm = pools[name]

        def fn(slots: torch.Tensor, xbc: torch.Tensor, dt: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            y = xbc[:, :d_inner]
            for layer in range(layers):
                y = ssm_step_ref(xbc, dt, z, conv, ssm, slots, layer, *weights)
            return y

        return fn

    eager = GraphedStep(make("eager"), "cpu", mode="eager")
    padded = GraphedStep(make("padded"), "cpu", buckets=(1, 2, 4, 8), mode="padded")
    padded.capture_all(torch.zeros(1, conv_dim), torch.zeros(1, nheads), torch.zeros(1, d_inner))
    for i in range(2):  # capture wrote the scratch slot only
        assert torch.equal(pools["padded"][i][1:], initial[i][1:])
    slots = torch.tensor([7, 2, 5])
    for _ in range(5):
        xbc = torch.randn(3, conv_dim, generator=gen)
        dt = torch.randn(3, nheads, generator=gen)
        z = torch.randn(3, d_inner, generator=gen)
        # Equal up to float rounding: CPU reductions may vectorize differently per batch size.
        torch.testing.assert_close(padded(slots, xbc, dt, z), eager(slots, xbc, dt, z), rtol=1e-6, atol=1e-6)
    for i in range(2):
        torch.testing.assert_close(pools["padded"][i][1:], pools["eager"][i][1:], rtol=1e-6, atol=1e-6)
        untouched = [1, 3, 4, 6, 8]
        assert torch.equal(pools["padded"][i][untouched], initial[i][untouched])
        assert not torch.equal(pools["padded"][i][0], initial[i][0])  # padding did run, on scratch


@pytest.fixture
def padded_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[int]]]:
    """An engine whose steps run the CUDA path's padding and up-front capture on CPU; the list
    collects the bucket of every capture call."""
    captured: list[int] = []
    original = GraphedStep.capture_all

    def capture_all(self: GraphedStep, *inputs: torch.Tensor) -> None:
        captured.extend(b for b in self.buckets if b not in self._ready)
        original(self, *inputs)

    monkeypatch.setattr(GraphedStep, "capture_all", capture_all)
    monkeypatch.setattr(engine_module, "make_step",
                        lambda model, pool, device, max_batch, splitter=None:
                        DeviceStep(model, pool, device, max_batch, "padded"))
    engine = Engine({"tiny": tiny_voice(0)}, EngineConfig(slots=8, lookahead_ms=1e9, max_load=0.0))
    yield engine, captured
    engine.close()


def test_kernel_engine_captures_every_bucket_at_start_up_never_in_a_tick(
        padded_engine: tuple[Engine, list[int]]) -> None:
    engine, captured = padded_engine
    assert captured == []
    engine.start()
    assert sorted(captured) == [1, 2, 4, 8]  # slots=8: up to 7 rows per step
    streams = [engine.speak(LineRequest(f"npc/{i}", "tiny", "Hello there, traveller.", VoiceControls(), {},
                                        22050, f"r{i}")) for i in range(5)]
    for stream in streams:
        events = list(stream.events_sync(timeout=60))
        assert events and type(events[-1]).__name__ == "EndEvent"
    assert engine.stats().ticks > 0
    assert sorted(captured) == [1, 2, 4, 8]  # the ticks replayed; none captured
    engine.add_voices({"tiny2": tiny_voice(1)})  # a voice added later is captured as it is added
    assert sorted(captured) == [1, 1, 2, 2, 4, 4, 8, 8]
