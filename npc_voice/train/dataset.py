"""Teacher utterances for training: symbols, durations and vocoder features, held in memory.

A data directory holds ``utt_XXXXX.npz`` (teacher.py: symbols, durations, ...) and
``feat_XXXXX.npy`` [n_frames, 68] beside it (features.py). An utterance is used once both
exist; ``UtteranceSet.refresh`` picks up new ones while the teacher is still writing.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

VALIDATION_MODULUS = 40  # ~2.5% of utterances (by a hash of the id: stable as the corpus grows)


@dataclass(frozen=True)
class Utterance:
    id: str  # "utt_00042"
    ids: np.ndarray  # [s] int64 symbol ids
    durations: np.ndarray  # [s] int64 frames per symbol; sum == len(feats)
    feats: np.ndarray  # [t, 68] float32 vocoder features

    @property
    def n_frames(self) -> int:
        return int(self.feats.shape[0])


def is_validation(utt_id: str) -> bool:
    return zlib.crc32(utt_id.encode()) % VALIDATION_MODULUS == 0


def load_utterance(npz_path: Path, feat_path: Path, symbol_id: dict[str, int]) -> Utterance | None:
    """One utterance, or None (logged) if it is unusable: unknown symbols, length mismatch, bad numbers."""
    with np.load(npz_path) as z:
        symbols = [str(s) for s in z["symbols"]]
        durations = z["durations"].astype(np.int64)
    feats = np.load(feat_path).astype(np.float32)
    unknown = sorted({s for s in symbols if s not in symbol_id})
    if unknown:
        log.warning("%s: skipped, unknown symbols %s", npz_path.name, unknown)
        return None
    if int(durations.sum()) != feats.shape[0] or len(durations) != len(symbols) or (durations < 0).any():
        log.warning("%s: skipped, durations sum %d != %d feature frames", npz_path.name, int(durations.sum()),
                    feats.shape[0])
        return None
    if not np.isfinite(feats).all():
        log.warning("%s: skipped, non-finite features", feat_path.name)
        return None
    ids = np.array([symbol_id[s] for s in symbols], dtype=np.int64)
    return Utterance(npz_path.stem, ids, durations, feats)


class UtteranceSet:
    """All usable utterances of a data directory, split into train and validation by id."""

    def __init__(self, data_dir: str | Path, symbols: tuple[str, ...], limit: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.symbol_id = {s: i for i, s in enumerate(symbols)}
        self.limit = limit  # use at most this many utterances (lowest ids first)
        self.train: list[Utterance] = []
        self.valid: list[Utterance] = []
        self._seen: set[str] = set()

    def refresh(self) -> int:
        """Load utterances that appeared since the last call; returns how many were added."""
        added = 0
        for feat in sorted(self.data_dir.glob("feat_*.npy")):
            utt_id = "utt_" + feat.stem.split("_", 1)[1]
            if utt_id in self._seen:
                continue
            if self.limit is not None and len(self._seen) >= self.limit:
                break
            npz = self.data_dir / f"{utt_id}.npz"
            if not npz.is_file():
                continue
            self._seen.add(utt_id)
            try:
                utt = load_utterance(npz, feat, self.symbol_id)
            except (OSError, ValueError, KeyError) as e:  # a file still being written: retry next time
                log.warning("%s: not readable yet (%s)", feat.name, e)
                self._seen.discard(utt_id)
                continue
            if utt is not None:
                (self.valid if is_validation(utt_id) else self.train).append(utt)
                added += 1
        return added

    @property
    def train_frames(self) -> int:
        return sum(u.n_frames for u in self.train)


def feature_stats(utts: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over all frames (std floored so no dimension blows up)."""
    if not utts:
        raise ValueError("no utterances to compute feature statistics from")
    allf = np.concatenate([u.feats for u in utts]).astype(np.float64)
    return torch.tensor(allf.mean(0), dtype=torch.float32), torch.tensor(np.maximum(allf.std(0), 1e-3),
                                                                           dtype=torch.float32)


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # [U, S] int64, 0 = padding
    mask: torch.Tensor  # [U, S] bool
    durations: list[torch.Tensor]  # per utterance [s_i] int64 (teacher)
    feats: torch.Tensor  # [N, 68] frames of all utterances, concatenated in order


def collate(utts: list[Utterance], device: torch.device) -> Batch:
    S = max(len(u.ids) for u in utts)
    ids = torch.zeros(len(utts), S, dtype=torch.long)
    mask = torch.zeros(len(utts), S, dtype=torch.bool)
    for i, u in enumerate(utts):
        ids[i, : len(u.ids)] = torch.from_numpy(u.ids)
        mask[i, : len(u.ids)] = True
    return Batch(ids.to(device), mask.to(device), [torch.from_numpy(u.durations).to(device) for u in utts],
                 torch.from_numpy(np.concatenate([u.feats for u in utts])).to(device))


def sample_utterances(utts: list[Utterance], frames: int, rng: np.random.Generator) -> list[Utterance]:
    """Random utterances until they hold at least ``frames`` frames: without replacement, unless the
    whole set holds fewer frames (a tiny corpus), then in further random passes."""
    if not utts:
        raise ValueError("no training utterances loaded")
    out: list[Utterance] = []
    total = 0
    while True:
        for i in rng.permutation(len(utts)):
            out.append(utts[int(i)])
            total += utts[int(i)].n_frames
            if total >= frames:
                return out
