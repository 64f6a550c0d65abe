"""SPIN's training losses as small pure functions (SPEC.md "Training").

Weights come from `spin_fast.train.config.LOSS_PRESETS` ('mmhuman3d' default, 'spin' preset):
    total = overall * ( w3d  * keypoints3d   criterion on the 24 GT joints centred at the GT hip midpoint
                      + w2d  * keypoints2d   criterion on normalised crop coordinates, conf-weighted
                                             (OpenPose joints x openpose_2d)
                      + wv   * vertices      L1 to the fit's mesh, valid fits only
                      + wp   * pose          MSE on rotation matrices, valid fits only
                      + wb   * betas         MSE, valid fits only
                      + wc   * camera        mean(exp(-10 s)^2) )
Every function returns a scalar; a term whose mask selects no sample is 0 (not NaN). `convention`
('mmhuman3d' | 'spin', set by the preset) picks each codebase's 2D normalisation and 3D averaging.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spin_fast.geometry import axis_angle_to_rotmat

# smpl_49 GT hips (SPEC.md: the 24 GT joints start at 25; R hip = 25+2, L hip = 25+3)
GT_RIGHT_HIP, GT_LEFT_HIP = 27, 28
NUM_OPENPOSE = 25


def _criterion(name: str):
    if name == "smooth_l1":
        return lambda a, b: F.smooth_l1_loss(a, b, reduction="none")
    if name == "mse":
        return lambda a, b: F.mse_loss(a, b, reduction="none")
    raise ValueError(f"loss criterion must be 'smooth_l1' or 'mse', got {name!r}")


def normalise_pixels(xy: torch.Tensor, img_res: int, flavor: str = "mmhuman3d", projected: bool = False) -> torch.Tensor:
    """Crop pixels -> [-1, 1] as each codebase does it.
    spin:      2x/img_res - 1, ground truth and projections alike (projections have their principal
               point at img_res/2, so a projection at x lands where a label at x does).
    mmhuman3d: labels 2x/(img_res - 1) - 1; projections (`projected`, principal point img_res/2)
               2(x - img_res/2)/(img_res - 1), since mmhuman3d normalises its centre-origin projections
               by img_res - 1 alone. A projection matches a label half a pixel to its left."""
    if flavor == "spin":
        return 2.0 * xy / img_res - 1.0
    if flavor == "mmhuman3d":
        return 2.0 * (xy - img_res / 2.0) / (img_res - 1) if projected else 2.0 * xy / (img_res - 1) - 1.0
    raise ValueError(f"keypoint normalisation must be 'mmhuman3d' or 'spin', got {flavor!r}")


def keypoints2d_loss(pred_px: torch.Tensor, gt_kp2d: torch.Tensor, img_res: int, criterion: str,
                     openpose_weight: float = 1.0, flavor: str = "mmhuman3d") -> torch.Tensor:
    """pred_px (B, 49, 2) projected crop pixels (principal point img_res/2); gt_kp2d (B, 49, 3) crop
    pixels + confidence. Averaged over all B x 49 x 2 entries (both codebases)."""
    conf = gt_kp2d[..., 2:3].clone()
    conf[:, :NUM_OPENPOSE] *= openpose_weight
    err = _criterion(criterion)(normalise_pixels(pred_px, img_res, flavor, projected=True),
                                normalise_pixels(gt_kp2d[..., :2], img_res, flavor))
    return (conf * err).mean()


def keypoints3d_loss(pred_joints: torch.Tensor, gt_kp3d: torch.Tensor, has_3d: torch.Tensor,
                     criterion: str, convention: str = "mmhuman3d") -> torch.Tensor:
    """pred_joints (B, 49, 3); gt_kp3d (B, 49, 4) metres + confidence; has_3d (B,) bool.
    Both centred at their own GT hip midpoint (joints 27, 28). Only the 24 GT joints count: both
    codebases leave the 25 OpenPose joints out. Averaged as each codebase does:
      mmhuman3d: over every sample and all 49 joints (masked entries count in the mean);
      spin:      over the samples with 3D and the 24 GT joints."""
    m = has_3d.bool()
    if not m.any():
        return pred_joints.sum() * 0.0
    if convention == "mmhuman3d":
        p, g = pred_joints, gt_kp3d
        gt_joint = torch.arange(g.shape[1], device=g.device) >= NUM_OPENPOSE
        conf = g[..., 3:4] * (m[:, None] & gt_joint[None, :])[..., None].to(g.dtype)
        r, l = GT_RIGHT_HIP, GT_LEFT_HIP
    elif convention == "spin":
        p, g = pred_joints[m][:, NUM_OPENPOSE:], gt_kp3d[m][:, NUM_OPENPOSE:]
        conf = g[..., 3:4]
        r, l = GT_RIGHT_HIP - NUM_OPENPOSE, GT_LEFT_HIP - NUM_OPENPOSE
    else:
        raise ValueError(f"keypoints3d_loss: convention must be 'mmhuman3d' or 'spin', got {convention!r}")
    g = g[..., :3] - 0.5 * (g[:, r, :3] + g[:, l, :3])[:, None]
    p = p - 0.5 * (p[:, r] + p[:, l])[:, None]
    return (conf * _criterion(criterion)(p, g)).mean()


def _sample_mean(err: torch.Tensor, m: torch.Tensor, convention: str) -> torch.Tensor:
    """Mean of err (B, ...) over the samples m: 'spin' averages the selected samples only (SPIN
    indexes them out); 'mmhuman3d' averages every sample with the others weighted 0 (its weight=)."""
    if convention == "spin":
        return err[m].mean()
    if convention == "mmhuman3d":
        return torch.where(m.reshape(-1, *[1] * (err.dim() - 1)), err, 0.0).mean()
    raise ValueError(f"loss convention must be 'mmhuman3d' or 'spin', got {convention!r}")


def vertex_loss(pred_vertices: torch.Tensor, target_vertices: torch.Tensor, valid: torch.Tensor,
                convention: str = "mmhuman3d") -> torch.Tensor:
    """L1 between meshes (B, V, 3) of the valid samples (averaged as `convention` says)."""
    m = valid.bool()
    if not m.any():
        return pred_vertices.sum() * 0.0
    return _sample_mean((pred_vertices - target_vertices).abs(), m, convention)


def smpl_param_losses(pred_rotmat: torch.Tensor, pred_betas: torch.Tensor, target_pose: torch.Tensor,
                      target_betas: torch.Tensor, valid: torch.Tensor,
                      convention: str = "mmhuman3d") -> tuple[torch.Tensor, torch.Tensor]:
    """MSE on rotation matrices (pred (B, 24, 3, 3) vs target axis-angle (B, 72)) and on betas, of the
    valid samples (averaged as `convention` says)."""
    m = valid.bool()
    if not m.any():
        z = pred_rotmat.sum() * 0.0 + pred_betas.sum() * 0.0
        return z, z
    target_R = axis_angle_to_rotmat(target_pose.reshape(-1, 24, 3))
    return (_sample_mean((pred_rotmat - target_R).square(), m, convention),
            _sample_mean((pred_betas - target_betas).square(), m, convention))


def camera_prior(pred_camera: torch.Tensor) -> torch.Tensor:
    """mean(exp(-10 s)^2) over the weak-perspective scales s = pred_camera[:, 0]: keeps s positive."""
    return torch.exp(-10.0 * pred_camera[:, 0]).pow(2).mean()


def total_loss(terms: dict[str, torch.Tensor], weights: dict) -> torch.Tensor:
    s = sum(weights[k] * terms[k] for k in ("keypoints3d", "keypoints2d", "vertices", "pose", "betas", "camera"))
    return weights["overall"] * s
