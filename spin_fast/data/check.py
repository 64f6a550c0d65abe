"""Validate a data root: every configured HumanData file, its static fits and its images.

`check_data_root(root)` returns a report: per dataset the samples, missing and unreadable images
(decoded with PIL when `decode`, else header-checked) and the file errors (a test file without the labels
its protocol scores is one: `check_test_labels`); `ok` is false on any problem.
CLI: `python -m spin_fast.data check DATA_ROOT [--decode] [--datasets a,b]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spin_fast.config import AssetPaths
from spin_fast.constants import (GT_J24_PELVIS, HUMANDATA_J24_TO_J14, HUMANDATA_J24_TO_J17, NUM_OPENPOSE_JOINTS,
                                 SPIN_49_NAMES)
from spin_fast.data.batch import ImageError, decode_image, image_size, read_image_bytes
from spin_fast.data.datasets import DATASETS
from spin_fast.data.humandata import HumanData, HumanDataError, load_static_fits


@dataclass
class DatasetReport:
    name: str
    samples: int = 0
    errors: list[str] = field(default_factory=list)       # file-level problems
    missing: list[str] = field(default_factory=list)      # image files that do not exist
    unreadable: list[str] = field(default_factory=list)   # image files that exist but do not read
    warnings: list[str] = field(default_factory=list)     # non-finite labels (used as missing; not failures)

    @property
    def ok(self) -> bool:
        return not (self.errors or self.missing or self.unreadable)


def check_test_labels(hd: HumanData, name: str) -> None:
    """Raise a HumanDataError naming the file, the key and the test set when `hd` lacks what the test set's
    protocol scores (`datasets.PROTOCOLS`): 3DPW needs `smpl`, Human3.6M and
    MPI-INF-3DHP `keypoints3d` holding their 14 / 17 evaluation joints and the pelvis."""
    spec = DATASETS[name]
    if spec.protocol == "pw3d":  # (samples without a gender are scored on the neutral model)
        if "smpl" not in hd.keys:
            raise HumanDataError(hd.path, "smpl", f"test set {name} is scored on the gendered SMPL ground truth; "
                                                  f"the file has no 'smpl' (keys present: {sorted(hd.keys)})")
        return
    if spec.protocol is None:
        return
    if not hd.has_keypoints3d:
        raise HumanDataError(hd.path, "keypoints3d", f"test set {name} is scored on the 3D joints; the file has "
                                                     f"none (keys present: {sorted(hd.keys)})")
    joints = HUMANDATA_J24_TO_J14 if spec.protocol == "h36m" else HUMANDATA_J24_TO_J17
    need = [NUM_OPENPOSE_JOINTS + j for j in list(joints) + [GT_J24_PELVIS]]
    missing = [SPIN_49_NAMES[j] for j in need if not hd.stored_joints("keypoints3d")[j]]
    if missing:
        raise HumanDataError(hd.path, "keypoints3d_mask", f"test set {name}: the evaluation joints {missing} are "
                                                          "not in the file")


def check_dataset(paths: AssetPaths, name: str, decode: bool = False) -> DatasetReport:
    spec = DATASETS[name]
    rep = DatasetReport(name)
    try:
        hd = HumanData(spec.npz_path(paths))
        if spec.split == "test":
            check_test_labels(hd, name)
    except HumanDataError as e:
        rep.errors.append(str(e))
        return rep
    rep.samples = len(hd)
    rep.warnings.extend(hd.label_warnings)
    if spec.split == "train":
        try:
            hd.require_training_labels()
        except HumanDataError as e:
            rep.errors.append(str(e))
    if spec.fits is not None:
        try:
            load_static_fits(spec.fits_path(paths), len(hd))
        except HumanDataError as e:
            rep.errors.append(str(e))
    root = spec.image_root(paths)
    from spin_fast.progress import track

    for rel in track(list(dict.fromkeys(hd.image_path.tolist())), f"check {name}", unit="img"):  # each file once
        path = root / rel
        if not path.is_file():
            rep.missing.append(str(path))
            continue
        try:
            data = read_image_bytes(path)
            decode_image(path, data) if decode else image_size(path, data)
        except ImageError as e:
            rep.unreadable.append(str(e))
    hd.close()
    return rep


def check_data_root(root, names=None, decode: bool = False) -> list[DatasetReport]:
    root = Path(root)
    if (root / "data" / "preprocessed_datasets").is_dir() and not (root / "preprocessed_datasets").is_dir():
        root = root / "data"
    paths = AssetPaths(root)
    return [_check_or_report(paths, n, decode) for n in (names or list(DATASETS))]


def _check_or_report(paths: AssetPaths, name: str, decode: bool) -> DatasetReport:
    """check_dataset, with any unforeseen failure reported for this dataset so the others still run."""
    if name not in DATASETS:
        return DatasetReport(name, errors=[f"unknown dataset {name!r}; known: {', '.join(DATASETS)}"])
    try:
        return check_dataset(paths, name, decode)
    except Exception as e:  # noqa: BLE001 - a report, not a crash
        return DatasetReport(name, errors=[f"{type(e).__name__}: {e}"])


def format_report(reports: list[DatasetReport], limit: int = 5) -> str:
    lines = []
    for r in reports:
        status = ("ok" if not r.warnings else "ok, with warnings") if r.ok else "PROBLEMS"
        lines.append(f"{r.name:14s} {r.samples:9d} samples  missing {len(r.missing):6d}  unreadable "
                     f"{len(r.unreadable):6d}  {status}")
        for label, items in (("error", r.errors), ("warning", r.warnings), ("missing", r.missing),
                             ("unreadable", r.unreadable)):
            for s in items[:limit]:
                lines.append(f"    {label}: {s}")
            if len(items) > limit:
                lines.append(f"    ... {len(items) - limit} more {label}")
    return "\n".join(lines)
