"""Training checkpoints: everything needed to continue a killed run exactly, written atomically.

Layout (a superset of mmhuman3d's `{meta, state_dict}`, so mmhuman3d-style tools read the weights):
    meta        {step, epoch_step, config (dict), spin_fast_version}
    state_dict  the HMR network: `backbone.*`, `head.*`
    optimizer, scheduler
    fits        FitsStore.state_dict()
    rng         torch CPU / CUDA generator states, numpy and python `random` states, sampler state
Readable with `torch.load(weights_only=True)`. Files: `<work_dir>/checkpoints/step_XXXXXXX.pth` and
`latest.pth` (a copy written the same atomic way), plus `config.yaml` beside them.
"""
from __future__ import annotations

import os
import random
from pathlib import Path


import numpy as np
import torch

from spin_fast.atomic import atomic_torch_save

CHECKPOINT_VERSION = 1


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _python_state_to_tensor(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(_python_state_from_tensor(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_tensor(st) -> dict:
    version, internal, gauss = st
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": float("nan") if gauss is None else float(gauss)}


def _python_state_from_tensor(d) -> tuple:
    g = d["gauss"]
    return (d["version"], tuple(int(x) for x in d["internal"].tolist()), None if g != g else g)


def save_checkpoint(work_dir: str | os.PathLike, step: int, model: torch.nn.Module, optimizer, scheduler,
                    fits, config: dict, extra: dict | None = None, rng: dict | None = None) -> Path:
    """Write step_XXXXXXX.pth and latest.pth under work_dir/checkpoints (both atomic). `rng`: the
    RNG state to store (default this process's; the loop passes {'per_rank': [...]} under DDP)."""
    ckpt = {
        "meta": {"step": int(step), "config": config, "version": CHECKPOINT_VERSION},
        "state_dict": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "fits": fits.state_dict() if fits is not None else None,
        "rng": rng if rng is not None else rng_state(),
        "extra": extra or {},
    }
    folder = Path(work_dir) / "checkpoints"
    path = folder / f"step_{step:07d}.pth"
    atomic_torch_save(ckpt, path)
    atomic_torch_save(ckpt, folder / "latest.pth")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pth" if (path / "checkpoints").is_dir() else path / "latest.pth"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("meta", "state_dict", "optimizer", "rng"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a spin_fast training checkpoint (missing '{key}')")
    return ckpt


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile
