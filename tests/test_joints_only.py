"""joints_only op (the joints of the skinned mesh without the mesh): Triton kernels vs the torch
reference, forward and every gradient, gradcheck of both in float64, odd strides and bad inputs, and
agreement with regressing the skinning op's vertices (tolerances: tests/kernel_checks.py)."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import (DEVICES, assert_close64, batches, compare_fp32, compare_fp64, folded, gen, pose_inputs,
                           small_model)
from kernel_checks import model64, one_torch_thread  # noqa: F401  (fixtures)
from spin_fast_kernels.joints_only import joints_only, joints_only_torch
from spin_fast_kernels.joints_only.function import joints_only_triton
from spin_fast_kernels.skinning import skinning


def test_folded_model_has_masked_pair_chunks(model64):
    P = folded(model64, "cpu")[0].shape[0]
    assert P > 32 and P % 32, f"pick a model whose {P} pairs span several partly-filled chunks"


@pytest.mark.parametrize("device", DEVICES)
def test_joints_only_fp32_matches_reference(triton_backend, model64, device):
    """The 200-vertex model's 6 joints (the stand-in's smpl_49 at 6890 vertices: tests/test_gpu_kernels.py)."""
    consts = folded(model64, device)
    J = model64["regressor"].shape[0]
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


def test_joints_only_equals_regressed_skinned_vertices(triton_backend, model64):
    """The two Triton ops agree with each other: folded joints = regressor . skinned mesh, and so do
    their gradients."""
    consts = [model64[k] for k in ("v_template", "shapedirs", "posedirs", "lbs_weights")]
    coeffs, bw, pj, pb = folded(model64, "cpu")
    J = model64["regressor"].shape[0]
    inputs = pose_inputs(3, "cpu", seed=12)
    up = torch.randn(3, J, 3, generator=gen(13), dtype=torch.float64)
    via_mesh = lambda b, f, t: torch.einsum("jv,bvc->bjc", model64["regressor"], skinning(b, f, t, *consts))  # noqa
    folded_fn = lambda b, f, t: joints_only(b, f, t, coeffs, bw, pj, pb, J)  # noqa: E731
    compare_fp64(folded_fn, via_mesh, inputs, [up], "joints_only vs regressor . skinning")
