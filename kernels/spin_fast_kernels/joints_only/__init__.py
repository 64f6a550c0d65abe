"""joints_only op: joints of the skinned SMPL mesh without building it (the folded regressor).

`joints_only(...)` runs the Triton kernels (forward and hand-written backward) when
`_dispatch.use_triton` says so (CUDA tensors, or SPIN_FAST_BACKEND=triton) and the torch reference
`joints_only_torch` otherwise. Fold a regressor once with `fold_regressor(...)`.
"""
from __future__ import annotations

import torch

from .._dispatch import use_triton
from .reference import fold_regressor, joints_only_torch

__all__ = ["fold_regressor", "joints_only", "joints_only_torch"]


def joints_only(
    betas: torch.Tensor,
    pose_feature: torch.Tensor,
    transforms: torch.Tensor,
    coeffs: torch.Tensor,
    bone_weight: torch.Tensor,
    pair_joint: torch.Tensor,
    pair_bone: torch.Tensor,
    num_joints: int,
) -> torch.Tensor:
    """betas (B, S); pose_feature (B, 207) = (R[1:] - I) flattened; transforms (B, 24, 3, 4);
    coeffs (P, 3, 1 + S + 207), bone_weight (P,), pair_joint (P,), pair_bone (P,) from
    `fold_regressor` (any pair order). Returns joints (B, num_joints, 3). The Triton path
    differentiates w.r.t. betas, pose_feature and transforms (the folded terms are constants)."""
    from .function import check_joints_only_args  # imports triton (not its driver): deferred to the call

    check_joints_only_args(betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone, num_joints)
    if use_triton(betas, pose_feature, transforms, coeffs, bone_weight):
        from .function import joints_only_triton

        return joints_only_triton(betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone,
                                  num_joints)
    return joints_only_torch(betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone,
                             num_joints)
