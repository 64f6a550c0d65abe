"""SmplxBody (smplx.SMPL + the extra regressors, BodyModel's API) against BodyModel on the synthetic
stand-in, and SMPLifyReferenceInLoop.joint_loss against the fast SMPLify's: the reference path of the
training-step bench computes the same things as the fast path."""
import math

import pytest
import torch

from spin_fast.body import BodyModel, BodyOutput
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast.body.smplx_reference import SmplxBody
from spin_fast.smplify.reference import SMPLifyReferenceInLoop
from spin_fast_kernels.kinematic_chain.reference import rodrigues_torch

TOL = 1e-5


@pytest.fixture(scope="module")
def bodies(synthetic_assets):
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    extra = load_regressor(synthetic_assets.j_regressor_extra)
    h36m = load_regressor(synthetic_assets.j_regressor_h36m)
    return BodyModel(smpl, extra, h36m), SmplxBody(smpl, extra, h36m), (smpl, extra)


def inputs(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 10, generator=g), 0.4 * torch.randn(B, 69, generator=g),
            0.4 * torch.randn(B, 3, generator=g), torch.randn(B, 3, generator=g))


@pytest.mark.parametrize("joint_set", ["smpl_49", "h36m_17", "smpl_24", "smpl_45", "smpl_54"])
def test_forward_matches_body_model(bodies, joint_set):
    ours, ref, _ = bodies
    betas, body_pose, orient, transl = inputs(5)
    want = ours(betas, body_pose, orient, transl, joint_set=joint_set)
    got = ref(betas, body_pose, orient, transl, joint_set=joint_set)
    assert isinstance(got, BodyOutput) and got.joints.shape == want.joints.shape
    assert (got.joints - want.joints).abs().max() > 0 or joint_set == "smpl_24"  # two evaluations, not one
    torch.testing.assert_close(got.joints, want.joints, atol=TOL, rtol=0)
    torch.testing.assert_close(got.vertices, want.vertices, atol=TOL, rtol=0)
    torch.testing.assert_close(got.rotmats, want.rotmats, atol=TOL, rtol=0)
    torch.testing.assert_close(ref.joints_only(betas, body_pose, orient, transl, joint_set=joint_set),
                               ours.joints_only(betas, body_pose, orient, transl, joint_set=joint_set),
                               atol=TOL, rtol=0)


def test_rotation_matrix_inputs_as_the_training_step_passes_them(bodies):
    """train_step calls body(betas, rotmat[:, 1:], rotmat[:, :1]): (B, 23, 3, 3) and (B, 1, 3, 3)."""
    ours, ref, _ = bodies
    betas, body_pose, orient, _ = inputs(4, seed=1)
    R_body, R_orient = rodrigues_torch(body_pose.view(4, 23, 3)), rodrigues_torch(orient.view(4, 1, 3))
    want = ours(betas, body_pose, orient)
    for bp, go in [(R_body, R_orient), (R_body, R_orient[:, 0]), (R_body, orient), (body_pose, R_orient)]:
        got = ref(betas, bp, go, joint_set="smpl_49")
        torch.testing.assert_close(got.joints, want.joints, atol=TOL, rtol=0)
        torch.testing.assert_close(got.vertices, want.vertices, atol=TOL, rtol=0)


def test_bad_inputs_are_named(bodies):
    _, ref, (smpl, _) = bodies
    betas, body_pose, orient, _ = inputs(2)
    with pytest.raises(ValueError, match="body_pose"):
        ref(betas, body_pose[:, :60], orient)
    with pytest.raises(ValueError, match="global_orient"):
        ref(betas, body_pose, orient[:, :2])
    with pytest.raises(ValueError, match="betas"):
        ref(betas[:, :4], body_pose, orient)
    with pytest.raises(ValueError, match="h36m_17.*not given"):
        SmplxBody(smpl)(betas, body_pose, orient, joint_set="h36m_17")


def test_joint_loss_matches_fast_smplify(bodies, synthetic_assets):
    """The stored fit's score: the reference fitter's joint_loss equals the fast SMPLify's (both flavors)."""
    from spin_fast.geometry import perspective_projection
    from spin_fast.smplify import SMPLify

    ours, _, (smpl, extra) = bodies
    gmm = load_gmm(synthetic_assets.gmm)
    B = 6
    betas, body_pose, orient, _ = inputs(B, seed=2)
    orient = orient + torch.tensor([math.pi, 0.0, 0.0])
    cam = torch.tensor([0.1, -0.1, 40.0]).repeat(B, 1)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        px = perspective_projection(ours.joints_only(betas, body_pose, orient), cam)
    kp = torch.cat([px + 8 * torch.randn(B, 49, 2, generator=g), torch.rand(B, 49, 1, generator=g)], -1)
    pose = torch.cat([orient, body_pose], 1) + 0.05 * torch.randn(B, 72, generator=g)
    for flavor in ("spin", "mmhuman3d"):
        fast = SMPLify(ours, gmm=gmm, flavor=flavor, stage1_iters=0, stage2_iters=0)
        ref = SMPLifyReferenceInLoop(smpl, extra, gmm, flavor=flavor, stage1_iters=0, stage2_iters=0)
        want = fast.joint_loss(pose, betas, cam, kp)
        got = ref.joint_loss(pose, betas, cam, kp)
        assert got.shape == (B, 49) and float(want.abs().sum()) > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
        assert float(got[:, 1].abs().max()) == 0.0  # an ignored joint


def test_reference_fitter_runs_under_no_grad(bodies, synthetic_assets):
    """train_step calls the fitter inside torch.no_grad(): the fit is the same as outside it."""
    ours, _, (smpl, extra) = bodies
    gmm = load_gmm(synthetic_assets.gmm)
    B = 3
    betas, body_pose, orient, _ = inputs(B, seed=4)
    orient = orient + torch.tensor([math.pi, 0.0, 0.0])
    cam = torch.tensor([0.0, 0.1, 45.0]).repeat(B, 1)
    from spin_fast.geometry import perspective_projection

    with torch.no_grad():
        kp = torch.cat([perspective_projection(ours.joints_only(betas, body_pose, orient), cam),
                        torch.ones(B, 49, 1)], -1)
    ref = SMPLifyReferenceInLoop(smpl, extra, gmm, stage1_iters=3, stage2_iters=3)
    start = (torch.cat([orient, 0.5 * body_pose], 1), torch.zeros(B, 10), cam * 1.05, kp)
    free = ref(*start)
    with torch.no_grad():
        inside = ref(*start)
    assert int(free.iterations.sum()) == B * 6 and not torch.equal(free.pose, start[0])
    torch.testing.assert_close(inside.pose, free.pose, rtol=0, atol=0)
    torch.testing.assert_close(inside.joint_loss, free.joint_loss, rtol=0, atol=0)
