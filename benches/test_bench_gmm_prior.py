"""gmm_prior op: torch reference vs the Triton kernel, forward and forward+backward.

Groups `gmm_prior-B{64,1024}`, rows as in benches/loss_ops.py. fp32, SMPLify stage-2 shapes: the
8 x 69-D GMM of the synthetic stand-in; the backward is w.r.t. body pose, as SMPLify needs.
"""
import pytest
import torch

from loss_ops import BATCHES, IMPLS, run
from spin_fast.assets import make_gmm
from spin_fast_kernels.gmm_prior import gmm_constants, gmm_prior, gmm_prior_torch


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
    run(benchmark, device, "gmm_prior", B, impl, lambda: op(pose, means, precisions, nll), [pose])
