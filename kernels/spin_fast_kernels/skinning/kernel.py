# SMPL blend shapes + linear blend skinning: Triton kernels (`@triton.jit` only; launchers in function.py).
#
# Math (reference.py, smplx.lbs.lbs vertices), for body b, vertex v, coordinate c:
#     vp_bvc   = v_template_vc + sum_s shapedirs_vcs betas_bs + sum_p posedirs_vcp pf_bp
#     T_bv     = sum_k w_vk A_bk                                   (3, 4) blended bone transform
#     out_bv   = T_bv[:, :3] vp_bv + T_bv[:, 3]
# backward, with g_bv = dL/dout_bv:
#     dL/dA_bk[i, j] = sum_v w_vk g_bvi vp_bvj (j < 3),  dL/dA_bk[i, 3] = sum_v w_vk g_bvi
#     gvp_bv   = T_bv[:, :3]^T g_bv
#     dL/dbetas_bs = sum_vc gvp_bvc shapedirs_vcs,  dL/dpf_bp = sum_vc gvp_bvc posedirs_vcp
# Fused: the forward builds vp (shape and pose blend shapes as K-chunked tl.dots over
# [betas | pose_feature]), the 12 blended transform entries (a (BLOCK_B, NB) @ (NB, BLOCK_V) dot
# each) and the skinned vertex in registers, one (BLOCK_B bodies, BLOCK_V vertices) tile a
# program: neither vp nor T ever reaches memory. The backward's first kernel recomputes vp and T
# for a body block over a strided subset of vertex tiles (NSPLIT programs a body block),
# accumulates dL/dA (sums over vertices as dots with the weights) and writes gvp (B, V, 3); the
# second is [dL/dbetas | dL/dpf] = gvp (B, 3V) @ [shapedirs | posedirs] (3V, S + 207), one program
# a (body block, 32-column chunk, vertex split). Partial sums are added by the launcher
# (deterministic, no atomics). fp32 "ieee" dots run on FMA units, hence the small K chunks.
# Cost per body (fp32, V = 6890, S = 10): FLOPs 2 V 3 (S + 207) = 9.0 M for the blend shapes
# + 2 V 12 NB = 4.0 M for T + 0.1 M for the skinning; DRAM bytes: out 83 kB a body; the model
# (posedirs 17.1 MB, shapedirs 0.8 MB, weights 0.7 MB, template 83 kB) is read once per body block
# from L2 (~1.1 MB a body at BLOCK_B = 16). Backward: ~2x the FLOPs, gO 83 kB in, gvp 83 kB out
# and back in.
import triton
import triton.language as tl


@triton.jit
def _load_x(betas_ptr, pf_ptr, rows, row_ok, kk, S, PF, stride_bb, stride_bs, stride_fb, stride_fp):
    """Columns kk of x = [betas | pose_feature] as a (BLOCK_B, len(kk)) tile; zero outside (B, S + PF)."""
    is_beta = kk < S
    is_pf = (kk >= S) & (kk < S + PF)
    beta = tl.load(betas_ptr + rows[:, None] * stride_bb + kk[None, :] * stride_bs,
                   mask=row_ok[:, None] & is_beta[None, :], other=0.0)
    pf = tl.load(pf_ptr + rows[:, None] * stride_fb + (kk[None, :] - S) * stride_fp,
                 mask=row_ok[:, None] & is_pf[None, :], other=0.0)
    return beta + pf


@triton.jit
def _basis_ptrs(sd_ptr, pd_ptr, vv, kk, S, PF):
    """Pointers and masks of [shapedirs | posedirs][v, 0, k] for (v, k) in vv x kk (any broadcast)."""
    sd = sd_ptr + vv * (3 * S) + kk
    pd = pd_ptr + vv * (3 * PF) + (kk - S)
    return sd, pd, kk < S, (kk >= S) & (kk < S + PF)


@triton.jit
def _posed_vertices(betas_ptr, pf_ptr, vt_ptr, sd_ptr, pd_ptr, rows, row_ok, vv, v_ok, S, PF,
                    stride_bb, stride_bs, stride_fb, stride_fp,
                    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_KC: tl.constexpr,
                    PRECISION: tl.constexpr):
    """vp_c (BLOCK_B, BLOCK_V) for c = x, y, z: template + shape + pose blend shapes."""
    acc_t = vt_ptr.dtype.element_ty
    vx = tl.zeros((BLOCK_B, BLOCK_V), acc_t) + tl.load(vt_ptr + vv * 3 + 0, mask=v_ok, other=0.0)[None, :]
    vy = tl.zeros((BLOCK_B, BLOCK_V), acc_t) + tl.load(vt_ptr + vv * 3 + 1, mask=v_ok, other=0.0)[None, :]
    vz = tl.zeros((BLOCK_B, BLOCK_V), acc_t) + tl.load(vt_ptr + vv * 3 + 2, mask=v_ok, other=0.0)[None, :]
    for k0 in range(0, S + PF, BLOCK_KC):
        kk = k0 + tl.arange(0, BLOCK_KC)
        x = _load_x(betas_ptr, pf_ptr, rows, row_ok, kk, S, PF, stride_bb, stride_bs, stride_fb, stride_fp)
        # basis^T chunk (BLOCK_KC, BLOCK_V) a coordinate: shapedirs rows k < S, posedirs rows k >= S
        sd, pd, is_s, is_p = _basis_ptrs(sd_ptr, pd_ptr, vv[None, :], kk[:, None], S, PF)
        s_ok = is_s & v_ok[None, :]
        p_ok = is_p & v_ok[None, :]
        bx = tl.load(sd, mask=s_ok, other=0.0) + tl.load(pd, mask=p_ok, other=0.0)
        by = tl.load(sd + S, mask=s_ok, other=0.0) + tl.load(pd + PF, mask=p_ok, other=0.0)
        bz = tl.load(sd + 2 * S, mask=s_ok, other=0.0) + tl.load(pd + 2 * PF, mask=p_ok, other=0.0)
        vx += tl.dot(x, bx, input_precision=PRECISION, out_dtype=acc_t)
        vy += tl.dot(x, by, input_precision=PRECISION, out_dtype=acc_t)
        vz += tl.dot(x, bz, input_precision=PRECISION, out_dtype=acc_t)
    return vx, vy, vz


@triton.jit
def _blend(trans_ptr, e, rows, row_ok, nb, nb_ok, wt, NB, PRECISION: tl.constexpr):
    """Entry e of the blended transforms: A[:, :, e] (BLOCK_B, BLOCK_NB) @ w^T (BLOCK_NB, BLOCK_V)."""
    a = tl.load(trans_ptr + rows[:, None] * (NB * 12) + nb[None, :] * 12 + e,
                mask=row_ok[:, None] & nb_ok[None, :], other=0.0)
    return tl.dot(a, wt, input_precision=PRECISION, out_dtype=wt.dtype)


@triton.jit
def _skinning_forward_kernel(
    betas_ptr,  # (B, S) shape coefficients, strides (stride_bb, stride_bs)
    pf_ptr,  # (B, PF) pose feature, strides (stride_fb, stride_fp)
    trans_ptr,  # (B, NB, 12) bone transforms [R | t] row-major, contiguous
    vt_ptr,  # (V, 3) template vertices, contiguous (its dtype is the compute dtype)
    sd_ptr,  # (V, 3, S) shape blend shapes, contiguous
    pd_ptr,  # (V, 3, PF) pose blend shapes, contiguous
    w_ptr,  # (V, NB) skinning weights, contiguous
    out_ptr,  # (B, V, 3) out: skinned vertices, contiguous
    B, V, S, PF, NB,  # bodies, vertices, betas, pose-feature size, bones
    stride_bb, stride_bs, stride_fb, stride_fp,  # element strides of betas and pose_feature
    BLOCK_B: tl.constexpr,  # bodies a program (>= 16 for tl.dot)
    BLOCK_V: tl.constexpr,  # vertices a program (>= 16)
    BLOCK_KC: tl.constexpr,  # K chunk of the blend-shape dots (>= 16)
    BLOCK_NB: tl.constexpr,  # next power of two >= NB (>= 16)
    PRECISION: tl.constexpr,  # tl.dot input precision ("ieee": no TF32)
):
    # axis 0 = body blocks: programs launched together share the same model tile (L2 reuse)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # B V 3 may pass 2^31
    vv = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < B
    v_ok = vv < V
    nb = tl.arange(0, BLOCK_NB)
    nb_ok = nb < NB
    vx, vy, vz = _posed_vertices(betas_ptr, pf_ptr, vt_ptr, sd_ptr, pd_ptr, rows, row_ok, vv, v_ok, S, PF,
                                 stride_bb, stride_bs, stride_fb, stride_fp, BLOCK_B, BLOCK_V, BLOCK_KC, PRECISION)
    wt = tl.load(w_ptr + vv[None, :] * NB + nb[:, None], mask=nb_ok[:, None] & v_ok[None, :], other=0.0)
    ox = (_blend(trans_ptr, 0, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vx
          + _blend(trans_ptr, 1, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vy
          + _blend(trans_ptr, 2, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vz
          + _blend(trans_ptr, 3, rows, row_ok, nb, nb_ok, wt, NB, PRECISION))
    oy = (_blend(trans_ptr, 4, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vx
          + _blend(trans_ptr, 5, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vy
          + _blend(trans_ptr, 6, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vz
          + _blend(trans_ptr, 7, rows, row_ok, nb, nb_ok, wt, NB, PRECISION))
    oz = (_blend(trans_ptr, 8, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vx
          + _blend(trans_ptr, 9, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vy
          + _blend(trans_ptr, 10, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * vz
          + _blend(trans_ptr, 11, rows, row_ok, nb, nb_ok, wt, NB, PRECISION))
    o_ptr = out_ptr + rows[:, None] * (V * 3) + vv[None, :] * 3
    o_ok = row_ok[:, None] & v_ok[None, :]
    ty = out_ptr.dtype.element_ty
    tl.store(o_ptr + 0, ox.to(ty), mask=o_ok)
    tl.store(o_ptr + 1, oy.to(ty), mask=o_ok)
    tl.store(o_ptr + 2, oz.to(ty), mask=o_ok)


@triton.jit
def _vertex_sum(acc, values, w, PRECISION: tl.constexpr):
    """acc (BLOCK_B, BLOCK_NB) += values (BLOCK_B, BLOCK_V) @ w (BLOCK_V, BLOCK_NB)."""
    return acc + tl.dot(values, w, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def _skinning_backward_vertex_kernel(
    betas_ptr,  # (B, S) strides (stride_bb, stride_bs)
    pf_ptr,  # (B, PF) strides (stride_fb, stride_fp)
    trans_ptr,  # (B, NB, 12) bone transforms, contiguous
    vt_ptr,  # (V, 3) template, contiguous
    sd_ptr,  # (V, 3, S) shape blend shapes, contiguous
    pd_ptr,  # (V, 3, PF) pose blend shapes, contiguous
    w_ptr,  # (V, NB) skinning weights, contiguous
    grad_out_ptr,  # (B, V, 3) upstream dL/dvertices, contiguous
    grad_vp_ptr,  # (B, V, 3) out: gvp = T[:, :3]^T g, contiguous
    grad_trans_ptr,  # (NSPLIT, B, NB, 12) out: partial dL/dtransforms, contiguous
    B, V, S, PF, NB,  # bodies, vertices, betas, pose-feature size, bones
    stride_bb, stride_bs, stride_fb, stride_fp,  # element strides of betas and pose_feature
    NSPLIT,  # programs sharing a body block (axis 1 of the grid)
    BLOCK_B: tl.constexpr,  # bodies a program (>= 16)
    BLOCK_V: tl.constexpr,  # vertices a tile (>= 16)
    BLOCK_KC: tl.constexpr,  # K chunk of the blend-shape dots
    BLOCK_NB: tl.constexpr,  # next power of two >= NB
    PRECISION: tl.constexpr,  # tl.dot input precision
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # B V 3 may pass 2^31
    split = tl.program_id(1)
    row_ok = rows < B
    nb = tl.arange(0, BLOCK_NB)
    nb_ok = nb < NB
    acc_t = vt_ptr.dtype.element_ty

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
    for v0 in range(split * BLOCK_V, V, NSPLIT * BLOCK_V):
        vv = v0 + tl.arange(0, BLOCK_V)
        v_ok = vv < V
        o_ok = row_ok[:, None] & v_ok[None, :]
        vx, vy, vz = _posed_vertices(betas_ptr, pf_ptr, vt_ptr, sd_ptr, pd_ptr, rows, row_ok, vv, v_ok, S, PF,
                                     stride_bb, stride_bs, stride_fb, stride_fp, BLOCK_B, BLOCK_V, BLOCK_KC,
                                     PRECISION)
        g_ptr = grad_out_ptr + rows[:, None] * (V * 3) + vv[None, :] * 3
        gx = tl.load(g_ptr + 0, mask=o_ok, other=0.0)
        gy = tl.load(g_ptr + 1, mask=o_ok, other=0.0)
        gz = tl.load(g_ptr + 2, mask=o_ok, other=0.0)
        wt = tl.load(w_ptr + vv[None, :] * NB + nb[:, None], mask=nb_ok[:, None] & v_ok[None, :], other=0.0)
        # gvp = T[:, :3]^T g
        gvx = (_blend(trans_ptr, 0, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gx
               + _blend(trans_ptr, 4, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gy
               + _blend(trans_ptr, 8, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gz)
        gvy = (_blend(trans_ptr, 1, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gx
               + _blend(trans_ptr, 5, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gy
               + _blend(trans_ptr, 9, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gz)
        gvz = (_blend(trans_ptr, 2, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gx
               + _blend(trans_ptr, 6, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gy
               + _blend(trans_ptr, 10, rows, row_ok, nb, nb_ok, wt, NB, PRECISION) * gz)
        gv_ptr = grad_vp_ptr + rows[:, None] * (V * 3) + vv[None, :] * 3
        ty = grad_vp_ptr.dtype.element_ty
        tl.store(gv_ptr + 0, gvx.to(ty), mask=o_ok)
        tl.store(gv_ptr + 1, gvy.to(ty), mask=o_ok)
        tl.store(gv_ptr + 2, gvz.to(ty), mask=o_ok)
        # dL/dA_k = sum_v w_vk (g vp^T | g): the vertex sums are dots with w (BLOCK_V, BLOCK_NB)
        w = tl.trans(wt)
        a00 = _vertex_sum(a00, gx * vx, w, PRECISION)
        a01 = _vertex_sum(a01, gx * vy, w, PRECISION)
        a02 = _vertex_sum(a02, gx * vz, w, PRECISION)
        a03 = _vertex_sum(a03, gx, w, PRECISION)
        a10 = _vertex_sum(a10, gy * vx, w, PRECISION)
        a11 = _vertex_sum(a11, gy * vy, w, PRECISION)
        a12 = _vertex_sum(a12, gy * vz, w, PRECISION)
        a13 = _vertex_sum(a13, gy, w, PRECISION)
        a20 = _vertex_sum(a20, gz * vx, w, PRECISION)
        a21 = _vertex_sum(a21, gz * vy, w, PRECISION)
        a22 = _vertex_sum(a22, gz * vz, w, PRECISION)
        a23 = _vertex_sum(a23, gz, w, PRECISION)

    ga = grad_trans_ptr + split * (B * NB * 12) + rows[:, None] * (NB * 12) + nb[None, :] * 12
    ga_ok = row_ok[:, None] & nb_ok[None, :]
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
def _skinning_backward_x_kernel(
    grad_vp_ptr,  # (B, V, 3) gvp from the vertex kernel, contiguous
    sd_ptr,  # (V, 3, S) shape blend shapes, contiguous
    pd_ptr,  # (V, 3, PF) pose blend shapes, contiguous
    grad_x_ptr,  # (NSPLIT, B, S + PF) out: partial [dL/dbetas | dL/dpf], contiguous
    B, V, S, PF,  # bodies, vertices, betas, pose-feature size
    NSPLIT,  # vertex splits (axis 2 of the grid)
    BLOCK_B: tl.constexpr,  # bodies a program (>= 16)
    BLOCK_V: tl.constexpr,  # vertices a step (the dots' reduction, >= 16)
    BLOCK_KC: tl.constexpr,  # x columns a program (>= 16)
    PRECISION: tl.constexpr,  # tl.dot input precision
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # B V 3 may pass 2^31
    kk = tl.program_id(1) * BLOCK_KC + tl.arange(0, BLOCK_KC)
    split = tl.program_id(2)
    row_ok = rows < B
    acc_t = sd_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_B, BLOCK_KC), acc_t)
    for v0 in range(split * BLOCK_V, V, NSPLIT * BLOCK_V):
        vv = v0 + tl.arange(0, BLOCK_V)
        v_ok = vv < V
        g_ptr = grad_vp_ptr + rows[:, None] * (V * 3) + vv[None, :] * 3
        g_ok = row_ok[:, None] & v_ok[None, :]
        sd, pd, is_s, is_p = _basis_ptrs(sd_ptr, pd_ptr, vv[:, None], kk[None, :], S, PF)  # (BLOCK_V, BLOCK_KC)
        s_ok = v_ok[:, None] & is_s
        p_ok = v_ok[:, None] & is_p
        for c in tl.static_range(3):
            basis = tl.load(sd + c * S, mask=s_ok, other=0.0) + tl.load(pd + c * PF, mask=p_ok, other=0.0)
            acc += tl.dot(tl.load(g_ptr + c, mask=g_ok, other=0.0), basis, input_precision=PRECISION,
                          out_dtype=acc_t)
    tl.store(grad_x_ptr + split * (B * (S + PF)) + rows[:, None] * (S + PF) + kk[None, :],
             acc.to(grad_x_ptr.dtype.element_ty), mask=row_ok[:, None] & (kk < S + PF)[None, :])
