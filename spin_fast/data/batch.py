"""What both loaders share: the datasets of a loader, the per-step plan, the labels, image checks.

A `BatchPlan` fixes everything random about one batch (which samples, their augmentation
parameters, their crop matrices) before any pixel is touched, so the DALI and the reference
loader given the same plan produce the same batch (tests/test_data_loaders.py).
"""
from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spin_fast.constants import GENDER_IDS, IMG_RES
from spin_fast.data.augment import (FLIP_PROB, AugParams, augment_labels, crop_matrix, keypoint_matrix, label_rotation,
                                   sample_aug_params, transform_keypoints2d)
from spin_fast.data.humandata import HumanData
from spin_fast.errors import SpinFastError
from spin_fast.recipes import DEFAULT_CODEBASE, Codebase


class ImageError(SpinFastError, RuntimeError):
    """An image is missing, unreadable or corrupt; `path` names it."""

    def __init__(self, path, reason: str):
        super().__init__(f"image {path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # rebuilt whole when it crosses a process boundary (loader workers)
        return type(self), (self.path, self.reason)


class Sources:
    """The datasets one loader reads: names, HumanData views and image folders (ids = positions)."""

    def __init__(self, names: Sequence[str], data: Sequence[HumanData], image_roots: Sequence[str | os.PathLike]):
        if not (len(names) == len(data) == len(image_roots)) or not names:
            raise ValueError("Sources needs one name, HumanData and image folder a dataset")
        self.names = list(names)
        self.data = list(data)
        self.image_roots = [Path(r) for r in image_roots]

    @classmethod
    def from_registry(cls, paths, names: Sequence[str], mmap: bool = True) -> "Sources":
        from spin_fast.data.datasets import get_dataset

        specs = [get_dataset(n) for n in names]
        data = [HumanData(s.npz_path(paths), mmap=mmap) for s in specs]
        for d in data:  # once per dataset, when the loader opens it
            for w in d.label_warnings:
                print(f"spin_fast: warning: {w}", file=sys.stderr)
        return cls(names, data, [s.image_root(paths) for s in specs])

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.data]

    def image_file(self, dataset_id: int, index: int) -> Path:
        return self.image_roots[dataset_id] / str(self.data[dataset_id].image_path[index])


@dataclass
class BatchPlan:
    """Everything random about one batch, decided before loading (all length B)."""

    step: int
    dataset_id: np.ndarray   # (B,) int64
    sample_index: np.ndarray  # (B,) int64
    params: AugParams
    center: np.ndarray       # (B, 2) bbox centre, image pixels
    side: np.ndarray         # (B,) bbox side max(w, h), image pixels
    matrix: np.ndarray       # (B, 2, 3) float64 image pixels -> crop pixels (the image warp)
    files: list              # (B,) Path of each image
    geometry: Codebase = DEFAULT_CODEBASE  # augment.GEOMETRIES: whose crop geometry and flip/rotate order

    def __len__(self):
        return len(self.dataset_id)

    def select(self, keep: np.ndarray) -> "BatchPlan":
        """Rows `keep` (bool mask or indices)."""
        keep = np.asarray(keep)
        keep = np.nonzero(keep)[0] if keep.dtype == bool else keep.astype(np.int64)
        return BatchPlan(self.step, self.dataset_id[keep], self.sample_index[keep], self.params.select(keep),
                         self.center[keep], self.side[keep], self.matrix[keep], [self.files[i] for i in keep],
                         self.geometry)

    def label_matrix(self) -> np.ndarray:
        """(B, 2, 3) the map the 2D labels take (`augment.transform_keypoints2d`): the image warp for
        mmhuman3d, SPIN's un-mirrored keypoint transform for spin."""
        if self.geometry == "spin":
            return keypoint_matrix(self.center, self.side, self.params)
        return self.matrix


def make_plan(sources: Sources, step: int, dataset_id: np.ndarray, index: np.ndarray, params: AugParams,
              res: int = IMG_RES, geometry: Codebase = DEFAULT_CODEBASE) -> BatchPlan:
    dataset_id = np.asarray(dataset_id, np.int64)
    index = np.asarray(index, np.int64)
    center = np.zeros((len(index), 2), np.float64)
    side = np.zeros(len(index), np.float64)
    for d in np.unique(dataset_id):
        sel = dataset_id == d
        center[sel] = sources.data[d].center[index[sel]]
        side[sel] = sources.data[d].scale[index[sel]]
    files = [sources.image_file(int(d), int(i)) for d, i in zip(dataset_id, index)]
    return BatchPlan(step, dataset_id, index, params, center, side, crop_matrix(center, side, params, res, geometry),
                     files, geometry)


class TrainPlanner:
    """step -> BatchPlan from a MixedSampler and SPIN's random augmentation, in `geometry`'s crop."""

    def __init__(self, sources: Sources, sampler, rot_prob: float, geometry: Codebase = DEFAULT_CODEBASE,
                 flip_prob: float = FLIP_PROB):
        self.sources, self.sampler, self.rot_prob, self.geometry = sources, sampler, rot_prob, geometry
        self.flip_prob = flip_prob

    def __call__(self, step: int) -> BatchPlan:
        ids, idx = self.sampler.batch(step)
        params = sample_aug_params(self.sampler.rng(step), len(ids), self.rot_prob, self.flip_prob)
        return make_plan(self.sources, step, ids, idx, params, geometry=self.geometry)


class EvalPlanner:
    """step -> the step-th consecutive slice of one dataset, no augmentation (the last may be short)."""

    def __init__(self, sources: Sources, batch_size: int, dataset_id: int = 0):
        self.sources, self.batch_size, self.dataset_id = sources, batch_size, dataset_id
        self.n = sources.sizes[dataset_id]

    def num_steps(self):
        return -(-self.n // self.batch_size)

    def __call__(self, step: int) -> BatchPlan:
        idx = np.arange(step * self.batch_size, min(self.n, (step + 1) * self.batch_size))
        return make_plan(self.sources, step, np.full(len(idx), self.dataset_id), idx, AugParams.identity(len(idx)))


def assemble_labels(sources: Sources, plan: BatchPlan) -> dict:
    """Every batch entry except `img` (see spin_fast.data docstring), as CPU tensors."""
    B = len(plan)
    kp2d = np.zeros((B, 49, 3), np.float32)
    kp3d = np.zeros((B, 49, 4), np.float32)
    pose = np.zeros((B, 72), np.float32)
    betas = np.zeros((B, 10), np.float32)
    has_smpl = np.zeros(B, bool)
    gender = np.full(B, GENDER_IDS["n"], np.int64)
    for d in np.unique(plan.dataset_id):
        sel = plan.dataset_id == d
        hd, idx = sources.data[d], plan.sample_index[sel]
        kp2d[sel] = hd.keypoints2d(idx)
        kp3d[sel] = hd.keypoints3d(idx)
        pose[sel], betas[sel], has_smpl[sel] = hd.pose[idx], hd.betas[idx], hd.has_smpl[idx]
        if hd.gender is not None:
            gender[sel] = [GENDER_IDS[g] for g in hd.gender[idx]]
    kp2d = transform_keypoints2d(kp2d, plan.label_matrix(), plan.params.flip, plan.geometry)
    flip = torch.from_numpy(plan.params.flip.astype(bool))
    rot = torch.from_numpy(label_rotation(plan.params, plan.geometry))
    kp3d_t, pose_t = augment_labels(torch.from_numpy(kp3d), torch.from_numpy(pose), flip, rot)
    return {
        "keypoints2d": torch.from_numpy(kp2d), "keypoints3d": kp3d_t, "pose": pose_t,
        "betas": torch.from_numpy(betas), "has_smpl": torch.from_numpy(has_smpl), "gender": torch.from_numpy(gender),
        "dataset_id": torch.from_numpy(plan.dataset_id.copy()), "sample_index": torch.from_numpy(plan.sample_index.copy()),
        "flip": flip, "rot_deg": rot, "scale": torch.from_numpy(plan.params.scale.astype(np.float32)),
        "noise": torch.from_numpy(plan.params.noise.astype(np.float32)),
        "center": torch.from_numpy(plan.center.astype(np.float32)),
        "bbox_side": torch.from_numpy(plan.side.astype(np.float32)),
        "crop_matrix": torch.from_numpy(plan.matrix.astype(np.float32)),
        "image_path": [str(f) for f in plan.files],
    }


def to_device(batch: dict, device) -> dict:
    if device is None:
        return batch
    device = torch.device(device)
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# --- image files ------------------------------------------------------------------------------------
def read_image_bytes(path: Path) -> bytes:
    """The file's bytes after cheap structural checks (exists, non-empty, JPEG SOI .. EOI / PNG
    signature), so that a truncated file fails here, naming the file, in both loaders."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "file does not exist") from None
    except OSError as e:
        raise ImageError(path, f"cannot read: {e}") from None
    check_image_bytes(path, data)
    return data


def check_image_bytes(path, data: bytes) -> None:
    if not data:
        raise ImageError(path, "file is empty")
    if data[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" not in data[-4096:]:
            raise ImageError(path, "corrupt JPEG: no end-of-image marker (truncated file?)")
    elif data[:8] != b"\x89PNG\r\n\x1a\n" and data[:2] != b"BM":
        raise ImageError(path, "not a JPEG, PNG or BMP file")


def image_size(path, data: bytes) -> tuple[int, int]:
    """(width, height) from the header, without decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(path, f"unreadable image header: {e}") from None


def decode_image(path, data: bytes | None = None) -> np.ndarray:
    """Full decode with PIL -> (H, W, 3) uint8 RGB, or ImageError naming the file."""
    from PIL import Image, UnidentifiedImageError

    if data is None:
        data = read_image_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(path, f"corrupt image: {e}") from None
