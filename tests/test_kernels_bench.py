"""bench/gpu_step.py's CPU smoke path: same logic as on a GPU, small sizes (shapes and bytes arithmetic)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu_step.py"


@pytest.fixture(scope="module")
def gpu_step() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_step", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_step"] = module
    spec.loader.exec_module(module)
    return module


def test_kernel_bench_bytes_model_matches_the_tensors_a_voice_step_moves(
        gpu_step: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's byte counts against the tensors themselves, for a voice of the shipped
    ModelConfig: its pool's decoder state (the voice's own StateSpec), its decoder's kernel
    weights, and the activations a real voice step hands ``ssm_step_chunk_packed`` (recorded: the
    packed z | xBC | dt projection in, the gated output out)."""
    from npc_voice.model import ModelConfig, random_voice
    from npc_voice.model import ssm as ssm_module

    voice = random_voice(ModelConfig(), seed=0)
    shape = gpu_step.DecoderShape()
    state = voice.new_state(2)
    assert shape.state_bytes() == state["dec_conv"][0].nbytes + state["dec_ssm"][0].nbytes
    kernel_weights = [p for b in voice.net.decoder.blocks for p in (b.conv_w, b.conv_b, b.dt_bias, b.A_log, b.D)]
    assert shape.weight_bytes() == sum(p.nbytes for p in kernel_weights)

    moved: list[int] = []
    real = ssm_module.ssm_step_chunk_packed

    def recording(proj: torch.Tensor, *rest: object) -> torch.Tensor:
        out = real(proj, *rest)  # type: ignore[arg-type]
        moved.append(proj.nbytes + out.nbytes)
        return out

    monkeypatch.setattr(ssm_module, "ssm_step_chunk_packed", recording)
    # the layer-by-layer step a GPU runs (on CPU the compiled decoder_cpu step would take the call)
    monkeypatch.setattr("npc_voice_kernels.decoder_cpu._decoder_cpu", None)
    rows, frames = 3, 2
    state = voice.new_state(rows + 1)
    voice.step_params(state, torch.arange(1, rows + 1), torch.randn(rows, frames, voice.d_cond))
    assert len(moved) == shape.layers
    assert sum(moved) == rows * frames * shape.activation_bytes()
    assert shape.bytes_per_step(rows) == shape.weight_bytes() + rows * (2 * shape.state_bytes()
                                                                        + shape.activation_bytes())


def test_kernel_bench_cpu_smoke_runs_and_writes_json(gpu_step: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    result = gpu_step.run(["--cpu-smoke", "--batches", "1,3", "--iters", "2", "--model", "tiny", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["cpu_smoke"] is True and data["device"] == "cpu"
    assert data["copy_bandwidth_Bps"] > 0
    shape = gpu_step.DecoderShape()
    for rows, name in ((data["decoder"], "decoder"), (data["model"], "model")):
        assert [r["batch"] for r in rows] == [1, 3], name
        for r in rows:
            assert r["step_ms"] > 0 and r["achieved_Bps"] > 0 and r["realtime_streams"] >= 0
            assert r["achieved_Bps"] == pytest.approx(r["bytes_per_step"] / (r["step_ms"] / 1000.0))
            assert r["cuda_graphs"] is False
    assert data["decoder"][1]["bytes_per_step"] == shape.bytes_per_step(3)
    assert data["model_info"]["state_bytes"] > 0
    assert data["projection_paper"]["bandwidth_Bps"] == 4.3e12
    assert result["max_realtime_streams_measured"] == max(r["realtime_streams"] for r in data["decoder"])
