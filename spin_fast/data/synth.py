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
    static_fits/<name>_fits.npy                     (N, 82): SMPLify fits of the dataset's own 2D keypoints
                                                    from the mean pose (`spin_fast.fit --init mean`, SPIN's
                                                    recipe), as SPIN's real static fits were made, with the
                                                    fit's report beside it (<name>_fits.report.json)
    SYNTHETIC_DATASETS.json                         the manifest: what was rendered and the static fits'
                                                    quality (reprojection px, MPJPE / PA-MPJPE to the truth
                                                    where the set has SMPL)

and the test splits scored on 3D joints (`render_keypoint_test_split`), few samples each:
h36m_valid_protocol{1,2}.npz (Human3.6M protocol 1: 4 cameras a frame; protocol 2: the frontal one) and
mpi_inf_3dhp_test.npz, with the images their image_path names under datasets/h36m and
datasets/mpi_inf_3dhp: keypoints3d / keypoints2d of the 17 H36M joints, no SMPL (as the real files).

Poses are perturbations of a standing rest pose inside sane joint ranges (knees and elbows bend one
way), shapes N(0, 0.8), camera distance 3.5-9 m, yaw all around, people anywhere in the frame.
Every face is coloured by the body part that moves it most (left and right differ), flat-shaded,
so the pose is visible in the pixels. About 6 s of CPU time at the default size (`scale=1`: 32 a
dataset; the keypoint test splits 16 + 8 images, about 1 s); with the body model files written first,
the whole stand-in takes 11-18 s on 2 idle cores.
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
from spin_fast.constants import (GT_PELVIS_MPII, H36M_HUMANDATA_COLUMNS, H36M_PELVIS, HUMAN_DATA_NUM_KEYPOINTS,
                                 NUM_OPENPOSE_JOINTS)
from spin_fast.data.datasets import DATASETS, TEST_DATASETS, TRAIN_DATASETS
from spin_fast.data.humandata import spin49_to_humandata, write_humandata
from spin_fast.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle
from spin_fast.render import project, render_mesh

FORMAT_VERSION = 4  # 2: bboxes.json beside each dataset's images; 3: the Human3.6M and MPI-INF-3DHP test splits;
#                    4: static fits made by SMPLify (before: the true parameters plus noise) and the manifest
MARKER = "SYNTHETIC_DATASETS.txt"
MANIFEST = "SYNTHETIC_DATASETS.json"
# The static fits: SPIN's real ones are its own SMPLify's fits from the mean pose (SPIN's README,
# data/static_fits), so the stand-in's are `spin_fast.fit --init mean --preset spin` at that recipe's
# iterations, on the keypoints each training set holds (visible ones only, as a real annotation).
STATIC_FIT_PRESET = "spin"
# ... under this many torch threads whatever the process's own count: a reduction split over another
# number of threads rounds differently, and the last-bit differences in the fits grow into different
# training runs. One: every machine has it, and a test suite running several workers side by side does
# not oversubscribe its cores while each renders its stand-in.
STATIC_FIT_THREADS = 1
PER_DATASET = 32
# The keypoint test splits (ground truth = 3D joints, no SMPL in the file), smaller than the others:
# Human3.6M: per_dataset // 8 frames (at least 1), each seen by the 4 cameras (protocol 1; protocol 2 =
# the frontal camera's quarter of them, the same images); MPI-INF-3DHP: per_dataset // 4 (at least 2).
H36M_CAMERAS = ("54138969", "55011271", "58860488", "60457274")
H36M_P2_CAMERA = "60457274"
KEYPOINT_TEST_SETS = ("h36m-p1", "h36m-p2", "mpi-inf-3dhp")
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
    """Render n samples of dataset `name` and write its images and HumanData file (its static fits are
    made from them afterwards: `write_static_fits_by_smplify`; `progress`: a spin_fast.progress.Progress advanced once an image)."""
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
    return {"n": n, "pose": pose, "betas": betas, "gender": gender, "joints": joints, "transl": transl}


def _h36m_frames(n: int) -> int:
    return max(1, n // 8)


def _mpi_inf_3dhp_test_size(n: int) -> int:
    return max(2, n // 4)


def _split_sizes(name: str, n: int) -> int:
    """Images rendered for dataset `name` at `n` a dataset (h36m-p2 shares h36m-p1's)."""
    if name == "h36m-p1":
        return _h36m_frames(n) * len(H36M_CAMERAS)
    if name == "h36m-p2":
        return 0
    if name == "mpi-inf-3dhp":
        return _mpi_inf_3dhp_test_size(n)
    return n


def _view(rng: np.random.Generator, verts: np.ndarray, pelvis: np.ndarray, faces, weights, W: int, H: int,
          fill: tuple[float, float], spread: float):
    """Place a body (model frame at the origin) in front of a camera and render it: the pelvis at depth
    3.5-9 m, the body `fill` of the image height, `spread` (fraction of the image) off centre.
    Returns (JPEG bytes, translation (3,), focal, principal point)."""
    from PIL import Image

    tz = rng.uniform(3.5, 9.0)
    focal = rng.uniform(*fill) * H * tz / 1.75
    center = (W / 2 + rng.normal(0, 3), H / 2 + rng.normal(0, 3))
    target = np.array([W / 2 + rng.normal(0, spread * W), H / 2 + rng.normal(0, spread * H)])
    t = np.r_[(target - np.asarray(center)) * tz / focal - pelvis[:2], tz - pelvis[2]]
    img, _, _ = render_mesh(verts + t, faces, part_colors(weights, faces, rng), focal, center, W, H,
                            background=_background(rng, W, H),
                            light_dir=(rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), 1.0))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue(), t, focal, center


def _h36m_columns(joints17: np.ndarray, conf: float = 1.0) -> np.ndarray:
    """(N, 17, C) H36M-17 joints -> (N, 190, C + 1) HumanData keypoints (mmhuman3d's 'h36m' names)."""
    out = np.zeros((len(joints17), HUMAN_DATA_NUM_KEYPOINTS, joints17.shape[-1] + 1), np.float32)
    out[:, H36M_HUMANDATA_COLUMNS, :-1] = joints17
    out[:, H36M_HUMANDATA_COLUMNS, -1] = conf
    return out


def _h36m_mask() -> np.ndarray:
    mask = np.zeros(HUMAN_DATA_NUM_KEYPOINTS, np.uint8)
    mask[H36M_HUMANDATA_COLUMNS] = 1
    return mask


def render_keypoint_test_split(name: str, n: int, paths: AssetPaths, bodies: dict, rng: np.random.Generator,
                               progress=None) -> dict:
    """Render a test split scored on 3D joints, as mmhuman3d's converters write it: `h36m-p1` (which
    also writes `h36m-p2`, its frontal camera's samples) or `mpi-inf-3dhp`, at `n` a dataset.

    Neutral bodies; the ground truth is the stand-in's H36M-17 joints (J_regressor_h36m of the rendered
    mesh) in the camera frame, pelvis-centred, confidence 1, in the HumanData columns of their names
    (keypoints3d, keypoints2d and their masks hold those 17 columns only); no `smpl`, `has_smpl`, `meta`.
    Human3.6M: subjects S9 and S11, every frame seen by 4 cameras round the subject, image paths
    `S9/images/S9_<action>.<camera>/S9_<action>.<camera>_<frame:06d>.jpg`, box = the silhouette's, side x0.9
    (H36mConverter). MPI-INF-3DHP: `mpi_inf_3dhp_test_set/TS<k>/imageSequence/img_<frame:06d>.jpg`, every
    joint inside the image, box = the 2D joints', side x1.2 (MpiInf3dhpConverter test mode)."""
    body = bodies["neutral"]
    faces = body.faces.numpy()
    weights = body.lbs_weights.numpy()
    h36m = name in ("h36m-p1", "h36m-p2")
    frames = _h36m_frames(n) if h36m else _mpi_inf_3dhp_test_size(n)
    pose = sample_pose(rng, frames)
    betas = np.clip(rng.normal(0, 0.8, (frames, 10)), -2.5, 2.5)
    views = []  # (frame, camera name, pose (72,))
    for f in range(frames):
        if h36m:
            yaw0 = rng.uniform(-np.pi, np.pi)
            for c, cam in enumerate(H36M_CAMERAS):  # the cameras stand round the subject, 90 degrees apart
                p = pose[f].copy()
                orient = axis_angle_to_rotmat(torch.from_numpy(p[:3])).numpy()
                R = _axis_rot("y", np.array(yaw0 + c * np.pi / 2)) @ orient
                p[:3] = rotmat_to_axis_angle(torch.from_numpy(R[None])).numpy()[0]
                views.append((f, cam, p))
        else:
            views.append((f, None, pose[f]))
    m = len(views)
    all_pose = np.stack([v[2] for v in views])
    all_betas = betas[[v[0] for v in views]]
    with torch.no_grad():
        out = body(torch.from_numpy(all_betas).float(), torch.from_numpy(all_pose[:, 3:]).float(),
                   torch.from_numpy(all_pose[:, :3]).float(), joint_set="h36m_17")
    verts, j17 = out.vertices.double().numpy(), out.joints.double().numpy()

    folder = DATASETS[name].image_folder
    image_dir = paths.images(folder)
    image_paths, bboxes, kp2d, kp3d = [], np.zeros((m, 4)), np.zeros((m, 17, 2)), np.zeros((m, 17, 3))
    subjects = ("S9", "S11")
    actions = ("Directions_1", "Walking_1", "Posing_1", "Sitting_1")
    for i, (f, cam, _) in enumerate(views):
        W, H = (int(rng.integers(200, 257)), int(rng.integers(200, 257))) if h36m else (256, 256)
        pelvis = j17[i, H36M_PELVIS]
        fill, spread = ((0.45, 0.85), 0.1) if h36m else ((0.45, 0.7), 0.03)
        for _ in range(20):  # MPI-INF-3DHP's test frames have every joint inside the image
            data, t, focal, center = _view(rng, verts[i], pelvis, faces, weights, W, H, fill, spread)
            uv = project(j17[i] + t, focal, center)
            if h36m or ((uv >= 0) & (uv < [W, H])).all():
                break
        if h36m:
            subject, action = subjects[f % 2], actions[(f // 2) % len(actions)]
            seq = f"{subject}_{action}.{cam}"
            rel = f"{subject}/images/{seq}/{seq}_{5 * f + 1:06d}.jpg"
            vuv = project(verts[i] + t, focal, center)
            lo, hi = vuv.min(0), vuv.max(0)
            c, wh = (lo + hi) / 2, (hi - lo) * 0.9
        else:
            rel = f"mpi_inf_3dhp_test_set/TS{f % 6 + 1}/imageSequence/img_{f + 1:06d}.jpg"
            lo, hi = uv.min(0), uv.max(0)
            c, wh = (lo + hi) / 2, (hi - lo) * 1.2
        atomic_write_bytes(image_dir / rel, data)
        image_paths.append(rel)
        bboxes[i] = [c[0] - wh[0] / 2, c[1] - wh[1] / 2, wh[0], wh[1]]
        kp2d[i], kp3d[i] = uv, j17[i] - pelvis
        if progress is not None:
            progress.update(1)
    mask = _h36m_mask()
    keep = ({"h36m-p1": np.ones(m, bool), "h36m-p2": np.array([cam == H36M_P2_CAMERA for _, cam, _ in views])}
            if h36m else {name: np.ones(m, bool)})
    for split, sel in keep.items():
        write_humandata(paths.preprocessed(DATASETS[split].ann_file), image_path=np.asarray(image_paths)[sel],
                        bbox_xywh=bboxes[sel], keypoints2d=_h36m_columns(kp2d[sel]),
                        keypoints3d=_h36m_columns(kp3d[sel]), keypoints_mask=mask,
                        config=f"spin_fast synthetic {split}")
    return {"n": m, "pose": all_pose, "betas": all_betas, "joints_h36m": j17, "image_path": image_paths}


def write_synthetic_datasets(root: str | os.PathLike, assets: str | os.PathLike | None = None, scale: int = 1,
                             seed: int = 0, per_dataset: int | None = None,
                             names=TRAIN_DATASETS + TEST_DATASETS, only=None) -> AssetPaths:
    """Render the synthetic datasets under `root` (the mmhuman3d `data/` folder); body model files
    from `assets` (default: root itself, written there when missing). Dataset k of `names` draws from
    the seed (seed, k); `only` (a subset of names) renders just those, each as it would be among `names`."""
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
    names = tuple(names)
    todo = [(k, name) for k, name in enumerate(names) if only is None or name in only]
    if any(name == "h36m-p1" for _, name in todo):  # h36m-p2 is h36m-p1's frontal camera, written with it
        todo = [(k, name) for k, name in todo if name != "h36m-p2"]
    from spin_fast.progress import Progress

    with Progress(sum(_split_sizes("h36m-p1" if name == "h36m-p2" else name, n) for _, name in todo), "synth",
                  unit="img") as bar:
        for k, name in todo:
            rng = np.random.default_rng([seed, k])
            if name in KEYPOINT_TEST_SETS:
                render_keypoint_test_split(name, n, paths, bodies, rng, progress=bar)
            else:
                render_dataset(name, n, paths, bodies, rng, progress=bar)
    fitted = [name for _, name in todo if DATASETS[name].fits is not None]
    if fitted:
        write_static_fits_by_smplify(paths, fitted, model_paths=model_paths, scale=scale, seed=seed, n=n)
    if only is None or set(names) <= set(only) | _present(paths, names):
        atomic_write_bytes(paths.root / MARKER, _marker(scale, seed, n).encode())
    return paths


def write_static_fits_by_smplify(paths: AssetPaths, names, model_paths: AssetPaths | None = None,
                                 scale: int = 1, seed: int = 0, n: int | None = None) -> dict:
    """Fit every training set of `names` under the data root `paths` with SMPLify from the mean pose
    (`spin_fast.fit.run.fit_dataset`, init 'mean', the recipe of STATIC_FIT_PRESET: the fallback to the
    mean parameters for samples it cannot fit included) into its static fits file, and record the fits'
    quality in the manifest (merged with what it holds). model_paths: where the body model, GMM and mean
    parameters are (default: paths). The fits are computed under STATIC_FIT_THREADS torch threads, so
    every machine writes the same files. Returns the manifest."""
    model_paths = paths if model_paths is None else model_paths
    manifest_path = paths.root / MANIFEST
    manifest = {}
    if manifest_path.is_file():
        import json

        manifest = json.loads(manifest_path.read_text())
    quality = manifest.setdefault("static_fits", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(STATIC_FIT_THREADS)
    try:
        for name in names:
            quality[name] = _static_fit(paths, name, model_paths)
    finally:
        torch.set_num_threads(threads)
    manifest.update(format=FORMAT_VERSION, scale=int(scale), seed=int(seed), per_dataset=n,
                    units={"reprojection_px": "crop pixels (224), mean over the visible keypoints",
                           "mpjpe_to_truth_mm": "mm, 14 LSP joints, neutral model, pelvis-aligned",
                           "pa_mpjpe_to_truth_mm": "mm, 14 LSP joints, neutral model, Procrustes-aligned"})
    atomic_write_json(manifest, manifest_path)
    return manifest


def _static_fit(paths: AssetPaths, name: str, model_paths: AssetPaths) -> dict:
    """Fit one training set into its static fits file; its manifest entry."""
    from spin_fast.data.batch import Sources
    from spin_fast.fit.run import FitConfig, fit_dataset, fit_recipe

    spec = DATASETS[name]
    cfg = FitConfig(name, STATIC_FIT_PRESET, init="mean")
    rec = fit_recipe(cfg)
    result = fit_dataset(Sources.from_registry(paths, [name]), model_paths, cfg, paths.static_fits(spec.fits),
                         overwrite=True, progress=True)
    r = result.report
    entry = {"samples": r["num_samples"], "init": "mean", "preset": STATIC_FIT_PRESET,
             "iterations": [rec.stage1_iters, rec.stage2_iters], "valid_fraction": r["valid_fraction"],
             "reprojection_px": r["mean_reprojection_px"], "fit_seconds": round(r["fit_seconds"], 2)}
    if "has_smpl" in r:
        entry.update(with_smpl=r["has_smpl"]["count"], mpjpe_to_truth_mm=r["has_smpl"]["mpjpe"],
                     pa_mpjpe_to_truth_mm=r["has_smpl"]["pa_mpjpe"])
    return entry


def _present(paths: AssetPaths, names) -> set[str]:
    return {name for name in names if DATASETS[name].npz_path(paths).is_file()}


def _marker(scale, seed, n, version: int = FORMAT_VERSION) -> str:
    return f"spin_fast synthetic datasets, format {version}, scale {scale}, seed {seed}, {n} a dataset\n"


def open_data_root(data_root: str | os.PathLike | None = None, *, scale: int = 1, rank: int = 0,
                   barrier=None) -> tuple[AssetPaths, bool]:
    """(paths, synthetic) of what a command runs on: `data_root`, else $SPIN_FAST_DATA_ROOT, else the
    synthetic stand-in (`synthetic` True), whose body model files and datasets at `scale` are written
    on first use and announced, by rank 0; `barrier()` (several processes) then waits for them. A data
    root holding a stand-in (its marker file) is used as it is, and `synthetic` is True too."""
    from spin_fast.assets import resolve_data_root
    from spin_fast.config import configured_data_root

    synthetic = configured_data_root(data_root) is None
    paths = resolve_data_root(data_root, announce=rank == 0)
    if synthetic:
        if rank == 0:
            ensure_synthetic_dataset(paths.root, scale=scale, announce=True)
        if barrier is not None:
            barrier()
    elif (paths.root / MARKER).is_file():  # a stand-in written by `python -m spin_fast.data synth --out DIR`
        synthetic = True  # reported as such by the commands (evaluate's table and report)
    return paths, synthetic


def ensure_synthetic_dataset(root: str | os.PathLike, scale: int = 1, announce: bool = True, seed: int = 0,
                             per_dataset: int | None = None) -> AssetPaths:
    """Write the synthetic datasets under root unless the same ones are already there.

    A stand-in of format 2 or 3 at the same scale and seed is brought up to date: its static fits are
    made again by SMPLify, and (format 2, before the Human3.6M and MPI-INF-3DHP test splits) the new
    splits are rendered under the seeds a fresh render gives them (every dataset draws from (seed, its
    place in the list), and the new ones come last), so the result is the fresh render's. Anything else
    is rendered again."""
    paths = AssetPaths(Path(root))
    marker = paths.root / MARKER
    n = per_dataset if per_dataset is not None else PER_DATASET * int(scale)
    have = marker.read_text() if marker.is_file() else None
    if have == _marker(scale, seed, n):
        return paths
    old = TRAIN_DATASETS + ("pw3d",)
    version = next((v for v in (2, 3) if have == _marker(scale, seed, n, version=v)), None)
    if version is not None and _present(paths, old) == set(old):
        # the images and labels of these datasets are what a fresh render gives: only their static fits
        # (and, before format 3, the keypoint test splits) are new; the marker is written last
        if announce:
            print(f"spin_fast: remaking the static fits of the synthetic datasets in {paths.root} with SMPLify"
                  + (", adding the Human3.6M and MPI-INF-3DHP test splits" if version == 2 else ""), file=sys.stderr)
        write_static_fits_by_smplify(paths, TRAIN_DATASETS, scale=scale, seed=seed, n=n)
        if version == 2:
            return write_synthetic_datasets(root, scale=scale, seed=seed, per_dataset=per_dataset,
                                            only=KEYPOINT_TEST_SETS)
        atomic_write_bytes(marker, _marker(scale, seed, n).encode())
        return paths
    if announce:
        print(f"spin_fast: rendering the synthetic datasets (scale {scale}) into {paths.root}", file=sys.stderr)
    return write_synthetic_datasets(root, scale=scale, seed=seed, per_dataset=per_dataset)
