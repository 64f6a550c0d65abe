"""Shared checks of the Triton kernel tests (one file an op: tests/test_<op>.py).

Tolerance rule (STYLE.md): in fp32 the kernel may be at most 2x as wrong as the fp32 torch
reference, both measured against the fp64 reference, plus a floor of 1e-6 x the largest magnitude
(so exact agreement of the reference with itself does not demand bit-exactness from the kernel).
In fp64 the kernel must match the fp64 reference to rtol/atol 1e-10 (relative to the magnitude).
Every backward runs with the same random upstream gradient and the loss multiplied by 2 (catches
kernels that assume an upstream gradient of 1). Odd batches leave masked lanes; on CPU the kernels
run under the Triton interpreter (tests/conftest.py) at small sizes; with CUDA the same tests also
run at batch 1024. Full SMPL sizes (6890 vertices, the smpl_49 regressor): tests/test_gpu_kernels.py.
"""
import pytest
import torch

from spin_fast.constants import SMPL_PARENTS
from spin_fast_kernels.joints_only import fold_regressor
from spin_fast_kernels.kinematic_chain import kinematic_chain_torch, rodrigues_torch

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
ODD_BATCHES = [1, 3, 17]


def batches(device, extra=(), cpu=(3, 17)):
    """Odd batch sizes (masked lanes), plus batch 1024 on CUDA where the interpreter is off. Under the
    interpreter (CPU) only `cpu`: it pays for every program, and B = 1 runs one partly filled program
    like B = 3 (the five public ops at B = 1 are tests/test_gpu_kernels.py's interpreter rows); the
    default 17 is two programs of the 16-body ops, the second masked."""
    return list(cpu) if device == "cpu" else ODD_BATCHES + list(extra) + [1024]


def assert_as_good_as_torch(ours, torch32, ref64, what):
    """|ours - ref64| <= 2 |torch32 - ref64| + 1e-6 max|ref64|, elementwise maxima: the kernel may be at
    most twice as wrong as PyTorch at the same precision, both measured against an fp64 reference."""
    assert ours.shape == ref64.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref64.shape)}"
    ref64 = ref64.double()
    err_ours = (ours.double() - ref64).abs().max().item()
    err_torch = (torch32.double() - ref64).abs().max().item()
    floor = 1e-6 * ref64.abs().max().item()
    assert err_ours <= 2 * err_torch + floor, (
        f"{what}: kernel error {err_ours:.3g} > 2 x torch fp32 error {err_torch:.3g} + floor {floor:.3g}")


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


def pose_inputs(B, device, S=10, seed=0):
    """float64 betas (B, S), pose_feature (B, 207) from real rotations, transforms (B, 24, 3, 4)."""
    g = gen(seed)
    betas = torch.randn(B, S, generator=g, dtype=torch.float64)
    R = rodrigues_torch(0.4 * torch.randn(B, 24, 3, generator=g, dtype=torch.float64))
    pose_feature = (R[:, 1:] - torch.eye(3, dtype=torch.float64)).reshape(B, 207)
    rest = 0.3 * torch.randn(B, 24, 3, generator=g, dtype=torch.float64)
    _, transforms = kinematic_chain_torch(R, rest, SMPL_PARENTS)
    return [t.to(device) for t in (betas, pose_feature, transforms)]


def folded(model, device, dtype=torch.float64, shuffle=False):
    m = model
    coeffs, bw, pj, pb = fold_regressor(m["regressor"], m["v_template"], m["shapedirs"], m["posedirs"],
                                        m["lbs_weights"])
    if shuffle:  # the kernels must not rely on the pairs being sorted by joint
        order = torch.randperm(len(pj), generator=gen(99))
        coeffs, bw, pj, pb = coeffs[order], bw[order], pj[order], pb[order]
    return coeffs.to(device, dtype), bw.to(device, dtype), pj.to(device), pb.to(device)
