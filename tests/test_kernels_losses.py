"""gmm_prior and reprojection_loss: Triton kernels vs the torch references, and hand-worked
checks of the references themselves.

Tolerance rule (STYLE.md): in fp32 the kernel may be at most 2x as wrong as the fp32 torch
reference, both measured against the fp64 reference, plus a floor of 1e-6 x the largest magnitude
(so exact agreement of the reference with itself does not demand bit-exactness from the kernel).
In fp64 the kernel must match the fp64 reference to rtol 1e-10. On CPU the kernels run under the
Triton interpreter (tests/conftest.py) at small sizes; with CUDA the same tests run at full size.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from kernel_checks import assert_as_good_as_torch, batches
from spin_fast.assets import make_gmm
from spin_fast_kernels.gmm_prior import gmm_constants, gmm_prior, gmm_prior_torch
from spin_fast_kernels.gmm_prior.function import gmm_prior_triton
from spin_fast_kernels.reprojection import gmof, project_points, reprojection_loss, reprojection_loss_torch

HAS_CUDA = torch.cuda.is_available()
# Triton-path tests run where the kernels can: under the interpreter on CPU (TRITON_INTERPRET is set
# by tests/conftest.py only without CUDA), compiled on the GPU (and at full batch size) with one.
DEV = "cuda" if HAS_CUDA else "cpu"
# ---------------------------------------------------------------------------------------------
# gmm_prior


@pytest.fixture(scope="module")
def gmm64():
    """The synthetic stand-in's 8 x 69-D prior (same generator as data/gmm_08.pkl), float64."""
    g = make_gmm(seed=0)
    return gmm_constants(*(torch.as_tensor(g[k]) for k in ("means", "covars", "weights")))


def gmm_component_values(pose, means, precisions, nll):
    diff = pose[:, None, :] - means[None]
    return 0.5 * torch.einsum("bki,kij,bkj->bk", diff, precisions, diff) + nll


def gmm_poses(B, gmm, device, seed=0):
    """(B, 69) float64 poses near the components (each row's winner is clear: gap > 1e-2)."""
    g = torch.Generator().manual_seed(seed)
    means, precisions, nll = gmm
    pose = means[torch.arange(B) % means.shape[0]] + 0.2 * torch.randn(B, means.shape[1], generator=g,
                                                                         dtype=torch.float64)
    vals = gmm_component_values(pose, means, precisions, nll).sort(dim=1).values
    assert bool((vals[:, 1] - vals[:, 0] > 1e-2).all()), "test poses must not sit near a tie"
    return pose.to(device)


def run_gmm(fn, pose, consts, upstream):
    pose = pose.detach().clone().requires_grad_(True)
    out = fn(pose, *consts)
    (2.0 * (out * upstream).sum()).backward()  # x2 catches kernels that assume an upstream grad of 1
    return out.detach(), pose.grad


def test_gmm_prior_fp32_matches_reference(triton_backend, gmm64):
    device = DEV
    consts64 = [c.to(device) for c in gmm64]
    consts32 = [c.float() for c in consts64]
    for B in batches(device):
        pose64 = gmm_poses(B, gmm64, device, seed=B)
        upstream = torch.randn(B, generator=torch.Generator().manual_seed(B), dtype=torch.float64).to(device)
        v64, g64 = run_gmm(gmm_prior_torch, pose64, consts64, upstream)
        v32, g32 = run_gmm(gmm_prior_torch, pose64.float(), consts32, upstream.float())
        v, g = run_gmm(gmm_prior, pose64.float(), consts32, upstream.float())
        assert v.dtype == torch.float32 and g.dtype == torch.float32 and v.shape == (B,)
        assert_as_good_as_torch(v, v32, v64, f"gmm value B={B}")
        assert_as_good_as_torch(g, g32, g64, f"gmm grad B={B}")
        _, argmin = gmm_prior_triton(pose64.float(), *consts32, return_argmin=True)
        ref_argmin = gmm_component_values(pose64, *consts64).argmin(dim=1)
        assert torch.equal(argmin.long(), ref_argmin)


def test_gmm_prior_fp64_matches_reference(triton_backend, gmm64):
    device = DEV
    consts = [c.to(device) for c in gmm64]
    B = 17
    pose = gmm_poses(B, gmm64, device, seed=1)
    upstream = torch.randn(B, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(device)
    v_ref, g_ref = run_gmm(gmm_prior_torch, pose, consts, upstream)
    v, g = run_gmm(gmm_prior, pose, consts, upstream)
    torch.testing.assert_close(v, v_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


def test_gmm_prior_strided_pose_and_scalar_upstream(triton_backend, gmm64):
    """body_pose as a column slice of the full (B, 72) pose; loss.sum() gives a stride-0 upstream."""
    consts = [c.float().to(DEV) for c in gmm64]
    full = torch.cat([torch.zeros(3, 3, dtype=torch.float64, device=DEV), gmm_poses(3, gmm64, DEV, seed=5)],
                     dim=1).float()
    outs = []
    for fn in (gmm_prior_torch, gmm_prior):
        x = full.clone().requires_grad_(True)
        fn(x[:, 3:], *consts).sum().mul(3.0).backward()
        outs.append(x.grad)
    assert torch.equal(outs[1][:, :3], torch.zeros_like(outs[1][:, :3]))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5 * outs[0].abs().max().item())


def test_gmm_prior_no_grad_and_empty_batch(triton_backend, gmm64):
    consts = [c.float().to(DEV) for c in gmm64]
    pose = gmm_poses(3, gmm64, DEV, seed=7).float()
    with torch.no_grad():
        torch.testing.assert_close(gmm_prior(pose, *consts), gmm_prior_torch(pose, *consts), rtol=1e-5, atol=1e-3)
    assert gmm_prior(pose[:0], *consts).shape == (0,)


def test_gmm_prior_bad_inputs(triton_backend, gmm64):
    means, precisions, nll = (c.float().to(DEV) for c in gmm64)
    pose = torch.zeros(2, 69, device=DEV)
    with pytest.raises(ValueError, match="pose must be"):
        gmm_prior(pose[0], means, precisions, nll)
    with pytest.raises(ValueError, match="means must be"):
        gmm_prior(torch.zeros(2, 72, device=DEV), means, precisions, nll)
    with pytest.raises(ValueError, match="precisions must be"):
        gmm_prior(pose, means, precisions[:, :68], nll)
    with pytest.raises(ValueError, match="nll_weights must be"):
        gmm_prior(pose, means, precisions, nll[:7])
    with pytest.raises(ValueError, match="means requires grad"):
        gmm_prior(pose, means.clone().requires_grad_(True), precisions, nll)


# -- the reference itself ---------------------------------------------------------------------


def random_spd(K, D, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    return A @ A.transpose(-1, -2) + 0.1 * torch.eye(D, dtype=torch.float64)


@pytest.mark.parametrize("shift", ["exact", "spin"])
def test_gmm_reference_one_component_is_gaussian_nll(shift):
    """K = 1: exact shift gives -log N(theta; mu, Sigma); 'spin' shifts that by -1/2 log det Sigma."""
    D = 69
    cov = random_spd(1, D, seed=11)
    mu = torch.randn(1, D, dtype=torch.float64)
    means, precisions, nll = gmm_constants(mu, cov, torch.ones(1, dtype=torch.float64), shift=shift)
    theta = mu + 0.5 * torch.randn(4, D, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(mu[0], covariance_matrix=cov[0])
    expected = -mvn.log_prob(theta)
    if shift == "spin":
        expected = expected - 0.5 * torch.logdet(cov[0])
    torch.testing.assert_close(gmm_prior_torch(theta, means, precisions, nll), expected, rtol=1e-10, atol=1e-9)


def test_gmm_reference_is_min_over_weighted_gaussians():
    K, D = 3, 5
    cov = random_spd(K, D, seed=12)
    mu = torch.randn(K, D, dtype=torch.float64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    consts = gmm_constants(mu, cov, w, shift="exact")
    theta = torch.randn(6, D, dtype=torch.float64)
    per_k = torch.stack([-torch.log(w[k]) - torch.distributions.MultivariateNormal(mu[k], cov[k]).log_prob(theta)
                         for k in range(K)], dim=1)
    torch.testing.assert_close(gmm_prior_torch(theta, *consts), per_k.min(dim=1).values, rtol=1e-10, atol=1e-10)
    spin = gmm_constants(mu, cov, w, shift="spin")
    shift = 0.5 * torch.logdet(cov).min()
    torch.testing.assert_close(gmm_prior_torch(theta, *spin), per_k.min(dim=1).values - shift, rtol=1e-10, atol=1e-10)


def test_gmm_reference_gradcheck_and_bad_shift():
    K, D = 3, 7
    consts = gmm_constants(torch.randn(K, D, dtype=torch.float64), random_spd(K, D, seed=13),
                           torch.full((K,), 1 / K, dtype=torch.float64))
    theta = torch.randn(5, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gmm_prior_torch(t, *consts), (theta,))
    with pytest.raises(ValueError, match="shift"):
        gmm_constants(*consts[:2], torch.ones(K), shift="nope")
    with pytest.raises(ValueError, match="positive definite"):
        gmm_constants(torch.zeros(1, 2), -torch.eye(2)[None], torch.ones(1))  # det(-I_2) = +1


# ---------------------------------------------------------------------------------------------
# reprojection_loss

ZERO_CONF = [1, 9, 12, 27, 28]  # SMPLify stage 2 zeroes these smpl_49 joints


def reprojection_inputs(B, device, seed=0, J=49):
    """float64 SMPLify-like inputs: joints ~0.3 m around a body 40 m away (f = 5000 -> ~40 px / 0.3 m),
    keypoints within ~60 px plus a few 400 px outliers (GMoF's flat region), random confidences
    with the stage-2 zeros, a per-sample principal point."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    joints = 0.3 * torch.randn(B, J, 3, **f64)
    t = torch.tensor([0.0, 0.2, 40.0], dtype=torch.float64) + torch.randn(B, 3, **f64) * torch.tensor(
        [0.1, 0.1, 3.0], dtype=torch.float64)
    center = 112.0 + 5.0 * torch.randn(B, 2, **f64)
    kp = project_points(joints, t, 5000.0, center) + 60.0 * torch.randn(B, J, 2, **f64)
    kp[:, ::7] += 400.0
    conf = torch.rand(B, J, **f64)
    conf[:, ZERO_CONF[: J // 10 + 1]] = 0.0
    return [x.to(device) for x in (joints, t, kp, conf, center)]


def run_reprojection(fn, inputs, upstream, dtype, **kw):
    joints, t, kp, conf, center = (x.detach().to(dtype).clone() for x in inputs)
    joints.requires_grad_(True)
    t.requires_grad_(True)
    out = fn(joints, t, kp, conf, center=center, **kw)
    (2.0 * (out * upstream.to(dtype)).sum()).backward()
    return out.detach(), joints.grad, t.grad


FLAVOR_SIGMA = [("spin", 100.0), ("spin", math.inf), ("mmhuman3d", 100.0), ("mmhuman3d", 0.05)]


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("flavor,sigma", FLAVOR_SIGMA, ids=[f"{f}-sigma{s}" for f, s in FLAVOR_SIGMA])
def test_reprojection_loss_fp32_matches_reference(triton_backend, flavor, sigma, reduction):
    """mmhuman3d with sigma 0.05 puts e^2 = (2r/224)^2 on both sides of sigma, as sigma 100 px does in SPIN."""
    device = DEV
    kw = dict(flavor=flavor, sigma=sigma, reduction=reduction)
    for B in batches(device):
        inputs = reprojection_inputs(B, device, seed=B)
        shape = (B,) if reduction == "sum" else (B, 49)
        upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(B)).to(device)
        ref64 = run_reprojection(reprojection_loss_torch, inputs, upstream, torch.float64, **kw)
        ref32 = run_reprojection(reprojection_loss_torch, inputs, upstream, torch.float32, **kw)
        ours = run_reprojection(reprojection_loss, inputs, upstream, torch.float32, **kw)
        for name, o, r32, r64 in zip(("value", "grad joints3d", "grad translation"), ours, ref32, ref64):
            assert o.dtype == torch.float32 and o.shape == r64.shape
            assert_as_good_as_torch(o, r32, r64, f"{name} B={B}")
        zero = inputs[3] == 0
        assert torch.equal(ours[1][zero], torch.zeros_like(ours[1][zero]))  # zero-confidence joints: no pull


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_reprojection_loss_fp64_default_center_and_img_size(triton_backend, flavor):
    joints, t, kp, conf, _ = reprojection_inputs(3, DEV, seed=4)
    upstream = torch.randn(3, 49, dtype=torch.float64, device=DEV)
    kw = dict(flavor=flavor, img_size=223, reduction="none", sigma=0.5 if flavor == "mmhuman3d" else 100.0)
    res = []
    for fn in (reprojection_loss_torch, reprojection_loss):
        j, tt = joints.clone().requires_grad_(True), t.clone().requires_grad_(True)
        out = fn(j, tt, kp, conf, 4000.0, None, **kw)  # center None: the crop centre of the 223 crop
        (out * upstream).sum().backward()
        res.append((out, j.grad, tt.grad))
    for o, r in zip(res[1], res[0]):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10 * r.abs().max().item())


def test_reprojection_loss_strided_views(triton_backend):
    """Keypoints and confidence as views of one (B, J, 3) array, joints3d a transposed view."""
    joints, t, kp, conf, center = reprojection_inputs(3, DEV, seed=6)
    kp_conf = torch.cat([kp, conf[..., None]], dim=-1).float()
    joints_t = joints.float().transpose(1, 2).contiguous()  # (B, 3, J) storage
    grads = []
    for fn in (reprojection_loss_torch, reprojection_loss):
        jt = joints_t.clone().requires_grad_(True)
        out = fn(jt.transpose(1, 2), t.float(), kp_conf[..., :2], kp_conf[..., 2], center=center.float().T.contiguous().T)
        out.sum().backward()  # stride-0 upstream gradient
        grads.append((out.detach(), jt.grad))
    for o, r in zip(grads[1], grads[0]):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


def test_reprojection_loss_bad_inputs(triton_backend):
    joints, t, kp, conf, center = (x.float() for x in reprojection_inputs(2, DEV))
    with pytest.raises(ValueError, match="joints3d must be"):
        reprojection_loss(joints[..., :2], t, kp, conf)
    with pytest.raises(ValueError, match="translation must be"):
        reprojection_loss(joints, t[:, :2], kp, conf)
    with pytest.raises(ValueError, match="keypoints2d must be"):
        reprojection_loss(joints, t, kp[:, :48], conf)
    with pytest.raises(ValueError, match="confidence must be"):
        reprojection_loss(joints, t, kp, conf[..., None])
    with pytest.raises(ValueError, match="center must be"):
        reprojection_loss(joints, t, kp, conf, center=center[0])
    with pytest.raises(ValueError, match="flavor"):
        reprojection_loss(joints, t, kp, conf, flavor="smplx")
    with pytest.raises(ValueError, match="reduction"):
        reprojection_loss(joints, t, kp, conf, reduction="mean")
    with pytest.raises(ValueError, match="sigma"):
        reprojection_loss(joints, t, kp, conf, sigma=0.0)
    with pytest.raises(ValueError, match="focal_length"):
        reprojection_loss(joints, t, kp, conf, focal_length=-1.0)
    with pytest.raises(ValueError, match="confidence requires grad"):
        reprojection_loss(joints, t, kp, conf.clone().requires_grad_(True))


# -- the reference itself ---------------------------------------------------------------------


def test_gmof_hand_values():
    sigma = 100.0
    x = torch.tensor([0.0, sigma, -sigma, 3 * sigma], dtype=torch.float64)
    # rho(sigma) = sigma^2 sigma^2 / (2 sigma^2) = sigma^2 / 2; rho(3 sigma) = 9/10 sigma^2
    torch.testing.assert_close(gmof(x, sigma), torch.tensor([0.0, 5000.0, 5000.0, 9000.0], dtype=torch.float64))
    torch.testing.assert_close(gmof(x, math.inf), x * x)


def test_project_points_hand_values():
    joints = torch.tensor([[[0.1, -0.2, 0.0], [0.0, 0.0, 10.0]]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)
    c = torch.tensor([[112.0, 112.0]], dtype=torch.float64)
    # 5000 * 0.1 / 10 = 50, 5000 * -0.2 / 10 = -100; the second joint sits on the optical axis
    expected = torch.tensor([[[162.0, 12.0], [112.0, 112.0]]], dtype=torch.float64)
    torch.testing.assert_close(project_points(joints, t, 5000.0, c), expected)


def test_reprojection_reference_hand_values():
    joints = torch.zeros(1, 2, 3, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)  # both joints project to the centre (112, 112)
    kp = torch.tensor([[[112.0 - 100.0, 112.0], [0.0, 112.0 + 224.0]]], dtype=torch.float64)
    conf = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    # SPIN: joint 0 r = (100, 0) = (sigma, 0): 0.5^2 * sigma^2 / 2 = 1250;
    #       joint 1 r = (112, -224): 112^2 100^2/(112^2+100^2) + 224^2 100^2/(224^2+100^2)
    j1 = 112**2 * 1e4 / (112**2 + 1e4) + 224**2 * 1e4 / (224**2 + 1e4)
    spin = reprojection_loss_torch(joints, t, kp, conf, reduction="none")
    torch.testing.assert_close(spin, torch.tensor([[1250.0, j1]], dtype=torch.float64))
    # mmhuman3d, sigma 1: joint 1 e = 2 r / 224 = (1, -2), e^2 = (1, 4): 1 * (1/2 + 16/17);
    # joint 0 e = (100/112, 0): 0.5 * a^2/(1 + a^2) with a = (100/112)^2
    a = (100 / 112) ** 2
    mm = reprojection_loss_torch(joints, t, kp, conf, sigma=1.0, flavor="mmhuman3d")
    torch.testing.assert_close(mm, torch.tensor([0.5 * a * a / (1 + a * a) + 0.5 + 16 / 17], dtype=torch.float64))


def test_reprojection_reference_mmhuman3d_is_normalised_mse_gmof():
    """mmhuman3d: KeypointMSELoss on [-1, 1] coordinates, gmof of the squared error, confidence linear."""
    joints, t, kp, conf, center = reprojection_inputs(3, "cpu", seed=8)
    S = 224.0
    p = project_points(joints, t, 5000.0, center)
    sq = torch.nn.functional.mse_loss(2 * p / S - 1, 2 * kp / S - 1, reduction="none")
    expected = (conf[..., None] * gmof(sq, 0.5)).sum(dim=(1, 2))
    got = reprojection_loss_torch(joints, t, kp, conf, center=center, sigma=0.5, flavor="mmhuman3d")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_reprojection_reference_gradcheck(flavor):
    joints, t, kp, conf, center = reprojection_inputs(2, "cpu", seed=9, J=5)
    joints.requires_grad_(True)
    t.requires_grad_(True)
    sigma = 100.0 if flavor == "spin" else 0.5
    assert torch.autograd.gradcheck(
        lambda j, tt: reprojection_loss_torch(j, tt, kp, conf, center=center, sigma=sigma, flavor=flavor),
        (joints, t))


def test_double_backward_is_refused(triton_backend, gmm64):
    """The hand-written backwards are once-differentiable: differentiating the gradient again (here
    through a differentiable upstream gradient) must raise instead of returning a silent zero.
    (With a constant upstream the returned gradient simply does not require grad.)"""
    consts = [c.float().to(DEV) for c in gmm64]
    pose = gmm_poses(2, gmm64, DEV, seed=2).float().requires_grad_(True)
    w = torch.ones(2, device=DEV, requires_grad=True)
    (g,) = torch.autograd.grad(gmm_prior(pose, *consts), pose, grad_outputs=w, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        g.sum().backward()
    joints, t, kp, conf, _ = (x.float() for x in reprojection_inputs(2, DEV))
    joints.requires_grad_(True)
    (g,) = torch.autograd.grad(reprojection_loss(joints, t, kp, conf), joints, grad_outputs=w, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        g.sum().backward()


def test_import_does_not_touch_the_triton_driver():
    """Without the interpreter on a CPU-only machine, import and CPU calls must still work."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPIN_FAST_BACKEND")}
    if HAS_CUDA:
        env["CUDA_VISIBLE_DEVICES"] = ""
    code = (
        "import torch\n"
        "from spin_fast_kernels.gmm_prior import gmm_prior, gmm_constants\n"
        "c = gmm_constants(torch.zeros(1, 4), torch.eye(4)[None], torch.ones(1), dtype=torch.float32)\n"
        "print(float(gmm_prior(torch.ones(2, 4), *c)[0]))\n"
        "from spin_fast_kernels.reprojection import reprojection_loss\n"
        "assert reprojection_loss(torch.zeros(1, 2, 3), torch.tensor([[0., 0, 1]]), torch.zeros(1, 2, 2),"
        " torch.ones(1, 2)).shape == (1,)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # 1/2 |(1,1,1,1)|^2 + D/2 log 2 pi  (one component, weight 1, Sigma = I: the 'spin' shift is 0)
    assert float(res.stdout.split()[-1]) == pytest.approx(2.0 + 2.0 * math.log(2 * math.pi), rel=1e-6)


AOT_CHECK = r"""
import json, sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spin_fast_kernels.gmm_prior import kernel as gk
from spin_fast_kernels.reprojection import kernel as rk

def signature(fn, fp):
    return {p.name: "constexpr" if p.is_constexpr else "*i32" if p.name == "argmin_ptr"
            else f"*{fp}" if p.name.endswith("_ptr") else "i32" for p in fn.params}

jobs = []
for fp, acc in (("fp32", tl.float32), ("fp64", tl.float64)):
    jobs.append((gk._gmm_prior_forward_kernel, fp, dict(STORE_GRAD=True, IS_FP64=fp == "fp64", BLOCK_B=16,
                                                         BLOCK_K=16, BLOCK_N=32)))
    jobs.append((gk._gmm_prior_backward_kernel, fp, dict(BLOCK_B=16, BLOCK_D=128)))
    for spin in (True, False):
        c = dict(SPIN=spin, ROBUST=True, REDUCE_SUM=spin, HAS_CENTER=spin, ACC=acc, BLOCK_B=8, BLOCK_J=64)
        jobs += [(rk._reprojection_forward_kernel, fp, c), (rk._reprojection_backward_kernel, fp, c)]
shared = {}
for fn, fp, consts in jobs:
    k = triton.compile(ASTSource(fn, signature(fn, fp), consts), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4})
    flavor = {True: "-spin", False: "-mmhuman3d"}.get(consts.get("SPIN"), "")
    shared[f"{fn.fn.__name__}-{fp}{flavor}"] = k.metadata.shared
print(json.dumps(shared))
"""


def test_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter never compiles: build every kernel for an H100 (sm_90) with Triton's bundled
    ptxas, as a launch there would. Shared memory must fit an SM (a whole 128 x 128 fp64 precision
    tile once needed 313 kB)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    res = subprocess.run([sys.executable, "-c", AOT_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    shared = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(shared) == 12
    assert max(shared.values()) < 64 * 1024, shared
