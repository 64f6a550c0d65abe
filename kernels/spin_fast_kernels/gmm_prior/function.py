"""Launchers and the autograd.Function of the gmm_prior Triton op (kernels in kernel.py).

The forward stores the winning component's gradient direction P_k* (theta - mu_k*) when the pose
needs a gradient, so the backward is one scale by the upstream gradient. The prior's constants
(means, precisions, nll_weights) are buffers in SMPLify and get no gradient here.
"""
from __future__ import annotations

import torch
import triton
from torch.autograd.function import once_differentiable

from .kernel import _gmm_prior_backward_kernel, _gmm_prior_forward_kernel

NUM_WARPS = 4
BLOCK_K = 16  # reduction chunk: 69 -> 80 (the tl.dot minimum is 16)
BLOCK_N = 32  # output chunk: 69 -> 96


def _block_b() -> int:
    """Samples a program: 16 (the tl.dot minimum), so a batch of 1024 spreads over 64 programs."""
    return 16


def check_gmm_args(pose, means, precisions, nll_weights) -> None:
    """Shape/device checks shared by both backends; each error names the offending argument."""
    for name, t in (("pose", pose), ("means", means), ("precisions", precisions), ("nll_weights", nll_weights)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"gmm_prior: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"gmm_prior: {name} must be floating point, got {t.dtype}")
    if pose.dim() != 2:
        raise ValueError(f"gmm_prior: pose must be (B, D), got shape {tuple(pose.shape)}")
    D = pose.shape[1]
    if means.dim() != 2 or means.shape[1] != D:
        raise ValueError(f"gmm_prior: means must be (K, {D}) to match pose, got {tuple(means.shape)}")
    K = means.shape[0]
    if K < 1:
        raise ValueError("gmm_prior: means must hold at least one component")
    if tuple(precisions.shape) != (K, D, D):
        raise ValueError(f"gmm_prior: precisions must be ({K}, {D}, {D}), got {tuple(precisions.shape)}")
    if tuple(nll_weights.shape) != (K,):
        raise ValueError(f"gmm_prior: nll_weights must be ({K},), got {tuple(nll_weights.shape)}")
    devices = {t.device for t in (pose, means, precisions, nll_weights)}
    if len(devices) != 1:
        raise ValueError(f"gmm_prior: all tensors must be on one device, got {sorted(map(str, devices))}")


def _block_d(D: int) -> int:
    return max(16, triton.next_power_of_2(D))


def gmm_prior_forward(pose, means, precisions, nll_weights, store_grad: bool):
    """-> (value (B,), argmin (B,) int32, y (B, D) or None). Computes in the promoted dtype."""
    dtype = torch.promote_types(torch.promote_types(pose.dtype, means.dtype),
                                torch.promote_types(precisions.dtype, nll_weights.dtype))
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32  # half inputs accumulate in fp32
    means = means.to(dtype).contiguous()
    precisions = precisions.to(dtype).contiguous()
    nll_weights = nll_weights.to(dtype).contiguous()
    B, D = pose.shape
    K = means.shape[0]
    out = torch.empty(B, dtype=dtype, device=pose.device)
    argmin = torch.empty(B, dtype=torch.int32, device=pose.device)
    y = torch.empty(B, D, dtype=dtype, device=pose.device) if store_grad else out  # dummy when unused
    if B > 0:
        grid = (triton.cdiv(B, _block_b()),)
        _gmm_prior_forward_kernel[grid](
            pose, means, precisions, nll_weights, out, argmin, y,
            B, K, D, pose.stride(0), pose.stride(1),
            STORE_GRAD=store_grad, IS_FP64=dtype == torch.float64,
            BLOCK_B=_block_b(), BLOCK_K=BLOCK_K, BLOCK_N=BLOCK_N, num_warps=NUM_WARPS,
        )
    return out, argmin, (y if store_grad else None)


def gmm_prior_backward(grad_out, y):
    """grad_out (B,), y (B, D) from the forward -> d L / d pose (B, D) in y's dtype."""
    B, D = y.shape
    grad_pose = torch.empty_like(y)
    if B > 0:
        grid = (triton.cdiv(B, _block_b()),)
        _gmm_prior_backward_kernel[grid](
            grad_out, y, grad_pose, B, D, grad_out.stride(0),
            BLOCK_B=_block_b(), BLOCK_D=_block_d(D), num_warps=4,
        )
    return grad_pose


class GMMPriorFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pose, means, precisions, nll_weights):
        out, argmin, y = gmm_prior_forward(pose, means, precisions, nll_weights, store_grad=ctx.needs_input_grad[0])
        ctx.save_for_backward(y if y is not None else argmin)
        ctx.mark_non_differentiable(argmin)
        ctx.pose_dtype = pose.dtype
        return out, argmin

    @staticmethod
    @once_differentiable  # no second derivative: raise if one is asked for instead of a silent zero
    def backward(ctx, grad_out, _grad_argmin):
        grad_pose = None
        if ctx.needs_input_grad[0]:
            (y,) = ctx.saved_tensors
            grad_pose = gmm_prior_backward(grad_out, y).to(ctx.pose_dtype)
        return grad_pose, None, None, None


def gmm_prior_triton(pose, means, precisions, nll_weights, return_argmin: bool = False):
    """The Triton op; same contract as gmm_prior_torch (gradient w.r.t. pose only)."""
    for name, t in (("means", means), ("precisions", precisions), ("nll_weights", nll_weights)):
        if t.requires_grad:
            raise ValueError(f"gmm_prior (triton): {name} requires grad, but the kernel differentiates "
                             "w.r.t. pose only; detach the prior constants or use SPIN_FAST_BACKEND=torch")
    out, argmin = GMMPriorFunction.apply(pose, means, precisions, nll_weights)
    return (out, argmin) if return_argmin else out
