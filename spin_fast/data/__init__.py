"""Data: HumanData files, mixed sampling, augmentation, and three loaders that give the same batches.

Modules: `humandata` (mmhuman3d .npz reader/writer), `datasets` (registry: files and mix ratios),
`sampler` (fixed-ratio mixed sampling, sharded by rank), `augment` (SPIN's augmentation and the crop
affine), `batch` (per-step plans, labels, image checks), `dali_loader` (NVIDIA DALI, GPU or CPU
operators), `torchvision_loader` (torchvision's nvJPEG decode + the crop in torch on the device),
`reference_loader` (torch DataLoader + PIL), `synth` (rendered synthetic datasets), `check`
(validate a data root). CLI: `python -m spin_fast.data {check,synth} ...`.

Backends (`data.loader`): `dali`, `torchvision`, `reference`, or `auto`:
    CUDA device: DALI where it imports, else torchvision where it imports, else the reference;
    CPU device:  the reference (the loader benchmark has DALI's CPU operators no faster on CPU:
                 0.83x and 0.98x of the reference in benches/RESULTS.md).
`auto` never picks a backend that cannot be imported; naming one is a `BackendUnavailable` error
that says why.

The batch (one dict, the same from every loader; B = this rank's batch size):

| key           | shape, dtype           | meaning                                                        |
|---------------|------------------------|----------------------------------------------------------------|
| img           | (B, 3, 224, 224) f32   | RGB crop, noise applied, (x - ImageNet mean) / std             |
| keypoints2d   | (B, 49, 3) f32         | SPIN joints in crop pixels (x, y, conf), flip-permuted         |
| keypoints3d   | (B, 49, 4) f32         | metres (x, y, z, conf), rotated about camera z, flipped        |
| pose          | (B, 72) f32            | SMPL axis-angle (global orient rotated, flip_pose'd)           |
| betas         | (B, 10) f32            | SMPL shape                                                     |
| has_smpl      | (B,) bool              | pose / betas are ground truth                                  |
| gender        | (B,) int64             | 0 male, 1 female, -1 unknown / neutral                         |
| dataset_id    | (B,) int64             | position in `loader.dataset_names`                             |
| sample_index  | (B,) int64             | index inside its dataset (keys the fits table)                 |
| flip          | (B,) bool              | mirrored                                                       |
| rot_deg       | (B,) f32               | rotation before the flip, counter-clockwise (augment.py)       |
| scale         | (B,) f32               | crop side multiplier (1 at test time)                          |
| noise         | (B, 3) f32             | per-channel pixel multipliers                                  |
| center        | (B, 2) f32             | bbox centre, image pixels                                      |
| bbox_side     | (B,) f32               | max(w, h) of the bbox, image pixels                            |
| crop_matrix   | (B, 2, 3) f32          | image pixels -> crop pixels (the warp actually applied)        |
| image_path    | list of B str          | the image files                                                |

Tensors are on the loader's `device`. With `skip_bad_images` a batch may be shorter than B.
"""
from __future__ import annotations

from spin_fast.errors import SpinFastError
from spin_fast.recipes import DEFAULT_CODEBASE, Codebase, DataRecipe

BACKENDS = ("auto", "dali", "torchvision", "reference")


class BackendUnavailable(SpinFastError, RuntimeError):
    """The loader backend asked for by name cannot be imported here (the message says why)."""


def backend_status(backend: str) -> str | None:
    """None when `backend` can be built here, else why not (one line)."""
    if backend == "dali":
        from spin_fast.data.dali_loader import dali_available

        return None if dali_available() else "nvidia-dali is not installed (pip install spin_fast[dali])"
    if backend == "torchvision":
        from spin_fast.data.torchvision_loader import torchvision_status

        return torchvision_status()
    if backend == "reference":
        return None
    raise ValueError(f"loader backend must be one of {BACKENDS}, got {backend!r}")


def choose_backend(backend: str, device=None) -> str:
    """The concrete backend for `backend` (auto resolved as the module docstring says) on `device`."""
    import torch

    if backend not in BACKENDS:
        raise ValueError(f"loader backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        why = backend_status(backend)
        if why is not None:
            raise BackendUnavailable(f"data.loader {backend}: {why}")
        return backend
    if device is not None and torch.device(device).type == "cuda":
        for candidate in ("dali", "torchvision"):
            if backend_status(candidate) is None:
                return candidate
    return "reference"


class Loader:
    """A training or evaluation loader: `iter_from(step)` yields batch dicts (see module docstring)."""

    def __init__(self, sources, impl, sampler=None):
        self.sources, self.impl, self.sampler = sources, impl, sampler
        self.dataset_names = sources.names
        self.dataset_sizes = sources.sizes
        self.backend = impl.backend

    @property
    def skipped(self) -> list[str]:
        return self.impl.skipped

    def iter_from(self, step: int = 0):
        return self.impl.iter_from(step)

    def __iter__(self):
        return self.iter_from(0)


def _impl(backend, sources, planner, batch_size, threads, skip_bad_images, device, num_steps, seed):
    backend = choose_backend(backend, device)
    if backend == "dali":
        from spin_fast.data.dali_loader import DaliLoader

        return DaliLoader(sources, planner, batch_size, threads=threads, skip_bad_images=skip_bad_images,
                          device=device, num_steps=num_steps, seed=seed)
    if backend == "torchvision":
        from spin_fast.data.torchvision_loader import TorchvisionLoader

        return TorchvisionLoader(sources, planner, skip_bad_images=skip_bad_images, device=device,
                                 num_steps=num_steps)
    from spin_fast.data.reference_loader import ReferenceLoader

    return ReferenceLoader(sources, planner, threads=threads, skip_bad_images=skip_bad_images, device=device,
                           num_steps=num_steps)


def build_train_loader(paths, mix: dict[str, float] | Codebase, batch_size: int, backend: str = "auto", threads: int = 2,
                       seed: int = 0, rank: int = 0, world_size: int = 1, rot_prob: float = 0.6,
                       flip_prob: float = 0.5, skip_bad_images: bool = False, device=None,
                       geometry: Codebase = DEFAULT_CODEBASE) -> Loader:
    """Endless training batches of the datasets in `mix` (name -> ratio, zero ratios dropped; or a mix
    preset of `datasets.mix_ratios`, a `Codebase`, over every training dataset), from
    the data root `paths` (AssetPaths), sharded for (rank, world_size), deterministic from seed;
    `geometry` (a `Codebase`) is whose crop and flip/rotate order (`augment` docstring)."""
    from spin_fast.data.batch import Sources, TrainPlanner
    from spin_fast.data.sampler import MixedSampler

    if isinstance(mix, str):
        from spin_fast.data.datasets import TRAIN_DATASETS, mix_ratios

        sizes = Sources.from_registry(paths, TRAIN_DATASETS).sizes
        mix = dict(zip(TRAIN_DATASETS, mix_ratios(mix, TRAIN_DATASETS, sizes)))
    names = [n for n, r in mix.items() if r > 0]
    if not names:
        raise ValueError(f"data.mix gives no dataset a positive ratio: {mix}")
    sources = Sources.from_registry(paths, names)
    for data in sources.data:  # before any step: a dataset without 2D keypoints would train on infinite fits
        data.require_training_labels()
    sampler = MixedSampler(sources.sizes, [mix[n] for n in names], batch_size, seed=seed, rank=rank,
                           world_size=world_size)
    planner = TrainPlanner(sources, sampler, rot_prob, geometry, flip_prob)
    return Loader(sources, _impl(backend, sources, planner, batch_size, threads, skip_bad_images, device, None, seed),
                  sampler)


def train_loader_from_recipe(paths, data: DataRecipe, mix: dict[str, float] | None = None, **options) -> Loader:
    """Training batches as a data recipe (spin_fast.recipes.DataRecipe) says: its crop geometry, rot_prob,
    flip_prob, batch size and mix (`mix`: explicit ratios instead); `options` are build_train_loader's others
    (backend, threads, seed, rank, world_size, skip_bad_images, device)."""
    return build_train_loader(paths, data.mix if mix is None else mix, data.batch_size, rot_prob=data.rot_prob,
                              flip_prob=data.flip_prob, geometry=data.geometry, **options)


def build_eval_loader(paths, name: str = "pw3d", batch_size: int = 32, backend: str = "auto", threads: int = 2,
                      device=None) -> Loader:
    """The test set `name` in order, without augmentation (last batch may be short); its file must hold
    what the test set is scored on (`check.check_test_labels`)."""
    from spin_fast.data.batch import EvalPlanner, Sources
    from spin_fast.data.check import check_test_labels

    sources = Sources.from_registry(paths, [name])
    check_test_labels(sources.data[0], name)
    planner = EvalPlanner(sources, batch_size)
    return Loader(sources, _impl(backend, sources, planner, batch_size, threads, False, device,
                                 planner.num_steps(), 0))
