"""Registers, spills and shared memory of the one-launch SMPLify kernels on an H100 / H200 (sm_90),
read with no GPU: each kernel goes through Triton's real pipeline to PTX, then the Triton wheel's own
ptxas runs on that PTX with -v. Prints one row a (kernel, dtype) at the launcher's block sizes.

    python benches/smplify_resources.py [--flavor spin|mmhuman3d]

Triton's dynamic shared memory (tl.dot / reduction staging) is its metadata's `shared`; ptxas' smem
is the static part (0 for Triton kernels)."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from spin_fast.recipes import CODEBASES  # noqa: E402
from spin_fast_kernels.smplify import function as F, kernel as K  # noqa: E402

INT_PTRS = {"parents_ptr": "*i32", "fl_ptr": "*i32", "pj_ptr": "*i64", "pb_ptr": "*i64", "jidx_ptr": "*i64",
            "aidx_ptr": "*i64", "torso_ptr": "*i64", "out_iters_ptr": "*i64", "out_valid_ptr": "*u8"}


def compile_kernel(fn, fp: str, constexprs: dict):
    sig = {}
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            sig[p.name] = INT_PTRS.get(p.name, f"*{fp}")
        else:
            sig[p.name] = "i32"
    cst = {p.name: constexprs[p.name] for p in fn.params if p.is_constexpr}
    return triton.compile(ASTSource(fn, sig, cst), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": F.NUM_WARPS, "num_stages": F.NUM_STAGES})


def kernel_constexprs(flavor: str, S: int = 10, P: int = 75, JV: int = 20) -> dict:
    state, ws, scratch, wsc = F.layouts(S, P, JV)
    spin = flavor == "spin"
    return dict(WS=ws, WSC=wsc, **state, **scratch, ALL_JOINTS=not spin, UNITS=0 if spin else 1, ROBUST=True,
                DEPTH=spin, ANGLE_M1=not spin, FTOL_ROWS=not spin, BATCH_STOP=False, BLOCK_B=F.BLOCK_B,
                BLOCK_P=F.BLOCK_P, BLOCK_KC=F.BLOCK_KC, BLOCK_JV=max(16, triton.next_power_of_2(JV)),
                BLOCK_GK=F.BLOCK_GK, BLOCK_GN=F.BLOCK_GN, BLOCK_N1=4 if spin else 64, PRECISION=F.PRECISION)


def ptxas_report(ptx: str) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(90).path  # the wheel's ptxas Triton itself runs for sm_90
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        res = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", src, "-o", os.path.join(d, "k.cubin")],
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed: {res.stderr[-2000:]}")
    text = res.stdout + res.stderr
    num = lambda pat: int(m.group(1)) if (m := re.search(pat, text)) else 0  # noqa: E731
    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "stack": num(r"(\d+) bytes stack frame"),
            "smem": num(r"(\d+) bytes smem")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flavor", default="spin", choices=CODEBASES)
    args = ap.parse_args()
    cst = kernel_constexprs(args.flavor)
    print(f"sm_90, {F.NUM_WARPS} warps, BLOCK_B={F.BLOCK_B} BLOCK_P={F.BLOCK_P} BLOCK_KC={F.BLOCK_KC} "
          f"GMM {F.BLOCK_GK}x{F.BLOCK_GN}, flavor {args.flavor}")
    print(f"{'kernel':<24}{'dtype':<7}{'regs':>6}{'spill st':>10}{'spill ld':>10}{'stack':>8}{'smem':>7}"
          f"{'triton shared':>15}")
    for fn in (K._smplify_stage1_kernel, K._smplify_stage2_kernel):
        for fp in ("fp32", "fp64"):
            k = compile_kernel(fn, fp, cst)
            r = ptxas_report(k.asm["ptx"])
            print(f"{fn.fn.__name__.strip('_'):<24}{fp:<7}{r['registers']:>6}{r['spill_stores']:>10}"
                  f"{r['spill_loads']:>10}{r['stack']:>8}{r['smem']:>7}{k.metadata.shared:>15}")


if __name__ == "__main__":
    main()
