"""Blend shapes + linear blend skinning with the backward written out: the torch path of `skinning`
(made for the CPU, runs on any device; reference.py stays its oracle, equal to rounding).

Math (reference.py), with x = [betas | pose_feature] (B, K), the model arrays laid out once by
`skinning_basis` as coordinate-major rows (component c of vertex v at column c V + v):
    v_posed = v_template + x dirs                         (B, 3, V): one product
    T_v = sum_b w_vb A_b                                  (3, 4, B, V): one product (A planar, 12 B x 24)
    vertices_c = T_v[c, 3] + sum_k T_v[c, k] v_posed_k    (3, B, V): three multiply-adds
Backward from g = dL/dvertices:
    dL/dT_v[c, k] = g_c v_posed_k (dL/dT_v[c, 3] = g_c),   dL/dA = W^T dL/dT_v       (one product)
    dL/dv_posed_k = sum_c T_v[c, k] g_c,                   dL/dx = dL/dv_posed dirs^T (one product)
The vertices come back as a (B, V, 3) view of a coordinate-major (3, B, V) tensor: every product and
multiply-add above then runs over contiguous rows of V, with no per-vertex 3 x 4 products. T_v is built a
block of CHUNK bodies at a time (in cache); the backward reuses the forward's T_v where it is small and
recomputes it a block at a time where it is not. Always eager: through torch.compile (the whole batch
at once) this was slower, measured at B = 64 and 512 (benches/RESULTS.md).
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class SkinningBasis(NamedTuple):
    """The model arrays of `skinning` laid out for this path (build once with `skinning_basis`)."""

    v_template: torch.Tensor  # (3 V,) coordinate-major
    dirs: torch.Tensor  # (S + 207, 3 V): shapedirs then posedirs, coordinate-major
    weights_t: torch.Tensor  # (24, V) lbs_weights transposed


def skinning_basis(v_template: torch.Tensor, shapedirs: torch.Tensor, posedirs: torch.Tensor,
                   lbs_weights: torch.Tensor) -> SkinningBasis:
    """v_template (V, 3), shapedirs (V, 3, S), posedirs (V, 3, 207), lbs_weights (V, 24)."""
    dirs = torch.cat([shapedirs, posedirs], -1).permute(2, 1, 0).reshape(-1, 3 * v_template.shape[0])
    return SkinningBasis(v_template.t().reshape(-1).contiguous(), dirs.contiguous(),
                         lbs_weights.t().contiguous())


CHUNK = 8  # bodies a block: a block's T_v (8 x 12 x V floats, ~2.6 MB) stays in cache
KEEP_TV_BYTES = 32 << 20  # up to this size the forward keeps every block's T_v for the backward


def _forward_chunked(betas, pose_feature, transforms, v_template, dirs, weights_t, for_backward: bool):
    """The forward (header's maths) with T_v built and used a block of CHUNK bodies at a time, never
    whole: at large B the whole (3, 4, B, V) tensor is memory-bound (1.35 GB at B = 4096). Vertices (B, V, 3) are a view
    of (B, 3, V); saved: v_posed (B, 3, V), the transforms as (B, 12, 24), and T_v (B, 3, 4, V) where a
    backward will follow and it is at most KEEP_TV_BYTES (else None: a backward recomputes it a block at
    a time)."""
    B, V = betas.shape[0], weights_t.shape[1]
    vp = torch.addmm(v_template, torch.cat([betas, pose_feature], 1), dirs).view(B, 3, V)
    A = transforms.reshape(B, -1, 12).transpose(1, 2)  # (B, 12, 24)
    out = vp.new_empty(B, 3, V)
    keep = vp.new_empty(B, 3, 4, V) if for_backward and B * 12 * V * vp.element_size() <= KEEP_TV_BYTES else None
    for b0 in range(0, B, CHUNK):
        b1 = min(B, b0 + CHUNK)
        Tv = torch.matmul(A[b0:b1], weights_t, out=None if keep is None else keep[b0:b1].view(b1 - b0, 12, V))
        Tv = Tv.view(b1 - b0, 3, 4, V)
        v = vp[b0:b1]
        torch.addcmul(Tv[:, :, 3], Tv[:, :, 0], v[:, 0:1], out=out[b0:b1])
        out[b0:b1].addcmul_(Tv[:, :, 1], v[:, 1:2]).addcmul_(Tv[:, :, 2], v[:, 2:3])
    return out.transpose(1, 2), vp, A, keep


def _backward_chunked(g, vp, A, kept, dirs, weights_t, num_betas: int, need_x: bool, need_transforms: bool):
    """(dL/dbetas, dL/dpose_feature, dL/dtransforms), None where not needed (header's maths), a block of
    CHUNK bodies at a time, T_v taken from the forward (kept) or recomputed per block (a product with 24
    terms)."""
    B, _, V = vp.shape
    gp = g.transpose(1, 2)  # (B, 3, V)
    gv = vp.new_empty(B, 3, V) if need_x else None
    gA = A.new_empty(B, 24, 12) if need_transforms else None
    gTv = vp.new_empty(min(B, CHUNK), 3, 4, V) if need_transforms else None
    for b0 in range(0, B, CHUNK):
        b1 = min(B, b0 + CHUNK)
        n = b1 - b0
        gc = gp[b0:b1]
        if need_transforms:  # dL/dT_v = [g v_posed^T | g] (n, 3, 4, V)
            torch.mul(gc[:, :, None], vp[b0:b1, None], out=gTv[:n, :, :3])
            gTv[:n, :, 3] = gc
            torch.matmul(weights_t, gTv[:n].view(n, 12, V).transpose(1, 2), out=gA[b0:b1])
        if need_x:
            Tv = kept[b0:b1] if kept is not None else torch.matmul(A[b0:b1], weights_t).view(n, 3, 4, V)
            torch.mul(Tv[:, 0, :3], gc[:, 0:1], out=gv[b0:b1])
            gv[b0:b1].addcmul_(Tv[:, 1, :3], gc[:, 1:2]).addcmul_(Tv[:, 2, :3], gc[:, 2:3])
    g_betas = g_pose = g_transforms = None
    if need_transforms:
        g_transforms = gA.view(B, 24, 3, 4)
    if need_x:
        gx = torch.mm(gv.view(B, 3 * V), dirs.t())
        g_betas, g_pose = gx[:, :num_betas], gx[:, num_betas:]
    return g_betas, g_pose, g_transforms


class _Skinning(torch.autograd.Function):
    @staticmethod
    def forward(ctx, betas, pose_feature, transforms, v_template, dirs, weights_t):
        out, vp, A, kept = _forward_chunked(betas, pose_feature, transforms, v_template, dirs, weights_t,
                                            any(ctx.needs_input_grad[:3]))
        ctx.save_for_backward(vp, A, kept, dirs, weights_t)
        ctx.num_betas = betas.shape[1]
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        need = ctx.needs_input_grad
        grads = _backward_chunked(g, *ctx.saved_tensors, ctx.num_betas, need[0] or need[1], need[2])
        return (*grads, None, None, None)


def skinning_cpu(betas: torch.Tensor, pose_feature: torch.Tensor, transforms: torch.Tensor,
                 basis: SkinningBasis) -> torch.Tensor:
    """betas (B, S); pose_feature (B, 207); transforms (B, 24, 3, 4); basis from `skinning_basis`.
    Returns vertices (B, V, 3) (a view of a coordinate-major tensor), differentiable w.r.t. betas,
    pose_feature and transforms."""
    return _Skinning.apply(betas, pose_feature, transforms, *basis)
