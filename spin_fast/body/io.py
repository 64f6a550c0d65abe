"""Loading the SMPL asset files without chumpy, through a restricted unpickler.

The official SMPL v1.0 `.pkl` files are Python-2 pickles whose v_template, shapedirs, posedirs and
weights are chumpy `chumpy.ch.Ch` objects and whose J_regressor is a scipy csc matrix pickled under
the old module path `scipy.sparse.csc`. chumpy does not import on numpy >= 1.24 / Python >= 3.11, so
`SafeUnpickler` rebuilds those objects itself: it only ever constructs numpy arrays/dtypes/scalars,
scipy sparse matrices (from their data/indices/indptr) and chumpy arrays (their `x` array), and
refuses every other global (it extends `spin_fast.safe_pickle.DataUnpickler`, the unpickler of every
data file), so a pickle that tries to run code fails with `AssetError`; object arrays in `.npz` files
go through the same restricted reader.

Files (docs/spin.md "Assets"): SMPL_{NEUTRAL,MALE,FEMALE}.pkl (or .npz / plain .pkl),
J_regressor_extra.npy (9, 6890), J_regressor_h36m.npy (17, 6890), smpl_mean_params.npz
(pose (144,), shape (10,), cam (3,)), gmm_08.pkl (means (8, 69), covars (8, 69, 69), weights (8,)).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from spin_fast.constants import NUM_JOINTS, SMPL_PARENTS
from spin_fast.safe_pickle import DataUnpickler, UnsafeDataError, load_npz
from spin_fast.errors import SpinFastError


class AssetError(SpinFastError, ValueError):
    """A model/asset file is missing, unreadable, unsafe or not in the expected format."""


# --- the restricted unpickler ---------------------------------------------------------------------
class _ChumpyArray:
    """Stand-in for any chumpy class: keeps the pickled state; `x` holds the array."""

    def __init__(self, *args, **kwargs):
        self.state: Any = None

    def __setstate__(self, state):
        self.state = state


class _SparseMatrix:
    """Stand-in for a pickled scipy sparse matrix of any scipy version; `fmt` is csc/csr."""

    fmt = "csc"

    def __init__(self, *args, **kwargs):
        self.state: Any = None

    def __setstate__(self, state):
        self.state = state


def _sparse_class(fmt: str) -> type:
    return type(f"_{fmt}_matrix", (_SparseMatrix,), {"fmt": fmt})


def _safe_reconstructor(cls, base, state):
    """copy_reg._reconstructor (Python-2 protocol 0/1 objects), only for allowed classes."""
    if not (isinstance(cls, type) and (issubclass(cls, (_ChumpyArray, _SparseMatrix, np.ndarray)))):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    if issubclass(cls, np.ndarray):
        return np.ndarray.__new__(cls, *state) if state else np.ndarray.__new__(cls, (0,))
    return cls()


_BUILTINS = {"object": object, "set": set, "frozenset": frozenset}


class SafeUnpickler(DataUnpickler):
    """Builds only numpy arrays, scipy sparse matrices and chumpy arrays; refuses everything else."""

    allowed = "only numpy, scipy.sparse and chumpy arrays are allowed in SMPL/GMM files"

    def find_class(self, module: str, name: str):
        if module.startswith("chumpy"):
            return _ChumpyArray
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return _sparse_class(name[:3])
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        return super().find_class(module, name)


def _plain(obj: Any, where: str = "") -> Any:
    """Replace chumpy and sparse stand-ins (recursively in dicts/lists) with numpy / scipy objects."""
    if isinstance(obj, _ChumpyArray):
        state = obj.state
        if not isinstance(state, dict) or "x" not in state:
            raise AssetError(f"{where}: a chumpy object without its array state 'x'")
        return np.asarray(state["x"])
    if isinstance(obj, _SparseMatrix):
        st = obj.state if isinstance(obj.state, dict) else {}
        try:
            shape = tuple(st.get("_shape", st.get("shape")))
            ctor = scipy.sparse.csc_matrix if obj.fmt == "csc" else scipy.sparse.csr_matrix
            return ctor((np.asarray(st["data"]), np.asarray(st["indices"]), np.asarray(st["indptr"])), shape=shape)
        except (KeyError, TypeError, ValueError) as e:
            raise AssetError(f"{where}: malformed pickled sparse matrix ({e})") from e
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _plain(v, f"{where}[{k!r}]")
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, where) for v in obj)
    return obj


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a (possibly Python-2, chumpy-bearing) pickle with `SafeUnpickler`; AssetError on failure."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            obj = SafeUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refusing"):
            raise AssetError(f"{path}: {e}") from e
        raise AssetError(f"{path}: not a readable pickle ({e})") from e
    except Exception as e:  # truncated or not a pickle at all
        raise AssetError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
    return _plain(obj, str(path))


def _load_mapping(path: Path, what: str) -> dict:
    if not path.is_file():
        raise AssetError(f"{path}: file not found (expected {what})")
    if path.suffix == ".npz":
        try:
            return load_npz(path)
        except UnsafeDataError as e:
            raise AssetError(str(e)) from None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise AssetError(f"{path}: not a readable .npz ({e}); expected {what}") from e
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise AssetError(f"{path}: expected a dict ({what}), got {type(obj).__name__}")
    return obj


def _array(d: dict, key: str, path: Path, shape: tuple, what: str) -> np.ndarray:
    """d[key] as a float64 array whose shape matches `shape` (None = any size)."""
    if key not in d:
        raise AssetError(f"{path}: missing key '{key}' ({what})")
    a = d[key]
    a = a.toarray() if scipy.sparse.issparse(a) else np.asarray(a)
    ok = a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not ok or a.dtype == object:
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise AssetError(f"{path}: key '{key}' has shape {a.shape} dtype {a.dtype}, expected {want} ({what})")
    return a.astype(np.float64)


def load_smpl(path: str | os.PathLike, num_betas: int = 10) -> dict:
    """An SMPL model file (.pkl official/plain, or .npz) -> dict of numpy arrays (float64 / int64).

    Keys: v_template (V,3), shapedirs (V,3,num_betas), posedirs (V,3,207), J_regressor (24,V)
    scipy csr, weights (V,24), f (F,3) int64, kintree_table (2,24), parents (24,) int64.
    """
    path = Path(path)
    d = _load_mapping(path, "an SMPL model: v_template, shapedirs, posedirs, J_regressor, weights, f")
    v_template = _array(d, "v_template", path, (None, 3), "template vertices")
    V = v_template.shape[0]
    shapedirs = _array(d, "shapedirs", path, (V, 3, None), "shape blend shapes")
    if shapedirs.shape[2] < num_betas:
        raise AssetError(f"{path}: shapedirs has {shapedirs.shape[2]} shape components, need {num_betas}")
    posedirs = _array(d, "posedirs", path, (V, 3, (NUM_JOINTS - 1) * 9), "pose blend shapes")
    weights = _array(d, "weights", path, (V, NUM_JOINTS), "skinning weights")
    if "J_regressor" not in d:
        raise AssetError(f"{path}: missing key 'J_regressor' (joint regressor (24, {V}))")
    J_regressor = d["J_regressor"]
    J_regressor = scipy.sparse.csr_matrix(J_regressor if scipy.sparse.issparse(J_regressor)
                                          else np.asarray(J_regressor, dtype=np.float64))
    if J_regressor.shape != (NUM_JOINTS, V):
        raise AssetError(f"{path}: key 'J_regressor' has shape {J_regressor.shape}, expected ({NUM_JOINTS}, {V})")
    f = _array(d, "f", path, (None, 3), "faces").astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= V):
        raise AssetError(f"{path}: key 'f' indexes vertices outside [0, {V})")
    if "kintree_table" in d:
        kt = np.asarray(d["kintree_table"]).astype(np.int64)
        if kt.shape != (2, NUM_JOINTS):
            raise AssetError(f"{path}: key 'kintree_table' has shape {kt.shape}, expected (2, {NUM_JOINTS})")
        id_to_col = {int(kt[1, i]): i for i in range(NUM_JOINTS)}
        parents = np.array([-1] + [id_to_col[int(kt[0, i])] for i in range(1, NUM_JOINTS)], dtype=np.int64)
    else:
        parents = np.array(SMPL_PARENTS, dtype=np.int64)
        kt = np.stack([parents, np.arange(NUM_JOINTS)])
    if list(parents) != list(SMPL_PARENTS):
        raise AssetError(f"{path}: kinematic tree {parents.tolist()} is not SMPL's {list(SMPL_PARENTS)}")
    return {"v_template": v_template, "shapedirs": shapedirs[:, :, :num_betas], "posedirs": posedirs,
            "J_regressor": J_regressor, "weights": weights, "f": f, "kintree_table": kt, "parents": parents}


def load_regressor(path: str | os.PathLike, rows: int | None = None, num_vertices: int | None = None) -> np.ndarray:
    """J_regressor_extra.npy (9, V) / J_regressor_h36m.npy (17, V) -> float64 array."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: file not found (expected a joint regressor .npy of shape (J, V))")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise AssetError(f"{path}: not a readable .npy ({e}); expected a joint regressor (J, V)") from e
    want = (rows, num_vertices)
    if a.ndim != 2 or any(w is not None and w != n for w, n in zip(want, a.shape)):
        raise AssetError(f"{path}: regressor has shape {a.shape}, expected ({rows or 'J'}, {num_vertices or 'V'})")
    return a.astype(np.float64)


def load_gmm(path: str | os.PathLike) -> dict:
    """gmm_08.pkl -> means (K, 69), covars (K, 69, 69), weights (K,) float64."""
    path = Path(path)
    d = _load_mapping(path, "the GMM pose prior: means, covars, weights")
    means = _array(d, "means", path, (None, 69), "component means over the 69-D body pose")
    K = means.shape[0]
    covars = _array(d, "covars", path, (K, 69, 69), "component covariances")
    weights = _array(d, "weights", path, (K,), "mixture weights")
    if not np.all(np.linalg.eigvalsh(0.5 * (covars + covars.transpose(0, 2, 1))) > 0):
        raise AssetError(f"{path}: key 'covars' is not positive definite")
    return {"means": means, "covars": covars, "weights": weights}


def load_mean_params(path: str | os.PathLike) -> dict:
    """smpl_mean_params.npz -> pose (144,) = 24 x 6D, shape (10,), cam (3,) float32."""
    path = Path(path)
    d = _load_mapping(path, "SMPL mean parameters: pose (144,), shape (10,), cam (3,)")
    return {k: _array(d, k, path, (n,), what).astype(np.float32)
            for k, n, what in (("pose", 144, "24 x 6D mean pose"), ("shape", 10, "mean betas"),
                               ("cam", 3, "mean weak-perspective camera"))}
