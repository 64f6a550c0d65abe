"""skinning op (linear blend skinning of the shaped, pose-corrected template): Triton kernels vs the
torch reference, forward and every gradient, gradcheck of both in float64, odd strides and sizes,
and bad inputs (tolerances: tests/kernel_checks.py)."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import DEVICES, assert_close64, batches, compare_fp32, compare_fp64, gen, pose_inputs, small_model
from kernel_checks import model64, one_torch_thread  # noqa: F401  (fixtures)
from spin_fast_kernels.skinning import skinning, skinning_torch
from spin_fast_kernels.skinning.function import skinning_triton


MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "lbs_weights")


@pytest.mark.parametrize("device", DEVICES)
def test_skinning_fp32_matches_reference(triton_backend, device):
    """V = 70: 2 full vertex tiles of 32 and a masked one (6890: tests/test_gpu_kernels.py)."""
    model = small_model(V=70, seed=5)
    consts = [model[k].to(device) for k in MODEL_KEYS]
    V = consts[0].shape[0]
    for B in batches(device):
        inputs = pose_inputs(B, device, seed=B)
        up = torch.randn(B, V, 3, generator=gen(B + 1), dtype=torch.float64).to(device)
        compare_fp32(skinning, skinning_torch, inputs + consts, [up], f"skinning B={B}",
                     grad_mask=[True, True, True, False, False, False, False])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nsplit", [None, 1, 3])
def test_skinning_fp64_any_split(triton_backend, device, nsplit):
    """nsplit: None = one vertex tile a program; 1 = one program walks them all; 3 = strided (4 tiles).
    One body block (two, with one split a tile: the fp32 test)."""
    model = small_model(V=100, seed=1)
    consts = [model[k].to(device) for k in MODEL_KEYS]
    B = 3
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
