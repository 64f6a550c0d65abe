"""Metrics against hand-worked examples."""
import math

import pytest
import torch

from spin_fast.metrics import h36m_to_j14, mpjpe, pa_mpjpe, pw3d_metrics, similarity_procrustes


def _rot_z(deg):
    t = math.radians(deg)
    return torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


@pytest.fixture
def skeleton():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 17, 3, generator=g, dtype=torch.float64) * 0.3


def test_identity_scores_zero(skeleton):
    m = pw3d_metrics(skeleton, skeleton, skeleton, skeleton)
    for v in m.values():
        assert torch.allclose(v, torch.zeros(3, dtype=torch.float64), atol=1e-9)


def test_known_translation_is_removed_by_pelvis_centering(skeleton):
    moved = skeleton + torch.tensor([0.1, -0.2, 3.0], dtype=torch.float64)
    m = pw3d_metrics(moved, skeleton)
    assert m["mpjpe"].abs().max() < 1e-9 and m["pa_mpjpe"].abs().max() < 1e-9


def test_single_joint_offset_hand_worked():
    gt = torch.zeros(1, 4, 3, dtype=torch.float64)
    pred = gt.clone()
    pred[0, 2] = torch.tensor([0.0, 0.003, 0.004])  # one joint 5 mm off, four joints
    assert mpjpe(pred, gt).item() == pytest.approx(0.005 / 4)


def test_rotation_and_scale_give_zero_pa_but_not_mpjpe(skeleton):
    j14 = h36m_to_j14(skeleton)
    transformed = 1.3 * j14 @ _rot_z(40).T + torch.tensor([0.5, 0.0, 0.2], dtype=torch.float64)
    assert pa_mpjpe(transformed, j14).abs().max() < 1e-9
    assert mpjpe(transformed, j14).min() > 0.05
    aligned = similarity_procrustes(transformed, j14)
    assert torch.allclose(aligned, j14, atol=1e-9)


def test_procrustes_does_not_reflect():
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(1, 14, 3, generator=g, dtype=torch.float64)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    # a mirror image cannot be undone by a proper rotation: the error must stay positive
    assert pa_mpjpe(mirrored, gt).item() > 1e-3


def test_pa_mpjpe_matches_a_brute_force_similarity_fit():
    # independent check: optimise s, R (axis-angle), t by gradient descent and compare errors
    g = torch.Generator().manual_seed(2)
    gt = torch.randn(1, 14, 3, generator=g, dtype=torch.float64)
    pred = gt @ _rot_z(25).T * 0.8 + 0.05 * torch.randn(1, 14, 3, generator=g, dtype=torch.float64)
    from spin_fast.geometry import axis_angle_to_rotmat

    aa = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    s = torch.ones(1, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([aa, s, t], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def closure():
        opt.zero_grad()
        loss = ((s * pred[0] @ axis_angle_to_rotmat(aa).T + t - gt[0]) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    best = (s * pred[0] @ axis_angle_to_rotmat(aa).T + t)[None]
    assert ((best - gt) ** 2).sum().item() == pytest.approx(((similarity_procrustes(pred, gt) - gt) ** 2).sum().item(), rel=1e-6)
