"""Launchers and the autograd.Function of the reprojection Triton op (kernels in kernel.py).

The forward saves only its inputs; the backward kernel recomputes the projection (about 25 FLOP
a joint) rather than storing intermediates, and returns gradients for joints3d and translation.
Keypoints, confidences and the principal point are data in SMPLify and get no gradient.
"""
from __future__ import annotations

import functools
import math
import numbers
import os

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .kernel import _reprojection_backward_kernel, _reprojection_forward_kernel
from .reference import PIXELS, check_args

NUM_WARPS = 4


def _block_b() -> int:
    """Samples a program (each holds its samples' 64 joint lanes): 8 on a GPU, so a batch of 1024
    spreads over 128 programs; 16 under the interpreter, where fewer, larger programs run faster."""
    return 16 if os.environ.get("TRITON_INTERPRET") == "1" else 8


def check_reprojection_args(joints3d, translation, keypoints2d, confidence, focal_length, center, sigma,
                            units, img_size, reduction) -> None:
    """Argument checks shared by both backends; each error names the offending argument."""
    check_args(units, reduction, sigma)
    named = [("joints3d", joints3d), ("translation", translation), ("keypoints2d", keypoints2d),
             ("confidence", confidence)] + ([("center", center)] if center is not None else [])
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"reprojection_loss: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"reprojection_loss: {name} must be floating point, got {t.dtype}")
    if joints3d.dim() != 3 or joints3d.shape[2] != 3:
        raise ValueError(f"reprojection_loss: joints3d must be (B, J, 3), got {tuple(joints3d.shape)}")
    B, J = joints3d.shape[:2]
    for name, t, shape in (("translation", translation, (B, 3)), ("keypoints2d", keypoints2d, (B, J, 2)),
                           ("confidence", confidence, (B, J)), ("center", center, (B, 2))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"reprojection_loss: {name} must be {shape} to match joints3d {tuple(joints3d.shape)}, "
                             f"got {tuple(t.shape)}")
    devices = {t.device for _, t in named}
    if len(devices) != 1:
        raise ValueError(f"reprojection_loss: all tensors must be on one device, got {sorted(map(str, devices))}")
    for name, v in (("focal_length", focal_length), ("img_size", img_size)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"reprojection_loss: {name} must be a finite positive number, got {v!r}")
    if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise ValueError(f"reprojection_loss: sigma must be a number, got {sigma!r}")


def _compute_dtype(*tensors) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@functools.lru_cache(maxsize=64)
def _params(focal_length, half, s2, norm, dtype, device) -> torch.Tensor:
    """(5,) focal, principal point x, y (crop centre), sigma^2, 2 / S in the compute dtype. Cached:
    building it is a host-to-device copy, which should not happen at every SMPLify step."""
    return torch.tensor([focal_length, half, half, s2, norm], dtype=dtype, device=device)


class _Launch:
    """The non-tensor part of a call, shared by both kernels: dtype, params, constexprs, grid."""

    def __init__(self, joints3d, center, focal_length, sigma, units, img_size, reduction, dtype):
        self.B, self.J = joints3d.shape[:2]
        self.dtype = dtype
        robust = not math.isinf(sigma)
        self.params = _params(focal_length, 0.5 * img_size, sigma * sigma if robust else 0.0, 2.0 / img_size,
                              dtype, joints3d.device)
        self.meta = dict(PIXELS=units == PIXELS, ROBUST=robust, REDUCE_SUM=reduction == "sum",
                         HAS_CENTER=center is not None,
                         ACC=tl.float64 if dtype == torch.float64 else tl.float32,
                         BLOCK_B=_block_b(), BLOCK_J=max(16, triton.next_power_of_2(self.J)),
                         num_warps=NUM_WARPS)
        self.grid = (triton.cdiv(self.B, _block_b()),)

    @staticmethod
    def args(joints3d, translation, keypoints2d, confidence, center):
        """Kernel pointer arguments and their strides (center falls back to a dummy pointer)."""
        ptrs = (joints3d, translation, keypoints2d, confidence, center if center is not None else joints3d)
        strides = (*joints3d.stride(), *translation.stride(), *keypoints2d.stride(), *confidence.stride(),
                   *(center.stride() if center is not None else (0, 0)))
        return ptrs, strides


def reprojection_forward(L: _Launch, *tensors) -> torch.Tensor:
    """tensors = (joints3d, translation, keypoints2d, confidence, center or None) -> (B,) or (B, J)."""
    ptrs, strides = L.args(*tensors)
    shape = (L.B,) if L.meta["REDUCE_SUM"] else (L.B, L.J)
    out = torch.zeros(shape, dtype=L.dtype, device=ptrs[0].device)
    if L.B > 0 and L.J > 0:
        _reprojection_forward_kernel[L.grid](*ptrs, out, L.B, L.J, *strides, L.params, **L.meta)
    return out


def reprojection_backward(L: _Launch, grad_out: torch.Tensor, *tensors):
    """-> (d L / d joints3d (B, J, 3), d L / d translation (B, 3)) in the compute dtype."""
    ptrs, strides = L.args(*tensors)
    grad_joints = torch.zeros(L.B, L.J, 3, dtype=L.dtype, device=ptrs[0].device)
    grad_t = torch.zeros(L.B, 3, dtype=L.dtype, device=ptrs[0].device)
    if L.B > 0 and L.J > 0:
        g_strides = (grad_out.stride(0), grad_out.stride(1) if grad_out.dim() == 2 else 0)
        _reprojection_backward_kernel[L.grid](grad_out, *ptrs, grad_joints, grad_t, L.B, L.J, *g_strides,
                                              *strides, L.params, **L.meta)
    return grad_joints, grad_t


class ReprojectionLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, joints3d, translation, keypoints2d, confidence, center, launch):
        ctx.launch = launch
        ctx.dtypes = (joints3d.dtype, translation.dtype)
        ctx.save_for_backward(joints3d, translation, keypoints2d, confidence, center)
        return reprojection_forward(launch, joints3d, translation, keypoints2d, confidence, center)

    @staticmethod
    @once_differentiable  # no second derivative: raise if one is asked for instead of a silent zero
    def backward(ctx, grad_out):
        grad_joints, grad_t = reprojection_backward(ctx.launch, grad_out, *ctx.saved_tensors)
        gj = grad_joints.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        gt = grad_t.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return gj, gt, None, None, None, None


def reprojection_loss_triton(joints3d, translation, keypoints2d, confidence, focal_length=5000.0, center=None,
                             sigma=100.0, units=PIXELS, img_size=224, reduction="sum"):
    """The Triton op; same contract as reprojection_loss_torch (gradients for joints3d, translation)."""
    for name, t in (("keypoints2d", keypoints2d), ("confidence", confidence), ("center", center)):
        if t is not None and t.requires_grad:
            raise ValueError(f"reprojection_loss (triton): {name} requires grad, but the kernel differentiates "
                             "w.r.t. joints3d and translation only; detach it or use SPIN_FAST_BACKEND=torch")
    dtype = _compute_dtype(joints3d, translation, keypoints2d, confidence, center)
    launch = _Launch(joints3d, center, float(focal_length), float(sigma), units, float(img_size), reduction, dtype)
    return ReprojectionLossFunction.apply(joints3d, translation, keypoints2d, confidence, center, launch)
