"""Training checkpoints: everything needed to continue a killed run exactly, written atomically.

Layout (a superset of mmhuman3d's `{meta, state_dict}`, so mmhuman3d-style tools read the weights):
    meta        {step, config (the resolved config as a dict), version (CHECKPOINT_VERSION)}
    state_dict  the HMR network: `backbone.*`, `head.*`
    optimizer, scheduler (None without a scheduler)
    fits        FitsStore.state_dict() (None without a store)
    rng         torch CPU generator, numpy and python `random` states (+ the CUDA generators where CUDA is
                present); a run of several processes stores {'per_rank': [one such dict a rank]}
Readable with `torch.load(weights_only=True)`. Files: `<work_dir>/checkpoints/step_XXXXXXX.pth`, the newest
`keep` of them kept, and `latest.pth`, a hard link to the newest (swapped in atomically, not a second
copy), plus `config.yaml` in the work dir. Nothing non-finite is ever saved: the network, optimizer
state and fits are checked first.
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from spin_fast.atomic import atomic_link, atomic_torch_save
from spin_fast.model.checkpoint_import import unwrap
from spin_fast.errors import SpinFastError

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


STEP_FILE = re.compile(r"step_(\d+)\.pth$")


class CheckpointLoadError(SpinFastError, ValueError):
    """A training checkpoint is missing, unreadable, unsafe or of another run; names the file."""


def _non_finite(tree, where: str) -> list[str]:
    """Names of the floating tensors in a nested dict/list with a NaN or inf (one host sync each)."""
    if torch.is_tensor(tree):
        return [where] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(tree, (list, tuple)):
        return [n for i, v in enumerate(tree) for n in _non_finite(v, f"{where}[{i}]")]
    return []


def step_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the step_XXXXXXX.pth files in `folder`, newest first."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pth") if (m := STEP_FILE.search(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(work_dir: str | os.PathLike, step: int, model: torch.nn.Module, optimizer, scheduler,
                    fits, config: dict, rng: dict | None = None, keep: int = 3) -> Path:
    """Write step_XXXXXXX.pth (atomic), point latest.pth at it, keep the newest `keep` step files (0:
    all). `rng`: the RNG state to store (default this process's; the loop passes {'per_rank': [...]}
    under DDP). Refuses (FloatingPointError, nothing written) when anything to save is non-finite."""
    ckpt = {
        "meta": {"step": int(step), "config": config, "version": CHECKPOINT_VERSION},
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "fits": fits.state_dict() if fits is not None else None,
        "rng": rng if rng is not None else rng_state(),
    }
    bad = _non_finite({k: ckpt[k] for k in ("state_dict", "optimizer", "fits")}, "")
    if bad:
        raise FloatingPointError(f"not saving the step-{step} checkpoint: non-finite values in "
                                 f"{', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}")
    folder = Path(work_dir) / "checkpoints"
    path = folder / f"step_{step:07d}.pth"
    atomic_torch_save(ckpt, path)
    atomic_link(path, folder / "latest.pth")
    if keep > 0:
        for _, old in step_files(folder)[keep:]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A spin_fast training checkpoint: a file, or a work dir (its checkpoints/latest.pth), read with
    torch.load(weights_only=True). CheckpointLoadError (FileNotFoundError when absent) names the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pth" if (path / "checkpoints").is_dir() else path / "latest.pth"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # a broken file, not a refused object
            raise CheckpointLoadError(f"{path}: unreadable (truncated, corrupt or not a checkpoint): "
                                      f"{(str(e).strip().splitlines() or [''])[0]}") from None
        refused = re.search(r"GLOBAL (\S+)", str(e))
        what = f" (it asks for {refused.group(1)})" if refused else ""
        raise CheckpointLoadError(f"{path}: refusing to load: it holds objects other than tensors and plain "
                                  f"values{what}, which a spin_fast training checkpoint never does") from None
    except Exception as e:  # noqa: BLE001 - whatever a broken file makes torch.load raise: named, never used
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointLoadError(f"{path}: unreadable (truncated, corrupt or not a checkpoint): {first}") from None
    for key in ("meta", "state_dict", "optimizer", "rng"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise CheckpointLoadError(f"{path}: not a spin_fast training checkpoint (missing '{key}')")
    return ckpt

