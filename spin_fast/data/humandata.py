"""HumanData (mmhuman3d `.npz`) reader and writer, reduced to what SPIN trains on.

File format (docs/spin.md "HumanData"): an `.npz`; 0-d object arrays hold dicts / strings. mmhuman3d reads it
with `np.load(allow_pickle=True)`, which runs whatever code a crafted file names; here every object
member goes through `spin_fast.safe_pickle.DataUnpickler` (numpy arrays and plain values only), and a
refused global is a `HumanDataError` naming the file, the key and the global.

    image_path        (N,) str                 relative to the dataset's image folder
    bbox_xywh         (N, 4|5) [x, y, w, h, (conf)] pixels
    keypoints2d       (N, 190, 3) pixels + conf, or (N, K, 3) with K = keypoints2d_mask.sum()
                      when `__keypoints_compressed__` is true (only the columns whose mask is 1)
    keypoints2d_mask  (190,)
    keypoints3d       (N, 190, 4) metres + conf (same compression), keypoints3d_mask (190,)
    smpl              dict {body_pose (N, 23, 3) | (N, 69), global_orient (N, 3), betas (N, 10), [transl]}
    has_smpl          (N,)
    meta              dict {gender: (N,) 'm' / 'f'}
    config, __key_strict__, __data_len__, __keypoints_compressed__   0-d

`HumanData(path)` exposes per sample: image_path, center = (x + w/2, y + h/2), scale = max(w, h)
pixels (the crop side before augmentation), the 49 SPIN keypoints (HUMAN_DATA_TO_SPIN_49) in 2D
(49, 3) and 3D (49, 4), pose (72,) = global_orient + body_pose, betas (10,), has_smpl, gender.

Lazy enough for millions of samples: keys are read one at a time; keypoint arrays stored uncompressed
inside the zip (np.savez) are memory-mapped in place and gathered per request, deflated ones
(np.savez_compressed, mmhuman3d's default) are streamed in row chunks and only their 49 used
columns kept. Anything malformed raises `HumanDataError` naming the file, the key and what was
expected. Non-finite labels are data problems, not errors: a NaN/inf keypoint is a missing joint
(zeros, confidence 0), non-finite SMPL parameters mean has_smpl 0, a non-finite box leaves its sample
without labels (all keypoints absent, has_smpl 0; the box becomes the file's median one so the crop
stays defined). Each kind is counted once, at load, into `label_warnings` (file, key, count, first
indices), which the loaders print and `python -m spin_fast.data check` reports.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spin_fast.atomic import atomic_write
from spin_fast.constants import (GENDER_CODES, HUMAN_DATA_NUM_KEYPOINTS, HUMAN_DATA_TO_SPIN_49, NUM_BETAS,
                                 NUM_SPIN_JOINTS)
from spin_fast.safe_pickle import UnsafeDataError, read_npy_header, read_npz_member
from spin_fast.errors import SpinFastError

_K = HUMAN_DATA_NUM_KEYPOINTS
_IDX49 = np.asarray(HUMAN_DATA_TO_SPIN_49, dtype=np.int64)
_CHUNK_ROWS = 65536
TRAINING_KEYS = ("keypoints2d",)  # what every training dataset must hold (`HumanData.require_training_labels`)


class HumanDataError(SpinFastError, ValueError):
    """A HumanData file is missing, unreadable or not in the expected format."""

    def __init__(self, path, key: str | None, message: str):
        where = f"{path}" + (f": key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {message}")
        self.path, self.key = str(path), key


# --- reading npz members lazily -------------------------------------------------------------------
def _member_header(zf: zipfile.ZipFile, name: str):
    """(shape, fortran_order, dtype, data offset in the zip file or None, open member) of a .npy member."""
    info = zf.getinfo(name)
    f = zf.open(info)
    shape, fortran, dtype = read_npy_header(f)
    offset = None
    if info.compress_type == zipfile.ZIP_STORED and not dtype.hasobject:
        # the member's data sits verbatim in the zip: local header + name + extra + npy header
        with open(zf.filename, "rb") as raw:
            raw.seek(info.header_offset)
            local = raw.read(30)
            n_name, n_extra = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        offset = info.header_offset + 30 + n_name + n_extra + f.tell()
    return shape, fortran, dtype, offset, f


def _gather_columns(zf: zipfile.ZipFile, name: str, cols: np.ndarray, mmap: bool, expect: tuple):
    """Member `name` (N, K, C) restricted to columns `cols` (-1 = absent, zeros): a lazy memmap view
    (returned with `cols` to gather later) or a dense (N, len(cols), C) float32 array; (None, shape)
    when its shape is not `expect`, before anything is read."""
    shape, fortran, dtype, offset, f = _member_header(zf, name)
    if tuple(shape) != tuple(expect):
        f.close()
        return None, shape
    if dtype.kind not in "fiub":
        f.close()
        raise ValueError(f"expected a numeric array, got dtype {dtype}")
    if mmap and offset is not None and not fortran:
        arr = np.memmap(zf.filename, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
        f.close()
        return arr, shape
    n = shape[0]
    row_items = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    out = np.zeros((n, len(cols)) + tuple(shape[2:]), dtype=np.float32)
    present = cols >= 0
    if fortran:  # rare: read whole
        with zf.open(name) as g:
            data = np.lib.format.read_array(g, allow_pickle=False)
        out[:, present] = data[:, cols[present]]
        f.close()
        return out, shape
    with f:
        for start in range(0, n, _CHUNK_ROWS):
            rows = min(_CHUNK_ROWS, n - start)
            buf = f.read(rows * row_items * dtype.itemsize)
            chunk = np.frombuffer(buf, dtype=dtype).reshape((rows,) + tuple(shape[1:]))
            out[start:start + rows, present] = chunk[:, cols[present]]
    return out, shape


class HumanData:
    """Read-only, lazy view of one HumanData .npz file reduced to SPIN's 49 joints.

    Arrays held in memory: image_path (N,), center (N, 2), scale (N,), pose (N, 72), betas (N, 10),
    has_smpl (N,), gender (N,) or None. Keypoints: `keypoints2d(idx)` (k, 49, 3) and
    `keypoints3d(idx)` (k, 49, 4), float32, gathered from a memory map when the file allows it.
    """

    def __init__(self, path: str | os.PathLike, mmap: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise HumanDataError(self.path, None, "file does not exist")
        try:
            self._zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise HumanDataError(self.path, None, f"not a readable .npz (zip) file: {e}") from None
        self._mmap = mmap
        try:
            self._load()
        except HumanDataError:
            self._zf.close()
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            self._zf.close()
            raise HumanDataError(self.path, None, f"unreadable: {type(e).__name__}: {e}") from None

    # --- loading and validation -------------------------------------------------------------------
    def _err(self, key, msg):
        return HumanDataError(self.path, key, msg)

    def _names(self) -> set[str]:
        return {n[:-4] for n in self._zf.namelist() if n.endswith(".npy")}

    def _array(self, key: str) -> np.ndarray:
        """Member `key`; object arrays through the restricted unpickler."""
        try:
            return read_npz_member(self._zf, key, self.path)
        except UnsafeDataError as e:
            raise self._err(key, e.refused_message) from None
        except ValueError as e:
            raise self._err(key, f"cannot read array: {e}") from None

    def _scalar(self, key: str, default=None, what: str = "value"):
        if key not in self.keys:
            return default
        a = self._array(key)
        if a.shape != ():
            raise self._err(key, f"expected a {what} (0-d array), got an array of shape {a.shape}")
        return a.item()

    def _load(self):
        self.keys = self._names()
        for key in ("image_path", "bbox_xywh"):
            if key not in self.keys:
                raise self._err(key, f"required key missing (keys present: {sorted(self.keys)})")
        image_path = self._array("image_path")
        if image_path.ndim != 1:
            raise self._err("image_path", f"expected shape (N,), got {image_path.shape}")
        if image_path.dtype.kind not in "UO":
            raise self._err("image_path", f"expected strings, got dtype {image_path.dtype}")
        self.image_path = image_path.astype(str)
        n = self.n = len(image_path)
        self._check_image_paths()
        data_len = self._scalar("__data_len__")
        if data_len is not None and int(data_len) not in (-1, n):
            raise self._err("__data_len__", f"expected {n} (len(image_path)), got {data_len}")

        bbox = self._array("bbox_xywh")
        if bbox.shape not in ((n, 4), (n, 5)):
            raise self._err("bbox_xywh", f"expected shape ({n}, 4) or ({n}, 5), got {bbox.shape}")
        bbox = bbox.astype(np.float64)
        self.label_warnings: list[str] = []
        bad_box = ~np.isfinite(bbox[:, :4]).all(1)
        self._unlabeled = bad_box if bad_box.any() else None
        if bad_box.any():
            self._warn("bbox_xywh", bad_box, "their samples get no labels (keypoints absent, has_smpl 0)")
            fill = np.median(bbox[~bad_box, :4], 0) if (~bad_box).any() else np.array([0.0, 0.0, 1.0, 1.0])
            bbox[bad_box, :4] = fill
        x, y, w, h = bbox[:, 0], bbox[:, 1], bbox[:, 2], bbox[:, 3]
        if n and (np.minimum(w, h) <= 0).any():
            bad = int(np.nonzero(np.minimum(w, h) <= 0)[0][0])
            raise self._err("bbox_xywh", f"expected w, h > 0, got {bbox[bad, :4].tolist()} at index {bad}")
        self.center = np.stack([x + w / 2, y + h / 2], 1).astype(np.float32)
        self.scale = np.maximum(w, h).astype(np.float32)

        self.compressed = bool(self._scalar("__keypoints_compressed__", False))
        self._kp = {}
        for key, c in (("keypoints2d", 3), ("keypoints3d", 4)):
            self._kp[key] = self._load_keypoints(key, c) if key in self.keys else None
            if self._kp[key] is not None:
                bad = self._non_finite_rows(key)
                if bad.any():
                    self._warn(key, bad, "those joints are treated as missing (confidence 0)")

        self.pose = np.zeros((n, 72), np.float32)
        self.betas = np.zeros((n, NUM_BETAS), np.float32)
        has_smpl_default = False
        if "smpl" in self.keys:
            smpl = self._scalar("smpl", what="dict")
            if not isinstance(smpl, Mapping):
                raise self._err("smpl", f"expected a dict (0-d object array), got {type(smpl).__name__}")
            self._load_smpl(smpl)
            has_smpl_default = True
        if "has_smpl" in self.keys:
            hs = self._array("has_smpl")
            if hs.shape != (n,):
                raise self._err("has_smpl", f"expected shape ({n},), got {hs.shape}")
            self.has_smpl = hs.astype(bool)
            if self.has_smpl.any() and "smpl" not in self.keys:
                raise self._err("smpl", "has_smpl is set for some samples but the file has no 'smpl' dict")
        else:
            self.has_smpl = np.full(n, has_smpl_default)
        bad_smpl = ~(np.isfinite(self.pose).all(1) & np.isfinite(self.betas).all(1))
        if bad_smpl.any():
            self._warn("smpl", bad_smpl, "treated as without SMPL (has_smpl 0)")
            self.pose[bad_smpl], self.betas[bad_smpl] = 0.0, 0.0
            self.has_smpl = self.has_smpl & ~bad_smpl
        if self._unlabeled is not None:
            self.has_smpl = self.has_smpl & ~self._unlabeled

        self.gender = None
        if "meta" in self.keys:
            meta = self._scalar("meta", what="dict")
            if not isinstance(meta, Mapping):
                raise self._err("meta", f"expected a dict (0-d object array), got {type(meta).__name__}")
            if "gender" in meta:
                g = np.asarray(meta["gender"]).astype(str)
                if g.shape != (n,):
                    raise self._err("meta", f"meta['gender']: expected shape ({n},), got {g.shape}")
                bad = sorted(set(np.unique(g)) - set(GENDER_CODES))
                if bad:
                    raise self._err("meta", f"meta['gender']: expected 'm'/'f', got {bad[:5]}")
                self.gender = np.asarray([GENDER_CODES[s] for s in g]) if n else g

    def _check_image_paths(self) -> None:
        """Every image_path stays inside its dataset's image folder: relative, without a '..' part."""
        p = np.char.replace(self.image_path, "\\", "/")
        outside = np.char.startswith(p, "/") | (np.char.find(np.char.add(np.char.add("/", p), "/"), "/../") >= 0)
        if outside.any():
            i = int(np.nonzero(outside)[0][0])
            more = int(outside.sum()) - 1
            raise self._err("image_path", f"sample {i}: {self.image_path[i]!r} points outside the dataset's image "
                                          "folder (image paths are relative to it, without '..')"
                                          + (f"; {more} more sample(s) do" if more else ""))

    def require_training_labels(self) -> None:
        """HumanDataError unless the file holds what training and fitting need of every sample:
        `keypoints2d` (the 2D loss and SMPLify fit them; without it every fit's loss is infinite)."""
        for key in TRAINING_KEYS:
            if key not in self.keys:
                raise self._err(key, "required for training and fitting (the 2D keypoint loss and SMPLify use it) "
                                     f"but missing; keys present: {', '.join(sorted(self.keys))}")

    def _warn(self, key: str, bad: np.ndarray, consequence: str) -> None:
        idx = np.nonzero(bad)[0]
        first = ", ".join(str(i) for i in idx[:5]) + (", ..." if len(idx) > 5 else "")
        self.label_warnings.append(f"{self.path}: key {key!r}: {len(idx)} sample(s) with non-finite values "
                                   f"(first indices {first}); {consequence}")

    def _non_finite_rows(self, key: str) -> np.ndarray:
        """(N,) bool: samples with a NaN/inf among the used joints of `key` (a chunked pass over a memmap)."""
        arr, cols = self._kp[key]
        present = cols >= 0
        if not isinstance(arr, np.memmap):
            return ~np.isfinite(arr[:, present]).all((1, 2))
        out = np.zeros(self.n, bool)
        for start in range(0, self.n, _CHUNK_ROWS):
            chunk = np.asarray(arr[start:start + _CHUNK_ROWS])[:, cols[present]]
            out[start:start + len(chunk)] = ~np.isfinite(chunk).all((1, 2))
        return out

    def _load_keypoints(self, key: str, c: int):
        mask_key = f"{key}_mask"
        mask = self._array(mask_key).astype(bool) if mask_key in self.keys else np.ones(_K, bool)
        if mask.shape != (_K,):
            raise self._err(mask_key, f"expected shape ({_K},), got {mask.shape}")
        stored_cols = np.nonzero(mask)[0] if self.compressed else np.arange(_K)
        col_of = np.full(_K, -1, np.int64)
        col_of[stored_cols] = np.arange(len(stored_cols))
        cols = col_of[_IDX49]
        if not self.compressed:
            cols = np.where(mask[_IDX49], cols, -1)  # masked-out joints read as absent
        expect = (self.n, len(stored_cols), c)
        try:
            arr, shape = _gather_columns(self._zf, key + ".npy", cols, self._mmap, expect)
        except (ValueError, EOFError) as e:
            raise self._err(key, f"cannot read array: {e}") from None
        if tuple(shape) != expect:
            how = f"compressed by {mask_key} ({len(stored_cols)} of {_K} columns)" if self.compressed else "uncompressed"
            raise self._err(key, f"expected shape {expect} ({how}), got {tuple(shape)}")
        return arr, cols

    def _load_smpl(self, smpl: Mapping):
        n = self.n
        for k in ("body_pose", "global_orient", "betas"):
            if k not in smpl:
                raise self._err("smpl", f"smpl[{k!r}] missing (has {sorted(smpl)})")
        bp = np.asarray(smpl["body_pose"], dtype=np.float32)
        go = np.asarray(smpl["global_orient"], dtype=np.float32)
        be = np.asarray(smpl["betas"], dtype=np.float32)
        if bp.shape not in ((n, 23, 3), (n, 69)):
            raise self._err("smpl", f"smpl['body_pose']: expected ({n}, 23, 3) or ({n}, 69), got {bp.shape}")
        if go.shape not in ((n, 3), (n, 1, 3)):
            raise self._err("smpl", f"smpl['global_orient']: expected ({n}, 3), got {go.shape}")
        if be.ndim != 2 or be.shape[0] != n or be.shape[1] < NUM_BETAS:
            raise self._err("smpl", f"smpl['betas']: expected ({n}, {NUM_BETAS}), got {be.shape}")
        self.pose[:, :3] = go.reshape(n, 3)
        self.pose[:, 3:] = bp.reshape(n, 69)
        self.betas[:] = be[:, :NUM_BETAS]

    # --- access -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    def _gather(self, key: str, idx, c: int) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        entry = self._kp[key]
        if entry is None:
            return np.zeros((len(idx), NUM_SPIN_JOINTS, c), np.float32)
        arr, cols = entry
        if isinstance(arr, np.memmap):
            rows = np.asarray(arr[np.sort(idx)] if len(idx) > 1 else arr[idx], dtype=np.float32)
            if len(idx) > 1:  # memmaps read fastest in order; undo the sort
                rows = rows[np.argsort(np.argsort(idx))]
            out = np.zeros((len(idx), NUM_SPIN_JOINTS, c), np.float32)
            present = cols >= 0
            out[:, present] = rows[:, cols[present]]
        else:
            out = arr[idx]
        out[~np.isfinite(out).all(-1)] = 0.0  # a non-finite joint is a missing one
        if self._unlabeled is not None:
            out[self._unlabeled[idx]] = 0.0
        return out

    def keypoints2d(self, idx) -> np.ndarray:
        """(k, 49, 3) float32 image pixels + confidence for indices idx (int or array)."""
        return self._gather("keypoints2d", idx, 3)

    def keypoints3d(self, idx) -> np.ndarray:
        """(k, 49, 4) float32 metres + confidence."""
        return self._gather("keypoints3d", idx, 4)

    @property
    def has_keypoints3d(self) -> bool:
        return self._kp["keypoints3d"] is not None

    def stored_joints(self, key: str = "keypoints3d") -> np.ndarray:
        """(49,) bool: which of SPIN's 49 joints `key` holds (its mask's columns); all False without the key."""
        entry = self._kp[key]
        return np.zeros(NUM_SPIN_JOINTS, bool) if entry is None else entry[1] >= 0

    def sample(self, i: int) -> dict:
        """All labels of sample i (numpy)."""
        if not -self.n <= i < self.n:
            raise IndexError(f"{self.path}: index {i} out of range for {self.n} samples")
        i = i % self.n
        return {
            "image_path": str(self.image_path[i]), "center": self.center[i], "scale": self.scale[i],
            "keypoints2d": self.keypoints2d(i)[0], "keypoints3d": self.keypoints3d(i)[0],
            "pose": self.pose[i], "betas": self.betas[i], "has_smpl": bool(self.has_smpl[i]),
            "gender": None if self.gender is None else str(self.gender[i]),
        }

    def close(self):
        self._zf.close()

    def __repr__(self):
        return f"HumanData({str(self.path)!r}, n={self.n})"


# --- writing --------------------------------------------------------------------------------------
def spin49_to_humandata(kp49: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 49, C) SPIN joints -> (N, 190, C) HumanData keypoints and their (190,) mask."""
    kp49 = np.asarray(kp49, dtype=np.float32)
    if kp49.ndim != 3 or kp49.shape[1] != NUM_SPIN_JOINTS:
        raise ValueError(f"keypoints: expected (N, {NUM_SPIN_JOINTS}, C), got {kp49.shape}")
    out = np.zeros((kp49.shape[0], _K, kp49.shape[2]), np.float32)
    out[:, _IDX49] = kp49
    mask = np.zeros(_K, np.uint8)
    mask[_IDX49] = 1
    return out, mask


def write_humandata(path: str | os.PathLike, *, image_path: Sequence[str], bbox_xywh: np.ndarray,
                    keypoints2d: np.ndarray | None = None, keypoints3d: np.ndarray | None = None,
                    smpl: Mapping[str, np.ndarray] | None = None, has_smpl: np.ndarray | None = None,
                    gender: Sequence[str] | None = None, compress_keypoints: bool = True,
                    zip_compress: bool = True, config: str = "", keypoints_mask: np.ndarray | None = None) -> Path:
    """Write a HumanData .npz in mmhuman3d's layout, atomically.

    keypoints2d (N, 190, 3) / keypoints3d (N, 190, 4) in the HumanData convention (see
    `spin49_to_humandata`); masks are the columns that are non-zero in some sample (plus SPIN's 49), or
    `keypoints_mask` (190,) when given (as mmhuman3d's converters write it: their convention's columns).
    compress_keypoints stores only masked columns (`__keypoints_compressed__`); zip_compress uses
    np.savez_compressed (mmhuman3d's default) instead of np.savez (memory-mappable).
    """
    path = Path(path)
    image_path = np.asarray(list(image_path), dtype=str)
    n = len(image_path)
    bbox = np.asarray(bbox_xywh, dtype=np.float32)
    if bbox.shape == (n, 4):
        bbox = np.concatenate([bbox, np.ones((n, 1), np.float32)], 1)
    if bbox.shape != (n, 5):
        raise ValueError(f"bbox_xywh: expected ({n}, 4) or ({n}, 5), got {bbox.shape}")
    out: dict[str, object] = {"image_path": image_path, "bbox_xywh": bbox}
    for key, kp, c in (("keypoints2d", keypoints2d, 3), ("keypoints3d", keypoints3d, 4)):
        if kp is None:
            continue
        kp = np.asarray(kp, dtype=np.float32)
        if kp.shape != (n, _K, c):
            raise ValueError(f"{key}: expected ({n}, {_K}, {c}), got {kp.shape}")
        if keypoints_mask is not None:
            mask = np.asarray(keypoints_mask).astype(bool).reshape(_K)
        else:
            mask = (np.abs(kp).reshape(n, _K, c).sum((0, 2)) > 0)
            mask[_IDX49] = True
        out[f"{key}_mask"] = mask.astype(np.uint8)
        out[key] = kp[:, mask] if compress_keypoints else kp
    if smpl is not None:
        d = {k: np.asarray(v, dtype=np.float32) for k, v in smpl.items()}
        for k, shp in (("body_pose", (n, 23, 3)), ("global_orient", (n, 3)), ("betas", (n, NUM_BETAS))):
            if k not in d:
                raise ValueError(f"smpl[{k!r}] missing")
            d[k] = d[k].reshape(shp)
        out["smpl"] = np.array(d, dtype=object)
    if has_smpl is not None:
        has_smpl = np.asarray(has_smpl).astype(np.int64)
        if has_smpl.shape != (n,):
            raise ValueError(f"has_smpl: expected ({n},), got {has_smpl.shape}")
        out["has_smpl"] = has_smpl
    if gender is not None:
        g = np.asarray([GENDER_CODES[str(s).lower()] for s in gender])
        if g.shape != (n,):
            raise ValueError(f"gender: expected ({n},), got {g.shape}")
        out["meta"] = np.array({"gender": g}, dtype=object)
    out["config"] = np.array(config)
    out["__key_strict__"] = np.array(False)
    out["__data_len__"] = np.array(n)
    out["__keypoints_compressed__"] = np.array(bool(compress_keypoints and (keypoints2d is not None
                                                                             or keypoints3d is not None)))
    return atomic_write(path, lambda f: (np.savez_compressed if zip_compress else np.savez)(f, **out))


def load_static_fits(path: str | os.PathLike, n: int | None = None) -> np.ndarray:
    """Static fits (N, 82) float32 (72 axis-angle + 10 betas); checks the row count when n is given."""
    path = Path(path)
    if not path.is_file():
        raise HumanDataError(path, None, "static fits file does not exist")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise HumanDataError(path, None, f"unreadable .npy: {e}") from None
    if a.ndim != 2 or a.shape[1] != 72 + NUM_BETAS or (n is not None and a.shape[0] != n):
        want = f"({n if n is not None else 'N'}, {72 + NUM_BETAS})"
        raise HumanDataError(path, None, f"static fits: expected shape {want}, got {a.shape}")
    return a


def write_static_fits(path: str | os.PathLike, fits: np.ndarray) -> Path:
    path = Path(path)
    fits = np.asarray(fits, dtype=np.float32)
    if fits.ndim != 2 or fits.shape[1] != 72 + NUM_BETAS:
        raise ValueError(f"fits: expected (N, 82), got {fits.shape}")
    return atomic_write(path, lambda f: np.save(f, fits))
