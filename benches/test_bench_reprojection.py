"""reprojection op: torch reference vs the Triton kernel, forward and forward+backward.

Groups `reprojection_loss-B{64,1024}`, rows as in benches/loss_ops.py. fp32, SMPLify stage-2 shapes:
49 joints; the backward is w.r.t. joints3d + translation, as SMPLify needs.
"""
import pytest
import torch

from loss_ops import BATCHES, IMPLS, run
from spin_fast_kernels.reprojection import project_points, reprojection_loss, reprojection_loss_torch


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
    run(benchmark, device, "reprojection_loss", B, impl, lambda: op(joints, t, kp, conf), [joints, t])
