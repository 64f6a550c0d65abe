"""The synthetic SMPL stand-in: every licensed asset file, in exactly the real formats.

`write_assets(root, seed)` writes, deterministically (about 5 s of CPU time), the mmhuman3d layout
(docs/spin.md "Assets") under `root`:

    body_models/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl   chumpy-format Python pickle (protocol 2):
                                                      Ch arrays, J_regressor as scipy.sparse.csc
    body_models/J_regressor_extra.npy                 (9, 6890)
    body_models/J_regressor_h36m.npy                  (17, 6890)
    body_models/smpl_mean_params.npz                  pose (144,) 6D, shape (10,), cam (3,)
    gmm_08.pkl                                        means (8, 69), covars (8, 69, 69), weights (8,)

The body is `spin_fast.assets.body`: a person-shaped genus-0 mesh with SMPL topology sizes. It is
not SMPL and no number measured on it is an SMPL number; it exists so that every code path (loading,
fitting, training, evaluation) runs here exactly as it would on the real files.
CLI: `python -m spin_fast.assets --out DIR [--seed N]`.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from spin_fast.atomic import atomic_write_bytes
from spin_fast.config import AssetPaths, configured_data_root, synthetic_root
from spin_fast.constants import NUM_JOINTS, SMPL_PARENTS

FORMAT_VERSION = 1


# --- writing official-format files -----------------------------------------------------------------
class _Ch:
    """Pickles like a chumpy.ch.Ch holding array x (module path rewritten while pickling)."""

    def __init__(self, x):
        self.x = np.asarray(x, dtype=np.float64)

    def __getstate__(self):
        return {"x": self.x, "_cache": {}, "_depends_on_deps": {}, "_dirty_vars": set()}


class _Csc:
    """Pickles like a scipy csc_matrix of scipy <= 1.7 (module `scipy.sparse.csc`)."""

    def __init__(self, m):
        m = scipy.sparse.csc_matrix(m)
        self.state = {"_shape": m.shape, "data": m.data, "indices": m.indices, "indptr": m.indptr,
                      "maxprint": 50, "format": "csc"}

    def __getstate__(self):
        return self.state


@contextlib.contextmanager
def _fake_modules():
    """Expose _Ch as chumpy.ch.Ch and _Csc as scipy.sparse.csc.csc_matrix to the pickler only."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    ch = types.ModuleType("chumpy.ch")
    csc = types.ModuleType("scipy.sparse.csc")
    names = (_Ch.__module__, _Ch.__qualname__, _Csc.__module__, _Csc.__qualname__)
    _Ch.__module__, _Ch.__qualname__, _Ch.__name__ = "chumpy.ch", "Ch", "Ch"
    _Csc.__module__, _Csc.__qualname__, _Csc.__name__ = "scipy.sparse.csc", "csc_matrix", "csc_matrix"
    ch.Ch, csc.csc_matrix = _Ch, _Csc
    sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch, "scipy.sparse.csc": csc})
    try:
        yield
    finally:
        _Ch.__module__, _Ch.__qualname__, _Csc.__module__, _Csc.__qualname__ = names
        _Ch.__name__, _Csc.__name__ = "_Ch", "_Csc"
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def smpl_official_dict(model: dict) -> dict:
    """The official SMPL v1.0 .pkl dict (chumpy arrays, csc J_regressor, uint32 faces) of a model."""
    kt = np.stack([np.array(SMPL_PARENTS, dtype=np.int64), np.arange(NUM_JOINTS)])
    kt[0, 0] = 4294967295
    J_reg = scipy.sparse.csc_matrix(model["J_regressor"])
    return {
        "v_template": _Ch(model["v_template"]), "shapedirs": _Ch(model["shapedirs"]),
        "posedirs": _Ch(model["posedirs"]), "weights": _Ch(model["weights"]),
        "J_regressor": _Csc(J_reg), "kintree_table": kt, "f": np.asarray(model["f"], dtype=np.uint32),
        "J": np.asarray(J_reg @ model["v_template"]), "weights_prior": _Ch(model["weights"]),
        "J_regressor_prior": _Csc(J_reg), "bs_style": "lbs", "bs_type": "lrotmin",
        "vert_sym_idxs": np.arange(len(model["v_template"]), dtype=np.int64),
    }


def dumps_official(obj) -> bytes:
    """Pickle (protocol 2) with _Ch / _Csc written under chumpy's and old scipy's module paths."""
    with _fake_modules():
        return pickle.dumps(obj, protocol=2)


def write_smpl_pkl(path: str | os.PathLike, model: dict) -> None:
    """Write an SMPL model dict as an official-format (chumpy) .pkl, atomically."""
    atomic_write_bytes(Path(path), dumps_official(smpl_official_dict(model)))


# --- the stand-in ----------------------------------------------------------------------------------
def make_body(seed: int = 0) -> dict:
    """The neutral model dict plus the extra/H36M regressors and gender offsets (numpy, float64)."""
    from spin_fast.assets import body

    rng = np.random.default_rng(seed)
    v, f = body.build_mesh()
    v, f = body.place_landmarks(v, f)
    weights = body.skinning_weights(v)
    shapedirs = body.shape_directions(v, weights, rng)
    posedirs = body.pose_directions(v, weights, rng)
    neutral = {"v_template": v, "shapedirs": shapedirs, "posedirs": posedirs, "weights": weights, "f": f,
               "J_regressor": scipy.sparse.csc_matrix(body.regressor(v, body.REST_JOINTS))}
    male = dict(neutral, v_template=v + shapedirs @ np.array([0.6, 0.2, 0, 1.0, 0, 0.3, 0, -0.5, 0, 0]))
    female = dict(neutral, v_template=v + shapedirs @ np.array([-0.6, 0.0, 0.2, -0.9, 0, -0.3, -0.2, 1.0, 0, 0]))
    return {"neutral": neutral, "male": male, "female": female,
            "extra": body.regressor(v, body.EXTRA_TARGETS), "h36m": body.regressor(v, body.H36M_TARGETS)}


def mean_params() -> dict:
    """SPIN-style mean parameters: upright-in-image root (pi about x), arms down, knees soft."""
    from spin_fast.geometry import axis_angle_to_rotmat, rotmat_to_rot6d
    import torch

    aa = torch.zeros(NUM_JOINTS, 3, dtype=torch.float64)
    aa[0] = torch.tensor([np.pi, 0, 0])
    aa[16], aa[17] = torch.tensor([0, 0, -1.1]), torch.tensor([0, 0, 1.1])   # shoulders: arms down
    aa[18], aa[19] = torch.tensor([0, -0.3, 0]), torch.tensor([0, 0.3, 0])   # elbows
    aa[4], aa[5] = torch.tensor([0.15, 0, 0]), torch.tensor([0.15, 0, 0])    # knees
    pose6d = rotmat_to_rot6d(axis_angle_to_rotmat(aa)).reshape(-1).numpy()
    return {"pose": pose6d.astype(np.float32), "shape": np.zeros(10, np.float32),
            "cam": np.array([0.9, 0.0, 0.0], np.float32)}


def make_gmm(seed: int = 0, components: int = 8) -> dict:
    """A max-mixture prior over the 69-D body pose: components around plausible poses."""
    rng = np.random.default_rng(seed + 1)
    mp = np.zeros((NUM_JOINTS, 3))
    mp[16], mp[17], mp[18], mp[19] = [0, 0, -1.1], [0, 0, 1.1], [0, -0.3, 0], [0, 0.3, 0]
    mp[4], mp[5] = [0.15, 0, 0], [0.15, 0, 0]
    base = mp[1:].reshape(-1)
    means = base + rng.normal(scale=0.15, size=(components, 69))
    A = rng.normal(scale=0.08, size=(components, 69, 20))
    covars = A @ A.transpose(0, 2, 1) + 0.01 * np.eye(69)
    weights = rng.dirichlet(np.full(components, 5.0))
    return {"means": means, "covars": covars, "weights": weights}


def write_assets(root: str | os.PathLike, seed: int = 0) -> AssetPaths:
    """Write the whole stand-in under root (the mmhuman3d `data/` folder). Returns its AssetPaths."""
    paths = AssetPaths(Path(root))
    b = make_body(seed)
    for gender in ("neutral", "male", "female"):
        write_smpl_pkl(paths.smpl(gender), b[gender])
    atomic_write_bytes(paths.j_regressor_extra, _npy_bytes(b["extra"]))
    atomic_write_bytes(paths.j_regressor_h36m, _npy_bytes(b["h36m"]))
    buf = io.BytesIO()
    np.savez(buf, **mean_params())
    atomic_write_bytes(paths.mean_params, buf.getvalue())
    atomic_write_bytes(paths.gmm, pickle.dumps(make_gmm(seed), protocol=2))
    atomic_write_bytes(paths.root / "SYNTHETIC_STAND_IN.txt",
                       f"spin_fast synthetic SMPL stand-in, format {FORMAT_VERSION}, seed {seed}. Not SMPL.\n".encode())
    return paths


def resolve_data_root(data_root: str | os.PathLike | None = None, *, announce: bool = True) -> AssetPaths:
    """Return the asset paths for `data_root`, $SPIN_FAST_DATA_ROOT, or the synthetic stand-in.

    A root may be the mmhuman3d `data/` folder itself or its parent. With no root configured the
    synthetic stand-in is written on first use (`write_assets`) and announced, never used silently."""
    paths = configured_data_root(data_root)
    if paths is not None:
        return paths
    paths = AssetPaths(synthetic_root())
    if not all(p.is_file() for p in paths.body_model_files()):
        if announce:
            print(f"spin_fast: no data root configured; generating the synthetic SMPL stand-in in {paths.root}",
                  file=sys.stderr)
        write_assets(paths.root, seed=0)
    elif announce:
        print(f"spin_fast: no data root configured; using the synthetic SMPL stand-in at {paths.root} "
              "(not the licensed SMPL model)", file=sys.stderr)
    return paths
