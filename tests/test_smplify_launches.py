"""How many GPU kernels a SMPLify fit launches, counted on the CPU.

With SPIN_FAST_BACKEND=triton under the Triton interpreter the fit takes its CUDA code path on CPU
tensors; `spin_fast_kernels.launch_count` counts its Triton launches and the torch ops that would
each launch a CUDA kernel. The fused fit (the default) launches the same number of kernels whatever
its iteration count, and at most 64 in all; the per-op path (`fused=False`) is counted beside it, its
cost per pair of stage-1 + stage-2 iterations printed.
"""
import pytest
import torch

from spin_fast.smplify import SMPLify
from spin_fast_kernels.launch_count import count_launches, require_interpreter
from test_smplify import assets, synthetic_batch  # noqa: F401  (module fixture and data of the CPU tests)

HAS_CUDA = torch.cuda.is_available()
MAX_LAUNCHES = 64
pytestmark = pytest.mark.skipif(HAS_CUDA, reason="counts launches under the Triton interpreter (no CUDA)")


def launches(assets, flavor, iters, fused):
    _, kp, start = synthetic_batch(assets, 5, seed=3, kp_noise=1.0, random_conf=True)
    fitter = SMPLify(assets["body"], gmm=assets["gmm"], flavor=flavor, stage1_iters=iters, stage2_iters=iters,
                     fused=fused)
    with count_launches() as n:
        out = fitter(*start, kp)
    assert bool(out.valid.all())
    return n


@pytest.mark.parametrize("flavor", ["spin", "mmhuman3d"])
def test_fused_fit_launches_a_fixed_small_number_of_kernels(assets, flavor, triton_backend):  # noqa: F811
    require_interpreter()
    one, three = (launches(assets, flavor, k, fused=True) for k in (1, 3))
    print(f"\n[{flavor}] fused fit: {one.total} launches at 1 + 1 iterations ({one.triton} Triton, {one.torch} torch), "
          f"{three.total} at 3 + 3 ({three.triton} Triton, {three.torch} torch), {three.syncs} host reads: "
          + ", ".join(f"{k} {v}" for k, v in three.by_op.most_common()))
    assert three.total == one.total, (one.by_op, three.by_op)
    assert three.total <= MAX_LAUNCHES, three.by_op.most_common()
    assert three.syncs == 0, three.by_op
    assert three.triton >= 1  # the counter sees the kernels (a counter that saw nothing would pass the rest)


def test_per_op_fit_launches_grow_with_the_iterations(assets, triton_backend):  # noqa: F811
    """The same counter on `fused=False`: about 165 launches a pair of stage-1 + stage-2 iterations."""
    require_interpreter()
    one, two = (launches(assets, "spin", k, fused=False) for k in (1, 2))
    per_pair = two.total - one.total
    print(f"\nper-op fit: {one.total} launches at 1 + 1 iterations, {two.total} at 2 + 2: {per_pair} a pair of "
          f"iterations ({two.triton - one.triton} Triton, {two.torch - one.torch} torch)")
    assert per_pair > 100 and two.triton - one.triton > 10
