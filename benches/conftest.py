"""Benchmarks: `pytest benches --benchmark-only`. Triton rows need CUDA and are skipped on CPU.

Each benchmark puts the reference and ours in one `group` so pytest-benchmark's table shows them
side by side; `benches/ratio.py` turns saved JSON into the ratio table of benches/RESULTS.md.
"""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="Triton rows need a CUDA GPU")


FIRST = ("test_bench_smplify_kernel.py",)  # run before the rest: what a short GPU budget must not skip


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in FIRST)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def synthetic_assets(tmp_path_factory):
    from spin_fast.assets import write_assets
    from spin_fast.config import AssetPaths

    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_assets(root, seed=0)
    return AssetPaths(root)


@pytest.fixture(scope="module")
def one_cpu_thread():
    """torch.set_num_threads(1) on a CPU-only machine for a module (restored after it); yields the
    thread count the module runs with. On a 2-core CPU torch's default 2 threads make many tiny ops
    much slower, and a loader's workers need the second core."""
    before = torch.get_num_threads()
    if not HAS_CUDA:
        torch.set_num_threads(1)
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if HAS_CUDA else "cpu")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Name the GPU (and the versions that decide the timings) in every saved JSON's machine_info:
    `gpu` is torch's device name, or None on a CPU-only machine (benches/ratio.py reads it)."""
    import importlib.metadata as md

    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    machine_info["gpu"] = torch.cuda.get_device_name(0) if cuda else None
    machine_info["gpu_count"] = torch.cuda.device_count() if cuda else 0
    machine_info["cuda_runtime"] = torch.version.cuda
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = version("triton")
    machine_info["nvidia_dali"] = version("nvidia-dali-cuda120")
    machine_info["torch_threads"] = torch.get_num_threads()
