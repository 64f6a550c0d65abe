"""The one-launch-a-stage SMPLify kernel (spin_fast_kernels.smplify.function.smplify_fit_triton) against
today's autograd SMPLify (`fused=False`), run here under the Triton interpreter on CPU tensors.

One batch of 5: 0 a clean fit (all four OpenPose torso joints seen), 1 NaN in the initial pose,
2 every confidence 0, 3 an OpenPose hip unseen (stage 1 falls back to the ground-truth torso),
4 a keypoint 500 px off (far beyond sigma). Both flavors, fp32 and fp64. Agreement on the valid
rows: fp32 final losses within 1e-5 relative and poses within 1e-4 rad; fp64 both within 1e-10;
validity and Adam steps identical; invalid rows come back as their input with inf losses.
The batch-stop mode (mmhuman3d's whole-batch ftol) runs against the hand-derived torch reference.
"""
from __future__ import annotations

import os

import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.smplify import SMPLify
from spin_fast_kernels.smplify import smplify_fit_torch
from spin_fast_kernels.smplify.function import smplify_fit_triton
from test_smplify import assets, synthetic_batch  # noqa: F401  (module fixtures and data)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {torch.float32: dict(loss=1e-5, pose=1e-4), torch.float64: dict(loss=1e-10, pose=1e-10)}
BAD = [1, 2]


def _needs_interpreter():
    """CPU tensors need the interpreter (set by conftest on machines without CUDA); on a GPU machine
    the compiled kernel is tested by test_gpu_smplify.py's twin instead."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the kernel on CPU tensors under the Triton interpreter (off here)")


@pytest.fixture(scope="module")
def bodies(assets):  # noqa: F811
    fp64 = BodyModel(assets["smpl"], assets["extra"], dtype=torch.float64)
    return {torch.float32: assets["body"], torch.float64: fp64}


def hard_batch(assets, device="cpu", dtype=torch.float32):  # noqa: F811
    _, kp, (pose, betas, cam) = synthetic_batch(assets, 5, seed=1, kp_noise=2.0, random_conf=True)
    pose, kp = pose.clone(), kp.clone()
    pose[1, 7] = float("nan")
    kp[2, :, 2] = 0.0
    kp[3, 9, 2] = 0.0  # an OpenPose hip: stage 1 takes the ground-truth torso
    kp[4, 20, :2] += 500.0
    center = torch.full((5, 2), 112.0)
    return [t.to(device=device, dtype=dtype) for t in (pose, betas, cam, kp, center)]


def fitters(body, gmm, flavor, iters):
    kw = dict(gmm=gmm, flavor=flavor, stage1_iters=iters, stage2_iters=iters)
    fused = SMPLify(body, fused=True, **kw)  # only its FitConstants / FitOptions are used
    return fused._fit_consts, fused._fit_opts, SMPLify(body, fused=False, **kw)


def assert_same(out, ref, inputs, dtype, what):
    tol = TOL[dtype]
    assert torch.equal(out.valid.cpu(), ref.valid.cpu()), what
    assert torch.equal(out.iterations.cpu(), ref.iterations.cpu()), (what, out.iterations, ref.iterations)
    ok = ref.valid.cpu()
    assert not ok[BAD].any() and ok.sum() == 3, (what, ok)
    o = {k: getattr(out, k).cpu() for k in ("pose", "betas", "cam_t", "joint_loss", "total_loss")}
    r = {k: getattr(ref, k).cpu() for k in ("pose", "betas", "cam_t", "joint_loss", "total_loss")}
    torch.testing.assert_close(o["total_loss"][ok], r["total_loss"][ok], rtol=tol["loss"], atol=0, msg=what)
    scale = r["joint_loss"][ok].abs().max().item()
    torch.testing.assert_close(o["joint_loss"][ok], r["joint_loss"][ok], rtol=tol["loss"], atol=tol["loss"] * scale,
                               msg=what)
    for k in ("pose", "betas"):
        torch.testing.assert_close(o[k][ok], r[k][ok], atol=tol["pose"], rtol=0, msg=f"{what}: {k}")
    torch.testing.assert_close(o["cam_t"][ok], r["cam_t"][ok], atol=tol["pose"], rtol=tol["loss"], msg=what)
    pose_in, betas_in, cam_in = (t.cpu() for t in inputs[:3])
    assert torch.allclose(o["pose"][~ok], pose_in[~ok], equal_nan=True, atol=0, rtol=0), what
    assert torch.equal(o["betas"][~ok], betas_in[~ok]) and torch.equal(o["cam_t"][~ok], cam_in[~ok]), what
    assert torch.isinf(o["total_loss"][~ok]).all() and torch.isinf(o["joint_loss"][~ok]).all(), what


def run_case(assets, bodies, flavor, dtype, iters, device="cpu"):  # noqa: F811
    """The kernel and the autograd fit on one device (bodies: the CPU body models by dtype)."""
    if device == "cpu":
        body = bodies[dtype]
    else:
        body = BodyModel(assets["smpl"], assets["extra"], dtype=dtype).to(device)
    consts, opts, autograd_fit = fitters(body, assets["gmm"], flavor, iters)
    inputs = hard_batch(assets, device, dtype)
    out = smplify_fit_triton(consts, opts, *inputs)
    ref = autograd_fit(*inputs)
    assert_same(out, ref, inputs, dtype, f"{flavor} {dtype} {iters}+{iters}")
    moved = (out.pose.cpu() - inputs[0].cpu())[out.valid.cpu()]
    assert moved.abs().max() > 1e-3  # the fit moved: two unchanged starts would agree trivially
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_kernel_equals_autograd_fit(assets, bodies, flavor, dtype):  # noqa: F811
    _needs_interpreter()
    out = run_case(assets, bodies, flavor, dtype, 5)
    steps = out.iterations.tolist()
    assert steps[1] == [0, 0] and steps[2] == [0, 0]
    if flavor == "mmhuman3d":  # ftol 1e-4 stops some stage-1 fits before their 5 steps here
        assert min(s[0] for i, s in enumerate(steps) if i not in BAD) < 5


@pytest.mark.long
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_kernel_equals_autograd_fit_100_iterations(assets, bodies, flavor, dtype):  # noqa: F811
    _needs_interpreter()
    run_case(assets, bodies, flavor, dtype, 100)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, marks=pytest.mark.slow), torch.float64],
                         ids=["fp32", "fp64"])
def test_batch_stop_kernel_equals_reference(assets, bodies, dtype):  # noqa: F811
    """mmhuman3d's whole-batch ftol: one program walks every body block each iteration; the batch
    (17 rows: two blocks, the second masked) stops stage 1 early."""
    _needs_interpreter()
    consts, opts, _ = fitters(bodies[dtype], assets["gmm"], "mmhuman3d", 4)
    opts = opts._replace(batch_stop=True, ftol=2e-2)
    _, kp, (pose, betas, cam) = synthetic_batch(assets, 17, seed=4, kp_noise=2.0, random_conf=True)
    kp = kp.clone()
    kp[5, :, 2] = 0.0  # one row with nothing to fit: frozen, outside the batch sum
    inputs = [t.to(dtype) for t in (pose, betas, cam, kp, torch.full((17, 2), 112.0))]
    out = smplify_fit_triton(consts, opts, *inputs)
    ref = smplify_fit_torch(consts, opts, *inputs)
    assert torch.equal(out.valid, ref.valid) and int((~out.valid).sum()) == 1
    assert torch.equal(out.iterations, ref.iterations), (out.iterations, ref.iterations)
    steps = out.iterations[out.valid]
    assert (steps == steps[0]).all() and steps[0, 0] < 4, steps  # every row stopped at once, stage 1 early
    tol = TOL[dtype]
    ok = out.valid
    torch.testing.assert_close(out.total_loss[ok], ref.total_loss[ok], rtol=tol["loss"], atol=0)
    torch.testing.assert_close(out.pose[ok], ref.pose[ok], atol=tol["pose"], rtol=0)


@pytest.mark.slow
def test_kernel_two_programs_equal_autograd_fit(assets, bodies):  # noqa: F811
    """17 rows: grid = 2 programs, the second block masked past row 16; fp64, 5 + 5."""
    _needs_interpreter()
    consts, opts, autograd_fit = fitters(bodies[torch.float64], assets["gmm"], "spin", 5)
    _, kp, (pose, betas, cam) = synthetic_batch(assets, 17, seed=6, kp_noise=2.0, random_conf=True)
    pose, kp = pose.clone(), kp.clone()
    pose[16, 3] = float("inf")  # the masked block's one row is invalid
    kp[1, :, 2] = 0.0
    inputs = [t.to(torch.float64) for t in (pose, betas, cam, kp, torch.full((17, 2), 112.0))]
    out = smplify_fit_triton(consts, opts, *inputs)
    ref = autograd_fit(*inputs)
    assert torch.equal(out.valid, ref.valid) and out.valid.tolist().count(False) == 2
    assert torch.equal(out.iterations, ref.iterations)
    ok = out.valid
    torch.testing.assert_close(out.total_loss[ok], ref.total_loss[ok], rtol=1e-10, atol=0)
    torch.testing.assert_close(out.pose[ok], ref.pose[ok], atol=1e-10, rtol=0)
    assert torch.allclose(out.pose[~ok], pose.double()[~ok], equal_nan=True, atol=0, rtol=0)
