"""Loader throughput: the reference (torch DataLoader + PIL, `threads` worker processes) vs DALI on
CPU (`threads` DALI threads) vs `auto` vs, on a GPU, DALI and the torchvision loader (nvJPEG decode
+ the crop in torch on the device), on the same synthetic files with the same plans.

Group `loader`: rows `reference_dataloader`, `dali_cpu`, `auto` (the backend `data.loader auto`
picks on this machine's device, named in extra_info['backend']; on CPU it must be at least as fast
as the reference), and on CUDA only `dali_gpu` (where DALI is installed) and `torchvision_gpu`
(where torchvision imports). Each round pulls ROUND_BATCHES training batches of BATCH from a
warmed-up iterator; extra_info['images_per_s']. On CUDA the round ends with a synchronize, so the
rows time finished batches.
"""
import pytest
import torch

from conftest import HAS_CUDA, requires_cuda
from spin_fast.data import backend_status, build_train_loader
from spin_fast.data.synth import write_synthetic_datasets

BATCH = 32
THREADS = 2
ROUND_BATCHES = 4
ROUNDS = 5
MIX = {"h36m": 0.35, "mpi_inf_3dhp": 0.15, "lsp": 0.10, "lspet": 0.10, "mpii": 0.10, "coco": 0.20}


@pytest.fixture(scope="module")
def synth_root(synthetic_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_bench") / "data"
    return write_synthetic_datasets(root, assets=synthetic_assets.root, scale=1,
                                    names=tuple(MIX))


def _bench(benchmark, root, backend, device=None):
    loader = build_train_loader(root, MIX, batch_size=BATCH, backend=backend, threads=THREADS, seed=0, device=device)
    it = loader.iter_from(0)
    for _ in range(2):  # warm up: worker start, pipeline build, nvJPEG handles
        next(it)
    cuda = device is not None and torch.device(device).type == "cuda"

    def pull():
        n = 0
        for _ in range(ROUND_BATCHES):
            n += next(it)["img"].shape[0]
        if cuda:
            torch.cuda.synchronize()
        return n

    n = benchmark.pedantic(pull, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean
    benchmark.extra_info["threads"] = THREADS
    benchmark.extra_info["backend"] = loader.backend


@pytest.mark.parametrize("case", ["reference_dataloader", "dali_cpu"])
def test_loader(benchmark, synth_root, case):
    benchmark.group = "loader"
    _bench(benchmark, synth_root, "reference" if case == "reference_dataloader" else "dali")


def test_loader_auto(benchmark, synth_root):
    """What `data.loader auto` gives on this machine's training device."""
    benchmark.group = "loader"
    _bench(benchmark, synth_root, "auto", device="cuda" if HAS_CUDA else None)


@requires_cuda
@pytest.mark.parametrize("case", ["dali_gpu", "torchvision_gpu"])
def test_loader_gpu(benchmark, synth_root, case):
    backend = case.split("_")[0]
    why = backend_status(backend)
    if why is not None:
        pytest.skip(why)
    benchmark.group = "loader"
    _bench(benchmark, synth_root, backend, device="cuda")
