"""What both SMPLify paths share: the flavors, their default iterations and stopping rule, the result."""
from __future__ import annotations

from typing import NamedTuple

import torch

from spin_fast.recipes import CODEBASES

FLAVORS = CODEBASES  # whose SMPLify objective (spin_fast.recipes)
DEFAULT_ITERS = {"spin": (100, 100), "mmhuman3d": (50, 50)}  # Adam steps of stage 1 and stage 2
MMH_FTOL = 1e-4  # mmhuman3d's relative loss change below which a sample stops ('spin' runs every step)
STOPS = ("sample", "batch")  # what the ftol test reads: each sample's loss, or the batch's summed loss


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
