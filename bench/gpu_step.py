"""Decoder-step cost per batch size, bytes moved, bandwidth achieved, real-time streams.

On a GPU (CUDA graphs per batch size, Triton step kernel):

    python bench/gpu_step.py --json gpu_step.json                 # decoder step, 1 .. 16384 rows
    python bench/gpu_step.py --model default --json gpu_step.json # + the full voice step (decoder + vocoder)

On CPU, the same logic at small sizes (shapes and arithmetic checked in CI):

    python bench/gpu_step.py --cpu-smoke --json /tmp/smoke.json

Bytes model (docs/ARCHITECTURE.md, "Performance model"): one decoder step over B rows moves
``weights + B * (2 * state + activations)`` bytes: every layer's conv and SSM state
is read and written once, and the kernel's inputs (x|B|C, dt, z) are read and its
output written. A stream needs 86.13 steps per second, so B rows keep up with real
time when one step takes at most 1/86.13 s = 11.6 ms; a device serves about
``B / (t(B) * 86.13)`` streams by stepping batches of B back to back.

Always printed too: the projection "on paper" from the bytes model and a given
bandwidth (--bandwidth, default 4.3e12 B/s, an H200's measured copy rate).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from npc_voice_kernels.cuda_graphs import GraphedStep
from npc_voice_kernels.ssm_step import ssm_step

from npc_voice.contracts import FRAMES_PER_S, NEUTRAL_CONTROLS
from npc_voice.model import ModelConfig, load_voice, random_voice

log = logging.getLogger("gpu_step")

DEFAULT_BATCHES = tuple(2**i for i in range(15))  # 1 .. 16384
SMOKE_BATCHES = (1, 2, 4, 8)


@dataclass(frozen=True)
class DecoderShape:
    """The SSM decoder's step shapes (defaults: the shipped voice's ModelConfig)."""

    layers: int = 4
    d_model: int = 128
    expand: int = 2
    headdim: int = 32
    d_state: int = 16
    d_conv: int = 4
    act_bytes: int = 4  # activations: 4 = fp32, 2 = bf16; state is always fp32

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.d_state

    def state_bytes(self) -> int:
        """Per stream: every layer's conv state + SSM state (fp32)."""
        conv = (self.d_conv - 1) * self.conv_dim
        ssm = self.nheads * self.headdim * self.d_state
        return self.layers * (conv + ssm) * 4

    def activation_bytes(self) -> int:
        """Per row per step: kernel inputs (x|B|C, dt, z) read + output written, all layers."""
        return self.layers * (self.conv_dim + self.nheads + 2 * self.d_inner) * self.act_bytes

    def weight_bytes(self) -> int:
        """Kernel weights per step (conv_w, conv_b, dt_bias, A_log, D), all layers."""
        return self.layers * (self.conv_dim * (self.d_conv + 1) + 3 * self.nheads) * 4

    def bytes_per_step(self, batch: int, weights: int | None = None) -> int:
        w = self.weight_bytes() if weights is None else weights
        return w + batch * (2 * self.state_bytes() + self.activation_bytes())


def projection(shape: DecoderShape, bandwidth: float, weights: int | None = None) -> dict[str, float]:
    """Real-time streams a device of ``bandwidth`` B/s could serve if the step ran at that bandwidth."""
    per_stream = 2 * shape.state_bytes() + shape.activation_bytes()
    w = shape.weight_bytes() if weights is None else weights
    budget = bandwidth / FRAMES_PER_S - w  # bytes per 11.6 ms frame left for streams
    streams = max(0.0, budget / per_stream)
    return {
        "bandwidth_Bps": bandwidth,
        "bytes_per_stream_per_step": per_stream,
        "weight_bytes_per_step": w,
        "max_realtime_streams": math.floor(streams),
        # With every stream in one batch, one frame's step takes 1/86.13 s at the limit; a tick
        # of K frames for a newly admitted stream then adds K * that, on top of the prefill.
        "step_ms_at_10k_streams": 1000.0 * (w + 10_000 * per_stream) / bandwidth,
    }


def measure_copy_bandwidth(device: torch.device, nbytes: int, iters: int) -> float:
    """Device-to-device copy rate in B/s (read + write counted: 2 * nbytes per copy)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src), device, iters, warmup=2)
    return 2 * nbytes / statistics.median(times)


def time_calls(
    fn: Callable[[], object],
    device: torch.device,
    iters: int,
    warmup: int,
    cpu_clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds per call, one sample per call (CUDA events on GPU, ``cpu_clock`` on CPU: wall time
    by default; ``time.process_time`` gives CPU seconds, the cost on a shared, busy machine)."""
    for _ in range(warmup):
        fn()
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000.0)
    else:
        for _ in range(iters):
            t0 = cpu_clock()
            fn()
            out.append(cpu_clock() - t0)
    return out


def decoder_step_fn(shape: DecoderShape, batch: int, device: torch.device, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """A step over every layer with random weights, a pool of batch + 1 slots and shuffled slots."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*size, generator=g) * scale).to(device)

    s = shape
    conv = torch.zeros(batch + 1, s.layers, s.d_conv - 1, s.conv_dim, device=device)
    ssm = torch.zeros(batch + 1, s.layers, s.nheads, s.headdim, s.d_state, device=device)
    weights = [
        (
            rand(s.conv_dim, s.d_conv, scale=0.3),
            rand(s.conv_dim, scale=0.1),
            rand(s.nheads) - 2.0,
            rand(s.nheads, scale=0.5),
            rand(s.nheads),
        )
        for _ in range(s.layers)
    ]
    slots = (torch.randperm(batch, generator=g) + 1).to(device)
    inputs = (
        rand(batch, s.layers, s.conv_dim).to(dtype),
        rand(batch, s.layers, s.nheads).to(dtype),
        rand(batch, s.layers, s.d_inner).to(dtype),
    )

    def step(slots: torch.Tensor, xbc: torch.Tensor, dt: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = z[:, 0]
        for layer, w in enumerate(weights):
            out = ssm_step(xbc[:, layer], dt[:, layer], z[:, layer], conv, ssm, slots, layer, *w)
        return out

    return step, slots, inputs


def model_step_fn(voice: Any, batch: int, device: torch.device):  # type: ignore[no-untyped-def]
    """The voice's full step (decoder + vocoder) for one frame over batch rows."""
    state = voice.new_state(batch + 1)
    slots = (torch.randperm(batch) + 1).to(device)
    cond = torch.randn(batch, 1, voice.d_cond, device=device)
    controls = torch.tensor([NEUTRAL_CONTROLS], device=device).repeat(batch, 1)

    def step(slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        return voice.step(state, slots, cond, controls)

    return step, slots, (cond, controls), voice.state_bytes()


def time_step(
    fn: Callable[..., torch.Tensor],
    slots: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
    device: torch.device,
    iters: int,
    cpu_clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, bool]:
    """Median seconds per step of exactly ``len(slots)`` rows, and whether CUDA graphs were used."""
    batch = int(slots.shape[0])
    graphs = device.type == "cuda"
    step = GraphedStep(fn, device, buckets=(batch,), mode="graphs" if graphs else "eager")
    with torch.inference_mode():
        try:
            step.capture_all(*(t[:1] for t in inputs))
            t = statistics.median(
                time_calls(lambda: step(slots, *inputs), device, iters, warmup=3, cpu_clock=cpu_clock)
            )
            return t, graphs
        except RuntimeError as e:  # a step that syncs with the host cannot be captured: time it eagerly
            if not graphs:
                raise
            log.warning("batch %d: CUDA graph capture failed (%s); timing eagerly", batch, e)
            eager = GraphedStep(fn, device, buckets=(batch,), mode="eager")
            return statistics.median(time_calls(lambda: eager(slots, *inputs), device, iters, warmup=3)), False


def bench_rows(
    make: Callable[[int], tuple[Any, torch.Tensor, tuple[torch.Tensor, ...], int]],
    batches: tuple[int, ...],
    device: torch.device,
    iters: int,
    copy_bw: float,
    weights: int,
    cpu_clock: Callable[[], float] = time.perf_counter,
) -> list[dict[str, float]]:
    rows = []
    for batch in batches:
        fn, slots, inputs, bytes_per_row = make(batch)
        t, graphs = time_step(fn, slots, inputs, device, iters, cpu_clock)
        moved = weights + batch * bytes_per_row
        rows.append(
            {
                "batch": batch,
                "step_ms": 1000.0 * t,
                "us_per_row": 1e6 * t / batch,
                "bytes_per_step": moved,
                "achieved_Bps": moved / t,
                "fraction_of_copy_bw": moved / t / copy_bw,
                "realtime_streams": math.floor(batch / (t * FRAMES_PER_S)),  # batches of B back to back
                "batch_in_realtime": t <= 1.0 / FRAMES_PER_S,  # one step of B fits a frame
                "cuda_graphs": graphs,
            }
        )
        log.info("batch %6d: %.3f ms", batch, 1000.0 * t)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_table(title: str, rows: list[dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'batch':>7} {'step ms':>9} {'us/row':>8} {'MB/step':>9} {'GB/s':>8} {'% copy':>7} {'RT streams':>11}")
    for r in rows:
        print(
            f"{r['batch']:>7} {r['step_ms']:>9.3f} {r['us_per_row']:>8.2f} {r['bytes_per_step'] / 1e6:>9.2f} "
            f"{r['achieved_Bps'] / 1e9:>8.1f} {100 * r['fraction_of_copy_bw']:>6.1f}% {r['realtime_streams']:>11}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="CPU, tiny batches and iterations (CI)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1..16384)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="activation dtype")
    ap.add_argument("--layers", type=int, default=DecoderShape.layers)
    ap.add_argument("--d-model", type=int, default=DecoderShape.d_model)
    ap.add_argument("--headdim", type=int, default=DecoderShape.headdim)
    ap.add_argument("--d-state", type=int, default=DecoderShape.d_state)
    ap.add_argument("--model", default=None, help="also time a voice's full step: tiny | default | a voice dir")
    ap.add_argument("--bandwidth", type=float, default=4.3e12, help="B/s for the on-paper projection")
    ap.add_argument("--copy-mb", type=int, default=1024, help="tensor size for the copy-bandwidth measurement")
    ap.add_argument("--cpu-time", action="store_true", help="on CPU, time in process CPU seconds, not wall time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = torch's default)")
    ap.add_argument("--json", default=None, help="write the results here")
    return ap.parse_args(argv)


@dataclass(frozen=True)
class Setup:
    """What the arguments resolve to."""

    device: torch.device
    batches: tuple[int, ...]
    iters: int
    copy_mb: int
    dtype: torch.dtype
    shape: DecoderShape
    cpu_clock: Callable[[], float]  # time.perf_counter (wall) or time.process_time (--cpu-time)


def setup(args: argparse.Namespace) -> Setup:
    """Device, sizes and clock; --cpu-smoke caps everything to CI size."""
    default_batches = SMOKE_BATCHES if args.cpu_smoke else DEFAULT_BATCHES
    batches = default_batches if args.batches is None else tuple(int(b) for b in args.batches.split(","))
    if args.cpu_smoke:
        device, iters, copy_mb = torch.device("cpu"), min(args.iters, 3), min(args.copy_mb, 8)
    else:
        name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
        device, iters, copy_mb = torch.device("cpu" if name == "auto" else name), args.iters, args.copy_mb
    if args.threads:
        torch.set_num_threads(args.threads)
    act_bytes = 2 if args.dtype == "bf16" else 4
    shape = DecoderShape(args.layers, args.d_model, 2, args.headdim, args.d_state, 4, act_bytes)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    clock = time.process_time if args.cpu_time else time.perf_counter
    return Setup(device, batches, iters, copy_mb, dtype, shape, clock)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()


def bench_decoder(s: Setup, copy_bw: float) -> list[dict[str, float]]:
    """The SSM decoder step alone (random weights of ``s.shape``), per batch size."""

    def make(batch: int) -> tuple[Any, torch.Tensor, tuple[torch.Tensor, ...], int]:
        fn, slots, inputs = decoder_step_fn(s.shape, batch, s.device, s.dtype)
        return fn, slots, inputs, 2 * s.shape.state_bytes() + s.shape.activation_bytes()

    rows = bench_rows(make, s.batches, s.device, s.iters, copy_bw, s.shape.weight_bytes(), s.cpu_clock)
    print_table("SSM decoder step (all layers, Triton on CUDA / numba or torch on CPU)", rows)
    return rows


def bench_model(s: Setup, which: str, copy_bw: float) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """A voice's full step (decoder + vocoder, one frame), per batch size, and what the voice is."""
    voice = load_model(which, s.device)
    weights = sum(p.numel() * p.element_size() for p in voice.net.parameters())
    info = {"name": voice.name, "parameters": voice.param_count(), "state_bytes": voice.state_bytes()}

    def make(batch: int) -> tuple[Any, torch.Tensor, tuple[torch.Tensor, ...], int]:
        fn, slots, inputs, state = model_step_fn(voice, batch, s.device)
        return fn, slots, inputs, 2 * state

    rows = bench_rows(make, s.batches, s.device, s.iters, copy_bw, weights, s.cpu_clock)
    print_table(f"full voice step {voice.name!r} (decoder + vocoder, one frame)", rows)
    return rows, info


def print_projection(shape: DecoderShape, bandwidth: float, copy_bw: float, best: int) -> None:
    measured, paper = projection(shape, copy_bw), projection(shape, bandwidth)
    print(
        f"\non paper at {bandwidth / 1e12:.2f} TB/s: {paper['max_realtime_streams']:,} real-time decoder streams "
        f"({paper['bytes_per_stream_per_step']:.0f} B/stream/step); at the measured copy bandwidth: "
        f"{measured['max_realtime_streams']:,}"
    )
    print(f"measured: up to {best:,} real-time decoder streams (batches back to back)")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    s = setup(args)
    copy_bw = measure_copy_bandwidth(s.device, s.copy_mb * 1024 * 1024, max(3, s.iters // 5))
    print(f"device {s.device} ({device_name(s.device)})")
    print(f"copy bandwidth {copy_bw / 1e9:.1f} GB/s (read + write of a {s.copy_mb} MiB tensor)")
    print(f"decoder {asdict(s.shape)}: state {s.shape.state_bytes()} B/stream, "
          f"activations {s.shape.activation_bytes()} B/row/step")
    decoder_rows = bench_decoder(s, copy_bw)
    model_rows, model_info = bench_model(s, args.model, copy_bw) if args.model else (None, None)
    best = max((r["realtime_streams"] for r in decoder_rows), default=0)
    print_projection(s.shape, args.bandwidth, copy_bw, best)
    result = {
        "device": str(s.device),
        "device_name": device_name(s.device),
        "torch": torch.__version__,
        "cpu_smoke": args.cpu_smoke,
        "clock": "cuda events" if s.device.type == "cuda" else ("process cpu time" if args.cpu_time else "wall"),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "frames_per_s": FRAMES_PER_S,
        "shape": asdict(s.shape) | {"state_bytes": s.shape.state_bytes(),
                                    "activation_bytes": s.shape.activation_bytes()},
        "copy_bandwidth_Bps": copy_bw,
        "decoder": decoder_rows,
        "model": model_rows,
        "model_info": model_info,
        "projection_measured_bw": projection(s.shape, copy_bw),
        "projection_paper": projection(s.shape, args.bandwidth),
        "max_realtime_streams_measured": best,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def load_model(which: str, device: torch.device) -> Any:
    if which == "tiny":
        return random_voice(ModelConfig.tiny(), seed=0, name="tiny", device=device)
    return load_voice(None if which == "default" else which, device=device)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run(sys.argv[1:])
