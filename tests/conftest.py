"""Test set-up shared by every test module.

On a machine without CUDA the Triton kernels run under the interpreter, which must be switched on
before any `@triton.jit` function is defined, i.e. before spin_fast_kernels is imported.
"""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a keyword (a folder may be named gpu)
            item.add_marker(skip_gpu)


@pytest.fixture
def triton_backend(monkeypatch):
    """Force the Triton path (the interpreter on CPU tensors, compiled kernels on CUDA ones)."""
    monkeypatch.setenv("SPIN_FAST_BACKEND", "triton")


@pytest.fixture(scope="session")
def synthetic_assets(tmp_path_factory):
    """A freshly generated synthetic SMPL stand-in (mmhuman3d layout) shared by the session."""
    from spin_fast.assets import write_assets
    from spin_fast.config import AssetPaths

    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_assets(root, seed=0)
    return AssetPaths(root)
