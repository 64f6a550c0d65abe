"""Dataset registry: which HumanData file, image folder and static fits each SPIN dataset uses.

Paths follow the mmhuman3d layout under a data root (see `spin_fast.config.AssetPaths`):

    preprocessed_datasets/<ann_file>.npz      HumanData annotations (test sets: spin_pw3d_test,
                                              h36m_valid_protocol{1,2}, mpi_inf_3dhp_test)
    datasets/<image_folder>/<image_path>      images (image_path as stored in the npz)
    static_fits/<fits>_fits.npy               (N, 82) SMPLify fits, same order as the npz

Mix ratios (fraction of each training batch drawn from each dataset):

| dataset       | mmhuman3d | SPIN original            |
|---------------|-----------|--------------------------|
| h36m          | 0.35      | 0.30                     |
| mpi_inf_3dhp  | 0.15      | 0.10                     |
| lsp           | 0.10      | 0.60 * size / in-the-wild |
| lspet         | 0.10      | 0.60 * size / in-the-wild |
| mpii          | 0.10      | 0.60 * size / in-the-wild |
| coco          | 0.20      | 0.60 * size / in-the-wild |

("in-the-wild" = the summed sizes of lsp, lspet, mpii and coco.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from spin_fast.config import AssetPaths
from spin_fast.constants import MMHUMAN3D_MIX, SPIN_MIX_FIXED, SPIN_MIX_IN_THE_WILD, SPIN_MIX_IN_THE_WILD_SHARE
from spin_fast.errors import SpinFastError
from spin_fast.recipes import CODEBASES, DEFAULT_CODEBASE, Codebase


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the registry.

    name:         short name used in configs and for the mix ('h36m').
    ann_file:     HumanData file stem under preprocessed_datasets/ ('h36m_mosh_train').
    image_folder: folder under datasets/ that image paths are relative to ('h36m').
    fits:         static fits stem under static_fits/ ('h36m'), None for test sets.
    split:        'train' or 'test'.
    protocol:     test sets: how `spin_fast.evaluate` scores them (`PROTOCOLS`).
    """

    name: str
    ann_file: str
    image_folder: str
    fits: str | None
    split: str
    protocol: str | None = None

    def npz_path(self, paths: AssetPaths):
        return paths.preprocessed(self.ann_file)

    def image_root(self, paths: AssetPaths):
        return paths.images(self.image_folder)

    def fits_path(self, paths: AssetPaths):
        return None if self.fits is None else paths.static_fits(self.fits)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in [
        DatasetSpec("h36m", "h36m_mosh_train", "h36m", "h36m", "train"),
        DatasetSpec("mpi_inf_3dhp", "spin_mpi_inf_3dhp_train", "mpi_inf_3dhp", "mpi_inf_3dhp", "train"),
        DatasetSpec("lsp", "spin_lsp_train", "lsp", "lsp", "train"),
        DatasetSpec("lspet", "spin_lspet_train", "lspet", "lspet", "train"),
        DatasetSpec("mpii", "spin_mpii_train", "mpii", "mpii", "train"),
        DatasetSpec("coco", "spin_coco_2014_train", "coco", "coco", "train"),
        DatasetSpec("pw3d", "spin_pw3d_test", "pw3d", None, "test", "pw3d"),
        DatasetSpec("h36m-p1", "h36m_valid_protocol1", "h36m", None, "test", "h36m"),
        DatasetSpec("h36m-p2", "h36m_valid_protocol2", "h36m", None, "test", "h36m"),
        DatasetSpec("mpi-inf-3dhp", "mpi_inf_3dhp_test", "mpi_inf_3dhp", None, "test", "mpi_inf_3dhp"),
    ]
}
TRAIN_DATASETS: tuple[str, ...] = ("h36m", "mpi_inf_3dhp", "lsp", "lspet", "mpii", "coco")
TEST_DATASETS: tuple[str, ...] = ("pw3d", "h36m-p1", "h36m-p2", "mpi-inf-3dhp")

# How each test set is scored (SPIN eval.py, mmhuman3d core/evaluation/eval_utils.py):
#   pw3d          ground truth = the gendered SMPL mesh of `smpl` (+ meta.gender); 14 joints; MPJPE, PA-MPJPE, PVE
#   h36m          ground truth = `keypoints3d` (no SMPL in the file); 14 joints; MPJPE, PA-MPJPE
#   mpi_inf_3dhp  ground truth = `keypoints3d`; 17 joints; MPJPE, PA-MPJPE, 3D PCK / AUC and their PA variants
# Human3.6M protocol 1 and 2 are two files of the same subjects (S9, S11, every 5th frame): all four
# cameras (p1), the frontal camera 60457274 alone (p2) (mmhuman3d H36mConverter `protocol`; SPIN's
# datasets/preprocess/h36m.py).
PROTOCOLS: tuple[str, ...] = ("pw3d", "h36m", "mpi_inf_3dhp")

MIX_PRESETS = CODEBASES  # whose dataset ratios (spin_fast.recipes)


class UnknownDataset(SpinFastError, KeyError):
    """A dataset name that is not in the registry."""


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDataset(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def mix_ratios(preset: Codebase = DEFAULT_CODEBASE, names: Sequence[str] = TRAIN_DATASETS,
               sizes: Sequence[int] | None = None) -> list[float]:
    """Sampling ratios of `names` (in that order) for a mix preset, normalised to sum to 1.

    The 'spin' preset splits 0.6 over lsp/lspet/mpii/coco by dataset size, so it needs `sizes`
    (same order as `names`). Datasets dropped from `names` drop out and the rest is renormalised.
    """
    names = list(names)
    for n in names:
        get_dataset(n)
    if preset == "mmhuman3d":
        raw = [MMHUMAN3D_MIX.get(n, 0.0) for n in names]
    elif preset == "spin":
        if sizes is None or len(sizes) != len(names):
            raise ValueError("the 'spin' mix preset needs one size a dataset (sizes=...)")
        wild = sum(s for n, s in zip(names, sizes) if n in SPIN_MIX_IN_THE_WILD)
        raw = [SPIN_MIX_FIXED[n] if n in SPIN_MIX_FIXED
               else (SPIN_MIX_IN_THE_WILD_SHARE * s / wild if n in SPIN_MIX_IN_THE_WILD and wild > 0 else 0.0)
               for n, s in zip(names, sizes)]
    else:
        raise ValueError(f"unknown mix preset {preset!r}; known: {MIX_PRESETS}")
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"mix preset {preset!r} gives no weight to any of {names}")
    return [r / total for r in raw]
