"""reprojection op (SMPLify's robust 2D reprojection loss, pixel (SPIN) and normalised (mmhuman3d) units): Triton kernels
vs the torch reference, forward and gradients, odd strides and bad inputs, and hand-worked checks of
the reference itself (tolerances: tests/kernel_checks.py)."""
from __future__ import annotations

import math

import pytest
import torch

from kernel_checks import assert_as_good_as_torch, batches
from spin_fast_kernels.reprojection import NORMALISED, PIXELS, gmof, project_points, reprojection_loss, reprojection_loss_torch

HAS_CUDA = torch.cuda.is_available()
# Triton-path tests run where the kernels can: under the interpreter on CPU (TRITON_INTERPRET is set
# by tests/conftest.py only without CUDA), compiled on the GPU (and at full batch size) with one.
DEV = "cuda" if HAS_CUDA else "cpu"


ZERO_CONF = [1, 9, 12, 27, 28]  # SMPLify stage 2 zeroes these smpl_49 joints


def reprojection_inputs(B, device, seed=0, J=49):
    """float64 SMPLify-like inputs: joints ~0.3 m around a body 40 m away (f = 5000 -> ~40 px / 0.3 m),
    keypoints within ~60 px plus a few 400 px outliers (GMoF's flat region), random confidences
    with the stage-2 zeros, a per-sample principal point."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    joints = 0.3 * torch.randn(B, J, 3, **f64)
    t = torch.tensor([0.0, 0.2, 40.0], dtype=torch.float64) + torch.randn(B, 3, **f64) * torch.tensor(
        [0.1, 0.1, 3.0], dtype=torch.float64)
    center = 112.0 + 5.0 * torch.randn(B, 2, **f64)
    kp = project_points(joints, t, 5000.0, center) + 60.0 * torch.randn(B, J, 2, **f64)
    kp[:, ::7] += 400.0
    conf = torch.rand(B, J, **f64)
    conf[:, ZERO_CONF[: J // 10 + 1]] = 0.0
    return [x.to(device) for x in (joints, t, kp, conf, center)]


def run_reprojection(fn, inputs, upstream, dtype, **kw):
    joints, t, kp, conf, center = (x.detach().to(dtype).clone() for x in inputs)
    joints.requires_grad_(True)
    t.requires_grad_(True)
    out = fn(joints, t, kp, conf, center=center, **kw)
    (2.0 * (out * upstream.to(dtype)).sum()).backward()
    return out.detach(), joints.grad, t.grad


UNITS = {"spin": PIXELS, "mmhuman3d": NORMALISED}  # each codebase's SMPLify data units
FLAVOR_SIGMA = [("spin", 100.0), ("spin", math.inf), ("mmhuman3d", 100.0), ("mmhuman3d", 0.05)]


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("flavor,sigma", FLAVOR_SIGMA, ids=[f"{f}-sigma{s}" for f, s in FLAVOR_SIGMA])
def test_reprojection_loss_fp32_matches_reference(triton_backend, flavor, sigma, reduction):
    """mmhuman3d with sigma 0.05 puts e^2 = (2r/224)^2 on both sides of sigma, as sigma 100 px does in SPIN."""
    device = DEV
    kw = dict(units=UNITS[flavor], sigma=sigma, reduction=reduction)
    for B in batches(device):
        inputs = reprojection_inputs(B, device, seed=B)
        shape = (B,) if reduction == "sum" else (B, 49)
        upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(B)).to(device)
        ref64 = run_reprojection(reprojection_loss_torch, inputs, upstream, torch.float64, **kw)
        ref32 = run_reprojection(reprojection_loss_torch, inputs, upstream, torch.float32, **kw)
        ours = run_reprojection(reprojection_loss, inputs, upstream, torch.float32, **kw)
        for name, o, r32, r64 in zip(("value", "grad joints3d", "grad translation"), ours, ref32, ref64):
            assert o.dtype == torch.float32 and o.shape == r64.shape
            assert_as_good_as_torch(o, r32, r64, f"{name} B={B}")
        zero = inputs[3] == 0
        assert torch.equal(ours[1][zero], torch.zeros_like(ours[1][zero]))  # zero-confidence joints: no pull


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_reprojection_loss_fp64_default_center_and_img_size(triton_backend, flavor):
    joints, t, kp, conf, _ = reprojection_inputs(3, DEV, seed=4)
    upstream = torch.randn(3, 49, dtype=torch.float64, device=DEV)
    kw = dict(units=UNITS[flavor], img_size=223, reduction="none", sigma=0.5 if flavor == "mmhuman3d" else 100.0)
    res = []
    for fn in (reprojection_loss_torch, reprojection_loss):
        j, tt = joints.clone().requires_grad_(True), t.clone().requires_grad_(True)
        out = fn(j, tt, kp, conf, 4000.0, None, **kw)  # center None: the crop centre of the 223 crop
        (out * upstream).sum().backward()
        res.append((out, j.grad, tt.grad))
    for o, r in zip(res[1], res[0]):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10 * r.abs().max().item())


def test_reprojection_loss_strided_views(triton_backend):
    """Keypoints and confidence as views of one (B, J, 3) array, joints3d a transposed view."""
    joints, t, kp, conf, center = reprojection_inputs(3, DEV, seed=6)
    kp_conf = torch.cat([kp, conf[..., None]], dim=-1).float()
    joints_t = joints.float().transpose(1, 2).contiguous()  # (B, 3, J) storage
    grads = []
    for fn in (reprojection_loss_torch, reprojection_loss):
        jt = joints_t.clone().requires_grad_(True)
        out = fn(jt.transpose(1, 2), t.float(), kp_conf[..., :2], kp_conf[..., 2], center=center.float().T.contiguous().T)
        out.sum().backward()  # stride-0 upstream gradient
        grads.append((out.detach(), jt.grad))
    for o, r in zip(grads[1], grads[0]):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


def test_reprojection_loss_bad_inputs(triton_backend):
    joints, t, kp, conf, center = (x.float() for x in reprojection_inputs(2, DEV))
    with pytest.raises(ValueError, match="joints3d must be"):
        reprojection_loss(joints[..., :2], t, kp, conf)
    with pytest.raises(ValueError, match="translation must be"):
        reprojection_loss(joints, t[:, :2], kp, conf)
    with pytest.raises(ValueError, match="keypoints2d must be"):
        reprojection_loss(joints, t, kp[:, :48], conf)
    with pytest.raises(ValueError, match="confidence must be"):
        reprojection_loss(joints, t, kp, conf[..., None])
    with pytest.raises(ValueError, match="center must be"):
        reprojection_loss(joints, t, kp, conf, center=center[0])
    with pytest.raises(ValueError, match="units"):
        reprojection_loss(joints, t, kp, conf, units=2)
    with pytest.raises(ValueError, match="units"):
        reprojection_loss(joints, t, kp, conf, units="spin")
    with pytest.raises(ValueError, match="reduction"):
        reprojection_loss(joints, t, kp, conf, reduction="mean")
    with pytest.raises(ValueError, match="sigma"):
        reprojection_loss(joints, t, kp, conf, sigma=0.0)
    with pytest.raises(ValueError, match="focal_length"):
        reprojection_loss(joints, t, kp, conf, focal_length=-1.0)
    with pytest.raises(ValueError, match="confidence requires grad"):
        reprojection_loss(joints, t, kp, conf.clone().requires_grad_(True))


# -- the reference itself ---------------------------------------------------------------------


def test_gmof_hand_values():
    sigma = 100.0
    x = torch.tensor([0.0, sigma, -sigma, 3 * sigma], dtype=torch.float64)
    # rho(sigma) = sigma^2 sigma^2 / (2 sigma^2) = sigma^2 / 2; rho(3 sigma) = 9/10 sigma^2
    torch.testing.assert_close(gmof(x, sigma), torch.tensor([0.0, 5000.0, 5000.0, 9000.0], dtype=torch.float64))
    torch.testing.assert_close(gmof(x, math.inf), x * x)


def test_project_points_hand_values():
    joints = torch.tensor([[[0.1, -0.2, 0.0], [0.0, 0.0, 10.0]]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)
    c = torch.tensor([[112.0, 112.0]], dtype=torch.float64)
    # 5000 * 0.1 / 10 = 50, 5000 * -0.2 / 10 = -100; the second joint sits on the optical axis
    expected = torch.tensor([[[162.0, 12.0], [112.0, 112.0]]], dtype=torch.float64)
    torch.testing.assert_close(project_points(joints, t, 5000.0, c), expected)


def test_reprojection_reference_hand_values():
    joints = torch.zeros(1, 2, 3, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)  # both joints project to the centre (112, 112)
    kp = torch.tensor([[[112.0 - 100.0, 112.0], [0.0, 112.0 + 224.0]]], dtype=torch.float64)
    conf = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    # SPIN: joint 0 r = (100, 0) = (sigma, 0): 0.5^2 * sigma^2 / 2 = 1250;
    #       joint 1 r = (112, -224): 112^2 100^2/(112^2+100^2) + 224^2 100^2/(224^2+100^2)
    j1 = 112**2 * 1e4 / (112**2 + 1e4) + 224**2 * 1e4 / (224**2 + 1e4)
    spin = reprojection_loss_torch(joints, t, kp, conf, reduction="none")
    torch.testing.assert_close(spin, torch.tensor([[1250.0, j1]], dtype=torch.float64))
    # mmhuman3d, sigma 1: joint 1 e = 2 r / 224 = (1, -2), e^2 = (1, 4): 1 * (1/2 + 16/17);
    # joint 0 e = (100/112, 0): 0.5 * a^2/(1 + a^2) with a = (100/112)^2
    a = (100 / 112) ** 2
    mm = reprojection_loss_torch(joints, t, kp, conf, sigma=1.0, units=NORMALISED)
    torch.testing.assert_close(mm, torch.tensor([0.5 * a * a / (1 + a * a) + 0.5 + 16 / 17], dtype=torch.float64))


def test_reprojection_reference_mmhuman3d_is_normalised_mse_gmof():
    """mmhuman3d: KeypointMSELoss on [-1, 1] coordinates, gmof of the squared error, confidence linear."""
    joints, t, kp, conf, center = reprojection_inputs(3, "cpu", seed=8)
    S = 224.0
    p = project_points(joints, t, 5000.0, center)
    sq = torch.nn.functional.mse_loss(2 * p / S - 1, 2 * kp / S - 1, reduction="none")
    expected = (conf[..., None] * gmof(sq, 0.5)).sum(dim=(1, 2))
    got = reprojection_loss_torch(joints, t, kp, conf, center=center, sigma=0.5, units=NORMALISED)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_reprojection_reference_gradcheck(flavor):
    joints, t, kp, conf, center = reprojection_inputs(2, "cpu", seed=9, J=5)
    joints.requires_grad_(True)
    t.requires_grad_(True)
    sigma = 100.0 if flavor == "spin" else 0.5
    assert torch.autograd.gradcheck(
        lambda j, tt: reprojection_loss_torch(j, tt, kp, conf, center=center, sigma=sigma, units=UNITS[flavor]),
        (joints, t))


def test_reprojection_loss_double_backward_is_refused(triton_backend):
    """The hand-written backward is once-differentiable: differentiating the gradient again (here
    through a differentiable upstream gradient) must raise instead of returning a silent zero."""
    w = torch.ones(2, device=DEV, requires_grad=True)
    joints, t, kp, conf, _ = (x.float() for x in reprojection_inputs(2, DEV))
    joints.requires_grad_(True)
    (g,) = torch.autograd.grad(reprojection_loss(joints, t, kp, conf), joints, grad_outputs=w, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        g.sum().backward()
