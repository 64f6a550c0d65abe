"""Test set-up shared by every test module.

On a machine without CUDA the Triton kernels run under the interpreter, which must be switched on
before any `@triton.jit` function is defined, i.e. before spin_fast_kernels is imported.

The suite runs in parallel processes (`-n auto`, pytest-xdist): one a CPU core this process may run
on, at most one per 2 GB of memory (the largest process of a run peaks near 1.9 GB); each gets its
share of the cores as torch threads (and as OMP_NUM_THREADS for the commands it starts), since more
threads than cores make CPU torch several times slower.
"""
import os


def _cores() -> int:
    """CPU cores this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores() // _workers)))

import torch  # noqa: E402

if _workers > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: the usable cores, fewer where memory would not hold that many workers."""
    try:
        memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = float("inf")
    return max(1, min(_cores(), int(memory_gb // 2)))


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="also run the tests marked long (minutes each under the Triton interpreter)")


def pytest_collection_modifyitems(config, items):
    # The long tests first (a stable sort): in parallel runs they then overlap with each other and with
    # the short ones instead of finishing alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if not (config.getoption("--long") or "long" in (config.option.markexpr or "")):
        skip_long = pytest.mark.skip(reason="long (minutes under the Triton interpreter): run with --long")
        for item in items:
            if item.get_closest_marker("long") is not None:
                item.add_marker(skip_long)
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a keyword (a folder may be named gpu)
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): SMPLify runs
    hundreds of tiny ops an iteration, and on a shared 2-core machine a second thread only spins."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture(scope="session")
def synthetic_data(synthetic_assets, tmp_path_factory):
    """synthetic_data(per_dataset=None, names=all) -> AssetPaths of a data root holding the session's
    stand-in body model files (linked) and the synthetic datasets rendered from them: per_dataset
    samples a dataset (None: the default size, as `ensure_synthetic_dataset(root, scale=1)` writes
    it). Each distinct content is rendered once a session and shared: treat it as read-only."""
    from spin_fast.config import AssetPaths
    from spin_fast.data.datasets import TEST_DATASETS, TRAIN_DATASETS
    from spin_fast.data.synth import write_synthetic_datasets

    built = {}

    def build(per_dataset: int | None = None, names=TRAIN_DATASETS + TEST_DATASETS) -> AssetPaths:
        key = (per_dataset, tuple(names))
        if key not in built:
            root = tmp_path_factory.mktemp("synthetic_data") / "data"
            root.mkdir()
            for name in ("body_models", synthetic_assets.gmm.name):
                (root / name).symlink_to(synthetic_assets.root / name)
            built[key] = write_synthetic_datasets(root, per_dataset=per_dataset, names=tuple(names))
        return built[key]

    return build
