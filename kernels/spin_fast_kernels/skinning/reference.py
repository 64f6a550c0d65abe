"""SMPL shape + pose blend shapes and linear blend skinning in plain torch (the oracle, the CPU path).

Math (smplx.lbs.lbs, vertices only):
    v_posed_v = v_template_v + shapedirs_v . betas + posedirs_v . pose_feature       (3,)
    vertices_v = sum_b w_vb (transforms_b[:, :3] v_posed_v + transforms_b[:, 3])
"""
from __future__ import annotations

import torch


def skinning_torch(
    betas: torch.Tensor,
    pose_feature: torch.Tensor,
    transforms: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    lbs_weights: torch.Tensor,
) -> torch.Tensor:
    """betas (B, S); pose_feature (B, 207) = (R[1:] - I) flattened; transforms (B, 24, 3, 4);
    v_template (V, 3); shapedirs (V, 3, S); posedirs (V, 3, 207); lbs_weights (V, 24).
    Returns vertices (B, V, 3)."""
    B, V, K = betas.shape[0], v_template.shape[0], transforms.shape[1]
    # plain matmuls over (V*3)-long rows: the (V, 3, n) model arrays are read in place (no transposed
    # copy, which einsum makes), the slowest part of the CPU path
    v_posed = (v_template.reshape(1, V * 3) + betas @ shapedirs.reshape(V * 3, -1).T
               + pose_feature @ posedirs.reshape(V * 3, -1).T).reshape(B, V, 3)
    T = (lbs_weights @ transforms.reshape(B, K, 12)).reshape(B * V, 3, 4)  # per-vertex blended transforms
    v_homo = torch.cat([v_posed, v_posed.new_ones(B, V, 1)], dim=-1).reshape(B * V, 4, 1)
    return torch.bmm(T, v_homo).reshape(B, V, 3)  # one product: no zero-filled slice gradients of T
