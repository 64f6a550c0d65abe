"""What the SMPLify-loss benchmarks (benches/test_bench_gmm_prior.py, test_bench_reprojection.py) share:
the rows (`torch_fwd`, `torch_fwd_bwd`: the reference `*_torch`; `triton_fwd`, `triton_fwd_bwd`: the
public op on CUDA tensors, which dispatches to Triton, skipped without a GPU) and the timed step."""
import pytest
import torch

from conftest import requires_cuda  # benches/conftest.py (benches/ is on sys.path: no __init__.py)

BATCHES = [64, 1024]
IMPLS = [
    pytest.param("torch_fwd"),
    pytest.param("torch_fwd_bwd"),
    pytest.param("triton_fwd", marks=requires_cuda),
    pytest.param("triton_fwd_bwd", marks=requires_cuda),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(benchmark, device, op, B, impl, fn, leaves):
    """Times fn() (no grad) or fn().sum().backward() over the given leaf tensors."""
    bwd = impl.endswith("bwd")

    def step():
        if bwd:
            for x in leaves:
                x.grad = None
            fn().sum().backward()
        else:
            with torch.no_grad():
                fn()
        _sync(device)

    benchmark.group = f"{op}-B{B}"
    benchmark.extra_info.update(op=op, batch=B, impl=impl, device=str(device))
    benchmark.pedantic(step, warmup_rounds=3, rounds=20, iterations=5)
