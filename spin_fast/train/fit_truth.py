"""How far the fits store is from the truth, where the training data has SMPL ground truth.

SPIN's claim is that the fits improve as the network improves: SMPLify started from the network's
prediction finds better fits than the stored ones and replaces them. On data whose samples carry
ground-truth SMPL (Human3.6M's mosh fits, the synthetic stand-in's true parameters) that can be
measured: `FitsTruth.pa_mpjpe(fits)` is the mean PA-MPJPE (mm, the 14 LSP joints of the H36M-17
regression, as evaluation scores 3DPW) between the stored fits and the ground truth, over a fixed
subset of those samples (at most `limit` a dataset, drawn once, so every logging step scores the same
samples). Both bodies are the neutral model, as the trainer reads ground-truth SMPL.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from spin_fast.metrics import pw3d_metrics

DEFAULT_LIMIT = 1024  # samples a dataset: bounds the cost of a logging step on real data (312k Human3.6M frames)


class FitsTruth:
    """Ground-truth SMPL of (a subset of) the training samples that have it, and the score of a fits store."""

    def __init__(self, dataset_id: np.ndarray, index: np.ndarray, truth: np.ndarray, body):
        self.dataset_id = torch.as_tensor(dataset_id, dtype=torch.long)
        self.index = torch.as_tensor(index, dtype=torch.long)
        self.body = body
        dev = body.v_template.device
        t = torch.as_tensor(truth, dtype=torch.float32, device=dev)
        with torch.no_grad():
            self._gt_joints = body.joints_only(t[:, 72:], t[:, 3:72], t[:, :3], joint_set="h36m_17")

    @classmethod
    def from_sources(cls, sources, body, names: Sequence[str] | None = None, limit: int = DEFAULT_LIMIT,
                     seed: int = 0) -> "FitsTruth | None":
        """From the HumanData views of a loader's `sources` (spin_fast.data.batch.Sources): the samples with
        finite ground-truth SMPL, at most `limit` of each dataset (a fixed draw from `seed`); None when
        no training sample has SMPL. `names` gives the fits store's dataset order (default: sources')."""
        names = list(sources.names if names is None else names)
        rng = np.random.default_rng(seed)
        ids, idx, rows = [], [], []
        for name, data in zip(sources.names, sources.data):
            has = np.asarray(data.has_smpl, bool) & np.isfinite(data.pose).all(1) & np.isfinite(data.betas).all(1)
            where = np.flatnonzero(has)
            if len(where) == 0:
                continue
            if len(where) > limit:
                where = np.sort(rng.choice(where, limit, replace=False))
            ids.append(np.full(len(where), names.index(name)))
            idx.append(where)
            rows.append(np.concatenate([data.pose[where], data.betas[where]], 1))
        if not ids:
            return None
        return cls(np.concatenate(ids), np.concatenate(idx), np.concatenate(rows), body)

    def __len__(self) -> int:
        return len(self.index)

    @torch.no_grad()
    def pa_mpjpe(self, fits) -> float:
        """Mean PA-MPJPE (mm) of the fits store's rows of these samples against their ground truth."""
        dev = self._gt_joints.device
        rows = fits.get(self.dataset_id.to(fits.device), self.index.to(fits.device)).to(dev).float()
        pred = self.body.joints_only(rows[:, 72:], rows[:, 3:72], rows[:, :3], joint_set="h36m_17")
        return float(pw3d_metrics(pred, self._gt_joints)["pa_mpjpe"].mean())
