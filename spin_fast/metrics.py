"""Joint and mesh metrics (the SPIN / mmhuman3d 3DPW protocol), batched in torch. Inputs in metres, outputs
in mm; used by evaluation and by the dataset fitter.

MPJPE: mean Euclidean joint error after both skeletons are centred at the H36M pelvis.
PA-MPJPE: the same after a per-sample similarity Procrustes alignment (scale, rotation with the
reflection fixed, translation) of the prediction onto the ground truth.
PVE: mean vertex error, both meshes centred at their own H36M pelvis (as the joints are).
"""
from __future__ import annotations

import torch

from spin_fast.constants import H36M_PELVIS, H36M_TO_J14


def similarity_procrustes(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Align pred (B, N, 3) to gt (B, N, 3) with the best s R x + t per sample; returns aligned pred.

    Computed in float64: the SVD of a 3x3 covariance is cheap and fp32 loses ~0.01 mm.
    """
    X, Y = pred.double(), gt.double()
    mu_x, mu_y = X.mean(1, keepdim=True), Y.mean(1, keepdim=True)
    X0, Y0 = X - mu_x, Y - mu_y
    var_x = (X0 ** 2).sum((1, 2))
    K = X0.transpose(1, 2) @ Y0  # (B, 3, 3)
    U, S, Vh = torch.linalg.svd(K)
    V = Vh.transpose(1, 2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(1, 2)))
    Z = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = V @ Z @ U.transpose(1, 2)  # maps centred X onto centred Y
    scale = (R @ K).diagonal(dim1=1, dim2=2).sum(-1) / var_x.clamp(min=1e-12)
    aligned = scale[:, None, None] * (X0 @ R.transpose(1, 2)) + mu_y
    return aligned.to(pred.dtype)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-sample mean joint error (B,) in the inputs' unit."""
    return (pred - gt).norm(dim=-1).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return mpjpe(similarity_procrustes(pred, gt), gt)


def h36m_to_j14(joints_h36m: torch.Tensor) -> torch.Tensor:
    """(B, 17, 3) H36M joints -> (B, 14, 3) pelvis-centred evaluation joints."""
    centred = joints_h36m - joints_h36m[:, H36M_PELVIS : H36M_PELVIS + 1]
    return centred[:, H36M_TO_J14]


def pw3d_metrics(pred_h36m: torch.Tensor, gt_h36m: torch.Tensor, pred_vertices: torch.Tensor | None = None,
                 gt_vertices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample MPJPE, PA-MPJPE (and PVE when vertices are given) in mm from H36M-17 joints in metres."""
    p, g = h36m_to_j14(pred_h36m), h36m_to_j14(gt_h36m)
    out = {"mpjpe": 1000 * mpjpe(p, g), "pa_mpjpe": 1000 * pa_mpjpe(p, g)}
    if pred_vertices is not None and gt_vertices is not None:
        pv = pred_vertices - pred_h36m[:, H36M_PELVIS : H36M_PELVIS + 1]
        gv = gt_vertices - gt_h36m[:, H36M_PELVIS : H36M_PELVIS + 1]
        out["pve"] = 1000 * mpjpe(pv, gv)
    return out
