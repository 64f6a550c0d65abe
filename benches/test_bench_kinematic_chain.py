"""kinematic_chain op, forward + backward: torch reference vs our Triton kernel.

Groups `<op>-B{64,1024}` for op in rodrigues, kinematic_chain, rodrigues_chain (the two fused). Rows:
`torch` (the op's reference in spin_fast_kernels, on the benchmark device) and `triton` (ours; CUDA
only, skipped on CPU). Step and model: benches/smpl_ops.py.
"""
import pytest

from smpl_ops import BATCHES, bench_smpl_op, body, cases, smpl  # noqa: F401  (fixtures)


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("op,impl", cases(("rodrigues", "kinematic_chain", "rodrigues_chain"), ("torch", "triton")))
def test_smpl_op(benchmark, smpl, body, device, op, impl, B):  # noqa: F811
    bench_smpl_op(benchmark, smpl, body, device, op, impl, B)
