"""A whole SMPLify fit in plain torch with gradients derived by hand (no autograd): the oracle of the
one-launch Triton kernel and the CPU production path.

The op's contract (this file, the kernel's launcher `function.smplify_fit_triton` and
`spin_fast.smplify.fit.SMPLify` share it):

    smplify_fit_torch(consts: FitConstants, opts: FitOptions, pose, betas, cam_t, keypoints2d, center)
        -> FitOutput

Inputs are the raw arguments of `SMPLify.__call__` after its shape checks, already cast to the
compute dtype (float32 or float64) on the body model's device:
    pose (B, 72) axis-angle, global orient first;  betas (B, S);  cam_t (B, 3)
    keypoints2d (B, 49, 3) crop pixels + confidence;  center (B, 2) principal point
The op does everything `SMPLify.__call__` does after the checks (today's semantics, bit for bit in
structure, equal to rounding in value): the input sanitising and the valid_in rule, stage-1 set-up
(X0 with zero global orient, J0, SPIN's torso choice or all joints), both Adam stages with the
per-sample bookkeeping (non-finite inputs / nothing to fit -> frozen; non-finite loss or gradient
-> frozen and diverged; ftol stop), and the result (joint_loss, total_loss, validity, input rows
kept where invalid, iterations).

How this file computes it (no autograd: every term is a small forward + vector-Jacobian pair,
checked against torch.autograd in tests/test_smplify_hand.py):
  1. set-up and result through the ops' torch references (`joints_reference`, `data_reference`,
     `priors_reference`), so a result is scored exactly as SMPLify.joint_loss / priors score it;
  2. stage 1 (`stage1_objective`): one Rodrigues and the rigid root turn of the joints computed once;
  3. stage 2 (`stage2_objective`): Rodrigues of the 24 joints at once, the chain a tree level at a
     time, the folded regressor (x C, then gathers by bone and sums by joint), the smpl_49 assembly,
     the robust reprojection and the priors (GMM as one (M, B, 69) product, gradient P_k* d_k*).
     The body runs component-major with the batch last ((3, 3, 24, B), (3, 24, B)): on CPU a
     batched product of 3 x 4 matrices, or an elementwise op over a trailing axis of 3, costs
     several times a broadcast product summed over the contracted axis that runs along (joints, B);
  4. `_Adam`: torch.optim.Adam's update on flat (B, n) buffers with the per-sample bookkeeping of
     SMPLify._adam; a stage stops early once no row is active (the remaining steps change nothing).
Batch stop (opts.batch_stop): see `smplify_fit_torch`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..gmm_prior.reference import gmm_prior_torch
from ..joints_only.reference import joints_only_torch
from ..kinematic_chain.reference import kinematic_chain_torch, rodrigues_torch
from ..reprojection.reference import reprojection_loss_torch


class FitConstants(NamedTuple):
    """Model constants of a fit, in the compute dtype on the fit's device (built once by SMPLify)."""

    parents: tuple  # (24,) python ints, parents[0] = -1, parents[i] < i
    J_template: torch.Tensor  # (24, 3) rest joints of the template
    J_shapedirs: torch.Tensor  # (24, 3, S) rest joints' shape blend
    coeffs: torch.Tensor  # (P, 3, K = 1 + S + 207) folded regressor of the smpl_49 vertex joints
    bone_weight: torch.Tensor  # (P,)
    pair_joint: torch.Tensor  # (P,) int64 vertex joint of each pair, in [0, Jv)
    pair_bone: torch.Tensor  # (P,) int64 bone of each pair, in [0, 24)
    num_vertex_joints: int  # Jv
    joint_index: torch.Tensor  # (49,) int64: smpl_49 = cat([posed 24 | vertex Jv])[joint_index]
    row_sums: torch.Tensor  # (49,) how much of the rest root each joint carries (1 for rigid joints)
    gmm_means: torch.Tensor  # (M, 69)
    gmm_precisions: torch.Tensor  # (M, 69, 69) symmetric
    gmm_nll: torch.Tensor  # (M,) per-component constant (gmm_constants' third output)
    angle_index: torch.Tensor  # (4,) int64 indices into body_pose (69)
    angle_signs: torch.Tensor  # (4,)
    stage2_keep: torch.Tensor  # (49,) 0 for the joints stage 2 ignores, 1 elsewhere
    torso: torch.Tensor  # (2, 4) int64: row 0 OpenPose hips/shoulders, row 1 the ground-truth ones


class FitOptions(NamedTuple):
    """Numeric switches of a fit (python numbers; no codebase names)."""

    stage1_iters: int
    stage2_iters: int
    lr: float
    focal_length: float
    img_res: float  # crop side: default centre img_res / 2 and the fallback translation
    kp_norm: float  # S of the normalised units (units = 1): e = 2 r / kp_norm
    units: int  # 0: pixel residuals, GMoF, conf^2 (SPIN); 1: GMoF of squared normalised residuals, conf (mmhuman3d)
    sigma: float  # GMoF sigma of the data term (100)
    stage1_all_joints: bool  # True: stage 1 fits every joint (stage-2 conf) + priors as a constant; False: SPIN's torso
    depth_weight: float  # weight of (t_z - t_z_init)^2 in stage 1 (SPIN: 100^2; mmhuman3d 0)
    angle_minus_one: bool  # angle prior (exp(s theta) - 1)^2 instead of exp(s theta)^2
    pose_prior_weight: float  # squared weights: 4.78^2, 15.2^2, 5^2
    angle_prior_weight: float
    shape_prior_weight: float
    ftol: float  # relative loss change below which a sample (or the batch) stops; 0 = off
    batch_stop: bool  # True: the ftol test on the batch's summed loss stops every sample at once
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


class FitOutput(NamedTuple):
    pose: torch.Tensor  # (B, 72) fit, or the input row where invalid
    betas: torch.Tensor  # (B, S)
    cam_t: torch.Tensor  # (B, 3)
    joint_loss: torch.Tensor  # (B, 49) stage-2 data term per joint at the result (inf where invalid)
    total_loss: torch.Tensor  # (B,) stage-2 objective at the result (inf where invalid)
    valid: torch.Tensor  # (B,) bool
    iterations: torch.Tensor  # (B, 2) int64 Adam steps taken in stage 1 and stage 2


# --- small terms: forward + vector-Jacobian product -------------------------------------------------
# Each `*_fwd` returns the value and what its vjp needs; each `*_vjp` maps the upstream gradient of
# the value to the gradients of the inputs. Shapes: B samples, n joints.

_SKEW = ((0, 0, 0, 0, 0, -1, 0, 1, 0), (0, 0, 1, 0, 0, 0, -1, 0, 0), (0, -1, 0, 1, 0, 0, 0, 0, 0))  # u -> skew(u), flat
_EYE9 = (1, 0, 0, 0, 1, 0, 0, 0, 1)
_HOMOGENEOUS_ROW = (0.0, 0.0, 0.0, 1.0)
_VEE_TRACE = tuple(zip(*_SKEW, _EYE9))  # (9, 4): flat G -> (vee(G - G^T), tr G)
_CONSTANTS: dict = {}


def _constant(values: tuple, like: torch.Tensor) -> torch.Tensor:
    """A small constant tensor in like's dtype and device, built once (no copy per iteration)."""
    key = (values, like.dtype, like.device)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = torch.tensor(values, dtype=like.dtype, device=like.device)
    return t


def _rodrigues_cm(vc: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """`rodrigues_fwd` component-major: vc (3, N) -> R (9, N) (row 3 i + j holds R_ij)."""
    e = vc + 1e-8
    a = (e * e).sum(0, keepdim=True).sqrt_()  # (1, N) |e| (vector_norm along dim 0 is far slower here)
    u = vc / a
    s, c = torch.sin(a), torch.cos(a)
    oc = 1 - c
    uu = (u * u).sum(0, keepdim=True)
    eye = _constant(_EYE9, vc)[:, None]
    outer = (u[:, None] * u[None]).view(9, -1)  # u u^T
    R = torch.addcmul(torch.addcmul(eye, s, _constant(_SKEW, vc).t() @ u), oc, torch.addcmul(outer, uu, eye, value=-1))
    return R, (e, a, u, s, c, oc, uu)


def _rodrigues_vjp_cm(cache: tuple, G9: torch.Tensor) -> torch.Tensor:
    """`rodrigues_vjp` component-major: G9 (9, N) -> dL/dv (3, N)."""
    e, a, u, s, c, oc, uu = cache
    wt = _constant(_VEE_TRACE, G9).t() @ G9  # (4, N): vee(G - G^T), tr G
    w, tr = wt[:3], wt[3:]
    G3 = G9.view(3, 3, -1)
    Gsu = ((G3 + G3.transpose(0, 1)) * u[None]).sum(1)  # (G + G^T) u = 2 G_sym u
    gu = torch.addcmul(s * w, oc, torch.addcmul(Gsu, tr, u, value=-2))
    dots = (torch.stack([w, Gsu, gu]) * u[None]).sum(1)  # u.w, u.(G + G^T) u = 2 u^T G u, u.gu
    ga = c * dots[0:1] + s * (0.5 * dots[1:2] - uu * tr) - dots[2:3] / a
    return torch.addcmul(gu, ga, e) / a


def rodrigues_fwd(v: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """v (..., 3) axis-angle -> R (..., 3, 3), smplx's convention (kinematic_chain/reference.py):
    e = v + 1e-8, a = |e|, u = v / a, K = skew(u);  R = I + sin(a) K + (1 - cos a) (u u^T - (u.u) I)."""
    R, cache = _rodrigues_cm(v.reshape(-1, 3).t().contiguous())
    return R.t().reshape(*v.shape, 3).contiguous(), cache


def rodrigues_vjp(cache: tuple, G: torch.Tensor) -> torch.Tensor:
    """dL/dv from G = dL/dR (..., 3, 3) (kinematic_chain/kernel.py's header):
    w = vee(G - G^T), gu = sin(a) w + (1 - cos a) ((G + G^T) u - 2 tr(G) u),
    ga = cos(a) u.w + sin(a) (u^T G u - (u.u) tr G) - gu.u / a,   dL/dv = (gu + ga e) / a."""
    return _rodrigues_vjp_cm(cache, G.reshape(-1, 9).t().contiguous()).t().reshape(G.shape[:-1])


def _spec(idx: list, device):
    """A list of joint indices as a slice where they are consecutive, else an index tensor."""
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return slice(idx[0], idx[0] + len(idx))
    return torch.tensor(idx, device=device)


def _take(t: torch.Tensor, spec, dim: int) -> torch.Tensor:
    return t[(slice(None),) * dim + (spec,)] if isinstance(spec, slice) else t.index_select(dim, spec)


class ChainPlan(NamedTuple):
    """A tree's joints by depth, for one product a level. Component-major tensors (..., n, B):
    a level whose joints are consecutive is one strided block."""

    levels: list  # per depth >= 1: (children, parents): slices where consecutive, else index tensors
    rel: torch.Tensor  # (n, n) rest joints -> bone vectors: rel_i = J_i - J_parent(i), rel_0 = J_0
    parents: torch.Tensor  # (n - 1,) int64 parents of joints 1..n-1


def chain_plan(parents, device, dtype) -> ChainPlan:
    n = len(parents)
    depth = [0] * n
    for i in range(1, n):
        depth[i] = depth[parents[i]] + 1
    levels = []
    for d in range(1, max(depth, default=0) + 1):
        ch = [i for i in range(n) if depth[i] == d]
        par = [parents[i] for i in ch]
        levels.append((_spec(ch, device), slice(par[0], par[0] + 1) if len(set(par)) == 1 else _spec(par, device)))
    rel = torch.eye(n, dtype=dtype, device=device)
    rel[torch.arange(1, n), torch.tensor(list(parents[1:]))] -= 1.0
    return ChainPlan(levels, rel, torch.tensor(list(parents[1:]), dtype=torch.long, device=device))


def _chain_cm(R: torch.Tensor, J: torch.Tensor, plan: ChainPlan) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """`chain_fwd` component-major: R (3, 3, n, B), J (3, n, B) -> G, T (3, 4, n, B). A matrix product
    is a broadcast product summed over the contracted axis, so every op runs along (joints, B)."""
    n, B = J.shape[1:]
    A = J.new_empty(4, 4, n, B)
    A[:3, :3] = R
    A[:3, 3] = plan.rel @ J
    A[3] = _constant(_HOMOGENEOUS_ROW, J)[:, None, None]
    G = J.new_empty(3, 4, n, B)
    G[:, :, 0] = A[:3, :, 0]
    for ch, par in plan.levels:  # G_c[i, j] = sum_k G_p[i, k] A_c[k, j]
        G[:, :, ch] = (_take(G, par, 2)[:, :, None] * _take(A, ch, 2)[None]).sum(1)
    W = G[:, :3]
    T = torch.empty_like(G)
    T[:, :3] = W
    torch.sub(G[:, 3], (W * J[None]).sum(1), out=T[:, 3])
    return G, T, (A, W, J)


def _chain_vjp_cm(cache: tuple, gt: torch.Tensor | None, gT: torch.Tensor, plan: ChainPlan
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """`chain_vjp` component-major: gt (3, n, B) or None, gT (3, 4, n, B) -> gR (3, 3, n, B), gJ (3, n, B)."""
    A, W, J = cache
    gtt = gT[:, 3]  # (3, n, B)
    gG = gT.clone()
    if gt is not None:
        gG[:, 3] += gt
    gG[:, :3].addcmul_(gtt[:, None], J[None], value=-1)
    gJ = -(W * gtt[:, None]).sum(0)
    for ch, par in reversed(plan.levels):  # the accumulation is sequential; the rest is done after it
        up = (_take(gG, ch, 2)[:, None] * _take(A, ch, 2)[None]).sum(2)  # gG_c A_c^T
        if isinstance(par, slice):
            if par.stop - par.start < up.shape[2]:  # one parent for the whole level
                gG[:, :, par] += up.sum(2, keepdim=True)
            else:
                gG[:, :, par] += up
        else:
            gG.index_add_(2, par, up)
    gRr = torch.empty_like(gG)  # [gR | grel]
    gRr[:, :, 0] = gG[:, :, 0]
    gRr[:, :, 1:] = (W.index_select(2, plan.parents)[:, :, None] * gG[:, None, :, 1:]).sum(0)  # W_p^T gG
    gJ += plan.rel.t() @ gRr[:, 3]
    return gRr[:, :3], gJ


def chain_fwd(R: torch.Tensor, J: torch.Tensor, plan: ChainPlan) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Forward kinematics, one product a tree level, in 3 x 4 form; joint-major interface.
    R (n, B, 3, 3) local rotations, J (n, B, 3) rest joints ->
    G (n, B, 3, 4) = [W | t] (world rotations, posed joints) and T (n, B, 3, 4) = [W | t - W J]
    (the skinning transforms):  with A_i = [[R_i, J_i - J_p], [0, 1]] (A_0 = [[R_0, J_0], [0, 1]]),
        G_0 = A_0[:3],  G_i = G_p A_i.
    Computed component-major (`_chain_cm`, what body_fwd runs); the cache is component-major."""
    G, T, cache = _chain_cm(R.permute(2, 3, 0, 1), J.permute(2, 0, 1), plan)
    return G.permute(2, 3, 0, 1), T.permute(2, 3, 0, 1), cache


def chain_vjp(cache: tuple, gt: torch.Tensor | None, gT: torch.Tensor, plan: ChainPlan
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (gR (n, B, 3, 3), gJ (n, B, 3)) from those of the posed joints t (n, B, 3) (or None)
    and of T = [W | tt] (n, B, 3, 4), joint-major. With G = [W | t]: tt = t - W J gives
    gG = [gW - gtt J^T | gt + gtt] and gJ = -W^T gtt. Then the levels deepest first, each child's
    accumulated gG_c = [gW_c | gt_c] giving
        [gR_c | grel_c] = W_p^T gG_c,   gG_p += gG_c A_c^T = [gW_c R_c^T + gt_c rel_c^T | gt_c]
    (the root: [gR_0 | grel_0] = gG_0); and rel = D J: gJ += D^T grel. (`_chain_vjp_cm`.)"""
    gR, gJ = _chain_vjp_cm(cache, None if gt is None else gt.permute(2, 0, 1), gT.permute(2, 3, 0, 1), plan)
    return gR.permute(2, 3, 0, 1), gJ.permute(1, 2, 0)


class Folded(NamedTuple):
    """The folded regressor laid out for matrix products and row gathers (`fold_pairs`)."""

    C: torch.Tensor  # (K, 4P): x C = per pair (local_p, w_p), coordinate-major (column d P + p)
    pair_bone: torch.Tensor  # (P,) int64 bone of each pair
    pair_joint: torch.Tensor  # (P,) int64 vertex joint of each pair
    num_joints: int  # Jv


def fold_pairs(coeffs: torch.Tensor, bone_weight: torch.Tensor, pair_joint: torch.Tensor, pair_bone: torch.Tensor,
               num_joints: int, num_bones: int) -> Folded:
    """The folded regressor (P, 3, K) and bone weights (P,) as one matrix; w_p rides on x's constant 1,
    so x C holds (local_p, w_p) for every pair. (num_bones, T's joint axis, needs no table.)"""
    P, _, K = coeffs.shape
    wrow = torch.zeros(P, 1, K, dtype=coeffs.dtype, device=coeffs.device)
    wrow[:, 0, 0] = bone_weight
    C = torch.cat([coeffs, wrow], 1).permute(2, 1, 0).reshape(K, 4 * P).contiguous()
    return Folded(C, pair_bone.to(coeffs.device), pair_joint.to(coeffs.device), num_joints)


def _joints_only_cm(xt: torch.Tensor, T: torch.Tensor, fold: Folded) -> tuple[torch.Tensor, tuple]:
    """`joints_only_fwd` component-major: xt (K, B) = x^T, T (3, 4, 24, B) -> vertex joints (3, Jv, B).
    Pairs run along the joint axis: the gather by bone is an index_select, the sum by joint an index_add_."""
    B = xt.shape[1]
    P = fold.pair_bone.shape[0]
    loc = (fold.C.t() @ xt).view(4, P, B)  # (local_p, w_p)
    Tg = T.index_select(2, fold.pair_bone)  # (3, 4, P, B): T_{k_p}
    pp = (Tg * loc[None]).sum(1)  # (3, P, B)
    return xt.new_zeros(3, fold.num_joints, B).index_add_(1, fold.pair_joint, pp), (loc, Tg, T.shape[2])


def _joints_only_vjp_cm(cache: tuple, g: torch.Tensor, fold: Folded) -> tuple[torch.Tensor, torch.Tensor]:
    """`joints_only_vjp` component-major: g (3, Jv, B) -> (dL/dx^T (K, B), dL/dT (3, 4, 24, B))."""
    loc, Tg, nb = cache
    P, B = loc.shape[1:]
    gp = g.index_select(1, fold.pair_joint)  # (3, P, B): g_{j_p}
    gT = g.new_zeros(3, 4, nb, B).index_add_(2, fold.pair_bone, gp[:, None] * loc[None])
    gloc = (Tg * gp[:, None]).sum(0)  # (4, P, B): T_{k_p}^T g_{j_p}
    return fold.C @ gloc.view(4 * P, B), gT


def joints_only_fwd(x: torch.Tensor, T: torch.Tensor, fold: Folded) -> tuple[torch.Tensor, tuple]:
    """The folded regressor (joints_only/reference.py): x (B, K) = [1, betas, pose feature],
    T (24, B, 3, 4) transforms (joint-major) -> joints (B, Jv, 3):
        (local_p, w_p) = x C_p,   joint_j = sum_{p: j_p = j} T_{k_p} (local_p, w_p).
    Computed component-major (`_joints_only_cm`)."""
    vj, cache = _joints_only_cm(x.t(), T.permute(2, 3, 0, 1), fold)
    return vj.permute(2, 1, 0), cache


def joints_only_vjp(cache: tuple, g: torch.Tensor, fold: Folded) -> tuple[torch.Tensor, torch.Tensor]:
    """From g = dL/djoints (B, Jv, 3): dL/dx (B, K) = (T_{k_p}^T g_{j_p})_p (B, 4P) @ C^T (its first
    entry belongs to the constant 1), dL/dT_k (24, B, 3, 4) = sum_{p: k_p = k} g_{j_p} (local_p, w_p)^T."""
    gxt, gT = _joints_only_vjp_cm(cache, g.permute(2, 1, 0), fold)
    return gxt.t(), gT.permute(2, 3, 0, 1)


def project_fwd(joints: torch.Tensor, cam_t: torch.Tensor, keypoints: torch.Tensor, conf: torch.Tensor | None,
                focal_length: float, center: torch.Tensor, sigma: float, units: int, kp_norm: float
                ) -> tuple[torch.Tensor, tuple]:
    """Robust reprojection per joint (B, n) (reprojection/reference.py):
    X = joints + t, p = f X_xy / X_z + c, r = p - kp, rho(x) = sigma^2 x^2 / (sigma^2 + x^2) (x^2 for
    sigma = inf);  units 0: conf^2 sum_xy rho(r);  units 1: conf sum_xy rho(e^2), e = 2 r / kp_norm.
    Kept for the vjp: rho'(q) / 2 = q (sigma^2 / (sigma^2 + q^2))^2 (q for sigma = inf)."""
    X = joints + cam_t[:, None]
    inv_z = torch.reciprocal(X[..., 2:3])
    r = torch.addcmul(center[:, None] - keypoints, X[..., :2], inv_z, value=focal_length)
    q = r if units == 0 else (r * r).mul_(4.0 / (kp_norm * kp_norm))
    if math.isinf(sigma):
        rho, half_drho = q * q, q
    else:
        s2 = sigma * sigma
        q2 = q * q
        ratio = s2 / (q2 + s2)
        rho = q2 * ratio
        half_drho = (ratio * ratio).mul_(q)
    w = None if conf is None else conf * conf if units == 0 else conf
    per_joint = rho.sum(-1)
    return per_joint if w is None else per_joint.mul_(w), (X, inv_z, r, half_drho, w, units, focal_length, kp_norm)


def project_vjp(cache: tuple, g: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/djoints (B, n, 3), dL/dt (B, 3)) from g = dL/dper_joint (B, n) (None: all ones; conf None: 1):
    dL/dr = g w rho'(r) (units 0) or g w rho'(e^2) 2 e 2 / kp_norm (units 1);
    dL/dX = (f / Z) (dL/dp_x, dL/dp_y, -(X_x dL/dp_x + X_y dL/dp_y) / Z);  dL/dt = sum_n dL/dX."""
    X, inv_z, r, half_drho, w, units, f, kp_norm = cache
    wg = g if w is None else w if g is None else w * g
    scale = 2.0 * f if units == 0 else 16.0 * f / (kp_norm * kp_norm)  # d(e^2)/dr = 8 r / S^2
    gr = half_drho * (inv_z * scale if wg is None else (wg[..., None] * inv_z).mul_(scale))  # dL/dr f / Z
    if units == 1:
        gr = gr * r
    gX = torch.cat([gr, -(gr * X[..., :2]).sum(-1, keepdim=True) * inv_z], -1)
    return gX, gX.sum(1)


def gmm_fwd(pose: torch.Tensor, means: torch.Tensor, precisions: torch.Tensor, nll: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-mixture GMM prior (gmm_prior/reference.py): min_k 1/2 d_k^T P_k d_k + nll_k, d_k = pose - mu_k,
    (B,) and its gradient P_k* d_k* (B, 69) of the winning component (P symmetric)."""
    d = pose[None] - means[:, None]  # (M, B, D)
    Pd = torch.bmm(d, precisions)  # (M, B, D): d^T P = (P d)^T
    val, k = torch.add(nll[:, None], (d * Pd).sum(-1), alpha=0.5).min(0)
    return val, Pd.gather(0, k[None, :, None].expand(1, -1, Pd.shape[-1]))[0]


def angle_fwd(body_pose: torch.Tensor, index: torch.Tensor, signs: torch.Tensor, minus_one: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle prior (SPIN smplify/prior.py; mmhuman3d's with minus_one): b = exp(s theta_i) over the
    elbow/knee entries, value sum (b - m)^2 with m = 1 or 0, and its gradient in those entries (B, 4):
    2 (b - m) b s (scattered to body_pose's columns `index`)."""
    b = torch.exp(body_pose.index_select(1, index) * signs)
    bm = b - 1 if minus_one else b
    return (bm * bm).sum(-1), (bm * b).mul_(2 * signs)


def rigid_turn_fwd(R: torch.Tensor, Y: torch.Tensor, sJ0: torch.Tensor) -> torch.Tensor:
    """Stage 1's root turn: joints (B, n, 3) = R Y_n + s_n J0, Y = X0 - s J0 (constant)."""
    return torch.baddbmm(sJ0, Y, R.transpose(1, 2))


def rigid_turn_vjp(Y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """dL/dR (B, 3, 3) = sum_n g_n Y_n^T."""
    return g.transpose(1, 2) @ Y


def depth_fwd(tz: torch.Tensor, tz0: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's depth term weight (t_z - t_z0)^2 (B,) and its gradient in t_z."""
    d = tz - tz0
    return weight * d * d, (2 * weight) * d


# --- the body (stage 2's joints) and the priors -------------------------------------------------------

class _Prepared(NamedTuple):
    """What a fit derives from FitConstants once."""

    plan: ChainPlan
    fold: Folded
    J_shapedirs: torch.Tensor  # (3 * 24, S) rest joints' shape blend, component-major rows (c * 24 + joint)
    J_template: torch.Tensor  # (3 * 24, 1) likewise


def prepare(consts: FitConstants) -> _Prepared:
    dev, dt = consts.J_template.device, consts.J_template.dtype
    nb, S = consts.J_template.shape[0], consts.J_shapedirs.shape[-1]
    fold = fold_pairs(consts.coeffs, consts.bone_weight, consts.pair_joint, consts.pair_bone,
                      consts.num_vertex_joints, nb)
    return _Prepared(chain_plan(consts.parents, dev, dt), fold,
                     consts.J_shapedirs.transpose(0, 1).reshape(3 * nb, S).contiguous(),
                     consts.J_template.t().reshape(3 * nb, 1).contiguous())


def body_fwd(c: FitConstants, pc: _Prepared, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """x (B, 72 + S) = [global orient | body pose | betas] -> smpl_49 joints (B, 49, 3), as
    BodyModel.joints_only: 1. R = Rodrigues of the 24 axis-angles; 2. rest joints
    J = J_template + J_shapedirs betas; 3. the chain (G = [W | t], T); 4. pose feature R[1:] - I;
    5. the folded regressor on x = [1, betas, pose feature]; 6. cat([t | vertex joints])[joint_index].
    In between, tensors are component-major with the batch last ((3, 3, 24, B), (3, 24, B), ...), so
    that every elementwise op and every small matrix product runs along (joints, B)."""
    B = x.shape[0]
    nb = pc.J_template.shape[0] // 3
    R, rc = _rodrigues_cm(x[:, :72].reshape(B, nb, 3).permute(2, 1, 0).reshape(3, nb * B))  # (9, 24 B)
    R = R.view(3, 3, nb, B)
    betas_t = x[:, 72:].t()
    J = torch.addmm(pc.J_template, pc.J_shapedirs, betas_t).view(3, nb, B)
    G, T, cc = _chain_cm(R, J, pc.plan)
    feat = (R[:, :, 1:] - _constant(_EYE9, x).view(3, 3, 1, 1)).permute(2, 0, 1, 3).reshape(-1, B)  # (23 * 9, B)
    xt = torch.cat([betas_t.new_ones(1, B), betas_t, feat])  # (K, B)
    vj, jc = _joints_only_cm(xt, T, pc.fold)
    joints = torch.cat([G[:, 3], vj], 1).index_select(1, c.joint_index)  # (3, 49, B)
    return joints.permute(2, 1, 0).contiguous(), (rc, cc, jc)


def body_vjp(c: FitConstants, pc: _Prepared, cache: tuple, g: torch.Tensor) -> torch.Tensor:
    """dL/dx (B, 72 + S) from g = dL/djoints (B, 49, 3), the steps of `body_fwd` backwards."""
    rc, cc, jc = cache
    B, nb = g.shape[0], pc.J_template.shape[0] // 3
    S = pc.J_shapedirs.shape[1]
    g_all = g.new_zeros(3, nb + c.num_vertex_joints, B).index_add_(1, c.joint_index, g.permute(2, 1, 0))
    gxt, gT = _joints_only_vjp_cm(jc, g_all[:, nb:], pc.fold)
    gR, gJ = _chain_vjp_cm(cc, g_all[:, :nb], gT, pc.plan)
    gR = gR.reshape(9, nb, B)
    gR[:, 1:] += gxt[1 + S:].view(nb - 1, 9, B).transpose(0, 1)
    gv = _rodrigues_vjp_cm(rc, gR.view(9, nb * B)).view(3, nb, B)
    g_betas = torch.addmm(gxt[1:1 + S], pc.J_shapedirs.t(), gJ.reshape(3 * nb, B))  # (S, B)
    return torch.cat([gv.permute(2, 1, 0).reshape(B, -1), g_betas.t()], 1)


def priors_fwd(c: FitConstants, o: FitOptions, body_pose: torch.Tensor, betas: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w_pose gmm + w_angle angle + w_shape |betas|^2 (B,), and its gradients in body_pose and betas."""
    gv, gg = gmm_fwd(body_pose, c.gmm_means, c.gmm_precisions, c.gmm_nll)
    av, ag = angle_fwd(body_pose, c.angle_index, c.angle_signs, o.angle_minus_one)
    value = o.pose_prior_weight * gv + o.angle_prior_weight * av + o.shape_prior_weight * (betas * betas).sum(-1)
    g_pose = gg.mul_(o.pose_prior_weight).index_add_(1, c.angle_index, ag, alpha=o.angle_prior_weight)
    return value, g_pose, (2 * o.shape_prior_weight) * betas


# --- the same values through the ops' references (the set-up and the result) ---------------------------
# What the fit returns is scored exactly as SMPLify.joint_loss / priors score any fit (the same ops,
# same order): a result's losses do not depend on the rounding of the hand-derived loop.

def joints_reference(c: FitConstants, x: torch.Tensor) -> torch.Tensor:
    """smpl_49 joints (B, 49, 3) of x (B, 72 + S) as BodyModel.joints_only computes them on CPU."""
    B = x.shape[0]
    betas = x[:, 72:]
    rest = c.J_template + torch.einsum("bs,jcs->bjc", betas, c.J_shapedirs)
    rotmats = rodrigues_torch(x[:, :72].reshape(B, -1, 3))
    posed, transforms = kinematic_chain_torch(rotmats, rest, c.parents)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    vj = joints_only_torch(betas, (rotmats[:, 1:] - eye).reshape(B, -1), transforms, c.coeffs, c.bone_weight,
                           c.pair_joint, c.pair_bone, c.num_vertex_joints)
    return torch.cat([posed, vj], 1)[:, c.joint_index]


def data_reference(o: FitOptions, joints, cam_t, kp, conf, center) -> torch.Tensor:
    """Stage 2's data term per joint (B, 49) through reprojection_loss_torch."""
    return reprojection_loss_torch(joints, cam_t, kp, conf, o.focal_length, center, o.sigma, o.units, o.kp_norm,
                                   "none")


def priors_reference(c: FitConstants, o: FitOptions, body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """(B,) w_pose gmm + w_angle angle + w_shape |betas|^2 through gmm_prior_torch."""
    bent = torch.exp(body_pose.index_select(1, c.angle_index) * c.angle_signs)
    angle = ((bent - 1) if o.angle_minus_one else bent).square().sum(-1)
    return (o.pose_prior_weight * gmm_prior_torch(body_pose, c.gmm_means, c.gmm_precisions, c.gmm_nll)
            + o.angle_prior_weight * angle + o.shape_prior_weight * betas.square().sum(-1))


# --- the two stages' objectives: (B,) loss and (B, n) gradient of x ---------------------------------

class Stage1(NamedTuple):
    """Stage 1's fixed terms: joints = R(go) Y + sJ0, fitted to kp with conf, plus const and the depth term."""

    Y: torch.Tensor  # (B, n, 3) X0 - s J0: the joints with zero global orient about the rest root
    sJ0: torch.Tensor  # (B, n, 3) s_n J0
    kp: torch.Tensor  # (B, n, 2)
    conf: torch.Tensor | None  # (B, n), or None for 1 (SPIN's torso)
    center: torch.Tensor  # (B, 2)
    tz0: torch.Tensor  # (B,) initial depth
    const: torch.Tensor | None  # (B,) the priors at the start (all joints), or None (SPIN's torso)
    sigma: float
    units: int


def stage1_setup(c: FitConstants, o: FitOptions, pose, betas, cam_t, kp, conf_raw, conf2, center) -> Stage1:
    """X0 = the smpl_49 joints with zero global orient, J0 = the rest root, s = the joints' row sums;
    SPIN's torso (OpenPose hips/shoulders when all four have confidence > 0, else the ground-truth
    ones; plain squares: conf 1, sigma inf, pixel units) or every joint with stage 2's confidences and
    units plus the priors as a constant (opts.stage1_all_joints)."""
    B = pose.shape[0]
    body_pose = pose[:, 3:]
    X0 = joints_reference(c, torch.cat([torch.zeros_like(pose[:, :3]), body_pose, betas], 1))
    J0 = c.J_template[0] + torch.einsum("bs,cs->bc", betas, c.J_shapedirs[0])  # (B, 3)
    if o.stage1_all_joints:
        s = c.row_sums.expand(B, -1)
        kp1, conf1, sigma, units = kp, conf2, o.sigma, o.units
        const = priors_reference(c, o, body_pose, betas)
    else:
        idx = c.torso[(conf_raw[:, c.torso[0]] <= 0).any(-1).long()]  # (B, 4)
        X0 = X0.gather(1, idx[..., None].expand(-1, -1, 3))
        s = c.row_sums[idx]
        kp1, conf1, sigma, units = kp.gather(1, idx[..., None].expand(-1, -1, 2)), None, math.inf, 0
        const = None
    sJ0 = s[..., None] * J0[:, None]
    return Stage1(X0 - sJ0, sJ0, kp1, conf1, center, cam_t[:, 2].clone(), const, sigma, units)


def stage1_objective(p: Stage1, o: FitOptions, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 6) = [global orient | t]: robust reprojection of R(go) Y + sJ0 seen through t,
    (+ const) + depth_weight (t_z - t_z0)^2, and its gradient."""
    R, rc = rodrigues_fwd(x[:, :3])
    t = x[:, 3:]
    per_joint, prc = project_fwd(rigid_turn_fwd(R, p.Y, p.sJ0), t, p.kp, p.conf, o.focal_length, p.center, p.sigma,
                                 p.units, o.kp_norm)
    total = per_joint.sum(-1)
    if p.const is not None:
        total = total + p.const
    gj, gt = project_vjp(prc)
    if o.depth_weight:
        dv, dg = depth_fwd(t[:, 2], p.tz0, o.depth_weight)
        total = total + dv
        gt[:, 2] += dg
    return total, torch.cat([rodrigues_vjp(rc, rigid_turn_vjp(p.Y, gj)), gt], 1)


class Stage2(NamedTuple):
    cam_t: torch.Tensor  # (B, 3) from stage 1
    kp: torch.Tensor  # (B, 49, 2)
    conf: torch.Tensor  # (B, 49) with the ignored joints at 0
    center: torch.Tensor  # (B, 2)


def stage2_objective(c: FitConstants, pc: _Prepared, o: FitOptions, p: Stage2, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 72 + S) = [global orient | body pose | betas]: the data term of the smpl_49 joints plus
    the priors, and its gradient."""
    joints, bc = body_fwd(c, pc, x)
    per_joint, prc = project_fwd(joints, p.cam_t, p.kp, p.conf, o.focal_length, p.center, o.sigma, o.units, o.kp_norm)
    prior, g_pose, g_betas = priors_fwd(c, o, x[:, 3:72], x[:, 72:])
    grad = body_vjp(c, pc, bc, project_vjp(prc)[0])
    grad[:, 3:72] += g_pose
    grad[:, 72:] += g_betas
    return per_joint.sum(-1) + prior, grad


# --- Adam with the per-sample bookkeeping ------------------------------------------------------------

class _Adam:
    """torch.optim.Adam's single-tensor update (no weight decay) on a flat (B, n) tensor, per row:
    m, v are updated on every row, x moves where `active & ok` (ok: finite loss and gradient); a
    row whose loss or gradient is not finite while active is `diverged` and stops; with ftol > 0 a
    row stops once |prev - cur| / max(|prev|, |cur|, 1) < ftol for its loss before the step (prev
    starts NaN: never on the first step), or with batch_stop the whole batch stops on the same test
    of the summed loss S_k of the rows that moved at step k. One step counter for all rows; the bias
    corrections lr / (1 - b1^t) and sqrt(1 - b2^t) are computed in float64, then rounded to the dtype."""

    def __init__(self, x: torch.Tensor, active: torch.Tensor, iters: int, o: FitOptions):
        self.x = x.clone()
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.active = active.clone()
        self.diverged = torch.zeros_like(active)
        self.steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        self.prev = torch.full((x.shape[0],), math.nan, dtype=x.dtype, device=x.device)
        self.prev_sum = torch.full((), math.nan, dtype=x.dtype, device=x.device)
        t = torch.arange(1, max(iters, 1) + 1, dtype=torch.float64)
        self.step_size = (o.lr / (1 - o.beta1 ** t)).to(x.dtype).tolist()  # exact in a float64 python number
        self.bc2_sqrt = torch.sqrt(1 - o.beta2 ** t).to(x.dtype).tolist()
        self.o = o
        self.k = 0

    def step(self, grad: torch.Tensor, total: torch.Tensor) -> None:
        o = self.o
        ok = torch.isfinite(grad).all(-1) & torch.isfinite(total)
        self.diverged |= self.active & ~ok
        move = self.active & ok
        self.m.lerp_(grad, 1 - o.beta1)
        self.v.mul_(o.beta2).addcmul_(grad, grad, value=1 - o.beta2)
        denom = self.v.sqrt().div_(self.bc2_sqrt[self.k]).add_(o.eps)
        # x - step_size m / denom on the rows that move (a frozen row's m may be NaN; such a row is
        # invalid and returned as its input, so a NaN written there never reaches the result)
        self.x.addcdiv_(self.m * move[:, None], denom, value=-self.step_size[self.k])
        self.k += 1
        self.steps += move
        if o.ftol > 0 and o.batch_stop:
            cur = torch.where(move, total, torch.zeros_like(total)).sum()
            self.active &= ~(_rel_change(self.prev_sum, cur) < o.ftol)
            self.prev_sum = cur
        elif o.ftol > 0:
            self.active &= ~(_rel_change(self.prev, total) < o.ftol)
            self.prev = total
        self.active &= ok


def _rel_change(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    return (prev - cur).abs() / torch.clamp(torch.maximum(prev.abs(), cur.abs()), min=1.0)


def _run(adam: _Adam, objective, iters: int) -> _Adam:
    for _ in range(iters):
        if not bool(adam.active.any()):  # nothing moves any more: the remaining steps change no result
            break
        total, grad = objective(adam.x)
        adam.step(grad, total)
    return adam


# --- the fit -----------------------------------------------------------------------------------------

def smplify_fit_torch(consts: FitConstants, opts: FitOptions, pose: torch.Tensor, betas: torch.Tensor,
                      cam_t: torch.Tensor, keypoints2d: torch.Tensor, center: torch.Tensor) -> FitOutput:
    """The whole two-stage SMPLify fit, gradients by hand (see the module docstring and CONTRACT).

    Stage 1, x = [global orient | t] (B, 6): the body with zero global orient X0 (B, n, 3) is fixed,
    so the joints are R(go) (X0 - s J0) + s J0 (J0 the rest root, s each joint's row sum); the
    loss is the robust reprojection of SPIN's torso (OpenPose hips/shoulders where all four have
    confidence > 0, else the ground-truth ones; unweighted squares) or of every joint with stage 2's
    confidences plus the priors at the start as a constant (opts.stage1_all_joints), plus
    depth_weight (t_z - t_z0)^2.
    Stage 2, x = [global orient | body pose | betas] (B, 72 + S): the data term of the smpl_49 joints
    plus the priors. Adam as `_Adam`; a stage stops early once no row is active.
    Batch stop (opts.batch_stop, mmhuman3d's _optimize_stage): S_k = the sum of the losses before the
    step of iteration k over the rows with (active & ok); after that step, if
    |S_{k-1} - S_k| / max(|S_{k-1}|, |S_k|, 1) < ftol every row becomes inactive (S_{-1} = NaN).
    """
    with torch.no_grad():
        return _fit(consts, opts, pose, betas, cam_t, keypoints2d, center)


def _fit(c: FitConstants, o: FitOptions, pose_in, betas_in, cam_in, kp_in, center_in) -> FitOutput:
    B = pose_in.shape[0]
    dt, dev = pose_in.dtype, pose_in.device
    pc = prepare(c)

    # 1. Inputs: a bad keypoint is an invisible one; a bad sample runs on safe values, frozen.
    kp_ok = torch.isfinite(kp_in).all(-1)
    conf_raw = torch.where(kp_ok, kp_in[..., 2], torch.zeros_like(kp_in[..., 2]))
    kp = torch.where(kp_ok[..., None], kp_in[..., :2], torch.zeros_like(kp_in[..., :2]))
    conf2 = conf_raw * c.stage2_keep
    valid_in = (torch.isfinite(pose_in).all(-1) & torch.isfinite(betas_in).all(-1) & torch.isfinite(cam_in).all(-1)
                & torch.isfinite(center_in).all(-1) & (conf2 != 0).any(-1))
    keep = valid_in[:, None]
    pose = torch.where(keep, pose_in, torch.zeros_like(pose_in))
    betas = torch.where(keep, betas_in, torch.zeros_like(betas_in))
    # a frozen row's stand-in translation only keeps its arithmetic finite; its input is returned
    stand_in = torch.tensor([0.0, 0.0, 2 * o.focal_length / o.img_res], dtype=dt, device=dev)
    cam_t = torch.where(keep, cam_in, stand_in.expand(B, 3))
    center = torch.where(keep, center_in, torch.full_like(center_in, o.img_res / 2.0))

    # 2. Stage 1: joints with zero global orient, once; the rigid root turn.
    p1 = stage1_setup(c, o, pose, betas, cam_t, kp, conf_raw, conf2, center)
    st1 = _run(_Adam(torch.cat([pose[:, :3], cam_t], 1), valid_in, o.stage1_iters, o),
               lambda x: stage1_objective(p1, o, x), o.stage1_iters)
    cam_t = st1.x[:, 3:].clone()

    # 3. Stage 2: every sample that did not diverge fits its body (an ftol stop ends stage 1 only).
    p2 = Stage2(cam_t, kp, conf2, center)
    st2 = _run(_Adam(torch.cat([st1.x[:, :3], pose[:, 3:], betas], 1), valid_in & ~st1.diverged, o.stage2_iters, o),
               lambda x: stage2_objective(c, pc, o, p2, x), o.stage2_iters)

    # 4. The result, its per-joint loss and its stage-2 objective.
    x = st2.x
    joint_loss = data_reference(o, joints_reference(c, x), cam_t, kp, conf2, center)
    total = joint_loss.sum(-1) + priors_reference(c, o, x[:, 3:72], x[:, 72:])
    valid = (valid_in & ~st1.diverged & ~st2.diverged & torch.isfinite(total) & torch.isfinite(x).all(-1)
             & torch.isfinite(cam_t).all(-1))
    keep = valid[:, None]
    inf = torch.full((), math.inf, dtype=dt, device=dev)
    return FitOutput(torch.where(keep, x[:, :72], pose_in), torch.where(keep, x[:, 72:], betas_in),
                     torch.where(keep, cam_t, cam_in), torch.where(keep, joint_loss, inf),
                     torch.where(valid, total, inf), valid, torch.stack([st1.steps, st2.steps], 1))
