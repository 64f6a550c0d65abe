"""Launchers and the autograd.Function of the joints_only Triton op (kernels in kernel.py).

Gradients flow to betas, pose_feature and transforms; the folded terms (coeffs, bone_weight,
pair_joint, pair_bone) are model constants and get none. Each kernel splits the pairs over NSPLIT
programs per body block so small batches still fill the GPU; the launcher adds the NSPLIT partial
sums (a fixed order: deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton

from .kernel import _joints_only_backward_pairs_kernel, _joints_only_backward_x_kernel, _joints_only_forward_kernel

BLOCK_B = 16  # bodies a program (tl.dot needs >= 16 rows)
BLOCK_P = 32  # pairs a chunk
BLOCK_KC = 32  # K chunk of the dots (fp32 "ieee" dots run on FMA units: small tiles, no spills)
TARGET_PROGRAMS = 256  # enough programs to fill an H100 (132 SMs) twice
NUM_WARPS = 4
NUM_WARPS_BWD = 8  # 12 (BLOCK_B, 32) bone accumulators: 4 warps spill (ptxas, sm_90), 8 do not
NUM_STAGES = 2  # software pipelining depth (shared memory: ~50 kB fp32 at these blocks)
PRECISION = "ieee"  # fp32 dots without TF32 (it would cost ~1e-3 relative error)


def check_joints_only_args(betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone,
                           num_joints) -> None:
    """Shape/dtype/device checks shared by both backends; each error names the offending argument."""
    named = (("betas", betas), ("pose_feature", pose_feature), ("transforms", transforms), ("coeffs", coeffs),
             ("bone_weight", bone_weight), ("pair_joint", pair_joint), ("pair_bone", pair_bone))
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"joints_only: {name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in named[:5]:
        if not t.is_floating_point():
            raise TypeError(f"joints_only: {name} must be floating point, got {t.dtype}")
    for name, t in named[5:]:
        if t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"joints_only: {name} must be int32 or int64, got {t.dtype}")
    if betas.dim() != 2:
        raise ValueError(f"joints_only: betas must be (B, S), got shape {tuple(betas.shape)}")
    B, S = betas.shape
    if pose_feature.dim() != 2 or pose_feature.shape[0] != B:
        raise ValueError(f"joints_only: pose_feature must be ({B}, F) to match betas, got {tuple(pose_feature.shape)}")
    if transforms.dim() != 4 or transforms.shape[0] != B or transforms.shape[2:] != (3, 4):
        raise ValueError(f"joints_only: transforms must be ({B}, NB, 3, 4), got {tuple(transforms.shape)}")
    K = 1 + S + pose_feature.shape[1]
    if coeffs.dim() != 3 or coeffs.shape[1:] != (3, K):
        raise ValueError(f"joints_only: coeffs must be (P, 3, {K}) = (P, 3, 1 + S + F), got {tuple(coeffs.shape)}")
    P = coeffs.shape[0]
    for name, t in named[4:]:
        if tuple(t.shape) != (P,):
            raise ValueError(f"joints_only: {name} must be ({P},) like coeffs' pairs, got {tuple(t.shape)}")
    if not isinstance(num_joints, int) or isinstance(num_joints, bool) or num_joints < 0:
        raise ValueError(f"joints_only: num_joints must be an int >= 0, got {num_joints!r}")
    devices = {t.device for _, t in named}
    if len(devices) != 1:
        raise ValueError(f"joints_only: all tensors must be on one device, got {sorted(map(str, devices))}")
    # Index ranges: checked where it costs no device sync (the kernels mask bad indices either way).
    if betas.device.type == "cpu" and P:
        if int(pair_joint.min()) < 0 or int(pair_joint.max()) >= num_joints:
            raise ValueError(f"joints_only: pair_joint must lie in [0, {num_joints}), got "
                             f"[{int(pair_joint.min())}, {int(pair_joint.max())}]")
        if int(pair_bone.min()) < 0 or int(pair_bone.max()) >= transforms.shape[1]:
            raise ValueError(f"joints_only: pair_bone must lie in [0, {transforms.shape[1]}), got "
                             f"[{int(pair_bone.min())}, {int(pair_bone.max())}]")


def _nsplit(B: int, P: int) -> int:
    chunks = max(1, triton.cdiv(P, BLOCK_P))
    return max(1, min(chunks, triton.cdiv(TARGET_PROGRAMS, max(1, triton.cdiv(B, BLOCK_B)))))


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def joints_only_forward(betas, pf, trans, coeffs, bw, pj, pb, num_joints: int, nsplit: int | None = None):
    """All floating tensors in one compute dtype; trans (B, NB, 12), coeffs (P, 3, K), bw, pj, pb
    contiguous. -> joints (B, num_joints, 3)."""
    B, S = betas.shape
    PF = pf.shape[1]
    P, NB = coeffs.shape[0], trans.shape[1]
    nsplit = nsplit or _nsplit(B, P)
    part = torch.zeros(nsplit, B, num_joints, 3, dtype=betas.dtype, device=betas.device)
    if B and P and num_joints:
        _joints_only_forward_kernel[(triton.cdiv(B, BLOCK_B), nsplit)](
            betas, pf, trans, coeffs, bw, pj, pb, part,
            B, S, PF, P, NB, num_joints,
            betas.stride(0), betas.stride(1), pf.stride(0), pf.stride(1), nsplit,
            BLOCK_B=BLOCK_B, BLOCK_P=BLOCK_P, BLOCK_KC=BLOCK_KC, BLOCK_J=_block(num_joints),
            PRECISION=PRECISION, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    return part[0] if nsplit == 1 else part.sum(0)


def joints_only_backward(betas, pf, trans, coeffs, bw, pj, pb, grad_out, nsplit: int | None = None):
    """-> dL/dbetas (B, S), dL/dpose_feature (B, PF), dL/dtransforms (B, NB, 12)."""
    B, S = betas.shape
    PF = pf.shape[1]
    P, NB = coeffs.shape[0], trans.shape[1]
    NJ = grad_out.shape[1]
    K = 1 + S + PF
    nsplit = nsplit or _nsplit(B, P)
    grad_local = torch.zeros(B, P, 3, dtype=betas.dtype, device=betas.device)
    grad_trans = torch.zeros(nsplit, B, NB, 12, dtype=betas.dtype, device=betas.device)
    grad_x = torch.zeros(B, K, dtype=betas.dtype, device=betas.device)
    if B and P and NJ:
        _joints_only_backward_pairs_kernel[(triton.cdiv(B, BLOCK_B), nsplit)](
            betas, pf, trans, coeffs, bw, pj, pb, grad_out, grad_local, grad_trans,
            B, S, PF, P, NB, NJ,
            betas.stride(0), betas.stride(1), pf.stride(0), pf.stride(1), nsplit,
            BLOCK_B=BLOCK_B, BLOCK_P=BLOCK_P, BLOCK_KC=BLOCK_KC, BLOCK_NB=_block(NB),
            PRECISION=PRECISION, num_warps=NUM_WARPS_BWD, num_stages=NUM_STAGES,
        )
        _joints_only_backward_x_kernel[(triton.cdiv(B, BLOCK_B), triton.cdiv(K, BLOCK_KC))](
            grad_local, coeffs, grad_x, B, P, K,
            BLOCK_B=BLOCK_B, BLOCK_P=BLOCK_P, BLOCK_KC=BLOCK_KC, PRECISION=PRECISION,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    grad_trans = grad_trans[0] if nsplit == 1 else grad_trans.sum(0)
    return grad_x[:, 1:1 + S], grad_x[:, 1 + S:], grad_trans


class JointsOnlyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone, num_joints,
                nsplit):
        out_dtype = torch.promote_types(torch.promote_types(betas.dtype, pose_feature.dtype), transforms.dtype)
        dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32  # half: fp32 math
        B, NB = transforms.shape[:2]
        x_b = betas.to(dtype)
        x_f = pose_feature.to(dtype)
        trans = transforms.to(dtype).reshape(B, NB, 12).contiguous()
        consts = (coeffs.to(dtype).contiguous(), bone_weight.to(dtype).contiguous(), pair_joint.contiguous(),
                  pair_bone.contiguous())
        out = joints_only_forward(x_b, x_f, trans, *consts, num_joints, nsplit)
        ctx.save_for_backward(x_b, x_f, trans, *consts)
        ctx.in_dtypes = (betas.dtype, pose_feature.dtype, transforms.dtype)
        ctx.nsplit = nsplit
        return out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x_b, x_f, trans, coeffs, bw, pj, pb = ctx.saved_tensors
        g = grad_out.to(x_b.dtype).contiguous()
        gb, gf, gt = joints_only_backward(x_b, x_f, trans, coeffs, bw, pj, pb, g, ctx.nsplit)
        need = ctx.needs_input_grad
        return (gb.to(ctx.in_dtypes[0]) if need[0] else None,
                gf.to(ctx.in_dtypes[1]) if need[1] else None,
                gt.reshape(trans.shape[0], trans.shape[1], 3, 4).to(ctx.in_dtypes[2]) if need[2] else None,
                None, None, None, None, None, None)


def joints_only_triton(betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone, num_joints,
                       nsplit: int | None = None):
    """The Triton op; same contract as joints_only_torch (gradients to betas, pose_feature, transforms).
    nsplit: programs sharing a body block (None: enough to fill the GPU); a test hook."""
    for name, t in (("coeffs", coeffs), ("bone_weight", bone_weight)):
        if t.requires_grad:
            raise ValueError(f"joints_only (triton): {name} requires grad, but the kernel differentiates w.r.t. "
                             "betas, pose_feature and transforms only; detach the folded terms or use "
                             "SPIN_FAST_BACKEND=torch")
    return JointsOnlyFunction.apply(betas, pose_feature, transforms, coeffs, bone_weight, pair_joint, pair_bone,
                                    num_joints, nsplit)
