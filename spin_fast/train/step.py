"""One SPIN training step, read top to bottom (docs/spin.md "Training" and "Fits in the loop").

    1. network:   img -> pred rotmats (24), betas, weak-perspective camera   (bf16 autocast optional)
    2. SMPL:      predicted mesh + 49 joints (fp32), projected with the camera to crop pixels
    3. fits:      `spin_fast.smplify.in_loop.fit_in_loop`: the stored fit, re-augmented into this crop,
                  against SMPLify's refinement of the (detached) prediction; the better fit is kept,
                  written back un-augmented, and becomes the target (GT where has_smpl)
    4. losses:    keypoints 3D / 2D, vertices and SMPL parameters against the target, camera prior
Everything after the network runs in fp32. The step never makes the host wait for the device: no
`.item()`, no boolean-mask indexing, no host-to-device copy of constants (cached on the device); the
logged values stay tensors, turned into numbers by the caller at logging steps only
(tests/test_gpu_train.py runs steps under torch.cuda.set_sync_debug_mode("error")).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spin_fast.body import Body
from spin_fast.constants import IMG_RES
from spin_fast.geometry import perspective_projection, rotmat_to_axis_angle, weak_perspective_to_translation
from spin_fast.recipes import LossRecipe, SMPLifyRecipe
from spin_fast.smplify.fits import FitsStore
from spin_fast.smplify.in_loop import Fitter, SyncFits, fit_in_loop, loop_rules
from spin_fast.train import losses as L
from spin_fast.train.timing import PhaseTimer, maybe_phase


@dataclass
class StepContext:
    model: torch.nn.Module
    body: Body                   # the neutral body model (spin_fast.body.BodyModel)
    fits: FitsStore
    smplify: Fitter | None       # spin_fast.smplify.SMPLify, or None (fits then come from the store only)
    loss: LossRecipe             # weights, criterion and averaging of step 4 (spin_fast.recipes)
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    sync_fits: SyncFits | None = None   # distributed: (dataset_id, index, updated) -> None
    timer: PhaseTimer | None = None     # times step 3 as phase 'smplify', the SMPLify call in it as
    #                                     'smplify_fit' (spin_fast.train.timing)
    keep_visuals: bool = False          # put the tensors a training-image summary draws in logs['visuals']
    fits_recipe: SMPLifyRecipe | None = None  # the SMPLify recipe's loop rules (valid-fit rule, trainer keypoints;
    #                                            spin_fast.recipes); None: SPIN's rule, keypoints by the fitter's flavor


def train_step(ctx: StepContext, batch: dict) -> tuple[torch.Tensor, dict]:
    img = batch["img"]
    kp2d = batch["keypoints2d"].float()
    kp3d = batch["keypoints3d"].float()
    B = img.shape[0]
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

    # 3. fits in the loop (no gradients), from the detached prediction
    with maybe_phase(ctx.timer, "smplify"), torch.no_grad():
        pred_aa = torch.nan_to_num(rotmat_to_axis_angle(pred_rotmat.detach()).reshape(B, 72), nan=0.0)
        sel = fit_in_loop(ctx.body, ctx.smplify, ctx.fits, batch, pred_aa, pred_betas.detach(), pred_cam_t.detach(),
                          sync=ctx.sync_fits, timer=ctx.timer, **loop_rules(ctx.fits_recipe))
        target_vertices = ctx.body(sel.fit[:, 72:], sel.fit[:, 3:72], sel.fit[:, :3], joint_set="smpl_24").vertices

    # 4. losses
    w = ctx.loss
    terms = {
        "keypoints3d": L.keypoints3d_loss(pred.joints, kp3d, has_3d, w.criterion, w.averaging),
        "keypoints2d": L.keypoints2d_loss(pred_px, kp2d, IMG_RES, w.criterion, w.openpose_2d, w.averaging),
        "vertices": L.vertex_loss(pred.vertices, target_vertices, sel.valid_fit),
        "camera": L.camera_prior(pred_cam),
    }
    terms["pose"], terms["betas"] = L.smpl_param_losses(pred_rotmat, pred_betas, sel.fit[:, :72], sel.fit[:, 72:],
                                                        sel.valid_fit)
    loss = L.total_loss(terms, w)
    logs = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()},
            "fit_updated": sel.updated.float().mean(), "valid_fit": sel.valid_fit.float().mean(),
            "fit_loss": sel.joint_loss.mean()}
    res = sel.smplify
    if res is not None:
        logs["smplify_loss"] = res.joint_loss.mean()  # SMPLify's final loss, before keeping the better fit
    if ctx.keep_visuals:
        fit, cam = (torch.cat([res.pose, res.betas], 1), res.cam_t) if res is not None else (sel.fit, sel.cam_t)
        logs["visuals"] = {"pred_vertices": pred.vertices.detach(), "pred_cam_t": pred_cam_t.detach(),
                           "fit": fit, "fit_cam_t": cam}
    return loss, logs
