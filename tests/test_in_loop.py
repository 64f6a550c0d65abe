"""fit_in_loop, SPIN's fits in the loop for one batch, on the synthetic stand-in: a better fit replaces the
stored one and goes back un-augmented, a worse one never does, and the stored fit's score is SPIN's
get_fitting_loss (written out here by hand)."""
import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.constants import STAGE2_IGNORED_JOINTS
from spin_fast.geometry import axis_angle_to_rotmat
from spin_fast.smplify import SMPLify
from spin_fast.smplify.camera import estimate_camera_translation
from spin_fast.smplify.fits import FitsStore, reaugment
from spin_fast.smplify.in_loop import fit_in_loop

B = 4


@pytest.fixture(scope="module")
def body(synthetic_assets):
    return BodyModel.from_paths(synthetic_assets)


@pytest.fixture(scope="module")
def scene(body):
    """Dataset-frame fits, their augmentation, and exact keypoints of the augmented fits (conf 1)."""
    g = torch.Generator().manual_seed(0)
    pose = 0.2 * torch.randn(B, 72, generator=g)
    pose[:, 0] += 3.14159  # upright in the image, as SPIN's fits are
    raw = torch.cat([pose, 0.5 * torch.randn(B, 10, generator=g)], 1)
    flip = torch.tensor([False, True, False, True])
    rot = torch.tensor([0.0, 0.0, 25.0, -40.0])
    aug = reaugment(raw, flip, rot)
    cam = torch.tensor([[0.05, 0.1, 45.0], [-0.1, 0.0, 50.0], [0.0, -0.05, 55.0], [0.1, 0.1, 48.0]])
    joints = body.joints_only(aug[:, 72:], aug[:, 3:72], aug[:, :3]) + cam[:, None]
    uv = 5000.0 * joints[..., :2] / joints[..., 2:3] + 112.0
    batch = {"dataset_id": torch.zeros(B, dtype=torch.long), "sample_index": torch.arange(B), "flip": flip,
             "rot_deg": rot, "keypoints2d": torch.cat([uv, torch.ones(B, 49, 1)], -1),
             "pose": torch.zeros(B, 72), "betas": torch.zeros(B, 10), "has_smpl": torch.zeros(B, dtype=torch.bool)}
    return raw, aug, cam, batch


def test_a_better_fit_goes_back_unaugmented(body, scene, synthetic_assets):
    raw, aug, cam, batch = scene
    fits = FitsStore.filled({"a": B})  # zeros: an upside-down T-pose, a bad fit for every sample
    fitter = SMPLify(body, synthetic_assets.gmm, stage1_iters=0, stage2_iters=0)  # returns its initial guess
    calls = []
    sel = fit_in_loop(body, fitter, fits, batch, aug[:, :72], aug[:, 72:], cam,
                      sync=lambda *a: calls.append(a))
    assert sel.updated.all() and sel.valid_fit.all()
    assert (sel.joint_loss < 1e-4).all()  # the exact fit reprojects onto its keypoints
    back = fits.table("a")  # the dataset frame again (the root as a rotation: axis-angle is not unique)
    torch.testing.assert_close(back[:, 3:], raw[:, 3:], atol=1e-6, rtol=0)
    torch.testing.assert_close(axis_angle_to_rotmat(back[:, :3]), axis_angle_to_rotmat(raw[:, :3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(sel.fit, aug)  # |betas| < 3: the target is the fit itself
    torch.testing.assert_close(sel.cam_t, cam)
    assert len(calls) == 1 and torch.equal(calls[0][2], sel.updated)


def test_without_a_fitter_the_store_is_kept_and_scored_in_pixels(body, scene):
    raw, aug, cam, batch = scene
    stored = raw.clone()
    stored[:, 3:72] += 0.3  # a wrong body pose
    fits = FitsStore({"a": stored})
    sel = fit_in_loop(body, None, fits, batch, aug[:, :72], aug[:, 72:], cam)
    assert not sel.updated.any()
    torch.testing.assert_close(fits.table("a"), stored, rtol=0, atol=0)
    # SPIN's get_fitting_loss by hand: conf^2 * GMoF_100 of the pixel residual, ignored joints at 0
    s = reaugment(stored, batch["flip"], batch["rot_deg"])
    joints = body.joints_only(s[:, 72:], s[:, 3:72], s[:, :3])
    t = estimate_camera_translation(joints, batch["keypoints2d"]).translation
    p = joints + t[:, None]
    r = 5000.0 * p[..., :2] / p[..., 2:3] + 112.0 - batch["keypoints2d"][..., :2]
    per_joint = (100.0 ** 2 * r ** 2 / (100.0 ** 2 + r ** 2)).sum(-1)
    per_joint[:, STAGE2_IGNORED_JOINTS] = 0
    torch.testing.assert_close(sel.joint_loss, per_joint.mean(-1), rtol=1e-4, atol=1e-3)
    assert (sel.joint_loss > 1.0).all()
    torch.testing.assert_close(sel.valid_fit, sel.joint_loss < 100)


def test_ground_truth_is_the_target_where_has_smpl(body, scene):
    raw, aug, cam, batch = scene
    gt = torch.cat([0.1 * torch.ones(B, 72), torch.zeros(B, 10)], 1)
    batch = dict(batch, pose=gt[:, :72], betas=gt[:, 72:], has_smpl=torch.tensor([True, False, True, False]))
    sel = fit_in_loop(body, None, FitsStore({"a": raw.clone()}), batch, aug[:, :72], aug[:, 72:], cam)
    torch.testing.assert_close(sel.fit[[0, 2]], gt[[0, 2]])
    torch.testing.assert_close(sel.fit[[1, 3]], aug[[1, 3]])
    assert sel.valid_fit.all()


def test_a_batch_without_augmentation_is_named(body, scene):
    raw, aug, cam, batch = scene
    partial = {k: v for k, v in batch.items() if k not in ("flip", "rot_deg")}
    with pytest.raises(KeyError, match="flip.*rot_deg"):
        fit_in_loop(body, None, FitsStore({"a": raw.clone()}), partial, aug[:, :72], aug[:, 72:], cam)
