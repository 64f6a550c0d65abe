"""Each loss term of both presets against the upstream formulas, written out here in float64 numpy.

mmhuman3d @ 8c95747, models/architectures/mesh_estimator.py (the SPIN cache config collects no
has_keypoints2d/3d): keypoint losses are sum(conf * loss) / #(entries with conf > 0) over all 49
joints; vertex / pose / betas losses average the valid fits' entries. SPIN @ 2476c43,
train/trainer.py: keypoint losses are (conf * MSE).mean() (2D over every entry with OpenPose weight 0,
3D over the 24 GT joints of the samples with 3D); shape / SMPL losses index the valid fits out.
"""
import math

import numpy as np
import pytest
import torch

from spin_fast.train import losses as L
from spin_fast.recipes import recipe

RES = 224


def _smooth_l1(d):
    a = np.abs(d)
    return np.where(a < 1.0, 0.5 * a * a, a - 0.5)


def _rodrigues(aa):
    """(N, 3) axis-angle -> (N, 3, 3), the textbook formula."""
    out = []
    for v in aa:
        th = np.linalg.norm(v)
        if th < 1e-12:
            out.append(np.eye(3))
            continue
        k = v / th
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        out.append(np.eye(3) + math.sin(th) * K + (1 - math.cos(th)) * K @ K)
    return np.stack(out)


# --- upstream arithmetic ---------------------------------------------------------------------------
def mmh_kp2d(pred_px, gt):
    """compute_keypoints2d_loss, has_keypoints2d None: projections (centre origin) 2p/(res-1),
    labels 2x/(res-1) - 1, SmoothL1, conf repeated over x/y, sum / count(conf > 0)."""
    total, n = 0.0, 0
    for b in range(gt.shape[0]):
        for j in range(49):
            c = gt[b, j, 2]
            for d in range(2):
                p = 2 * (pred_px[b, j, d] - RES / 2) / (RES - 1)
                g = 2 * gt[b, j, d] / (RES - 1) - 1
                total += c * _smooth_l1(p - g)
                n += c > 0
    return total / n if n else 0.0


def spin_kp2d(pred_px, gt):
    """Trainer.keypoint_loss: conf[:, :25] *= openpose_train_weight (0), conf[:, 25:] *= 1,
    (conf * MSE(pred / (res/2), 2x/res - 1)).mean() over B x 49 x 2."""
    total = 0.0
    for b in range(gt.shape[0]):
        for j in range(49):
            c = gt[b, j, 2] * (0.0 if j < 25 else 1.0)
            for d in range(2):
                total += c * ((pred_px[b, j, d] - RES / 2) / (RES / 2) - (2 * gt[b, j, d] / RES - 1)) ** 2
    return total / (gt.shape[0] * 49 * 2)


def mmh_kp3d(pred, gt):
    """compute_keypoints3d_loss, has_keypoints3d None: centre at right/left_hip_extra (27, 28),
    SmoothL1, conf repeated over xyz, sum / count(conf > 0)."""
    total, n = 0.0, 0
    for b in range(gt.shape[0]):
        gp = (gt[b, 27, :3] + gt[b, 28, :3]) / 2
        pp = (pred[b, 27] + pred[b, 28]) / 2
        for j in range(49):
            c = gt[b, j, 3]
            for d in range(3):
                total += c * _smooth_l1((pred[b, j, d] - pp[d]) - (gt[b, j, d] - gp[d]))
                n += c > 0
    return total / n if n else 0.0


def spin_kp3d(pred, gt, has):
    """Trainer.keypoint_3d_loss: pred[:, 25:], the samples with has_pose_3d, centred at GT joints 2, 3
    (of the 24), (conf * MSE).mean(); 0 when no sample has 3D."""
    rows = [b for b in range(gt.shape[0]) if has[b]]
    if not rows:
        return 0.0
    total = 0.0
    for b in rows:
        g, p = gt[b, 25:], pred[b, 25:]
        gp, pp = (g[2, :3] + g[3, :3]) / 2, (p[2] + p[3]) / 2
        for j in range(24):
            for d in range(3):
                total += g[j, 3] * ((p[j, d] - pp[d]) - (g[j, d] - gp[d])) ** 2
    return total / (len(rows) * 24 * 3)


def valid_mean(err, valid):
    """Both codebases: mmhuman3d sum(loss * has_smpl) / count, SPIN criterion(x[valid], y[valid])."""
    rows = [err[b] for b in range(err.shape[0]) if valid[b]]
    return float(np.mean(np.stack(rows))) if rows else 0.0


# --- the batch -------------------------------------------------------------------------------------
def _batch(seed=0, has=(True, True, False, False), valid=(True, False, True, False)):
    rng = np.random.default_rng(seed)
    B = len(has)
    gt2d = np.zeros((B, 49, 3))
    gt2d[..., :2] = rng.uniform(0, RES, (B, 49, 2))
    gt2d[..., 2] = rng.choice([0.0, 0.3, 1.0], (B, 49))  # partial confidences, OpenPose ones included
    gt2d[0, :25, 2] = 0.0  # one sample without OpenPose detections
    gt2d[1, 2:6, 2] = 0.7
    pred_px = gt2d[..., :2] + rng.normal(0, 8, (B, 49, 2))  # some residuals beyond SmoothL1's knee
    pred_px[-1, 30] += 300.0
    gt3d = np.zeros((B, 49, 4))
    pred3d = rng.normal(0, 0.4, (B, 49, 3))
    for b in range(B):
        if has[b]:
            gt3d[b, :, :3] = rng.normal(0, 0.4, (49, 3))
            gt3d[b, 25:, 3] = rng.choice([0.0, 1.0], 24, p=[0.2, 0.8])
            gt3d[b, 27:29, 3] = 1.0
    if has[0]:
        gt3d[0, 3:6, 3] = 1.0  # OpenPose 3D joints with confidence: mmhuman3d counts them, SPIN never
    pred3d[0, 40] += 2.5  # beyond SmoothL1's knee
    V = 7
    verts = rng.normal(0, 1, (B, V, 3))
    target_v = rng.normal(0, 1, (B, V, 3))
    pose_aa = rng.normal(0, 0.5, (B, 72))
    pred_R = _rodrigues(rng.normal(0, 0.5, (B * 24, 3))).reshape(B, 24, 3, 3)
    betas, target_b = rng.normal(0, 1, (B, 10)), rng.normal(0, 1, (B, 10))
    return dict(gt2d=gt2d, pred_px=pred_px, gt3d=gt3d, pred3d=pred3d, has=np.array(has), valid=np.array(valid),
                verts=verts, target_v=target_v, pose_aa=pose_aa, pred_R=pred_R, betas=betas, target_b=target_b)


def _upstream_terms(d, preset):
    R_t = _rodrigues(d["pose_aa"].reshape(-1, 3)).reshape(-1, 24, 3, 3)
    shared = {
        "vertices": valid_mean(np.abs(d["verts"] - d["target_v"]), d["valid"]),
        "pose": valid_mean((d["pred_R"] - R_t) ** 2, d["valid"]),
        "betas": valid_mean((d["betas"] - d["target_b"]) ** 2, d["valid"]),
    }
    if preset == "mmhuman3d":
        return {"keypoints2d": mmh_kp2d(d["pred_px"], d["gt2d"]), "keypoints3d": mmh_kp3d(d["pred3d"], d["gt3d"]), **shared}
    return {"keypoints2d": spin_kp2d(d["pred_px"], d["gt2d"]), "keypoints3d": spin_kp3d(d["pred3d"], d["gt3d"], d["has"]),
            **shared}


def _spin_fast_terms(d, preset):
    w = recipe(preset).loss
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in d.items()}
    has = torch.tensor(d["has"])
    valid = torch.tensor(d["valid"])
    out = {
        "keypoints2d": L.keypoints2d_loss(t["pred_px"], t["gt2d"], RES, w.criterion, w.openpose_2d, w.averaging),
        "keypoints3d": L.keypoints3d_loss(t["pred3d"], t["gt3d"], has, w.criterion, w.averaging),
        "vertices": L.vertex_loss(t["verts"], t["target_v"], valid),
    }
    out["pose"], out["betas"] = L.smpl_param_losses(t["pred_R"], t["betas"], t["pose_aa"], t["target_b"], valid)
    return {k: v.item() for k, v in out.items()}


BATCHES = {
    "mixed": {},
    "all_fits_invalid": dict(valid=(False, False, False, False)),
    "no_3d_sample": dict(has=(False, False, False, False)),
    "all_3d_all_valid": dict(has=(True, True, True), valid=(True, True, True)),
}


@pytest.mark.parametrize("preset", ["mmhuman3d", "spin"])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_each_term_matches_the_upstream_formula(preset, batch):
    d = _batch(seed=len(batch), **BATCHES[batch])
    want = _upstream_terms(d, preset)
    got = _spin_fast_terms(d, preset)
    for k in want:
        assert math.isclose(got[k], want[k], rel_tol=1e-9, abs_tol=1e-12), (k, got[k], want[k])
    if batch == "all_fits_invalid":
        assert got["vertices"] == got["pose"] == got["betas"] == 0.0
    if batch == "no_3d_sample":
        assert got["keypoints3d"] == 0.0
    if batch == "mixed":
        assert all(v > 0 for v in got.values())


def test_the_presets_differ_where_the_codebases_do():
    """The mixed batch has OpenPose confidences in 2D and 3D and zero-confidence entries: mmhuman3d's
    count-of-positive normalisation and its OpenPose joints give other numbers than SPIN's means."""
    d = _batch()
    mmh, spin = _upstream_terms(d, "mmhuman3d"), _upstream_terms(d, "spin")
    assert abs(mmh["keypoints3d"] - spin["keypoints3d"]) > 1e-3
    # mmhuman3d's 2D term weights OpenPose joints: removing their confidence changes it, SPIN's not
    d2 = dict(d, gt2d=d["gt2d"].copy())
    d2["gt2d"][:, :25, 2] = 0.0
    assert abs(mmh_kp2d(d2["pred_px"], d2["gt2d"]) - mmh["keypoints2d"]) > 1e-4
    assert spin_kp2d(d2["pred_px"], d2["gt2d"]) == pytest.approx(spin["keypoints2d"], rel=1e-12)
    assert _spin_fast_terms(d2, "spin")["keypoints2d"] == pytest.approx(spin["keypoints2d"], rel=1e-9)


@pytest.mark.parametrize("preset", ["mmhuman3d", "spin"])
def test_total_uses_the_upstream_weights(preset):
    """mmhuman3d's config weights (100, 10, 2, 3, 0.02, 60 on the camera prior); SPIN's
    60 * (5 L2d + 5 L3d + 0 Lshape + Lpose + 0.001 Lbetas + Lcam)."""
    d = _batch()
    want = _upstream_terms(d, preset)
    cam = torch.tensor([[0.9, 0.0, 0.0], [0.05, 0.1, 0.2]], dtype=torch.float64)
    want["camera"] = float(np.mean(np.exp(-10 * cam[:, 0].numpy()) ** 2))
    if preset == "mmhuman3d":
        expected = (100 * want["keypoints3d"] + 10 * want["keypoints2d"] + 2 * want["vertices"] + 3 * want["pose"]
                    + 0.02 * want["betas"] + 60 * want["camera"])
    else:
        expected = 60 * (5 * want["keypoints2d"] + 5 * want["keypoints3d"] + want["pose"] + 0.001 * want["betas"]
                         + want["camera"])
    terms = {k: torch.tensor(v, dtype=torch.float64) for k, v in _spin_fast_terms(d, preset).items()}
    terms["camera"] = L.camera_prior(cam)
    assert L.total_loss(terms, recipe(preset).loss).item() == pytest.approx(expected, rel=1e-9)


def test_losses_are_finite_and_differentiable_when_nothing_is_selected():
    d = _batch(has=(False, False, False), valid=(False, False, False))
    t = {k: torch.tensor(v, dtype=torch.float32, requires_grad=k in ("pred3d", "verts", "pred_R", "betas"))
         for k, v in d.items() if k not in ("has", "valid")}
    no = torch.zeros(3, dtype=torch.bool)
    for conv in ("mmhuman3d", "spin"):
        total = (L.keypoints3d_loss(t["pred3d"], t["gt3d"], no, "mse", conv) + L.vertex_loss(t["verts"], t["target_v"], no)
                 + sum(L.smpl_param_losses(t["pred_R"], t["betas"], t["pose_aa"], t["target_b"], no)))
        total.backward()
        assert total.item() == 0.0
        for k in ("pred3d", "verts", "pred_R", "betas"):
            assert torch.equal(t[k].grad, torch.zeros_like(t[k])), k
            t[k].grad = None
    with pytest.raises(ValueError, match="convention"):
        L.keypoints3d_loss(t["pred3d"], t["gt3d"], no, "mse", "other")
