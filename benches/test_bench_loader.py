"""Loader throughput: the reference (torch DataLoader + PIL, `threads` worker processes) vs DALI on
CPU (`threads` DALI threads) vs DALI on the GPU, on the same synthetic files with the same plans.

Group `loader`: rows `reference_dataloader`, `dali_cpu`, `dali_gpu` (CUDA only); each round pulls
ROUND_BATCHES training batches of BATCH from a warmed-up iterator; extra_info['images_per_s'].
"""
import pytest

from conftest import requires_cuda
from spin_fast.data import build_train_loader
from spin_fast.data.synth import write_synthetic_datasets

BATCH = 32
THREADS = 2
ROUND_BATCHES = 4
MIX = {"h36m": 0.35, "mpi_inf_3dhp": 0.15, "lsp": 0.10, "lspet": 0.10, "mpii": 0.10, "coco": 0.20}


@pytest.fixture(scope="module")
def synth_root(synthetic_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_bench") / "data"
    return write_synthetic_datasets(root, assets=synthetic_assets.root, scale=1,
                                    names=tuple(MIX))


def _bench(benchmark, root, backend, device=None):
    loader = build_train_loader(root, MIX, batch_size=BATCH, backend=backend, threads=THREADS, seed=0, device=device)
    it = loader.iter_from(0)
    for _ in range(2):  # warm up: worker start, pipeline build
        next(it)

    def pull():
        n = 0
        for _ in range(ROUND_BATCHES):
            n += next(it)["img"].shape[0]
        return n

    n = benchmark.pedantic(pull, rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean
    benchmark.extra_info["threads"] = THREADS


@pytest.mark.parametrize("case", ["reference_dataloader", "dali_cpu"])
def test_loader(benchmark, synth_root, case):
    benchmark.group = "loader"
    _bench(benchmark, synth_root, "reference" if case == "reference_dataloader" else "dali")


@requires_cuda
def test_loader_dali_gpu(benchmark, synth_root):
    benchmark.group = "loader"
    _bench(benchmark, synth_root, "dali", device="cuda")
