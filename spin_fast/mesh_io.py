"""Files other tools open: meshes (`.obj`, `.ply`) and SMPL parameters in mmhuman3d's HumanData layout.

Every file is written atomically (spin_fast.atomic): a reader never sees half of one.

- `obj_bytes(vertices, faces)`: Wavefront OBJ text, `v x y z` (6 decimals, metres) and 1-based `f a b c`.
- `ply_bytes(vertices, faces)`: binary little-endian PLY, float64 vertices, uchar-counted int32 faces.
- `humandata_smpl_bytes(...)`: an `.npz` that mmhuman3d's `HumanData.fromfile` loads as it is:
      image_path (N,) str, bbox_xywh (N, 5) [x, y, w, h, 1],
      smpl {global_orient (N, 3), body_pose (N, 23, 3), betas (N, 10) float32, transl (N, 3) float64}
      (axis-angle),
      config str, misc dict, `__key_strict__` False, `__temporal_len__` N (`__data_len__` too, the name
      mmhuman3d's earlier releases read), `__keypoints_compressed__` False,
  plus any further (N, ...) arrays given (`extra`: the camera, frame and person indices). As in
  HumanData, the dicts are 0-d object arrays: `np.load(f, allow_pickle=True)["smpl"].item()` gives the
  dict whose entries `smplx.SMPL(...)(**{k: torch.tensor(v) ...})` takes (body_pose flattened to 69).
The translations and the mesh vertices are kept in float64: at a focal of 5000 pixels a person stands
tens to hundreds of metres from the camera, where float32 steps are 1e-5 m and more.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from spin_fast.atomic import atomic_write_bytes

MESH_FORMATS = ("obj", "ply")


def obj_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """(V, 3) vertices and (F, 3) 0-based faces as OBJ text."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64) + 1
    lines = ["# spin_fast: SMPL mesh, metres, camera frame (x right, y down, z forward)"]
    lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    lines += [f"f {a} {b} {c}" for a, b, c in f]
    return ("\n".join(lines) + "\n").encode()


def ply_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """(V, 3) vertices and (F, 3) 0-based faces as binary little-endian PLY."""
    v = np.ascontiguousarray(vertices, dtype="<f8")
    f = np.asarray(faces, np.int64)
    header = ("ply\nformat binary_little_endian 1.0\ncomment spin_fast: SMPL mesh, metres, camera frame\n"
              f"element vertex {len(v)}\nproperty double x\nproperty double y\nproperty double z\n"
              f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n").encode()
    rows = np.zeros(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    rows["n"], rows["idx"] = 3, f
    return header + v.tobytes() + rows.tobytes()


def write_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """The mesh as .obj or .ply (by the file's suffix), atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ValueError(f"{path}: mesh format must be one of {MESH_FORMATS}")
    return atomic_write_bytes(path, obj_bytes(vertices, faces) if fmt == "obj" else ply_bytes(vertices, faces))


def humandata_smpl_bytes(image_path: list[str], bbox_xywh: np.ndarray, global_orient: np.ndarray,
                         body_pose: np.ndarray, betas: np.ndarray, transl: np.ndarray, config: str = "spin_fast",
                         misc: dict | None = None, extra: dict | None = None) -> bytes:
    """The npz bytes of a HumanData file of N people (see the module docstring for the shapes)."""
    n = len(image_path)
    bbox = np.asarray(bbox_xywh, np.float32).reshape(n, -1)
    if bbox.shape[1] == 4:
        bbox = np.concatenate([bbox, np.ones((n, 1), np.float32)], 1)  # HumanData's confidence column
    smpl = {"global_orient": np.asarray(global_orient, np.float32).reshape(n, 3),
            "body_pose": np.asarray(body_pose, np.float32).reshape(n, 23, 3),
            "betas": np.asarray(betas, np.float32).reshape(n, 10),
            "transl": np.asarray(transl, np.float64).reshape(n, 3)}
    arrays = {"__key_strict__": np.array(False), "__temporal_len__": np.array(n), "__data_len__": np.array(n),
              "__keypoints_compressed__": np.array(False),
              "image_path": np.asarray(image_path, dtype=str).reshape(n), "bbox_xywh": bbox,
              "smpl": _object(smpl), "config": np.array(config), "misc": _object(misc or {})}
    for k, v in (extra or {}).items():
        arrays[k] = np.asarray(v)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _object(d: dict) -> np.ndarray:
    """A dict as the 0-d object array np.savez writes for it (what HumanData.load unwraps with .item())."""
    out = np.empty((), dtype=object)
    out[()] = d
    return out
