"""Mixed-dataset sampling with fixed ratios, deterministic from a seed, sharded across ranks.

Every training step s draws one *global* batch of G = batch_size * world_size samples; rank r takes
rows [r * batch_size, (r + 1) * batch_size). A sample is (dataset id, index inside its dataset):
the index keys the fits table (docs/spin.md "Fits in the loop").

How many samples each dataset gets is fixed, not drawn: over a cycle of K steps (K * G >= 4096
samples) the counts are the ratios apportioned exactly (largest remainder), spread over the steps
by smooth weighted round robin, so any window of samples has every dataset within one sample of
its share. Inside a dataset, samples are visited epoch by epoch in a fresh permutation (seed,
dataset, epoch). The whole schedule is a pure function of (seed, step): `batch(step)` needs no
history, so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class MixedSampler:
    def __init__(self, sizes: Sequence[int], ratios: Sequence[float], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, cycle_samples: int = 4096):
        sizes = [int(s) for s in sizes]
        ratios = np.asarray(ratios, np.float64)
        if len(sizes) != len(ratios) or not sizes:
            raise ValueError(f"sizes and ratios need one entry a dataset, got {len(sizes)} and {len(ratios)}")
        if (ratios < 0).any() or ratios.sum() <= 0:
            raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios.tolist()}")
        if any(s <= 0 for s, r in zip(sizes, ratios) if r > 0):
            raise ValueError(f"a dataset with a positive ratio is empty: sizes {sizes}, ratios {ratios.tolist()}")
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size > 0 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        self.sizes, self.ratios = sizes, ratios / ratios.sum()
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, int(seed), rank, world_size
        G = self.global_batch_size = batch_size * world_size
        self.cycle_steps = K = max(1, -(-cycle_samples // G))
        # 1. exact counts over one cycle (largest remainder)
        total = K * G
        want = self.ratios * total
        quota = np.floor(want).astype(np.int64)
        rest = total - quota.sum()
        quota[np.argsort(-(want - quota), kind="stable")[:rest]] += 1
        # 2. spread over the cycle's positions: smooth weighted round robin
        order = np.empty(total, np.int64)
        current = np.zeros(len(sizes), np.int64)
        for p in range(total):
            current += quota
            d = int(np.argmax(current))
            current[d] -= total
            order[p] = d
        counts = np.stack([np.bincount(order[k * G:(k + 1) * G], minlength=len(sizes)) for k in range(K)])
        self._counts = counts                                      # (K, D) samples of d in step k of a cycle
        self._cum = np.concatenate([np.zeros((1, len(sizes)), np.int64), np.cumsum(counts, 0)])  # (K+1, D)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def _permutation(self, d: int, epoch: int) -> np.ndarray:
        key = (d, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.sizes):
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, 1, d, epoch])
            self._perm_cache[key] = rng.permutation(self.sizes[d])
        return self._perm_cache[key]

    def draws_before(self, step: int) -> np.ndarray:
        """(D,) samples of each dataset drawn in steps [0, step)."""
        q, r = divmod(int(step), self.cycle_steps)
        return q * self._cum[-1] + self._cum[r]

    def global_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset_id (G,), index (G,)) of the global batch of `step`, shuffled."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        start = self.draws_before(step)
        counts = self._counts[step % self.cycle_steps]
        ids, idx = [], []
        for d, c in enumerate(counts):
            if c == 0:
                continue
            k = start[d] + np.arange(c)
            n = self.sizes[d]
            epochs = k // n
            out = np.empty(c, np.int64)
            for e in np.unique(epochs):
                sel = epochs == e
                out[sel] = self._permutation(d, int(e))[k[sel] % n]
            ids.append(np.full(c, d, np.int64))
            idx.append(out)
        ids, idx = np.concatenate(ids), np.concatenate(idx)
        shuffle = np.random.default_rng([self.seed, 2, step]).permutation(len(ids))
        return ids[shuffle], idx[shuffle]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's (dataset_id (B,), index (B,)) for `step`."""
        ids, idx = self.global_batch(step)
        s = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return ids[s], idx[s]

    def rng(self, step: int) -> np.random.Generator:
        """Generator for this rank's augmentation parameters of `step` (independent of the schedule)."""
        return np.random.default_rng([self.seed, 3, step, self.rank])
