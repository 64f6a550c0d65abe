"""Validate a data root: every configured HumanData file, its static fits and its images.

`check_data_root(root)` returns a report: per dataset the samples, missing and unreadable images
(decoded with PIL when `decode`, else header-checked) and the file errors; `ok` is false on any
problem. CLI: `python -m spin_fast.data check DATA_ROOT [--decode] [--datasets a,b]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spin_fast.config import AssetPaths
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


def check_dataset(paths: AssetPaths, name: str, decode: bool = False) -> DatasetReport:
    spec = DATASETS[name]
    rep = DatasetReport(name)
    try:
        hd = HumanData(spec.npz_path(paths))
    except HumanDataError as e:
        rep.errors.append(str(e))
        return rep
    rep.samples = len(hd)
    rep.warnings.extend(hd.label_warnings)
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


    if spec.split == "train":
        try:
            hd.require_training_labels()
        except HumanDataError as e:
            rep.errors.append(str(e))
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
