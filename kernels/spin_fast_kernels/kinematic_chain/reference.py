"""Rodrigues and the SMPL kinematic chain in plain torch: the oracle and the CPU path.

Math (smplx.lbs.batch_rodrigues / batch_rigid_transform):
    R = I + sin(a) K + (1 - cos(a)) K^2,  a = |v + 1e-8|, K = skew(v / a)
    G_0 = [R_0 | J_0],  G_i = G_parent(i) [R_i | J_i - J_parent(i)]
    posed_joints_i = translation of G_i;  transforms_i = G_i with translation t_i - R_world,i J_i
so that a rest-pose point x moves to transforms_i[:, :3] x + transforms_i[:, 3].
"""
from __future__ import annotations

from typing import Sequence

import torch


def rodrigues_torch(axis_angle: torch.Tensor) -> torch.Tensor:
    """axis_angle: (..., 3) -> rotation matrices (..., 3, 3). Same eps convention as smplx."""
    shape = axis_angle.shape[:-1]
    v = axis_angle.reshape(-1, 3)
    angle = torch.norm(v + 1e-8, dim=1, keepdim=True)  # (N, 1)
    axis = v / angle
    cos = torch.cos(angle)[:, :, None]
    sin = torch.sin(angle)[:, :, None]
    rx, ry, rz = axis[:, 0], axis[:, 1], axis[:, 2]
    zeros = torch.zeros_like(rx)
    K = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)[None]
    R = eye + sin * K + (1 - cos) * torch.bmm(K, K)
    return R.reshape(*shape, 3, 3)


def kinematic_chain_torch(
    rotmats: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics down a tree whose parents come before their children.

    rotmats: (B, J, 3, 3) local rotations; rest_joints: (B, J, 3); parents: J ints, parents[0] = -1.
    Returns posed_joints (B, J, 3) and transforms (B, J, 3, 4) relative to the rest pose.
    """
    B, J = rotmats.shape[:2]
    parents = list(parents)
    chain_R = [rotmats[:, 0]]
    chain_t = [rest_joints[:, 0]]
    for i in range(1, J):
        p = parents[i]
        rel = rest_joints[:, i] - rest_joints[:, p]  # integer indices: no index tensor to copy to a GPU
        chain_R.append(chain_R[p] @ rotmats[:, i])
        chain_t.append(chain_t[p] + (chain_R[p] @ rel[:, :, None])[..., 0])
    R_world = torch.stack(chain_R, dim=1)  # (B, J, 3, 3)
    posed_joints = torch.stack(chain_t, dim=1)  # (B, J, 3)
    t_rel = posed_joints - (R_world @ rest_joints[..., None])[..., 0]
    transforms = torch.cat([R_world, t_rel[..., None]], dim=-1)
    return posed_joints, transforms
