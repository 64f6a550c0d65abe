"""Launcher of the one-launch-a-stage SMPLify fit (kernels in kernel.py; contract in reference.py).

A fit is two Triton launches: stage 1 (which also sanitises the inputs and sets stage 2 up) and
stage 2 (which also writes the result). Everything else is allocation (torch.empty) and, once per
(options, dtype, device), a small host-to-device copy of the scalars and Adam's bias-correction
tables, cached. No host read of a device value: the fit can be captured in a CUDA graph.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import triton

from . import kernel as K
from .reference import FitConstants, FitOptions, FitOutput

BLOCK_B = 16  # bodies a program (tl.dot needs >= 16 rows)
BLOCK_P = 16  # pairs a chunk (the K of the pair->joint and pair->bone dots: FMA dots hold K x cols a thread)
BLOCK_KC = 16  # K chunk of the x C^T contraction (same reason)
BLOCK_GK = 16  # GMM matvec: reduction chunk
BLOCK_GN = 32  # GMM matvec: output chunk
# The interpreter pays per operation, not per register: on CPU tensors the same kernels run with
# larger chunks (fewer loop trips); the arithmetic is the same, only summation chunks differ.
INTERPRETER_BLOCKS = dict(BLOCK_P=64, BLOCK_KC=64, BLOCK_GK=32, BLOCK_GN=64)
NUM_WARPS = 8  # 4 warps spill more in stage 2 (ptxas, sm_90: benches/smplify_resources.py)
NUM_STAGES = 1  # no software pipelining across the barriers of the phases
PRECISION = "ieee"  # fp32 dots without TF32
DEFAULT_CAMERA_SCALE = 0.9  # weak-perspective scale of the fallback translation (HMR's mean camera)
_CACHE_SIZE = 16
_params_cache: OrderedDict = OrderedDict()
_parents_cache: OrderedDict = OrderedDict()


def _cached(cache: OrderedDict, key, make):
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return value


def adam_params(opts: FitOptions, dtype: torch.dtype, device) -> torch.Tensor:
    """(NUM_PARAMS + 2 NT,) the fit's scalars, then lr / (1 - b1^t) and sqrt(1 - b2^t) for t = 1..NT
    (NT = the longer stage, at least 1), computed in float64 then cast; cached per (opts, dtype, device)."""
    def make():
        nt = max(opts.stage1_iters, opts.stage2_iters, 1)
        t = np.arange(1, nt + 1, dtype=np.float64)
        head = np.zeros(K.NUM_PARAMS.value, dtype=np.float64)
        head[K.P_FOCAL.value] = opts.focal_length
        head[K.P_IMG.value] = opts.img_res
        head[K.P_NORM.value] = opts.kp_norm
        head[K.P_S2.value] = 0.0 if math.isinf(opts.sigma) else opts.sigma * opts.sigma
        head[K.P_DEPTH.value] = opts.depth_weight
        head[K.P_WPOSE.value] = opts.pose_prior_weight
        head[K.P_WANGLE.value] = opts.angle_prior_weight
        head[K.P_WSHAPE.value] = opts.shape_prior_weight
        head[K.P_FTOL.value] = opts.ftol
        head[K.P_W1.value] = 1.0 - opts.beta1
        head[K.P_B2.value] = opts.beta2
        head[K.P_W2.value] = 1.0 - opts.beta2
        head[K.P_EPS.value] = opts.eps
        head[K.P_TZ_DEFAULT.value] = 2 * opts.focal_length / (opts.img_res * DEFAULT_CAMERA_SCALE)
        full = np.concatenate([head, opts.lr / (1 - opts.beta1 ** t), np.sqrt(1 - opts.beta2 ** t)])
        return torch.tensor(full, dtype=dtype, device=device)

    return _cached(_params_cache, (tuple(opts), dtype, str(device)), make)


def _parents(parents: tuple, device) -> torch.Tensor:
    return _cached(_parents_cache, (tuple(int(p) for p in parents), str(device)),
                   lambda: torch.tensor([max(int(p), 0) for p in parents], dtype=torch.int32, device=device))


def _layout(names_sizes) -> tuple[dict, int]:
    out, at = {}, 0
    for name, size in names_sizes:
        out[name] = at
        at += size
    return out, at


def layouts(S: int, P: int, JV: int) -> tuple[dict, int, dict, int]:
    """Offsets (elements) of the state row and the scratch row of a body, and their widths."""
    N2 = 72 + S
    state, ws = _layout([("O_X2", N2), ("O_M2", N2), ("O_V2", N2), ("O_X1", 6), ("O_M1", 6), ("O_V1", 6),
                         ("O_CAM", 3), ("O_CEN", 2), ("O_TZ0", 1), ("O_PREV", 1), ("O_CONST", 1)])
    scratch, wsc = _layout([
        ("O_ROT", 24 * 9), ("O_TRANS", 24 * 12), ("O_POSED", 24 * 3), ("O_REST", 24 * 3), ("O_PF", 207),
        ("O_VJ", 3 * JV), ("O_LOCAL", 3 * P), ("O_GL", 3 * P), ("O_GUP", 24 * 9), ("O_ACC", 24 * 12),
        ("O_GREST", 24 * 3), ("O_GAA", 24 * 3), ("O_GPOSED", 24 * 3), ("O_GTRANS", 24 * 12), ("O_GVJ", 3 * JV),
        ("O_GBETA", S), ("O_YGMM", 69), ("O_X0", 49 * 3), ("O_X0C", 49 * 3), ("O_SJ0", 49 * 3), ("O_KP1", 49 * 2),
        ("O_C1", 49), ("O_KP", 49 * 2), ("O_CONF", 49), ("O_Q", 49 * 3)])
    return state, ws, scratch, wsc


def check_fit_args(consts: FitConstants, pose, betas, cam_t, keypoints2d, center) -> None:
    B = pose.shape[0]
    S = consts.J_shapedirs.shape[-1]
    for name, t, shape in (("pose", pose, (B, 72)), ("betas", betas, (B, S)), ("cam_t", cam_t, (B, 3)),
                           ("keypoints2d", keypoints2d, (B, 49, 3)), ("center", center, (B, 2))):
        if tuple(t.shape) != shape:
            raise ValueError(f"smplify_fit: {name} must be {shape}, got {tuple(t.shape)}")
        if t.dtype != pose.dtype:
            raise TypeError(f"smplify_fit: {name} is {t.dtype}, pose {pose.dtype} (cast to the compute dtype)")
    if pose.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"smplify_fit: the compute dtype must be float32 or float64, got {pose.dtype}")
    if len(consts.parents) != 24 or consts.gmm_means.shape[-1] != 69 or S > 128 - 72:
        raise ValueError("smplify_fit: needs SMPL's 24 joints, a 69-d GMM and at most 56 betas")


def smplify_fit_triton(consts: FitConstants, opts: FitOptions, pose, betas, cam_t, keypoints2d, center) -> FitOutput:
    """The Triton fit; same contract as smplify_fit_torch (reference.py)."""
    check_fit_args(consts, pose, betas, cam_t, keypoints2d, center)
    B, dtype, dev = pose.shape[0], pose.dtype, pose.device
    S = consts.J_shapedirs.shape[-1]
    P = consts.coeffs.shape[0]
    JV = int(consts.num_vertex_joints)
    M = consts.gmm_means.shape[0]
    out = FitOutput(
        pose=torch.empty(B, 72, dtype=dtype, device=dev), betas=torch.empty(B, S, dtype=dtype, device=dev),
        cam_t=torch.empty(B, 3, dtype=dtype, device=dev), joint_loss=torch.empty(B, 49, dtype=dtype, device=dev),
        total_loss=torch.empty(B, dtype=dtype, device=dev),
        valid=torch.empty(B, dtype=torch.uint8, device=dev).view(torch.bool),
        iterations=torch.empty(B, 2, dtype=torch.int64, device=dev))
    if B == 0:
        return out
    state, ws, scratch, wsc = layouts(S, P, JV)
    st = torch.empty(B, ws, dtype=dtype, device=dev)
    fl = torch.empty(B, K.NUM_FLAGS.value, dtype=torch.int32, device=dev)
    sc = torch.empty(B, wsc, dtype=dtype, device=dev)
    params = adam_params(opts, dtype, dev)
    nt = (params.shape[0] - K.NUM_PARAMS.value) // 2
    inputs = [t.contiguous() for t in (pose, betas, cam_t, keypoints2d, center)]
    body = (consts.J_template.contiguous(), consts.J_shapedirs.contiguous(), _parents(consts.parents, dev),
            consts.coeffs.contiguous(), consts.bone_weight.contiguous(), consts.pair_joint.contiguous(),
            consts.pair_bone.contiguous(), consts.joint_index.contiguous())
    priors = (consts.gmm_means.contiguous(), consts.gmm_precisions.contiguous(), consts.gmm_nll.contiguous(),
              consts.angle_index.contiguous(), consts.angle_signs.contiguous())
    batch_stop = bool(opts.batch_stop)
    grid = (1,) if batch_stop else (triton.cdiv(B, BLOCK_B),)
    blocks = dict(BLOCK_B=BLOCK_B, BLOCK_P=BLOCK_P, BLOCK_KC=BLOCK_KC,
                  BLOCK_JV=max(16, triton.next_power_of_2(max(JV, 1))), BLOCK_GK=BLOCK_GK, BLOCK_GN=BLOCK_GN,
                  PRECISION=PRECISION, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    if not pose.is_cuda:
        blocks.update(INTERPRETER_BLOCKS)
    flags = dict(ANGLE_M1=bool(opts.angle_minus_one), BATCH_STOP=batch_stop,
                 FTOL_ROWS=bool(opts.ftol > 0 and not batch_stop), ROBUST=not math.isinf(opts.sigma),
                 UNITS=int(opts.units))
    K._smplify_stage1_kernel[grid](
        *inputs, *body, consts.row_sums.contiguous(), *priors, consts.stage2_keep.contiguous(),
        consts.torso.contiguous(), params, st, fl, sc, B, 24, S, P, JV, M, int(opts.stage1_iters), nt,
        WS=ws, WSC=wsc, **{k: state[k] for k in ("O_X2", "O_X1", "O_M1", "O_V1", "O_CAM", "O_CEN", "O_TZ0", "O_PREV",
                                                 "O_CONST", "O_M2", "O_V2")},
        **{k: scratch[k] for k in ("O_ROT", "O_TRANS", "O_POSED", "O_REST", "O_PF", "O_VJ", "O_LOCAL", "O_GUP",
                                   "O_X0", "O_X0C", "O_SJ0", "O_KP1", "O_C1", "O_KP", "O_CONF")},
        ALL_JOINTS=bool(opts.stage1_all_joints), DEPTH=opts.depth_weight != 0,
        BLOCK_N1=64 if opts.stage1_all_joints else 4, **flags, **blocks)
    K._smplify_stage2_kernel[grid](
        *inputs[:3], *body, *priors, params, st, fl, sc, out.pose, out.betas, out.cam_t, out.joint_loss,
        out.total_loss, out.valid.view(torch.uint8), out.iterations, B, 24, S, P, JV, M, int(opts.stage2_iters), nt,
        WS=ws, WSC=wsc, **{k: state[k] for k in ("O_X2", "O_M2", "O_V2", "O_CAM", "O_CEN", "O_PREV")},
        **{k: scratch[k] for k in ("O_ROT", "O_TRANS", "O_POSED", "O_REST", "O_PF", "O_VJ", "O_LOCAL", "O_GL",
                                   "O_GUP", "O_ACC", "O_GREST", "O_GAA", "O_GPOSED", "O_GTRANS", "O_GVJ", "O_GBETA",
                                   "O_YGMM", "O_KP", "O_CONF", "O_Q")},
        **flags, **blocks)
    return out
