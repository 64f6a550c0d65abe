"""What both SMPLify paths share: the flavors (whose objective), their defaults from the recipes, the result."""
from __future__ import annotations

from typing import NamedTuple

import torch

from spin_fast.recipes import CODEBASES, Codebase, recipe

FLAVORS = CODEBASES  # whose SMPLify objective (spin_fast.recipes)
STOPS = ("sample", "batch")  # what the ftol test reads: each sample's loss, or the batch's summed loss


def flavor_defaults(flavor: Codebase, stage1_iters: int | None, stage2_iters: int | None,
                    ftol: float | None) -> tuple[int, int, float]:
    """(stage1_iters, stage2_iters, ftol): the given values, the flavor's SMPLify recipe where None
    (spin: 100 + 100, every step; mmhuman3d: 50 + 50, ftol 1e-4)."""
    base = recipe(flavor).smplify
    return (base.stage1_iters if stage1_iters is None else int(stage1_iters),
            base.stage2_iters if stage2_iters is None else int(stage2_iters),
            base.ftol if ftol is None else float(ftol))


class SMPLifyResult(NamedTuple):
    """What SMPLify returns (both paths). Rows of invalid samples hold the input fit and inf losses."""

    pose: torch.Tensor  # (B, 72) axis-angle, global orient first
    betas: torch.Tensor  # (B, 10)
    cam_t: torch.Tensor  # (B, 3) camera translation
    joint_loss: torch.Tensor  # (B, 49) stage-2 data term per joint at the result (SPIN's get_fitting_loss)
    total_loss: torch.Tensor  # (B,) stage-2 objective (data term + priors) at the result
    valid: torch.Tensor  # (B,) bool: False where the input or the fit was not finite (or nothing to fit)
    num_invalid: torch.Tensor  # () int64: number of False in `valid` (a tensor: no host sync)
    iterations: torch.Tensor  # (B, 2) int64: Adam steps each sample took in stage 1 and stage 2
