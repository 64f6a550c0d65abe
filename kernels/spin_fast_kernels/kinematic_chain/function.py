"""Launchers and autograd.Functions of the Rodrigues and kinematic-chain Triton ops (kernels in kernel.py).

Both compute in float32 or float64 (half inputs are computed in float32 and cast back). The chain's
backward re-reads the world rotations from the forward's `transforms` output (saved), so nothing
but the outputs is stored.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton

from .kernel import (
    _kinematic_chain_backward_kernel,
    _kinematic_chain_forward_kernel,
    _rodrigues_backward_kernel,
    _rodrigues_forward_kernel,
)

RODRIGUES_BLOCK = 128  # rotations a program, one a lane (4 warps)
CHAIN_WARPS = 1
CHAIN_BLOCK_B = 32 * CHAIN_WARPS  # one body a thread: no lane is replicated across threads
# No software pipelining of the chain loops: a load of joint i + 1's parent must not be issued
# before joint i's stores and the barrier (Triton 3.9 does not pipeline these loops anyway: checked
# in the sm_90 PTX, plain ld.global after bar.sync, no cp.async; this pins it for other versions).
CHAIN_STAGES = 1


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def check_rodrigues_args(axis_angle) -> None:
    if not isinstance(axis_angle, torch.Tensor):
        raise TypeError(f"rodrigues: axis_angle must be a torch.Tensor, got {type(axis_angle).__name__}")
    if not axis_angle.is_floating_point():
        raise TypeError(f"rodrigues: axis_angle must be floating point, got {axis_angle.dtype}")
    if axis_angle.dim() < 1 or axis_angle.shape[-1] != 3:
        raise ValueError(f"rodrigues: axis_angle must be (..., 3), got shape {tuple(axis_angle.shape)}")


def check_chain_args(rotmats, rest_joints, parents) -> list[int]:
    """Validates shapes and the tree; returns parents as a list of ints."""
    for name, t in (("rotmats", rotmats), ("rest_joints", rest_joints)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"kinematic_chain: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"kinematic_chain: {name} must be floating point, got {t.dtype}")
    if rotmats.dim() != 4 or rotmats.shape[-2:] != (3, 3):
        raise ValueError(f"kinematic_chain: rotmats must be (B, J, 3, 3), got shape {tuple(rotmats.shape)}")
    B, J = rotmats.shape[:2]
    if tuple(rest_joints.shape) != (B, J, 3):
        raise ValueError(f"kinematic_chain: rest_joints must be ({B}, {J}, 3) to match rotmats, "
                         f"got {tuple(rest_joints.shape)}")
    if rotmats.device != rest_joints.device:
        raise ValueError(f"kinematic_chain: rotmats on {rotmats.device} but rest_joints on {rest_joints.device}")
    if isinstance(parents, torch.Tensor):
        parents = parents.tolist()
    parents = [int(p) for p in parents]
    if len(parents) != J:
        raise ValueError(f"kinematic_chain: parents must list {J} joints to match rotmats, got {len(parents)}")
    if J == 0:
        raise ValueError("kinematic_chain: needs at least one joint")
    bad = [i for i in range(1, J) if not 0 <= parents[i] < i]
    if bad:
        raise ValueError(f"kinematic_chain: parents must put each joint's parent before it (0 <= parents[i] < i); "
                         f"joints {bad} break that in {parents}")
    return parents


# --- Rodrigues -----------------------------------------------------------------------------------


def rodrigues_forward(aa: torch.Tensor) -> torch.Tensor:
    """aa (N, 3) contiguous in the compute dtype -> (N, 9)."""
    N = aa.shape[0]
    rot = torch.empty(N, 9, dtype=aa.dtype, device=aa.device)
    if N:
        _rodrigues_forward_kernel[(triton.cdiv(N, RODRIGUES_BLOCK),)](aa, rot, N, BLOCK=RODRIGUES_BLOCK, num_warps=4)
    return rot


def rodrigues_backward(aa: torch.Tensor, grad_rot: torch.Tensor) -> torch.Tensor:
    N = aa.shape[0]
    grad_aa = torch.empty_like(aa)
    if N:
        _rodrigues_backward_kernel[(triton.cdiv(N, RODRIGUES_BLOCK),)](
            aa, grad_rot, grad_aa, N, BLOCK=RODRIGUES_BLOCK, num_warps=4)
    return grad_aa


class RodriguesFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, axis_angle):
        dtype = _compute_dtype(axis_angle)
        aa = axis_angle.reshape(-1, 3).to(dtype).contiguous()
        rot = rodrigues_forward(aa)
        ctx.save_for_backward(aa)
        ctx.in_dtype = axis_angle.dtype
        ctx.in_shape = axis_angle.shape
        return rot.reshape(*axis_angle.shape[:-1], 3, 3).to(axis_angle.dtype)

    @staticmethod
    def backward(ctx, grad_rot):
        (aa,) = ctx.saved_tensors
        g = grad_rot.reshape(-1, 9).to(aa.dtype).contiguous()
        return rodrigues_backward(aa, g).reshape(ctx.in_shape).to(ctx.in_dtype)


def rodrigues_triton(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3); same contract as rodrigues_torch."""
    return RodriguesFunction.apply(axis_angle)


# --- kinematic chain -----------------------------------------------------------------------------

_PARENTS_CACHE: dict[tuple, torch.Tensor] = {}


def _parents_tensor(parents: list[int], device: torch.device) -> torch.Tensor:
    """int32 parents on the device, cached so a training loop does not copy them every step."""
    key = (tuple(parents), str(device))
    t = _PARENTS_CACHE.get(key)
    if t is None:
        t = torch.tensor([0] + parents[1:], dtype=torch.int32, device=device)
        _PARENTS_CACHE[key] = t
    return t


def kinematic_chain_forward(rot: torch.Tensor, rest: torch.Tensor, parents_t: torch.Tensor, aa=None):
    """rot (B, J, 9), rest (B, J, 3) contiguous in the compute dtype -> posed (B, J, 3), transforms
    (B, J, 12). With aa (B, J, 3) (fused Rodrigues) rot is an output buffer the kernel fills."""
    B, J = rest.shape[:2]
    posed = torch.empty(B, J, 3, dtype=rest.dtype, device=rest.device)
    trans = torch.empty(B, J, 12, dtype=rest.dtype, device=rest.device)
    if B:
        _kinematic_chain_forward_kernel[(triton.cdiv(B, CHAIN_BLOCK_B),)](
            rot if aa is None else aa, rot, rest, parents_t, posed, trans, B, J,
            FROM_AA=aa is not None, BLOCK_B=CHAIN_BLOCK_B, num_warps=CHAIN_WARPS, num_stages=CHAIN_STAGES)
    return posed, trans


def kinematic_chain_backward(rot, rest, parents_t, trans, grad_posed, grad_trans, aa=None, grad_rot_up=None):
    """-> grad_rot (B, J, 9), grad_rest (B, J, 3); with aa (fused Rodrigues) the first is dL/daa
    (B, J, 3), through both the chain and grad_rot_up (B, J, 9), the rotmats output's gradient."""
    B, J = rest.shape[:2]
    fused = aa is not None
    grad_rot = torch.empty_like(aa) if fused else torch.empty_like(rot)
    grad_rest = torch.zeros_like(rest)
    acc = torch.zeros(B, J, 12, dtype=rot.dtype, device=rot.device)
    if B:
        _kinematic_chain_backward_kernel[(triton.cdiv(B, CHAIN_BLOCK_B),)](
            aa if fused else rot, rot, rest, parents_t, trans, grad_posed, grad_trans,
            grad_rot_up if fused else rot, acc, grad_rot, grad_rest, B, J,
            FROM_AA=fused, BLOCK_B=CHAIN_BLOCK_B, num_warps=CHAIN_WARPS, num_stages=CHAIN_STAGES)
    return grad_rot, grad_rest


class KinematicChainFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rotmats, rest_joints, parents_t):
        dtype = _compute_dtype(rotmats, rest_joints)
        B, J = rotmats.shape[:2]
        rot = rotmats.to(dtype).reshape(B, J, 9).contiguous()
        rest = rest_joints.to(dtype).contiguous()
        posed, trans = kinematic_chain_forward(rot, rest, parents_t)
        ctx.save_for_backward(rot, rest, parents_t, trans)
        ctx.dtypes = (rotmats.dtype, rest_joints.dtype)
        out_dtype = torch.promote_types(rotmats.dtype, rest_joints.dtype)
        return posed.to(out_dtype), trans.reshape(B, J, 3, 4).to(out_dtype)

    @staticmethod
    def backward(ctx, grad_posed, grad_trans):
        rot, rest, parents_t, trans = ctx.saved_tensors
        B, J = rest.shape[:2]
        # An unused output arrives as None: its upstream gradient is zero.
        gp = torch.zeros_like(rest) if grad_posed is None else grad_posed.to(rot.dtype).contiguous()
        gt = (torch.zeros_like(trans) if grad_trans is None
              else grad_trans.to(rot.dtype).reshape(B, J, 12).contiguous())
        grad_rot, grad_rest = kinematic_chain_backward(rot, rest, parents_t, trans, gp, gt)
        return (grad_rot.reshape(B, J, 3, 3).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None,
                grad_rest.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None, None)


def kinematic_chain_triton(rotmats: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]):
    """Same contract as kinematic_chain_torch: -> posed_joints (B, J, 3), transforms (B, J, 3, 4)."""
    parents = check_chain_args(rotmats, rest_joints, parents)
    return KinematicChainFunction.apply(rotmats, rest_joints, _parents_tensor(parents, rotmats.device))


# --- fused Rodrigues + chain ---------------------------------------------------------------------


class RodriguesChainFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, axis_angle, rest_joints, parents_t):
        dtype = _compute_dtype(axis_angle, rest_joints)
        B, J = axis_angle.shape[:2]
        aa = axis_angle.to(dtype).contiguous()
        rest = rest_joints.to(dtype).contiguous()
        rot = torch.empty(B, J, 9, dtype=dtype, device=aa.device)
        posed, trans = kinematic_chain_forward(rot, rest, parents_t, aa=aa)
        ctx.save_for_backward(aa, rot, rest, parents_t, trans)
        ctx.dtypes = (axis_angle.dtype, rest_joints.dtype)
        out_dtype = torch.promote_types(axis_angle.dtype, rest_joints.dtype)
        return rot.reshape(B, J, 3, 3).to(out_dtype), posed.to(out_dtype), trans.reshape(B, J, 3, 4).to(out_dtype)

    @staticmethod
    def backward(ctx, grad_rot, grad_posed, grad_trans):
        aa, rot, rest, parents_t, trans = ctx.saved_tensors
        B, J = rest.shape[:2]
        gr = torch.zeros_like(rot) if grad_rot is None else grad_rot.to(rot.dtype).reshape(B, J, 9).contiguous()
        gp = torch.zeros_like(rest) if grad_posed is None else grad_posed.to(rot.dtype).contiguous()
        gt = (torch.zeros_like(trans) if grad_trans is None
              else grad_trans.to(rot.dtype).reshape(B, J, 12).contiguous())
        grad_aa, grad_rest = kinematic_chain_backward(rot, rest, parents_t, trans, gp, gt, aa=aa, grad_rot_up=gr)
        return (grad_aa.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None,
                grad_rest.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None, None)


def check_rodrigues_chain_args(axis_angle, rest_joints, parents) -> list[int]:
    check_rodrigues_args(axis_angle)
    if axis_angle.dim() != 3:
        raise ValueError(f"rodrigues_chain: axis_angle must be (B, J, 3), got shape {tuple(axis_angle.shape)}")
    B, J = axis_angle.shape[:2]
    # the chain's checks, phrased for a (B, J, 3, 3) rotation stack of the same (B, J)
    return check_chain_args(axis_angle.new_empty(B, J, 3, 3), rest_joints, parents)


def rodrigues_chain_triton(axis_angle: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]):
    """rodrigues then kinematic_chain in one kernel (one in the backward): -> rotmats (B, J, 3, 3),
    posed_joints (B, J, 3), transforms (B, J, 3, 4); differentiable w.r.t. axis_angle, rest_joints."""
    parents = check_rodrigues_chain_args(axis_angle, rest_joints, parents)
    return RodriguesChainFunction.apply(axis_angle, rest_joints, _parents_tensor(parents, axis_angle.device))
