# Max-mixture GMM pose prior: Triton kernels (`@triton.jit` only; launchers in function.py).
#
# Math (reference.py): per sample b, with d_k = theta_b - mu_k and P_k = Sigma_k^-1 symmetric,
#     y_k   = P_k d_k                                   (D,)  D = 69, padded to BLOCK_D = 128
#     v_k   = 1/2 d_k . y_k + nll_k
#     out_b = min_k v_k,   k*_b = argmin_k v_k,   d out_b / d theta_b = y_{k*_b}
# Fused: the forward evaluates all K components for a BLOCK_B tile of samples as one
# (BLOCK_B, BLOCK_D) x (BLOCK_D, BLOCK_D) matmul a component, keeps the running min, its index and
# (when STORE_GRAD) the winning y in registers, and writes value, argmin and y once. The backward
# is then a pure scale, grad_theta = grad_out[:, None] * y: no component is evaluated twice.
# Cost per sample (K = 8, D = 69): 2 K D^2 = 76 kFLOP for the matvecs + 4 K D for diff/dot/min;
# bytes: read theta 276 B (fp32), write value 4 + argmin 4 + y 276 B; the K D^2 precisions
# (152 kB fp32) are read once per BLOCK_B tile and stay in L2, so about 0.6 kB a sample from DRAM.
# The backward reads y 276 B + grad_out 4 B and writes 276 B a sample.
# Padded lanes: theta, mu and P load 0 there, so d = 0 and y = 0; the d . y reduction is still
# masked explicitly. fp32 matmuls use input_precision="ieee" (no TF32: quadratic forms with
# precisions ~1e2 would lose ~1e-3 relatively).
import triton
import triton.language as tl


@triton.jit
def _gmm_prior_forward_kernel(
    pose_ptr,  # (B, D) body pose, strides (stride_pb, stride_pd)
    means_ptr,  # (K, D) component means, contiguous
    prec_ptr,  # (K, D, D) symmetric precisions, contiguous
    nll_ptr,  # (K,) per-component negative log normaliser
    out_ptr,  # (B,) out: min_k v_k, contiguous
    argmin_ptr,  # (B,) int32 out: winning component k*
    grad_ptr,  # (B, D) out: y_{k*} = d out / d theta, contiguous; untouched unless STORE_GRAD
    B,  # number of samples
    K,  # number of components
    D,  # pose dimension (69)
    stride_pb,  # pose stride between samples (elements)
    stride_pd,  # pose stride between pose entries (elements)
    STORE_GRAD: tl.constexpr,  # write y_{k*} for the backward
    IS_FP64: tl.constexpr,  # compute in float64 (else float32)
    BLOCK_B: tl.constexpr,  # samples a program (>= 16 for tl.dot)
    BLOCK_D: tl.constexpr,  # next power of two >= D (>= 16)
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    cols = tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    row_ok = rows < B
    col_ok = cols < D
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if IS_FP64:
        acc_t = tl.float64
    else:
        acc_t = tl.float32

    theta = tl.load(pose_ptr + rows[:, None] * stride_pb + cols[None, :] * stride_pd, mask=tile_ok, other=0.0)
    theta = theta.to(acc_t)

    best = tl.full((BLOCK_B,), float("inf"), acc_t)
    best_k = tl.zeros((BLOCK_B,), tl.int32)
    best_y = tl.zeros((BLOCK_B, BLOCK_D), acc_t)
    for k in range(K):
        mu = tl.load(means_ptr + k * D + cols, mask=col_ok, other=0.0).to(acc_t)  # (BLOCK_D,)
        prec = tl.load(
            prec_ptr + k * D * D + cols[:, None] * D + cols[None, :],
            mask=col_ok[:, None] & col_ok[None, :],
            other=0.0,
        ).to(acc_t)  # (BLOCK_D, BLOCK_D); symmetric, so d @ P = (P d)^T
        diff = tl.where(tile_ok, theta - mu[None, :], 0.0)
        y = tl.dot(diff, prec, input_precision="ieee", out_dtype=acc_t)  # (BLOCK_B, BLOCK_D)
        quad = tl.sum(tl.where(tile_ok, diff * y, 0.0), axis=1)  # (BLOCK_B,)
        val = 0.5 * quad + tl.load(nll_ptr + k).to(acc_t)
        win = val < best  # strict: the first minimiser wins ties, like torch.min
        best = tl.where(win, val, best)
        best_k = tl.where(win, k, best_k)
        if STORE_GRAD:
            best_y = tl.where(win[:, None], y, best_y)

    tl.store(out_ptr + rows, best.to(out_ptr.dtype.element_ty), mask=row_ok)
    tl.store(argmin_ptr + rows, best_k, mask=row_ok)
    if STORE_GRAD:
        tl.store(grad_ptr + rows[:, None] * D + cols[None, :], best_y.to(grad_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def _gmm_prior_backward_kernel(
    grad_out_ptr,  # (B,) upstream gradient d L / d out_b, stride stride_go
    y_ptr,  # (B, D) winning P_k* d_k* saved by the forward, contiguous
    grad_pose_ptr,  # (B, D) out: d L / d theta, contiguous
    B,  # number of samples
    D,  # pose dimension
    stride_go,  # grad_out stride between samples (elements; 0 for an expanded scalar)
    BLOCK_B: tl.constexpr,  # samples a program
    BLOCK_D: tl.constexpr,  # next power of two >= D
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < B
    tile_ok = row_ok[:, None] & (cols < D)[None, :]
    g = tl.load(grad_out_ptr + rows * stride_go, mask=row_ok, other=0.0)
    y = tl.load(y_ptr + rows[:, None] * D + cols[None, :], mask=tile_ok, other=0.0)
    gp = g[:, None].to(y.dtype) * y
    tl.store(grad_pose_ptr + rows[:, None] * D + cols[None, :], gp.to(grad_pose_ptr.dtype.element_ty), mask=tile_ok)
