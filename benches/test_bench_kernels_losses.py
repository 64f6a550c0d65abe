"""SMPLify losses: torch reference vs the Triton kernels, forward and forward+backward.

Groups `gmm_prior-B{64,1024}` and `reprojection_loss-B{64,1024}`: rows `torch_fwd`, `torch_fwd_bwd`
(the reference, `*_torch`) and `triton_fwd`, `triton_fwd_bwd` (the public op on CUDA tensors, which
dispatches to Triton; skipped without a GPU). fp32, SMPLify stage-2 shapes: 8 x 69-D GMM, 49 joints.
The backward is w.r.t. body pose (GMM) and joints3d + translation (reprojection), as SMPLify needs.
"""
import pytest
import torch

from spin_fast.assets import make_gmm
from spin_fast_kernels.gmm_prior import gmm_constants, gmm_prior, gmm_prior_torch
from spin_fast_kernels.reprojection import project_points, reprojection_loss, reprojection_loss_torch

from conftest import requires_cuda  # benches/conftest.py (benches/ is on sys.path: no __init__.py)

BATCHES = [64, 1024]
IMPLS = [
    pytest.param("torch_fwd"),
    pytest.param("torch_fwd_bwd"),
    pytest.param("triton_fwd", marks=requires_cuda),
    pytest.param("triton_fwd_bwd", marks=requires_cuda),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _run(benchmark, device, op, B, impl, fn, leaves):
    """Times fn() (no grad) or fn().sum().backward() over the given leaf tensors."""
    bwd = impl.endswith("bwd")

    def step():
        if bwd:
            for x in leaves:
                x.grad = None
            fn().sum().backward()
        else:
            with torch.no_grad():
                fn()
        _sync(device)

    benchmark.group = f"{op}-B{B}"
    benchmark.extra_info.update(op=op, batch=B, impl=impl, device=str(device))
    benchmark.pedantic(step, warmup_rounds=3, rounds=20, iterations=5)


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_gmm_prior(benchmark, device, B, impl):
    g = make_gmm(seed=0)
    means, precisions, nll = gmm_constants(*(torch.as_tensor(g[k]) for k in ("means", "covars", "weights")),
                                           dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    pose = means[torch.arange(B) % 8] + 0.2 * torch.randn(B, 69, generator=gen)
    pose, means, precisions, nll = (x.to(device) for x in (pose, means, precisions, nll))
    pose.requires_grad_(impl.endswith("bwd"))
    op = gmm_prior_torch if impl.startswith("torch") else gmm_prior
    _run(benchmark, device, "gmm_prior", B, impl, lambda: op(pose, means, precisions, nll), [pose])


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_reprojection_loss(benchmark, device, B, impl):
    gen = torch.Generator().manual_seed(0)
    joints = 0.3 * torch.randn(B, 49, 3, generator=gen)
    t = torch.tensor([0.0, 0.2, 40.0]) + 0.1 * torch.randn(B, 3, generator=gen)
    kp = project_points(joints, t, 5000.0, torch.full((B, 2), 112.0)) + 30.0 * torch.randn(B, 49, 2, generator=gen)
    conf = torch.rand(B, 49, generator=gen)
    joints, t, kp, conf = (x.to(device) for x in (joints, t, kp, conf))
    for x in (joints, t):
        x.requires_grad_(impl.endswith("bwd"))
    op = reprojection_loss_torch if impl.startswith("torch") else reprojection_loss
    _run(benchmark, device, "reprojection_loss", B, impl, lambda: op(joints, t, kp, conf), [joints, t])
