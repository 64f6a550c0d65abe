"""smplify op: a whole two-stage SMPLify fit with gradients by hand (no autograd).

`smplify_fit(consts, opts, pose, betas, cam_t, keypoints2d, center)` runs the one-launch Triton
kernel when `_dispatch.use_triton` says so (CUDA tensors, or SPIN_FAST_BACKEND=triton) and the
torch reference `smplify_fit_torch` otherwise (the CPU production path). Build the constants once
(`FitConstants`); `FitOptions` holds the numeric switches; the result is a `FitOutput`.
"""
from __future__ import annotations

import torch

from .._dispatch import use_triton
from .reference import FitConstants, FitOptions, FitOutput, smplify_fit_torch

__all__ = ["FitConstants", "FitOptions", "FitOutput", "smplify_fit", "smplify_fit_torch"]


def smplify_fit(consts: FitConstants, opts: FitOptions, pose: torch.Tensor, betas: torch.Tensor,
                cam_t: torch.Tensor, keypoints2d: torch.Tensor, center: torch.Tensor) -> FitOutput:
    """pose (B, 72) axis-angle, global orient first; betas (B, S); cam_t (B, 3); keypoints2d (B, 49, 3)
    crop pixels + confidence; center (B, 2) principal point; all in the compute dtype on one device.
    Returns FitOutput (fit, per-joint and total stage-2 losses, validity, Adam steps per stage)."""
    if use_triton(pose):
        from .function import smplify_fit_triton

        return smplify_fit_triton(consts, opts, pose, betas, cam_t, keypoints2d, center)
    return smplify_fit_torch(consts, opts, pose, betas, cam_t, keypoints2d, center)
