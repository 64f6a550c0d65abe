# Max-mixture GMM pose prior: Triton kernels (`@triton.jit` only; launchers in function.py).
#
# Math (reference.py): per sample b, with d_k = theta_b - mu_k and P_k = Sigma_k^-1 symmetric,
#     y_k   = P_k d_k                                   (D,)  D = 69
#     v_k   = 1/2 d_k . y_k + nll_k
#     out_b = min_k v_k,   k*_b = argmin_k v_k,   d out_b / d theta_b = y_{k*_b}
# Fused: one program takes BLOCK_B samples through all K components. y_k is built in
# (BLOCK_B, BLOCK_N) column chunks, each a sum of (BLOCK_B, BLOCK_K) x (BLOCK_K, BLOCK_N) tl.dot
# tiles, so the 69 x 69 precision is padded to 80 x 96 (not 128 x 128) and no tile needs more
# than a few registers a thread (a whole 128 x 128 fp32 tile spilled on sm_90: 255 registers +
# stack, and its fp64 twin needed 180-313 kB of shared memory). Pass 1 keeps the running min
# and its index; when STORE_GRAD, pass 2 recomputes y only for components that won a sample in
# the tile and stores it where it won. The backward is then a pure scale,
# grad_theta = grad_out[:, None] * y: the backward evaluates no component.
# Cost per sample (K = 8, D = 69): pass 1, 2 K 80 96 = 123 kFLOP on padded tiles (2 K D^2 = 76 kFLOP
# useful) + 4 K D for diff/dot/min; pass 2 at most the same again (only winning components).
# Bytes: read theta 276 B (fp32), write value 4 + argmin 4 + y 276 B; the K D^2 precisions (152 kB
# fp32) are read once a BLOCK_B tile a pass and stay in L2, so about 0.6 kB a sample from DRAM.
# The backward reads y 276 B + grad_out 4 B and writes 276 B a sample.
# Padded lanes: theta, mu and P load 0 there, so d = 0 and y = 0; every reduction is still
# masked explicitly. fp32 matmuls use input_precision="ieee" (no TF32: quadratic forms with
# precisions ~1e2 would lose ~1e-3 relatively).
import triton
import triton.language as tl


@triton.jit
def _gmm_component_chunk(
    pose_ptr, means_ptr, prec_ptr, k, n0, rows, row_ok, D, stride_pb, stride_pd,
    acc_t: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Columns n0 .. n0 + BLOCK_N of y_k = P_k d_k and of d_k, for BLOCK_B samples (zero where padded)."""
    ncols = n0 + tl.arange(0, BLOCK_N)
    n_ok = ncols < D
    y = tl.zeros((BLOCK_B, BLOCK_N), acc_t)
    for i0 in range(0, D, BLOCK_K):
        icols = i0 + tl.arange(0, BLOCK_K)
        i_ok = icols < D
        tile_ok = row_ok[:, None] & i_ok[None, :]
        theta = tl.load(pose_ptr + rows[:, None] * stride_pb + icols[None, :] * stride_pd, mask=tile_ok, other=0.0)
        mu = tl.load(means_ptr + k * D + icols, mask=i_ok, other=0.0)
        diff = tl.where(tile_ok, theta.to(acc_t) - mu.to(acc_t)[None, :], 0.0)  # (BLOCK_B, BLOCK_K)
        prec = tl.load(prec_ptr + k * D * D + icols[:, None] * D + ncols[None, :],
                       mask=i_ok[:, None] & n_ok[None, :], other=0.0).to(acc_t)  # (BLOCK_K, BLOCK_N)
        y += tl.dot(diff, prec, input_precision="ieee", out_dtype=acc_t)  # P symmetric: d^T P = (P d)^T
    out_ok = row_ok[:, None] & n_ok[None, :]
    theta_n = tl.load(pose_ptr + rows[:, None] * stride_pb + ncols[None, :] * stride_pd, mask=out_ok, other=0.0)
    mu_n = tl.load(means_ptr + k * D + ncols, mask=n_ok, other=0.0)
    diff_n = tl.where(out_ok, theta_n.to(acc_t) - mu_n.to(acc_t)[None, :], 0.0)
    return tl.where(out_ok, y, 0.0), diff_n


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
    BLOCK_K: tl.constexpr,  # reduction chunk of the matvec (>= 16 for tl.dot)
    BLOCK_N: tl.constexpr,  # output chunk of the matvec (>= 16 for tl.dot)
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    row_ok = rows < B
    if IS_FP64:
        acc_t: tl.constexpr = tl.float64
    else:
        acc_t: tl.constexpr = tl.float32

    # pass 1: v_k for every component, running min and argmin
    best = tl.full((BLOCK_B,), float("inf"), acc_t)
    best_k = tl.zeros((BLOCK_B,), tl.int32)
    for k in range(K):
        quad = tl.zeros((BLOCK_B,), acc_t)
        for n0 in range(0, D, BLOCK_N):
            y, diff = _gmm_component_chunk(pose_ptr, means_ptr, prec_ptr, k, n0, rows, row_ok, D, stride_pb,
                                           stride_pd, acc_t, BLOCK_B, BLOCK_K, BLOCK_N)
            quad += tl.sum(diff * y, axis=1)  # padded lanes are 0 in both
        val = 0.5 * quad + tl.load(nll_ptr + k).to(acc_t)
        win = val < best  # strict: the first minimiser wins ties, like torch.min
        best = tl.where(win, val, best)
        best_k = tl.where(win, k, best_k)
    tl.store(out_ptr + rows, best.to(out_ptr.dtype.element_ty), mask=row_ok)
    tl.store(argmin_ptr + rows, best_k, mask=row_ok)

    # pass 2: y_{k*} for each sample, recomputed only for the components that won in this tile
    if STORE_GRAD:
        for k in range(K):
            won = row_ok & (best_k == k)
            if tl.sum(won.to(tl.int32), axis=0) > 0:
                for n0 in range(0, D, BLOCK_N):
                    y, diff = _gmm_component_chunk(pose_ptr, means_ptr, prec_ptr, k, n0, rows, row_ok, D,
                                                   stride_pb, stride_pd, acc_t, BLOCK_B, BLOCK_K, BLOCK_N)
                    ncols = n0 + tl.arange(0, BLOCK_N)
                    tl.store(grad_ptr + rows[:, None] * D + ncols[None, :], y.to(grad_ptr.dtype.element_ty),
                             mask=won[:, None] & (ncols < D)[None, :])


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
