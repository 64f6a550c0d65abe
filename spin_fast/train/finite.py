"""Catching a non-finite loss at any step without a host sync on every step.

`NonFiniteWatch.observe` runs every step: it folds `isfinite(loss)` into a device-side "first bad
step" scalar (a `torch.where`, queued like any other kernel: nothing waits for the GPU) and keeps a
reference to the batch's sample identities. `check` is the one host read; the loop calls it at
logging and checkpoint steps, before anything is saved, so a NaN or inf at a step that logs nothing
still stops training before the next checkpoint, naming that step and the samples of its batch.
"""
from __future__ import annotations

import torch


class NonFiniteWatch:
    def __init__(self, device, dataset_names):
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet (steps start at 1)
        self.dataset_names = list(dataset_names)
        self.recent: dict[int, tuple] = {}  # step -> (dataset_id, sample_index, image_path) since the last check

    def observe(self, step: int, loss: torch.Tensor, batch: dict) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad == 0), torch.full_like(self.first_bad, step), self.first_bad)
        self.recent[step] = (batch["dataset_id"], batch["sample_index"], batch["image_path"])

    def check(self) -> None:
        """FloatingPointError naming the first step with a non-finite loss and its batch's samples."""
        step = int(self.first_bad)  # the host sync, at logging / checkpoint steps only
        if step:
            raise FloatingPointError(self.describe(step))
        self.recent.clear()

    def describe(self, step: int) -> str:
        ids, index, paths = self.recent.get(step, (None, None, None))
        lines = [f"the training loss is not finite (NaN or inf) at step {step}; stopped before the next checkpoint "
                 "(the checkpoints written so far are kept). The samples of that batch:"]
        if ids is not None:
            for d, i, p in zip(ids.tolist(), index.tolist(), paths):
                lines.append(f"  dataset {self.dataset_names[d]} index {i} image {p}")
        return "\n".join(lines)
