"""GPU twins of the Triton ops at full SMPL size: every public op (rodrigues_chain, skinning,
joints_only, gmm_prior, reprojection_loss) on the stand-in's real-sized arrays (6890 vertices, the
folded smpl_49 regressor, the 8-component GMM over 69 dims, 49 keypoints), batches 1, 7, 64 and
1024, forward and the gradient of every differentiable input (upstream gradient random, loss x2),
against the torch reference: the kernel (fp32) may be at most 2x as wrong as the fp32 torch
reference on the same device, both measured against the fp64 reference on the CPU
(tests/kernel_checks.py).

`cuda` rows are marked gpu (the compiled kernels). The `cpu` rows run the same comparison with the
Triton interpreter at batch 1 (the interpreter is ~1000x slower than torch), so the twin code is
exercised on every machine (skinning there on the first 200 of the 6890 vertices: the interpreter
takes ~3 min for all of them).
"""
from __future__ import annotations

import os

import pytest
import torch

from kernel_checks import assert_as_good_as_torch
from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast_kernels.gmm_prior import gmm_constants, gmm_prior, gmm_prior_torch
from spin_fast_kernels.joints_only import joints_only, joints_only_torch
from spin_fast_kernels.kinematic_chain import rodrigues_chain, rodrigues_chain_torch
from spin_fast_kernels.reprojection import reprojection_loss, reprojection_loss_torch
from spin_fast_kernels.skinning import skinning, skinning_torch

FULL_BATCHES = [1, 7, 64, 1024]
CASES = [pytest.param("cuda", b, marks=pytest.mark.gpu, id=f"cuda-B{b}") for b in FULL_BATCHES] + [
    pytest.param("cpu", 1, id="cpu-B1-interpreter")]
OPS = ["rodrigues_chain", "skinning", "joints_only", "gmm_prior", "reprojection_loss"]


@pytest.fixture(scope="module")
def full_size(synthetic_assets):
    """fp64 CPU body model (6890 vertices) and GMM constants of the stand-in."""
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    body = BodyModel(smpl, load_regressor(synthetic_assets.j_regressor_extra), dtype=torch.float64)
    gmm = load_gmm(synthetic_assets.gmm)
    consts = gmm_constants(*(torch.as_tensor(gmm[k]) for k in ("means", "covars", "weights")), dtype=torch.float64)
    assert body.v_template.shape == (6890, 3)
    return body, consts


def op_case(name, body, consts, B, seed=0, vertices=None):
    """(fn, reference, fp64 CPU inputs, which inputs get gradients) of op `name` at batch B (skinning
    on the first `vertices` vertices, all by default)."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    aa = 0.4 * torch.randn(B, 24, 3, **f64)
    betas = torch.randn(B, body.num_betas, **f64)
    rest = body.J_template + torch.einsum("bs,jcs->bjc", betas, body.J_shapedirs)
    rot, _, transforms = rodrigues_chain_torch(aa, rest, body.parents_list)
    pf = (rot[:, 1:] - torch.eye(3, dtype=torch.float64)).reshape(B, -1)
    if name == "rodrigues_chain":
        p = body.parents_list
        return (lambda a, r: rodrigues_chain(a, r, p)), (lambda a, r: rodrigues_chain_torch(a, r, p)), [aa, rest], None
    if name == "skinning":
        model = [a[:vertices] for a in (body.v_template, body.shapedirs, body.posedirs, body.lbs_weights)]
        return skinning, skinning_torch, [betas, pf, transforms, *model], [True] * 3 + [False] * 4
    if name == "joints_only":
        folded = [body.smpl_49_coeffs, body.smpl_49_bone_weight, body.smpl_49_pair_joint, body.smpl_49_pair_bone]
        n = body.smpl_49_regressor.shape[0]
        return ((lambda *x: joints_only(*x, n)), (lambda *x: joints_only_torch(*x, n)),
                [betas, pf, transforms, *folded], [True] * 3 + [False] * 4)
    if name == "gmm_prior":
        pose = consts[0][torch.arange(B) % consts[0].shape[0]] + 0.2 * torch.randn(B, 69, **f64)
        return gmm_prior, gmm_prior_torch, [pose, *consts], [True, False, False, False]
    if name == "reprojection_loss":
        joints = 0.3 * torch.randn(B, 49, 3, **f64)
        t = torch.tensor([0.0, 0.2, 40.0], dtype=torch.float64) + torch.randn(B, 3, **f64)
        center = 112.0 + 5.0 * torch.randn(B, 2, **f64)
        kp = 112.0 + 60.0 * torch.randn(B, 49, 2, **f64)
        conf = torch.rand(B, 49, **f64)
        conf[:, [1, 9, 12, 27, 28]] = 0.0
        kw = dict(focal_length=5000.0, sigma=100.0, units=0, img_size=224, reduction="none")
        return ((lambda j, tt, k, c, ce: reprojection_loss(j, tt, k, c, center=ce, **kw)),
                (lambda j, tt, k, c, ce: reprojection_loss_torch(j, tt, k, c, center=ce, **kw)),
                [joints, t, kp, conf, center], [True, True, False, False, False])
    raise ValueError(name)


def run(fn, inputs, grad_mask, device, dtype, seed=1):
    """Outputs of fn and the gradients of 2 * sum <out, upstream> (upstream fixed by seed)."""
    xs = [(x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)) for x in inputs]
    xs = [x.detach().clone().requires_grad_(bool(m)) for x, m in zip(xs, grad_mask)]
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for o in outs]
    (2.0 * sum((o * u).sum() for o, u in zip(outs, ups))).backward()
    grads = [torch.zeros_like(x) if x.grad is None else x.grad for x, m in zip(xs, grad_mask) if m]
    return [o.detach().cpu() for o in outs], [gr.cpu() for gr in grads]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device,B", CASES)
def test_triton_op_full_size_matches_reference(full_size, triton_backend, monkeypatch, device, B, op):
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton interpreter is off here (a CUDA machine): the cuda rows run the kernels")
    body, consts = full_size
    fn, ref, inputs, grad_mask = op_case(op, body, consts, B, vertices=None if device == "cuda" else 200)
    grad_mask = grad_mask or [True] * len(inputs)
    o64, g64 = run(ref, inputs, grad_mask, "cpu", torch.float64)
    monkeypatch.setenv("SPIN_FAST_BACKEND", "torch")
    o32, g32 = run(ref, inputs, grad_mask, device, torch.float32)
    monkeypatch.setenv("SPIN_FAST_BACKEND", "triton")
    o, g = run(fn, inputs, grad_mask, device, torch.float32)
    for k, (a, b, c) in enumerate(zip(o, o32, o64)):
        assert a.dtype == torch.float32 and torch.isfinite(a).all(), f"{op} output {k}"
        assert_as_good_as_torch(a, b, c, f"{op} B={B} output {k}")
    for k, (a, b, c) in enumerate(zip(g, g32, g64)):
        assert_as_good_as_torch(a, b, c, f"{op} B={B} grad {k}")
