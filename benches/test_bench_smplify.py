"""SMPLify: a full 100 + 100 iteration SPIN fit of a batch of 64, reference vs fast path.

Group `smplify-B64`: rows `smplx_reference` (spin_fast.smplify.reference: smplx.SMPL full mesh every
iteration, plain torch losses, torch.optim.Adam), `fast` (spin_fast.smplify.SMPLify, the default
fused=True: the whole fit as the smplify_fit op, gradients by hand; the torch reference on CPU, one
Triton launch on CUDA) and `fast_autograd` (SMPLify(fused=False): stage-1 root turn, joints_only, the
public loss ops, autograd, flat masked Adam; a CUDA graph per stage on CUDA), plus on CUDA
`fast_eager` (fused=False without CUDA graphs). Same synthetic batch, same start. The targets on
CPU: fast >= 10x the reference, and fast <= half of fast_autograd.

The reference takes tens of seconds on CPU, so its row is one round of one fit; the fast rows are
five rounds after one warm-up fit (which also captures the graphs). Thread count: torch's default; on a shared machine
set OMP_NUM_THREADS=1 (recorded in extra_info) for numbers that do not measure the neighbours.
"""
import math

import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast.geometry import perspective_projection
from spin_fast.smplify import SMPLify, SMPLifyReference

from conftest import requires_cuda

B = 64
ITERS = 100


def fit_problem(body, B, device, seed=0):
    """Bodies near the camera axis, their 49 joints projected + 2 px noise as keypoints (random
    confidences), and a perturbed start: SMPLify's arguments (pose, betas, cam_t, keypoints2d)."""
    g = torch.Generator().manual_seed(seed)
    body_pose = 0.2 * torch.randn(B, 69, generator=g)
    orient = torch.tensor([math.pi, 0.0, 0.0]).repeat(B, 1) + 0.2 * torch.randn(B, 3, generator=g)
    betas = 0.5 * torch.randn(B, 10, generator=g)
    cam = torch.stack([0.1 * torch.randn(B, generator=g), 0.1 * torch.randn(B, generator=g),
                       45 + 5 * torch.rand(B, generator=g)], 1)
    with torch.no_grad():
        j = body.joints_only(betas.to(device), body_pose.to(device), orient.to(device))
        px = perspective_projection(j, cam.to(device)).cpu()
    kp = torch.cat([px + 2 * torch.randn(B, 49, 2, generator=g), 0.3 + 0.7 * torch.rand(B, 49, 1, generator=g)], -1)
    start = (torch.cat([orient, body_pose], 1) + 0.1 * torch.randn(B, 72, generator=g), torch.zeros(B, 10),
             cam * torch.tensor([1.0, 1.0, 1.1]))
    return tuple(t.to(device) for t in (*start, kp))


@pytest.fixture(scope="module")
def problem(synthetic_assets, device):
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    extra = load_regressor(synthetic_assets.j_regressor_extra)
    body = BodyModel(smpl, extra).to(device)
    gmm = load_gmm(synthetic_assets.gmm)
    args = fit_problem(body, B, device)
    return {"smpl": smpl, "extra": extra, "gmm": gmm, "body": body, "args": args}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["smplx_reference", "fast", "fast_autograd",
                                  pytest.param("fast_eager", marks=requires_cuda)])
def test_smplify(benchmark, problem, device, impl):
    kw = dict(stage1_iters=ITERS, stage2_iters=ITERS)
    if impl == "smplx_reference":
        fitter = SMPLifyReference(problem["smpl"], problem["extra"], problem["gmm"], device=device, **kw)
        warmup = 0
    else:
        fitter = SMPLify(problem["body"], gmm=problem["gmm"], fused=impl == "fast", cuda_graph=impl == "fast_autograd",
                         **kw)
        warmup = 1

    def fit():
        out = fitter(*problem["args"])
        _sync(device)
        return out

    benchmark.group = f"smplify-B{B}"
    benchmark.extra_info.update(op="smplify", batch=B, iterations=2 * ITERS, impl=impl, device=str(device),
                                threads=torch.get_num_threads())
    out = benchmark.pedantic(fit, warmup_rounds=warmup, rounds=1 if impl == "smplx_reference" else 5, iterations=1)
    assert bool(out.valid.all())
    benchmark.extra_info["mean_total_loss"] = float(out.total_loss.mean())
