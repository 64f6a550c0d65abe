"""Joints of a skinned mesh without building the mesh: the folded regressor, in plain torch.

A joint regressed from skinned vertices, joint_j = sum_v r_jv sum_b w_vb (R_b v_posed_v + t_b),
is linear in x = [1, betas, pose_feature] (1 + S + 207) inside each bone b, so it folds into
    coeffs[j, b] = sum_v r_jv w_vb [v_template_v | shapedirs_v | posedirs_v]   (3, 1 + S + 207)
    bone_weight[j, b] = sum_v r_jv w_vb
    joint_j = sum_b R_b (coeffs[j, b] x) + t_b bone_weight[j, b]
Only the (joint, bone) pairs with a non-zero term are kept: `pair_joint`, `pair_bone` list them,
sorted by joint.
"""
from __future__ import annotations

import torch


def fold_regressor(
    regressor: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    lbs_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """regressor (J, V) (landmark vertices are one-hot rows) -> coeffs (P, 3, 1+S+207),
    bone_weight (P,), pair_joint (P,) int64, pair_bone (P,) int64. Computed in float64."""
    dt = torch.float64
    r = regressor.to(dt)
    w = lbs_weights.to(dt)
    basis = torch.cat([v_template.to(dt)[..., None], shapedirs.to(dt), posedirs.to(dt)], dim=-1)  # (V,3,K)
    rw = r[:, :, None] * w[None]  # (J, V, 24)
    bone_weight = rw.sum(1)  # (J, 24)
    coeffs = torch.einsum("jvb,vck->jbck", rw, basis)  # (J, 24, 3, K)
    keep = (rw != 0).any(1)  # (J, 24) bones that touch the joint
    pair_joint, pair_bone = keep.nonzero(as_tuple=True)
    return coeffs[pair_joint, pair_bone], bone_weight[pair_joint, pair_bone], pair_joint, pair_bone


def joints_only_torch(
    betas: torch.Tensor,
    pose_feature: torch.Tensor,
    transforms: torch.Tensor,
    coeffs: torch.Tensor,
    bone_weight: torch.Tensor,
    pair_joint: torch.Tensor,
    pair_bone: torch.Tensor,
    num_joints: int,
) -> torch.Tensor:
    """betas (B, S); pose_feature (B, 207); transforms (B, 24, 3, 4); folded terms from
    `fold_regressor`. Returns joints (B, num_joints, 3)."""
    B = betas.shape[0]
    x = torch.cat([betas.new_ones(B, 1), betas, pose_feature], dim=1)  # (B, K)
    local = torch.einsum("pck,bk->bpc", coeffs, x)  # (B, P, 3)
    T = transforms[:, pair_bone]  # (B, P, 3, 4)
    per_pair = (T[..., :3] @ local[..., None])[..., 0] + T[..., 3] * bone_weight[None, :, None]
    out = per_pair.new_zeros(B, num_joints, 3)
    return out.index_add_(1, pair_joint, per_pair)
