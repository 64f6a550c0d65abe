"""The kernel package as a whole: importing it and calling ops on CPU tensors never touches a Triton
driver, and every kernel of every op compiles for an H100 (sm_90) with no GPU present."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


def test_import_does_not_touch_the_triton_driver():
    """Without the interpreter on a CPU-only machine, import and CPU calls of every op must still work."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPIN_FAST_BACKEND")}
    if HAS_CUDA:
        env["CUDA_VISIBLE_DEVICES"] = ""
    code = (
        "import torch\n"
        "from spin_fast_kernels.kinematic_chain import rodrigues, kinematic_chain\n"
        "R = rodrigues(torch.zeros(1, 2, 3))\n"
        "p, T = kinematic_chain(R, torch.ones(1, 2, 3), [-1, 0])\n"
        "print(float(p.sum()))\n"
        "from spin_fast_kernels.gmm_prior import gmm_prior, gmm_constants\n"
        "c = gmm_constants(torch.zeros(1, 4), torch.eye(4)[None], torch.ones(1), dtype=torch.float32)\n"
        "print(float(gmm_prior(torch.ones(2, 4), *c)[0]))\n"
        "from spin_fast_kernels.reprojection import reprojection_loss\n"
        "assert reprojection_loss(torch.zeros(1, 2, 3), torch.tensor([[0., 0, 1]]), torch.zeros(1, 2, 2),"
        " torch.ones(1, 2)).shape == (1,)\n"
        "from spin_fast_kernels.skinning import skinning\n"
        "from spin_fast_kernels.joints_only import joints_only\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    chain_sum, gmm_value = (float(x) for x in res.stdout.split()[-2:])
    assert chain_sum == pytest.approx(6.0)
    # 1/2 |(1,1,1,1)|^2 + D/2 log 2 pi  (one component, weight 1, Sigma = I: the 'spin' shift is 0)
    assert gmm_value == pytest.approx(2.0 + 2.0 * math.log(2 * math.pi), rel=1e-6)


# --- GPU compilation without a GPU: the SMPL ops (fp32), then the losses (fp32 and fp64) ------------
_COMPILE_SMPL_OPS = r'''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spin_fast_kernels.joints_only import function as jf, kernel as jk
from spin_fast_kernels.kinematic_chain import function as cf, kernel as ck
from spin_fast_kernels.skinning import function as sf, kernel as sk

f, i = "*fp32", "i32"
def sig(names, ptrs, ints, **cst):
    s = {n: f for n in ptrs}
    s.update({n: i for n in ints})
    s.update({n: "constexpr" for n in cst})
    for n in names:
        s[n] = "*i32" if n == "parents_ptr" else "*i64"
    return s, cst
chain = ["aa_ptr", "rot_ptr", "rest_ptr", "posed_ptr", "trans_ptr"]
jo = ["betas_ptr", "pf_ptr", "trans_ptr", "coeffs_ptr", "bw_ptr"]
jo_int = ["B", "S", "PF", "P", "NB", "NJ", "stride_bb", "stride_bs", "stride_fb", "stride_fp", "NSPLIT"]
sk_ptr = ["betas_ptr", "pf_ptr", "trans_ptr", "vt_ptr", "sd_ptr", "pd_ptr", "w_ptr"]
sk_int = ["B", "V", "S", "PF", "NB", "stride_bb", "stride_bs", "stride_fb", "stride_fp"]
blk = dict(BLOCK_B=16, BLOCK_P=32, BLOCK_KC=32, PRECISION="ieee")
sblk = dict(BLOCK_B=16, BLOCK_V=32, BLOCK_KC=32, PRECISION="ieee")
cases = [
    (ck._rodrigues_forward_kernel, sig([], ["aa_ptr", "rot_ptr"], ["N"], BLOCK=128), 4),
    (ck._rodrigues_backward_kernel, sig([], ["aa_ptr", "grad_rot_ptr", "grad_aa_ptr"], ["N"], BLOCK=128), 4),
    *[(ck._kinematic_chain_forward_kernel, sig(["parents_ptr"], chain, ["B", "J"], FROM_AA=fused,
        BLOCK_B=cf.CHAIN_BLOCK_B), 1) for fused in (False, True)],
    *[(ck._kinematic_chain_backward_kernel, sig(["parents_ptr"], ["aa_ptr", "rot_ptr", "rest_ptr", "trans_ptr",
        "grad_posed_ptr", "grad_trans_ptr", "grad_rot_up_ptr", "acc_ptr", "grad_rot_ptr", "grad_rest_ptr"], ["B", "J"],
        FROM_AA=fused, BLOCK_B=cf.CHAIN_BLOCK_B), 1) for fused in (False, True)],
    (jk._joints_only_forward_kernel, sig(["pj_ptr", "pb_ptr"], jo + ["out_ptr"], jo_int, BLOCK_J=64, **blk),
     jf.NUM_WARPS),
    (jk._joints_only_backward_pairs_kernel, sig(["pj_ptr", "pb_ptr"], jo + ["grad_out_ptr", "grad_local_ptr",
        "grad_trans_ptr"], jo_int, BLOCK_NB=32, **blk), jf.NUM_WARPS_BWD),
    (jk._joints_only_backward_x_kernel, sig([], ["grad_local_ptr", "coeffs_ptr", "grad_x_ptr"], ["B", "P", "K"],
        **blk), jf.NUM_WARPS),
    (sk._skinning_forward_kernel, sig([], sk_ptr + ["out_ptr"], sk_int, BLOCK_NB=32, **sblk), sf.NUM_WARPS),
    (sk._skinning_backward_vertex_kernel, sig([], sk_ptr + ["grad_out_ptr", "grad_vp_ptr", "grad_trans_ptr"],
        sk_int + ["NSPLIT"], BLOCK_NB=32, **sblk), sf.NUM_WARPS_BWD),
    (sk._skinning_backward_x_kernel, sig([], ["grad_vp_ptr", "sd_ptr", "pd_ptr", "grad_x_ptr"],
        ["B", "V", "S", "PF", "NSPLIT"], **sblk), sf.NUM_WARPS),
]
for fn, (signature, cst), warps in cases:
    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=cst), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, "num_stages": 1 if "chain" in fn.__name__ else 2})
    assert k.metadata.shared <= 232448, (fn.__name__, k.metadata.shared)  # H100: 227 KiB a block
    print("ok", fn.__name__, k.metadata.shared)
'''

_COMPILE_LOSS_OPS = r"""
import json, sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spin_fast_kernels.gmm_prior import kernel as gk
from spin_fast_kernels.reprojection import kernel as rk

def signature(fn, fp):
    return {p.name: "constexpr" if p.is_constexpr else "*i32" if p.name == "argmin_ptr"
            else f"*{fp}" if p.name.endswith("_ptr") else "i32" for p in fn.params}

jobs = []
for fp, acc in (("fp32", tl.float32), ("fp64", tl.float64)):
    jobs.append((gk._gmm_prior_forward_kernel, fp, dict(STORE_GRAD=True, IS_FP64=fp == "fp64", BLOCK_B=16,
                                                         BLOCK_K=16, BLOCK_N=32)))
    jobs.append((gk._gmm_prior_backward_kernel, fp, dict(BLOCK_B=16, BLOCK_D=128)))
    for spin in (True, False):
        c = dict(PIXELS=spin, ROBUST=True, REDUCE_SUM=spin, HAS_CENTER=spin, ACC=acc, BLOCK_B=8, BLOCK_J=64)
        jobs += [(rk._reprojection_forward_kernel, fp, c), (rk._reprojection_backward_kernel, fp, c)]
shared = {}
for fn, fp, consts in jobs:
    k = triton.compile(ASTSource(fn, signature(fn, fp), consts), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4})
    flavor = {True: "-spin", False: "-mmhuman3d"}.get(consts.get("PIXELS"), "")
    shared[f"{fn.fn.__name__}-{fp}{flavor}"] = k.metadata.shared
print(json.dumps(shared))
"""


_COMPILE_SMPLIFY = r"""
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from spin_fast_kernels.smplify import function as F, kernel as K

ints = {"parents_ptr": "*i32", "fl_ptr": "*i32", "out_valid_ptr": "*u8", "pj_ptr": "*i64", "pb_ptr": "*i64",
        "jidx_ptr": "*i64", "aidx_ptr": "*i64", "torso_ptr": "*i64", "out_iters_ptr": "*i64"}
state, ws, scratch, wsc = F.layouts(10, 75, 20)
shared = {}
for fp in ("fp32", "fp64"):
    for fn in (K._smplify_stage1_kernel, K._smplify_stage2_kernel):
        for spin in (True, False):
            c = dict(WS=ws, WSC=wsc, **state, **scratch, ALL_JOINTS=not spin, UNITS=int(not spin), ROBUST=True,
                     DEPTH=spin, ANGLE_M1=not spin, FTOL_ROWS=not spin, BATCH_STOP=not spin, BLOCK_B=F.BLOCK_B,
                     BLOCK_P=F.BLOCK_P, BLOCK_KC=F.BLOCK_KC, BLOCK_JV=32, BLOCK_GK=F.BLOCK_GK, BLOCK_GN=F.BLOCK_GN,
                     BLOCK_N1=4 if spin else 64, PRECISION=F.PRECISION)
            sig = {p.name: "constexpr" if p.is_constexpr else ints.get(p.name, f"*{fp}") if p.name.endswith("_ptr")
                   else "i32" for p in fn.params}
            cst = {p.name: c[p.name] for p in fn.params if p.is_constexpr}
            k = triton.compile(ASTSource(fn, sig, cst), target=GPUTarget("cuda", 90, 32),
                               options={"num_warps": F.NUM_WARPS, "num_stages": F.NUM_STAGES})
            shared[f"{fn.fn.__name__}-{fp}-{'spin' if spin else 'mmhuman3d'}"] = k.metadata.shared
print(json.dumps(shared))
"""


def _check_smpl_ops(stdout):
    assert stdout.count("ok ") == 12, stdout  # the script asserts each kernel's shared memory fits


def _check_loss_ops(stdout):
    shared = json.loads(stdout.strip().splitlines()[-1])
    assert len(shared) == 12
    assert max(shared.values()) < 64 * 1024, shared


def _check_smplify(stdout):
    shared = json.loads(stdout.strip().splitlines()[-1])
    assert len(shared) == 8  # 2 kernels x fp32/fp64 x both flavors (the mmhuman3d row in batch-stop mode)
    assert max(shared.values()) < 64 * 1024, shared


@pytest.mark.parametrize("script,check", [
    pytest.param(_COMPILE_SMPL_OPS, _check_smpl_ops, marks=pytest.mark.slow, id="smpl_ops"),
    pytest.param(_COMPILE_LOSS_OPS, _check_loss_ops, id="loss_ops"),
    pytest.param(_COMPILE_SMPLIFY, _check_smplify, marks=pytest.mark.long, id="smplify")])
def test_kernels_compile_for_sm90_without_a_gpu(tmp_path, script, check):
    """The interpreter never compiles: every kernel goes through Triton's real GPU pipeline (TTIR ->
    PTX -> ptxas cubin for sm_90) with no driver, as a launch there would; catches constructs the
    interpreter accepts but the compiler does not. Shared memory must fit an SM (a whole 128 x 128
    fp64 precision tile once needed 313 kB). One script a test: the SMPL ops' 12 kernels, the
    losses' 12, the one-launch SMPLify's 8 (~20 s, ~10 s and a few minutes on a 2-core CPU)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPIN_FAST_BACKEND")}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    check(res.stdout)
