"""Benchmarks: `pytest benches --benchmark-only`. Triton rows need CUDA and are skipped on CPU.

Each benchmark puts the reference and ours in one `group` so pytest-benchmark's table shows them
side by side; `benches/ratio.py` turns saved JSON into the ratio table of benches/RESULTS.md.
"""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="Triton rows need a CUDA GPU")


@pytest.fixture(scope="session")
def synthetic_assets(tmp_path_factory):
    from spin_fast.assets import write_assets
    from spin_fast.config import AssetPaths

    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_assets(root, seed=0)
    return AssetPaths(root)


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if HAS_CUDA else "cpu")
