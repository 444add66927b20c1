"""Train a voice on teacher data: ``python -m npc_voice.train.train --data DIR --run RUN``.

AdamW with a warmup-stable-decay schedule (constant LR, then a decay over the last
``decay_frac`` of the run, so a run can be extended before its decay starts), an EMA of the
weights (exported), packed rows (see objective.py), a progress line, periodic checkpoints
(``RUN/train_state.pt``, resumed automatically), validation and an export of the EMA
weights to ``RUN/voice/`` (best validation so far in ``RUN/best/``). Seeded: batch ``k`` is
drawn from ``default_rng([seed, k])``, so a resumed run draws what the full run would.
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from npc_voice.contracts import PHONEME_SYMBOLS
from npc_voice.model.checkpoint import CheckpointError, VoiceMeta, load_voice_net, save_voice
from npc_voice.model.config import ModelConfig
from npc_voice.model.net import VoiceNet
from npc_voice.train.dataset import UtteranceSet, collate, feature_stats, sample_utterances
from npc_voice.train.objective import loss_parts, offset_for, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str  # utt_*.npz + feat_*.npy
    run_dir: str  # checkpoints, logs, exports
    steps: int | None = None  # schedule length in steps (reproducible) ...
    hours: float | None = None  # ... or in wall-clock hours (whichever ends first when both are set)
    rows: int = 8  # packed rows per batch
    seq_frames: int = 256  # frames per row (3 s)
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 200  # steps
    decay_frac: float = 0.25  # last fraction of the schedule decays the LR (cosine) to ~0
    ema: float = 0.998
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1  # torch CPU threads: on a shared, oversubscribed CPU one thread measured 8x faster than two
    n_utts: int | None = None  # use at most this many utterances
    ckpt_every_s: float = 300.0
    reload_every_s: float = 300.0  # pick up utterances that appeared since (teacher still running)
    val_every: int = 250  # steps
    log_every: int = 20
    name: str = "default"  # voice name in the export
    init: str | None = None  # voice folder to start from (weights + feature normalisation); fresh optimizer
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.steps is None and self.hours is None:
            raise ValueError("give steps or hours (or both)")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if self.hours is not None and not self.hours > 0:
            raise ValueError(f"hours={self.hours} must be > 0")


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    start = 1.0 - cfg.decay_frac
    if progress <= start:
        return cfg.lr * warm
    t = min(1.0, (progress - start) / max(cfg.decay_frac, 1e-9))
    return cfg.lr * warm * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))


def _progress(cfg: TrainConfig, step: int, elapsed: float) -> float:
    p = 0.0
    if cfg.steps is not None:
        p = max(p, step / cfg.steps)
    if cfg.hours is not None:
        p = max(p, elapsed / (cfg.hours * 3600.0))
    return p


def default_symbols() -> tuple[str, ...]:
    """The symbol inventory a voice is trained on unless told otherwise (Piper's)."""
    return PHONEME_SYMBOLS


def model_config(cfg: TrainConfig, symbols: tuple[str, ...]) -> ModelConfig:
    """The model a run trains: ``cfg.model``, widened to hold every symbol."""
    if cfg.model.n_symbols >= len(symbols):
        return cfg.model
    return ModelConfig.from_dict({**cfg.model.to_dict(), "n_symbols": len(symbols)})


def load_init(voice_dir: str, model_cfg: ModelConfig, symbols: tuple[str, ...],
              device: str | torch.device = "cpu") -> tuple[VoiceNet, VoiceMeta]:
    """The voice a warm start begins from, checked against the model being trained (CheckpointError if unusable)."""
    net, meta = load_voice_net(voice_dir, device)
    if net.cfg != model_cfg:
        raise CheckpointError(f"--init {voice_dir}: model {net.cfg} differs from the one being trained {model_cfg}")
    if tuple(meta.symbols) != tuple(symbols):
        raise CheckpointError(f"--init {voice_dir}: its symbol set differs from the one being trained")
    return net, meta


class Trainer:
    def __init__(self, cfg: TrainConfig, symbols: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.symbols = symbols
        self.run = Path(cfg.run_dir)
        self.run.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.info("device %s, %d CPU threads", self.device, torch.get_num_threads())
        model_cfg = model_config(cfg, symbols)
        self.data = UtteranceSet(cfg.data_dir, symbols, cfg.n_utts)
        self.data.refresh()
        torch.manual_seed(cfg.seed)
        self.net = VoiceNet(model_cfg).to(self.device)
        self.ema = copy.deepcopy(self.net).eval()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.98))
        self.step = 0
        self.elapsed = 0.0  # training seconds over all resumes
        self.best = math.inf
        self.history: list[dict[str, float]] = []  # validation metrics
        self.losses: list[float] = []  # training loss per step of this process
        if not self._resume() and cfg.init:
            self._init_from(cfg.init)
        elif self.step == 0 and not self.state_path.is_file():
            mean, std = feature_stats(self.data.train)
            self.net.set_stats(mean.to(self.device), std.to(self.device))
            self.ema.set_stats(mean.to(self.device), std.to(self.device))
        log.info("model: %d parameters; data: %d train / %d validation utterances (%.2f h)",
                 sum(p.numel() for p in self.net.parameters()), len(self.data.train), len(self.data.valid),
                 self.data.train_frames * 256 / 22050 / 3600)

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run / "train_state.pt"

    def _resume(self) -> bool:
        if not self.state_path.is_file():
            return False
        st = torch.load(self.state_path, map_location=self.device, weights_only=False)
        if st["model_cfg"] != self.net.cfg.to_dict() or tuple(st["symbols"]) != self.symbols:
            raise ValueError(f"{self.state_path}: written for another model or symbol set; use a new run dir")
        for net in (self.net, self.ema):
            net.set_stats(st["feat_mean"].to(self.device), st["feat_std"].to(self.device))
        self.net.load_state_dict(st["net"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed, self.best = st["step"], st["elapsed"], st["best"]
        self.history = st.get("history", [])
        log.info("resumed %s at step %d (%.0f s trained)", self.state_path, self.step, self.elapsed)
        return True

    def _init_from(self, voice_dir: str) -> None:
        """Warm start: weights and feature normalisation of an exported voice (same model shape)."""
        net, meta = load_init(voice_dir, self.net.cfg, self.symbols, self.device)
        for target in (self.net, self.ema):
            target.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
            target.set_stats(net.feat_mean, net.feat_std)
        log.info("initialised from %s (voice version %s)", voice_dir, meta.version)

    def save(self) -> None:
        st = {
            "net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
            "step": self.step, "elapsed": self.elapsed, "best": self.best, "history": self.history,
            "feat_mean": self.net.feat_mean.cpu(), "feat_std": self.net.feat_std.cpu(),
            "model_cfg": self.net.cfg.to_dict(), "symbols": list(self.symbols), "train_cfg": asdict(self.cfg),
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(st, tmp)
        tmp.replace(self.state_path)
        save_voice(self.run / "voice", self.ema, self.symbols, self.cfg.name, self.provenance())

    def provenance(self) -> dict[str, Any]:
        return {
            "steps": self.step, "train_seconds": round(self.elapsed), "device": str(self.device),
            "threads": self.cfg.threads, "train_utterances": len(self.data.train),
            "train_hours": round(self.data.train_frames * 256 / 22050 / 3600, 3),
            "data_dir": self.cfg.data_dir, "seed": self.cfg.seed, "init": self.cfg.init,
            "last_validation": self.history[-1:] or None,
        }

    # -- loop --------------------------------------------------------------------------------------
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
                e.lerp_(p, 1.0 - decay)

    def _validate(self) -> dict[str, float]:
        metrics = validate(self.ema, self.data.valid, self.device)
        metrics["step"] = float(self.step)
        self.history.append(metrics)
        log.info("validation step %d: %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if metrics["val_total"] < self.best:
            self.best = metrics["val_total"]
            save_voice(self.run / "best", self.ema, self.symbols, self.cfg.name, self.provenance())
        return metrics

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        frames_per_step = cfg.rows * cfg.seq_frames
        t_last_ckpt = t_last_reload = time.monotonic()
        window_t, window_frames = time.monotonic(), 0
        self.net.train()
        while _progress(cfg, self.step, self.elapsed) < 1.0:
            t0 = time.monotonic()
            if t0 - t_last_reload > cfg.reload_every_s:
                if added := self.data.refresh():
                    log.info("data: +%d utterances, now %d train (%.2f h)", added, len(self.data.train),
                             self.data.train_frames * 256 / 22050 / 3600)
                t_last_reload = t0
            rng = np.random.default_rng([cfg.seed, self.step])
            utts = sample_utterances(self.data.train, frames_per_step + cfg.seq_frames, rng)
            batch = collate(utts, self.device)
            progress = _progress(cfg, self.step, self.elapsed)
            lr = lr_at(cfg, self.step, progress)
            for g in self.opt.param_groups:
                g["lr"] = lr
            parts = loss_parts(self.net, batch, cfg.rows, cfg.seq_frames, offset_for(batch, cfg.rows,
                                                                                       cfg.seq_frames, rng))
            self.opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            self.losses.append(parts["total"].item())
            gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            if torch.isfinite(gnorm):
                self.opt.step()
                self._update_ema()
            else:
                log.warning("step %d: non-finite gradient, update skipped", self.step)
            self.step += 1
            self.elapsed += time.monotonic() - t0
            window_frames += frames_per_step
            if self.step % cfg.log_every == 0:
                now = time.monotonic()
                fps = window_frames / max(1e-9, now - window_t)
                window_t, window_frames = now, 0
                left = self._seconds_left(fps)
                log.info("step %d %s lr %.2e | %.0f frames/s | %.0f%% ETA %s", self.step,
                         " ".join(f"{k} {v.item():.4f}" for k, v in parts.items()), lr, fps,
                         100 * _progress(cfg, self.step, self.elapsed), time.strftime("%H:%M:%S", time.gmtime(left)))
            if self.step % cfg.val_every == 0:
                self._validate()
            if time.monotonic() - t_last_ckpt > cfg.ckpt_every_s:
                self.save()
                t_last_ckpt = time.monotonic()
        metrics = self._validate()
        self.save()
        log.info("done: step %d, %.0f s; exported %s", self.step, self.elapsed, self.run / "voice")
        return metrics

    def _seconds_left(self, fps: float) -> float:
        cfg = self.cfg
        left = math.inf
        if cfg.steps is not None:
            left = (cfg.steps - self.step) * cfg.rows * cfg.seq_frames / max(fps, 1e-9)
        if cfg.hours is not None:
            left = min(left, cfg.hours * 3600 - self.elapsed)
        return max(0.0, left)


def train(cfg: TrainConfig, symbols: tuple[str, ...] | None = None) -> Path:
    """Train (or resume) and return the exported voice directory."""
    trainer = Trainer(cfg, default_symbols() if symbols is None else symbols)
    if not trainer.data.train:
        raise ValueError(f"no usable utterances (utt_*.npz with feat_*.npy) in {cfg.data_dir}")
    trainer.train()
    return trainer.run / "voice"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, help="schedule length in optimizer steps")
    p.add_argument("--hours", type=float, help="schedule length in training hours")
    p.add_argument("--n-utts", type=int, help="use at most this many utterances")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: best on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--rows", type=int, default=8, help="packed rows per batch")
    p.add_argument("--name", default="default", help="voice name in the export")
    p.add_argument("--init", help="voice folder to start from (warm start: same model shape, fresh optimizer)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="directory with utt_*.npz and feat_*.npy")
    p.add_argument("--run", required=True, help="run directory (checkpoints, exports); resumed if present")
    add_arguments(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = TrainConfig(data_dir=a.data, run_dir=a.run, steps=a.steps, hours=a.hours, n_utts=a.n_utts,
                      threads=a.threads, seed=a.seed, lr=a.lr, rows=a.rows, name=a.name, init=a.init)
    train(cfg)


if __name__ == "__main__":
    main()
