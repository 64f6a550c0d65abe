"""reprojection op: SMPLify's robust (Geman-McClure) 2D reprojection loss, in pixel units (SPIN's)
or normalised units (mmhuman3d's), chosen by the numeric switch `units` (PIXELS / NORMALISED).

`reprojection_loss(...)` runs the Triton kernel when `_dispatch.use_triton` says so (CUDA tensors,
or SPIN_FAST_BACKEND=triton) and the torch reference `reprojection_loss_torch` otherwise.
"""
from __future__ import annotations

import torch

from .._dispatch import use_triton
from .reference import NORMALISED, PIXELS, gmof, project_points, reprojection_loss_torch

__all__ = ["NORMALISED", "PIXELS", "gmof", "project_points", "reprojection_loss", "reprojection_loss_torch"]


def reprojection_loss(
    joints3d: torch.Tensor,
    translation: torch.Tensor,
    keypoints2d: torch.Tensor,
    confidence: torch.Tensor,
    focal_length: float = 5000.0,
    center: torch.Tensor | None = None,
    sigma: float = 100.0,
    units: int = PIXELS,
    img_size: float = 224,
    reduction: str = "sum",
) -> torch.Tensor:
    """joints3d (B, J, 3) camera-frame joints before translation; translation (B, 3);
    keypoints2d (B, J, 2) pixels in the img_size crop; confidence (B, J); center (B, 2) pixels or
    None for the crop centre; units: PIXELS (0) or NORMALISED (1); sigma = math.inf for plain squares. Returns (B,) for reduction='sum',
    (B, J) for 'none'. The Triton path differentiates w.r.t. joints3d and translation only."""
    from .function import check_reprojection_args  # imports triton (not its driver): deferred to the call

    check_reprojection_args(joints3d, translation, keypoints2d, confidence, focal_length, center, sigma,
                            units, img_size, reduction)
    tensors = [t for t in (joints3d, translation, keypoints2d, confidence, center) if t is not None]
    if use_triton(*tensors):
        from .function import reprojection_loss_triton

        return reprojection_loss_triton(joints3d, translation, keypoints2d, confidence, focal_length, center,
                                        sigma, units, img_size, reduction)
    return reprojection_loss_torch(joints3d, translation, keypoints2d, confidence, focal_length, center, sigma,
                                   units, img_size, reduction)
