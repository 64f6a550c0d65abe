"""SPIN's trainer hands SMPLify keypoints whose joints 1, 9, 12, 27, 28 have confidence 0: its
`get_fitting_loss` (smplify/smplify.py) zeroes them in the caller's gt_keypoints_2d_orig through a view,
and train/trainer.py then passes that same tensor to SMPLify. So in SPIN's loop stage 1 never sees the
OpenPose hips (9, 12) and always fits the GT torso (27, 28, 33, 34). The spin preset does the same
without touching the caller's tensor; the mmhuman3d flavor gets the keypoints as they are.
"""
import math

import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.body.io import load_regressor, load_smpl
from spin_fast.geometry import perspective_projection
from spin_fast.smplify import FitsStore
from spin_fast.smplify.in_loop import fit_in_loop
from spin_fast.train.config import build_config, resolve
from spin_fast.train.loop import build_smplify

OPENPOSE_TORSO = [2, 5, 9, 12]  # R/L shoulder, R/L hip
SPIN_ZEROED = [1, 9, 12, 27, 28]  # OP Neck, OP RHip, OP LHip, Right Hip, Left Hip


class Recorder:
    """Passes calls to a fitter and keeps the keypoints it was given."""

    def __init__(self, fitter):
        self.fitter, self.flavor, self.seen = fitter, fitter.flavor, []

    def __call__(self, *args):
        self.seen.append(args[3].clone())
        return self.fitter(*args)

    def joint_loss(self, *args):
        return self.fitter.joint_loss(*args)


@pytest.fixture(scope="module")
def setting(synthetic_assets):
    body = BodyModel(load_smpl(synthetic_assets.smpl("neutral")), load_regressor(synthetic_assets.j_regressor_extra),
                     load_regressor(synthetic_assets.j_regressor_h36m))
    g = torch.Generator().manual_seed(0)
    B = 3
    orient = torch.tensor([math.pi, 0.0, 0.0]).repeat(B, 1) + 0.1 * torch.randn(B, 3, generator=g)
    body_pose = 0.1 * torch.randn(B, 69, generator=g)
    cam = torch.tensor([[0.05, -0.05, 45.0]]).repeat(B, 1)
    with torch.no_grad():
        px = perspective_projection(body.joints_only(torch.zeros(B, 10), body_pose, orient, joint_set="smpl_49"), cam)
    kp = torch.cat([px, torch.ones(B, 49, 1)], -1)  # every joint visible, the four OpenPose torso joints too
    kp[:, OPENPOSE_TORSO, 0] += 20.0  # OpenPose's torso 20 px off the body: a fit that uses it moves
    batch = {"dataset_id": torch.zeros(B, dtype=torch.long), "sample_index": torch.arange(B),
             "flip": torch.zeros(B, dtype=torch.bool), "rot_deg": torch.zeros(B), "keypoints2d": kp,
             "pose": torch.zeros(B, 72), "betas": torch.zeros(B, 10), "has_smpl": torch.zeros(B, dtype=torch.bool)}
    init = (torch.cat([orient + 0.15, body_pose], 1), torch.zeros(B, 10), cam * torch.tensor([1.0, 1.0, 1.1]))
    return body, batch, init


def _fitter(preset, synthetic_assets, body):
    cfg = build_config(overrides={"preset": preset, "smplify.stage1_iters": 40, "smplify.stage2_iters": 0})
    return build_smplify(cfg, resolve(cfg).smplify, synthetic_assets, body, "cpu")


def test_spin_preset_stage1_fits_the_gt_torso(setting, synthetic_assets):
    body, batch, init = setting
    fitter = _fitter("spin", synthetic_assets, body)
    assert fitter.flavor == "spin"
    kp_before = batch["keypoints2d"].clone()
    rec = Recorder(fitter)
    fit_in_loop(body, rec, FitsStore.filled({"d": 3}), batch, *init)
    assert torch.equal(batch["keypoints2d"], kp_before)  # the caller's tensor is untouched
    (given,) = rec.seen
    want = kp_before.clone()
    want[:, SPIN_ZEROED, 2] = 0.0
    assert torch.equal(given, want)  # SPIN's trainer: the same keypoints, those five confidences 0
    # stage 1 with those keypoints is the GT-torso fit, not the OpenPose-torso one, although all four
    # OpenPose torso joints are visible
    gt_torso_only = kp_before.clone()
    gt_torso_only[:, OPENPOSE_TORSO, 2] = 0.0  # no complete OpenPose torso: SMPLify takes the GT one
    got, gt, op = (fitter(*init, k) for k in (given, gt_torso_only, kp_before))
    torch.testing.assert_close(got.cam_t, gt.cam_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.pose[:, :3], gt.pose[:, :3], rtol=0, atol=1e-6)
    assert (got.cam_t[:, 0] - op.cam_t[:, 0]).abs().min() > 1e-2  # the OpenPose torso would pull it sideways


def test_mmhuman3d_flavor_gets_the_keypoints_unchanged(setting, synthetic_assets):
    body, batch, init = setting
    rec = Recorder(_fitter("mmhuman3d", synthetic_assets, body))
    fit_in_loop(body, rec, FitsStore.filled({"d": 3}), batch, *init)
    assert torch.equal(rec.seen[0], batch["keypoints2d"])
