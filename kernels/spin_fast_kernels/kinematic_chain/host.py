"""The fused Rodrigues + kinematic chain in NumPy: the eager path of `rodrigues_chain` for CPU tensors.

The same planar maths as cpu.py (its header derives the forward and the written-out backward), run on
NumPy views of the tensors' memory. Why NumPy: at SMPL's sizes the op is a few hundred tiny
element-wise steps, so its time is per-call cost. A NumPy call costs about half of a torch call and a
slice or reshape a tenth (no autograd or dispatcher bookkeeping), while the arithmetic runs the same
vectorised loops: on one thread this op is about 2.3x / 1.5x / 1.1x faster than cpu.py's torch code
forward and 1.4-1.9x forward + backward at 64 / 512 / 4096 bodies (benches/RESULTS.md). The few matrix
products go through torch (its thread pool; NumPy's BLAS would start a second one). cpu.py stays the
path for other devices and dtypes and for `SPIN_FAST_COMPILE=1` (torch.compile needs torch code), and
with reference.py this path's oracle. In float32 the backward takes W^-T = W (the rotations are
orthonormal to ~1e-8, below float32's rounding); float64 divides the cofactors by the determinant as
cpu.py does.

Layout: axis-angle v (n, 3, B), rotations (n, 3, 3, B), G = [W | t] (n, 3, 4, B), batch last, as in
cpu.py; a 3 x 3 product is one einsum over contiguous (.., B) rows. Only float32 and float64 come here.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from .cpu import chain_plan


class HostPlan(NamedTuple):
    """A tree's constants: cpu.py's `ChainPlan` as NumPy arrays (built once per parents and dtype)."""

    levels: tuple  # per depth >= 1: (children, parents), each a slice where it can be, else an index array
    parent_index: np.ndarray  # (n,) parent of each joint, n (an identity slot) for the root
    subtree: np.ndarray  # (n, n) S[i, j] = 1 where j is in subtree(i) (i included)
    rel: np.ndarray  # (n, n) D: rel = D J (rel_i = J_i - J_parent, rel_0 = J_0)


_PLANS: dict = {}


def host_plan(parents: Sequence[int], dtype: torch.dtype) -> HostPlan:
    """The plan of `parents` (parents[i] < i, parents[0] ignored) for float32 / float64, cached."""
    key = (tuple(int(p) for p in parents), dtype)
    plan = _PLANS.get(key)
    if plan is None:
        c = chain_plan(key[0], dtype, torch.device("cpu"))
        block = lambda b: b if isinstance(b, slice) else b.numpy().astype(np.intp)  # noqa: E731
        plan = _PLANS[key] = HostPlan(tuple((block(ch), block(par)) for ch, par in c.levels),
                                      c.parent_index.numpy().astype(np.intp), c.subtree.numpy(), c.rel.numpy())
    return plan


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D arrays through torch (its threads and BLAS; NumPy's own BLAS would start a second
    thread pool beside torch's)."""
    return torch.mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _mm3(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Planar products a (..., 3, 3, B) @ b (..., 3, k, B) -> (..., 3, k, B) (leading dims broadcast)."""
    return np.einsum("...ijb,...jkb->...ikb", a, b, out=out)


# [x, y, z, -x, -y, -z, d] gathered into a flattened 3 x 3 (row-major): skew(x, y, z) + d I
_SKEW_D = np.asarray([6, 5, 1, 2, 6, 3, 4, 0, 6], dtype=np.intp)
# vee(G - G^T) = G[(2,1), (0,2), (1,0)] - G[(1,2), (2,0), (0,1)] of a flattened G
_VEE_PLUS, _VEE_MINUS = np.asarray([7, 2, 3], dtype=np.intp), np.asarray([5, 6, 1], dtype=np.intp)
# the rows (or columns) of a 3 x 3 shifted by 1 and by 2
_SHIFT1, _SHIFT2 = np.asarray([1, 2, 0], dtype=np.intp), np.asarray([2, 0, 1], dtype=np.intp)


def _rodrigues_fwd(v: np.ndarray):
    """v (n, 3, B) -> R (n, 3, 3, B) and what the vjp needs."""
    n, _, B = v.shape
    e = v + v.dtype.type(1e-8)
    a = np.sqrt(np.einsum("nib,nib->nb", e, e))[:, None]  # (n, 1, B): |e|
    u = v / a
    s, c = np.sin(a), np.cos(a)
    oc = 1.0 - c
    uu = np.einsum("nib,nib->nb", u, u)[:, None]
    R = np.multiply((oc * u)[:, :, None], u[:, None])  # oc u u^T
    su = s * u
    R.reshape(n, 9, B)[:] += np.concatenate([su, -su, 1.0 - oc * uu], 1)[:, _SKEW_D]  # + s skew(u) + (1 - oc u.u) I
    return R, (e, a, u, s, c, oc, uu)


def _rodrigues_vjp(cache, G: np.ndarray) -> np.ndarray:
    """dL/dv (n, 3, B) from G = dL/dR (n, 3, 3, B) (contiguous)."""
    e, a, u, s, c, oc, uu = cache
    n, B = G.shape[0], G.shape[-1]
    Gf = G.reshape(n, 9, B)
    w = Gf[:, _VEE_PLUS] - Gf[:, _VEE_MINUS]  # vee(G - G^T) (n, 3, B)
    tr = np.einsum("niib->nb", G)[:, None]  # (n, 1, B)
    Gsu = np.einsum("nijb,njb->nib", G + G.transpose(0, 2, 1, 3), u)  # (G + G^T) u
    gu = s * w + oc * (Gsu - 2.0 * tr * u)
    uw, uGu2, ugu = (np.einsum("nib,nib->nb", u, x)[:, None] for x in (w, Gsu, gu))
    ga = c * uw + s * (0.5 * uGu2 - uu * tr) - ugu / a
    return (gu + ga * e) / a


def _chain_fwd(M: np.ndarray, plan: HostPlan) -> np.ndarray:
    """M (n, 3, 4, B) = [R | rel] -> G (n, 3, 4, B) = [W | t]."""
    G = np.empty_like(M)
    G[0] = M[0]
    for ch, par in plan.levels:
        Gp = G[par]
        if isinstance(ch, slice):
            _mm3(Gp[:, :, :3], M[ch], out=G[ch])
            G[ch, :, 3] += Gp[:, :, 3]
        else:
            Gc = _mm3(Gp[:, :, :3], M[ch])
            Gc[:, :, 3] += Gp[:, :, 3]
            G[ch] = Gc
    return G


def _inverse_transpose(W: np.ndarray) -> np.ndarray:
    """W^-T = cofactor(W) / det(W) for planar W (n, 3, 3, B): row i of the cofactor matrix is the
    cross product of rows i + 1 and i + 2."""
    A, C = W[:, _SHIFT1], W[:, _SHIFT2]  # rows shifted by 1 and by 2
    cof = A[:, :, _SHIFT1] * C[:, :, _SHIFT2]
    cof -= A[:, :, _SHIFT2] * C[:, :, _SHIFT1]
    cof /= np.einsum("nib,nib->nb", W[:, 0], cof[:, 0])[:, None, None]  # det(W)
    return cof


def _chain_vjp(G, J, gt, gT, plan: HostPlan):
    """(dL/dR (n, 3, 3, B), dL/dJ (n, 3, B)) from gt (n, 3, B) or None and gT (n, 3, 4, B) or None."""
    n, B = J.shape[0], J.shape[-1]
    W, t = G[:, :, :3], G[:, :, 3]
    if gT is not None:
        gtt = gT[:, :, 3]
        gt = gtt if gt is None else gt + gtt
        gW = gT[:, :, :3] - gtt[:, :, None] * J[:, None]
    stacked = np.empty((n, 12, B), dtype=G.dtype)  # [P (9) | gt (3)], P = gt t^T (+ gW W^T)
    P = stacked[:, :9].reshape(n, 3, 3, B)
    np.einsum("nkb,nlb->nklb", gt, t, out=P)
    if gT is not None:
        P += np.einsum("nkmb,nlmb->nklb", gW, W)
    stacked[:, 9:] = gt
    sums = _mm(plan.subtree, stacked.reshape(n, 12 * B)).reshape(n, 12, B)
    Sg = sums[:, 9:]
    Q = sums[:, :9].reshape(n, 3, 3, B)
    Q -= np.einsum("nkb,nlb->nklb", Sg, t)
    eye = np.broadcast_to(np.eye(3, dtype=W.dtype)[None, :, :, None], (1, 3, 3, B))  # the root's parent slot
    Wp = np.concatenate([W, eye])[plan.parent_index]
    # W^-T: W itself to ~1e-8 (the rotations are orthonormal to the eps), below float32's rounding
    Winv_t = _inverse_transpose(W) if W.dtype == np.float64 else W
    gR = np.einsum("nkib,nkjb->nijb", Wp, _mm3(Q, Winv_t))  # W_p^T Q W^-T
    grel = np.einsum("nkib,nkb->nib", Wp, Sg)  # W_p^T Sg
    gJ = _mm(plan.rel.T, grel.reshape(n, 3 * B)).reshape(n, 3, B)
    if gT is not None:
        gJ -= np.einsum("nkib,nkb->nib", W, gtt)  # W^T gtt
    return gR, gJ


def _planar(t: torch.Tensor | None) -> np.ndarray | None:
    """A batch-major tensor (B, ...) as a contiguous batch-last array (..., B)."""
    if t is None:
        return None
    a = t.detach().numpy()
    return np.ascontiguousarray(a.transpose(*range(1, a.ndim), 0))


def _batch_major(a: np.ndarray) -> torch.Tensor:
    """A planar array (..., B) as a batch-major tensor view (B, ...)."""
    return torch.from_numpy(a).permute(a.ndim - 1, *range(a.ndim - 1))


def _forward_planar(v: np.ndarray, J: np.ndarray, plan: HostPlan, need_transforms: bool):
    """Planar v, J (n, 3, B) -> the op's outputs (batch-major views: rotmats (B, n, 3, 3), posed joints
    (B, n, 3), transforms (B, n, 3, 4) or None) and what the backward needs."""
    n, B = J.shape[0], J.shape[-1]
    R, rcache = _rodrigues_fwd(v)
    M = np.empty((n, 3, 4, B), dtype=v.dtype)
    M[:, :, :3] = R
    M[:, :, 3] = _mm(plan.rel, J.reshape(n, 3 * B)).reshape(n, 3, B)
    G = _chain_fwd(M, plan)
    T = None
    if need_transforms:
        T = G.copy()
        T[:, :, 3] -= np.einsum("nijb,njb->nib", G[:, :, :3], J)  # [W | t - W J]
        T = _batch_major(T)
    return (_batch_major(R), _batch_major(np.ascontiguousarray(G[:, :, 3])), T), (G, J, rcache)


def _backward_planar(saved: tuple, gR_out, gt, gT, plan: HostPlan):
    """Planar (dL/dv, dL/dJ) (n, 3, B) from the outputs' planar gradients (any may be None)."""
    G, J, rcache = saved
    if gt is None and gT is None:
        gR, gJ = np.zeros_like(G[:, :, :3]), np.zeros_like(J)
    else:
        gR, gJ = _chain_vjp(G, J, gt, gT, plan)
    if gR_out is not None:
        gR += gR_out
    return _rodrigues_vjp(rcache, gR), gJ


class _HostRodriguesChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, axis_angle, rest_joints, plan, need_transforms):
        outputs, ctx.saved = _forward_planar(_planar(axis_angle), _planar(rest_joints), plan, need_transforms)
        ctx.plan = plan
        return outputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gR_out, gt, gT):
        gv, gJ = _backward_planar(ctx.saved, _planar(gR_out), _planar(gt), _planar(gT), ctx.plan)
        return _batch_major(gv), _batch_major(gJ), None, None


class _HostShapedChain(torch.autograd.Function):
    """The body model's steps 1-4 in one op: rest joints from betas, Rodrigues of the pose, the chain."""

    @staticmethod
    def forward(ctx, betas, global_orient, body_pose, joint_template, joint_shapedirs, plan, need_transforms):
        n, S, B = joint_template.shape[0], betas.shape[1], betas.shape[0]
        dirs = joint_shapedirs.numpy().reshape(3 * n, S)
        J = _mm(dirs, betas.detach().numpy().T).reshape(n, 3, B)  # J_template + J_shapedirs . betas, planar
        J += joint_template.numpy()[:, :, None]
        v = np.empty((n, 3, B), dtype=J.dtype)
        v[0] = global_orient.detach().numpy().reshape(B, 3).T
        v[1:] = body_pose.detach().numpy().reshape(B, n - 1, 3).transpose(1, 2, 0)
        outputs, ctx.saved = _forward_planar(v, J, plan, need_transforms)
        ctx.plan, ctx.dirs, ctx.shapes = plan, dirs, (global_orient.shape, body_pose.shape)
        return outputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gR_out, gt, gT):
        gv, gJ = _backward_planar(ctx.saved, _planar(gR_out), _planar(gt), _planar(gT), ctx.plan)
        n, B = gv.shape[0], gv.shape[-1]
        g_betas = torch.from_numpy(_mm(gJ.reshape(3 * n, B).T, ctx.dirs))  # J_shapedirs^T dL/dJ
        g_pose = torch.from_numpy(gv.transpose(2, 0, 1).reshape(B, 3 * n))  # (B, [orient | body])
        orient_shape, body_shape = ctx.shapes
        return (g_betas, g_pose[:, :3].reshape(orient_shape), g_pose[:, 3:].reshape(body_shape),
                None, None, None, None)


def host_accepts(t: torch.Tensor) -> bool:
    """Whether this path takes `t`: a float32 / float64 tensor on the CPU."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _plan_for(t: torch.Tensor, parents: Sequence[int], op: str) -> HostPlan:
    if not host_accepts(t):
        raise ValueError(f"{op}: CPU float32 / float64 tensors only, got {t.dtype} on {t.device}")
    return host_plan(parents, t.dtype)


def rodrigues_chain_host(
    axis_angle: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int], need_transforms: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`rodrigues_chain_cpu`'s contract (same inputs, outputs and written-out backward) for float32 /
    float64 tensors on the CPU, computed in NumPy."""
    plan = _plan_for(axis_angle, parents, "rodrigues_chain_host")
    return _HostRodriguesChain.apply(axis_angle, rest_joints.to(axis_angle.dtype), plan, need_transforms)


def shaped_rodrigues_chain_host(
    betas: torch.Tensor, global_orient: torch.Tensor, body_pose: torch.Tensor, joint_template: torch.Tensor,
    joint_shapedirs: torch.Tensor, parents: Sequence[int], need_transforms: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The body model's rest joints and `rodrigues_chain_host` in one op, for CPU float32 / float64:
    rest joints J = joint_template (J, 3) + joint_shapedirs (J, 3, S) . betas (B, S); axis-angle
    global_orient (B, 3) | (B, 1, 3) then body_pose (B, 3 (J - 1)) | (B, J - 1, 3), all in one dtype.
    Returns rotmats, posed_joints, transforms (or None) as `rodrigues_chain_host`; differentiable
    w.r.t. betas, global_orient and body_pose (one autograd node instead of five)."""
    plan = _plan_for(betas, parents, "shaped_rodrigues_chain_host")
    return _HostShapedChain.apply(betas, global_orient, body_pose, joint_template, joint_shapedirs, plan,
                                  need_transforms)
