"""bench/gpu_step.py's CPU smoke path: same logic as on a GPU, small sizes (shapes and bytes arithmetic)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu_step.py"


@pytest.fixture(scope="module")
def gpu_step() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_step", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_step"] = module
    spec.loader.exec_module(module)
    return module


def test_kernel_bench_bytes_model_matches_the_shipped_model_config(gpu_step: ModuleType) -> None:
    from npc_voice.model import ModelConfig

    cfg, shape = ModelConfig(), gpu_step.DecoderShape()
    assert (shape.layers, shape.d_model, shape.expand, shape.headdim, shape.d_state, shape.d_conv) == (
        cfg.n_layers,
        cfg.d_model,
        cfg.expand,
        cfg.headdim,
        cfg.d_state,
        cfg.d_conv,
    ), "bench defaults drifted from the shipped voice's ModelConfig"
    conv = cfg.n_layers * (cfg.d_conv - 1) * cfg.conv_dim * 4
    ssm = cfg.n_layers * cfg.nheads * cfg.headdim * cfg.d_state * 4
    assert shape.state_bytes() == conv + ssm
    per_row = 2 * shape.state_bytes() + shape.activation_bytes()
    assert shape.bytes_per_step(10) == shape.weight_bytes() + 10 * per_row
    proj = gpu_step.projection(shape, 4.3e12)
    budget = 4.3e12 / gpu_step.FRAMES_PER_S - shape.weight_bytes()
    assert proj["max_realtime_streams"] == math.floor(budget / per_row)
    assert proj["max_realtime_streams"] >= 10_000  # the on-paper H200 target


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
