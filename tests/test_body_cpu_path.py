"""The CPU paths of the body model (kinematic_chain/cpu.py in torch and host.py in NumPy, skinning/cpu.py:
planar layouts, backward written out) against their oracles: the op references (reference.py) and
smplx.SMPL, outputs and the gradients w.r.t. betas, body_pose and global_orient, 1e-5 relative in float32
and 1e-12 in float64; gradcheck in float64; the joints-only path without transforms; which path the
dispatcher takes; SPIN_FAST_COMPILE's switch."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import compare_fp32, compare_fp64, gen, small_model
from kernel_checks import one_torch_thread  # noqa: F401  (autouse fixture)
from spin_fast.body import BodyModel
from spin_fast.constants import SMPL_54_TO_49, SMPL_PARENTS
from spin_fast_kernels import _dispatch
from spin_fast_kernels.kinematic_chain import (rodrigues_chain, rodrigues_chain_cpu, rodrigues_chain_host,
                                               rodrigues_chain_torch, shaped_rodrigues_chain_host)
from spin_fast_kernels.skinning import cpu as skinning_cpu_module
from spin_fast_kernels.skinning import skinning_basis, skinning_cpu, skinning_torch
from test_body_model import random_inputs, random_smpl, smplx_model

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def chain_inputs(B, J=24, seed=0):
    g = gen(seed)
    aa = 0.7 * torch.randn(B, J, 3, generator=g, dtype=torch.float64)
    aa[0, 3] = 0.0  # the zero rotation (smplx's eps) and a tiny one
    aa[-1, 5] *= 1e-6
    return aa, torch.randn(B, J, 3, generator=g, dtype=torch.float64)


def chain_upstreams(B, J=24, seed=1):
    g = gen(seed)
    return [torch.randn(B, J, 3, 3, generator=g, dtype=torch.float64),
            torch.randn(B, J, 3, generator=g, dtype=torch.float64),
            torch.randn(B, J, 3, 4, generator=g, dtype=torch.float64)]


CHAIN_PATHS = {"torch": rodrigues_chain_cpu, "numpy": rodrigues_chain_host}


def chain_ref(a, j):
    return rodrigues_chain_torch(a, j, SMPL_PARENTS)


@pytest.mark.parametrize("path", sorted(CHAIN_PATHS))
@pytest.mark.parametrize("B", [1, 17])
def test_rodrigues_chain_cpu_matches_reference(path, B):
    op = CHAIN_PATHS[path]
    ours = lambda a, j: op(a, j, SMPL_PARENTS)  # noqa: E731
    aa, rest = chain_inputs(B)
    ups = chain_upstreams(B)
    compare_fp32(ours, chain_ref, [aa, rest], ups, f"rodrigues_chain {path} B={B}")
    compare_fp64(ours, chain_ref, [aa, rest], ups, f"rodrigues_chain {path} B={B}")
    for k in range(3):  # each output alone: the backward's None gradients
        only = [u if i == k else None for i, u in enumerate(ups)]
        compare_fp64(ours, chain_ref, [aa, rest], only, f"rodrigues_chain {path} output {k} alone")


@pytest.mark.parametrize("path", sorted(CHAIN_PATHS))
def test_rodrigues_chain_cpu_other_tree_gradcheck(path):
    op = CHAIN_PATHS[path]
    parents = [-1, 0, 0, 1, 1, 2, 4]  # a level with two parents, one with a repeated parent
    aa, rest = chain_inputs(3, J=7, seed=4)
    ups = chain_upstreams(3, J=7, seed=5)
    compare_fp64(lambda a, j: op(a, j, parents),
                 lambda a, j: rodrigues_chain_torch(a, j, parents), [aa, rest], ups, f"other tree, {path}")
    a, j = aa[:2, :, :].clone().requires_grad_(), rest[:2].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, j: op(a, j, parents), (a, j))
    assert torch.autograd.gradcheck(lambda a, j: op(a, j, parents, need_transforms=False)[1], (a, j))


def test_rodrigues_chain_dispatch(monkeypatch):
    """CPU float32 / float64: the NumPy path; other dtypes and SPIN_FAST_COMPILE=1: the torch path."""
    monkeypatch.delenv(_dispatch.ENV_COMPILE, raising=False)
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    parents = [-1, 0, 0, 1, 1, 2, 4]
    aa, rest = chain_inputs(3, J=7, seed=4)
    R, t, T = rodrigues_chain(aa, rest, parents)
    for want, got in zip(rodrigues_chain_host(aa, rest, parents), (R, t, T)):
        assert torch.equal(got, want)
    assert rodrigues_chain(aa, rest, parents, need_transforms=False)[2] is None
    half = rodrigues_chain(aa.bfloat16(), rest.bfloat16(), parents)  # no NumPy bfloat16: the torch path
    assert half[1].dtype == torch.bfloat16 and relative_error(half[1].double(), t) < 3e-2
    with pytest.raises(ValueError, match="float32 / float64"):
        rodrigues_chain_host(aa.bfloat16(), rest.bfloat16(), parents)


@pytest.mark.parametrize("B", [1, 9])
def test_shaped_rodrigues_chain_matches_reference(B):
    """Rest joints from betas, Rodrigues and the chain in one NumPy op, against the references'
    composition: outputs and gradients w.r.t. betas, global_orient and body_pose, the two accepted
    pose shapes, gradcheck in float64."""
    g = gen(21)
    template = torch.randn(24, 3, generator=g, dtype=torch.float64)
    dirs = 0.1 * torch.randn(24, 3, 10, generator=g, dtype=torch.float64)
    aa, _ = chain_inputs(B, seed=22)
    betas = torch.randn(B, 10, generator=g, dtype=torch.float64)
    ups = chain_upstreams(B, seed=23)

    def ours(b, o, p):
        return shaped_rodrigues_chain_host(b, o, p, template.to(b.dtype), dirs.to(b.dtype), SMPL_PARENTS)

    def ref(b, o, p):
        rest = template.to(b.dtype) + torch.einsum("jcs,bs->bjc", dirs.to(b.dtype), b)
        return rodrigues_chain_torch(torch.cat([o.reshape(-1, 1, 3), p.reshape(-1, 23, 3)], 1), rest, SMPL_PARENTS)

    for orient, pose in ((aa[:, 0], aa[:, 1:].reshape(B, 69)), (aa[:, :1], aa[:, 1:])):
        compare_fp32(ours, ref, [betas, orient, pose], ups, f"shaped chain B={B}")
        compare_fp64(ours, ref, [betas, orient, pose], ups, f"shaped chain B={B}")
    xs = [x[:2].clone().requires_grad_() for x in (betas, aa[:, 0], aa[:, 1:].reshape(B, 69))]
    assert torch.autograd.gradcheck(lambda *a: ours(*a)[1], xs)


@pytest.mark.parametrize("keep", [True, False], ids=["tv_kept", "tv_recomputed"])
def test_skinning_cpu_matches_reference(keep, monkeypatch):
    """Eager blocks of 8 bodies; the backward with the forward's T_v and with T_v recomputed."""
    monkeypatch.setattr(skinning_cpu_module, "KEEP_TV_BYTES", skinning_cpu_module.KEEP_TV_BYTES if keep else 0)
    m = small_model()
    consts = [m[k] for k in ("v_template", "shapedirs", "posedirs", "lbs_weights")]
    B = 11  # eager blocks of 8 bodies: one full, one partial
    g = gen(7)
    R, _, T = rodrigues_chain_torch(0.5 * torch.randn(B, 24, 3, generator=g, dtype=torch.float64),
                                    torch.randn(B, 24, 3, generator=g, dtype=torch.float64), SMPL_PARENTS)
    pf = (R[:, 1:] - torch.eye(3, dtype=torch.float64)).reshape(B, -1)
    betas = torch.randn(B, consts[1].shape[-1], generator=g, dtype=torch.float64)
    up = [torch.randn(B, consts[0].shape[0], 3, generator=g, dtype=torch.float64)]

    def ours(b, p, t):
        c = [x.to(b.dtype) for x in consts]
        return skinning_cpu(b, p, t, skinning_basis(*c))

    def ref(b, p, t):
        return skinning_torch(b, p, t, *[x.to(b.dtype) for x in consts])

    compare_fp32(ours, ref, [betas, pf, T], up, "skinning_cpu")
    compare_fp64(ours, ref, [betas, pf, T], up, "skinning_cpu")
    xs = [x[:1].clone().requires_grad_() for x in (betas, pf, T)]
    assert torch.autograd.gradcheck(lambda *a: ours(*a)[:, :40], xs, fast_mode=True)


@pytest.fixture(scope="module")
def smpl_models():
    smpl, extra, h36m = random_smpl(seed=3)
    return {dt: (BodyModel(smpl, extra, h36m, dtype=dt), smplx_model(smpl, dt), torch.from_numpy(extra).to(dt))
            for dt in (torch.float32, torch.float64)}


def smplx_joints(ref_out, extra, joint_set):
    j45 = ref_out.joints
    if joint_set == "smpl_24":
        return j45[:, :24]
    j54 = torch.cat([j45, torch.einsum("jv,bvc->bjc", extra, ref_out.vertices)], 1)
    return j54[:, SMPL_54_TO_49]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("what", ["mesh", "joints_only-smpl_24", "joints_only-smpl_49"])
def test_body_model_gradients_match_smplx(smpl_models, dtype, what):
    """Outputs and gradients w.r.t. betas, body_pose and global_orient, ours (the torch path) against
    smplx's autograd, with a non-trivial upstream gradient times 2."""
    ours, ref, extra = smpl_models[dtype]
    B = 5
    g = gen(11)
    joint_set = "smpl_24" if what == "mesh" else what.split("-")[1]
    n = 24 if joint_set == "smpl_24" else 49
    up_j = torch.randn(B, n, 3, generator=g, dtype=torch.float64).to(dtype)
    up_v = torch.randn(B, ours.v_template.shape[0], 3, generator=g, dtype=torch.float64).to(dtype)

    def grads(fn):
        xs = [t.clone().requires_grad_(True) for t in random_inputs(B, seed=9, dtype=dtype)[:3]]
        joints, vertices = fn(*xs)
        loss = (joints * up_j).sum() + (0 if vertices is None else (vertices * up_v).sum())
        (2 * loss).backward()
        return [joints.detach()] + ([] if vertices is None else [vertices.detach()]) + [x.grad for x in xs]

    if what == "mesh":
        got = grads(lambda b, p, o: tuple(ours(b, p, o, joint_set=joint_set))[1::-1])
    else:
        got = grads(lambda b, p, o: (ours.joints_only(b, p, o, joint_set=joint_set), None))

    def reference(b, p, o):
        out = ref(betas=b, body_pose=p, global_orient=o)
        return smplx_joints(out, extra, joint_set), out.vertices if what == "mesh" else None

    want = grads(reference)
    for k, (a, b) in enumerate(zip(got, want)):
        err = relative_error(a, b)
        assert err <= TOLERANCE[dtype], f"{what} {dtype} item {k}: relative error {err:.2e}"


def test_compile_switch(monkeypatch):
    """SPIN_FAST_COMPILE=1 swaps in torch.compile twins (built once, not run here); unset: eager."""
    monkeypatch.delenv(_dispatch.ENV_COMPILE, raising=False)
    f = lambda x: x + 1  # noqa: E731
    assert _dispatch.compiled(f) is f
    monkeypatch.setenv(_dispatch.ENV_COMPILE, "1")
    twin = _dispatch.compiled(f)
    assert twin is not f and _dispatch.compiled(f) is twin
    monkeypatch.setenv(_dispatch.ENV_COMPILE, "yes")
    with pytest.raises(ValueError, match="SPIN_FAST_COMPILE"):
        _dispatch.compiled(f)
