"""Camera translation of a posed body from 2D keypoints by weighted least squares (batched).

SPIN's `estimate_translation`, for a whole batch at once. With the body's joints (X, Y, Z) in the
camera frame before translation, the pinhole projection u = f (X + t_x) / (Z + t_z) + c_x is linear in
t once multiplied out, giving two rows a joint (docs/spin.md "Fits in the loop"):
    [f, 0, c_x - u] . t = (u - c_x) Z - f X
    [0, f, c_y - v] . t = (v - c_y) Z - f Y
Each row is weighted by sqrt(conf) and the 3x3 normal equations are solved per sample in float64
(the columns differ in scale by f ~ 5000, float32 would lose ~1e-3 of t_z).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from spin_fast.constants import FOCAL_LENGTH, IMG_RES, SPIN_GT_JOINTS
from spin_fast.geometry import device_constant

DEFAULT_CAMERA_SCALE = 0.9  # weak-perspective scale of the fallback translation (HMR's mean camera)


class CameraEstimate(NamedTuple):
    translation: torch.Tensor  # (B, 3)
    valid: torch.Tensor  # (B,) bool: False where the system was singular and the fallback was used


def default_translation(batch_size: int, focal_length: float = FOCAL_LENGTH, img_res: int = IMG_RES,
                        device=None, dtype=torch.float32) -> torch.Tensor:
    """[0, 0, 2 f / (img_res s)] with the mean weak-perspective scale s: a body filling the crop."""
    t = torch.zeros(batch_size, 3, device=device, dtype=dtype)
    t[:, 2] = 2 * focal_length / (img_res * DEFAULT_CAMERA_SCALE)
    return t


def estimate_camera_translation(
    joints3d: torch.Tensor,
    keypoints2d: torch.Tensor,
    focal_length: float = FOCAL_LENGTH,
    img_res: int = IMG_RES,
    joint_subset: Sequence[int] | None = SPIN_GT_JOINTS,
    fallback: torch.Tensor | None = None,
) -> CameraEstimate:
    """joints3d (B, J, 3) body joints (no translation); keypoints2d (B, J, 3) crop pixels + confidence.

    Uses the joints in `joint_subset` (None = all). Returns the translation (B, 3) in joints3d's dtype
    and a validity flag (B,): samples with fewer than two joints of positive confidence, or whose
    system is singular or non-finite, get `fallback` (B, 3) (default: `default_translation`).
    """
    if joint_subset is not None:
        idx = device_constant(tuple(joint_subset), joints3d.device)
        joints3d = joints3d.index_select(1, idx)
        keypoints2d = keypoints2d.index_select(1, idx)
    B = joints3d.shape[0]
    S = joints3d.double()
    uv = keypoints2d[..., :2].double()
    conf = keypoints2d[..., 2].double()
    finite_in = torch.isfinite(S).all(-1) & torch.isfinite(keypoints2d).all(-1)  # (B, J)
    w = torch.where(finite_in & (conf > 0), conf, torch.zeros_like(conf))  # sqrt(conf)^2 per row
    S = torch.where(finite_in[..., None], S, torch.zeros_like(S))
    uv = torch.where(finite_in[..., None], uv, torch.zeros_like(uv))
    c = img_res / 2.0
    f = float(focal_length)
    # 1. Rows of Q (B, J, 2, 3) and right-hand sides (B, J, 2).
    d = c - uv  # (B, J, 2): the third column, c - u and c - v
    zeros = torch.zeros_like(d[..., 0])
    row_x = torch.stack([torch.full_like(zeros, f), zeros, d[..., 0]], -1)
    row_y = torch.stack([zeros, torch.full_like(zeros, f), d[..., 1]], -1)
    Q = torch.stack([row_x, row_y], -2)  # (B, J, 2, 3)
    rhs = -d * S[..., 2:3] - f * S[..., :2]  # (u - c) Z - f X
    # 2. Weighted normal equations A t = b with A = Q^T W Q, b = Q^T W rhs.
    Qw = Q * w[..., None, None]
    A = torch.einsum("bjri,bjrk->bik", Qw, Q)
    b = torch.einsum("bjri,bjr->bi", Qw, rhs)
    # 3. Singular samples solve an identity system instead (no error, no NaN), then take the fallback.
    enough = (w > 0).sum(1) >= 2
    eye = torch.eye(3, dtype=A.dtype, device=A.device).expand(B, 3, 3)
    A = torch.where(enough[:, None, None], A, eye)
    t, info = torch.linalg.solve_ex(A, b[..., None])
    t = t[..., 0]
    valid = enough & (info == 0) & torch.isfinite(t).all(-1)
    if fallback is None:
        fallback = default_translation(B, focal_length, img_res, device=joints3d.device, dtype=t.dtype)
    t = torch.where(valid[:, None], t, fallback.to(t.dtype))
    return CameraEstimate(t.to(joints3d.dtype), valid)
