"""SMPLify: recovers synthetic bodies; fast path == SPIN-style reference (smplx + torch.optim.Adam);
samples independent of their batch; bad samples isolated and counted; the mmhuman3d flavor.

Synthetic bodies: the stand-in SMPL of `spin_fast.assets`, body poses drawn from its GMM prior,
random betas, upright global orient (pi about x: image y points down), a camera ~45-50 units away
(the body ~ 150-200 px tall in the 224 crop), its 49 joints projected as the keypoints.
"""
import math

import numpy as np
import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast.constants import STAGE2_IGNORED_JOINTS
from spin_fast.geometry import perspective_projection
from spin_fast.smplify import SMPLify, SMPLifyReference, SMPLifyResult


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(synthetic_assets):
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    extra = load_regressor(synthetic_assets.j_regressor_extra)
    h36m = load_regressor(synthetic_assets.j_regressor_h36m)
    return {"smpl": smpl, "extra": extra, "gmm": load_gmm(synthetic_assets.gmm),
            "body": BodyModel(smpl, extra, h36m)}


def synthetic_batch(assets, B, seed=0, kp_noise=0.0, random_conf=False):
    """Ground truth, its keypoints (B, 49, 3), and a perturbed start (pose, betas, cam_t)."""
    g = torch.Generator().manual_seed(seed)
    gmm = assets["gmm"]
    means = torch.tensor(gmm["means"], dtype=torch.float32)
    chol = torch.linalg.cholesky(torch.tensor(gmm["covars"])).float()
    k = torch.randint(0, means.shape[0], (B,), generator=g)
    body_pose = means[k] + (chol[k] @ torch.randn(B, 69, 1, generator=g))[..., 0]
    orient = torch.tensor([math.pi, 0.0, 0.0]).repeat(B, 1) + 0.2 * torch.randn(B, 3, generator=g)
    betas = 0.5 * torch.randn(B, 10, generator=g)
    cam = torch.stack([0.1 * torch.randn(B, generator=g), 0.1 * torch.randn(B, generator=g),
                       45 + 5 * torch.rand(B, generator=g)], 1)
    with torch.no_grad():
        px = perspective_projection(assets["body"].joints_only(betas, body_pose, orient), cam)
    conf = torch.rand(B, 49, 1, generator=g) * 0.7 + 0.3 if random_conf else torch.ones(B, 49, 1)
    kp = torch.cat([px + kp_noise * torch.randn(B, 49, 2, generator=g), conf], -1)
    gt = {"pose": torch.cat([orient, body_pose], 1), "betas": betas, "cam_t": cam, "px": px}
    start = (gt["pose"] + 0.1 * torch.randn(B, 72, generator=g), torch.zeros(B, 10),
             cam * torch.tensor([1.0, 1.0, 1.1]) + torch.tensor([0.05, 0.05, 0.0]))
    return gt, kp, start


def pixel_error(body, pose, betas, cam_t, px):
    """Mean pixel distance over the joints stage 2 fits (the ignored ones excluded)."""
    keep = [j for j in range(49) if j not in STAGE2_IGNORED_JOINTS]
    with torch.no_grad():
        p = perspective_projection(body.joints_only(betas, pose[:, 3:], pose[:, :3]), cam_t)
    return (p - px).norm(dim=-1)[:, keep].mean().item()


def test_fit_recovers_synthetic_bodies(assets):
    gt, kp, start = synthetic_batch(assets, 8)
    body = assets["body"]
    before = pixel_error(body, *start, gt["px"])
    out = SMPLify(body, gmm=assets["gmm"])(*start, kp)
    assert isinstance(out, SMPLifyResult)
    assert out.pose.shape == (8, 72) and out.betas.shape == (8, 10) and out.cam_t.shape == (8, 3)
    assert out.joint_loss.shape == (8, 49) and out.total_loss.shape == (8,)
    assert out.valid.all() and int(out.num_invalid) == 0
    assert out.iterations.tolist() == [[100, 100]] * 8
    after = pixel_error(body, out.pose, out.betas, out.cam_t, gt["px"])
    assert before > 8.0, before
    assert after < 2.0, (before, after)
    # the ignored joints carry no loss; the total is the data term + priors (priors > 0 here)
    assert (out.joint_loss[:, STAGE2_IGNORED_JOINTS] == 0).all()
    assert (out.total_loss > out.joint_loss.sum(-1)).all()


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_fast_path_matches_reference(assets, flavor):
    """20 + 20 iterations from one start: same losses (1%), same fits; the reference runs smplx's full
    mesh forward and torch.optim.Adam, nothing shared with the fast path."""
    gt, kp, start = synthetic_batch(assets, 3, seed=1, kp_noise=2.0, random_conf=True)
    kw = dict(stage1_iters=20, stage2_iters=20, flavor=flavor)
    fast = SMPLify(assets["body"], gmm=assets["gmm"], **kw)(*start, kp)
    ref = SMPLifyReference(assets["smpl"], assets["extra"], assets["gmm"], **kw)(*start, kp)
    torch.testing.assert_close(fast.total_loss, ref.total_loss, rtol=1e-2, atol=0)
    torch.testing.assert_close(fast.joint_loss, ref.joint_loss, rtol=1e-2, atol=1e-3 * ref.joint_loss.max().item())
    torch.testing.assert_close(fast.pose, ref.pose, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.betas, ref.betas, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.cam_t, ref.cam_t, atol=1e-4, rtol=1e-5)
    assert torch.equal(fast.iterations, ref.iterations)
    # the fit moved (the comparison is not of two unchanged starts)
    assert (fast.pose - start[0]).abs().max() > 0.05


def test_stage1_root_turn_with_regressor_rows_not_summing_to_one(assets):
    """Stage 1 turns joints computed once (R X0 + s (I - R) J0): exact for any regressor row sum s."""
    extra = assets["extra"] * np.linspace(0.5, 1.5, 9)[:, None]
    body = BodyModel(assets["smpl"], extra)
    gt, kp, start = synthetic_batch(assets, 3, seed=2)
    kp[0, [9, 12], 2] = 0.0  # sample 0 falls back to the GT torso joints 27, 28, 33, 34
    kw = dict(stage1_iters=20, stage2_iters=0)
    fast = SMPLify(body, gmm=assets["gmm"], **kw)(*start, kp)
    ref = SMPLifyReference(assets["smpl"], extra, assets["gmm"], **kw)(*start, kp)
    torch.testing.assert_close(fast.pose, ref.pose, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.cam_t, ref.cam_t, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(fast.total_loss, ref.total_loss, rtol=1e-4, atol=0)


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_sample_independent_of_its_batch(assets, flavor):
    gt, kp, start = synthetic_batch(assets, 32, seed=3, kp_noise=2.0, random_conf=True)
    fitter = SMPLify(assets["body"], gmm=assets["gmm"], flavor=flavor, stage1_iters=40, stage2_iters=60)
    batch = fitter(*start, kp)
    for i in (0, 17, 31):
        alone = fitter(*(t[i:i + 1] for t in start), kp[i:i + 1])
        torch.testing.assert_close(alone.pose[0], batch.pose[i], atol=2e-6, rtol=0)
        torch.testing.assert_close(alone.betas[0], batch.betas[i], atol=2e-6, rtol=0)
        torch.testing.assert_close(alone.cam_t[0], batch.cam_t[i], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(alone.total_loss[0], batch.total_loss[i], rtol=1e-5, atol=0)
        assert torch.equal(alone.iterations[0], batch.iterations[i])


def test_bad_samples_isolated_and_counted(assets):
    """NaN init pose, all-zero confidence, inf camera and a keypoint that overflows the loss in the
    loop: those samples keep their input fit with inf losses and valid False; the others are fitted
    exactly as in a batch without them."""
    gt, kp, start = synthetic_batch(assets, 7, seed=4)
    pose, betas, cam = (t.clone() for t in start)
    kp = kp.clone()
    pose[1, 10] = float("nan")
    kp[2, :, 2] = 0.0
    cam[3, 2] = float("inf")
    kp[5, 30, :2] = 3e38  # finite input; its squared residual overflows inside the loop
    kp[6, 40] = float("nan")  # one unusable keypoint only: counts as invisible, the sample is fitted
    fitter = SMPLify(assets["body"], gmm=assets["gmm"], stage1_iters=30, stage2_iters=30)
    out = fitter(pose, betas, cam, kp)
    bad = [1, 2, 3, 5]
    good = [0, 4, 6]
    assert out.valid.tolist() == [i in good for i in range(7)]
    assert int(out.num_invalid) == 4
    assert torch.allclose(out.pose[bad], pose[bad], equal_nan=True, atol=0, rtol=0)
    assert torch.equal(out.betas[bad], betas[bad]) and torch.equal(out.cam_t[bad], cam[bad])
    assert torch.isinf(out.total_loss[bad]).all() and torch.isinf(out.joint_loss[bad]).all()
    assert torch.isfinite(out.pose[good]).all() and torch.isfinite(out.total_loss[good]).all()
    kp_clean = kp[good].clone()
    kp_clean[2, 40] = torch.tensor([0.0, 0.0, 0.0])
    clean = fitter(pose[good], betas[good], cam[good], kp_clean)
    torch.testing.assert_close(out.pose[good], clean.pose, atol=2e-6, rtol=0)
    torch.testing.assert_close(out.total_loss[good], clean.total_loss, rtol=1e-5, atol=0)
    assert clean.valid.all()


def test_mmhuman3d_flavor_lowers_its_loss(assets):
    gt, kp, start = synthetic_batch(assets, 6, seed=5, kp_noise=1.0)
    body = assets["body"]
    fitter = SMPLify(body, gmm=assets["gmm"], flavor="mmhuman3d")
    assert (fitter.stage1_iters, fitter.stage2_iters, fitter.ftol) == (50, 50, 1e-4)
    out = fitter(*start, kp)
    initial = SMPLify(body, gmm=assets["gmm"], flavor="mmhuman3d", stage1_iters=0, stage2_iters=0)(*start, kp)
    torch.testing.assert_close(initial.pose, start[0])
    assert out.valid.all()
    assert (out.total_loss < initial.total_loss).all()
    assert ((out.iterations >= 1) & (out.iterations <= 50)).all()
    # the per-joint loss is mmhuman3d's normalised term (GMoF of e^2, e ~ 2 px / 224): orders of
    # magnitude below SPIN's pixel one and below the priors, so this flavor mostly follows its priors
    # (stage 1, whose priors are constant, meets ftol after two steps)
    assert (out.iterations[:, 0] < 50).all()
    spin = SMPLify(body, gmm=assets["gmm"]).joint_loss(out.pose, out.betas, out.cam_t, kp)
    assert out.joint_loss.sum() < 1e-3 * spin.sum()


def test_joint_loss_of_a_fit_is_the_results(assets):
    gt, kp, start = synthetic_batch(assets, 3, seed=6, kp_noise=3.0, random_conf=True)
    fitter = SMPLify(assets["body"], gmm=assets["gmm"], stage1_iters=5, stage2_iters=5)
    out = fitter(*start, kp)
    # two float32 implementations of the body (BodyModel's torch path, the fit's own chain), each ~3e-7
    # from float64: the squared pixel residuals carry that to ~1e-5 relative in the loss
    torch.testing.assert_close(fitter.joint_loss(out.pose, out.betas, out.cam_t, kp), out.joint_loss, rtol=1e-4,
                               atol=1e-5)
    # hand check of one joint: conf^2 * sum_xy GMoF(r), sigma 100
    with torch.no_grad():
        j = assets["body"].joints_only(out.betas, out.pose[:, 3:], out.pose[:, :3])
        r = perspective_projection(j, out.cam_t)[0, 30] - kp[0, 30, :2]
    expected = kp[0, 30, 2] ** 2 * (1e4 * r ** 2 / (1e4 + r ** 2)).sum()
    torch.testing.assert_close(out.joint_loss[0, 30], expected, rtol=1e-4, atol=1e-6)


def test_bad_arguments_are_named(assets):
    body, gmm = assets["body"], assets["gmm"]
    with pytest.raises(ValueError, match="flavor"):
        SMPLify(body, gmm=gmm, flavor="smplx")
    with pytest.raises(ValueError, match="gmm_path"):
        SMPLify(body)
    with pytest.raises(ValueError, match="smpl_49"):
        SMPLify(BodyModel(assets["smpl"]), gmm=gmm)
    fitter = SMPLify(body, gmm=gmm, stage1_iters=1, stage2_iters=1)
    ok = (torch.zeros(2, 72), torch.zeros(2, 10), torch.ones(2, 3), torch.ones(2, 49, 3))
    for i, (name, bad) in enumerate([("init_pose", torch.zeros(2, 69)), ("init_betas", torch.zeros(2, 11)),
                                     ("init_cam_t", torch.zeros(3, 3)), ("keypoints2d", torch.zeros(2, 49, 2))]):
        args = list(ok)
        args[i] = bad
        with pytest.raises(ValueError, match=name):
            fitter(*args)
    with pytest.raises(ValueError, match="center"):
        fitter(*ok, center=torch.zeros(2, 3))


def test_fast_path_never_builds_the_mesh_nor_touches_cuda_on_cpu(assets, synthetic_assets, monkeypatch):
    """Built as the training loop builds it (gmm_08.pkl path, device string); the iterations use
    joints_only only, and on CPU nothing reaches torch.cuda's graph machinery."""
    body = assets["body"]

    def refuse(*args, **kwargs):
        raise AssertionError("touched during a CPU fit")

    monkeypatch.setattr(body, "forward", refuse)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", refuse)
    monkeypatch.setattr(torch.cuda, "graph", refuse)
    fitter = SMPLify(body=body, gmm_path=synthetic_assets.gmm, stage1_iters=3, stage2_iters=3, flavor="spin",
                     device="cpu")
    gt, kp, start = synthetic_batch(assets, 2, seed=7)
    with torch.no_grad():  # as the training step calls it
        out = fitter(*start, kp)
    assert out.valid.all() and out.iterations.tolist() == [[3, 3], [3, 3]]
    with pytest.raises(ValueError, match="move the body"):
        SMPLify(body, gmm=assets["gmm"], device="cuda")
