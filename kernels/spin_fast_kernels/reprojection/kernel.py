# Robust 2D reprojection loss of SMPLify: Triton kernels (`@triton.jit` only; launchers in function.py).
#
# Math (reference.py), per sample b and joint j, camera with identity rotation:
#     (X, Y, Z) = joints3d_bj + t_b;   p = f (X, Y) / Z + c_b;   r = p - kp_bj          (pixels)
#     rho(a) = s2 a^2 / (s2 + a^2), s2 = sigma^2   (a^2 when sigma = inf: ROBUST = False)
#     units 0 (pixels, SPIN's):        loss_bj = conf_bj^2 (rho(r_x) + rho(r_y))
#     units 1 (normalised, mmhuman3d's): e = 2 r / S;  loss_bj = conf_bj (rho(e_x^2) + rho(e_y^2))
#     out_b = sum_j loss_bj ('sum') or out_bj = loss_bj ('none')
# Backward (keypoints, confidences, centre are constants), with G_bj the upstream gradient of loss_bj
# (grad_out_b for 'sum') and rho'(a) = 2 s2^2 a / (s2 + a^2)^2 (2a when not ROBUST):
#     units 0:    q = G conf^2 rho'(r)                   (d/dr, both coordinates)
#     units 1:    q = G conf rho'(e^2) 2 e (2 / S)
#     dX = q_x f / Z,  dY = q_y f / Z,  dZ = -(dX X + dY Y) / Z
#     grad_joints3d_bj = (dX, dY, dZ),   grad_t_b = sum_j grad_joints3d_bj
# Fused: projection, residual, rho, confidence weighting and the per-sample joint sum in one pass
# (forward), and the whole chain back to joints3d and the per-sample translation sum in one pass
# (backward, recomputing the cheap forward instead of saving intermediates).
# Cost per joint: forward ~25 FLOP (one division), backward ~45 FLOP; bytes (fp32) forward read
# joints 12 + keypoints 8 + confidence 4 = 24 B (+ t, centre, output per sample), backward the same
# 24 B + write 12 B: about 1.2 kB a 49-joint sample forward, 1.8 kB backward: memory/launch bound.
# Padded lanes (49 joints in a 64-wide tile, samples past B) load harmless values and are zeroed
# with tl.where before every joint sum and store.
import triton
import triton.language as tl


@triton.jit
def _rho(a, s2, ROBUST: tl.constexpr):
    """Geman-McClure rho(a) = s2 a^2 / (s2 + a^2); a^2 when not ROBUST."""
    a2 = a * a
    if ROBUST:
        return s2 * a2 / (s2 + a2)
    else:
        return a2


@triton.jit
def _drho(a, s2, ROBUST: tl.constexpr):
    """rho'(a) = 2 s2^2 a / (s2 + a^2)^2; 2a when not ROBUST."""
    if ROBUST:
        den = s2 + a * a
        return 2.0 * s2 * s2 * a / (den * den)
    else:
        return 2.0 * a


@triton.jit
def _project_residual(
    joints_ptr, t_ptr, kp_ptr, conf_ptr, center_ptr,
    rows, cols, row_ok, tile_ok,
    stride_jb, stride_jj, stride_jc, stride_tb, stride_tc, stride_kb, stride_kj, stride_kc,
    stride_cb, stride_cj, stride_ctb, stride_ctc,
    params_ptr,
    HAS_CENTER: tl.constexpr, ACC: tl.constexpr,
):
    """Loads one (BLOCK_B, BLOCK_J) tile -> X, Y, 1/Z, r_x, r_y, conf (all in ACC)."""
    focal = tl.load(params_ptr + 0)
    jp = joints_ptr + rows[:, None] * stride_jb + cols[None, :] * stride_jj
    tp = t_ptr + rows * stride_tb
    X = tl.load(jp, mask=tile_ok, other=0.0).to(ACC) + tl.load(tp, mask=row_ok, other=0.0).to(ACC)[:, None]
    Y = (tl.load(jp + stride_jc, mask=tile_ok, other=0.0).to(ACC)
         + tl.load(tp + stride_tc, mask=row_ok, other=0.0).to(ACC)[:, None])
    Z = (tl.load(jp + 2 * stride_jc, mask=tile_ok, other=1.0).to(ACC)
         + tl.load(tp + 2 * stride_tc, mask=row_ok, other=0.0).to(ACC)[:, None])
    if HAS_CENTER:
        cx = tl.load(center_ptr + rows * stride_ctb, mask=row_ok, other=0.0).to(ACC)[:, None]
        cy = tl.load(center_ptr + rows * stride_ctb + stride_ctc, mask=row_ok, other=0.0).to(ACC)[:, None]
    else:
        cx = tl.load(params_ptr + 1)
        cy = tl.load(params_ptr + 2)
    kp = kp_ptr + rows[:, None] * stride_kb + cols[None, :] * stride_kj
    kx = tl.load(kp, mask=tile_ok, other=0.0).to(ACC)
    ky = tl.load(kp + stride_kc, mask=tile_ok, other=0.0).to(ACC)
    conf = tl.load(conf_ptr + rows[:, None] * stride_cb + cols[None, :] * stride_cj, mask=tile_ok, other=0.0).to(ACC)
    inv_z = 1.0 / Z
    rx = focal * X * inv_z + cx - kx
    ry = focal * Y * inv_z + cy - ky
    return X, Y, inv_z, rx, ry, conf


@triton.jit
def _reprojection_forward_kernel(
    joints_ptr,  # (B, J, 3) camera-frame joints before translation, strides (stride_jb, stride_jj, stride_jc)
    t_ptr,  # (B, 3) camera translation, strides (stride_tb, stride_tc)
    kp_ptr,  # (B, J, 2) keypoints in pixels, strides (stride_kb, stride_kj, stride_kc)
    conf_ptr,  # (B, J) keypoint confidences, strides (stride_cb, stride_cj)
    center_ptr,  # (B, 2) principal points in pixels, strides (stride_ctb, stride_ctc); unused unless HAS_CENTER
    out_ptr,  # out: (B,) contiguous when REDUCE_SUM, else (B, J) contiguous
    B, J,  # samples, joints
    stride_jb, stride_jj, stride_jc, stride_tb, stride_tc, stride_kb, stride_kj, stride_kc,
    stride_cb, stride_cj, stride_ctb, stride_ctc,
    params_ptr,  # (5,) in the ACC dtype: focal length, principal point x, y used when not HAS_CENTER,
    #              sigma^2 (ignored when not ROBUST), 2 / img_size (units 1); a tensor, not scalar
    #              arguments, because Triton passes Python floats as fp32 (2/224 would lose fp64 digits)
    PIXELS: tl.constexpr,  # True: units 0 (pixel residuals, conf^2); False: units 1 (normalised, conf)
    ROBUST: tl.constexpr,  # False when sigma = inf (plain squares)
    REDUCE_SUM: tl.constexpr,  # True: per-sample sum; False: per-joint values
    HAS_CENTER: tl.constexpr,  # read center_ptr, else the principal point in params_ptr
    ACC: tl.constexpr,  # compute dtype (tl.float32 or tl.float64)
    BLOCK_B: tl.constexpr,  # samples a program
    BLOCK_J: tl.constexpr,  # next power of two >= J (a program holds whole samples)
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_J)
    row_ok = rows < B
    tile_ok = row_ok[:, None] & (cols < J)[None, :]
    X, Y, inv_z, rx, ry, conf = _project_residual(
        joints_ptr, t_ptr, kp_ptr, conf_ptr, center_ptr, rows, cols, row_ok, tile_ok,
        stride_jb, stride_jj, stride_jc, stride_tb, stride_tc, stride_kb, stride_kj, stride_kc,
        stride_cb, stride_cj, stride_ctb, stride_ctc, params_ptr, HAS_CENTER, ACC)
    s2 = tl.load(params_ptr + 3)
    norm = tl.load(params_ptr + 4)
    if PIXELS:
        loss = conf * conf * (_rho(rx, s2, ROBUST) + _rho(ry, s2, ROBUST))
    else:
        ex = rx * norm
        ey = ry * norm
        loss = conf * (_rho(ex * ex, s2, ROBUST) + _rho(ey * ey, s2, ROBUST))
    loss = tl.where(tile_ok, loss, 0.0)
    if REDUCE_SUM:
        tl.store(out_ptr + rows, tl.sum(loss, axis=1).to(out_ptr.dtype.element_ty), mask=row_ok)
    else:
        tl.store(out_ptr + rows[:, None] * J + cols[None, :], loss.to(out_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def _reprojection_backward_kernel(
    grad_out_ptr,  # upstream gradient: (B,) strides (stride_gb,) when REDUCE_SUM, else (B, J) (stride_gb, stride_gj)
    joints_ptr,  # (B, J, 3) as in the forward
    t_ptr,  # (B, 3)
    kp_ptr,  # (B, J, 2)
    conf_ptr,  # (B, J)
    center_ptr,  # (B, 2), unused unless HAS_CENTER
    grad_joints_ptr,  # out: (B, J, 3) contiguous, d L / d joints3d
    grad_t_ptr,  # out: (B, 3) contiguous, d L / d translation
    B, J,
    stride_gb, stride_gj,  # upstream gradient strides (elements; 0 where expanded)
    stride_jb, stride_jj, stride_jc, stride_tb, stride_tc, stride_kb, stride_kj, stride_kc,
    stride_cb, stride_cj, stride_ctb, stride_ctc,
    params_ptr,  # (5,) as in the forward
    PIXELS: tl.constexpr, ROBUST: tl.constexpr, REDUCE_SUM: tl.constexpr, HAS_CENTER: tl.constexpr,
    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_J)
    row_ok = rows < B
    tile_ok = row_ok[:, None] & (cols < J)[None, :]
    X, Y, inv_z, rx, ry, conf = _project_residual(
        joints_ptr, t_ptr, kp_ptr, conf_ptr, center_ptr, rows, cols, row_ok, tile_ok,
        stride_jb, stride_jj, stride_jc, stride_tb, stride_tc, stride_kb, stride_kj, stride_kc,
        stride_cb, stride_cj, stride_ctb, stride_ctc, params_ptr, HAS_CENTER, ACC)
    s2 = tl.load(params_ptr + 3)
    norm = tl.load(params_ptr + 4)
    if REDUCE_SUM:
        G = tl.load(grad_out_ptr + rows * stride_gb, mask=row_ok, other=0.0).to(ACC)[:, None]
    else:
        G = tl.load(grad_out_ptr + rows[:, None] * stride_gb + cols[None, :] * stride_gj,
                    mask=tile_ok, other=0.0).to(ACC)
    if PIXELS:
        w = G * conf * conf
        qx = w * _drho(rx, s2, ROBUST)
        qy = w * _drho(ry, s2, ROBUST)
    else:
        ex = rx * norm
        ey = ry * norm
        w = G * conf * 2.0 * norm
        qx = w * _drho(ex * ex, s2, ROBUST) * ex
        qy = w * _drho(ey * ey, s2, ROBUST) * ey
    fz = tl.load(params_ptr + 0) * inv_z
    dX = tl.where(tile_ok, qx * fz, 0.0)
    dY = tl.where(tile_ok, qy * fz, 0.0)
    dZ = tl.where(tile_ok, -(dX * X + dY * Y) * inv_z, 0.0)
    gp = grad_joints_ptr + rows[:, None] * (J * 3) + cols[None, :] * 3
    out_t = grad_joints_ptr.dtype.element_ty
    tl.store(gp, dX.to(out_t), mask=tile_ok)
    tl.store(gp + 1, dY.to(out_t), mask=tile_ok)
    tl.store(gp + 2, dZ.to(out_t), mask=tile_ok)
    tt = grad_t_ptr.dtype.element_ty
    tl.store(grad_t_ptr + rows * 3, tl.sum(dX, axis=1).to(tt), mask=row_ok)
    tl.store(grad_t_ptr + rows * 3 + 1, tl.sum(dY, axis=1).to(tt), mask=row_ok)
    tl.store(grad_t_ptr + rows * 3 + 2, tl.sum(dZ, axis=1).to(tt), mask=row_ok)
