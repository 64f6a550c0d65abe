"""One SPIN training step, read top to bottom (SPEC.md "Training" and "Fits in the loop").

    1. network:   img -> pred rotmats (24), betas, weak-perspective camera   (bf16 autocast optional)
    2. SMPL:      predicted mesh + 49 joints (fp32), projected with the camera to crop pixels
    3. fits:      the stored fit, re-augmented into this crop, gets a least-squares camera and its
                  reprojection loss; SMPLify refines the (detached) prediction; the better fit is kept,
                  written back un-augmented, and becomes the target (GT where has_smpl)
    4. losses:    keypoints 3D / 2D, vertices and SMPL parameters against the target, camera prior
Everything after the network runs in fp32. The only host syncs are the logging `.item()`s, done by
the caller every `log_every` steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from spin_fast.constants import FOCAL_LENGTH, IMG_RES, STAGE2_IGNORED_JOINTS
from spin_fast.geometry import perspective_projection, rotmat_to_axis_angle, weak_perspective_to_translation
from spin_fast.smplify.camera import estimate_camera_translation
from spin_fast.smplify.fits import reaugment
from spin_fast.train import losses as L

from spin_fast_kernels.reprojection import reprojection_loss


@dataclass
class StepContext:
    model: torch.nn.Module
    body: Any                    # spin_fast.body.BodyModel (neutral)
    fits: Any                    # spin_fast.smplify.FitsStore
    smplify: Any                 # spin_fast.smplify.SMPLify, or None (fits then come from the store only)
    loss_weights: dict
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    sync_fits: Callable | None = None   # distributed: (dataset_id, index, updated) -> None


def fitting_loss(joints: torch.Tensor, cam_t: torch.Tensor, kp2d: torch.Tensor) -> torch.Tensor:
    """SMPLify's stage-2 data term per joint (B, 49): conf^2 * GMoF(sigma=100) of the pixel residual,
    with the joints SMPLify ignores set to zero confidence (SPIN's get_fitting_loss)."""
    conf = kp2d[..., 2].clone()
    conf[:, list(STAGE2_IGNORED_JOINTS)] = 0.0
    return reprojection_loss(joints, cam_t, kp2d[..., :2], conf, focal_length=FOCAL_LENGTH, sigma=100.0,
                             flavor="spin", img_size=IMG_RES, reduction="none")


def _fit_to_smpl(fit: torch.Tensor):
    """(B, 82) -> betas (B, 10), body_pose (B, 69), global_orient (B, 3)."""
    return fit[:, 72:], fit[:, 3:72], fit[:, :3]


def train_step(ctx: StepContext, batch: dict) -> tuple[torch.Tensor, dict]:
    img = batch["img"]
    kp2d = batch["keypoints2d"].float()
    kp3d = batch["keypoints3d"].float()
    B = img.shape[0]
    has_smpl = batch["has_smpl"].bool()
    has_3d = kp3d[..., 3].sum(-1) > 0

    # 1. network
    if ctx.channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
    with torch.autocast(img.device.type, dtype=ctx.amp_dtype or torch.float32, enabled=ctx.amp_dtype is not None):
        out = ctx.model(img)
    pred_rotmat, pred_betas, pred_cam = out.rotmat.float(), out.betas.float(), out.cam.float()

    # 2. SMPL of the prediction (full mesh: the vertex loss needs it) and its projection
    pred = ctx.body(pred_betas, pred_rotmat[:, 1:], pred_rotmat[:, :1], joint_set="smpl_49")
    pred_cam_t = weak_perspective_to_translation(pred_cam)
    pred_px = perspective_projection(pred.joints, pred_cam_t)

    # 3. fits in the loop (no gradients)
    t0 = time.perf_counter()
    with torch.no_grad():
        stored = reaugment(ctx.fits.get(batch["dataset_id"], batch["sample_index"]), batch["flip"], batch["rot_deg"])
        s_betas, s_body, s_orient = _fit_to_smpl(stored)
        stored_joints = ctx.body.joints_only(s_betas, s_body, s_orient, joint_set="smpl_49")
        stored_cam = estimate_camera_translation(stored_joints, kp2d).translation
        if ctx.smplify is not None:
            # the stored fit's loss in the fitter's own units (SPIN pixels or mmhuman3d normalised)
            stored_loss = ctx.smplify.joint_loss(stored[:, :72], s_betas, stored_cam, kp2d)
            pred_aa = rotmat_to_axis_angle(pred_rotmat.detach()).reshape(B, 72)
            pred_aa = torch.nan_to_num(pred_aa, nan=0.0)
            res = ctx.smplify(pred_aa, pred_betas.detach(), pred_cam_t.detach(), kp2d)
            new_fit, new_cam, new_loss = torch.cat([res.pose, res.betas], 1), res.cam_t, res.joint_loss
        else:
            stored_loss = fitting_loss(stored_joints, stored_cam, kp2d)
            new_fit, new_cam = stored, stored_cam
            new_loss = torch.full_like(stored_loss, float("inf"))
        gt_fit = torch.cat([batch["pose"].float(), batch["betas"].float()], 1)
        gt_joints = ctx.body.joints_only(*_fit_to_smpl(gt_fit), joint_set="smpl_49")
        gt_cam = estimate_camera_translation(gt_joints, kp2d).translation
        sel = ctx.fits.select_and_update(
            batch["dataset_id"], batch["sample_index"], batch["flip"], batch["rot_deg"], stored, stored_loss,
            new_fit, new_loss, has_smpl=has_smpl, gt_fit=gt_fit, stored_cam_t=stored_cam, new_cam_t=new_cam,
            gt_cam_t=gt_cam)
        if ctx.sync_fits is not None:
            ctx.sync_fits(batch["dataset_id"], batch["sample_index"], sel.updated)
        target_vertices = ctx.body(*_fit_to_smpl(sel.fit), joint_set="smpl_24").vertices
    fit_seconds = time.perf_counter() - t0

    # 4. losses
    w = ctx.loss_weights
    terms = {
        "keypoints3d": L.keypoints3d_loss(pred.joints, kp3d, has_3d, w["criterion"], w["convention"]),
        "keypoints2d": L.keypoints2d_loss(pred_px, kp2d, IMG_RES, w["criterion"], w["openpose_2d"],
                                          flavor=w["convention"]),
        "vertices": L.vertex_loss(pred.vertices, target_vertices, sel.valid_fit),
        "camera": L.camera_prior(pred_cam),
    }
    terms["pose"], terms["betas"] = L.smpl_param_losses(pred_rotmat, pred_betas, sel.fit[:, :72], sel.fit[:, 72:],
                                                        sel.valid_fit)
    loss = L.total_loss(terms, w)
    logs = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()},
            "fit_updated": sel.updated.float().mean(), "valid_fit": sel.valid_fit.float().mean(),
            "fit_loss": sel.joint_loss.mean(), "smplify_s": fit_seconds}
    return loss, logs
