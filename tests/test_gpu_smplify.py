"""GPU twin of SMPLify's autograd loop (fused=False): on CUDA each stage's iteration is captured once
in a CUDA graph and replayed; that fit must equal the same fit run eagerly on CUDA and eagerly on the
CPU, on a batch that includes bad samples (NaN init pose, all-zero confidence, NaN keypoints, one
NaN keypoint).

Agreement: the same samples valid; final stage-2 losses within 1e-4 relative; pose and betas within
1e-5 between two CUDA runs (same kernels) and 1e-3 rad / units between CUDA and the CPU (different
kernels, ~100 Adam steps in fp32); iteration counts equal on one device. The `cpu` row runs the same
comparison on the CPU between the batch fitted whole and fitted in two halves (samples are
independent of their batch), so the comparison code runs on every machine.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.smplify import SMPLify
from test_smplify import assets, synthetic_batch  # noqa: F401  (module fixture and data of the CPU tests)

ITERS = dict(stage1_iters=50, stage2_iters=50)


def bad_batch(assets, B=16, seed=11):
    """Synthetic fits with noisy keypoints, random confidences and four bad rows:
    1 NaN init pose, 2 zero confidence everywhere, 3 NaN keypoints everywhere, 4 one NaN keypoint."""
    gt, kp, (pose, betas, cam) = synthetic_batch(assets, B, seed=seed, kp_noise=2.0, random_conf=True)
    pose, betas, cam, kp = pose.clone(), betas.clone(), cam.clone(), kp.clone()
    pose[1, 7] = float("nan")
    kp[2, :, 2] = 0.0
    kp[3] = float("nan")
    kp[4, 20] = float("nan")
    return pose, betas, cam, kp, [1, 2, 3]


def fit(assets, device, flavor, inputs, cuda_graph, split=False):
    body = assets["body"] if device == "cpu" else BodyModel(
        assets["smpl"], assets["extra"]).to(device)
    fitter = SMPLify(body, gmm=assets["gmm"], flavor=flavor, cuda_graph=cuda_graph, fused=False, **ITERS)
    xs = [t.to(device) for t in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed graph capture warns and falls back: not here
        if split:
            h = xs[0].shape[0] // 2
            a, b = fitter(*(x[:h] for x in xs)), fitter(*(x[h:] for x in xs))
            out = type(a)(*(torch.cat([u, v]) if u.dim() else u + v for u, v in zip(a, b)))
        else:
            out = fitter(*xs)
    if cuda_graph and device == "cuda":
        assert fitter._graphs and not fitter._graphs_failed, "the CUDA graph path did not run"
    return {k: v.detach().cpu() for k, v in out._asdict().items()}


def assert_same_fit(a, b, bad, what, atol, same_device):
    assert torch.equal(a["valid"], b["valid"]), what
    assert not a["valid"][bad].any() and a["valid"].sum() == len(a["valid"]) - len(bad), (what, a["valid"])
    ok = a["valid"]
    torch.testing.assert_close(a["total_loss"][ok], b["total_loss"][ok], rtol=1e-4, atol=0, msg=what)
    assert torch.isinf(a["total_loss"][~ok]).all() and torch.isinf(b["total_loss"][~ok]).all(), what
    for k in ("pose", "betas"):
        torch.testing.assert_close(a[k][ok], b[k][ok], atol=atol, rtol=0, msg=f"{what}: {k}")
        # bad samples come back with their input fit (NaN included)
        assert torch.allclose(a[k][~ok], b[k][~ok], equal_nan=True, atol=0, rtol=0), f"{what}: {k} of bad rows"
    torch.testing.assert_close(a["cam_t"][ok], b["cam_t"][ok], atol=atol, rtol=1e-4, msg=f"{what}: cam_t")
    if same_device:
        assert torch.equal(a["iterations"], b["iterations"]), what


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.gpu), "cpu"])
def test_smplify_cuda_graph_equals_eager_and_cpu(assets, device, flavor):  # noqa: F811
    inputs = bad_batch(assets)
    pose, betas, cam, kp, bad = inputs
    inputs = inputs[:4]
    if device == "cuda":
        graph = fit(assets, "cuda", flavor, inputs, cuda_graph=True)
        eager = fit(assets, "cuda", flavor, inputs, cuda_graph=False)
        cpu = fit(assets, "cpu", flavor, inputs, cuda_graph=False)
        assert_same_fit(graph, eager, bad, "cuda graph vs cuda eager", 1e-5, same_device=True)
        assert_same_fit(graph, cpu, bad, "cuda graph vs cpu eager", 1e-3, same_device=False)
    else:
        whole = fit(assets, "cpu", flavor, inputs, cuda_graph=True)  # no graph on the CPU: eager
        halves = fit(assets, "cpu", flavor, inputs, cuda_graph=False, split=True)
        assert_same_fit(whole, halves, bad, "cpu whole vs cpu halves", 1e-5, same_device=True)
    # the fit moved (two unchanged starts would agree trivially)
    ok = ~torch.isnan(pose).any(-1)
    moved = (graph if device == "cuda" else whole)["pose"][ok] - pose[ok]
    assert moved.abs().max() > 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("iters", [5, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_smplify_kernel_on_cuda_equals_autograd_fit(assets, flavor, dtype, iters):  # noqa: F811
    """The one-launch-a-stage kernel, compiled, against the autograd fit on CUDA: the cases and
    tolerances of tests/test_smplify_kernel.py (fp32 losses 1e-5 relative, poses 1e-4; fp64 1e-10)."""
    from test_smplify_kernel import run_case

    run_case(assets, None, flavor, dtype, iters, device="cuda")
