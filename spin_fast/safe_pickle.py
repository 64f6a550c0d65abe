"""Reading pickled data without running code: the restricted unpicklers of every data file.

A pickle names the functions ("globals") it calls to rebuild its objects, and a plain `pickle.load`
imports and calls whatever it names, so a crafted file runs code. `DataUnpickler` builds only plain
data: numpy arrays, dtypes and scalars, and the Python values the pickle format stores without
globals (dict, list, tuple, str, bytes, int, float, bool, None). Every other global is refused with
`RefusedGlobal`, before anything is imported or called. `spin_fast.body.io.SafeUnpickler` extends it
with the chumpy and scipy stand-ins that the official SMPL files need.

`.npy` / `.npz` members with an object dtype (HumanData's 0-d `smpl` / `meta` dicts, an object
`image_path`, ...) are pickles inside the zip: `read_npy` and `load_npz` read them through
`DataUnpickler`; numeric members are read as numpy reads them, without any unpickling.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from spin_fast.errors import SpinFastError


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed set; `name` is 'module.attribute'."""

    def __init__(self, module: str, name: str, allowed: str):
        self.name = f"{module}.{name}"
        super().__init__(f"refusing to load global '{self.name}': {allowed}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, as protocol-2 pickles store bytes, limited to str -> latin1 bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1 bytes")
    return text.encode("latin1")


def _numpy_global(module: str, name: str):
    """The numpy functions and types that rebuild arrays, dtypes and scalars (numpy 1.x and 2.x paths)."""
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        return {"_reconstruct": np._core.multiarray._reconstruct, "scalar": np._core.multiarray.scalar}.get(name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":  # protocol 5
        return np._core.numeric._frombuffer
    if module == "numpy" and name == "ndarray":
        return np.ndarray
    if module.startswith("numpy") and name == "dtype":
        return np.dtype
    if module == "numpy.dtypes" and name.endswith("DType"):  # numpy 2 pickles dtypes by their class
        cls = getattr(np.dtypes, name, None)
        return cls if isinstance(cls, type) and issubclass(cls, np.dtype) else None
    return None


class DataUnpickler(pickle.Unpickler):
    """Builds numpy arrays / dtypes / scalars and plain Python values; refuses every other global."""

    allowed = "a data file may hold only numpy arrays and plain values (dict, list, tuple, str, bytes, numbers, None)"

    def find_class(self, module: str, name: str):
        obj = _numpy_global(module, name)
        if obj is not None:
            return obj
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise RefusedGlobal(module, name, self.allowed)


def read_npy_header(fh: IO[bytes]) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy stream, leaving it at the start of the data."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)


def read_npy(fh: IO[bytes]) -> np.ndarray:
    """One .npy stream; object arrays through `DataUnpickler` (RefusedGlobal on anything else)."""
    shape, fortran, dtype = read_npy_header(fh)
    if not dtype.hasobject:
        fh.seek(0)
        return np.lib.format.read_array(fh, allow_pickle=False)
    try:
        arr = DataUnpickler(fh, encoding="latin1").load()
    except RefusedGlobal:
        raise
    except Exception as e:  # truncated or not a pickle
        raise ValueError(f"unreadable object array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise ValueError(f"object array: expected an array of shape {tuple(shape)}, the pickle holds "
                         f"{type(arr).__name__} {getattr(arr, 'shape', '')}")
    return arr


class UnsafeDataError(SpinFastError, ValueError):
    """A data file's pickled member asks for a global that is refused; names file, key and global."""

    def __init__(self, path, key: str, refused: RefusedGlobal):
        super().__init__(f"{path}: key {key!r}: {refused}")
        self.path, self.key, self.refused, self.refused_message = str(path), key, refused.name, str(refused)


def read_npz_member(zf: zipfile.ZipFile, key: str, path: str | os.PathLike | None = None) -> np.ndarray:
    """Member `key` (without '.npy') of an open .npz through `read_npy`; UnsafeDataError on a refusal."""
    with zf.open(key + ".npy") as f:
        try:
            return read_npy(f)
        except RefusedGlobal as e:
            raise UnsafeDataError(path if path is not None else zf.filename, key, e) from None


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Every member of an .npz as {key: array}, object members through the restricted unpickler."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        return {n[:-4]: read_npz_member(zf, n[:-4], path) for n in zf.namelist() if n.endswith(".npy")}
