"""SPIN's fits in the loop for one batch: the stored fit against a fresh SMPLify fit, the better one kept.

`fit_in_loop(body, fitter, fits, batch, init_pose, init_betas, init_cam_t)`, no gradients:
    1. re-augment: the stored fits of the batch's samples (dataset frame) are turned into the
                   augmented crop (rotate the root by rot_deg, then flip)           (B, 82)
    2. camera:     least-squares camera translation of the stored fit's joints from the 2D keypoints
    3. SMPLify:    the fitter refines the initial guess (the network's detached prediction in training);
                   with the spin recipe's trainer_keypoints, the fitter gets the keypoints with joints
                   1, 9, 12, 27, 28 at confidence 0, as SPIN's trainer hands them over (`spin_trainer_keypoints`)
    4. compare:    both fits scored with the fitter's own per-joint loss (`fitting_loss` in SPIN's
                   pixel units when there is no fitter: the stored fit is then kept as it is)
    5. write back: the better fit goes back to the store un-augmented (then to the other processes
                   through `sync`, when training with several)
    6. target:     the kept fit with extreme betas reset, the ground truth where has_smpl, and the
                   valid mask (the recipe's `ValidFitRule` on the kept fit's joint loss, or has_smpl:
                   SPIN's mean over the joints < 100, mmhuman3d's sum < 10)
This is the block of SPIN's trainer between the network's forward and the losses (SPIN's
`train_step`, nkolot/SPIN train/trainer.py); it is the only place the training step meets SMPLify.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping, Protocol

import torch

from spin_fast.body.model import Body
from spin_fast.constants import FOCAL_LENGTH, IMG_RES
from spin_fast.smplify.camera import estimate_camera_translation
from spin_fast.smplify.fit import fitting_loss, stage2_keep
from spin_fast.smplify.fits import SPIN_VALID_FIT, FitsStore, Selection, reaugment
from spin_fast.smplify.result import SMPLifyResult
from spin_fast.recipes import SMPLifyRecipe, ValidFitRule, recipe
from spin_fast_kernels.reprojection import PIXELS

BATCH_KEYS = ("dataset_id", "sample_index", "flip", "rot_deg", "keypoints2d", "pose", "betas", "has_smpl")


class Fitter(Protocol):
    """What `fit_in_loop` calls on a fitter: `spin_fast.smplify.SMPLify`, or the reference
    `spin_fast.smplify.reference.SMPLifyReferenceInLoop`."""

    def __call__(self, init_pose: torch.Tensor, init_betas: torch.Tensor, init_cam_t: torch.Tensor,
                 keypoints2d: torch.Tensor, center: torch.Tensor | None = None) -> SMPLifyResult: ...

    def joint_loss(self, pose: torch.Tensor, betas: torch.Tensor, cam_t: torch.Tensor, keypoints2d: torch.Tensor,
                   center: torch.Tensor | None = None) -> torch.Tensor: ...


class Timer(Protocol):
    """What `fit_in_loop` times the SMPLify call with (spin_fast.train.timing.PhaseTimer)."""

    def phase(self, name: str) -> ContextManager: ...


SyncFits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]  # (dataset_id, index, updated)


def _joints(body: Body, fit: torch.Tensor) -> torch.Tensor:
    """smpl_49 joints (B, 49, 3) of fits (B, 82) = [pose (72) | betas (10)], no translation."""
    return body.joints_only(fit[:, 72:], fit[:, 3:72], fit[:, :3], joint_set="smpl_49")


def spin_trainer_keypoints(keypoints2d: torch.Tensor) -> torch.Tensor:
    """The keypoints (B, 49, 3) as SPIN's training loop gives them to SMPLify: a new tensor with the
    confidences of smpl_49 joints 1, 9, 12, 27, 28 (OpenPose neck and hips, GT hips) set to 0.

    In SPIN (train/trainer.py), `get_fitting_loss` zeroes those confidences through a view of the
    caller's gt_keypoints_2d_orig (smplify/smplify.py) and the same tensor then goes to SMPLify: its
    stage 1 never sees a complete OpenPose torso and always fits the GT torso (27, 28, 33, 34), even
    when all four OpenPose torso joints are visible. Stage 2 ignores those joints anyway. The input is
    not modified."""
    conf = torch.where(stage2_keep(keypoints2d) > 0, keypoints2d[..., 2], torch.zeros_like(keypoints2d[..., 2]))
    return torch.cat([keypoints2d[..., :2], conf[..., None]], -1)


def loop_rules(recipe: SMPLifyRecipe | None) -> dict:
    """`fit_in_loop`'s valid_rule and trainer_keypoints of a SMPLify recipe (None: the defaults)."""
    if recipe is None:
        return {}
    return {"valid_rule": recipe.valid_fit, "trainer_keypoints": recipe.trainer_keypoints}


@torch.no_grad()
def fit_in_loop(body: Body, fitter: Fitter | None, fits: FitsStore, batch: Mapping[str, torch.Tensor],
                init_pose: torch.Tensor, init_betas: torch.Tensor, init_cam_t: torch.Tensor,
                sync: SyncFits | None = None, *, valid_rule: ValidFitRule = SPIN_VALID_FIT,
                trainer_keypoints: bool | None = None, timer: Timer | None = None) -> Selection:
    """One batch of SPIN's fits in the loop (see the module docstring); updates `fits` in place.

    body: the neutral body model (BodyModel or SmplxBody). fitter: SMPLify (or its reference), None to
    keep the stored fits. fits: the store. batch: the loader's batch dict; reads dataset_id (B,),
    sample_index (B,), flip (B,), rot_deg (B,) (the crop's augmentation), keypoints2d (B, 49, 3) crop
    pixels + confidence, pose (B, 72) / betas (B, 10) ground truth and has_smpl (B,).
    init_pose (B, 72) axis-angle, init_betas (B, 10), init_cam_t (B, 3): SMPLify's starting point, in
    the augmented crop. sync: called as sync(dataset_id, sample_index, updated) after the write-back.
    valid_rule: which kept fits supervise, in the fitter's units (SPIN's rule when there is no fitter:
    the stored fits are then scored in SPIN's pixel units). trainer_keypoints: hand SMPLify SPIN's
    trainer keypoints (`spin_trainer_keypoints`); None: as the SMPLify recipe of the fitter's flavor says.
    timer: times the SMPLify call as phase 'smplify_fit' (spin_fast.train.timing).

    Returns the `Selection` in the augmented frame: fit (B, 82) training target, cam_t (B, 3), joint_loss
    (B,) mean over the joints of the kept fit, updated (B,) and valid_fit (B,) masks, and smplify: the
    fitter's `SMPLifyResult` (None without a fitter).
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"fit_in_loop: the batch has no {missing} (needs {', '.join(BATCH_KEYS)})")
    kp2d = batch["keypoints2d"].float()
    dataset_id, index, flip, rot_deg = batch["dataset_id"], batch["sample_index"], batch["flip"], batch["rot_deg"]

    # 1. the stored fit, re-augmented into this crop; 2. its camera
    stored = reaugment(fits.get(dataset_id, index), flip, rot_deg)
    stored_joints = _joints(body, stored)
    stored_cam = estimate_camera_translation(stored_joints, kp2d).translation

    # 3. SMPLify from the initial guess; 4. both fits in the fitter's own units
    if fitter is not None:
        stored_loss = fitter.joint_loss(stored[:, :72], stored[:, 72:], stored_cam, kp2d)
        if trainer_keypoints is None:
            flavor = getattr(fitter, "flavor", None)
            trainer_keypoints = flavor is not None and recipe(flavor).smplify.trainer_keypoints
        fit_kp = spin_trainer_keypoints(kp2d) if trainer_keypoints else kp2d
        with timer.phase("smplify_fit") if timer is not None else nullcontext():
            res = fitter(init_pose, init_betas, init_cam_t, fit_kp)
        new_fit, new_cam, new_loss = torch.cat([res.pose, res.betas], 1), res.cam_t, res.joint_loss
    else:
        stored_loss = fitting_loss(stored_joints, stored_cam, kp2d, PIXELS, FOCAL_LENGTH, IMG_RES)
        new_fit, new_cam = stored, stored_cam
        new_loss = torch.full_like(stored_loss, float("inf"))
        res, valid_rule = None, SPIN_VALID_FIT

    # 5. keep the better, write it back; 6. the target (GT where has_smpl) and the valid mask
    gt_fit = torch.cat([batch["pose"].float(), batch["betas"].float()], 1)
    gt_cam = estimate_camera_translation(_joints(body, gt_fit), kp2d).translation
    sel = fits.select_and_update(
        dataset_id, index, flip, rot_deg, stored, stored_loss, new_fit, new_loss,
        has_smpl=batch["has_smpl"].bool(), gt_fit=gt_fit, stored_cam_t=stored_cam, new_cam_t=new_cam,
        gt_cam_t=gt_cam, valid_rule=valid_rule)
    if sync is not None:
        sync(dataset_id, index, sel.updated)
    return sel._replace(smplify=res)
