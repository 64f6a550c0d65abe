"""SMPLify on a GPU: the one-launch fit (a Triton kernel a stage) against the per-op path replayed
from CUDA graphs, 100 + 100 iterations, batches of 64, 512 and 4096.

Group `smplify-kernel-B<batch>`: rows `per_op_ref` (`SMPLify(fused=False)`: the fused ops glued by
autograd, one iteration of each stage captured in a CUDA graph and replayed) and `kernel`
(`SMPLify()`: the whole fit in two Triton launches). Same synthetic batch, same start; before timing,
the two fits must agree (the same samples valid, stage-2 losses within 1e-3 relative). CUDA only:
on a CPU the fused path is the hand-derived torch fit, measured by test_bench_smplify.py.
"""
import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast.smplify import SMPLify

from conftest import requires_cuda
from test_bench_smplify import fit_problem

ITERS = 100
BATCHES = (64, 512, 4096)


@pytest.fixture(scope="module")
def model(synthetic_assets):
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    body = BodyModel(smpl, load_regressor(synthetic_assets.j_regressor_extra)).cuda()
    return body, load_gmm(synthetic_assets.gmm)


@requires_cuda
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("impl", ["per_op_ref", "kernel"])
def test_smplify_kernel(benchmark, model, impl, B):
    body, gmm = model
    args = fit_problem(body, B, torch.device("cuda"), seed=B)
    fitters = {name: SMPLify(body, gmm=gmm, stage1_iters=ITERS, stage2_iters=ITERS, fused=name == "kernel")
               for name in ("per_op_ref", "kernel")}
    ref, ours = (fitters[name](*args) for name in ("per_op_ref", "kernel"))  # also the warm-up
    assert torch.equal(ref.valid, ours.valid)
    torch.testing.assert_close(ours.total_loss[ours.valid], ref.total_loss[ref.valid], rtol=1e-3, atol=0)

    fitter = fitters[impl]

    def fit():
        out = fitter(*args)
        torch.cuda.synchronize()
        return out

    benchmark.group = f"smplify-kernel-B{B}"
    benchmark.extra_info.update(op="smplify", batch=B, iterations=2 * ITERS, impl=impl, device="cuda")
    out = benchmark.pedantic(fit, warmup_rounds=1, rounds=3, iterations=1)
    benchmark.extra_info["mean_total_loss"] = float(out.total_loss.mean())
