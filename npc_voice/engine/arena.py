"""CondArena: every speaking line's conditioning frames in one device tensor of K-frame pages.

A line of n frames is padded with silence to a multiple of K and copied into free pages when
it starts; each tick a stream reads exactly one page (the next K frames), so gathering the
batch's ``cond [B, K, d]`` is one index operation over page ids instead of B slices and a
stack (the per-stream Python that would otherwise grow with thousands of streams).
"""
from __future__ import annotations

import torch


class CondArena:
    def __init__(self, k: int, d_cond: int, device: torch.device, pages: int = 256) -> None:
        self.k = k
        self.pages = torch.zeros((pages, k, d_cond), dtype=torch.float32, device=device)  # [n_pages, K, d]
        self._free = list(range(pages - 1, -1, -1))  # pop() hands out low pages first

    def alloc(self, cond: torch.Tensor) -> list[int]:
        """Copy ``cond`` [n * K, d] into n free pages (growing the arena if needed); their ids."""
        n = cond.shape[0] // self.k
        if n * self.k != cond.shape[0]:
            raise ValueError(f"cond has {cond.shape[0]} frames, not a multiple of K={self.k}")
        if len(self._free) < n:
            self._grow(n)
        ids = [self._free.pop() for _ in range(n)]
        index = torch.tensor(ids, dtype=torch.int64, device=self.pages.device)
        self.pages.index_copy_(0, index, cond.to(self.pages.dtype).view(n, self.k, -1))
        return ids

    def release(self, ids: list[int]) -> None:
        self._free.extend(reversed(ids))

    def gather(self, ids: list[int]) -> torch.Tensor:
        """The pages ``ids`` as ``[len(ids), K, d]`` (a copy: pages may be reused after this)."""
        index = torch.tensor(ids, dtype=torch.int64).to(self.pages.device, non_blocking=True)
        return self.pages.index_select(0, index)

    def _grow(self, needed: int) -> None:
        old = self.pages.shape[0]
        new = max(2 * old, old + needed)
        pages = torch.zeros((new, *self.pages.shape[1:]), dtype=self.pages.dtype, device=self.pages.device)
        pages[:old] = self.pages
        self.pages = pages
        self._free = list(range(new - 1, old - 1, -1)) + self._free
