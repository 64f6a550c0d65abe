"""skinning op: SMPL shape + pose blend shapes and linear blend skinning, fused.

`skinning(...)` runs the Triton kernels (forward and hand-written backward) when
`_dispatch.use_triton` says so (CUDA tensors, or SPIN_FAST_BACKEND=triton) and `skinning_cpu`
otherwise (cpu.py: coordinate-major layout, backward written out; its oracle is the reference
`skinning_torch`). `skinning_basis(...)` lays the model arrays out for it once.
"""
from __future__ import annotations

import torch

from .._dispatch import use_triton
from .cpu import SkinningBasis, skinning_basis, skinning_cpu
from .reference import skinning_torch

__all__ = ["SkinningBasis", "skinning", "skinning_basis", "skinning_cpu", "skinning_torch"]


def skinning(
    betas: torch.Tensor,
    pose_feature: torch.Tensor,
    transforms: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    lbs_weights: torch.Tensor,
    basis: SkinningBasis | None = None,
) -> torch.Tensor:
    """betas (B, S); pose_feature (B, 207) = (R[1:] - I) flattened; transforms (B, 24, 3, 4);
    v_template (V, 3); shapedirs (V, 3, S); posedirs (V, 3, 207); lbs_weights (V, 24).
    basis: `skinning_basis` of the same arrays for the torch path (built per call when None).
    Returns vertices (B, V, 3) (on the torch path a view of a coordinate-major tensor).
    Both paths differentiate w.r.t. betas, pose_feature and transforms (the model arrays are
    constants)."""
    from .function import check_skinning_args  # imports triton (not its driver): deferred to the call

    check_skinning_args(betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights)
    if use_triton(betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights):
        from .function import skinning_triton

        return skinning_triton(betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights)
    if basis is None:
        basis = skinning_basis(v_template, shapedirs, posedirs, lbs_weights)
    return skinning_cpu(betas, pose_feature, transforms, basis)
