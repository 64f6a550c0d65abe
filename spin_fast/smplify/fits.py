"""The fits store of SPIN's "fits in the loop" (docs/spin.md): the best fit found so far for every sample.

One (N_d, 82) float32 table a dataset (72 axis-angle pose + 10 betas, in the dataset's own frame,
i.e. un-augmented), all kept in one (sum N_d, 82) tensor so that a batch is one gather and one
scatter, on whatever device the store was moved to. A sample is keyed by (dataset id, index inside its
dataset); dataset ids are positions in `names`.

Per training step (SPIN's trainer, `update_fits` in fitting.py drives it):
  1. `get` the stored fits and `reaugment` them into the augmented crop (rotate the root, then flip);
  2. compare their reprojection loss with SMPLify's new fit (`select_and_update`): the better one is
     kept and written back un-augmented (flip, then rotate back);
  3. the training target is the kept fit with extreme betas reset (any |beta| > 3 -> 0) and the ground
     truth where has_smpl; valid_fit = the recipe's rule on the kept fit's joint loss | has_smpl (SPIN:
     mean over the 49 joints < 100; mmhuman3d: sum < 10, `spin_fast.recipes.ValidFitRule`).
As in SPIN, the table keeps the raw better fit: the beta reset and the GT override shape the target only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from spin_fast.atomic import atomic_torch_save
from spin_fast.constants import BETA_RESET_THRESHOLD, FIT_VALID_THRESHOLD, NUM_BETAS
from spin_fast.geometry import flip_pose, rotate_global_orient
from spin_fast.recipes import ValidFitRule
from spin_fast.smplify.result import SMPLifyResult

SPIN_VALID_FIT = ValidFitRule("mean", FIT_VALID_THRESHOLD)  # SPIN's rule, in its pixel units

FIT_DIM = 72 + NUM_BETAS
STATE_VERSION = 1


class Selection(NamedTuple):
    """What `select_and_update` returns, all in the augmented (training) frame."""

    fit: torch.Tensor  # (B, 82) training target: kept fit, betas reset, GT where has_smpl
    cam_t: torch.Tensor | None  # (B, 3) camera of the target (None when no cameras were given)
    joint_loss: torch.Tensor  # (B,) mean joint reprojection loss of the kept fit
    updated: torch.Tensor  # (B,) bool: the new fit replaced the stored one
    valid_fit: torch.Tensor  # (B,) bool: the valid-fit rule holds for the kept fit | has_smpl
    smplify: "SMPLifyResult | None" = None  # the fresh SMPLify fit of the batch (`fit_in_loop`), None without one


def _as_bool(x: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if x is None:
        return torch.zeros(like.shape[0], dtype=torch.bool, device=like.device)
    return x.to(device=like.device).bool().reshape(-1)


def reaugment(fits: torch.Tensor, flip: torch.Tensor, rot_deg: torch.Tensor) -> torch.Tensor:
    """Stored fits (B, 82) -> the augmented crop: rotate the global orient by rot_deg, then flip.

    Same order as the data pipeline's (and SPIN's FitsDict). Samples with rot_deg == 0 keep their
    global orient bit for bit (no axis-angle round trip)."""
    pose, betas = fits[:, :72], fits[:, 72:]
    rot_deg = rot_deg.to(device=fits.device, dtype=fits.dtype).reshape(-1)
    root = torch.where((rot_deg != 0)[:, None], rotate_global_orient(pose[:, :3], rot_deg), pose[:, :3])
    pose = torch.cat([root, pose[:, 3:]], 1)
    pose = torch.where(_as_bool(flip, fits)[:, None], flip_pose(pose), pose)
    return torch.cat([pose, betas], 1)


def unaugment(fits: torch.Tensor, flip: torch.Tensor, rot_deg: torch.Tensor) -> torch.Tensor:
    """Inverse of `reaugment`: flip back, then rotate the global orient by -rot_deg."""
    pose, betas = fits[:, :72], fits[:, 72:]
    pose = torch.where(_as_bool(flip, fits)[:, None], flip_pose(pose), pose)
    rot_deg = rot_deg.to(device=fits.device, dtype=fits.dtype).reshape(-1)
    root = torch.where((rot_deg != 0)[:, None], rotate_global_orient(pose[:, :3], -rot_deg), pose[:, :3])
    return torch.cat([root, pose[:, 3:], betas], 1)


def reset_extreme_betas(fits: torch.Tensor, threshold: float = BETA_RESET_THRESHOLD) -> torch.Tensor:
    """Rows with any |beta| > threshold get beta = 0 (SPIN)."""
    betas = fits[:, 72:]
    bad = (betas.abs() > threshold).any(-1, keepdim=True)
    return torch.cat([fits[:, :72], torch.where(bad, torch.zeros_like(betas), betas)], 1)


class FitsStore:
    """Best fits per dataset sample. `tables` maps dataset name -> (N_d, 82); order = dataset ids."""

    def __init__(self, tables: Mapping[str, torch.Tensor | np.ndarray], device=None):
        if not tables:
            raise ValueError("FitsStore needs at least one dataset table")
        self.names: list[str] = list(tables)
        parts = []
        for name, t in tables.items():
            t = torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t)
            if t.ndim != 2 or t.shape[1] != FIT_DIM:
                raise ValueError(f"fits table {name!r} must be (N, {FIT_DIM}), got {tuple(t.shape)}")
            parts.append(t.to(torch.float32))
        self.sizes: list[int] = [p.shape[0] for p in parts]
        self.data = torch.cat(parts, 0).to(device if device is not None else parts[0].device).contiguous()
        self.offsets = torch.tensor([0] + list(np.cumsum(self.sizes)), dtype=torch.long, device=self.data.device)

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def filled(cls, sizes: Mapping[str, int], init_fit: torch.Tensor | None = None, device=None) -> "FitsStore":
        """Every row = init_fit (82,) (e.g. the mean pose, zero betas), or zeros."""
        row = torch.zeros(FIT_DIM) if init_fit is None else torch.as_tensor(init_fit, dtype=torch.float32).reshape(FIT_DIM)
        return cls({n: row.expand(int(s), FIT_DIM).clone() for n, s in sizes.items()}, device=device)

    @classmethod
    def from_static_fits(cls, paths, names: Sequence[str], sizes: Mapping[str, int] | None = None,
                         init_fit: torch.Tensor | None = None, device=None) -> "FitsStore":
        """Tables from `paths.static_fits(name)` (.npy (N_d, 82)); a dataset whose file is missing gets
        `sizes[name]` rows of init_fit (zeros if None). A size that disagrees with the file is an error."""
        row = torch.zeros(FIT_DIM) if init_fit is None else torch.as_tensor(init_fit, dtype=torch.float32).reshape(FIT_DIM)
        tables = {}
        for name in names:
            path = Path(paths.static_fits(name))
            if path.is_file():
                arr = np.load(path)
                if arr.ndim != 2 or arr.shape[1] != FIT_DIM:
                    raise ValueError(f"{path}: static fits must be (N, {FIT_DIM}), got {arr.shape}")
                if sizes is not None and name in sizes and int(sizes[name]) != arr.shape[0]:
                    raise ValueError(f"{path}: {arr.shape[0]} fits but the dataset has {sizes[name]} samples")
                tables[name] = torch.from_numpy(arr.astype(np.float32))
            elif sizes is not None and name in sizes:
                tables[name] = row.expand(int(sizes[name]), FIT_DIM).clone()
            else:
                raise FileNotFoundError(f"no static fits at {path} and no dataset size given for {name!r}")
        return cls(tables, device=device)

    # --- access -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device) -> "FitsStore":
        self.data = self.data.to(device)
        self.offsets = self.offsets.to(device)
        return self

    def table(self, name: str) -> torch.Tensor:
        """View of one dataset's (N_d, 82) table."""
        i = self.names.index(name)
        start = int(sum(self.sizes[:i]))
        return self.data[start:start + self.sizes[i]]

    def dataset_id(self, name: str) -> int:
        return self.names.index(name)

    def _rows(self, dataset_id: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        dataset_id = torch.as_tensor(dataset_id, device=self.device).long().reshape(-1)
        index = torch.as_tensor(index, device=self.device).long().reshape(-1)
        if self.device.type == "cpu":  # on CUDA this check would sync every step; the gather asserts there
            sizes = torch.tensor(self.sizes)
            if ((dataset_id < 0) | (dataset_id >= len(self.sizes))).any():
                raise IndexError(f"dataset id out of range 0..{len(self.sizes) - 1}: {dataset_id.tolist()}")
            if ((index < 0) | (index >= sizes[dataset_id])).any():
                raise IndexError("sample index out of range for its dataset")
        return self.offsets[dataset_id] + index

    def get(self, dataset_id: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Stored (un-augmented) fits (B, 82) of the samples (dataset_id (B,), index (B,))."""
        return self.data[self._rows(dataset_id, index)]

    def put(self, dataset_id: torch.Tensor, index: torch.Tensor, fits: torch.Tensor,
            mask: torch.Tensor | None = None) -> None:
        """Write un-augmented fits (B, 82) where mask (B,) (default all). With a sample twice in one
        batch, one of its writes wins (as in SPIN)."""
        rows = self._rows(dataset_id, index)
        fits = fits.to(self.data)
        if mask is not None:
            mask = mask.to(self.device).bool().reshape(-1)
            fits = torch.where(mask[:, None], fits, self.data[rows])
        self.data.index_copy_(0, rows, fits)

    # --- the SPIN update ----------------------------------------------------------------------------
    def select_and_update(
        self,
        dataset_id: torch.Tensor,
        index: torch.Tensor,
        flip: torch.Tensor,
        rot_deg: torch.Tensor,
        stored_fit: torch.Tensor,
        stored_loss: torch.Tensor,
        new_fit: torch.Tensor,
        new_loss: torch.Tensor,
        has_smpl: torch.Tensor | None = None,
        gt_fit: torch.Tensor | None = None,
        stored_cam_t: torch.Tensor | None = None,
        new_cam_t: torch.Tensor | None = None,
        gt_cam_t: torch.Tensor | None = None,
        valid_rule: ValidFitRule = SPIN_VALID_FIT,
    ) -> Selection:
        """Keep the better of the re-augmented stored fit and the new fit (both (B, 82), augmented
        frame), write the kept one back un-augmented, and build the training target.

        Losses are (B,) means over the 49 joints or (B, 49) per joint (averaged here). A non-finite
        new loss or fit never replaces the stored one; a non-finite stored loss counts as +inf.
        valid_rule: which kept fits supervise (`ValidFitRule`; a 'sum' rule needs (B, 49) losses)."""
        sums = None
        if valid_rule.reduction == "sum":
            if stored_loss.ndim != 2 or new_loss.ndim != 2:
                raise ValueError("select_and_update: a 'sum' valid-fit rule needs per-joint (B, J) losses")
            sums = (stored_loss.sum(-1), new_loss.sum(-1))
        stored_loss = stored_loss.mean(-1) if stored_loss.ndim == 2 else stored_loss
        new_loss = new_loss.mean(-1) if new_loss.ndim == 2 else new_loss
        inf = torch.full_like(stored_loss, float("inf"))
        stored_loss = torch.where(torch.isfinite(stored_loss), stored_loss, inf)
        new_ok = torch.isfinite(new_loss) & torch.isfinite(new_fit).all(-1)
        update = new_ok & (new_loss < stored_loss)
        fit = torch.where(update[:, None], new_fit, stored_fit)
        loss = torch.where(update, new_loss, stored_loss)
        self.put(dataset_id, index, unaugment(fit, flip, rot_deg), mask=update)
        cam_t = None
        if stored_cam_t is not None and new_cam_t is not None:
            cam_t = torch.where(update[:, None], new_cam_t, stored_cam_t)
        target = reset_extreme_betas(fit)
        has_smpl = _as_bool(has_smpl, fit)
        if gt_fit is not None:
            target = torch.where(has_smpl[:, None], gt_fit.to(target), target)
            if cam_t is not None and gt_cam_t is not None:
                cam_t = torch.where(has_smpl[:, None], gt_cam_t.to(cam_t), cam_t)
        if sums is None:
            rule_loss = loss
        else:  # the kept fit's sum over the joints (a non-finite one fails the rule)
            rule_loss = torch.where(update, sums[1], sums[0])
        valid_fit = (torch.isfinite(rule_loss) & (rule_loss < valid_rule.threshold)) | has_smpl
        return Selection(target, cam_t, loss, update, valid_fit)

    # --- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "names": list(self.names), "sizes": list(self.sizes),
                "data": self.data.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["names"]) != self.names or list(state["sizes"]) != self.sizes:
            raise ValueError(f"fits state is for datasets {list(zip(state['names'], state['sizes']))}, "
                             f"this store holds {list(zip(self.names, self.sizes))}")
        data = torch.as_tensor(state["data"], dtype=torch.float32)
        if data.shape != self.data.shape:
            raise ValueError(f"fits state data {tuple(data.shape)} != {tuple(self.data.shape)}")
        self.data.copy_(data.to(self.device))

    @classmethod
    def from_state_dict(cls, state: Mapping, device=None) -> "FitsStore":
        data = torch.as_tensor(state["data"], dtype=torch.float32)
        tables, start = {}, 0
        for name, n in zip(state["names"], state["sizes"]):
            tables[name] = data[start:start + n]
            start += n
        return cls(tables, device=device)

    def save(self, path: str | os.PathLike) -> None:
        """Atomic: written to a temporary file beside `path`, then renamed over it."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "FitsStore":
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls.from_state_dict(state, device=device)
