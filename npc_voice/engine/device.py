"""Device choice and the batched step call (CUDA graphs per batch bucket on GPU, eager on CPU)."""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from npc_voice.model.api import VoiceModel

log = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (slots, cond, controls) -> pcm


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu", "cuda" or "cuda:N" as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name == "cuda" or name.startswith("cuda:"):
        if name != "cpu" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available (use 'auto' or 'cpu')")
        return torch.device(name)
    raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")


def make_step(model: VoiceModel, pool: dict[str, torch.Tensor], device: torch.device, max_batch: int) -> StepFn:
    """``step(slots [B], cond [B, K, d], controls [B, 4]) -> pcm [B, K * hop]`` over ``pool``.

    On CUDA the rows are padded to a power-of-two bucket (padding rows step scratch slot 0)
    and replayed through a CUDA graph captured per bucket; if capture fails the engine keeps
    the same padding but runs eagerly. On CPU the model is called as is (padding only costs)."""

    def eager(slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        return model.step(pool, slots, cond, controls)

    if device.type != "cuda":
        return eager
    from npc_voice_kernels.cuda_graphs import GraphedStep, bucket_for

    buckets = tuple(2**i for i in range(bucket_for(max_batch, tuple(2**i for i in range(31))).bit_length()))
    return _FallbackStep(GraphedStep(eager, device, buckets=buckets), GraphedStep(eager, device, buckets, "padded"))


class _FallbackStep:
    def __init__(self, graphed: StepFn, padded: StepFn) -> None:
        self.graphed: StepFn | None = graphed
        self.padded = padded

    def __call__(self, slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        if self.graphed is not None:
            try:
                return self.graphed(slots, cond, controls)
            except RuntimeError:
                log.exception("CUDA graph capture of the voice step failed; running the step eagerly from now on")
                self.graphed = None
        return self.padded(slots, cond, controls)
