# Joints-only SMPL (the folded regressor): Triton kernels (`@triton.jit` only; launchers in function.py).
#
# Math (reference.py): x_b = [1, betas_b, pose_feature_b] (K = 1 + S + 207), for each kept
# (joint, bone) pair p with joint j_p, bone k_p, folded coefficients C_p (3, K) and weight w_p:
#     local_bp = C_p x_b                                                    (3,)
#     pp_bp    = R_{b,k_p} local_bp + t_{b,k_p} w_p                         (3,)
#     joints_{b,j} = sum_{p : j_p = j} pp_bp
# backward, with g_bp = dL/djoints_{b, j_p}:
#     dL/dR_{b,k}[i, m] = sum_{p : k_p = k} g_bp[i] local_bp[m],   dL/dt_{b,k} = sum_{p : k_p = k} g_bp w_p
#     gl_bp  = R_{b,k_p}^T g_bp                                             (3,)
#     dL/dx_b = sum_p C_p^T gl_bp   -> betas = entries 1..S, pose_feature = the rest
# Fused: forward and the backward's first kernel take BLOCK_B bodies and a strided subset of the
# pair chunks (NSPLIT programs a body block; the launcher adds their partial sums in a fixed order:
# deterministic, no atomics). local_c = x @ C_c^T is a tl.dot a coordinate, K-chunked (fp32 "ieee"
# dots run on FMA units, so the tiles stay small); the transforms are gathered by bone; the sum
# over pairs into joints (forward) and into bones (backward) is a tl.dot with a 0/1 matrix
# (BLOCK_P, BLOCK_J | BLOCK_NB), so no sort order of the pairs is assumed. The backward's first
# kernel recomputes local and writes gl (B, P, 3); the second is dL/dx = gl (B, 3P) @ C (3P, K),
# one program a (body block, K chunk).
# Cost per body (fp32, P ~ 250 pairs, K = 218): 2 * 3 P K = 330 kFLOP for local (+ as much for
# dL/dx in the backward); DRAM bytes per body: x 872 B + transforms 1152 B in, joints 12 J B out
# (+ gl 12 P B written and read back in the backward). The coefficients (3 P K x 4 B = 650 kB) are
# re-read once per body block from L2: ~40 kB a body at BLOCK_B = 16.
import triton
import triton.language as tl


@triton.jit
def _load_x(betas_ptr, pf_ptr, rows, row_ok, kk, S, PF, stride_bb, stride_bs, stride_fb, stride_fp):
    """Columns kk of x = [1, betas, pose_feature] as a (BLOCK_B, len(kk)) tile; zero outside (B, K)."""
    is_beta = (kk >= 1) & (kk < 1 + S)
    is_pf = (kk >= 1 + S) & (kk < 1 + S + PF)
    beta = tl.load(betas_ptr + rows[:, None] * stride_bb + (kk[None, :] - 1) * stride_bs,
                   mask=row_ok[:, None] & is_beta[None, :], other=0.0)
    pf = tl.load(pf_ptr + rows[:, None] * stride_fb + (kk[None, :] - 1 - S) * stride_fp,
                 mask=row_ok[:, None] & is_pf[None, :], other=0.0)
    one = tl.where(row_ok[:, None] & (kk[None, :] == 0), 1.0, 0.0)
    return beta + pf + one.to(beta.dtype)


@triton.jit
def _local(betas_ptr, pf_ptr, coeffs_ptr, rows, row_ok, pp, p_ok, S, PF, stride_bb, stride_bs, stride_fb,
           stride_fp, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_KC: tl.constexpr,
           PRECISION: tl.constexpr):
    """local_c = x @ C_c^T for the pairs pp: three (BLOCK_B, BLOCK_P) tiles, K-chunked."""
    K = 1 + S + PF
    acc_t = coeffs_ptr.dtype.element_ty
    lx = tl.zeros((BLOCK_B, BLOCK_P), acc_t)
    ly = tl.zeros((BLOCK_B, BLOCK_P), acc_t)
    lz = tl.zeros((BLOCK_B, BLOCK_P), acc_t)
    for k0 in range(0, K, BLOCK_KC):
        kk = k0 + tl.arange(0, BLOCK_KC)
        x = _load_x(betas_ptr, pf_ptr, rows, row_ok, kk, S, PF, stride_bb, stride_bs, stride_fb, stride_fp)
        c_ptr = coeffs_ptr + pp[None, :] * (3 * K) + kk[:, None]  # C_c^T chunk (BLOCK_KC, BLOCK_P)
        c_ok = (kk < K)[:, None] & p_ok[None, :]
        lx += tl.dot(x, tl.load(c_ptr, mask=c_ok, other=0.0), input_precision=PRECISION, out_dtype=acc_t)
        ly += tl.dot(x, tl.load(c_ptr + K, mask=c_ok, other=0.0), input_precision=PRECISION, out_dtype=acc_t)
        lz += tl.dot(x, tl.load(c_ptr + 2 * K, mask=c_ok, other=0.0), input_precision=PRECISION, out_dtype=acc_t)
    return lx, ly, lz


@triton.jit
def _pair_points(t_ptr, t_ok, lx, ly, lz, bwb):
    """pp = R_k local + t_k w of each (body, pair): t_ptr points at the pair's bone transform [R | t]
    (12 entries, row-major) in a (BLOCK_B, BLOCK_P) tile; returns the three coordinate tiles."""
    px = (tl.load(t_ptr + 0, mask=t_ok, other=0.0) * lx + tl.load(t_ptr + 1, mask=t_ok, other=0.0) * ly
          + tl.load(t_ptr + 2, mask=t_ok, other=0.0) * lz + tl.load(t_ptr + 3, mask=t_ok, other=0.0) * bwb)
    py = (tl.load(t_ptr + 4, mask=t_ok, other=0.0) * lx + tl.load(t_ptr + 5, mask=t_ok, other=0.0) * ly
          + tl.load(t_ptr + 6, mask=t_ok, other=0.0) * lz + tl.load(t_ptr + 7, mask=t_ok, other=0.0) * bwb)
    pz = (tl.load(t_ptr + 8, mask=t_ok, other=0.0) * lx + tl.load(t_ptr + 9, mask=t_ok, other=0.0) * ly
          + tl.load(t_ptr + 10, mask=t_ok, other=0.0) * lz + tl.load(t_ptr + 11, mask=t_ok, other=0.0) * bwb)
    return px, py, pz


@triton.jit
def _joints_only_forward_kernel(
    betas_ptr,  # (B, S) shape coefficients, strides (stride_bb, stride_bs)
    pf_ptr,  # (B, PF) pose feature (R[1:] - I flattened), strides (stride_fb, stride_fp)
    trans_ptr,  # (B, NB, 12) bone transforms [R | t] row-major, contiguous
    coeffs_ptr,  # (P, 3, K) folded coefficients, contiguous (its dtype is the compute dtype)
    bw_ptr,  # (P,) bone weights, contiguous
    pj_ptr,  # (P,) int64 joint of each pair
    pb_ptr,  # (P,) int64 bone of each pair
    out_ptr,  # (NSPLIT, B, NJ, 3) out: partial joint sums (one slice a split), contiguous
    B, S, PF, P, NB, NJ,  # bodies, betas, pose-feature size, pairs, bones, joints
    stride_bb, stride_bs, stride_fb, stride_fp,  # element strides of betas and pose_feature
    NSPLIT,  # programs sharing a body block (axis 1 of the grid)
    BLOCK_B: tl.constexpr,  # bodies a program (>= 16 for tl.dot)
    BLOCK_P: tl.constexpr,  # pairs a chunk (>= 16)
    BLOCK_KC: tl.constexpr,  # K chunk of the x @ C^T dots (>= 16)
    BLOCK_J: tl.constexpr,  # next power of two >= NJ (>= 16)
    PRECISION: tl.constexpr,  # tl.dot input precision ("ieee": no TF32)
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    split = tl.program_id(1)
    row_ok = rows < B
    jj = tl.arange(0, BLOCK_J)
    acc_t = coeffs_ptr.dtype.element_ty

    out_x = tl.zeros((BLOCK_B, BLOCK_J), acc_t)
    out_y = tl.zeros((BLOCK_B, BLOCK_J), acc_t)
    out_z = tl.zeros((BLOCK_B, BLOCK_J), acc_t)
    for start in range(split * BLOCK_P, P, NSPLIT * BLOCK_P):
        pp = start + tl.arange(0, BLOCK_P)
        p_ok = pp < P
        bone = tl.load(pb_ptr + pp, mask=p_ok, other=0).to(tl.int32)
        joint = tl.load(pj_ptr + pp, mask=p_ok, other=-1).to(tl.int32)
        p_ok = p_ok & (bone >= 0) & (bone < NB)
        bw = tl.load(bw_ptr + pp, mask=p_ok, other=0.0)
        lx, ly, lz = _local(betas_ptr, pf_ptr, coeffs_ptr, rows, row_ok, pp, p_ok, S, PF, stride_bb, stride_bs,
                            stride_fb, stride_fp, BLOCK_B, BLOCK_P, BLOCK_KC, PRECISION)
        # bone transforms gathered a pair: (BLOCK_B, BLOCK_P) tiles
        t_ptr = trans_ptr + rows[:, None] * (NB * 12) + bone[None, :] * 12
        t_ok = row_ok[:, None] & p_ok[None, :]
        bwb = bw[None, :]
        px, py, pz = _pair_points(t_ptr, t_ok, lx, ly, lz, bwb)
        # sum the pairs into their joints: (BLOCK_B, BLOCK_P) @ onehot (BLOCK_P, BLOCK_J)
        onehot = tl.where(p_ok[:, None] & (joint[:, None] == jj[None, :]), 1.0, 0.0).to(acc_t)
        out_x += tl.dot(px, onehot, input_precision=PRECISION, out_dtype=acc_t)
        out_y += tl.dot(py, onehot, input_precision=PRECISION, out_dtype=acc_t)
        out_z += tl.dot(pz, onehot, input_precision=PRECISION, out_dtype=acc_t)

    o_ptr = out_ptr + split * (B * NJ * 3) + rows[:, None] * (NJ * 3) + jj[None, :] * 3
    o_ok = row_ok[:, None] & (jj < NJ)[None, :]
    tl.store(o_ptr + 0, out_x.to(out_ptr.dtype.element_ty), mask=o_ok)
    tl.store(o_ptr + 1, out_y.to(out_ptr.dtype.element_ty), mask=o_ok)
    tl.store(o_ptr + 2, out_z.to(out_ptr.dtype.element_ty), mask=o_ok)


@triton.jit
def _bone_sum(acc, values, onehot, PRECISION: tl.constexpr):
    return acc + tl.dot(values, onehot, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def _joints_only_backward_pairs_kernel(
    betas_ptr,  # (B, S) strides (stride_bb, stride_bs)
    pf_ptr,  # (B, PF) strides (stride_fb, stride_fp)
    trans_ptr,  # (B, NB, 12) bone transforms, contiguous
    coeffs_ptr,  # (P, 3, K) folded coefficients, contiguous
    bw_ptr,  # (P,) bone weights
    pj_ptr,  # (P,) int64 joint of each pair
    pb_ptr,  # (P,) int64 bone of each pair
    grad_out_ptr,  # (B, NJ, 3) upstream dL/djoints, contiguous
    grad_local_ptr,  # (B, P, 3) out: gl = R^T g a pair, contiguous
    grad_trans_ptr,  # (NSPLIT, B, NB, 12) out: partial dL/dtransforms, contiguous
    B, S, PF, P, NB, NJ,  # bodies, betas, pose-feature size, pairs, bones, joints
    stride_bb, stride_bs, stride_fb, stride_fp,  # element strides of betas and pose_feature
    NSPLIT,  # programs sharing a body block
    BLOCK_B: tl.constexpr,  # bodies a program (>= 16)
    BLOCK_P: tl.constexpr,  # pairs a chunk (>= 16)
    BLOCK_KC: tl.constexpr,  # K chunk of the x @ C^T dots
    BLOCK_NB: tl.constexpr,  # next power of two >= NB (>= 16)
    PRECISION: tl.constexpr,  # tl.dot input precision
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    split = tl.program_id(1)
    row_ok = rows < B
    nb = tl.arange(0, BLOCK_NB)
    acc_t = coeffs_ptr.dtype.element_ty

    # dL/d transforms [i, m] a bone: (BLOCK_B, BLOCK_NB) each
    a00 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a01 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a02 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a03 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a10 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a11 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a12 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a13 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a20 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a21 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a22 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    a23 = tl.zeros((BLOCK_B, BLOCK_NB), acc_t)
    for start in range(split * BLOCK_P, P, NSPLIT * BLOCK_P):
        pp = start + tl.arange(0, BLOCK_P)
        in_range = pp < P
        bone = tl.load(pb_ptr + pp, mask=in_range, other=0).to(tl.int32)
        joint = tl.load(pj_ptr + pp, mask=in_range, other=0).to(tl.int32)
        p_ok = in_range & (bone >= 0) & (bone < NB) & (joint >= 0) & (joint < NJ)
        bw = tl.load(bw_ptr + pp, mask=p_ok, other=0.0)
        lx, ly, lz = _local(betas_ptr, pf_ptr, coeffs_ptr, rows, row_ok, pp, p_ok, S, PF, stride_bb, stride_bs,
                            stride_fb, stride_fp, BLOCK_B, BLOCK_P, BLOCK_KC, PRECISION)
        t_ok = row_ok[:, None] & p_ok[None, :]
        g_ptr = grad_out_ptr + rows[:, None] * (NJ * 3) + joint[None, :] * 3
        gx = tl.load(g_ptr + 0, mask=t_ok, other=0.0)  # dL/dpp a pair, (BLOCK_B, BLOCK_P)
        gy = tl.load(g_ptr + 1, mask=t_ok, other=0.0)
        gz = tl.load(g_ptr + 2, mask=t_ok, other=0.0)
        t_ptr = trans_ptr + rows[:, None] * (NB * 12) + bone[None, :] * 12
        # gl = R^T g
        glx = (tl.load(t_ptr + 0, mask=t_ok, other=0.0) * gx + tl.load(t_ptr + 4, mask=t_ok, other=0.0) * gy
               + tl.load(t_ptr + 8, mask=t_ok, other=0.0) * gz)
        gly = (tl.load(t_ptr + 1, mask=t_ok, other=0.0) * gx + tl.load(t_ptr + 5, mask=t_ok, other=0.0) * gy
               + tl.load(t_ptr + 9, mask=t_ok, other=0.0) * gz)
        glz = (tl.load(t_ptr + 2, mask=t_ok, other=0.0) * gx + tl.load(t_ptr + 6, mask=t_ok, other=0.0) * gy
               + tl.load(t_ptr + 10, mask=t_ok, other=0.0) * gz)
        gl_ptr = grad_local_ptr + rows[:, None] * (P * 3) + pp[None, :] * 3
        gl_ok = row_ok[:, None] & in_range[None, :]  # bad-index pairs store 0 (they contribute nothing)
        tl.store(gl_ptr + 0, glx.to(grad_local_ptr.dtype.element_ty), mask=gl_ok)
        tl.store(gl_ptr + 1, gly.to(grad_local_ptr.dtype.element_ty), mask=gl_ok)
        tl.store(gl_ptr + 2, glz.to(grad_local_ptr.dtype.element_ty), mask=gl_ok)
        # sum the pairs into their bones: (BLOCK_B, BLOCK_P) @ onehot (BLOCK_P, BLOCK_NB)
        onehot = tl.where(p_ok[:, None] & (bone[:, None] == nb[None, :]), 1.0, 0.0).to(acc_t)
        bwb = bw[None, :]
        a00 = _bone_sum(a00, gx * lx, onehot, PRECISION)
        a01 = _bone_sum(a01, gx * ly, onehot, PRECISION)
        a02 = _bone_sum(a02, gx * lz, onehot, PRECISION)
        a03 = _bone_sum(a03, gx * bwb, onehot, PRECISION)
        a10 = _bone_sum(a10, gy * lx, onehot, PRECISION)
        a11 = _bone_sum(a11, gy * ly, onehot, PRECISION)
        a12 = _bone_sum(a12, gy * lz, onehot, PRECISION)
        a13 = _bone_sum(a13, gy * bwb, onehot, PRECISION)
        a20 = _bone_sum(a20, gz * lx, onehot, PRECISION)
        a21 = _bone_sum(a21, gz * ly, onehot, PRECISION)
        a22 = _bone_sum(a22, gz * lz, onehot, PRECISION)
        a23 = _bone_sum(a23, gz * bwb, onehot, PRECISION)

    ga = grad_trans_ptr + split * (B * NB * 12) + rows[:, None] * (NB * 12) + nb[None, :] * 12
    ga_ok = row_ok[:, None] & (nb < NB)[None, :]
    ty = grad_trans_ptr.dtype.element_ty
    tl.store(ga + 0, a00.to(ty), mask=ga_ok)
    tl.store(ga + 1, a01.to(ty), mask=ga_ok)
    tl.store(ga + 2, a02.to(ty), mask=ga_ok)
    tl.store(ga + 3, a03.to(ty), mask=ga_ok)
    tl.store(ga + 4, a10.to(ty), mask=ga_ok)
    tl.store(ga + 5, a11.to(ty), mask=ga_ok)
    tl.store(ga + 6, a12.to(ty), mask=ga_ok)
    tl.store(ga + 7, a13.to(ty), mask=ga_ok)
    tl.store(ga + 8, a20.to(ty), mask=ga_ok)
    tl.store(ga + 9, a21.to(ty), mask=ga_ok)
    tl.store(ga + 10, a22.to(ty), mask=ga_ok)
    tl.store(ga + 11, a23.to(ty), mask=ga_ok)


@triton.jit
def _joints_only_backward_x_kernel(
    grad_local_ptr,  # (B, P, 3) gl from the pairs kernel, contiguous
    coeffs_ptr,  # (P, 3, K) folded coefficients, contiguous
    grad_x_ptr,  # (B, K) out: dL/dx, contiguous
    B, P, K,  # bodies, pairs, 1 + S + PF
    BLOCK_B: tl.constexpr,  # bodies a program (>= 16)
    BLOCK_P: tl.constexpr,  # pairs a chunk (the dot's reduction, >= 16)
    BLOCK_KC: tl.constexpr,  # x entries a program (>= 16)
    PRECISION: tl.constexpr,  # tl.dot input precision
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    kk = tl.program_id(1) * BLOCK_KC + tl.arange(0, BLOCK_KC)
    row_ok = rows < B
    k_ok = kk < K
    acc_t = coeffs_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_B, BLOCK_KC), acc_t)
    for start in range(0, P, BLOCK_P):
        pp = start + tl.arange(0, BLOCK_P)
        p_ok = pp < P
        gl_ptr = grad_local_ptr + rows[:, None] * (P * 3) + pp[None, :] * 3
        gl_ok = row_ok[:, None] & p_ok[None, :]
        c_ptr = coeffs_ptr + pp[:, None] * (3 * K) + kk[None, :]  # C_c chunk (BLOCK_P, BLOCK_KC)
        c_ok = p_ok[:, None] & k_ok[None, :]
        acc += tl.dot(tl.load(gl_ptr + 0, mask=gl_ok, other=0.0), tl.load(c_ptr, mask=c_ok, other=0.0),
                      input_precision=PRECISION, out_dtype=acc_t)
        acc += tl.dot(tl.load(gl_ptr + 1, mask=gl_ok, other=0.0), tl.load(c_ptr + K, mask=c_ok, other=0.0),
                      input_precision=PRECISION, out_dtype=acc_t)
        acc += tl.dot(tl.load(gl_ptr + 2, mask=gl_ok, other=0.0), tl.load(c_ptr + 2 * K, mask=c_ok, other=0.0),
                      input_precision=PRECISION, out_dtype=acc_t)
    tl.store(grad_x_ptr + rows[:, None] * K + kk[None, :], acc.to(grad_x_ptr.dtype.element_ty),
             mask=row_ok[:, None] & k_ok[None, :])
