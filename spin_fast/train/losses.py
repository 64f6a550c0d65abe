"""SPIN's training losses as small pure functions (docs/spin.md "Training"), each codebase's way.

Weights, criterion and averaging come from the run's loss recipe (`spin_fast.recipes.LossRecipe`):
    total = overall * ( w3d  * keypoints3d   criterion on 3D joints centred at the GT hip midpoint
                      + w2d  * keypoints2d   criterion on normalised crop coordinates, conf-weighted
                                             (OpenPose joints x openpose_2d)
                      + wv   * vertices      L1 to the fit's mesh, valid fits only
                      + wp   * pose          MSE on rotation matrices, valid fits only
                      + wb   * betas         MSE, valid fits only
                      + wc   * camera        mean(exp(-10 s)^2) )
`convention` (the recipe's `averaging`) picks how the keypoint terms are normalised and averaged:
  mmhuman3d (mesh_estimator.py with a config that collects no has_keypoints2d/3d, as the SPIN cache
            config): the confidence-weighted sum over all 49 joints divided by the number of entries
            (joint x coordinate) whose confidence is > 0;
  spin      (train/trainer.py): the mean over every entry (2D: all B x 49 x 2; 3D: the 24 GT joints
            of the samples with 3D).
Vertex, pose and betas terms are the mean over the valid fits' entries in both codebases.

Every function returns a scalar, 0 (not NaN) when nothing is selected, and none reads a value back
to the host: selections are masks, averages are masked sums over clamped counts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spin_fast.constants import GT_LEFT_HIP, GT_RIGHT_HIP, NUM_OPENPOSE_JOINTS
from spin_fast.geometry import axis_angle_to_rotmat
from spin_fast.recipes import CODEBASES, DEFAULT_CODEBASE, Codebase, LossRecipe

CONVENTIONS = CODEBASES  # whose keypoint normalisation and averaging (spin_fast.recipes)


def _criterion(name: str):
    if name == "smooth_l1":
        return lambda a, b: F.smooth_l1_loss(a, b, reduction="none")
    if name == "mse":
        return lambda a, b: F.mse_loss(a, b, reduction="none")
    raise ValueError(f"loss criterion must be 'smooth_l1' or 'mse', got {name!r}")


def _check_convention(convention: Codebase) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"loss convention must be one of {CONVENTIONS}, got {convention!r}")


def _mean_over_positive(weighted_err: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """mmhuman3d's average: sum of conf * err over the number of entries with conf > 0 (0 if none).
    conf broadcasts against weighted_err; the count is taken at weighted_err's shape."""
    count = (conf > 0).expand_as(weighted_err).sum()
    return weighted_err.sum() / count.clamp(min=1)


def normalise_pixels(xy: torch.Tensor, img_res: int, convention: Codebase = DEFAULT_CODEBASE,
                     projected: bool = False) -> torch.Tensor:
    """Crop pixels -> [-1, 1] as each codebase does it.
    spin:      2x/img_res - 1, ground truth and projections alike (projections have their principal
               point at img_res/2, so a projection at x lands where a label at x does).
    mmhuman3d: labels 2x/(img_res - 1) - 1; projections (`projected`, principal point img_res/2)
               2(x - img_res/2)/(img_res - 1), since mmhuman3d normalises its centre-origin projections
               by img_res - 1 alone. A projection matches a label half a pixel to its left."""
    _check_convention(convention)
    if convention == "spin":
        return 2.0 * xy / img_res - 1.0
    return 2.0 * (xy - img_res / 2.0) / (img_res - 1) if projected else 2.0 * xy / (img_res - 1) - 1.0


def keypoints2d_loss(pred_px: torch.Tensor, gt_kp2d: torch.Tensor, img_res: int, criterion: str,
                     openpose_weight: float = 1.0, convention: Codebase = DEFAULT_CODEBASE) -> torch.Tensor:
    """pred_px (B, 49, 2) projected crop pixels (principal point img_res/2); gt_kp2d (B, 49, 3) crop
    pixels + confidence; the first 25 (OpenPose) confidences are scaled by openpose_weight.
    mmhuman3d: sum(conf * err) / #(entries with conf > 0); spin: mean over all B x 49 x 2 entries."""
    _check_convention(convention)
    joint = torch.arange(gt_kp2d.shape[1], device=gt_kp2d.device)
    weight = torch.where(joint < NUM_OPENPOSE_JOINTS, float(openpose_weight), 1.0)
    conf = gt_kp2d[..., 2:3] * weight[:, None].to(gt_kp2d.dtype)
    err = conf * _criterion(criterion)(normalise_pixels(pred_px, img_res, convention, projected=True),
                                       normalise_pixels(gt_kp2d[..., :2], img_res, convention))
    return _mean_over_positive(err, conf) if convention == "mmhuman3d" else err.mean()


def keypoints3d_loss(pred_joints: torch.Tensor, gt_kp3d: torch.Tensor, has_3d: torch.Tensor,
                     criterion: str, convention: Codebase = DEFAULT_CODEBASE) -> torch.Tensor:
    """pred_joints (B, 49, 3); gt_kp3d (B, 49, 4) metres + confidence; has_3d (B,) bool. Both centred
    at their own GT hip midpoint (joints 27, 28).
      mmhuman3d: all 49 joints weighted by their confidence (OpenPose ones too: they count wherever
                 the data gives them confidence), sum / #(entries with conf > 0); has_3d is not read
                 (a sample without 3D has confidence 0 everywhere);
      spin:      the 24 GT joints of the samples with has_3d, conf-weighted, mean over those entries."""
    _check_convention(convention)
    g, conf = gt_kp3d[..., :3], gt_kp3d[..., 3:4]
    g = g - 0.5 * (g[:, GT_RIGHT_HIP] + g[:, GT_LEFT_HIP])[:, None]
    p = pred_joints - 0.5 * (pred_joints[:, GT_RIGHT_HIP] + pred_joints[:, GT_LEFT_HIP])[:, None]
    err = _criterion(criterion)(p, g)  # (B, 49, 3)
    if convention == "mmhuman3d":
        return _mean_over_positive(conf * err, conf)
    m = has_3d.bool().reshape(-1, 1, 1)
    err = torch.where(m, conf * err, 0.0)[:, NUM_OPENPOSE_JOINTS:]
    return err.sum() / (m.sum() * err.shape[1] * err.shape[2]).clamp(min=1)


def _valid_mean(err: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of err (B, ...) over the entries of the valid samples (0 when none is valid)."""
    m = valid.bool().reshape(-1, *[1] * (err.dim() - 1))
    per_sample = err[0].numel() if err.shape[0] else 1
    return torch.where(m, err, 0.0).sum() / (m.sum() * per_sample).clamp(min=1)


def vertex_loss(pred_vertices: torch.Tensor, target_vertices: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 between meshes (B, V, 3), averaged over the valid samples' entries (both codebases)."""
    return _valid_mean((pred_vertices - target_vertices).abs(), valid)


def smpl_param_losses(pred_rotmat: torch.Tensor, pred_betas: torch.Tensor, target_pose: torch.Tensor,
                      target_betas: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE on rotation matrices (pred (B, 24, 3, 3) vs target axis-angle (B, 72)) and on betas,
    averaged over the valid samples' entries (both codebases)."""
    target_R = axis_angle_to_rotmat(target_pose.reshape(-1, 24, 3))
    return (_valid_mean((pred_rotmat - target_R).square(), valid),
            _valid_mean((pred_betas - target_betas).square(), valid))


def camera_prior(pred_camera: torch.Tensor) -> torch.Tensor:
    """mean(exp(-10 s)^2) over the weak-perspective scales s = pred_camera[:, 0]: keeps s positive."""
    return torch.exp(-10.0 * pred_camera[:, 0]).pow(2).mean()


def total_loss(terms: dict[str, torch.Tensor], recipe: LossRecipe) -> torch.Tensor:
    """overall * the terms weighted by the loss recipe's weights."""
    s = sum(getattr(recipe, k) * terms[k] for k in ("keypoints3d", "keypoints2d", "vertices", "pose", "betas", "camera"))
    return recipe.overall * s
