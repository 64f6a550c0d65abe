"""SMPL ops (rodrigues, kinematic_chain, skinning, joints_only): Triton kernels vs the torch references,
forward and every gradient, plus gradcheck of the references (and the kernels) in float64.

Tolerance rule (STYLE.md): in fp32 the kernel may be at most 2x as wrong as the fp32 torch
reference, both measured against the fp64 reference, plus a floor of 1e-6 x the largest magnitude
(so exact agreement of the reference with itself does not demand bit-exactness from the kernel).
In fp64 the kernel must match the fp64 reference to rtol/atol 1e-10 (relative to the magnitude).
Every backward runs with the same random upstream gradient and the loss multiplied by 2 (catches
kernels that assume an upstream gradient of 1). Batches 1, 3, 17 (and 33: two programs of the
32-body chain kernel) leave masked lanes; on CPU the kernels run under the Triton interpreter
(tests/conftest.py) at small sizes; with CUDA the same tests also run at full size (batch 1024).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from kernel_checks import assert_as_good_as_torch, batches
from spin_fast.constants import SMPL_PARENTS
from spin_fast_kernels.joints_only import fold_regressor, joints_only, joints_only_torch
from spin_fast_kernels.joints_only.function import joints_only_triton
from spin_fast_kernels.kinematic_chain import (
    kinematic_chain,
    kinematic_chain_torch,
    rodrigues,
    rodrigues_chain,
    rodrigues_chain_torch,
    rodrigues_torch,
)
from spin_fast_kernels.skinning import skinning, skinning_torch
from spin_fast_kernels.skinning.function import skinning_triton

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tests run thousands of tiny ops (gradcheck, the interpreter): on a shared 2-core machine
    OpenMP's spinning threads turned 1 s into 80 s under load. One thread; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def assert_close64(ours, ref, what):
    scale = max(1.0, ref.abs().max().item())
    err = (ours - ref).abs().max().item()
    assert ours.dtype == torch.float64 and err <= 1e-10 * scale, f"{what}: fp64 error {err:.3g}"


def run(fn, inputs, upstreams, grad_mask=None):
    """Outputs of fn(*inputs) and the gradients of 2 * sum_k <out_k, upstream_k> w.r.t. each input."""
    grad_mask = grad_mask or [True] * len(inputs)
    xs = [x.detach().clone().requires_grad_(g) if isinstance(x, torch.Tensor) else x
          for x, g in zip(inputs, grad_mask)]
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o * u).sum() for o, u in zip(outs, upstreams) if u is not None)
    (2.0 * loss).backward()
    # an input the used outputs do not depend on gets no .grad from the reference: that is a zero
    return [o.detach() for o in outs], [torch.zeros_like(x) if x.grad is None else x.grad
                                        for x, g in zip(xs, grad_mask) if g]


def compare_fp32(fn, ref, inputs64, upstreams64, what, grad_mask=None):
    """Kernel (fp32) vs torch fp32 vs torch fp64, outputs and gradients."""
    to32 = lambda ts: [t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in ts]  # noqa
    o64, g64 = run(ref, inputs64, upstreams64, grad_mask)
    o32, g32 = run(ref, to32(inputs64), to32(upstreams64), grad_mask)
    o, g = run(fn, to32(inputs64), to32(upstreams64), grad_mask)
    for k, (a, b, c) in enumerate(zip(o, o32, o64)):
        assert a.dtype == torch.float32, f"{what} output {k}: dtype {a.dtype}"
        assert_as_good_as_torch(a, b, c, f"{what} output {k}")
    for k, (a, b, c) in enumerate(zip(g, g32, g64)):
        assert a is not None and a.dtype == torch.float32, f"{what} grad {k}"
        assert_as_good_as_torch(a, b, c, f"{what} grad {k}")


def compare_fp64(fn, ref, inputs64, upstreams64, what, grad_mask=None):
    o_ref, g_ref = run(ref, inputs64, upstreams64, grad_mask)
    o, g = run(fn, inputs64, upstreams64, grad_mask)
    for k, (a, b) in enumerate(zip(o, o_ref)):
        assert_close64(a, b, f"{what} output {k}")
    for k, (a, b) in enumerate(zip(g, g_ref)):
        assert_close64(a, b, f"{what} grad {k}")


# ---------------------------------------------------------------------------------------------
# rodrigues


def axis_angles(n, device, seed=0):
    """(n, 3) float64: random axes with angles over [0, pi], with exact zeros and tiny angles mixed in."""
    g = gen(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1)
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * torch.pi
    aa = axis * angle
    aa[::7] = 0.0
    aa[3::7] *= 1e-5
    return aa.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_rodrigues_fp32_matches_reference(triton_backend, device):
    for B in batches(device):
        aa = axis_angles(B * 24, device, seed=B).reshape(B, 24, 3)
        up = torch.randn(B, 24, 3, 3, generator=gen(B + 1), dtype=torch.float64).to(device)
        compare_fp32(rodrigues, rodrigues_torch, [aa], [up], f"rodrigues B={B}")


@pytest.mark.parametrize("device", DEVICES)
def test_rodrigues_fp64_any_leading_shape(triton_backend, device):
    aa = axis_angles(2 * 5 * 7, device, seed=3).reshape(2, 5, 7, 3)
    up = torch.randn(2, 5, 7, 3, 3, generator=gen(4), dtype=torch.float64).to(device)
    compare_fp64(rodrigues, rodrigues_torch, [aa], [up], "rodrigues (2,5,7,3)")
    assert rodrigues(aa[0, 0, 0]).shape == (3, 3)  # a single vector works too


def test_rodrigues_gradcheck_reference_and_kernel(triton_backend):
    aa = axis_angles(9, "cpu", seed=5)
    aa[::7] = 0.3  # gradcheck's finite differences need a smooth point: no exact zero here
    aa = aa.requires_grad_(True)
    assert torch.autograd.gradcheck(rodrigues_torch, (aa,))
    assert torch.autograd.gradcheck(rodrigues, (aa,), fast_mode=True)


def test_rodrigues_hand_values(triton_backend):
    """pi/2 about z maps x to y; zero is the identity with derivative skew(dv)."""
    R = rodrigues(torch.tensor([[0.0, 0.0, torch.pi / 2], [0.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(R[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64))
    torch.testing.assert_close(R[1], torch.eye(3, dtype=torch.float64))
    v = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    G = torch.zeros(1, 3, 3, dtype=torch.float64)
    G[0, 2, 1] = 1.0  # dR21/dv = d(v_x) -> (1, 0, 0)
    (rodrigues(v) * G).sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# kinematic_chain


def chain_inputs(B, device, J=24, seed=0):
    g = gen(seed)
    R = rodrigues_torch(0.5 * torch.randn(B, J, 3, generator=g, dtype=torch.float64))
    rest = 0.3 * torch.randn(B, J, 3, generator=g, dtype=torch.float64)
    return R.to(device), rest.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_kinematic_chain_fp32_matches_reference(triton_backend, device):
    for B in batches(device, extra=[33]):
        R, rest = chain_inputs(B, device, seed=B)
        ups = [torch.randn(B, 24, 3, generator=gen(B + 1), dtype=torch.float64).to(device),
               torch.randn(B, 24, 3, 4, generator=gen(B + 2), dtype=torch.float64).to(device)]
        chain = lambda r, j: kinematic_chain(r, j, SMPL_PARENTS)  # noqa: E731
        chain_ref = lambda r, j: kinematic_chain_torch(r, j, SMPL_PARENTS)  # noqa: E731
        compare_fp32(chain, chain_ref, [R, rest], ups, f"kinematic_chain B={B}")


@pytest.mark.parametrize("device", DEVICES)
def test_kinematic_chain_fp64_other_tree_and_one_output(triton_backend, device):
    """A different tree (a branchy 7-joint one), and each output alone (the other's gradient is None)."""
    parents = [-1, 0, 1, 0, 3, 3, 1]
    R, rest = chain_inputs(5, device, J=7, seed=11)
    ups = [torch.randn(5, 7, 3, generator=gen(12), dtype=torch.float64).to(device),
           torch.randn(5, 7, 3, 4, generator=gen(13), dtype=torch.float64).to(device)]
    chain = lambda r, j: kinematic_chain(r, j, parents)  # noqa: E731
    chain_ref = lambda r, j: kinematic_chain_torch(r, j, parents)  # noqa: E731
    compare_fp64(chain, chain_ref, [R, rest], ups, "chain both outputs")
    compare_fp64(chain, chain_ref, [R, rest], [ups[0], None], "chain posed only")
    compare_fp64(chain, chain_ref, [R, rest], [None, ups[1]], "chain transforms only")
    compare_fp64(chain, chain_ref, [R, rest], ups, "chain rest_joints only", grad_mask=[False, True])
    # the parents may come as a tensor (BodyModel's buffer) with -1 (or 2**32 - 1 cast) at the root
    out = kinematic_chain(R, rest, torch.tensor(parents))
    torch.testing.assert_close(out[1], kinematic_chain_torch(R, rest, parents)[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_rodrigues_chain_fp32_matches_reference(triton_backend, device):
    """The fused op against rodrigues_torch -> kinematic_chain_torch, all three outputs used."""
    for B in batches(device):
        aa = axis_angles(B * 24, device, seed=B + 50).reshape(B, 24, 3)
        _, rest = chain_inputs(B, device, seed=B)
        ups = [torch.randn(B, 24, 3, 3, generator=gen(B + 3), dtype=torch.float64).to(device),
               torch.randn(B, 24, 3, generator=gen(B + 1), dtype=torch.float64).to(device),
               torch.randn(B, 24, 3, 4, generator=gen(B + 2), dtype=torch.float64).to(device)]
        fused = lambda a, j: rodrigues_chain(a, j, SMPL_PARENTS)  # noqa: E731
        ref = lambda a, j: rodrigues_chain_torch(a, j, SMPL_PARENTS)  # noqa: E731
        compare_fp32(fused, ref, [aa, rest], ups, f"rodrigues_chain B={B}")


def test_rodrigues_chain_fp64_single_outputs_and_gradcheck(triton_backend):
    parents = [-1, 0, 1, 0, 3, 3, 1]
    aa = axis_angles(5 * 7, "cpu", seed=14).reshape(5, 7, 3)
    _, rest = chain_inputs(5, "cpu", J=7, seed=15)
    ups = [torch.randn(5, 7, 3, 3, generator=gen(16), dtype=torch.float64),
           torch.randn(5, 7, 3, generator=gen(17), dtype=torch.float64),
           torch.randn(5, 7, 3, 4, generator=gen(18), dtype=torch.float64)]
    fused = lambda a, j: rodrigues_chain(a, j, parents)  # noqa: E731
    ref = lambda a, j: rodrigues_chain_torch(a, j, parents)  # noqa: E731
    # rotmats alone: the gradient reaches aa only through the output's own upstream (rest gets 0);
    # all three together: the fp32 test; posed / transforms alone: the kinematic_chain tests' paths
    compare_fp64(fused, ref, [aa, rest], [ups[0], None, None], "rodrigues_chain rotmats only")
    compare_fp64(fused, ref, [aa, rest], [None, ups[1], None], "rodrigues_chain posed only")
    aa[0, 2] = 0.3  # gradcheck needs a smooth point: no exact zero angle
    args = (aa.requires_grad_(True), rest.requires_grad_(True))
    assert torch.autograd.gradcheck(fused, args, fast_mode=True)
    with pytest.raises(ValueError, match=r"axis_angle must be \(B, J, 3\)"):
        rodrigues_chain(aa[0], rest, parents)


def test_kinematic_chain_gradcheck_reference_and_kernel(triton_backend):
    parents = [-1, 0, 1, 0, 3]
    R, rest = chain_inputs(2, "cpu", J=5, seed=21)
    args = (R.requires_grad_(True), rest.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda r, j: kinematic_chain_torch(r, j, parents), args)
    # the kernel under the slow interpreter: fast mode (random projections, one backward a check)
    assert torch.autograd.gradcheck(lambda r, j: kinematic_chain(r, j, parents), args, fast_mode=True)


def test_kinematic_chain_hand_values(triton_backend):
    """Two joints, root turned pi/2 about z: the child at rest (1, 0, 0) goes to (0, 1, 0); the
    transforms send each rest joint to its posed position."""
    R = rodrigues_torch(torch.tensor([[[0.0, 0.0, torch.pi / 2], [0.0, 0.0, 0.0]]], dtype=torch.float64))
    rest = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    posed, T = kinematic_chain(R, rest, [-1, 0])
    torch.testing.assert_close(posed[0, 1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    moved = (T[..., :3] @ rest[..., None])[..., 0] + T[..., 3]
    torch.testing.assert_close(moved, posed)


def test_kinematic_chain_bad_inputs(triton_backend):
    R, rest = chain_inputs(2, "cpu", J=4)
    with pytest.raises(ValueError, match="rotmats must be"):
        kinematic_chain(R[..., :2], rest, [-1, 0, 1, 2])
    with pytest.raises(ValueError, match="rest_joints must be"):
        kinematic_chain(R, rest[:1], [-1, 0, 1, 2])
    with pytest.raises(ValueError, match="parents must list 4"):
        kinematic_chain(R, rest, [-1, 0, 1])
    with pytest.raises(ValueError, match=r"joints \[2\]"):
        kinematic_chain(R, rest, [-1, 0, 3, 2])
    with pytest.raises(ValueError, match=r"axis_angle must be \(\.\.\., 3\)"):
        rodrigues(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="floating point"):
        rodrigues(torch.zeros(4, 3, dtype=torch.long))


def test_dispatch_picks_the_reference_for_cpu_tensors(monkeypatch):
    """auto on CPU tensors runs the torch reference (its autograd graph, not our Function)."""
    monkeypatch.setenv("SPIN_FAST_BACKEND", "auto")
    R, rest = chain_inputs(1, "cpu", J=3)
    R.requires_grad_(True)
    assert "RodriguesFunction" not in type(rodrigues(torch.ones(1, 3, requires_grad=True)).grad_fn).__name__
    assert "KinematicChain" not in type(kinematic_chain(R, rest, [-1, 0, 1])[0].grad_fn).__name__
    monkeypatch.setenv("SPIN_FAST_BACKEND", "triton")
    assert "KinematicChain" in type(kinematic_chain(R, rest, [-1, 0, 1])[0].grad_fn).__name__


def test_import_does_not_touch_the_triton_driver():
    """Without the interpreter on a CPU-only machine, import and CPU calls must still work."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPIN_FAST_BACKEND")}
    if HAS_CUDA:
        env["CUDA_VISIBLE_DEVICES"] = ""
    code = (
        "import torch\n"
        "from spin_fast_kernels.kinematic_chain import rodrigues, kinematic_chain\n"
        "R = rodrigues(torch.zeros(1, 2, 3))\n"
        "p, T = kinematic_chain(R, torch.ones(1, 2, 3), [-1, 0])\n"
        "print(float(p.sum()))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.split()[-1]) == pytest.approx(6.0)


# ---------------------------------------------------------------------------------------------
# a small SMPL-format model (V vertices, <= 4 bones a vertex) shared by joints_only and skinning


def small_model(V=300, S=10, J=6, seed=0):
    """float64 v_template (V,3), shapedirs (V,3,S), posedirs (V,3,207), weights (V,24) and a
    (J, V) regressor whose first half are one-hot landmark rows, the rest 8-vertex averages."""
    g = gen(seed)
    weights = torch.zeros(V, 24, dtype=torch.float64)
    for v in range(V):
        bones = torch.randperm(24, generator=g)[: 1 + v % 4]
        weights[v, bones] = torch.rand(len(bones), generator=g, dtype=torch.float64) + 0.1
    weights /= weights.sum(1, keepdim=True)
    reg = torch.zeros(J, V, dtype=torch.float64)
    for j in range(J):
        cols = torch.randperm(V, generator=g)[: 1 if j < J // 2 else 8]
        reg[j, cols] = torch.rand(len(cols), generator=g, dtype=torch.float64) + 0.1
    reg /= reg.sum(1, keepdim=True)
    return dict(
        v_template=0.3 * torch.randn(V, 3, generator=g, dtype=torch.float64),
        shapedirs=0.02 * torch.randn(V, 3, S, generator=g, dtype=torch.float64),
        posedirs=0.02 * torch.randn(V, 3, 207, generator=g, dtype=torch.float64),
        lbs_weights=weights, regressor=reg)


@pytest.fixture(scope="module")
def model64():
    return small_model(V=200)


@pytest.fixture(scope="module")
def model_full():
    """SMPL sizes (6890 vertices, 10 betas) for the CUDA runs."""
    return small_model(V=6890, J=20, seed=4)


def model_for(device, request):
    return request.getfixturevalue("model_full") if device == "cuda" else request.getfixturevalue("model64")


def pose_inputs(B, device, S=10, seed=0):
    """float64 betas (B, S), pose_feature (B, 207) from real rotations, transforms (B, 24, 3, 4)."""
    g = gen(seed)
    betas = torch.randn(B, S, generator=g, dtype=torch.float64)
    R = rodrigues_torch(0.4 * torch.randn(B, 24, 3, generator=g, dtype=torch.float64))
    pose_feature = (R[:, 1:] - torch.eye(3, dtype=torch.float64)).reshape(B, 207)
    rest = 0.3 * torch.randn(B, 24, 3, generator=g, dtype=torch.float64)
    _, transforms = kinematic_chain_torch(R, rest, SMPL_PARENTS)
    return [t.to(device) for t in (betas, pose_feature, transforms)]


# ---------------------------------------------------------------------------------------------
# joints_only


def folded(model, device, dtype=torch.float64, shuffle=False):
    m = model
    coeffs, bw, pj, pb = fold_regressor(m["regressor"], m["v_template"], m["shapedirs"], m["posedirs"],
                                        m["lbs_weights"])
    if shuffle:  # the kernels must not rely on the pairs being sorted by joint
        order = torch.randperm(len(pj), generator=gen(99))
        coeffs, bw, pj, pb = coeffs[order], bw[order], pj[order], pb[order]
    return coeffs.to(device, dtype), bw.to(device, dtype), pj.to(device), pb.to(device)


def test_folded_model_has_masked_pair_chunks(model64):
    P = folded(model64, "cpu")[0].shape[0]
    assert P > 32 and P % 32, f"pick a model whose {P} pairs span several partly-filled chunks"


@pytest.mark.parametrize("device", DEVICES)
def test_joints_only_fp32_matches_reference(triton_backend, request, device):
    model = model_for(device, request)
    consts = folded(model, device)
    J = model["regressor"].shape[0]
    for B in batches(device):
        inputs = pose_inputs(B, device, seed=B)
        up = torch.randn(B, J, 3, generator=gen(B + 1), dtype=torch.float64).to(device)
        fn = lambda b, f, t, c, w: joints_only(b, f, t, c, w, consts[2], consts[3], J)  # noqa: E731
        ref = lambda b, f, t, c, w: joints_only_torch(b, f, t, c, w, consts[2], consts[3], J)  # noqa: E731
        compare_fp32(fn, ref, inputs + list(consts[:2]), [up], f"joints_only B={B}",
                     grad_mask=[True, True, True, False, False])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nsplit", [None, 1, 2])
def test_joints_only_fp64_any_split_and_pair_order(triton_backend, model64, device, nsplit):
    """nsplit: None = one pair chunk a program; 1 = one program walks them all; 2 = strided."""
    coeffs, bw, pj, pb = folded(model64, device, shuffle=True)
    J = model64["regressor"].shape[0]
    B = 17
    inputs = pose_inputs(B, device, seed=7)
    up = torch.randn(B, J, 3, generator=gen(8), dtype=torch.float64).to(device)
    fn = lambda b, f, t: joints_only_triton(b, f, t, coeffs, bw, pj, pb, J, nsplit=nsplit)  # noqa: E731
    ref = lambda b, f, t: joints_only_torch(b, f, t, coeffs, bw, pj, pb, J)  # noqa: E731
    compare_fp64(fn, ref, inputs, [up], f"joints_only nsplit={nsplit}")


def test_joints_only_strided_inputs_and_empty(triton_backend, model64):
    """pose_feature as a column slice, betas transposed-contiguous; no pairs / no joints give zeros."""
    coeffs, bw, pj, pb = folded(model64, "cpu")
    J = model64["regressor"].shape[0]
    betas, pf, T = pose_inputs(3, "cpu", seed=4)
    wide = torch.cat([torch.zeros(3, 5, dtype=torch.float64), pf], dim=1)
    betas_t = betas.t().contiguous().t()
    out = joints_only(betas_t, wide[:, 5:], T, coeffs, bw, pj, pb, J)
    assert_close64(out, joints_only_torch(betas, pf, T, coeffs, bw, pj, pb, J), "strided")
    assert torch.equal(joints_only(betas, pf, T, coeffs[:0], bw[:0], pj[:0], pb[:0], J), torch.zeros(3, J, 3,
                       dtype=torch.float64))
    assert joints_only(betas[:0], pf[:0], T[:0], coeffs, bw, pj, pb, J).shape == (0, J, 3)


def test_joints_only_gradcheck_reference_and_kernel(triton_backend):
    model = small_model(V=40, J=2, seed=3)
    coeffs, bw, pj, pb = folded(model, "cpu")
    betas, pf, T = (t.requires_grad_(True) for t in pose_inputs(2, "cpu", seed=5))
    assert torch.autograd.gradcheck(lambda b, f, t: joints_only_torch(b, f, t, coeffs, bw, pj, pb, 2), (betas, pf, T))
    assert torch.autograd.gradcheck(lambda b, f, t: joints_only(b, f, t, coeffs, bw, pj, pb, 2), (betas, pf, T),
                                    fast_mode=True)


def test_joints_only_bad_inputs(triton_backend, model64):
    coeffs, bw, pj, pb = folded(model64, "cpu")
    betas, pf, T = pose_inputs(2, "cpu")
    with pytest.raises(ValueError, match=r"coeffs must be \(P, 3, 218\)"):
        joints_only(betas, pf, T, coeffs[..., :-1], bw, pj, pb, 6)
    with pytest.raises(ValueError, match="transforms must be"):
        joints_only(betas, pf, T[..., :3], coeffs, bw, pj, pb, 6)
    with pytest.raises(ValueError, match="bone_weight must be"):
        joints_only(betas, pf, T, coeffs, bw[1:], pj, pb, 6)
    with pytest.raises(ValueError, match="pair_joint must lie in"):
        joints_only(betas, pf, T, coeffs, bw, pj, pb, 2)
    with pytest.raises(TypeError, match="pair_bone must be int"):
        joints_only(betas, pf, T, coeffs, bw, pj, pb.double(), 6)
    with pytest.raises(ValueError, match="coeffs requires grad"):
        joints_only(betas, pf, T, coeffs.clone().requires_grad_(True), bw, pj, pb, 6)


# ---------------------------------------------------------------------------------------------
# skinning

MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "lbs_weights")


@pytest.mark.parametrize("device", DEVICES)
def test_skinning_fp32_matches_reference(triton_backend, request, device):
    """V = 200 on CPU: 6 full vertex tiles of 32 and a masked one; 6890 with CUDA."""
    consts = [model_for(device, request)[k].to(device) for k in MODEL_KEYS]
    V = consts[0].shape[0]
    for B in batches(device):
        inputs = pose_inputs(B, device, seed=B)
        up = torch.randn(B, V, 3, generator=gen(B + 1), dtype=torch.float64).to(device)
        compare_fp32(skinning, skinning_torch, inputs + consts, [up], f"skinning B={B}",
                     grad_mask=[True, True, True, False, False, False, False])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nsplit", [None, 1, 3])
def test_skinning_fp64_any_split(triton_backend, device, nsplit):
    """nsplit: None = one vertex tile a program; 1 = one program walks them all; 3 = strided."""
    model = small_model(V=100, seed=1)
    consts = [model[k].to(device) for k in MODEL_KEYS]
    B = 17
    inputs = pose_inputs(B, device, seed=9)
    up = torch.randn(B, 100, 3, generator=gen(10), dtype=torch.float64).to(device)
    fn = lambda b, f, t: skinning_triton(b, f, t, *consts, nsplit=nsplit)  # noqa: E731
    ref = lambda b, f, t: skinning_torch(b, f, t, *consts)  # noqa: E731
    compare_fp64(fn, ref, inputs, [up], f"skinning nsplit={nsplit}")


def test_skinning_strided_inputs_other_sizes_and_empty(triton_backend):
    """S = 3 betas, a 2-bone rig, pose_feature as a column slice; an empty batch."""
    g = gen(31)
    V, S, NB, F = 45, 3, 2, 9
    vt = torch.randn(V, 3, generator=g, dtype=torch.float64)
    sd = torch.randn(V, 3, S, generator=g, dtype=torch.float64)
    pd = torch.randn(V, 3, F, generator=g, dtype=torch.float64)
    w = torch.rand(V, NB, generator=g, dtype=torch.float64)
    betas = torch.randn(S, 3, generator=g, dtype=torch.float64).t()  # transposed view
    wide = torch.randn(3, F + 4, generator=g, dtype=torch.float64)
    T = torch.randn(3, NB, 3, 4, generator=g, dtype=torch.float64)
    out = skinning(betas, wide[:, 4:], T, vt, sd, pd, w)
    assert_close64(out, skinning_torch(betas, wide[:, 4:], T, vt, sd, pd, w), "skinning strided")
    assert skinning(betas[:0], wide[:0, 4:], T[:0], vt, sd, pd, w).shape == (0, V, 3)


def test_skinning_gradcheck_reference_and_kernel(triton_backend):
    model = small_model(V=20, seed=2)
    consts = [model[k] for k in MODEL_KEYS]
    betas, pf, T = (t.requires_grad_(True) for t in pose_inputs(2, "cpu", seed=6))
    assert torch.autograd.gradcheck(lambda b, f, t: skinning_torch(b, f, t, *consts), (betas, pf, T))
    assert torch.autograd.gradcheck(lambda b, f, t: skinning(b, f, t, *consts), (betas, pf, T), fast_mode=True)


def test_joints_only_equals_regressed_skinned_vertices(triton_backend, model64):
    """The two Triton ops agree with each other: folded joints = regressor . skinned mesh, and so do
    their gradients."""
    consts = [model64[k] for k in MODEL_KEYS]
    coeffs, bw, pj, pb = folded(model64, "cpu")
    J = model64["regressor"].shape[0]
    inputs = pose_inputs(3, "cpu", seed=12)
    up = torch.randn(3, J, 3, generator=gen(13), dtype=torch.float64)
    via_mesh = lambda b, f, t: torch.einsum("jv,bvc->bjc", model64["regressor"], skinning(b, f, t, *consts))  # noqa
    folded_fn = lambda b, f, t: joints_only(b, f, t, coeffs, bw, pj, pb, J)  # noqa: E731
    compare_fp64(folded_fn, via_mesh, inputs, [up], "joints_only vs regressor . skinning")


def test_skinning_bad_inputs(triton_backend, model64):
    vt, sd, pd, w = (model64[k] for k in MODEL_KEYS)
    betas, pf, T = pose_inputs(2, "cpu")
    with pytest.raises(ValueError, match="shapedirs must be"):
        skinning(betas[:, :5], pf, T, vt, sd, pd, w)
    with pytest.raises(ValueError, match="posedirs must be"):
        skinning(betas, pf[:, :200], T, vt, sd, pd, w)
    with pytest.raises(ValueError, match="lbs_weights must be"):
        skinning(betas, pf, T[:, :23], vt, sd, pd, w)
    with pytest.raises(ValueError, match="v_template must be"):
        skinning(betas, pf, T, vt[:, :2], sd, pd, w)
    with pytest.raises(ValueError, match="pose_feature must be"):
        skinning(betas, pf[:1], T, vt, sd, pd, w)
    with pytest.raises(ValueError, match="posedirs requires grad"):
        skinning(betas, pf, T, vt, sd, pd.clone().requires_grad_(True), w)


# ---------------------------------------------------------------------------------------------
# GPU compilation without a GPU

_COMPILE_SCRIPT = r'''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spin_fast_kernels.joints_only import function as jf, kernel as jk
from spin_fast_kernels.kinematic_chain import function as cf, kernel as ck
from spin_fast_kernels.skinning import function as sf, kernel as sk

f, i = "*fp32", "i32"
def sig(names, ptrs, ints, **cst):
    s = {n: f for n in ptrs}
    s.update({n: i for n in ints})
    s.update({n: "constexpr" for n in cst})
    for n in names:
        s[n] = "*i32" if n == "parents_ptr" else "*i64"
    return s, cst
chain = ["aa_ptr", "rot_ptr", "rest_ptr", "posed_ptr", "trans_ptr"]
jo = ["betas_ptr", "pf_ptr", "trans_ptr", "coeffs_ptr", "bw_ptr"]
jo_int = ["B", "S", "PF", "P", "NB", "NJ", "stride_bb", "stride_bs", "stride_fb", "stride_fp", "NSPLIT"]
sk_ptr = ["betas_ptr", "pf_ptr", "trans_ptr", "vt_ptr", "sd_ptr", "pd_ptr", "w_ptr"]
sk_int = ["B", "V", "S", "PF", "NB", "stride_bb", "stride_bs", "stride_fb", "stride_fp"]
blk = dict(BLOCK_B=16, BLOCK_P=32, BLOCK_KC=32, PRECISION="ieee")
sblk = dict(BLOCK_B=16, BLOCK_V=32, BLOCK_KC=32, PRECISION="ieee")
cases = [
    (ck._rodrigues_forward_kernel, sig([], ["aa_ptr", "rot_ptr"], ["N"], BLOCK=128), 4),
    (ck._rodrigues_backward_kernel, sig([], ["aa_ptr", "grad_rot_ptr", "grad_aa_ptr"], ["N"], BLOCK=128), 4),
    *[(ck._kinematic_chain_forward_kernel, sig(["parents_ptr"], chain, ["B", "J"], FROM_AA=fused,
        BLOCK_B=cf.CHAIN_BLOCK_B), 1) for fused in (False, True)],
    *[(ck._kinematic_chain_backward_kernel, sig(["parents_ptr"], ["aa_ptr", "rot_ptr", "rest_ptr", "trans_ptr",
        "grad_posed_ptr", "grad_trans_ptr", "grad_rot_up_ptr", "acc_ptr", "grad_rot_ptr", "grad_rest_ptr"], ["B", "J"],
        FROM_AA=fused, BLOCK_B=cf.CHAIN_BLOCK_B), 1) for fused in (False, True)],
    (jk._joints_only_forward_kernel, sig(["pj_ptr", "pb_ptr"], jo + ["out_ptr"], jo_int, BLOCK_J=64, **blk),
     jf.NUM_WARPS),
    (jk._joints_only_backward_pairs_kernel, sig(["pj_ptr", "pb_ptr"], jo + ["grad_out_ptr", "grad_local_ptr",
        "grad_trans_ptr"], jo_int, BLOCK_NB=32, **blk), jf.NUM_WARPS_BWD),
    (jk._joints_only_backward_x_kernel, sig([], ["grad_local_ptr", "coeffs_ptr", "grad_x_ptr"], ["B", "P", "K"],
        **blk), jf.NUM_WARPS),
    (sk._skinning_forward_kernel, sig([], sk_ptr + ["out_ptr"], sk_int, BLOCK_NB=32, **sblk), sf.NUM_WARPS),
    (sk._skinning_backward_vertex_kernel, sig([], sk_ptr + ["grad_out_ptr", "grad_vp_ptr", "grad_trans_ptr"],
        sk_int + ["NSPLIT"], BLOCK_NB=32, **sblk), sf.NUM_WARPS_BWD),
    (sk._skinning_backward_x_kernel, sig([], ["grad_vp_ptr", "sd_ptr", "pd_ptr", "grad_x_ptr"],
        ["B", "V", "S", "PF", "NSPLIT"], **sblk), sf.NUM_WARPS),
]
for fn, (signature, cst), warps in cases:
    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=cst), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, "num_stages": 1 if "chain" in fn.__name__ else 2})
    assert k.metadata.shared <= 232448, (fn.__name__, k.metadata.shared)  # H100: 227 KiB a block
    print("ok", fn.__name__, k.metadata.shared)
'''


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu(tmp_path):
    """Every kernel goes through Triton's real GPU pipeline (TTIR -> PTX -> ptxas cubin for sm_90, fp32)
    with no driver: catches constructs the interpreter accepts but the compiler does not."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPIN_FAST_BACKEND")}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    res = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("ok ") == 12, res.stdout


@pytest.mark.slow
def test_body_model_on_the_triton_backend_matches_torch(monkeypatch, synthetic_assets):
    """BodyModel picks the four public ops up: with every op on Triton (fp64, the 6890-vertex
    stand-in) vertices, joints, joints-only and all input gradients match the torch backend."""
    import spin_fast.body.model as body_model
    import spin_fast_kernels.joints_only
    import spin_fast_kernels.kinematic_chain
    import spin_fast_kernels.skinning
    from spin_fast.body import BodyModel

    # the model really calls the dispatching ops (not the references it falls back to)
    assert body_model.rodrigues is spin_fast_kernels.kinematic_chain.rodrigues
    assert body_model.kinematic_chain is spin_fast_kernels.kinematic_chain.kinematic_chain
    assert body_model.skinning is spin_fast_kernels.skinning.skinning
    assert body_model.joints_only_op is spin_fast_kernels.joints_only.joints_only
    model = BodyModel.from_paths(synthetic_assets, dtype=torch.float64)
    g = gen(0)
    args = [torch.randn(3, 10, generator=g, dtype=torch.float64), 0.3 * torch.randn(3, 69, generator=g,
            dtype=torch.float64), 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)]
    up = torch.randn(3, model.v_template.shape[0], 3, generator=g, dtype=torch.float64)
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("SPIN_FAST_BACKEND", backend)
        xs = [a.clone().requires_grad_(True) for a in args]
        out = model(*xs, joint_set="smpl_49")
        jo = model.joints_only(*xs, joint_set="smpl_49")
        (2 * ((out.vertices * up).sum() + out.joints.square().sum() + jo.square().sum())).backward()
        results[backend] = [out.vertices.detach(), out.joints.detach(), jo.detach()] + [x.grad for x in xs]
    for name, a, b in zip(["vertices", "joints", "joints_only", "betas", "body_pose", "global_orient"],
                          results["triton"], results["torch"]):
        assert_close64(a, b, f"BodyModel {name}")
