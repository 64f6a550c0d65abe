"""gmm_prior op (SMPLify's max-mixture pose prior): Triton kernels vs the torch reference, forward,
gradient and the winning component, odd strides and bad inputs, and hand-worked checks of the
reference itself (tolerances: tests/kernel_checks.py)."""
from __future__ import annotations

import math

import pytest
import torch

from kernel_checks import assert_as_good_as_torch, batches
from spin_fast.assets import make_gmm
from spin_fast_kernels.gmm_prior import gmm_constants, gmm_prior, gmm_prior_torch
from spin_fast_kernels.gmm_prior.function import gmm_prior_triton

HAS_CUDA = torch.cuda.is_available()
# Triton-path tests run where the kernels can: under the interpreter on CPU (TRITON_INTERPRET is set
# by tests/conftest.py only without CUDA), compiled on the GPU (and at full batch size) with one.
DEV = "cuda" if HAS_CUDA else "cpu"


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
    """Value, gradient and winning component all from one kernel launch a batch (the interpreter
    pays for every launch)."""
    device = DEV
    consts64 = [c.to(device) for c in gmm64]
    consts32 = [c.float() for c in consts64]
    for B in batches(device):
        pose64 = gmm_poses(B, gmm64, device, seed=B)
        upstream = torch.randn(B, generator=torch.Generator().manual_seed(B), dtype=torch.float64).to(device)
        v64, g64 = run_gmm(gmm_prior_torch, pose64, consts64, upstream)
        v32, g32 = run_gmm(gmm_prior_torch, pose64.float(), consts32, upstream.float())
        argmins = []

        def kernel(pose, *consts):
            value, argmin = gmm_prior_triton(pose, *consts, return_argmin=True)
            argmins.append(argmin)
            return value

        v, g = run_gmm(kernel, pose64.float(), consts32, upstream.float())
        assert v.dtype == torch.float32 and g.dtype == torch.float32 and v.shape == (B,)
        assert_as_good_as_torch(v, v32, v64, f"gmm value B={B}")
        assert_as_good_as_torch(g, g32, g64, f"gmm grad B={B}")
        (argmin,) = argmins
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


def test_gmm_prior_double_backward_is_refused(triton_backend, gmm64):
    """The hand-written backward is once-differentiable: differentiating the gradient again (here
    through a differentiable upstream gradient) must raise instead of returning a silent zero.
    (With a constant upstream the returned gradient simply does not require grad.)"""
    consts = [c.float().to(DEV) for c in gmm64]
    pose = gmm_poses(2, gmm64, DEV, seed=2).float().requires_grad_(True)
    w = torch.ones(2, device=DEV, requires_grad=True)
    (g,) = torch.autograd.grad(gmm_prior(pose, *consts), pose, grad_outputs=w, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        g.sum().backward()
