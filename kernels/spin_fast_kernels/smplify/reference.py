"""A whole SMPLify fit in plain torch with gradients derived by hand (no autograd): the oracle of the
one-launch Triton kernel and the CPU production path.

CONTRACT (shared by this file, kernel.py/function.py and spin_fast.smplify.fit.SMPLify; the helpers
that fill it in must keep these names and shapes):

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
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


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

def rodrigues_fwd(v: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """v (..., 3) axis-angle -> R (..., 3, 3), smplx's convention (kinematic_chain/reference.py):
    e = v + 1e-8, a = |e|, u = v / a, K = skew(u);  R = I + sin(a) K + (1 - cos a) (u u^T - (u.u) I)."""
    e = v + 1e-8
    a = torch.linalg.vector_norm(e, dim=-1, keepdim=True)
    u = v / a
    s, c = torch.sin(a), torch.cos(a)
    oc = 1 - c
    ux, uy, uz = u.unbind(-1)
    z = torch.zeros_like(ux)
    K = torch.stack([z, -uz, uy, uz, z, -ux, -uy, ux, z], -1).unflatten(-1, (3, 3))
    uu = (u * u).sum(-1, keepdim=True)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    R = torch.addcmul(eye - (oc * uu)[..., None] * eye, s[..., None], K)
    R.addcmul_(oc[..., None] * u[..., :, None], u[..., None, :])
    return R, (e, a, u, s, c, oc, uu)


def rodrigues_vjp(cache: tuple, G: torch.Tensor) -> torch.Tensor:
    """dL/dv from G = dL/dR (..., 3, 3) (kinematic_chain/kernel.py's header):
    w = vee(G - G^T), gu = sin(a) w + (1 - cos a) ((G + G^T) u - 2 tr(G) u),
    ga = cos(a) u.w + sin(a) (u^T G u - (u.u) tr G) - gu.u / a,   dL/dv = (gu + ga e) / a."""
    e, a, u, s, c, oc, uu = cache
    g = G.flatten(-2)
    w = torch.stack([g[..., 7] - g[..., 5], g[..., 2] - g[..., 6], g[..., 3] - g[..., 1]], -1)
    tr = (g[..., 0] + g[..., 4] + g[..., 8])[..., None]
    Gu = (G @ u[..., None])[..., 0]
    GTu = (u[..., None, :] @ G)[..., 0, :]
    gu = s * w + oc * (Gu + GTu - 2 * tr * u)
    ga = c * (u * w).sum(-1, keepdim=True) + s * ((u * Gu).sum(-1, keepdim=True) - uu * tr) \
        - (gu * u).sum(-1, keepdim=True) / a
    return (gu + ga * e) / a


def tree_levels(parents) -> list[tuple]:
    """The joints of a tree grouped by depth (depth >= 1), as (children, their parents) pairs;
    children as a slice where they are consecutive, parents as a python list."""
    depth = [0] * len(parents)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
    levels = []
    for d in range(1, max(depth, default=0) + 1):
        ch = [i for i in range(len(parents)) if depth[i] == d]
        sl = slice(ch[0], ch[-1] + 1) if ch == list(range(ch[0], ch[-1] + 1)) else ch
        levels.append((sl, [parents[i] for i in ch]))
    return levels


class _Levels(NamedTuple):
    parents: torch.Tensor  # (J,) int64, parents[0] = 0 (the root's rel is its own rest position)
    levels: list  # (children slice | index tensor, parents index tensor, parents slice or None)


def chain_levels(parents, device) -> _Levels:
    """Index tensors of `tree_levels` on the device (built once per fit)."""
    out = []
    for ch, par in tree_levels(parents):
        ch_t = ch if isinstance(ch, slice) else torch.tensor(ch, device=device)
        out.append((ch_t, torch.tensor(par, device=device)))
    return _Levels(torch.tensor([0] + list(parents[1:]), device=device), out)


def chain_fwd(R: torch.Tensor, J: torch.Tensor, lv: _Levels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
    """Forward kinematics, one batched product a tree level.
    R (B, 24, 3, 3) local rotations, J (B, 24, 3) rest joints ->
    W (B, 24, 3, 3) world rotations, t (B, 24, 3) posed joints, tt (B, 24, 3) transform translations:
        W_0 = R_0, t_0 = J_0;  W_i = W_p R_i, t_i = t_p + W_p (J_i - J_p);  tt_i = t_i - W_i J_i."""
    rel = J - J[:, lv.parents]
    rel[:, 0] = J[:, 0]
    W = torch.empty_like(R)
    t = torch.empty_like(J)
    W[:, 0] = R[:, 0]
    t[:, 0] = J[:, 0]
    for ch, par in lv.levels:
        Wp = W[:, par]
        W[:, ch] = Wp @ R[:, ch]
        t[:, ch] = t[:, par] + (Wp @ rel[:, ch, :, None])[..., 0]
    tt = t - (W @ J[..., None])[..., 0]
    return W, t, tt, (R, J, rel, W)


def chain_vjp(cache: tuple, gt: torch.Tensor, gW: torch.Tensor, gtt: torch.Tensor, lv: _Levels
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (gR, gJ) of the local rotations and rest joints from those of t, W and tt, levels
    deepest first: a child's accumulated (gW_c, gt_c) goes to its parent as
        gR_c = W_p^T gW_c,  gW_p += gW_c R_c^T + gt_c rel_c^T,  gt_p += gt_c,
        gJ_c += W_p^T gt_c,  gJ_p -= W_p^T gt_c;
    tt_i = t_i - W_i J_i adds gtt_i to gt_i, -gtt_i J_i^T to gW_i, -W_i^T gtt_i to gJ_i; t_0 = J_0."""
    R, J, rel, W = cache
    gt = gt + gtt
    gW = gW - gtt[..., :, None] * J[..., None, :]
    gJ = -(gtt[..., None, :] @ W)[..., 0, :]
    gR = torch.empty_like(R)
    for ch, par in reversed(lv.levels):
        Wp = W[:, par]
        gWc, gtc = gW[:, ch], gt[:, ch]
        gR[:, ch] = Wp.transpose(-1, -2) @ gWc
        back = (gtc[..., None, :] @ Wp)[..., 0, :]  # W_p^T gt_c
        gJ[:, ch] += back
        gJ.index_add_(1, par, back, alpha=-1)
        gW.index_add_(1, par, torch.addcmul(gWc @ R[:, ch].transpose(-1, -2), gtc[..., :, None], rel[:, ch, None, :]))
        gt.index_add_(1, par, gtc)
    gR[:, 0] = gW[:, 0]
    gJ[:, 0] += gt[:, 0]
    return gR, gJ


def joints_only_fwd(x: torch.Tensor, W: torch.Tensor, tt: torch.Tensor, C: torch.Tensor, bone_weight: torch.Tensor,
                    pair_joint: torch.Tensor, pair_bone: torch.Tensor, num_joints: int) -> tuple[torch.Tensor, tuple]:
    """The folded regressor (joints_only/reference.py): x (B, K) = [1, betas, pose feature],
    C (K, 3P) the coefficients laid out as one matrix (coeffs.permute(2, 0, 1)), W, tt (B, 24, ...) ->
    joints (B, num_joints, 3):  local_p = C_p x,  joint_j = sum_{p: j_p = j} W_{k_p} local_p + w_p tt_{k_p}."""
    B = x.shape[0]
    local = (x @ C).view(B, -1, 3)  # (B, P, 3)
    Wg = W[:, pair_bone]  # (B, P, 3, 3)
    pp = torch.addcmul((Wg @ local[..., None])[..., 0], tt[:, pair_bone], bone_weight[:, None])
    out = pp.new_zeros(B, num_joints, 3).index_add_(1, pair_joint, pp)
    return out, (local, Wg)


def joints_only_vjp(cache: tuple, g: torch.Tensor, C: torch.Tensor, bone_weight: torch.Tensor,
                    pair_joint: torch.Tensor, pair_bone: torch.Tensor, num_bones: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From g = dL/djoints (B, Jv, 3): dL/dx (B, K) = (W_{k_p}^T g_{j_p})_p (B, 3P) @ C^T,
    dL/dW_k = sum_{p: k_p = k} g_{j_p} local_p^T,  dL/dtt_k = sum_{p: k_p = k} w_p g_{j_p}."""
    local, Wg = cache
    B = g.shape[0]
    gp = g[:, pair_joint]  # (B, P, 3)
    gW = g.new_zeros(B, num_bones, 3, 3).index_add_(1, pair_bone, gp[..., :, None] * local[..., None, :])
    gtt = g.new_zeros(B, num_bones, 3).index_add_(1, pair_bone, gp * bone_weight[:, None])
    gx = (gp[..., None, :] @ Wg).reshape(B, -1) @ C.t()
    return gx, gW, gtt


def project_fwd(joints: torch.Tensor, cam_t: torch.Tensor, keypoints: torch.Tensor, conf: torch.Tensor,
                focal_length: float, center: torch.Tensor, sigma: float, units: int, kp_norm: float
                ) -> tuple[torch.Tensor, tuple]:
    """Robust reprojection per joint (B, n) (reprojection/reference.py):
    X = joints + t, p = f X_xy / X_z + c, r = p - kp, rho(x) = sigma^2 x^2 / (sigma^2 + x^2) (x^2 for
    sigma = inf);  units 0: conf^2 sum_xy rho(r);  units 1: conf sum_xy rho(e^2), e = 2 r / kp_norm."""
    X = joints + cam_t[:, None]
    Z = X[..., 2:3]
    p = focal_length * X[..., :2] / Z + center[:, None]
    r = p - keypoints
    q = r if units == 0 else (2.0 * r / kp_norm) ** 2
    if math.isinf(sigma):
        rho = q * q
        drho = 2 * q
    else:
        s2 = sigma * sigma
        q2 = q * q
        den = s2 + q2
        rho = s2 * q2 / den
        drho = (2 * s2 * s2) * q / (den * den)
    w = conf * conf if units == 0 else conf
    return w * rho.sum(-1), (X, Z, r, drho, w, units, focal_length, kp_norm)


def project_vjp(cache: tuple, g: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/djoints (B, n, 3), dL/dt (B, 3)) from g = dL/dper_joint (B, n) (None: all ones):
    dL/dr = g w rho'(r) (units 0) or g w rho'(e^2) 2 e 2 / kp_norm (units 1);
    dL/dX = (f / Z) (dL/dp_x, dL/dp_y, -(X_x dL/dp_x + X_y dL/dp_y) / Z);  dL/dt = sum_n dL/dX."""
    X, Z, r, drho, w, units, f, kp_norm = cache
    wg = w if g is None else w * g
    gr = drho * wg[..., None]
    if units == 1:
        gr = gr * r * (8.0 / (kp_norm * kp_norm))  # d(e^2)/dr = 2 e 2 / S = 8 r / S^2
    gxy = gr * (f / Z)
    gz = -(gxy * X[..., :2]).sum(-1, keepdim=True) / Z
    gX = torch.cat([gxy, gz], -1)
    return gX, gX.sum(1)


def gmm_fwd(pose: torch.Tensor, means: torch.Tensor, precisions: torch.Tensor, nll: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-mixture GMM prior (gmm_prior/reference.py): min_k 1/2 d_k^T P_k d_k + nll_k, d_k = pose - mu_k,
    (B,) and its gradient P_k* d_k* (B, 69) of the winning component (P symmetric)."""
    d = pose[None] - means[:, None]  # (M, B, D)
    Pd = torch.bmm(d, precisions)  # (M, B, D): d^T P = (P d)^T
    val, k = (0.5 * (d * Pd).sum(-1) + nll[:, None]).min(0)
    return val, Pd[k, torch.arange(pose.shape[0], device=pose.device)]


def angle_fwd(body_pose: torch.Tensor, index: torch.Tensor, signs: torch.Tensor, minus_one: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle prior (SPIN smplify/prior.py; mmhuman3d's with minus_one): b = exp(s theta_i) over the
    elbow/knee entries, value sum (b - m)^2 with m = 1 or 0, and its gradient (B, 69): 2 (b - m) b s."""
    b = torch.exp(body_pose[:, index] * signs)
    bm = b - 1 if minus_one else b
    grad = torch.zeros_like(body_pose)
    grad[:, index] = 2 * bm * b * signs
    return (bm * bm).sum(-1), grad


def shape_fwd(betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape prior |betas|^2 (B,) and its gradient 2 betas."""
    return (betas * betas).sum(-1), 2 * betas


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

    levels: _Levels
    C: torch.Tensor  # (K, 3P) folded coefficients as one matrix
    J_shapedirs: torch.Tensor  # (S, 72) rest joints' shape blend as one matrix
    J_template: torch.Tensor  # (72,)
    eye: torch.Tensor  # (3, 3)


def prepare(consts: FitConstants) -> _Prepared:
    dev = consts.J_template.device
    P, _, K = consts.coeffs.shape
    S = consts.J_shapedirs.shape[-1]
    return _Prepared(chain_levels(consts.parents, dev), consts.coeffs.permute(2, 0, 1).reshape(K, 3 * P).contiguous(),
                     consts.J_shapedirs.reshape(-1, S).t().contiguous(), consts.J_template.reshape(-1),
                     torch.eye(3, dtype=consts.J_template.dtype, device=dev))


def body_fwd(c: FitConstants, pc: _Prepared, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """x (B, 72 + S) = [global orient | body pose | betas] -> smpl_49 joints (B, 49, 3), as
    BodyModel.joints_only: 1. R = Rodrigues of the 24 axis-angles; 2. rest joints
    J = J_template + J_shapedirs betas; 3. the chain (W, t, tt); 4. pose feature R[1:] - I;
    5. the folded regressor on x = [1, betas, pose feature]; 6. cat([t | vertex joints])[joint_index]."""
    B = x.shape[0]
    R, rc = rodrigues_fwd(x[:, :72].reshape(B, -1, 3))
    betas = x[:, 72:]
    J = torch.addmm(pc.J_template, betas, pc.J_shapedirs).view(B, -1, 3)
    W, t, tt, cc = chain_fwd(R, J, pc.levels)
    feat = torch.cat([betas.new_ones(B, 1), betas, (R[:, 1:] - pc.eye).reshape(B, -1)], 1)
    vj, jc = joints_only_fwd(feat, W, tt, pc.C, c.bone_weight, c.pair_joint, c.pair_bone, c.num_vertex_joints)
    return torch.cat([t, vj], 1)[:, c.joint_index], (rc, cc, jc)


def body_vjp(c: FitConstants, pc: _Prepared, cache: tuple, g: torch.Tensor) -> torch.Tensor:
    """dL/dx (B, 72 + S) from g = dL/djoints (B, 49, 3), the steps of `body_fwd` backwards."""
    rc, cc, jc = cache
    B, nb = g.shape[0], pc.J_template.shape[0] // 3
    S = pc.J_shapedirs.shape[0]
    g_all = g.new_zeros(B, nb + c.num_vertex_joints, 3).index_add_(1, c.joint_index, g)
    gfeat, gW, gtt = joints_only_vjp(jc, g_all[:, nb:], pc.C, c.bone_weight, c.pair_joint, c.pair_bone, nb)
    gR, gJ = chain_vjp(cc, g_all[:, :nb], gW, gtt, pc.levels)
    gR[:, 1:] += gfeat[:, 1 + S:].view(B, nb - 1, 3, 3)
    g_betas = torch.addmm(gfeat[:, 1:1 + S], gJ.reshape(B, -1), pc.J_shapedirs.t())
    return torch.cat([rodrigues_vjp(rc, gR).reshape(B, -1), g_betas], 1)


def priors_fwd(c: FitConstants, o: FitOptions, body_pose: torch.Tensor, betas: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w_pose gmm + w_angle angle + w_shape |betas|^2 (B,), and its gradients in body_pose and betas."""
    gv, gg = gmm_fwd(body_pose, c.gmm_means, c.gmm_precisions, c.gmm_nll)
    av, ag = angle_fwd(body_pose, c.angle_index, c.angle_signs, o.angle_minus_one)
    sv, sg = shape_fwd(betas)
    value = o.pose_prior_weight * gv + o.angle_prior_weight * av + o.shape_prior_weight * sv
    return value, o.pose_prior_weight * gg + o.angle_prior_weight * ag, o.shape_prior_weight * sg


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
        step = torch.div(self.m, denom).mul_(self.step_size[self.k])
        self.x.sub_(step.masked_fill_(~move[:, None], 0.0))
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
    f, sigma, units, kp_norm = o.focal_length, o.sigma, o.units, o.kp_norm

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
    body_pose = pose[:, 3:]

    # 2. Stage 1: joints with zero global orient, once; the rigid root turn.
    X0, _ = body_fwd(c, pc, torch.cat([torch.zeros_like(pose[:, :3]), body_pose, betas], 1))
    J0 = pc.J_template[:3] + betas @ pc.J_shapedirs[:, :3]  # (B, 3)
    if o.stage1_all_joints:
        s = c.row_sums.expand(B, -1)
        kp1, conf1, sigma1, units1 = kp, conf2, sigma, units
        const = priors_fwd(c, o, body_pose, betas)[0]
    else:  # OpenPose hips/shoulders when all four are visible, else the ground-truth ones; plain squares
        idx = c.torso[(conf_raw[:, c.torso[0]] <= 0).any(-1).long()]  # (B, 4)
        X0 = X0.gather(1, idx[..., None].expand(-1, -1, 3))
        s = c.row_sums[idx]
        kp1, conf1, sigma1, units1 = kp.gather(1, idx[..., None].expand(-1, -1, 2)), torch.ones_like(s), math.inf, 0
        const = None
    sJ0 = s[..., None] * J0[:, None]
    Y = X0 - sJ0
    tz0 = cam_t[:, 2].clone()

    def stage1(x):
        R, rc = rodrigues_fwd(x[:, :3])
        t = x[:, 3:]
        per_joint, prc = project_fwd(rigid_turn_fwd(R, Y, sJ0), t, kp1, conf1, f, center, sigma1, units1, kp_norm)
        total = per_joint.sum(-1)
        if const is not None:
            total = total + const
        gj, gt = project_vjp(prc)
        if o.depth_weight:
            dv, dg = depth_fwd(t[:, 2], tz0, o.depth_weight)
            total = total + dv
            gt[:, 2] += dg
        return total, torch.cat([rodrigues_vjp(rc, rigid_turn_vjp(Y, gj)), gt], 1)

    st1 = _run(_Adam(torch.cat([pose[:, :3], cam_t], 1), valid_in, o.stage1_iters, o), stage1, o.stage1_iters)
    go, cam_t = st1.x[:, :3], st1.x[:, 3:].clone()

    # 3. Stage 2: every sample that did not diverge fits its body (an ftol stop ends stage 1 only).
    def stage2(x):
        joints, bc = body_fwd(c, pc, x)
        per_joint, prc = project_fwd(joints, cam_t, kp, conf2, f, center, sigma, units, kp_norm)
        prior, g_pose, g_betas = priors_fwd(c, o, x[:, 3:72], x[:, 72:])
        grad = body_vjp(c, pc, bc, project_vjp(prc)[0])
        grad[:, 3:72] += g_pose
        grad[:, 72:] += g_betas
        return per_joint.sum(-1) + prior, grad

    st2 = _run(_Adam(torch.cat([go, body_pose, betas], 1), valid_in & ~st1.diverged, o.stage2_iters, o), stage2,
               o.stage2_iters)

    # 4. The result, its per-joint loss and its stage-2 objective.
    x = st2.x
    joints, _ = body_fwd(c, pc, x)
    joint_loss, _ = project_fwd(joints, cam_t, kp, conf2, f, center, sigma, units, kp_norm)
    total = joint_loss.sum(-1) + priors_fwd(c, o, x[:, 3:72], x[:, 72:])[0]
    valid = (valid_in & ~st1.diverged & ~st2.diverged & torch.isfinite(total) & torch.isfinite(x).all(-1)
             & torch.isfinite(cam_t).all(-1))
    keep = valid[:, None]
    inf = torch.full((), math.inf, dtype=dt, device=dev)
    return FitOutput(torch.where(keep, x[:, :72], pose_in), torch.where(keep, x[:, 72:], betas_in),
                     torch.where(keep, cam_t, cam_in), torch.where(keep, joint_loss, inf),
                     torch.where(valid, total, inf), valid, torch.stack([st1.steps, st2.steps], 1))
