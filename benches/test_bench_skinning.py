"""skinning op, forward + backward: torch reference vs our Triton kernel and smplx's whole model.

Groups `skinning-B{64,1024}`. Rows: `torch` (the op's reference in spin_fast_kernels, on the benchmark
device), `triton` (ours; CUDA only, skipped on CPU) and `smplx` (smplx.SMPL's full forward+backward
from (betas, body_pose, global_orient) to the vertices: what the op replaces). Step and model:
benches/smpl_ops.py.
"""
import pytest

from smpl_ops import BATCHES, bench_smpl_op, body, cases, smpl  # noqa: F401  (fixtures)


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("op,impl", cases(("skinning",), ("smplx", "torch", "triton")))
def test_smpl_op(benchmark, smpl, body, device, op, impl, B):  # noqa: F811
    bench_smpl_op(benchmark, smpl, body, device, op, impl, B)
