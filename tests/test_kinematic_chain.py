"""kinematic_chain op (rodrigues, kinematic_chain and the fused rodrigues_chain): Triton kernels vs the
torch references, forward and every gradient, gradcheck of both in float64, hand-worked values, and
the per-call backend choice (tolerances: tests/kernel_checks.py)."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import DEVICES, batches, compare_fp32, compare_fp64, gen
from kernel_checks import one_torch_thread  # noqa: F401  (autouse fixture)
from spin_fast.constants import SMPL_PARENTS
from spin_fast_kernels.kinematic_chain import (
    kinematic_chain,
    kinematic_chain_torch,
    rodrigues,
    rodrigues_chain,
    rodrigues_chain_torch,
    rodrigues_torch,
)


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
    """Under the interpreter B = 33: a program of 32 bodies and a masked one (one partly filled program
    alone: the fp64 and gradcheck tests)."""
    for B in batches(device, extra=[33], cpu=[33]):
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
    """The fused op against rodrigues_torch -> kinematic_chain_torch, all three outputs used; under the
    interpreter B = 33: a program of 32 bodies and a masked one (B = 1: test_gpu_kernels.py's
    interpreter row)."""
    for B in batches(device, cpu=[33]):
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
    # gradcheck on the first 4 joints (a chain of 3 and a branch off the root): the interpreter's
    # chain kernels cost about linearly in the joints, and gradcheck launches them ~20 times
    sub = lambda a, j: rodrigues_chain(a, j, parents[:4])  # noqa: E731
    args = (aa[:, :4].clone().requires_grad_(True), rest[:, :4].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(sub, args, fast_mode=True)
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
