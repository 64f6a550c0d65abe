"""Launchers and the autograd.Function of the skinning Triton op (kernels in kernel.py).

Gradients flow to betas, pose_feature and transforms; the model (v_template, shapedirs, posedirs,
lbs_weights) is constant and gets none. The forward stores only the vertices: the backward
recomputes the posed vertices and blended transforms tile by tile (one extra blend-shape pass
instead of a (B, V, 3) v_posed and a (B, V, 12) T in memory).
"""
from __future__ import annotations

import torch
import triton

from .kernel import _skinning_backward_vertex_kernel, _skinning_backward_x_kernel, _skinning_forward_kernel

BLOCK_B = 16  # bodies a program (tl.dot needs >= 16 rows)
BLOCK_V = 32  # vertices a tile
BLOCK_KC = 32  # K chunk of the blend-shape dots (fp32 "ieee" dots run on FMA units: small tiles)
TARGET_PROGRAMS = 256  # enough programs to fill an H100 (132 SMs) twice in the reductions over V
NUM_WARPS = 4
NUM_WARPS_BWD = 8  # 12 (BLOCK_B, 32) bone accumulators + recomputed tiles: 8 warps keep them in registers
NUM_STAGES = 2
PRECISION = "ieee"  # fp32 dots without TF32 (it would cost ~1e-3 relative error)


def check_skinning_args(betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights) -> None:
    """Shape/dtype/device checks shared by both backends; each error names the offending argument."""
    named = (("betas", betas), ("pose_feature", pose_feature), ("transforms", transforms),
             ("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs),
             ("lbs_weights", lbs_weights))
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"skinning: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"skinning: {name} must be floating point, got {t.dtype}")
    if betas.dim() != 2:
        raise ValueError(f"skinning: betas must be (B, S), got shape {tuple(betas.shape)}")
    B, S = betas.shape
    if pose_feature.dim() != 2 or pose_feature.shape[0] != B:
        raise ValueError(f"skinning: pose_feature must be ({B}, F) to match betas, got {tuple(pose_feature.shape)}")
    PF = pose_feature.shape[1]
    if transforms.dim() != 4 or transforms.shape[0] != B or transforms.shape[2:] != (3, 4):
        raise ValueError(f"skinning: transforms must be ({B}, NB, 3, 4), got {tuple(transforms.shape)}")
    NB = transforms.shape[1]
    if v_template.dim() != 2 or v_template.shape[1] != 3:
        raise ValueError(f"skinning: v_template must be (V, 3), got {tuple(v_template.shape)}")
    V = v_template.shape[0]
    for name, t, want in (("shapedirs", shapedirs, (V, 3, S)), ("posedirs", posedirs, (V, 3, PF)),
                          ("lbs_weights", lbs_weights, (V, NB))):
        if tuple(t.shape) != want:
            raise ValueError(f"skinning: {name} must be {want} (V from v_template, S from betas, F from "
                             f"pose_feature, NB from transforms), got {tuple(t.shape)}")
    devices = {t.device for _, t in named}
    if len(devices) != 1:
        raise ValueError(f"skinning: all tensors must be on one device, got {sorted(map(str, devices))}")


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _splits(programs: int, steps: int) -> int:
    """Vertex splits so that `programs` * splits ~ TARGET_PROGRAMS, at most one split a step."""
    return max(1, min(steps, triton.cdiv(TARGET_PROGRAMS, max(1, programs))))


def _strides(betas, pf):
    return betas.stride(0), betas.stride(1), pf.stride(0), pf.stride(1)


def skinning_forward(betas, pf, trans, vt, sd, pd, w):
    """All in one compute dtype; trans (B, NB, 12) and the model contiguous -> vertices (B, V, 3)."""
    B, S = betas.shape
    PF, V, NB = pf.shape[1], vt.shape[0], trans.shape[1]
    out = torch.empty(B, V, 3, dtype=betas.dtype, device=betas.device)
    if B and V:
        _skinning_forward_kernel[(triton.cdiv(B, BLOCK_B), triton.cdiv(V, BLOCK_V))](
            betas, pf, trans, vt, sd, pd, w, out, B, V, S, PF, NB, *_strides(betas, pf),
            BLOCK_B=BLOCK_B, BLOCK_V=BLOCK_V, BLOCK_KC=BLOCK_KC, BLOCK_NB=_block(NB), PRECISION=PRECISION,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    return out


def skinning_backward(betas, pf, trans, vt, sd, pd, w, grad_out, nsplit: int | None = None):
    """-> dL/dbetas (B, S), dL/dpose_feature (B, PF), dL/dtransforms (B, NB, 12).
    nsplit: vertex splits of the first kernel (None: enough to fill the GPU); a test hook."""
    B, S = betas.shape
    PF, V, NB = pf.shape[1], vt.shape[0], trans.shape[1]
    b_blocks = triton.cdiv(B, BLOCK_B)
    v_tiles = triton.cdiv(V, BLOCK_V)
    ns_v = nsplit or _splits(b_blocks, v_tiles)
    k_chunks = triton.cdiv(S + PF, BLOCK_KC)
    ns_x = nsplit or _splits(b_blocks * k_chunks, v_tiles)
    grad_vp = torch.empty(B, V, 3, dtype=betas.dtype, device=betas.device)
    grad_trans = torch.zeros(ns_v, B, NB, 12, dtype=betas.dtype, device=betas.device)
    grad_x = torch.zeros(ns_x, B, S + PF, dtype=betas.dtype, device=betas.device)
    if B and V:
        _skinning_backward_vertex_kernel[(b_blocks, ns_v)](
            betas, pf, trans, vt, sd, pd, w, grad_out, grad_vp, grad_trans, B, V, S, PF, NB,
            *_strides(betas, pf), ns_v,
            BLOCK_B=BLOCK_B, BLOCK_V=BLOCK_V, BLOCK_KC=BLOCK_KC, BLOCK_NB=_block(NB), PRECISION=PRECISION,
            num_warps=NUM_WARPS_BWD, num_stages=NUM_STAGES,
        )
        if S + PF:
            _skinning_backward_x_kernel[(b_blocks, k_chunks, ns_x)](
                grad_vp, sd, pd, grad_x, B, V, S, PF, ns_x,
                BLOCK_B=BLOCK_B, BLOCK_V=BLOCK_V, BLOCK_KC=BLOCK_KC, PRECISION=PRECISION,
                num_warps=NUM_WARPS, num_stages=NUM_STAGES,
            )
    grad_trans = grad_trans[0] if ns_v == 1 else grad_trans.sum(0)
    grad_x = grad_x[0] if ns_x == 1 else grad_x.sum(0)
    return grad_x[:, :S], grad_x[:, S:], grad_trans


class SkinningFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights, nsplit):
        out_dtype = torch.promote_types(torch.promote_types(betas.dtype, pose_feature.dtype), transforms.dtype)
        dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32  # half: fp32 math
        B, NB = transforms.shape[:2]
        x_b = betas.to(dtype)
        x_f = pose_feature.to(dtype)
        trans = transforms.to(dtype).reshape(B, NB, 12).contiguous()
        model = tuple(t.to(dtype).contiguous() for t in (v_template, shapedirs, posedirs, lbs_weights))
        out = skinning_forward(x_b, x_f, trans, *model)
        ctx.save_for_backward(x_b, x_f, trans, *model)
        ctx.in_dtypes = (betas.dtype, pose_feature.dtype, transforms.dtype)
        ctx.nsplit = nsplit
        return out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x_b, x_f, trans, vt, sd, pd, w = ctx.saved_tensors
        g = grad_out.to(x_b.dtype).contiguous()
        gb, gf, gt = skinning_backward(x_b, x_f, trans, vt, sd, pd, w, g, ctx.nsplit)
        need = ctx.needs_input_grad
        return (gb.to(ctx.in_dtypes[0]) if need[0] else None,
                gf.to(ctx.in_dtypes[1]) if need[1] else None,
                gt.reshape(trans.shape[0], trans.shape[1], 3, 4).to(ctx.in_dtypes[2]) if need[2] else None,
                None, None, None, None, None)


def skinning_triton(betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights,
                    nsplit: int | None = None):
    """The Triton op; same contract as skinning_torch (gradients to betas, pose_feature, transforms)."""
    for name, t in (("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs),
                    ("lbs_weights", lbs_weights)):
        if t.requires_grad:
            raise ValueError(f"skinning (triton): {name} requires grad, but the kernel differentiates w.r.t. "
                             "betas, pose_feature and transforms only; detach the model or use "
                             "SPIN_FAST_BACKEND=torch")
    return SkinningFunction.apply(betas, pose_feature, transforms, v_template, shapedirs, posedirs, lbs_weights,
                                  nsplit)
