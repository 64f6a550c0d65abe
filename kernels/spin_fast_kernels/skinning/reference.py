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
    v_posed = (
        v_template[None]
        + torch.einsum("bs,vcs->bvc", betas, shapedirs)
        + torch.einsum("bp,vcp->bvc", pose_feature, posedirs)
    )
    T = torch.einsum("vk,bkij->bvij", lbs_weights, transforms)  # (B, V, 3, 4)
    return (T[..., :3] @ v_posed[..., None])[..., 0] + T[..., 3]
