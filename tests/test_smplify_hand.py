"""smplify_fit_torch: the SMPLify fit with gradients derived by hand.

1. Every term's forward + vector-Jacobian product against torch.autograd through the ops' torch
   references, in float64 at random points, with a random upstream gradient: relative error
   (max |hand - autograd| / max |autograd|) <= 1e-10.
2. The whole fit against SMPLify(fused=False) (the autograd loop) on one batch holding a NaN
   init pose, an all-zero-confidence sample, an outlier keypoint far beyond sigma and both stage-1
   torso branches, both flavours: float32 total losses within 1e-5 relative, poses within 1e-4 rad;
   float64 within 1e-10; `valid` and `iterations` identical.
3. batch_stop: mmhuman3d's whole-batch stopping rule, replayed on the per-iteration losses.
"""
from __future__ import annotations

import math

import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.smplify import SMPLify
from spin_fast_kernels.gmm_prior.reference import gmm_prior_torch
from spin_fast_kernels.joints_only.reference import joints_only_torch
from spin_fast_kernels.kinematic_chain.reference import kinematic_chain_torch, rodrigues_torch
from spin_fast_kernels.reprojection.reference import reprojection_loss_torch
from spin_fast_kernels.smplify import FitOutput, smplify_fit, smplify_fit_torch
from spin_fast_kernels.smplify import reference as ref
from test_smplify import assets, synthetic_batch  # noqa: F401  (module fixtures and data)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
GRAD_RTOL = 1e-10


def rel_err(hand: torch.Tensor, auto: torch.Tensor) -> float:
    return float((hand - auto).abs().max() / auto.abs().max())


def assert_grad(hand, auto, what):
    assert hand.shape == auto.shape, what
    err = rel_err(hand, auto)
    assert err <= GRAD_RTOL, f"{what}: relative error {err:.2e}"


@pytest.fixture(scope="module")
def fitter64(assets):  # noqa: F811
    body = BodyModel(assets["smpl"], assets["extra"], dtype=F64)
    return SMPLify(body, gmm=assets["gmm"])


@pytest.fixture(scope="module")
def consts64(fitter64):
    return fitter64._fit_consts, fitter64._fit_opts


# --- 1. terms ------------------------------------------------------------------------------------

def test_rodrigues_vjp_incl_near_zero_angles():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(40, 3, generator=g, dtype=F64)
    v[:8] *= torch.tensor([0.0, 1e-12, 1e-9, 1e-8, 1e-7, 1e-5, 1e-3, 3.0], dtype=F64)[:, None]
    v[8] = torch.tensor([math.pi, 0.0, 0.0], dtype=F64)
    v.requires_grad_(True)
    G = torch.randn(40, 3, 3, generator=g, dtype=F64)
    R_auto = rodrigues_torch(v)
    (g_auto,) = torch.autograd.grad((2 * R_auto * G).sum(), v)
    R, cache = ref.rodrigues_fwd(v.detach())
    torch.testing.assert_close(R, R_auto.detach(), rtol=0, atol=1e-14)
    assert_grad(ref.rodrigues_vjp(cache, 2 * G), g_auto, "rodrigues")
    # each near-zero row on its own (the batch maximum must not hide them)
    gv = ref.rodrigues_vjp(cache, 2 * G)
    for i in range(8):
        assert_grad(gv[i], g_auto[i], f"rodrigues row {i}")


def test_chain_vjp(fitter64):
    g = torch.Generator().manual_seed(1)
    B, parents = 3, fitter64.body.parents_list
    R = rodrigues_torch(0.7 * torch.randn(B, 24, 3, generator=g, dtype=F64)).requires_grad_(True)
    J = torch.randn(B, 24, 3, generator=g, dtype=F64).requires_grad_(True)
    posed, transforms = kinematic_chain_torch(R, J, parents)
    gP = torch.randn(B, 24, 3, generator=g, dtype=F64)
    gT = torch.randn(B, 24, 3, 4, generator=g, dtype=F64)
    gR_auto, gJ_auto = torch.autograd.grad((posed * gP).sum() + (transforms * gT).sum(), [R, J])
    plan = ref.chain_plan(parents, "cpu", F64)
    jm = lambda t: t.detach().transpose(0, 1).contiguous()  # noqa: E731  (the chain works joint-major)
    G, T, cache = ref.chain_fwd(jm(R), jm(J), plan)
    torch.testing.assert_close(G[..., 3].transpose(0, 1), posed.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(T.transpose(0, 1), transforms.detach(), rtol=0, atol=1e-13)
    gR, gJ = (g.transpose(0, 1) for g in ref.chain_vjp(cache, jm(gP), jm(gT), plan))
    assert_grad(gR, gR_auto, "chain: rotations")
    assert_grad(gJ, gJ_auto, "chain: rest joints")


def test_joints_only_vjp(consts64):
    c, _ = consts64
    g = torch.Generator().manual_seed(2)
    B, S = 4, c.J_shapedirs.shape[-1]
    betas = torch.randn(B, S, generator=g, dtype=F64).requires_grad_(True)
    feat = (0.3 * torch.randn(B, 207, generator=g, dtype=F64)).requires_grad_(True)
    T = torch.randn(B, 24, 3, 4, generator=g, dtype=F64).requires_grad_(True)
    out = joints_only_torch(betas, feat, T, c.coeffs, c.bone_weight, c.pair_joint, c.pair_bone, c.num_vertex_joints)
    go = torch.randn(out.shape, generator=g, dtype=F64)
    auto = torch.autograd.grad((out * go).sum(), [betas, feat, T])
    fold = ref.fold_pairs(c.coeffs, c.bone_weight, c.pair_joint, c.pair_bone, c.num_vertex_joints, 24)
    x = torch.cat([torch.ones(B, 1, dtype=F64), betas.detach(), feat.detach()], 1)
    joints, cache = ref.joints_only_fwd(x, T.detach().transpose(0, 1).contiguous(), fold)  # joint-major T
    torch.testing.assert_close(joints, out.detach(), rtol=0, atol=1e-12)
    gx, gT = ref.joints_only_vjp(cache, go, fold)
    gT = gT.transpose(0, 1)
    assert_grad(gx[:, 1:1 + S], auto[0], "joints_only: betas")
    assert_grad(gx[:, 1 + S:], auto[1], "joints_only: pose feature")
    assert_grad(gT, auto[2], "joints_only: transforms")


def test_body_vjp(consts64):
    """The whole joints-only SMPL (Rodrigues, rest joints, chain, pose feature, folded regressor,
    smpl_49 assembly) against autograd through the references BodyModel.joints_only runs."""
    c, _ = consts64
    g = torch.Generator().manual_seed(3)
    B = 4
    x = torch.cat([0.5 * torch.randn(B, 72, generator=g, dtype=F64), torch.randn(B, 10, generator=g, dtype=F64)], 1)
    x[0, 3:6] = 0.0  # a joint at zero angle
    x.requires_grad_(True)
    joints_auto = ref.joints_reference(c, x)
    gj = torch.randn(joints_auto.shape, generator=g, dtype=F64)
    (gx_auto,) = torch.autograd.grad((joints_auto * gj).sum(), x)
    pc = ref.prepare(c)
    joints, cache = ref.body_fwd(c, pc, x.detach())
    torch.testing.assert_close(joints, joints_auto.detach(), rtol=0, atol=1e-12)
    assert_grad(ref.body_vjp(c, pc, cache, gj), gx_auto, "body")


@pytest.mark.parametrize("units,sigma", [(0, 100.0), (1, 100.0), (0, math.inf), (1, 0.01)],
                         ids=["pixels-sigma100", "normalised-sigma100", "pixels-squares", "normalised-sigma0.01"])
def test_projection_gmof_vjp(units, sigma):
    g = torch.Generator().manual_seed(4)
    B, n = 3, 49
    joints = (torch.randn(B, n, 3, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    t = torch.tensor([[0.1, -0.2, 40.0], [0.0, 0.1, 48.0], [-0.1, 0.0, 45.0]], dtype=F64).requires_grad_(True)
    kp = 112 + 60 * torch.randn(B, n, 2, generator=g, dtype=F64)
    kp[0, 5] += 3000.0  # far beyond sigma in both units (|e| = 2 r / 224 > 10)
    conf = torch.rand(B, n, generator=g, dtype=F64)
    center = 112 + torch.randn(B, 2, generator=g, dtype=F64)
    auto = reprojection_loss_torch(joints, t, kp, conf, 5000.0, center, sigma, units, 224, "none")
    gup = torch.randn(B, n, generator=g, dtype=F64)
    gj_auto, gt_auto = torch.autograd.grad((auto * gup).sum(), [joints, t])
    per_joint, cache = ref.project_fwd(joints.detach(), t.detach(), kp, conf, 5000.0, center, sigma, units, 224.0)
    torch.testing.assert_close(per_joint, auto.detach(), rtol=1e-14, atol=0)
    gj, gt = ref.project_vjp(cache, gup)
    assert_grad(gj, gj_auto, "projection: joints")
    assert_grad(gt, gt_auto, "projection: translation")
    if sigma == 100.0:  # (at sigma 0.01 every residual is an outlier, and autograd's own rho' cancels there)
        assert_grad(gj[0, 5], gj_auto[0, 5], "projection: the outlier")


def test_gmm_vjp_and_its_winner(consts64):
    c, _ = consts64
    g = torch.Generator().manual_seed(5)
    M = c.gmm_means.shape[0]
    # two samples near each component: the minimum is taken by different components
    pose = c.gmm_means.repeat_interleave(2, 0) + 0.05 * torch.randn(2 * M, 69, generator=g, dtype=F64)
    pose.requires_grad_(True)
    auto = gmm_prior_torch(pose, c.gmm_means, c.gmm_precisions, c.gmm_nll)
    gup = torch.randn(2 * M, generator=g, dtype=F64)
    (g_auto,) = torch.autograd.grad((auto * gup).sum(), pose)
    val, grad = ref.gmm_fwd(pose.detach(), c.gmm_means, c.gmm_precisions, c.gmm_nll)
    torch.testing.assert_close(val, auto.detach(), rtol=1e-13, atol=0)
    assert_grad(grad * gup[:, None], g_auto, "gmm")
    d = pose.detach()[None] - c.gmm_means[:, None]
    quad = torch.einsum("kbi,kij,kbj->kb", d, c.gmm_precisions, d)
    winners = (0.5 * quad + c.gmm_nll[:, None]).argmin(0)
    assert len(set(winners.tolist())) >= 3, winners  # several components win somewhere
    for b, k in enumerate(winners.tolist()):  # the gradient is the winner's P_k d_k
        torch.testing.assert_close(grad[b], c.gmm_precisions[k] @ d[k, b], rtol=1e-12, atol=0)


@pytest.mark.parametrize("minus_one", [False, True], ids=["spin", "mmhuman3d"])
def test_angle_and_shape_prior_vjp(consts64, minus_one):
    c, o = consts64
    o = o._replace(angle_minus_one=minus_one)
    g = torch.Generator().manual_seed(6)
    body_pose = (0.8 * torch.randn(5, 69, generator=g, dtype=F64)).requires_grad_(True)
    betas = torch.randn(5, 10, generator=g, dtype=F64).requires_grad_(True)
    auto = ref.priors_reference(c, o, body_pose, betas)
    gup = torch.randn(5, generator=g, dtype=F64)
    gp_auto, gb_auto = torch.autograd.grad((auto * gup).sum(), [body_pose, betas])
    val, gp, gb = ref.priors_fwd(c, o, body_pose.detach(), betas.detach())
    torch.testing.assert_close(val, auto.detach(), rtol=1e-13, atol=0)
    assert_grad(gp * gup[:, None], gp_auto, "priors: body pose")
    assert_grad(gb * gup[:, None], gb_auto, "priors: betas")
    # the angle term alone: its gradient lives on the four elbow/knee entries
    theta = body_pose.detach().clone().requires_grad_(True)
    bent = torch.exp(theta[:, c.angle_index] * c.angle_signs)
    angle = ((bent - 1 if minus_one else bent) ** 2).sum(-1)
    (ga_auto,) = torch.autograd.grad((angle * gup).sum(), theta)
    av, ag = ref.angle_fwd(body_pose.detach(), c.angle_index, c.angle_signs, minus_one)
    torch.testing.assert_close(av, angle.detach(), rtol=1e-14, atol=0)
    assert_grad(ag * gup[:, None], ga_auto[:, c.angle_index], "angle prior")
    assert (ga_auto[:, [i for i in range(69) if i not in c.angle_index.tolist()]] == 0).all()


def _inputs(assets, B, seed, dtype=F64):  # noqa: F811
    gt, kp, (pose, betas, cam) = synthetic_batch(assets, B, seed=seed, kp_noise=2.0, random_conf=True)
    return pose.to(dtype), betas.to(dtype), cam.to(dtype), kp.to(dtype)


@pytest.mark.parametrize("all_joints", [False, True], ids=["torso", "all-joints"])
def test_stage1_objective_vjp(assets, consts64, all_joints):  # noqa: F811
    """Stage 1 (rigid root turn, projection, depth term; SPIN's torso with both branches, or all joints
    with the priors as a constant) against autograd of the same objective built from the references."""
    c, o = consts64
    o = o._replace(stage1_all_joints=all_joints, units=1 if all_joints else 0)
    pose, betas, cam, kp = _inputs(assets, 4, seed=7)
    kp[1, 9, 2] = 0.0  # an OpenPose hip unseen: the ground-truth torso
    conf2 = kp[..., 2] * c.stage2_keep
    center = torch.full((4, 2), 112.0, dtype=F64)
    p = ref.stage1_setup(c, o, pose, betas, cam, kp[..., :2], kp[..., 2], conf2, center)
    x = torch.cat([pose[:, :3], cam], 1) + 0.05
    x.requires_grad_(True)
    joints = torch.einsum("bij,bnj->bni", rodrigues_torch(x[:, :3]), p.Y) + p.sJ0
    conf = torch.ones_like(p.kp[..., 0]) if p.conf is None else p.conf
    total = reprojection_loss_torch(joints, x[:, 3:], p.kp, conf, o.focal_length, center, p.sigma, p.units, 224)
    if all_joints:
        total = total + ref.priors_reference(c, o, pose[:, 3:], betas)
    total = total + o.depth_weight * (x[:, 5] - cam[:, 2]) ** 2
    gup = torch.randn(4, generator=torch.Generator().manual_seed(8), dtype=F64)
    (g_auto,) = torch.autograd.grad((total * gup).sum(), x)
    val, grad = ref.stage1_objective(p, o, x.detach())
    torch.testing.assert_close(val, total.detach(), rtol=1e-13, atol=0)
    assert_grad(grad * gup[:, None], g_auto, "stage 1")
    if not all_joints:  # sample 1 took the ground-truth torso, the others the OpenPose one
        gt_kp = kp[1, c.torso[1], :2]
        assert torch.equal(p.kp[1], gt_kp) and torch.equal(p.kp[0], kp[0, c.torso[0], :2])
        assert p.conf is None and math.isinf(p.sigma)  # unweighted squares


@pytest.mark.parametrize("units", [0, 1], ids=["spin", "mmhuman3d"])
def test_stage2_objective_vjp(assets, consts64, units):  # noqa: F811
    c, o = consts64
    o = o._replace(units=units)
    pose, betas, cam, kp = _inputs(assets, 4, seed=9)
    kp[2, 30, :2] += 4000.0  # an outlier far beyond sigma
    center = torch.full((4, 2), 112.0, dtype=F64)
    p = ref.Stage2(cam, kp[..., :2], kp[..., 2] * c.stage2_keep, center)
    x = torch.cat([pose, betas + 0.3], 1).requires_grad_(True)
    joints = ref.joints_reference(c, x)
    total = ref.data_reference(o, joints, cam, p.kp, p.conf, center).sum(-1) + ref.priors_reference(
        c, o, x[:, 3:72], x[:, 72:])
    gup = torch.randn(4, generator=torch.Generator().manual_seed(10), dtype=F64)
    (g_auto,) = torch.autograd.grad((total * gup).sum(), x)
    val, grad = ref.stage2_objective(c, ref.prepare(c), o, p, x.detach())
    torch.testing.assert_close(val, total.detach(), rtol=1e-12, atol=0)
    assert_grad(grad * gup[:, None], g_auto, "stage 2")


# --- 2. the whole fit against the autograd loop ------------------------------------------------------

def hard_batch(assets, dtype):  # noqa: F811
    """B = 5: 0 all four OpenPose torso joints seen; 1 NaN init pose; 2 all-zero confidence;
    3 an outlier keypoint far beyond sigma; 4 an OpenPose hip at confidence 0 (ground-truth torso)."""
    pose, betas, cam, kp = (t.clone() for t in _inputs(assets, 5, seed=12, dtype=dtype))
    pose[1, 10] = float("nan")
    kp[2, :, 2] = 0.0
    kp[3, 30, :2] += 3000.0
    kp[4, 9, 2] = 0.0
    return pose, betas, cam, kp


def compare_with_autograd(assets, flavor, dtype, iters, tol):  # noqa: F811
    body = assets["body"] if dtype == torch.float32 else BodyModel(assets["smpl"], assets["extra"], dtype=dtype)
    kw = dict(gmm=assets["gmm"], flavor=flavor, stage1_iters=iters, stage2_iters=iters)
    inputs = hard_batch(assets, dtype)
    hand = SMPLify(body, **kw)(*inputs)
    auto = SMPLify(body, fused=False, **kw)(*inputs)
    assert hand.valid.tolist() == [True, False, False, True, True]
    assert torch.equal(hand.valid, auto.valid) and torch.equal(hand.num_invalid, auto.num_invalid)
    assert torch.equal(hand.iterations, auto.iterations)
    ok = hand.valid
    loss_rel = ((hand.total_loss[ok] - auto.total_loss[ok]).abs() / auto.total_loss[ok]).max().item()
    pose_err = (hand.pose[ok] - auto.pose[ok]).abs().max().item()
    assert loss_rel <= tol["loss"], (flavor, dtype, loss_rel)
    assert pose_err <= tol["pose"], (flavor, dtype, pose_err)
    torch.testing.assert_close(hand.betas[ok], auto.betas[ok], rtol=0, atol=tol["pose"])
    torch.testing.assert_close(hand.cam_t[ok], auto.cam_t[ok], rtol=tol["loss"], atol=tol["pose"])
    torch.testing.assert_close(hand.joint_loss[ok], auto.joint_loss[ok], rtol=tol["loss"] * 10,
                               atol=tol["loss"] * float(auto.joint_loss[ok].max()))
    assert torch.isinf(hand.total_loss[~ok]).all() and torch.isinf(hand.joint_loss[~ok]).all()
    for k in ("pose", "betas", "cam_t"):  # bad rows: their input, NaN included
        assert torch.allclose(getattr(hand, k)[~ok], inputs[("pose", "betas", "cam_t").index(k)][~ok],
                              equal_nan=True, atol=0, rtol=0)
    assert (hand.pose[ok] - inputs[0][ok]).abs().max() > 1e-3  # the fits moved
    return loss_rel, pose_err


TOL = {torch.float32: {"loss": 1e-5, "pose": 1e-4}, F64: {"loss": 1e-10, "pose": 1e-10}}


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_fit_equals_autograd_loop(assets, flavor, dtype):  # noqa: F811
    compare_with_autograd(assets, flavor, dtype, 5, TOL[dtype])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_fit_equals_autograd_loop_100_iterations(assets, flavor, dtype):  # noqa: F811
    compare_with_autograd(assets, flavor, dtype, 100, TOL[dtype])


def test_public_op_dispatches_to_the_torch_path_on_cpu(assets, consts64):  # noqa: F811
    c, o = consts64
    o = o._replace(stage1_iters=2, stage2_iters=2)
    pose, betas, cam, kp = _inputs(assets, 2, seed=13)
    center = torch.full((2, 2), 112.0, dtype=F64)
    a = smplify_fit(c, o, pose, betas, cam, kp, center)
    b = smplify_fit_torch(c, o, pose, betas, cam, kp, center)
    assert isinstance(a, FitOutput)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


# --- 3. batch_stop ----------------------------------------------------------------------------------

def test_batch_stop_follows_mmhuman3ds_rule(assets, consts64):  # noqa: F811
    """Stage 2 only, ftol 0.03 (SPIN units). The loss before step k of a run without stops is the stage-2 objective
    after k steps (`total_loss` of a k-step fit). mmhuman3d's rule on S_k = the batch's summed loss:
    after step k, stop everything when |S_{k-1} - S_k| / max(|S_{k-1}|, |S_k|, 1) < ftol. The
    per-sample rule applies the same test to each row's own loss."""
    c, o = consts64
    N, ftol = 20, 0.03
    pose, betas, cam, kp = _inputs(assets, 4, seed=14)
    center = torch.full((4, 2), 112.0, dtype=F64)
    free = o._replace(stage1_iters=0, ftol=0.0, batch_stop=False)
    losses = torch.stack([smplify_fit_torch(c, free._replace(stage2_iters=k), pose, betas, cam, kp, center).total_loss
                          for k in range(N)])  # (N, B): the loss before step k + 1

    def rel(a, b):
        return abs(a - b) / max(abs(a), abs(b), 1.0)

    batch_steps = N
    for k in range(1, N):  # mmhuman3d's _optimize_stage: the test runs after the step
        if rel(float(losses[k - 1].sum()), float(losses[k].sum())) < ftol:
            batch_steps = k + 1
            break
    row_steps = []
    for b in range(4):
        steps = N
        for k in range(1, N):
            if rel(float(losses[k - 1, b]), float(losses[k, b])) < ftol:
                steps = k + 1
                break
        row_steps.append(steps)
    assert batch_steps < N and len(set(row_steps + [batch_steps])) > 1, (batch_steps, row_steps)

    stop = o._replace(stage1_iters=0, stage2_iters=N, ftol=ftol)
    by_batch = smplify_fit_torch(c, stop._replace(batch_stop=True), pose, betas, cam, kp, center)
    by_row = smplify_fit_torch(c, stop._replace(batch_stop=False), pose, betas, cam, kp, center)
    assert by_batch.iterations[:, 1].tolist() == [batch_steps] * 4
    assert by_row.iterations[:, 1].tolist() == row_steps
    assert not torch.equal(by_batch.pose, by_row.pose)
    # the batch-stopped fit is the fit of batch_steps plain steps
    plain = smplify_fit_torch(c, free._replace(stage2_iters=batch_steps), pose, betas, cam, kp, center)
    assert torch.equal(by_batch.pose, plain.pose) and torch.equal(by_batch.total_loss, plain.total_loss)
