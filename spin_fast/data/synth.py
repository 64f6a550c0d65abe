"""Synthetic datasets: the stand-in body rendered in varied poses, written in the real formats.

`write_synthetic_datasets(root)` renders, under a data root holding the body model files (written
with `spin_fast.assets.write_assets` when missing), for each of the six training sets and 3DPW:

    datasets/<folder>/images/NNNNN.jpg              JPEGs of varied sizes, backgrounds, people
    datasets/<folder>/bboxes.json                   {"NNNNN.jpg": [x, y, w, h]}: the person boxes, as
                                                    `python -m spin_fast.demo --bboxes` reads them
    preprocessed_datasets/<ann_file>.npz            HumanData: image_path, bbox_xywh, keypoints2d
                                                    (some invisible), keypoints3d (h36m, 3dhp, pw3d),
                                                    smpl + has_smpl (h36m all, 3dhp half, pw3d all),
                                                    meta.gender (pw3d, rendered with the male/female model)
    static_fits/<name>_fits.npy                     (N, 82): the true parameters plus noise

Poses are perturbations of a standing rest pose inside sane joint ranges (knees and elbows bend one
way), shapes N(0, 0.8), camera distance 3.5-9 m, yaw all around, people anywhere in the frame.
Every face is coloured by the body part that moves it most (left and right differ), flat-shaded,
so the pose is visible in the pixels. About 6 s of CPU time at the default size (`scale=1`: 32 a
dataset); with the body model files written first, the whole stand-in takes 11-18 s on 2 idle cores.
CLI: `python -m spin_fast.data synth --out DIR [--assets DIR] [--scale N]`.
"""
from __future__ import annotations

import colorsys
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from spin_fast.atomic import atomic_write_bytes, atomic_write_json
from spin_fast.config import AssetPaths
from spin_fast.constants import GT_PELVIS_MPII, NUM_OPENPOSE_JOINTS
from spin_fast.data.datasets import DATASETS, TEST_DATASETS, TRAIN_DATASETS
from spin_fast.data.humandata import spin49_to_humandata, write_humandata, write_static_fits
from spin_fast.geometry import rotmat_to_axis_angle
from spin_fast.render import project, render_mesh

FORMAT_VERSION = 2  # 2: bboxes.json beside each dataset's images
MARKER = "SYNTHETIC_DATASETS.txt"
PER_DATASET = 32
# dataset -> (fraction with has_smpl, writes keypoints3d, gendered)
PROFILE = {"h36m": (1.0, True, False), "mpi_inf_3dhp": (0.5, True, False), "lsp": (0.0, False, False),
           "lspet": (0.0, False, False), "mpii": (0.0, False, False), "coco": (0.0, False, False),
           "pw3d": (1.0, True, True)}


# --- poses and shapes ---------------------------------------------------------------------------
def _axis_rot(axis: str, a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    m = {"x": [o, z, z, z, c, -s, z, s, c], "y": [c, z, s, z, o, z, -s, z, c], "z": [c, -s, z, s, c, z, z, z, o]}[axis]
    return np.stack(m, -1).reshape(*a.shape, 3, 3)


def sample_pose(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 72) axis-angle: standing with arms down, perturbed within joint limits, any yaw.

    Model frame: y up, facing +z, subject's left at +x. Ranges are per SMPL joint (index in 0..23).
    """
    bp = np.zeros((n, 24, 3))

    def u(lo, hi):
        return rng.uniform(lo, hi, n)

    def g(s, lim):
        return np.clip(rng.normal(0, s, n), -lim, lim)

    for j in (3, 6, 9):                                   # spine: small bends and twists
        bp[:, j] = np.stack([g(0.12, 0.35), g(0.12, 0.35), g(0.08, 0.25)], -1)
    bp[:, 12] = np.stack([g(0.15, 0.4), g(0.2, 0.5), g(0.1, 0.3)], -1)     # neck
    bp[:, 15] = np.stack([g(0.15, 0.4), g(0.2, 0.5), g(0.1, 0.3)], -1)     # head
    for side, (hip, knee, ankle, collar, sh, el, wr) in ((+1, (1, 4, 7, 13, 16, 18, 20)),
                                                          (-1, (2, 5, 8, 14, 17, 19, 21))):
        # side +1 = left (+x). Mirror = negate y and z rotations.
        bp[:, hip] = np.stack([u(-1.3, 0.3), g(0.15, 0.4) * side, side * u(-0.1, 0.45)], -1)  # flex fwd (x<0), abduct
        bp[:, knee, 0] = np.abs(rng.normal(0, 0.7, n)).clip(0, 2.2)                      # knees bend backwards
        bp[:, ankle] = np.stack([g(0.2, 0.5), g(0.1, 0.3), g(0.1, 0.3)], -1)
        bp[:, collar] = np.stack([g(0.05, 0.15), g(0.1, 0.25) * side, g(0.1, 0.25) * side], -1)
        lower = u(-1.5, 0.3)                              # arm from T-pose towards the body (left: z < 0)
        bp[:, sh] = np.stack([g(0.3, 0.8), side * u(-0.9, 0.5), side * lower], -1)
        bp[:, el, 1] = side * -np.abs(rng.normal(0, 0.9, n)).clip(0, 2.3)                 # elbows bend forwards
        bp[:, wr] = np.stack([g(0.3, 0.6), g(0.2, 0.5), g(0.3, 0.6)], -1)
    # global orient in the camera frame (x right, y down, z forward): upright, facing the camera
    # (R_x(pi)), then any yaw about the vertical and a little tilt.
    R = (_axis_rot("z", g(0.08, 0.25)) @ _axis_rot("x", g(0.1, 0.3)) @ _axis_rot("y", u(-np.pi, np.pi))
         @ _axis_rot("x", np.full(n, np.pi)))
    bp[:, 0] = rotmat_to_axis_angle(torch.from_numpy(R)).numpy()
    return bp.reshape(n, 72)


def part_colors(weights: np.ndarray, faces: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """(F, 3) colours in [0, 1]: each face takes the colour of the joint with the largest summed
    skinning weight over its vertices; left limbs warm, right limbs cool, torso/head distinct."""
    part = weights[faces].sum(1).argmax(1)
    hues = np.zeros(24)
    sat = np.full(24, 0.75)
    val = np.full(24, 0.9)
    left = [1, 4, 7, 10, 13, 16, 18, 20, 22]
    right = [2, 5, 8, 11, 14, 17, 19, 21, 23]
    hues[left] = np.linspace(0.0, 0.17, len(left))
    hues[right] = np.linspace(0.45, 0.72, len(right))
    hues[[0, 3, 6, 9]] = [0.8, 0.85, 0.9, 0.95]
    hues[[12, 15]] = [0.3, 0.35]
    sat[[12, 15]] = 0.4
    palette = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hues, sat, val)])
    if rng is not None:
        palette = np.clip(palette * rng.uniform(0.85, 1.15, 3), 0, 1)
    return palette[part]


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    import PIL.Image

    low = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    bg = np.asarray(PIL.Image.fromarray(low).resize((w, h), PIL.Image.Resampling.BILINEAR), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(0, 6)):  # blobs and bars
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(5, w / 3), rng.uniform(5, h / 3)
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1 if rng.uniform() < 0.5 else \
            (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry / 4)
        bg[m] = rng.uniform(0, 255, 3)
    bg += rng.normal(0, rng.uniform(0, 8), bg.shape)
    return np.clip(bg, 0, 255).astype(np.uint8)


# --- one dataset ------------------------------------------------------------------------------------
def render_dataset(name: str, n: int, paths: AssetPaths, bodies: dict, rng: np.random.Generator,
                   progress=None) -> dict:
    """Render n samples of dataset `name` and write its images, HumanData file and static fits
    (`progress`: a spin_fast.progress.Progress advanced once an image)."""
    from PIL import Image

    spec = DATASETS[name]
    smpl_frac, with_3d, gendered = PROFILE[name]
    pose = sample_pose(rng, n)
    betas = np.clip(rng.normal(0, 0.8, (n, 10)), -2.5, 2.5)
    gender = rng.choice(["m", "f"], n) if gendered else np.array(["n"] * n)
    verts = np.zeros((n, 6890, 3))
    joints = np.zeros((n, 49, 3))
    for g, key in (("n", "neutral"), ("m", "male"), ("f", "female")):
        sel = gender == g
        if sel.any():
            body = bodies[key]
            t = lambda a: torch.from_numpy(a[sel]).float()  # noqa: E731
            with torch.no_grad():
                out = body(t(betas), t(pose[:, 3:]), t(pose[:, :3]), joint_set="smpl_49")
            verts[sel], joints[sel] = out.vertices.double().numpy(), out.joints.double().numpy()
    faces = bodies["neutral"].faces.numpy()
    weights = bodies["neutral"].lbs_weights.numpy()

    image_dir = paths.images(spec.image_folder)
    image_paths, bboxes, kp2d, transl = [], np.zeros((n, 4)), np.zeros((n, 49, 3)), np.zeros((n, 3))
    for i in range(n):
        W, H = int(rng.integers(160, 321)), int(rng.integers(180, 341))
        tz = rng.uniform(3.5, 9.0)
        focal = rng.uniform(0.45, 0.85) * H * tz / 1.75
        center = (W / 2 + rng.normal(0, 3), H / 2 + rng.normal(0, 3))
        pelvis = joints[i, GT_PELVIS_MPII]
        target = np.array([W / 2 + rng.normal(0, 0.12 * W), H / 2 + rng.normal(0, 0.08 * H)])
        # pelvis at depth tz, projected onto target
        t = np.r_[(target - np.asarray(center)) * tz / focal - pelvis[:2], tz - pelvis[2]]
        transl[i] = t
        v = verts[i] + t
        img, _, _ = render_mesh(v, faces, part_colors(weights, faces, rng), focal, center, W, H,
                                background=_background(rng, W, H),
                                light_dir=(rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), 1.0))
        rel = f"images/{i:05d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        atomic_write_bytes(image_dir / rel, buf.getvalue())
        image_paths.append(rel)
        uv = project(joints[i] + t, focal, center)
        visible = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (rng.uniform(size=49) > 0.1)
        kp2d[i] = np.c_[uv, visible]
        vuv = project(v, focal, center)
        lo, hi = vuv.min(0), vuv.max(0)
        c, wh = (lo + hi) / 2, (hi - lo) * rng.uniform(1.05, 1.2)
        bboxes[i] = [c[0] - wh[0] / 2, c[1] - wh[1] / 2, wh[0], wh[1]]
        if progress is not None:
            progress.update(1)

    atomic_write_json({Path(rel).name: [round(float(v), 2) for v in box] for rel, box in zip(image_paths, bboxes)},
                      image_dir / "bboxes.json")
    has_smpl = rng.uniform(size=n) < smpl_frac
    smpl_pose = np.where(has_smpl[:, None], pose, 0.0)
    smpl_betas = np.where(has_smpl[:, None], betas, 0.0)
    kp3d = None
    if with_3d:
        k3 = np.concatenate([joints, np.ones((n, 49, 1))], -1)
        k3[:, :NUM_OPENPOSE_JOINTS, 3] = 0  # 3D ground truth covers the 24 GT joints, not the OpenPose ones
        kp3d = spin49_to_humandata(k3)[0]
    write_humandata(paths.preprocessed(spec.ann_file), image_path=image_paths, bbox_xywh=bboxes,
                    keypoints2d=spin49_to_humandata(kp2d)[0], keypoints3d=kp3d,
                    smpl={"body_pose": smpl_pose[:, 3:].reshape(n, 23, 3), "global_orient": smpl_pose[:, :3],
                          "betas": smpl_betas, "transl": transl},
                    has_smpl=has_smpl, gender=gender if gendered else None,
                    config=f"spin_fast synthetic {name}")
    if spec.fits is not None:
        noisy = np.concatenate([pose + rng.normal(0, 0.08, pose.shape), betas + rng.normal(0, 0.3, betas.shape)], 1)
        write_static_fits(paths.static_fits(spec.fits), noisy)
    return {"n": n, "pose": pose, "betas": betas, "gender": gender, "joints": joints, "transl": transl}


def write_synthetic_datasets(root: str | os.PathLike, assets: str | os.PathLike | None = None, scale: int = 1,
                             seed: int = 0, per_dataset: int | None = None,
                             names=TRAIN_DATASETS + TEST_DATASETS) -> AssetPaths:
    """Render the synthetic datasets under `root` (the mmhuman3d `data/` folder); body model files
    from `assets` (default: root itself, written there when missing)."""
    paths = AssetPaths(Path(root))
    model_paths = AssetPaths(Path(assets)) if assets is not None else paths
    if not all(p.is_file() for p in model_paths.body_model_files()):
        if assets is not None:
            model_paths.check_body_model_files()  # names what is missing
        from spin_fast.assets import write_assets

        write_assets(model_paths.root, seed=0)
    from spin_fast.body import BodyModel

    bodies = {g: BodyModel.from_paths(model_paths, g, dtype=torch.float32) for g in ("neutral", "male", "female")}
    n = per_dataset if per_dataset is not None else PER_DATASET * int(scale)
    from spin_fast.progress import Progress

    with Progress(n * len(names), "synth", unit="img") as bar:
        for k, name in enumerate(names):
            render_dataset(name, n, paths, bodies, np.random.default_rng([seed, k]), progress=bar)
    atomic_write_bytes(paths.root / MARKER, _marker(scale, seed, n).encode())
    return paths


def _marker(scale, seed, n) -> str:
    return f"spin_fast synthetic datasets, format {FORMAT_VERSION}, scale {scale}, seed {seed}, {n} a dataset\n"


def open_data_root(data_root: str | os.PathLike | None = None, *, scale: int = 1, rank: int = 0,
                   barrier=None) -> tuple[AssetPaths, bool]:
    """(paths, synthetic) of what a command runs on: `data_root`, else $SPIN_FAST_DATA_ROOT, else the
    synthetic stand-in (`synthetic` True), whose body model files and datasets at `scale` are written
    on first use and announced, by rank 0; `barrier()` (several processes) then waits for them."""
    from spin_fast.assets import resolve_data_root
    from spin_fast.config import configured_data_root

    synthetic = configured_data_root(data_root) is None
    paths = resolve_data_root(data_root, announce=rank == 0)
    if synthetic:
        if rank == 0:
            ensure_synthetic_dataset(paths.root, scale=scale, announce=True)
        if barrier is not None:
            barrier()
    return paths, synthetic


def ensure_synthetic_dataset(root: str | os.PathLike, scale: int = 1, announce: bool = True, seed: int = 0) -> AssetPaths:
    """Write the synthetic datasets under root unless the same ones are already there."""
    paths = AssetPaths(Path(root))
    marker = paths.root / MARKER
    want = _marker(scale, seed, PER_DATASET * int(scale))
    if marker.is_file() and marker.read_text() == want:
        return paths
    if announce:
        print(f"spin_fast: rendering the synthetic datasets (scale {scale}) into {paths.root}", file=sys.stderr)
    return write_synthetic_datasets(root, scale=scale, seed=seed)
