"""The one place for environment variables, asset locations and device choice.

Environment variables (also listed in README.md):

| variable              | default                 | meaning                                                      |
|-----------------------|-------------------------|--------------------------------------------------------------|
| SPIN_FAST_BACKEND     | auto                    | kernels: `auto` (Triton on CUDA tensors, torch otherwise),   |
|                       |                         | `torch` (always the reference), `triton` (always Triton)     |
| SPIN_FAST_DATA_ROOT   | (unset)                 | mmhuman3d-layout data root; unset = synthetic stand-in       |
| SPIN_FAST_CACHE       | ~/.cache/spin_fast      | where the synthetic stand-in is generated on first use       |
| TRITON_INTERPRET      | (unset)                 | Triton's own: `1` runs kernels on the CPU (tests); must be   |
|                       |                         | set before spin_fast_kernels is imported                     |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_BACKEND = "SPIN_FAST_BACKEND"
ENV_DATA_ROOT = "SPIN_FAST_DATA_ROOT"
ENV_CACHE = "SPIN_FAST_CACHE"
ENV_TRITON_INTERPRET = "TRITON_INTERPRET"
KERNEL_BACKENDS = ("auto", "torch", "triton")

GENDERS = ("neutral", "male", "female")


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE, Path.home() / ".cache" / "spin_fast")).expanduser()


@dataclass(frozen=True)
class AssetPaths:
    """Files of the mmhuman3d layout under one data root (the folder holding `body_models/`)."""

    root: Path

    @property
    def gmm(self) -> Path:
        return self.root / "gmm_08.pkl"

    def smpl(self, gender: str = "neutral") -> Path:
        if gender not in GENDERS:
            raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
        return self.root / "body_models" / "smpl" / f"SMPL_{gender.upper()}.pkl"

    @property
    def j_regressor_extra(self) -> Path:
        return self.root / "body_models" / "J_regressor_extra.npy"

    @property
    def j_regressor_h36m(self) -> Path:
        return self.root / "body_models" / "J_regressor_h36m.npy"

    @property
    def mean_params(self) -> Path:
        return self.root / "body_models" / "smpl_mean_params.npz"

    @property
    def pretrained(self) -> Path:
        return self.root / "pretrained" / "spin_pretrain.pth"

    def preprocessed(self, name: str) -> Path:
        """HumanData file, e.g. name='spin_pw3d_test'."""
        return self.root / "preprocessed_datasets" / f"{name}.npz"

    def static_fits(self, name: str) -> Path:
        """Static fits, e.g. name='coco' -> static_fits/coco_fits.npy."""
        return self.root / "static_fits" / f"{name}_fits.npy"

    def images(self, name: str) -> Path:
        return self.root / "datasets" / name

    def body_model_files(self) -> list[Path]:
        return [self.smpl(g) for g in GENDERS] + [self.j_regressor_extra, self.j_regressor_h36m,
                                                    self.mean_params, self.gmm]

    def check_body_model_files(self) -> None:
        missing = [str(p) for p in self.body_model_files() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                "missing SMPL asset file(s) under data root "
                f"{self.root}:\n  " + "\n  ".join(missing)
                + "\nExpected the mmhuman3d layout (see README 'Real SMPL files')."
            )


def synthetic_root() -> Path:
    return cache_dir() / "synthetic" / "data"


def env_data_root() -> str | None:
    """$SPIN_FAST_DATA_ROOT, None when unset or empty."""
    return os.environ.get(ENV_DATA_ROOT) or None


def configured_data_root(data_root: str | os.PathLike | None = None) -> AssetPaths | None:
    """The asset paths of `data_root`, else of $SPIN_FAST_DATA_ROOT, checked; None when neither is set
    (then the synthetic stand-in is used: `spin_fast.assets.resolve_data_root`).

    A root may be the mmhuman3d `data/` folder itself or its parent."""
    root = data_root if data_root is not None else env_data_root()
    if root is None:
        return None
    source = "" if data_root is not None else f" (from ${ENV_DATA_ROOT})"
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root}{source} does not exist or is not a folder")
    if (root / "data" / "body_models").is_dir() and not (root / "body_models").is_dir():
        root = root / "data"
    paths = AssetPaths(root)
    paths.check_body_model_files()
    return paths


def check_environment() -> None:
    """SettingError when an environment variable of the table above cannot work on this machine:
    SPIN_FAST_BACKEND not one of auto / torch / triton, or `triton` without a CUDA GPU and without
    TRITON_INTERPRET=1. Every command checks this first, before any work or file is made."""
    from spin_fast.errors import SettingError

    choice = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if choice not in KERNEL_BACKENDS:
        raise SettingError(f"${ENV_BACKEND} is {os.environ[ENV_BACKEND]!r}; expected one of "
                           f"{', '.join(KERNEL_BACKENDS)} (or unset: auto)")
    if choice == "triton" and os.environ.get(ENV_TRITON_INTERPRET, "0") in ("", "0"):
        import torch

        if not torch.cuda.is_available():
            raise SettingError(f"${ENV_BACKEND}=triton needs a CUDA GPU, and torch sees none; unset it (auto "
                               f"runs the torch reference on the CPU), or set {ENV_TRITON_INTERPRET}=1 to "
                               "run the kernels in Triton's (slow) interpreter")


def default_device():
    """CUDA when present, else CPU: the one place the device is chosen."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def parse_device(text: str | None):
    """The torch.device a user named (None: `default_device`); SettingError for a name torch does not
    know, or a CUDA device on a machine where torch sees none."""
    import torch

    from spin_fast.errors import SettingError

    if text is None:
        return default_device()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise SettingError(f"device {text!r}: not a device torch knows (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(f"device {text!r} requested but torch sees no CUDA GPU (use cpu, or leave it unset)")
    return device


def init_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) of this process. Under torchrun (WORLD_SIZE set) joins the process
    group (NCCL on CUDA, gloo on CPU); on CUDA the device is cuda:LOCAL_RANK."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device_choice == "auto":
        device = default_device()
    else:
        device = parse_device(device_choice)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device
