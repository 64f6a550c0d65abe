"""Robust 2D reprojection loss of SMPLify in plain torch: the oracle and the CPU path.

Math (camera with identity rotation, translation t, focal length f, principal point c):
    X = joints3d + t;   p = f * X_xy / X_z + c                                   (pixels)
    rho_sigma(x) = sigma^2 x^2 / (sigma^2 + x^2)    (Geman-McClure; sigma = inf gives x^2)
  units 0, pixels (SPIN's smplify/losses.py body_fitting_loss):
    r = p - kp (pixels);                    loss_bj = c_bj^2 * sum_xy rho_sigma(r)
  units 1, normalised (mmhuman3d SMPLify + KeypointMSELoss(sigma) with reduction 'sum'):
    e = (2 p / S - 1) - (2 kp / S - 1) = 2 r / S;   loss_bj = c_bj * sum_xy rho_sigma(e^2)
    i.e. gmof is applied to the *squared* normalised residual F.mse_loss(..., 'none') = e^2, so
    each coordinate contributes sigma^2 e^4 / (sigma^2 + e^4), and the confidence is linear. S is
    `img_size`. Note: mmhuman3d's smplify.py normalises with (img_res - 1); pass img_size=223 to
    reproduce that constant bit for bit, the default 224 follows docs/spin.md (x_n = 2x/224 - 1).
Per-sample sum over joints ('sum') or per-joint values ('none'); samples never couple.
"""
from __future__ import annotations

import math

import torch

PIXELS, NORMALISED = 0, 1  # `units`: the residual in pixels (conf^2), or normalised e = 2 r / S (conf)
UNITS = (PIXELS, NORMALISED)
REDUCTIONS = ("sum", "none")


def check_args(units: int, reduction: str, sigma: float) -> None:
    if isinstance(units, bool) or units not in UNITS:
        raise ValueError(f"units must be {PIXELS} (pixels) or {NORMALISED} (normalised), got {units!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (math.inf for plain squares), got {sigma}")


def gmof(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure rho(x) = sigma^2 x^2 / (sigma^2 + x^2); x^2 when sigma is infinite."""
    if math.isinf(sigma):
        return x * x
    s2 = sigma * sigma
    x2 = x * x
    return s2 * x2 / (s2 + x2)


def default_center(batch: int, img_size: float, like: torch.Tensor) -> torch.Tensor:
    """(B, 2) principal point at the crop centre, (img_size / 2, img_size / 2) = (112, 112)."""
    return torch.full((batch, 2), 0.5 * img_size, dtype=like.dtype, device=like.device)


def project_points(
    joints3d: torch.Tensor, translation: torch.Tensor, focal_length: float, center: torch.Tensor
) -> torch.Tensor:
    """joints3d (B, J, 3), translation (B, 3), center (B, 2) -> pixels (B, J, 2)."""
    X = joints3d + translation[:, None, :]
    return focal_length * X[..., :2] / X[..., 2:3] + center[:, None, :]


def reprojection_loss_torch(
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
    None for the crop centre; units PIXELS (0) or NORMALISED (1) (module docstring). Returns (B,) for
    reduction='sum', (B, J) for 'none'."""
    check_args(units, reduction, sigma)
    if center is None:
        center = default_center(joints3d.shape[0], img_size, joints3d)
    r = project_points(joints3d, translation, focal_length, center) - keypoints2d  # (B, J, 2)
    if units == PIXELS:
        per_joint = confidence**2 * gmof(r, sigma).sum(dim=-1)
    else:
        e = 2.0 * r / img_size  # = (2p/S - 1) - (2kp/S - 1)
        per_joint = confidence * gmof(e * e, sigma).sum(dim=-1)
    return per_joint if reduction == "none" else per_joint.sum(dim=-1)
