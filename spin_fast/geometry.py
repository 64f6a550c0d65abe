"""Rotations, pose flips and camera projection shared by data, SMPLify, training and evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spin_fast.constants import FOCAL_LENGTH, IMG_RES, SMPL_POSE_FLIP
from spin_fast_kernels.kinematic_chain.reference import rodrigues_torch

_CONSTANTS: dict[tuple, torch.Tensor] = {}


def device_constant(values: tuple, device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """A cached copy of the constant `values` (a tuple) on `device`. Building a tensor from host
    values on a GPU is a host-to-device copy the host waits for: a training step must not make one,
    so index lists and masks are copied once per device and reused."""
    device = torch.device(device)
    key = (values, dtype, device.type, device.index)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return t


def axis_angle_to_rotmat(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3)."""
    return rodrigues_torch(axis_angle)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """HMR 6D -> rotation matrices. x: (..., 6) with a1 = x[0,2,4], a2 = x[1,3,5]; R = [b1 b2 b3]."""
    x = x.reshape(*x.shape[:-1], 3, 2)
    a1, a2 = x[..., 0], x[..., 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """Inverse of rot6d_to_rotmat for proper rotations: (..., 3, 3) -> (..., 6)."""
    return R[..., :2].reshape(*R.shape[:-2], 6)


def rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3), via the quaternion (stable near 0 and pi)."""
    m = R.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    q_abs = torch.sqrt(torch.clamp(torch.stack([
        1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1), min=0))
    # Candidate quaternions (w, x, y, z), each scaled by 2*q_k; pick the best-conditioned one.
    cand = torch.stack([
        torch.stack([q_abs[:, 0] ** 2, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], q_abs[:, 1] ** 2, m[:, 1, 0] + m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] + m[:, 0, 1], q_abs[:, 2] ** 2, m[:, 2, 1] + m[:, 1, 2]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 2, 0] + m[:, 0, 2], m[:, 2, 1] + m[:, 1, 2], q_abs[:, 3] ** 2], -1),
    ], 1)
    best = q_abs.argmax(-1, keepdim=True)  # (N, 1); gathers, not a host index (no host-device copy)
    q = cand.gather(1, best[:, :, None].expand(-1, 1, 4))[:, 0] / (2 * q_abs.gather(1, best).clamp(min=1e-8))
    q = torch.where(q[:, :1] < 0, -q, q)
    sin_half = q[:, 1:].norm(dim=-1)
    angle = 2 * torch.atan2(sin_half, q[:, 0])
    scale = torch.where(sin_half > 1e-6, angle / sin_half.clamp(min=1e-12), 2.0 + angle ** 2 / 12)
    return (q[:, 1:] * scale[:, None]).reshape(*R.shape[:-2], 3)


def flip_pose(pose: torch.Tensor) -> torch.Tensor:
    """Mirror SMPL axis-angle poses (..., 72) left-right: permute joints, negate y and z."""
    flipped = pose.index_select(-1, device_constant(tuple(SMPL_POSE_FLIP), pose.device))
    flipped[..., 1::3] *= -1
    flipped[..., 2::3] *= -1
    return flipped


def rotate_global_orient(global_orient: torch.Tensor, rot_deg: torch.Tensor) -> torch.Tensor:
    """Apply the in-plane image rotation (degrees, counter-clockwise in the image) to the root.

    global_orient: (B, 3) axis-angle; rot_deg: (B,). Same convention as SPIN's rot_aa: the rotation
    is about the camera z axis by -rot_deg, composed on the left.
    """
    theta = -torch.deg2rad(rot_deg.to(global_orient.dtype))
    c, s = torch.cos(theta), torch.sin(theta)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    Rz = torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(-1, 3, 3)
    return rotmat_to_axis_angle(Rz @ axis_angle_to_rotmat(global_orient))


def rotate_points_z(points: torch.Tensor, rot_deg: torch.Tensor) -> torch.Tensor:
    """Rotate 3D points (B, J, 3) about the camera z axis by -rot_deg (matches rotate_global_orient)."""
    theta = -torch.deg2rad(rot_deg.to(points.dtype))
    c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    x, y = points[..., 0], points[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y, points[..., 2]], -1)


def weak_perspective_to_translation(cam: torch.Tensor, focal_length: float = FOCAL_LENGTH,
                                    img_res: int = IMG_RES) -> torch.Tensor:
    """HMR camera [s, tx, ty] (B, 3) -> camera translation [tx, ty, 2 f / (img_res s + 1e-9)]."""
    return torch.stack([cam[:, 1], cam[:, 2], 2 * focal_length / (img_res * cam[:, 0] + 1e-9)], dim=-1)


def perspective_projection(points: torch.Tensor, translation: torch.Tensor,
                           focal_length: float | torch.Tensor = FOCAL_LENGTH,
                           center: torch.Tensor | None = None) -> torch.Tensor:
    """Pinhole projection with identity rotation. points (B, J, 3), translation (B, 3),
    center (B, 2) (default: the crop centre img_res/2). Returns pixels (B, J, 2)."""
    p = points + translation[:, None]
    if center is None:
        center = points.new_full((points.shape[0], 2), IMG_RES / 2.0)
    # a Python focal length stays a scalar operand (a tensor of it would be a host-device copy)
    f = focal_length.to(points.dtype).reshape(-1, 1, 1) if torch.is_tensor(focal_length) else float(focal_length)
    return f * p[..., :2] / p[..., 2:3] + center[:, None]

