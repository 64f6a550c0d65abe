"""Joint and mesh metrics (the SPIN / mmhuman3d protocols), batched in torch. Inputs in metres, outputs
in mm (PCK / AUC: joint counts, made percentages by the caller); used by evaluation and by the fitter.

MPJPE: mean Euclidean joint error after both skeletons are centred at the pelvis.
PA-MPJPE: the same after a per-sample similarity Procrustes alignment (scale, rotation with the
reflection fixed, translation) of the prediction onto the ground truth.
PVE: mean vertex error, both meshes centred at their own H36M pelvis (as the joints are).
3D PCK: share of joints within 150 mm; AUC: the mean of the PCK at 0, 5, ..., 150 mm (mmhuman3d
core/evaluation/eval_utils.py keypoint_3d_pck, keypoint_3d_auc); both also after Procrustes alignment.
"""
from __future__ import annotations

import torch

from spin_fast.constants import (AUC_THRESHOLDS_MM, GT_J24_PELVIS, H36M_PELVIS, H36M_TO_J14, H36M_TO_J17,
                                 HUMANDATA_J24_TO_J14, HUMANDATA_J24_TO_J17, PCK_THRESHOLD_MM)


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


def pck_counts(pred: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct within PCK_THRESHOLD_MM, correct summed over the AUC thresholds / their number), both (B,),
    counting only `visible` (B, J) joints; pred, gt (B, J, 3) in mm (float64 recommended)."""
    err = (pred - gt).norm(dim=-1)
    vis = visible.to(err.dtype)
    pck = ((err < PCK_THRESHOLD_MM).to(err.dtype) * vis).sum(-1)
    thr = torch.tensor(AUC_THRESHOLDS_MM, dtype=err.dtype, device=err.device)
    auc = ((err[..., None] < thr).to(err.dtype) * vis[..., None]).sum((-2, -1)) / len(AUC_THRESHOLDS_MM)
    return pck, auc


def keypoint_metrics(pred_h36m: torch.Tensor, gt_j24: torch.Tensor, joints: int = 14,
                     pck: bool = False) -> dict[str, torch.Tensor]:
    """Per-sample metrics of predicted H36M-17 joints (B, 17, 3) against a HumanData file's 24 ground-truth
    joints (B, 24, 4) (x, y, z, confidence; metres), SPIN eval.py's Human3.6M (joints=14) and MPI-INF-3DHP
    (joints=17) protocol.

    Both skeletons are pelvis-centred (the prediction at its H36M pelvis, the ground truth at its
    'Pelvis (MPII)', which the converters already made the origin), then the 14 / 17 evaluation joints
    taken (H36M_TO_J17; HUMANDATA_J24_TO_J17, see constants). MPJPE and PA-MPJPE (mm) count every
    joint whatever its confidence, as SPIN does (eval.py drops the confidence column and mmhuman3d's
    HumanImageDataset evaluates with an all-ones mask): a missing joint counts at its stored coordinates.
    With pck: '3dpck', 'pa_3dpck' (joints within 150 mm), '3dauc', 'pa_3dauc' (that count averaged over
    the 31 AUC thresholds) and 'visible' (joints with confidence > 0): mmhuman3d's keypoint_3d_pck /
    keypoint_3d_auc, whose mask leaves out invisible joints from the counts but not from the Procrustes
    alignment; the dataset's percentage is 100 * sum(count) / sum(visible) (pooled over all joints, as
    mmhuman3d's `error[mask].mean()`)."""
    h36m_map, gt_map = (H36M_TO_J14, HUMANDATA_J24_TO_J14) if joints == 14 else (H36M_TO_J17, HUMANDATA_J24_TO_J17)
    p = (pred_h36m - pred_h36m[:, H36M_PELVIS : H36M_PELVIS + 1])[:, h36m_map].double() * 1000
    xyz = gt_j24[..., :3]
    g = (xyz - xyz[:, GT_J24_PELVIS : GT_J24_PELVIS + 1])[:, gt_map].double() * 1000
    aligned = similarity_procrustes(p, g)
    out = {"mpjpe": mpjpe(p, g), "pa_mpjpe": mpjpe(aligned, g)}
    if pck:
        visible = gt_j24[:, gt_map, 3] > 0
        out["3dpck"], out["3dauc"] = pck_counts(p, g, visible)
        out["pa_3dpck"], out["pa_3dauc"] = pck_counts(aligned, g, visible)
        out["visible"] = visible.sum(-1).double()
    return out
