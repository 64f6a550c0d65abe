# A whole SMPLify fit, one launch a stage: Triton kernels (`@triton.jit` only; launcher in function.py).
#
# Math (reference.py; per body b, every term a per-body sum, so bodies never couple):
#   Stage 1  x1 = [global orient w | camera t] (6). Body pose and betas stay fixed, so the 49 joints
#            with zero global orient X0 and the rest root J0 are computed once; turning the root by
#            R = rodrigues(w) moves joint n to  P_n = R (X0_n - s_n J0) + s_n J0  (s_n the regressor's
#            row sum, 1 for a rigid joint). Objective: reprojection of P_n + t against the stage-1
#            keypoints (SPIN: the 4 torso joints, unweighted squares; or every joint in the data
#            units with the priors of the fixed body as a constant) + depth_weight (t_z - t_z0)^2.
#            Gradient: with q_n = dL/dP_n (the reprojection derivative below),
#                dL/dt = sum_n q_n + 2 depth_weight (t_z - t_z0) e_z
#                dL/dR = sum_n q_n (X0_n - s_n J0)^T,  dL/dw = Rodrigues' vjp of dL/dR
#   Stage 2  x2 = [w | body pose theta (69) | betas (S)]. Forward: rest joints J = J_t + J_s betas;
#            the kinematic chain of aa = x2[0:72] gives R_i, the world transforms T_i and the posed
#            joints; pose feature f = [R_1 - I, ..., R_23 - I]; the vertex joints are the folded
#            regressor: local_p = C_p [1, betas, f], joint_{j_p} += R_{k_p} local_p + t_{k_p} w_p;
#            smpl_49 = [posed 24 | vertex Jv][joint_index].
#            Objective: data(joints + cam_t) + w_pose gmm(theta) + w_angle sum_a (exp(s_a theta_a) [- 1])^2
#            + w_shape |betas|^2,  gmm = min_k 1/2 (theta - mu_k)^T P_k (theta - mu_k) + nll_k.
#            Gradient, by hand, in reverse: reprojection -> q (B, 49, 3), summed into the posed and
#            vertex joints they were gathered from; vertex joints -> dL/dT (bone sums of q local^T,
#            q w) and gl_p = R_{k_p}^T q_{j_p}, dL/d[1, betas, f] = sum_p C_p^T gl_p; the chain's
#            reverse walk with dL/dR_i += dL/df_i gives dL/daa and dL/dJ; dL/dbetas = its J_s share
#            + the regressor's + 2 w_shape betas; dL/dtheta += w_pose P_k* (theta - mu_k*) + the
#            angle prior's 2 w_angle (e - [1]) e s_a.
#   Reprojection (SPIN units 0 / mmhuman3d units 1), X = P + t, p = f X_xy / X_z + c, r = p - kp:
#            units 0: c^2 (rho(r_x) + rho(r_y)),  q_xy = c^2 rho'(r)
#            units 1: e = 2 r / S, c (rho(e_x^2) + rho(e_y^2)),  q_xy = c rho'(e^2) 2 e 2 / S
#            dX = q_x f / Z, dY = q_y f / Z, dZ = -(dX X + dY Y) / Z.
#   Adam (torch.optim.Adam's single-tensor update) on every row: m += (1 - b1)(g - m),
#            v = b2 v + (1 - b2) g^2, x -= m / (sqrt(v) / sqrt(1 - b2^t) + eps) lr / (1 - b1^t) on the
#            rows that move (active and finite loss and gradient); a non-finite row is frozen and
#            marked diverged; ftol: a row stops once |prev - L| / max(|prev|, |L|, 1) < ftol.
#            batch_stop: the same test on S_k = sum over moving rows of L, after step k; all rows stop.
# Design: a program owns BLOCK_B = 16 bodies (the dots need 16 rows) and runs every iteration of the
# stage for them; grid = cdiv(B, BLOCK_B). With batch_stop the rule needs the batch sum every
# iteration, so ONE program runs the whole batch: each iteration loops over the body blocks and
# adds each block's moving totals to S_k in a register, then tests it and, on a stop, clears every
# row's active flag (the only batch-wide reduction; nothing is atomic).
# Memory: the Adam state (x, m, v of both stages, the sanitised camera, centre, t_z0, prev, stage-1
# constant) is a (B, WS) float buffer; flags (valid_in, active, diverged 1/2, steps 1/2, torso
# choice) a (B, 8) int32 buffer; per-iteration intermediates live in a (B, WSC) scratch row a body
# (offsets O_*: rotations 24x9, transforms 24x12, posed 24x3, rest 24x3, pose feature 207, vertex
# joints, local and gl (P x 3), their gradients, the chain accumulators, GMM gradient, stage-1
# joints): written and re-read by the same program, so L1/L2 resident on the GPU. Phases that hand
# data between lanes (lane-a-body chain vs (bodies, pairs) tiles) are separated by tl.debug_barrier.
# The chain is one body a lane over 24 dependent joints (its walk is kinematic_chain's); the
# regressor contraction (local = x C^T, dL/dx = gl C) is tl.dot tiles of (BLOCK_B, BLOCK_P) x K
# chunks (joints_only's `_local`); the GMM its component chunk, both passes. Sums by index (49
# joints into the posed / vertex joints they came from, pairs into joints and into bones) are dots
# with 0/1 matrices, so repeated indices add up and no sort order is assumed. fp32 "ieee" dots run
# on FMA units, where a thread holds K x (its columns) of the right operand: every dot has K = 16
# (BLOCK_P, BLOCK_KC, 16-joint chunks), and dL/dT is summed one row of T (4 accumulators) a pass.
# Loop-invariant index tiles would be hoisted out of the iteration loop and spilled across it, so
# row and column indices carry a zero loaded once a body block (`_opaque_zero`). sm_90, 8 warps:
# no spills in fp32 (stage 2: 255 registers), fp64 stage 2 spills ~0.8 kB (L1), see
# benches/smplify_resources.py. A block whose rows are all inactive skips the iteration (nothing
# observable changes for a frozen row).
# Launch 1 (stage 1) also sanitises the inputs, computes valid_in, X0, J0, the torso choice and the
# stage-1 terms, and hands stage 2 its start; launch 2 (stage 2) ends with the result: per-joint
# loss, total, validity, and the input rows where a fit is invalid.
# Cost a body and stage-2 iteration (fp32, P pairs, K = 218): ~2 x 6 P K FLOP of contraction
# (local forward, dL/dx backward; ~0.65 MFLOP for SMPL's P ~ 250), GMM 2 x 8 x 69^2 x 2 ~ 0.15 MFLOP,
# the chain ~7 kFLOP over 24 dependent steps each way; the coefficients (3 P K) and precisions
# are re-read from L2 once a block and iteration; the scratch (~4.4k entries a body at P = 250, 18 kB
# fp32) and the state (272 entries) stay in L1/L2.
import triton
import triton.language as tl

from ..gmm_prior.kernel import _gmm_component_chunk
from ..joints_only.kernel import _local, _pair_points
from ..kinematic_chain.kernel import (_chain_backward_walk, _chain_forward_walk, _div_ieee, _load3, _rodrigues,
                                      _rodrigues_vjp, _sqrt_ieee)
from ..reprojection.kernel import _drho, _rho

# params_ptr layout (compute dtype): scalars first, then the two Adam tables of NT entries each
P_FOCAL = tl.constexpr(0)  # focal length
P_IMG = tl.constexpr(1)  # crop side (default centre img_res / 2)
P_NORM = tl.constexpr(2)  # S of the normalised units: e = 2 r / S
P_S2 = tl.constexpr(3)  # sigma^2 of the robust data term
P_DEPTH = tl.constexpr(4)  # stage-1 depth weight
P_WPOSE = tl.constexpr(5)  # prior weights (squared)
P_WANGLE = tl.constexpr(6)
P_WSHAPE = tl.constexpr(7)
P_FTOL = tl.constexpr(8)  # relative loss change of a stop
P_W1 = tl.constexpr(9)  # 1 - beta1
P_B2 = tl.constexpr(10)  # beta2
P_W2 = tl.constexpr(11)  # 1 - beta2
P_EPS = tl.constexpr(12)  # Adam's eps
P_TZ_DEFAULT = tl.constexpr(13)  # depth of the fallback translation
P_ZERO = tl.constexpr(14)  # 0: loaded once a body block, an index offset the compiler cannot hoist
NUM_PARAMS = tl.constexpr(16)
# flags (B, 8) int32
F_VALID = tl.constexpr(0)  # inputs finite and something to fit
F_ACTIVE = tl.constexpr(1)  # still stepping in the current stage
F_DIV1 = tl.constexpr(2)  # diverged in stage 1
F_DIV2 = tl.constexpr(3)  # diverged in stage 2
F_STEPS1 = tl.constexpr(4)  # Adam steps taken in stage 1
F_STEPS2 = tl.constexpr(5)  # Adam steps taken in stage 2
F_USE_GT = tl.constexpr(6)  # stage-1 torso: the ground-truth joints (an OpenPose one unseen)
NUM_FLAGS = tl.constexpr(8)


@triton.jit
def _finite(a):
    return (a == a) & (tl.abs(a) < float("inf"))


@triton.jit
def _opaque_zero(params_ptr):
    """int32 0 read from memory once a body block. Row and column indices offset by it are
    recomputed each block instead of being hoisted out of the iteration loop (with one block a
    program the block loop runs once, so every pointer tile would be loop-invariant) and kept live,
    i.e. spilled, across the whole stage: fp32 stage 2 spilled 870 B without it, 0 with it."""
    return tl.load(params_ptr + P_ZERO).to(tl.int32)


@triton.jit
def _rest_joints(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, S, WS: tl.constexpr, WSC: tl.constexpr,
                 O_X2: tl.constexpr, O_REST: tl.constexpr, BLOCK_B: tl.constexpr):
    """J = J_t + J_s betas (24 x 3 a body) into the scratch row."""
    cols = z + tl.arange(0, 128)
    c_ok = cols < 72
    ok = row_ok[:, None] & c_ok[None, :]
    rest = tl.load(jt_ptr + cols, mask=c_ok, other=0.0)[None, :] + tl.zeros((BLOCK_B, 128), jt_ptr.dtype.element_ty)
    for s in range(S):
        beta = tl.load(st_ptr + rows * WS + O_X2 + 72 + s, mask=row_ok, other=0.0)
        rest += beta[:, None] * tl.load(jsd_ptr + cols * S + s, mask=c_ok, other=0.0)[None, :]
    tl.store(sc_ptr + rows[:, None] * WSC + O_REST + cols[None, :], rest, mask=ok)


@triton.jit
def _body_forward(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr, pb_ptr,
                  J, S, P, JV, WS: tl.constexpr, WSC: tl.constexpr, O_X2: tl.constexpr, O_ROT: tl.constexpr,
                  O_TRANS: tl.constexpr, O_POSED: tl.constexpr, O_REST: tl.constexpr, O_PF: tl.constexpr,
                  O_VJ: tl.constexpr, O_LOCAL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
                  BLOCK_KC: tl.constexpr, BLOCK_JV: tl.constexpr, PRECISION: tl.constexpr):
    """Rest joints, chain, pose feature, vertex joints (and each pair's local, for the backward) of
    the bodies `rows` whose x2 = [w | theta | betas] is in the state; everything to the scratch."""
    sc_b = sc_ptr + rows * WSC
    tl.debug_barrier()  # x2 was written by the previous phase in a tile layout
    _rest_joints(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, S, WS, WSC, O_X2, O_REST, BLOCK_B)
    tl.debug_barrier()
    _chain_forward_walk(st_ptr + rows * WS + O_X2, sc_b + O_ROT, sc_b + O_REST, parents_ptr, sc_b + O_POSED,
                        sc_b + O_TRANS, J, row_ok, True)
    tl.debug_barrier()
    # pose feature f = R_1..23 - I
    cols = z + tl.arange(0, 256)
    c_ok = cols < 207
    ok = row_ok[:, None] & c_ok[None, :]
    r = tl.load(sc_b[:, None] + O_ROT + 9 + cols[None, :], mask=ok, other=0.0)
    diag = cols % 9
    eye = tl.where((diag == 0) | (diag == 4) | (diag == 8), 1.0, 0.0)
    tl.store(sc_b[:, None] + O_PF + cols[None, :], r - eye[None, :].to(r.dtype), mask=ok)
    tl.debug_barrier()
    # vertex joints: local_p = C_p x (stored), sum_p (R_k local_p + t_k w_p) into joint j_p
    acc_t = coeffs_ptr.dtype.element_ty
    jj = z + tl.arange(0, BLOCK_JV)
    out_x = tl.zeros((BLOCK_B, BLOCK_JV), acc_t)
    out_y = tl.zeros((BLOCK_B, BLOCK_JV), acc_t)
    out_z = tl.zeros((BLOCK_B, BLOCK_JV), acc_t)
    for start in range(0, P, BLOCK_P):
        pp = start + tl.arange(0, BLOCK_P)
        p_ok = pp < P
        bone = tl.load(pb_ptr + pp, mask=p_ok, other=0).to(tl.int32)
        joint = tl.load(pj_ptr + pp, mask=p_ok, other=-1).to(tl.int32)
        bw = tl.load(bw_ptr + pp, mask=p_ok, other=0.0)
        lx, ly, lz = _local(st_ptr + O_X2 + 72, sc_ptr + O_PF, coeffs_ptr, rows, row_ok, pp, p_ok, S, 207, WS, 1,
                            WSC, 1, BLOCK_B, BLOCK_P, BLOCK_KC, PRECISION)
        t_ok = row_ok[:, None] & p_ok[None, :]
        l_ptr = sc_b[:, None] + O_LOCAL + pp[None, :] * 3
        tl.store(l_ptr, lx, mask=t_ok)
        tl.store(l_ptr + 1, ly, mask=t_ok)
        tl.store(l_ptr + 2, lz, mask=t_ok)
        t_ptr = sc_b[:, None] + O_TRANS + bone[None, :] * 12
        bwb = bw[None, :]
        px, py, pz = _pair_points(t_ptr, t_ok, lx, ly, lz, bwb)
        onehot = tl.where(p_ok[:, None] & (joint[:, None] == jj[None, :]), 1.0, 0.0).to(acc_t)
        out_x += tl.dot(px, onehot, input_precision=PRECISION, out_dtype=acc_t)
        out_y += tl.dot(py, onehot, input_precision=PRECISION, out_dtype=acc_t)
        out_z += tl.dot(pz, onehot, input_precision=PRECISION, out_dtype=acc_t)
    v_ptr = sc_b[:, None] + O_VJ + jj[None, :] * 3
    v_ok = row_ok[:, None] & (jj < JV)[None, :]
    tl.store(v_ptr, out_x, mask=v_ok)
    tl.store(v_ptr + 1, out_y, mask=v_ok)
    tl.store(v_ptr + 2, out_z, mask=v_ok)
    tl.debug_barrier()


@triton.jit
def _joints49(sc_ptr, rows, row_ok, z, jidx_ptr, WSC: tl.constexpr, O_POSED: tl.constexpr, O_VJ: tl.constexpr):
    """The 49 joints (BLOCK_B, 64) x 3 gathered from the posed and vertex joints of the scratch."""
    n = z + tl.arange(0, 64)
    n_ok = n < 49
    idx = tl.load(jidx_ptr + n, mask=n_ok, other=0).to(tl.int32)
    off = tl.where(idx < 24, O_POSED + idx * 3, O_VJ + (idx - 24) * 3)
    ok = row_ok[:, None] & n_ok[None, :]
    p = sc_ptr + rows[:, None] * WSC + off[None, :]
    return (tl.load(p, mask=ok, other=0.0), tl.load(p + 1, mask=ok, other=0.0),
            tl.load(p + 2, mask=ok, other=1.0))


@triton.jit
def _reproject(X, Y, Z, kx, ky, conf, cx, cy, focal, s2, norm, ok, UNITS: tl.constexpr, ROBUST: tl.constexpr):
    """Per-joint data term of camera-frame points (X, Y, Z) and its derivative (dX, dY, dZ)."""
    rx = _div_ieee(focal * X, Z) + cx - kx
    ry = _div_ieee(focal * Y, Z) + cy - ky
    if UNITS == 0:
        loss = conf * conf * (_rho(rx, s2, ROBUST) + _rho(ry, s2, ROBUST))
        qx = conf * conf * _drho(rx, s2, ROBUST)
        qy = conf * conf * _drho(ry, s2, ROBUST)
    else:
        ex = _div_ieee(2.0 * rx, norm)
        ey = _div_ieee(2.0 * ry, norm)
        loss = conf * (_rho(ex * ex, s2, ROBUST) + _rho(ey * ey, s2, ROBUST))
        qx = _div_ieee(conf * _drho(ex * ex, s2, ROBUST) * 4.0 * ex, norm)
        qy = _div_ieee(conf * _drho(ey * ey, s2, ROBUST) * 4.0 * ey, norm)
    dX = tl.where(ok, _div_ieee(qx * focal, Z), 0.0)
    dY = tl.where(ok, _div_ieee(qy * focal, Z), 0.0)
    dZ = tl.where(ok, -_div_ieee(dX * X + dY * Y, Z), 0.0)
    return tl.where(ok, loss, 0.0), dX, dY, dZ


@triton.jit
def _angle_term(st_ptr, rows, row_ok, aidx_ptr, asign_ptr, a, WS: tl.constexpr, O_X2: tl.constexpr,
                ANGLE_M1: tl.constexpr):
    """Angle prior entry a: column of x2, (exp(s theta) [- 1])^2 and its derivative in theta."""
    col = 3 + tl.load(aidx_ptr + a).to(tl.int32)
    sg = tl.load(asign_ptr + a)
    th = tl.load(st_ptr + rows * WS + O_X2 + col, mask=row_ok, other=0.0)
    e = tl.exp(th * sg)
    if ANGLE_M1:
        u = e - 1.0
    else:
        u = e
    return col, u * u, 2.0 * u * e * sg


@triton.jit
def _priors(st_ptr, sc_ptr, rows, row_ok, z, means_ptr, prec_ptr, nll_ptr, aidx_ptr, asign_ptr, params_ptr, S, M,
            WS: tl.constexpr, WSC: tl.constexpr, O_X2: tl.constexpr, O_YGMM: tl.constexpr, ANGLE_M1: tl.constexpr,
            GRAD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_GK: tl.constexpr, BLOCK_GN: tl.constexpr):
    """(BLOCK_B,) w_pose gmm + w_angle angle + w_shape |betas|^2 of x2; with GRAD the winning
    component's P (theta - mu) goes to the scratch (O_YGMM)."""
    acc_t = means_ptr.dtype.element_ty
    best = tl.full((BLOCK_B,), float("inf"), acc_t)
    best_k = tl.zeros((BLOCK_B,), tl.int32)
    for k in range(M):
        quad = tl.zeros((BLOCK_B,), acc_t)
        for n0 in range(0, 69, BLOCK_GN):
            y, diff = _gmm_component_chunk(st_ptr + O_X2 + 3, means_ptr, prec_ptr, k, n0, rows, row_ok, 69, WS, 1,
                                           acc_t, BLOCK_B, BLOCK_GK, BLOCK_GN)
            quad += tl.sum(diff * y, axis=1)
        val = 0.5 * quad + tl.load(nll_ptr + k)
        win = val < best
        best = tl.where(win, val, best)
        best_k = tl.where(win, k, best_k)
    if GRAD:
        for k in range(M):
            won = row_ok & (best_k == k)
            if tl.sum(won.to(tl.int32), axis=0) > 0:
                for n0 in range(0, 69, BLOCK_GN):
                    y, diff = _gmm_component_chunk(st_ptr + O_X2 + 3, means_ptr, prec_ptr, k, n0, rows, row_ok, 69,
                                                   WS, 1, acc_t, BLOCK_B, BLOCK_GK, BLOCK_GN)
                    ncols = n0 + z + tl.arange(0, BLOCK_GN)
                    tl.store(sc_ptr + rows[:, None] * WSC + O_YGMM + ncols[None, :], y,
                             mask=won[:, None] & (ncols < 69)[None, :])
    angle = tl.zeros((BLOCK_B,), acc_t)
    for a in range(4):
        col, term, d = _angle_term(st_ptr, rows, row_ok, aidx_ptr, asign_ptr, a, WS, O_X2, ANGLE_M1)
        angle += term
    cols = z + tl.arange(0, 64)
    b_ok = row_ok[:, None] & (cols < S)[None, :]
    betas = tl.load(st_ptr + rows[:, None] * WS + O_X2 + 72 + cols[None, :], mask=b_ok, other=0.0)
    shape = tl.sum(betas * betas, axis=1)
    return (tl.load(params_ptr + P_WPOSE) * best + tl.load(params_ptr + P_WANGLE) * angle
            + tl.load(params_ptr + P_WSHAPE) * shape)


@triton.jit
def _data2(st_ptr, sc_ptr, rows, row_ok, z, jidx_ptr, params_ptr, WS: tl.constexpr, WSC: tl.constexpr,
           O_CAM: tl.constexpr, O_CEN: tl.constexpr, O_KP: tl.constexpr, O_CONF: tl.constexpr,
           O_POSED: tl.constexpr, O_VJ: tl.constexpr, UNITS: tl.constexpr, ROBUST: tl.constexpr):
    """Stage-2 data term of the 49 joints: per-joint loss (BLOCK_B, 64) and its derivative."""
    X, Y, Z = _joints49(sc_ptr, rows, row_ok, z, jidx_ptr, WSC, O_POSED, O_VJ)
    n = z + tl.arange(0, 64)
    ok = row_ok[:, None] & (n < 49)[None, :]
    s_b = st_ptr + rows * WS
    X = X + tl.load(s_b + O_CAM, mask=row_ok, other=0.0)[:, None]
    Y = Y + tl.load(s_b + O_CAM + 1, mask=row_ok, other=0.0)[:, None]
    Z = Z + tl.load(s_b + O_CAM + 2, mask=row_ok, other=1.0)[:, None]
    cx = tl.load(s_b + O_CEN, mask=row_ok, other=0.0)[:, None]
    cy = tl.load(s_b + O_CEN + 1, mask=row_ok, other=0.0)[:, None]
    sc_b = sc_ptr + rows[:, None] * WSC
    kx = tl.load(sc_b + O_KP + n[None, :] * 2, mask=ok, other=0.0)
    ky = tl.load(sc_b + O_KP + n[None, :] * 2 + 1, mask=ok, other=0.0)
    conf = tl.load(sc_b + O_CONF + n[None, :], mask=ok, other=0.0)
    return _reproject(X, Y, Z, kx, ky, conf, cx, cy, tl.load(params_ptr + P_FOCAL), tl.load(params_ptr + P_S2),
                      tl.load(params_ptr + P_NORM), ok, UNITS, ROBUST)


@triton.jit
def _adam_rows(st_ptr, fl_ptr, rows, row_ok, cols, N, g, total, step_size, bc2, params_ptr,
               WS: tl.constexpr, O_X: tl.constexpr, O_M: tl.constexpr, O_V: tl.constexpr, O_PREV: tl.constexpr,
               F_DIV: tl.constexpr, F_STEPS: tl.constexpr, FTOL_ROWS: tl.constexpr):
    """One Adam step with the per-row bookkeeping on a (BLOCK_B, C) tile (first N columns); returns
    the rows that moved and their totals (0 elsewhere) for the batch sum."""
    ok2 = row_ok[:, None] & (cols < N)[None, :]
    xp = st_ptr + rows[:, None] * WS + cols[None, :]
    x = tl.load(xp + O_X, mask=ok2, other=0.0)
    m = tl.load(xp + O_M, mask=ok2, other=0.0)
    v = tl.load(xp + O_V, mask=ok2, other=0.0)
    bad = ok2 & ~_finite(g)
    ok = (tl.sum(bad.to(tl.int32), axis=1) == 0) & _finite(total)
    f_b = fl_ptr + rows * 8
    active = tl.load(f_b + F_ACTIVE, mask=row_ok, other=0) != 0
    div = (tl.load(f_b + F_DIV, mask=row_ok, other=0) != 0) | (active & ~ok)
    move = active & ok
    m = m + tl.load(params_ptr + P_W1) * (g - m)
    v = v * tl.load(params_ptr + P_B2) + tl.load(params_ptr + P_W2) * g * g
    denom = _div_ieee(_sqrt_ieee(v), bc2) + tl.load(params_ptr + P_EPS)
    step = _div_ieee(m, denom) * step_size
    x = tl.where(move[:, None], x - step, x)
    tl.store(xp + O_X, x, mask=ok2)
    tl.store(xp + O_M, m, mask=ok2)
    tl.store(xp + O_V, v, mask=ok2)
    steps = tl.load(f_b + F_STEPS, mask=row_ok, other=0) + move.to(tl.int32)
    if FTOL_ROWS:
        prev = tl.load(st_ptr + rows * WS + O_PREV, mask=row_ok, other=0.0)
        rel = _div_ieee(tl.abs(prev - total), tl.maximum(tl.maximum(tl.abs(prev), tl.abs(total)), 1.0))
        active = active & ~(rel < tl.load(params_ptr + P_FTOL))
        tl.store(st_ptr + rows * WS + O_PREV, total, mask=row_ok)
    active = active & ok
    tl.store(f_b + F_ACTIVE, active.to(tl.int32), mask=row_ok)
    tl.store(f_b + F_DIV, div.to(tl.int32), mask=row_ok)
    tl.store(f_b + F_STEPS, steps, mask=row_ok)
    return tl.sum(tl.where(move, total, 0.0), axis=0)


@triton.jit
def _batch_stop(fl_ptr, B, s_prev, s_now, params_ptr, BLOCK_B: tl.constexpr):
    """The whole-batch ftol rule after a step: clears every row's active flag when it fires."""
    rel = _div_ieee(tl.abs(s_prev - s_now), tl.maximum(tl.maximum(tl.abs(s_prev), tl.abs(s_now)), 1.0))
    stop = rel < tl.load(params_ptr + P_FTOL)
    if stop:
        tl.debug_barrier()
        for start in range(0, B, BLOCK_B):
            r = start + tl.arange(0, BLOCK_B)
            tl.store(fl_ptr + r * 8 + F_ACTIVE, tl.zeros((BLOCK_B,), tl.int32), mask=r < B)
        tl.debug_barrier()
    return stop.to(tl.int32)


@triton.jit
def _smplify_stage1_kernel(
    pose_ptr,  # (B, 72) input axis-angle, contiguous (compute dtype)
    betas_ptr,  # (B, S) input betas, contiguous
    cam_ptr,  # (B, 3) input camera translation, contiguous
    kp_ptr,  # (B, 49, 3) input keypoints (pixels, confidence), contiguous
    center_ptr,  # (B, 2) input principal points, contiguous
    jt_ptr,  # (24, 3) rest joints of the template, contiguous
    jsd_ptr,  # (24, 3, S) their shape blend, contiguous
    parents_ptr,  # (24,) int32 parents
    coeffs_ptr,  # (P, 3, K) folded regressor, contiguous
    bw_ptr,  # (P,) bone weight of each pair
    pj_ptr,  # (P,) int64 vertex joint of each pair
    pb_ptr,  # (P,) int64 bone of each pair
    jidx_ptr,  # (49,) int64 smpl_49 = [posed 24 | vertex Jv][joint_index]
    rsum_ptr,  # (49,) regressor row sums
    means_ptr,  # (M, 69) GMM means, contiguous
    prec_ptr,  # (M, 69, 69) GMM precisions, contiguous
    nll_ptr,  # (M,) GMM constants
    aidx_ptr,  # (4,) int64 angle-prior entries of theta
    asign_ptr,  # (4,) their signs
    keep_ptr,  # (49,) stage-2 joint mask
    torso_ptr,  # (2, 4) int64 torso joints: OpenPose, ground truth
    params_ptr,  # (NUM_PARAMS + 2 NT,) scalars, then lr / (1 - b1^t) and sqrt(1 - b2^t), t = 1..NT
    st_ptr,  # (B, WS) out: Adam state of both stages, sanitised camera / centre, t_z0, prev, stage-1 constant
    fl_ptr,  # (B, 8) int32 out: flags
    sc_ptr,  # (B, WSC) scratch (persistent part: sanitised keypoints and stage-2 confidences)
    B, J, S, P, JV, M,  # bodies, body joints (24), betas, pairs, vertex joints, GMM components
    iters,  # Adam steps of stage 1
    NT,  # length of each Adam table
    WS: tl.constexpr, WSC: tl.constexpr,  # row widths of the state and the scratch
    O_X2: tl.constexpr, O_X1: tl.constexpr, O_M1: tl.constexpr, O_V1: tl.constexpr, O_CAM: tl.constexpr,
    O_CEN: tl.constexpr, O_TZ0: tl.constexpr, O_PREV: tl.constexpr, O_CONST: tl.constexpr,
    O_M2: tl.constexpr, O_V2: tl.constexpr,  # state offsets
    O_ROT: tl.constexpr, O_TRANS: tl.constexpr, O_POSED: tl.constexpr, O_REST: tl.constexpr, O_PF: tl.constexpr,
    O_VJ: tl.constexpr, O_LOCAL: tl.constexpr, O_GUP: tl.constexpr, O_X0: tl.constexpr, O_X0C: tl.constexpr,
    O_SJ0: tl.constexpr, O_KP1: tl.constexpr, O_C1: tl.constexpr, O_KP: tl.constexpr, O_CONF: tl.constexpr,
    ALL_JOINTS: tl.constexpr,  # stage 1 fits every joint (+ priors as a constant), else the torso
    UNITS: tl.constexpr,  # data units of the full data term (0 SPIN, 1 mmhuman3d)
    ROBUST: tl.constexpr,  # finite sigma
    DEPTH: tl.constexpr,  # depth_weight != 0
    ANGLE_M1: tl.constexpr,  # angle prior (exp - 1)^2
    FTOL_ROWS: tl.constexpr,  # per-row ftol stop
    BATCH_STOP: tl.constexpr,  # whole-batch ftol stop: one program loops over every body block
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_KC: tl.constexpr, BLOCK_JV: tl.constexpr,
    BLOCK_GK: tl.constexpr, BLOCK_GN: tl.constexpr, BLOCK_N1: tl.constexpr,  # tiles (BLOCK_N1: stage-1 joints)
    PRECISION: tl.constexpr,  # tl.dot input precision ("ieee")
):
    acc_t = jt_ptr.dtype.element_ty
    if BATCH_STOP:
        blk0 = 0
        blk1 = tl.cdiv(B, BLOCK_B)
    else:
        blk0 = tl.program_id(0)
        blk1 = blk0 + 1
    # --- set-up: sanitise, valid_in, x1 / x2 (zero orient), X0, J0, the stage-1 terms -------------
    for blk in range(blk0, blk1):
        z = _opaque_zero(params_ptr)
        rows = blk * BLOCK_B + z + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        n = z + tl.arange(0, 64)
        n_ok = n < 49
        ok49 = row_ok[:, None] & n_ok[None, :]
        k_b = kp_ptr + rows[:, None] * 147 + n[None, :] * 3
        kx = tl.load(k_b, mask=ok49, other=0.0)
        ky = tl.load(k_b + 1, mask=ok49, other=0.0)
        kc = tl.load(k_b + 2, mask=ok49, other=0.0)
        kp_ok = _finite(kx) & _finite(ky) & _finite(kc)
        conf_raw = tl.where(kp_ok, kc, 0.0)
        conf2 = conf_raw * tl.load(keep_ptr + n, mask=n_ok, other=0.0)[None, :]
        sc_b = sc_ptr + rows[:, None] * WSC
        tl.store(sc_b + O_KP + n[None, :] * 2, tl.where(kp_ok, kx, 0.0), mask=ok49)
        tl.store(sc_b + O_KP + n[None, :] * 2 + 1, tl.where(kp_ok, ky, 0.0), mask=ok49)
        tl.store(sc_b + O_CONF + n[None, :], conf2, mask=ok49)
        seen = tl.sum(tl.where(ok49 & (conf2 != 0.0), 1, 0), axis=1) > 0
        c = z + tl.arange(0, 128)
        okp = row_ok[:, None] & (c < 72)[None, :]
        pose = tl.load(pose_ptr + rows[:, None] * 72 + c[None, :], mask=okp, other=0.0)
        okb = row_ok[:, None] & (c < S)[None, :]
        betas = tl.load(betas_ptr + rows[:, None] * S + c[None, :], mask=okb, other=0.0)
        c4 = z + tl.arange(0, 4)
        ok3 = row_ok[:, None] & (c4 < 3)[None, :]
        ok2 = row_ok[:, None] & (c4 < 2)[None, :]
        cam = tl.load(cam_ptr + rows[:, None] * 3 + c4[None, :], mask=ok3, other=0.0)
        cen = tl.load(center_ptr + rows[:, None] * 2 + c4[None, :], mask=ok2, other=0.0)
        bad = (tl.sum(tl.where(okp & ~_finite(pose), 1, 0), axis=1) + tl.sum(tl.where(okb & ~_finite(betas), 1, 0), 1)
               + tl.sum(tl.where(ok3 & ~_finite(cam), 1, 0), 1) + tl.sum(tl.where(ok2 & ~_finite(cen), 1, 0), 1))
        valid = (bad == 0) & seen & row_ok
        pose = tl.where(valid[:, None], pose, 0.0)
        betas = tl.where(valid[:, None], betas, 0.0)
        cam = tl.where(valid[:, None], cam, tl.where(c4 == 2, tl.load(params_ptr + P_TZ_DEFAULT), 0.0)[None, :])
        cen = tl.where(valid[:, None], cen, 0.5 * tl.load(params_ptr + P_IMG))
        s_b = st_ptr + rows[:, None] * WS
        tl.store(s_b + O_X2 + c[None, :], tl.where(c[None, :] < 3, 0.0, pose), mask=okp)
        tl.store(s_b + O_X2 + 72 + c[None, :], betas, mask=okb)
        w_in = tl.load(pose_ptr + rows[:, None] * 72 + c4[None, :], mask=ok3, other=0.0)
        tl.store(s_b + O_X1 + c4[None, :], tl.where(valid[:, None], w_in, 0.0), mask=ok3)  # x1 = [w | t]
        tl.store(s_b + O_X1 + 3 + c4[None, :], cam, mask=ok3)
        tl.store(s_b + O_CAM + c4[None, :], cam, mask=ok3)
        tl.store(s_b + O_CEN + c4[None, :], cen, mask=ok2)
        ok8 = row_ok[:, None] & (c < 6)[None, :]
        zero = tl.zeros((BLOCK_B, 128), acc_t)
        tl.store(s_b + O_M1 + c[None, :], zero, mask=ok8)
        tl.store(s_b + O_V1 + c[None, :], zero, mask=ok8)
        tl.store(st_ptr + rows * WS + O_TZ0, tl.sum(tl.where((c4 == 2)[None, :], cam, 0.0), axis=1), mask=row_ok)
        tl.store(st_ptr + rows * WS + O_PREV, tl.full((BLOCK_B,), float("nan"), acc_t), mask=row_ok)
        use_gt = tl.zeros((BLOCK_B,), tl.int32)
        for t4 in range(4):
            j = tl.load(torso_ptr + t4).to(tl.int32)
            raw = tl.sum(tl.where(n[None, :] == j, conf_raw, 0.0), axis=1)
            use_gt = tl.where(raw <= 0.0, 1, use_gt)
        f_b = fl_ptr + rows * 8
        vi = valid.to(tl.int32)
        tl.store(f_b + F_VALID, vi, mask=row_ok)
        tl.store(f_b + F_ACTIVE, vi, mask=row_ok)
        tl.store(f_b + F_DIV1, vi * 0, mask=row_ok)
        tl.store(f_b + F_DIV2, vi * 0, mask=row_ok)
        tl.store(f_b + F_STEPS1, vi * 0, mask=row_ok)
        tl.store(f_b + F_STEPS2, vi * 0, mask=row_ok)
        tl.store(f_b + F_USE_GT, use_gt, mask=row_ok)
        # X0: the body with zero global orient
        _body_forward(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr, pb_ptr,
                      J, S, P, JV, WS, WSC, O_X2, O_ROT, O_TRANS, O_POSED, O_REST, O_PF, O_VJ, O_LOCAL, BLOCK_B,
                      BLOCK_P, BLOCK_KC, BLOCK_JV, PRECISION)
        X, Y, Z = _joints49(sc_ptr, rows, row_ok, z, jidx_ptr, WSC, O_POSED, O_VJ)
        tl.store(sc_b + O_X0 + n[None, :] * 3, X, mask=ok49)
        tl.store(sc_b + O_X0 + n[None, :] * 3 + 1, Y, mask=ok49)
        tl.store(sc_b + O_X0 + n[None, :] * 3 + 2, Z, mask=ok49)
        if ALL_JOINTS:
            const = _priors(st_ptr, sc_ptr, rows, row_ok, z, means_ptr, prec_ptr, nll_ptr, aidx_ptr, asign_ptr,
                            params_ptr,
                            S, M, WS, WSC, O_X2, 0, ANGLE_M1, False, BLOCK_B, BLOCK_GK, BLOCK_GN)
        else:
            const = tl.zeros((BLOCK_B,), acc_t)
        tl.store(st_ptr + rows * WS + O_CONST, const, mask=row_ok)
        tl.debug_barrier()
        # stage-1 joints: X0c = X0 - s J0, sJ0 = s J0 (J0 = rest root), keypoints and weights
        j0x, j0y, j0z = _load3(sc_ptr + rows * WSC + O_REST, row_ok)
        m1 = z + tl.arange(0, BLOCK_N1)
        ok1 = row_ok[:, None] & (m1 < 49)[None, :]
        if ALL_JOINTS:
            idx = m1[None, :] + use_gt[:, None] * 0
        else:
            idx = tl.load(torso_ptr + use_gt[:, None] * 4 + m1[None, :], mask=ok1, other=0).to(tl.int32)
        s = tl.load(rsum_ptr + idx, mask=ok1, other=0.0)
        for cc in tl.static_range(3):
            j0 = tl.where(cc == 0, j0x, tl.where(cc == 1, j0y, j0z))
            sj0 = s * j0[:, None]
            x0 = tl.load(sc_b + O_X0 + idx * 3 + cc, mask=ok1, other=0.0)
            tl.store(sc_b + O_X0C + m1[None, :] * 3 + cc, x0 - sj0, mask=ok1)
            tl.store(sc_b + O_SJ0 + m1[None, :] * 3 + cc, sj0, mask=ok1)
        tl.store(sc_b + O_KP1 + m1[None, :] * 2, tl.load(sc_b + O_KP + idx * 2, mask=ok1, other=0.0), mask=ok1)
        tl.store(sc_b + O_KP1 + m1[None, :] * 2 + 1, tl.load(sc_b + O_KP + idx * 2 + 1, mask=ok1, other=0.0), mask=ok1)
        if ALL_JOINTS:
            tl.store(sc_b + O_C1 + m1[None, :], tl.load(sc_b + O_CONF + idx, mask=ok1, other=0.0), mask=ok1)
        else:
            tl.store(sc_b + O_C1 + m1[None, :], tl.full((BLOCK_B, BLOCK_N1), 1.0, acc_t), mask=ok1)
    tl.debug_barrier()

    # --- stage 1 iterations --------------------------------------------------------------------
    s_prev = tl.full((), float("nan"), acc_t)
    stopped = tl.zeros((), tl.int32)
    for k in range(iters):
        step_size = tl.load(params_ptr + NUM_PARAMS + k)
        bc2 = tl.load(params_ptr + NUM_PARAMS + NT + k)
        s_now = tl.zeros((), acc_t)
        if stopped == 0:
            for blk in range(blk0, blk1):
                z = _opaque_zero(params_ptr)
                rows = blk * BLOCK_B + z + tl.arange(0, BLOCK_B)
                row_ok = rows < B
                f_b = fl_ptr + rows * 8
                if tl.sum(tl.load(f_b + F_ACTIVE, mask=row_ok, other=0), axis=0) > 0:
                    m1 = z + tl.arange(0, BLOCK_N1)
                    c8 = z + tl.arange(0, 8)
                    s_b = st_ptr + rows * WS
                    wx, wy, wz = _load3(s_b + O_X1, row_ok)
                    tx, ty, tz = _load3(s_b + O_X1 + 3, row_ok)
                    r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rodrigues(wx, wy, wz, row_ok)
                    ok1 = row_ok[:, None] & (m1 < 49)[None, :]
                    sc_b = sc_ptr + rows[:, None] * WSC
                    ax = tl.load(sc_b + O_X0C + m1[None, :] * 3, mask=ok1, other=0.0)
                    ay = tl.load(sc_b + O_X0C + m1[None, :] * 3 + 1, mask=ok1, other=0.0)
                    az = tl.load(sc_b + O_X0C + m1[None, :] * 3 + 2, mask=ok1, other=0.0)
                    X = (r00[:, None] * ax + r01[:, None] * ay + r02[:, None] * az
                         + tl.load(sc_b + O_SJ0 + m1[None, :] * 3, mask=ok1, other=0.0) + tx[:, None])
                    Y = (r10[:, None] * ax + r11[:, None] * ay + r12[:, None] * az
                         + tl.load(sc_b + O_SJ0 + m1[None, :] * 3 + 1, mask=ok1, other=0.0) + ty[:, None])
                    Z = (r20[:, None] * ax + r21[:, None] * ay + r22[:, None] * az
                         + tl.load(sc_b + O_SJ0 + m1[None, :] * 3 + 2, mask=ok1, other=0.0) + tz[:, None])
                    Z = tl.where(ok1, Z, 1.0)
                    kx = tl.load(sc_b + O_KP1 + m1[None, :] * 2, mask=ok1, other=0.0)
                    ky = tl.load(sc_b + O_KP1 + m1[None, :] * 2 + 1, mask=ok1, other=0.0)
                    conf = tl.load(sc_b + O_C1 + m1[None, :], mask=ok1, other=0.0)
                    cx = tl.load(s_b + O_CEN, mask=row_ok, other=0.0)[:, None]
                    cy = tl.load(s_b + O_CEN + 1, mask=row_ok, other=0.0)[:, None]
                    if ALL_JOINTS:
                        loss, dX, dY, dZ = _reproject(X, Y, Z, kx, ky, conf, cx, cy, tl.load(params_ptr + P_FOCAL),
                                                      tl.load(params_ptr + P_S2), tl.load(params_ptr + P_NORM), ok1,
                                                      UNITS, ROBUST)
                    else:
                        loss, dX, dY, dZ = _reproject(X, Y, Z, kx, ky, conf, cx, cy, tl.load(params_ptr + P_FOCAL),
                                                      tl.load(params_ptr + P_S2), tl.load(params_ptr + P_NORM), ok1,
                                                      0, False)
                    total = tl.sum(loss, axis=1) + tl.load(s_b + O_CONST, mask=row_ok, other=0.0)
                    gtx = tl.sum(dX, axis=1)
                    gty = tl.sum(dY, axis=1)
                    gtz = tl.sum(dZ, axis=1)
                    if DEPTH:
                        dz = tz - tl.load(s_b + O_TZ0, mask=row_ok, other=0.0)
                        dw = tl.load(params_ptr + P_DEPTH)
                        total = total + dw * (dz * dz)
                        gtz = gtz + 2.0 * dw * dz
                    gw0, gw1, gw2 = _rodrigues_vjp(
                        wx, wy, wz, tl.sum(dX * ax, 1), tl.sum(dX * ay, 1), tl.sum(dX * az, 1),
                        tl.sum(dY * ax, 1), tl.sum(dY * ay, 1), tl.sum(dY * az, 1),
                        tl.sum(dZ * ax, 1), tl.sum(dZ * ay, 1), tl.sum(dZ * az, 1), row_ok)
                    cc = c8[None, :]
                    g = tl.where(cc == 0, gw0[:, None], tl.where(cc == 1, gw1[:, None], tl.where(
                        cc == 2, gw2[:, None], tl.where(cc == 3, gtx[:, None], tl.where(
                            cc == 4, gty[:, None], gtz[:, None])))))
                    s_now += _adam_rows(st_ptr, fl_ptr, rows, row_ok, c8, 6, g, total, step_size, bc2, params_ptr,
                                        WS, O_X1, O_M1, O_V1, O_PREV, F_DIV1, F_STEPS1, FTOL_ROWS)
            if BATCH_STOP:
                stopped = _batch_stop(fl_ptr, B, s_prev, s_now, params_ptr, BLOCK_B)
                s_prev = s_now
    tl.debug_barrier()

    # --- hand stage 2 its start: x2 = [w | theta | betas], camera, flags, zeroed moments ------------
    for blk in range(blk0, blk1):
        z = _opaque_zero(params_ptr)
        rows = blk * BLOCK_B + z + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        s_b = st_ptr + rows * WS
        wx, wy, wz = _load3(s_b + O_X1, row_ok)
        tx, ty, tz = _load3(s_b + O_X1 + 3, row_ok)
        tl.store(s_b + O_X2, wx, mask=row_ok)
        tl.store(s_b + O_X2 + 1, wy, mask=row_ok)
        tl.store(s_b + O_X2 + 2, wz, mask=row_ok)
        tl.store(s_b + O_CAM, tx, mask=row_ok)
        tl.store(s_b + O_CAM + 1, ty, mask=row_ok)
        tl.store(s_b + O_CAM + 2, tz, mask=row_ok)
        tl.store(s_b + O_PREV, tl.full((BLOCK_B,), float("nan"), acc_t), mask=row_ok)
        f_b = fl_ptr + rows * 8
        valid = tl.load(f_b + F_VALID, mask=row_ok, other=0)
        div1 = tl.load(f_b + F_DIV1, mask=row_ok, other=0)
        tl.store(f_b + F_ACTIVE, valid * (1 - div1), mask=row_ok)
        c = z + tl.arange(0, 128)
        okx = row_ok[:, None] & (c < 72 + S)[None, :]
        zero = tl.zeros((BLOCK_B, 128), acc_t)
        tl.store(st_ptr + rows[:, None] * WS + O_M2 + c[None, :], zero, mask=okx)
        tl.store(st_ptr + rows[:, None] * WS + O_V2 + c[None, :], zero, mask=okx)
        ok9 = row_ok[:, None] & (c < 9)[None, :]
        # dL/dR_0 gets no pose-feature share
        tl.store(sc_ptr + rows[:, None] * WSC + O_GUP + c[None, :], zero, mask=ok9)


@triton.jit
def _stage2_gradient(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr, pb_ptr,
                     jidx_ptr, means_ptr, prec_ptr, nll_ptr, aidx_ptr, asign_ptr, params_ptr, J, S, P, JV, M,
                     WS: tl.constexpr, WSC: tl.constexpr, O_X2: tl.constexpr, O_CAM: tl.constexpr, O_CEN: tl.constexpr,
                     O_ROT: tl.constexpr, O_TRANS: tl.constexpr, O_POSED: tl.constexpr, O_REST: tl.constexpr,
                     O_PF: tl.constexpr, O_VJ: tl.constexpr, O_LOCAL: tl.constexpr, O_GL: tl.constexpr,
                     O_GUP: tl.constexpr, O_ACC: tl.constexpr, O_GREST: tl.constexpr, O_GAA: tl.constexpr,
                     O_GPOSED: tl.constexpr, O_GTRANS: tl.constexpr, O_GVJ: tl.constexpr, O_GBETA: tl.constexpr,
                     O_YGMM: tl.constexpr, O_KP: tl.constexpr, O_CONF: tl.constexpr, O_Q: tl.constexpr,
                     UNITS: tl.constexpr, ROBUST: tl.constexpr, ANGLE_M1: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_KC: tl.constexpr, BLOCK_JV: tl.constexpr,
                     BLOCK_GK: tl.constexpr, BLOCK_GN: tl.constexpr, PRECISION: tl.constexpr):
    """Stage-2 objective (BLOCK_B,) and its gradient (BLOCK_B, 128) in x2's columns, by hand."""
    acc_t = jt_ptr.dtype.element_ty
    sc_b = sc_ptr + rows * WSC
    _body_forward(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr, pb_ptr,
                  J, S, P, JV, WS, WSC, O_X2, O_ROT, O_TRANS, O_POSED, O_REST, O_PF, O_VJ, O_LOCAL, BLOCK_B,
                  BLOCK_P, BLOCK_KC, BLOCK_JV, PRECISION)
    loss, dX, dY, dZ = _data2(st_ptr, sc_ptr, rows, row_ok, z, jidx_ptr, params_ptr, WS, WSC, O_CAM, O_CEN, O_KP,
                              O_CONF, O_POSED, O_VJ, UNITS, ROBUST)
    total = tl.sum(loss, axis=1)
    n = z + tl.arange(0, 64)
    okq = row_ok[:, None] & (n < 49)[None, :]
    q_ptr = sc_b[:, None] + O_Q + n[None, :] * 3
    tl.store(q_ptr, dX, mask=okq)
    tl.store(q_ptr + 1, dY, mask=okq)
    tl.store(q_ptr + 2, dZ, mask=okq)
    # zeroed accumulators of the chain's reverse walk
    c = z + tl.arange(0, 128)
    zero = tl.zeros((BLOCK_B, 128), acc_t)
    for c0 in tl.static_range(0, 288, 128):
        tl.store(sc_b[:, None] + O_ACC + c0 + c[None, :], zero, mask=row_ok[:, None] & (c0 + c < 288)[None, :])
    tl.store(sc_b[:, None] + O_GREST + c[None, :], zero, mask=row_ok[:, None] & (c < 72)[None, :])
    total += _priors(st_ptr, sc_ptr, rows, row_ok, z, means_ptr, prec_ptr, nll_ptr, aidx_ptr, asign_ptr, params_ptr,
                     S, M,
                     WS, WSC, O_X2, O_YGMM, ANGLE_M1, True, BLOCK_B, BLOCK_GK, BLOCK_GN)
    tl.debug_barrier()
    # q back to the posed and vertex joints it was gathered from: 16-joint chunks times 0/1 matrices
    # (repeated joints add up; small dots keep the FMA operands in registers)
    j32 = z + tl.arange(0, 32)
    jv = z + tl.arange(0, BLOCK_JV)
    for r in tl.static_range(3):
        acc_p = tl.zeros((BLOCK_B, 32), acc_t)
        acc_v = tl.zeros((BLOCK_B, BLOCK_JV), acc_t)
        for n0 in tl.static_range(0, 64, 16):
            nn = n0 + tl.arange(0, 16)
            idx = tl.load(jidx_ptr + nn, mask=nn < 49, other=-1).to(tl.int32)
            q = tl.load(sc_b[:, None] + O_Q + nn[None, :] * 3 + r, mask=row_ok[:, None] & (nn < 49)[None, :],
                        other=0.0)
            oh_p = tl.where((idx[:, None] == j32[None, :]) & (nn < 49)[:, None], 1.0, 0.0).to(acc_t)
            oh_v = tl.where((idx[:, None] - 24 == jv[None, :]) & (nn < 49)[:, None], 1.0, 0.0).to(acc_t)
            acc_p += tl.dot(q, oh_p, input_precision=PRECISION, out_dtype=acc_t)
            acc_v += tl.dot(q, oh_v, input_precision=PRECISION, out_dtype=acc_t)
        tl.store(sc_b[:, None] + O_GPOSED + j32[None, :] * 3 + r, acc_p, mask=row_ok[:, None] & (j32 < 24)[None, :])
        tl.store(sc_b[:, None] + O_GVJ + jv[None, :] * 3 + r, acc_v, mask=row_ok[:, None] & (jv < JV)[None, :])
    tl.debug_barrier()
    # vertex joints backward: gl_p = R_k^T q_j (stored for the x contraction)
    for start in range(0, P, BLOCK_P):
        pp = start + tl.arange(0, BLOCK_P)
        p_ok = pp < P
        bone = tl.load(pb_ptr + pp, mask=p_ok, other=0).to(tl.int32)
        joint = tl.load(pj_ptr + pp, mask=p_ok, other=0).to(tl.int32)
        t_ok = row_ok[:, None] & p_ok[None, :]
        g_ptr = sc_b[:, None] + O_GVJ + joint[None, :] * 3
        gx = tl.load(g_ptr, mask=t_ok, other=0.0)
        gy = tl.load(g_ptr + 1, mask=t_ok, other=0.0)
        gz = tl.load(g_ptr + 2, mask=t_ok, other=0.0)
        t_ptr = sc_b[:, None] + O_TRANS + bone[None, :] * 12
        gl_ptr = sc_b[:, None] + O_GL + pp[None, :] * 3
        for m in tl.static_range(3):
            gl = (tl.load(t_ptr + m, mask=t_ok, other=0.0) * gx + tl.load(t_ptr + 4 + m, mask=t_ok, other=0.0) * gy
                  + tl.load(t_ptr + 8 + m, mask=t_ok, other=0.0) * gz)
            tl.store(gl_ptr + m, gl, mask=t_ok)
    # dL/dT_k row r = sum over the bone's pairs of q_r [local, w]: one row of T a pass (4 accumulators)
    nb = z + tl.arange(0, 32)
    for r in tl.static_range(3):
        a0 = tl.zeros((BLOCK_B, 32), acc_t)
        a1 = tl.zeros((BLOCK_B, 32), acc_t)
        a2 = tl.zeros((BLOCK_B, 32), acc_t)
        a3 = tl.zeros((BLOCK_B, 32), acc_t)
        for start in range(0, P, BLOCK_P):
            pp = start + tl.arange(0, BLOCK_P)
            p_ok = pp < P
            bone = tl.load(pb_ptr + pp, mask=p_ok, other=0).to(tl.int32)
            joint = tl.load(pj_ptr + pp, mask=p_ok, other=0).to(tl.int32)
            bw = tl.load(bw_ptr + pp, mask=p_ok, other=0.0)
            t_ok = row_ok[:, None] & p_ok[None, :]
            gr = tl.load(sc_b[:, None] + O_GVJ + joint[None, :] * 3 + r, mask=t_ok, other=0.0)
            l_ptr = sc_b[:, None] + O_LOCAL + pp[None, :] * 3
            onehot = tl.where(p_ok[:, None] & (bone[:, None] == nb[None, :]), 1.0, 0.0).to(acc_t)
            a0 += tl.dot(gr * tl.load(l_ptr, mask=t_ok, other=0.0), onehot, input_precision=PRECISION,
                         out_dtype=acc_t)
            a1 += tl.dot(gr * tl.load(l_ptr + 1, mask=t_ok, other=0.0), onehot, input_precision=PRECISION,
                         out_dtype=acc_t)
            a2 += tl.dot(gr * tl.load(l_ptr + 2, mask=t_ok, other=0.0), onehot, input_precision=PRECISION,
                         out_dtype=acc_t)
            a3 += tl.dot(gr * bw[None, :], onehot, input_precision=PRECISION, out_dtype=acc_t)
        ga = sc_b[:, None] + O_GTRANS + nb[None, :] * 12 + 4 * r
        ga_ok = row_ok[:, None] & (nb < 24)[None, :]
        tl.store(ga, a0, mask=ga_ok)
        tl.store(ga + 1, a1, mask=ga_ok)
        tl.store(ga + 2, a2, mask=ga_ok)
        tl.store(ga + 3, a3, mask=ga_ok)
    tl.debug_barrier()
    # dL/d[1, betas, f] = gl (3P) @ C (3P, K): betas to O_GBETA, f to the chain's dL/dR_1..23 (O_GUP + 9)
    K = 1 + S + 207
    for k0 in range(0, K, BLOCK_KC):
        kk = k0 + tl.arange(0, BLOCK_KC)
        k_ok = kk < K
        acc = tl.zeros((BLOCK_B, BLOCK_KC), acc_t)
        for start in range(0, P, BLOCK_P):
            pp = start + tl.arange(0, BLOCK_P)
            p_ok = pp < P
            gl_ptr = sc_b[:, None] + O_GL + pp[None, :] * 3
            gl_ok = row_ok[:, None] & p_ok[None, :]
            c_ptr = coeffs_ptr + pp[:, None] * (3 * K) + kk[None, :]
            c_ok = p_ok[:, None] & k_ok[None, :]
            acc += tl.dot(tl.load(gl_ptr, mask=gl_ok, other=0.0), tl.load(c_ptr, mask=c_ok, other=0.0),
                          input_precision=PRECISION, out_dtype=acc_t)
            acc += tl.dot(tl.load(gl_ptr + 1, mask=gl_ok, other=0.0), tl.load(c_ptr + K, mask=c_ok, other=0.0),
                          input_precision=PRECISION, out_dtype=acc_t)
            acc += tl.dot(tl.load(gl_ptr + 2, mask=gl_ok, other=0.0), tl.load(c_ptr + 2 * K, mask=c_ok, other=0.0),
                          input_precision=PRECISION, out_dtype=acc_t)
        is_beta = (kk >= 1) & (kk < 1 + S)
        dst = tl.where(is_beta, O_GBETA + kk - 1, O_GUP + 9 + kk - 1 - S)
        tl.store(sc_b[:, None] + dst[None, :], acc, mask=row_ok[:, None] & (k_ok & (kk >= 1))[None, :])
    tl.debug_barrier()
    _chain_backward_walk(st_ptr + rows * WS + O_X2, sc_b + O_ROT, sc_b + O_REST, parents_ptr, sc_b + O_TRANS,
                         sc_b + O_GPOSED, sc_b + O_GTRANS, sc_b + O_GUP, sc_b + O_ACC, sc_b + O_GAA, sc_b + O_GREST,
                         J, row_ok, True)
    tl.debug_barrier()
    # the gradient in x2's columns: [dL/daa (72) | dL/dbetas (S)] + the priors
    c = z + tl.arange(0, 128)
    ok72 = row_ok[:, None] & (c < 72)[None, :]
    g = tl.load(sc_b[:, None] + O_GAA + c[None, :], mask=ok72, other=0.0)
    okth = ok72 & (c >= 3)[None, :]
    g += tl.load(params_ptr + P_WPOSE) * tl.load(sc_b[:, None] + O_YGMM + c[None, :] - 3, mask=okth, other=0.0)
    w_angle = tl.load(params_ptr + P_WANGLE)
    for a in range(4):
        col, term, d = _angle_term(st_ptr, rows, row_ok, aidx_ptr, asign_ptr, a, WS, O_X2, ANGLE_M1)
        g += tl.where(c[None, :] == col, (w_angle * d)[:, None], 0.0)
    grest = tl.load(sc_b[:, None] + O_GREST + c[None, :], mask=ok72, other=0.0)
    w_shape = tl.load(params_ptr + P_WSHAPE)
    for s in range(S):
        beta = tl.load(st_ptr + rows * WS + O_X2 + 72 + s, mask=row_ok, other=0.0)
        gb = (tl.load(sc_b + O_GBETA + s, mask=row_ok, other=0.0)
              + tl.sum(grest * tl.load(jsd_ptr + c * S + s, mask=c < 72, other=0.0)[None, :], axis=1)
              + 2.0 * w_shape * beta)
        g += tl.where(c[None, :] == 72 + s, gb[:, None], 0.0)
    return total, g


@triton.jit
def _smplify_stage2_kernel(
    pose_ptr,  # (B, 72) input axis-angle (returned where a fit is invalid)
    betas_ptr,  # (B, S) input betas
    cam_ptr,  # (B, 3) input camera translation
    jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr, pb_ptr, jidx_ptr,  # body model, as in stage 1
    means_ptr, prec_ptr, nll_ptr, aidx_ptr, asign_ptr,  # priors, as in stage 1
    params_ptr,  # scalars and Adam tables, as in stage 1
    st_ptr,  # (B, WS) state from stage 1
    fl_ptr,  # (B, 8) int32 flags from stage 1
    sc_ptr,  # (B, WSC) scratch (sanitised keypoints and confidences from stage 1)
    out_pose_ptr,  # (B, 72) out
    out_betas_ptr,  # (B, S) out
    out_cam_ptr,  # (B, 3) out
    out_jl_ptr,  # (B, 49) out: stage-2 data term per joint (inf where invalid)
    out_total_ptr,  # (B,) out: stage-2 objective (inf where invalid)
    out_valid_ptr,  # (B,) uint8 out
    out_iters_ptr,  # (B, 2) int64 out: steps of stage 1 and stage 2
    B, J, S, P, JV, M,  # bodies, body joints (24), betas, pairs, vertex joints, GMM components
    iters,  # Adam steps of stage 2
    NT,  # length of each Adam table
    WS: tl.constexpr, WSC: tl.constexpr,
    O_X2: tl.constexpr, O_M2: tl.constexpr, O_V2: tl.constexpr, O_CAM: tl.constexpr, O_CEN: tl.constexpr,
    O_PREV: tl.constexpr,
    O_ROT: tl.constexpr, O_TRANS: tl.constexpr, O_POSED: tl.constexpr, O_REST: tl.constexpr, O_PF: tl.constexpr,
    O_VJ: tl.constexpr, O_LOCAL: tl.constexpr, O_GL: tl.constexpr, O_GUP: tl.constexpr, O_ACC: tl.constexpr,
    O_GREST: tl.constexpr, O_GAA: tl.constexpr, O_GPOSED: tl.constexpr, O_GTRANS: tl.constexpr, O_GVJ: tl.constexpr,
    O_GBETA: tl.constexpr, O_YGMM: tl.constexpr, O_KP: tl.constexpr, O_CONF: tl.constexpr, O_Q: tl.constexpr,
    UNITS: tl.constexpr, ROBUST: tl.constexpr, ANGLE_M1: tl.constexpr, FTOL_ROWS: tl.constexpr,
    BATCH_STOP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_KC: tl.constexpr, BLOCK_JV: tl.constexpr,
    BLOCK_GK: tl.constexpr, BLOCK_GN: tl.constexpr, PRECISION: tl.constexpr,
):
    acc_t = jt_ptr.dtype.element_ty
    if BATCH_STOP:
        blk0 = 0
        blk1 = tl.cdiv(B, BLOCK_B)
    else:
        blk0 = tl.program_id(0)
        blk1 = blk0 + 1
    s_prev = tl.full((), float("nan"), acc_t)
    stopped = tl.zeros((), tl.int32)
    for k in range(iters):
        step_size = tl.load(params_ptr + NUM_PARAMS + k)
        bc2 = tl.load(params_ptr + NUM_PARAMS + NT + k)
        s_now = tl.zeros((), acc_t)
        if stopped == 0:
            for blk in range(blk0, blk1):
                z = _opaque_zero(params_ptr)
                rows = blk * BLOCK_B + z + tl.arange(0, BLOCK_B)
                row_ok = rows < B
                if tl.sum(tl.load(fl_ptr + rows * 8 + F_ACTIVE, mask=row_ok, other=0), axis=0) > 0:
                    total, g = _stage2_gradient(
                        st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr,
                        pb_ptr,
                        jidx_ptr, means_ptr, prec_ptr, nll_ptr, aidx_ptr, asign_ptr, params_ptr, J, S, P, JV, M,
                        WS, WSC, O_X2, O_CAM, O_CEN, O_ROT, O_TRANS, O_POSED, O_REST, O_PF, O_VJ, O_LOCAL, O_GL,
                        O_GUP, O_ACC, O_GREST, O_GAA, O_GPOSED, O_GTRANS, O_GVJ, O_GBETA, O_YGMM, O_KP, O_CONF, O_Q,
                        UNITS, ROBUST, ANGLE_M1, BLOCK_B, BLOCK_P, BLOCK_KC, BLOCK_JV, BLOCK_GK, BLOCK_GN, PRECISION)
                    tl.debug_barrier()
                    c = z + tl.arange(0, 128)
                    s_now += _adam_rows(st_ptr, fl_ptr, rows, row_ok, c, 72 + S, g, total, step_size, bc2,
                                        params_ptr, WS, O_X2, O_M2, O_V2, O_PREV, F_DIV2, F_STEPS2, FTOL_ROWS)
            if BATCH_STOP:
                stopped = _batch_stop(fl_ptr, B, s_prev, s_now, params_ptr, BLOCK_B)
                s_prev = s_now

    # --- the result ----------------------------------------------------------------------------
    for blk in range(blk0, blk1):
        z = _opaque_zero(params_ptr)
        rows = blk * BLOCK_B + z + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        c = z + tl.arange(0, 128)
        _body_forward(st_ptr, sc_ptr, rows, row_ok, z, jt_ptr, jsd_ptr, parents_ptr, coeffs_ptr, bw_ptr, pj_ptr, pb_ptr,
                      J, S, P, JV, WS, WSC, O_X2, O_ROT, O_TRANS, O_POSED, O_REST, O_PF, O_VJ, O_LOCAL, BLOCK_B,
                      BLOCK_P, BLOCK_KC, BLOCK_JV, PRECISION)
        loss, dX, dY, dZ = _data2(st_ptr, sc_ptr, rows, row_ok, z, jidx_ptr, params_ptr, WS, WSC, O_CAM, O_CEN, O_KP,
                                  O_CONF, O_POSED, O_VJ, UNITS, ROBUST)
        total = tl.sum(loss, axis=1) + _priors(st_ptr, sc_ptr, rows, row_ok, z, means_ptr, prec_ptr, nll_ptr, aidx_ptr,
                                               asign_ptr, params_ptr, S, M, WS, WSC, O_X2, 0, ANGLE_M1, False, BLOCK_B,
                                               BLOCK_GK, BLOCK_GN)
        f_b = fl_ptr + rows * 8
        okx = row_ok[:, None] & (c < 72 + S)[None, :]
        x = tl.load(st_ptr + rows[:, None] * WS + O_X2 + c[None, :], mask=okx, other=0.0)
        c4 = z + tl.arange(0, 4)
        ok3 = row_ok[:, None] & (c4 < 3)[None, :]
        cam = tl.load(st_ptr + rows[:, None] * WS + O_CAM + c4[None, :], mask=ok3, other=0.0)
        nonfinite = (tl.sum(tl.where(okx & ~_finite(x), 1, 0), axis=1)
                     + tl.sum(tl.where(ok3 & ~_finite(cam), 1, 0), axis=1))
        valid = ((tl.load(f_b + F_VALID, mask=row_ok, other=0) != 0)
                 & (tl.load(f_b + F_DIV1, mask=row_ok, other=0) == 0)
                 & (tl.load(f_b + F_DIV2, mask=row_ok, other=0) == 0) & _finite(total) & (nonfinite == 0))
        okp = row_ok[:, None] & (c < 72)[None, :]
        pose_in = tl.load(pose_ptr + rows[:, None] * 72 + c[None, :], mask=okp, other=0.0)
        tl.store(out_pose_ptr + rows[:, None] * 72 + c[None, :], tl.where(valid[:, None], x, pose_in), mask=okp)
        okb = row_ok[:, None] & (c < S)[None, :]
        betas_in = tl.load(betas_ptr + rows[:, None] * S + c[None, :], mask=okb, other=0.0)
        xb = tl.load(st_ptr + rows[:, None] * WS + O_X2 + 72 + c[None, :], mask=okb, other=0.0)
        tl.store(out_betas_ptr + rows[:, None] * S + c[None, :], tl.where(valid[:, None], xb, betas_in), mask=okb)
        cam_in = tl.load(cam_ptr + rows[:, None] * 3 + c4[None, :], mask=ok3, other=0.0)
        tl.store(out_cam_ptr + rows[:, None] * 3 + c4[None, :], tl.where(valid[:, None], cam, cam_in), mask=ok3)
        n = z + tl.arange(0, 64)
        ok49 = row_ok[:, None] & (n < 49)[None, :]
        tl.store(out_jl_ptr + rows[:, None] * 49 + n[None, :], tl.where(valid[:, None], loss, float("inf")), mask=ok49)
        tl.store(out_total_ptr + rows, tl.where(valid, total, float("inf")), mask=row_ok)
        tl.store(out_valid_ptr + rows, valid.to(tl.uint8), mask=row_ok)
        tl.store(out_iters_ptr + rows * 2, tl.load(f_b + F_STEPS1, mask=row_ok, other=0).to(tl.int64), mask=row_ok)
        tl.store(out_iters_ptr + rows * 2 + 1, tl.load(f_b + F_STEPS2, mask=row_ok, other=0).to(tl.int64), mask=row_ok)
