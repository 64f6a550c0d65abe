# Rodrigues and the SMPL kinematic chain: Triton kernels (`@triton.jit` only; launchers in function.py).
#
# Math (reference.py, smplx.lbs.batch_rodrigues / batch_rigid_transform):
#   Rodrigues   e = v + 1e-8, a = |e|, u = v / a, K = skew(u)
#               R = I + sin(a) K + (1 - cos a) K^2,   K^2 = u u^T - (u.u) I
#   backward    G = dL/dR, w = vee(G - G^T) = (G21 - G12, G02 - G20, G10 - G01)
#               gu = sin(a) w + (1 - cos a) ((G + G^T) u - 2 tr(G) u)
#               ga = cos(a) u.w + sin(a) (u^T G u - (u.u) tr G) - gu.u / a
#               dL/dv = gu / a + ga e / a
#   Chain       W_0 = R_0, t_0 = J_0;  W_i = W_p R_i, t_i = t_p + W_p (J_i - J_p)   (p = parent(i))
#               posed_i = t_i, transforms_i = [W_i | t_i - W_i J_i]
#   backward    (reverse joint order; children accumulate into their parent before it is visited)
#               gt_i = gP_i + gT_i[:, 3] + sum_children gt_c
#               gW_i = gT_i[:, :3] - gT_i[:, 3] J_i^T + sum_children (gW_c R_c^T + gt_c rel_c^T)
#               gR_i = W_p^T gW_i (gR_0 = gW_0);  gJ_i = -W_i^T gT_i[:, 3] + W_p^T gt_i - sum_c W_i^T gt_c
#               (gJ_0 also gets gt_0 since rel_0 = J_0)
# Fused: Rodrigues is one pass (3 loads, 9 stores a rotation; backward 12 loads, 3 stores). The chain
# keeps one body a lane (BLOCK_B bodies a program, one thread a body) and walks the 24 joints in
# order; a joint's world rotation lives in the rotation columns of its `transforms` output and its
# world translation in `posed`, so the parent is re-read from memory the program just wrote (L1),
# with a CTA barrier between the joints. The backward keeps its per-joint accumulators (gW, gt) in a
# zeroed (B, J, 12) scratch and gJ in the grad_rest output, same pattern.
# Fused Rodrigues (FROM_AA, the rodrigues_chain op): the forward computes R_i from the axis-angle in
# registers (storing it once, the pose feature needs it); the backward adds the rotmats output's
# own upstream gradient to gR_i and applies Rodrigues' vjp in the same reverse walk, so the
# (B, J, 9) gR never reaches memory and one launch replaces two each way.
# Per body (fp32, J = 24): Rodrigues 24 x (12 B in, 36 B out) ~ 1.2 kB, ~40 FLOP + sin/cos a joint;
# chain reads rotmats 864 B + rest 288 B, writes posed 288 B + transforms 1152 B (2.6 kB) and does
# 24 x (27 + 9 + 9) FMA ~ 2 kFLOP; backward reads ~3.5 kB (+ scratch traffic, L1/L2 resident) and
# does ~5 kFLOP. Everything is latency-bound (24 dependent steps), not bandwidth-bound.
import triton
import triton.language as tl


@triton.jit
def _load3(ptr, mask):
    return (tl.load(ptr + 0, mask=mask, other=0.0), tl.load(ptr + 1, mask=mask, other=0.0),
            tl.load(ptr + 2, mask=mask, other=0.0))


@triton.jit
def _load_rot(ptr, row_stride, mask):
    """Nine entries m00..m22 of a 3x3 block whose rows start row_stride elements apart."""
    m00, m01, m02 = _load3(ptr, mask)
    m10, m11, m12 = _load3(ptr + row_stride, mask)
    m20, m21, m22 = _load3(ptr + 2 * row_stride, mask)
    return m00, m01, m02, m10, m11, m12, m20, m21, m22


@triton.jit
def _store3(ptr, x, y, z, mask):
    tl.store(ptr + 0, x.to(ptr.dtype.element_ty), mask=mask)
    tl.store(ptr + 1, y.to(ptr.dtype.element_ty), mask=mask)
    tl.store(ptr + 2, z.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sqrt_ieee(x):
    """Correctly rounded sqrt, like torch (fp32 tl.sqrt lowers to sqrt.approx.ftz)."""
    if x.dtype == tl.float32:
        return tl.sqrt_rn(x)
    else:
        return tl.sqrt(x)


@triton.jit
def _div_ieee(x, y):
    """Correctly rounded division, like torch (fp32 `/` lowers to div.full, 2 ulp)."""
    if x.dtype == tl.float32:
        return tl.div_rn(x, y)
    else:
        return x / y


@triton.jit
def _rodrigues(vx, vy, vz, ok):
    """Rotation matrix entries r00..r22 of axis-angle (vx, vy, vz) (smplx's eps convention)."""
    ex = vx + 1e-8
    ey = vy + 1e-8
    ez = vz + 1e-8
    a = _sqrt_ieee(ex * ex + ey * ey + ez * ez)
    a = tl.where(ok, a, 1.0)  # padded lanes: keep 0/0 out of the registers
    ux = _div_ieee(vx, a)
    uy = _div_ieee(vy, a)
    uz = _div_ieee(vz, a)
    s = tl.sin(a)
    c1 = 1.0 - tl.cos(a)
    uu = ux * ux + uy * uy + uz * uz
    return (1.0 + c1 * (ux * ux - uu), c1 * ux * uy - s * uz, c1 * ux * uz + s * uy,
            c1 * uy * ux + s * uz, 1.0 + c1 * (uy * uy - uu), c1 * uy * uz - s * ux,
            c1 * uz * ux - s * uy, c1 * uz * uy + s * ux, 1.0 + c1 * (uz * uz - uu))


@triton.jit
def _rodrigues_vjp(vx, vy, vz, g00, g01, g02, g10, g11, g12, g20, g21, g22, ok):
    """dL/dv of L(R(v)) from G = dL/dR (entries g00..g22): see the header."""
    ex = vx + 1e-8
    ey = vy + 1e-8
    ez = vz + 1e-8
    a = _sqrt_ieee(ex * ex + ey * ey + ez * ez)
    a = tl.where(ok, a, 1.0)
    ux = _div_ieee(vx, a)
    uy = _div_ieee(vy, a)
    uz = _div_ieee(vz, a)
    s = tl.sin(a)
    c = tl.cos(a)
    c1 = 1.0 - c
    uu = ux * ux + uy * uy + uz * uz
    tr = g00 + g11 + g22
    wx = g21 - g12
    wy = g02 - g20
    wz = g10 - g01
    # (G + G^T) u
    sx = 2.0 * g00 * ux + (g01 + g10) * uy + (g02 + g20) * uz
    sy = (g10 + g01) * ux + 2.0 * g11 * uy + (g12 + g21) * uz
    sz = (g20 + g02) * ux + (g21 + g12) * uy + 2.0 * g22 * uz
    gux = s * wx + c1 * (sx - 2.0 * tr * ux)
    guy = s * wy + c1 * (sy - 2.0 * tr * uy)
    guz = s * wz + c1 * (sz - 2.0 * tr * uz)
    uGu = 0.5 * (ux * sx + uy * sy + uz * sz)
    ga = c * (ux * wx + uy * wy + uz * wz) + s * (uGu - uu * tr) - _div_ieee(gux * ux + guy * uy + guz * uz, a)
    return _div_ieee(gux + ga * ex, a), _div_ieee(guy + ga * ey, a), _div_ieee(guz + ga * ez, a)


@triton.jit
def _rodrigues_forward_kernel(
    aa_ptr,  # (N, 3) axis-angle vectors, contiguous
    rot_ptr,  # (N, 9) out: row-major rotation matrices, contiguous
    N,  # number of rotations
    BLOCK: tl.constexpr,  # rotations a program (one a lane)
):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = n < N
    vx, vy, vz = _load3(aa_ptr + n * 3, ok)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rodrigues(vx, vy, vz, ok)
    row = rot_ptr + n * 9
    _store3(row, r00, r01, r02, ok)
    _store3(row + 3, r10, r11, r12, ok)
    _store3(row + 6, r20, r21, r22, ok)


@triton.jit
def _rodrigues_backward_kernel(
    aa_ptr,  # (N, 3) axis-angle vectors of the forward, contiguous
    grad_rot_ptr,  # (N, 9) upstream dL/dR, row-major, contiguous
    grad_aa_ptr,  # (N, 3) out: dL/dv, contiguous
    N,  # number of rotations
    BLOCK: tl.constexpr,  # rotations a program
):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = n < N
    vx, vy, vz = _load3(aa_ptr + n * 3, ok)
    g00, g01, g02, g10, g11, g12, g20, g21, g22 = _load_rot(grad_rot_ptr + n * 9, 3, ok)
    gx, gy, gz = _rodrigues_vjp(vx, vy, vz, g00, g01, g02, g10, g11, g12, g20, g21, g22, ok)
    _store3(grad_aa_ptr + n * 3, gx, gy, gz, ok)


@triton.jit
def _joint_rotation(aa_b, rot_b, i, ok, FROM_AA: tl.constexpr):
    """R_i of the bodies' lanes: Rodrigues of aa_b[i] (also stored to rot_b[i]) or loaded from rot_b[i]."""
    if FROM_AA:
        vx, vy, vz = _load3(aa_b + i * 3, ok)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rodrigues(vx, vy, vz, ok)
        _store3(rot_b + i * 9, r00, r01, r02, ok)
        _store3(rot_b + i * 9 + 3, r10, r11, r12, ok)
        _store3(rot_b + i * 9 + 6, r20, r21, r22, ok)
        return r00, r01, r02, r10, r11, r12, r20, r21, r22
    else:
        return _load_rot(rot_b + i * 9, 3, ok)


@triton.jit
def _store_joint_grad(grot_b, aa_b, gup_b, i, g00, g01, g02, g10, g11, g12, g20, g21, g22, ok,
                      FROM_AA: tl.constexpr):
    """Store dL/dR_i (the chain's share), or with FROM_AA add the rotmats output's own upstream
    gradient and store dL/daa_i through Rodrigues' vjp."""
    if FROM_AA:
        u00, u01, u02, u10, u11, u12, u20, u21, u22 = _load_rot(gup_b + i * 9, 3, ok)
        vx, vy, vz = _load3(aa_b + i * 3, ok)
        gx, gy, gz = _rodrigues_vjp(vx, vy, vz, g00 + u00, g01 + u01, g02 + u02, g10 + u10, g11 + u11, g12 + u12,
                                    g20 + u20, g21 + u21, g22 + u22, ok)
        _store3(grot_b + i * 3, gx, gy, gz, ok)
    else:
        _store3(grot_b + i * 9, g00, g01, g02, ok)
        _store3(grot_b + i * 9 + 3, g10, g11, g12, ok)
        _store3(grot_b + i * 9 + 6, g20, g21, g22, ok)


@triton.jit
def _chain_forward_walk(aa_b, rot_b, rest_b, parents_ptr, posed_b, trans_b, J, ok, FROM_AA: tl.constexpr):
    """The forward walk over the J joints for the bodies' lanes; *_b are per-lane row pointers
    (aa (J, 3), rot (J, 9), rest (J, 3), posed (J, 3), trans (J, 12), each contiguous in its row)."""
    # joint 0: W = R_0, t = J_0
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _joint_rotation(aa_b, rot_b, 0, ok, FROM_AA)
    jx, jy, jz = _load3(rest_b, ok)
    _store3(posed_b, jx, jy, jz, ok)
    _store3(trans_b, w00, w01, w02, ok)
    _store3(trans_b + 4, w10, w11, w12, ok)
    _store3(trans_b + 8, w20, w21, w22, ok)
    tl.store(trans_b + 3, (jx - (w00 * jx + w01 * jy + w02 * jz)).to(trans_b.dtype.element_ty), mask=ok)
    tl.store(trans_b + 7, (jy - (w10 * jx + w11 * jy + w12 * jz)).to(trans_b.dtype.element_ty), mask=ok)
    tl.store(trans_b + 11, (jz - (w20 * jx + w21 * jy + w22 * jz)).to(trans_b.dtype.element_ty), mask=ok)

    for i in range(1, J):
        p = tl.load(parents_ptr + i)
        tl.debug_barrier()  # the parent's W_p, t_p were stored by this program in an earlier step
        p00, p01, p02, p10, p11, p12, p20, p21, p22 = _load_rot(trans_b + p * 12, 4, ok)
        tpx, tpy, tpz = _load3(posed_b + p * 3, ok)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _joint_rotation(aa_b, rot_b, i, ok, FROM_AA)
        jx, jy, jz = _load3(rest_b + i * 3, ok)
        qx, qy, qz = _load3(rest_b + p * 3, ok)
        rx = jx - qx
        ry = jy - qy
        rz = jz - qz
        # W_i = W_p R_i
        w00 = p00 * r00 + p01 * r10 + p02 * r20
        w01 = p00 * r01 + p01 * r11 + p02 * r21
        w02 = p00 * r02 + p01 * r12 + p02 * r22
        w10 = p10 * r00 + p11 * r10 + p12 * r20
        w11 = p10 * r01 + p11 * r11 + p12 * r21
        w12 = p10 * r02 + p11 * r12 + p12 * r22
        w20 = p20 * r00 + p21 * r10 + p22 * r20
        w21 = p20 * r01 + p21 * r11 + p22 * r21
        w22 = p20 * r02 + p21 * r12 + p22 * r22
        # t_i = t_p + W_p rel_i
        tx = tpx + (p00 * rx + p01 * ry + p02 * rz)
        ty = tpy + (p10 * rx + p11 * ry + p12 * rz)
        tz = tpz + (p20 * rx + p21 * ry + p22 * rz)
        _store3(posed_b + i * 3, tx, ty, tz, ok)
        row = trans_b + i * 12
        _store3(row, w00, w01, w02, ok)
        _store3(row + 4, w10, w11, w12, ok)
        _store3(row + 8, w20, w21, w22, ok)
        tl.store(row + 3, (tx - (w00 * jx + w01 * jy + w02 * jz)).to(trans_b.dtype.element_ty), mask=ok)
        tl.store(row + 7, (ty - (w10 * jx + w11 * jy + w12 * jz)).to(trans_b.dtype.element_ty), mask=ok)
        tl.store(row + 11, (tz - (w20 * jx + w21 * jy + w22 * jz)).to(trans_b.dtype.element_ty), mask=ok)


@triton.jit
def _kinematic_chain_forward_kernel(
    aa_ptr,  # (B, J, 3) axis-angle, contiguous (read only when FROM_AA)
    rot_ptr,  # (B, J, 9) local rotations, row-major, contiguous (out when FROM_AA, else in)
    rest_ptr,  # (B, J, 3) rest joints, contiguous
    parents_ptr,  # (J,) int32 parent of each joint (parents[0] unused), parents[i] < i
    posed_ptr,  # (B, J, 3) out: posed joints t_i, contiguous
    trans_ptr,  # (B, J, 12) out: [W_i | t_i - W_i J_i] row-major 3x4, contiguous
    B,  # number of bodies
    J,  # number of joints
    FROM_AA: tl.constexpr,  # fused Rodrigues: R_i = rodrigues(aa_i), stored to rot_ptr
    BLOCK_B: tl.constexpr,  # bodies a program (one a lane; 32 x num_warps so no lane is shared)
):
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = b < B
    _chain_forward_walk(aa_ptr + b * (J * 3), rot_ptr + b * (J * 9), rest_ptr + b * (J * 3), parents_ptr,
                        posed_ptr + b * (J * 3), trans_ptr + b * (J * 12), J, ok, FROM_AA)


@triton.jit
def _chain_backward_walk(aa_b, rot_b, rest_b, parents_ptr, trans_b, gp_b, gtr_b, gup_b, acc_b, grot_b, grest_b, J, ok,
                         FROM_AA: tl.constexpr):
    """The reverse walk over the J joints for the bodies' lanes; *_b are per-lane row pointers laid out
    as the backward kernel's arguments (acc_b and grest_b zeroed on entry)."""
    for k in range(0, J):
        i = J - 1 - k
        tl.debug_barrier()  # children of i (all > i) stored their contributions in earlier steps
        # upstream terms of joint i: gt = gP + gT[:, 3]; gW = gT[:, :3] - gT[:, 3] J_i^T
        jx, jy, jz = _load3(rest_b + i * 3, ok)
        h00, h01, h02 = _load3(gtr_b + i * 12, ok)
        h10, h11, h12 = _load3(gtr_b + i * 12 + 4, ok)
        h20, h21, h22 = _load3(gtr_b + i * 12 + 8, ok)
        hx = tl.load(gtr_b + i * 12 + 3, mask=ok, other=0.0)
        hy = tl.load(gtr_b + i * 12 + 7, mask=ok, other=0.0)
        hz = tl.load(gtr_b + i * 12 + 11, mask=ok, other=0.0)
        a00, a01, a02, a10, a11, a12, a20, a21, a22 = _load_rot(acc_b + i * 12, 3, ok)
        ax, ay, az = _load3(acc_b + i * 12 + 9, ok)
        gpx, gpy, gpz = _load3(gp_b + i * 3, ok)
        gtx = gpx + hx + ax
        gty = gpy + hy + ay
        gtz = gpz + hz + az
        g00 = h00 - hx * jx + a00
        g01 = h01 - hx * jy + a01
        g02 = h02 - hx * jz + a02
        g10 = h10 - hy * jx + a10
        g11 = h11 - hy * jy + a11
        g12 = h12 - hy * jz + a12
        g20 = h20 - hz * jx + a20
        g21 = h21 - hz * jy + a21
        g22 = h22 - hz * jz + a22
        # gJ_i = (children's share, already in grad_rest) - W_i^T gT_i[:, 3]
        w00, w01, w02, w10, w11, w12, w20, w21, w22 = _load_rot(trans_b + i * 12, 4, ok)
        cx, cy, cz = _load3(grest_b + i * 3, ok)
        gjx = cx - (w00 * hx + w10 * hy + w20 * hz)
        gjy = cy - (w01 * hx + w11 * hy + w21 * hz)
        gjz = cz - (w02 * hx + w12 * hy + w22 * hz)
        if i > 0:
            p = tl.load(parents_ptr + i)
            p00, p01, p02, p10, p11, p12, p20, p21, p22 = _load_rot(trans_b + p * 12, 4, ok)
            r00, r01, r02, r10, r11, r12, r20, r21, r22 = _load_rot(rot_b + i * 9, 3, ok)
            qx, qy, qz = _load3(rest_b + p * 3, ok)
            rx = jx - qx
            ry = jy - qy
            rz = jz - qz
            # gR_i = W_p^T gW_i
            _store_joint_grad(grot_b, aa_b, gup_b, i,
                              p00 * g00 + p10 * g10 + p20 * g20, p00 * g01 + p10 * g11 + p20 * g21,
                              p00 * g02 + p10 * g12 + p20 * g22, p01 * g00 + p11 * g10 + p21 * g20,
                              p01 * g01 + p11 * g11 + p21 * g21, p01 * g02 + p11 * g12 + p21 * g22,
                              p02 * g00 + p12 * g10 + p22 * g20, p02 * g01 + p12 * g11 + p22 * g21,
                              p02 * g02 + p12 * g12 + p22 * g22, ok, FROM_AA)
            # grel = W_p^T gt_i: goes to J_i (+) and J_p (-)
            gqx = p00 * gtx + p10 * gty + p20 * gtz
            gqy = p01 * gtx + p11 * gty + p21 * gtz
            gqz = p02 * gtx + p12 * gty + p22 * gtz
            _store3(grest_b + i * 3, gjx + gqx, gjy + gqy, gjz + gqz, ok)
            ppx, ppy, ppz = _load3(grest_b + p * 3, ok)
            _store3(grest_b + p * 3, ppx - gqx, ppy - gqy, ppz - gqz, ok)
            # parent accumulators: gW_p += gW_i R_i^T + gt_i rel_i^T, gt_p += gt_i
            b00, b01, b02, b10, b11, b12, b20, b21, b22 = _load_rot(acc_b + p * 12, 3, ok)
            bx, by, bz = _load3(acc_b + p * 12 + 9, ok)
            prow = acc_b + p * 12
            _store3(prow, b00 + g00 * r00 + g01 * r01 + g02 * r02 + gtx * rx,
                    b01 + g00 * r10 + g01 * r11 + g02 * r12 + gtx * ry,
                    b02 + g00 * r20 + g01 * r21 + g02 * r22 + gtx * rz, ok)
            _store3(prow + 3, b10 + g10 * r00 + g11 * r01 + g12 * r02 + gty * rx,
                    b11 + g10 * r10 + g11 * r11 + g12 * r12 + gty * ry,
                    b12 + g10 * r20 + g11 * r21 + g12 * r22 + gty * rz, ok)
            _store3(prow + 6, b20 + g20 * r00 + g21 * r01 + g22 * r02 + gtz * rx,
                    b21 + g20 * r10 + g21 * r11 + g22 * r12 + gtz * ry,
                    b22 + g20 * r20 + g21 * r21 + g22 * r22 + gtz * rz, ok)
            _store3(prow + 9, bx + gtx, by + gty, bz + gtz, ok)
        else:
            # root: gR_0 = gW_0; rel_0 = J_0 so gJ_0 also gets gt_0
            _store_joint_grad(grot_b, aa_b, gup_b, 0, g00, g01, g02, g10, g11, g12, g20, g21, g22, ok, FROM_AA)
            _store3(grest_b, gjx + gtx, gjy + gty, gjz + gtz, ok)


@triton.jit
def _kinematic_chain_backward_kernel(
    aa_ptr,  # (B, J, 3) axis-angle of the forward, contiguous (read only when FROM_AA)
    rot_ptr,  # (B, J, 9) local rotations of the forward, contiguous
    rest_ptr,  # (B, J, 3) rest joints, contiguous
    parents_ptr,  # (J,) int32 parents
    trans_ptr,  # (B, J, 12) forward transforms (rotation columns = world rotations W_i), contiguous
    grad_posed_ptr,  # (B, J, 3) upstream dL/d posed, contiguous
    grad_trans_ptr,  # (B, J, 12) upstream dL/d transforms, contiguous
    grad_rot_up_ptr,  # (B, J, 9) upstream dL/d rotmats output, contiguous (read only when FROM_AA)
    acc_ptr,  # (B, J, 12) zeroed scratch: children's contributions [gW (9) | gt (3)]
    grad_rot_ptr,  # out: (B, J, 9) dL/d rotmats, or (B, J, 3) dL/d axis-angle when FROM_AA; contiguous
    grad_rest_ptr,  # (B, J, 3) zeroed in/out: children's -W^T gt, then dL/d rest joints
    B,  # number of bodies
    J,  # number of joints
    FROM_AA: tl.constexpr,  # fused Rodrigues: write dL/d axis-angle (chain + rotmats-output shares)
    BLOCK_B: tl.constexpr,  # bodies a program (one a lane)
):
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = b < B
    if FROM_AA:
        grot_b = grad_rot_ptr + b * (J * 3)
    else:
        grot_b = grad_rot_ptr + b * (J * 9)
    _chain_backward_walk(aa_ptr + b * (J * 3), rot_ptr + b * (J * 9), rest_ptr + b * (J * 3), parents_ptr,
                         trans_ptr + b * (J * 12), grad_posed_ptr + b * (J * 3), grad_trans_ptr + b * (J * 12),
                         grad_rot_up_ptr + b * (J * 9), acc_ptr + b * (J * 12), grot_b, grad_rest_ptr + b * (J * 3),
                         J, ok, FROM_AA)
