"""Device choice and the batched step call (CUDA graphs per batch bucket on GPU, eager on CPU)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch
from npc_voice_kernels.cuda_graphs import GraphedStep, bucket_for

from npc_voice.engine.split import RowSplitter
from npc_voice.model.api import VoiceModel

log = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (slots, cond, controls) -> pcm


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu", "cuda" or "cuda:N" as given. Chosen once at start-up."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name == "cuda" or name.startswith("cuda:"):
        if name != "cpu" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available (use 'auto' or 'cpu')")
        return torch.device(name)
    raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")


class DeviceStep:
    """``step(slots [B], cond [B, K, d], controls [B, N_CONTROLS]) -> pcm [B, K * hop]`` over one pool.

    On CUDA the rows are padded to a power-of-two bucket (padding rows step scratch slot 0) and
    replayed through a CUDA graph per bucket. ``capture`` captures every bucket; the engine calls
    it on its thread before the first tick (at start-up, and when a voice is added), so a tick
    never captures. If capture fails the step keeps the same padding but runs eagerly. On CPU the
    model is called as is (padding only costs); ``mode`` "padded" forces the padded path and its
    up-front warm-up there, for tests."""

    def __init__(self, model: VoiceModel, pool: dict[str, torch.Tensor], device: torch.device, max_batch: int,
                 mode: str = "auto", splitter: RowSplitter | None = None) -> None:
        def eager(slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
            return model.step(pool, slots, cond, controls)

        if mode == "auto":
            mode = "graphs" if device.type == "cuda" else "eager"
        top = bucket_for(max_batch, tuple(2**i for i in range(31)))
        buckets = tuple(2**i for i in range(top.bit_length()))
        self._eager = eager
        self._device, self._buckets = device, buckets
        self._run: StepFn = eager if mode == "eager" else GraphedStep(eager, device, buckets, mode)
        self._splitter: RowSplitter | None = None
        if mode == "eager" and splitter is not None and splitter.threads > 1:  # CPU: rows in chunks on threads
            self._run = partial(splitter.run, eager)
            self._splitter = splitter

    @property
    def mode(self) -> str:
        return self._run.mode if isinstance(self._run, GraphedStep) else "eager"

    def capture(self, cond: torch.Tensor, controls: torch.Tensor) -> None:
        """Capture (or warm up, mode "padded") every bucket now. ``cond`` [1, K, d] and ``controls``
        [1, N_CONTROLS] are the template row. A failed CUDA graph capture is logged and the step
        runs padded and eagerly from then on (the daemon still serves)."""
        run = self._run
        if not isinstance(run, GraphedStep):
            return
        try:
            run.capture_all(cond, controls)
        except Exception:
            if run.mode != "graphs":
                raise
            log.exception("CUDA graph capture of the voice step failed; running it padded and eagerly")
            padded = GraphedStep(self._eager, self._device, self._buckets, "padded")
            padded.capture_all(cond, controls)
            self._run = padded

    def __call__(self, slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        return self._run(slots, cond, controls)

    def one_thread_s(self) -> float | None:
        """What the last call's rows took added up over the threads that stepped them (its wall time
        had it run on one thread); None when the last call was not split."""
        return self._splitter.last_serial_s if self._splitter is not None else None


def make_step(model: VoiceModel, pool: dict[str, torch.Tensor], device: torch.device, max_batch: int,
              splitter: RowSplitter | None = None) -> DeviceStep:
    """The model's batched step over ``pool`` on ``device`` (see DeviceStep); on CPU a call's rows
    stepped by ``splitter``'s threads together when given."""
    return DeviceStep(model, pool, device, max_batch, splitter=splitter)
