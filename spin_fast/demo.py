"""`python -m spin_fast.demo --checkpoint CKPT (--images DIR | --video FILE|DIR) --out DIR [--bboxes FILE]
[--mesh-format obj|ply] [--data-root DIR]`

For each image: crop every person (bbox centre -> crop centre, max(w, h) -> 224 px, the test-time
warp), run HMR on all of an image's crops as one batch, pose the neutral SMPL with each prediction, and write

    <out>/<name>.overlay.png      the meshes drawn over the image | a side view (each person turned 90
                                  degrees about the vertical axis through its centre)
    <out>/<name>.person<k>.obj    person k's posed mesh in the image's camera frame (.ply with
                                  --mesh-format ply), k in box order
    <out>/predictions.json        per image: bbox, crop camera, image camera, betas, axis-angle pose
    <out>/smpl_params.npz         every person of the run, in mmhuman3d's HumanData layout (`smpl` with
                                  global_orient, body_pose, betas, transl; bbox_xywh; image_path; the
                                  image camera's focal_length and principal_point): HumanData.fromfile
                                  and smplx.SMPL read it as it is (spin_fast.mesh_io)

The full input name is kept (a.jpg -> a.jpg.overlay.png), so a.jpg and a.png never share an output.
Files are written atomically, predictions.json and smpl_params.npz after every image; an unreadable
image is reported and skipped, the others go on.

--video FILE (read with PyAV, the extra `video`) or a folder of frames (sorted by name; --fps):
`<out>/<name>.overlay.mp4` (overlay | side view, one frame an input frame) and smpl_params.npz (one row a
person a frame, with `frame_index`; image_path the video's name, or the frame's file name); an
unreadable frame is reported and skipped. image_path is relative to the input folder (HumanData's
convention), whose absolute path is `misc["image_root"]`.

Nothing of the user's is written over: --out may not be the --images folder, and a folder that
already holds files is used only with --overwrite (which replaces the demo's own files there, never
an input). Every input is checked before the first image: the checkpoint, the boxes (numbers, w and
h > 0, each overlapping its image, no empty list) and that --out can be written.

Cameras. The network's weak-perspective [s, tx, ty] becomes the crop-space translation
[tx, ty, 2 f / (224 s)] with f = 5000 at crop centre (112, 112); the crop is the image scaled by
224 / side about the bbox centre, so in image pixels the same camera has focal 5000 side / 224 and
principal point at the bbox centre (`image_camera`). Several people share one image camera: focal
F = 5000 max(W, H) / 224 at the image centre (W/2, H/2) (the crop camera of the whole image, so a run
without boxes keeps the crop translation as it is). Person k moves to t' = [tx + (c_x - W/2) t'_z / F,
ty + (c_y - H/2) t'_z / F, t_z F / f_k] (f_k, c: its crop camera): its root projects where the crop
camera put it, its depth scales with its size in the image (so farther people are farther), and every
other point within the body's depth over t_z (~1%) of it (`image_translation`). The meshes, `transl`
and the overlays are in that camera.

--bboxes: JSON {"<file name>": [x, y, w, h]} (one person) or {"<file name>": [[x, y, w, h], ...]}
(several), in image pixels (a fifth value, a confidence, is ignored); images without an entry use the
whole image. Or an mmhuman3d HumanData .npz: its `image_path` (matched by the path under --images, else
the file name) and `bbox_xywh`, each row a person. In predictions.json an image given one box in the
first form has one entry, one given a list has a list. With --video: {"<frame index>": [[x, y, w, h],
...]} or one box (or list of boxes) for every frame.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spin_fast.atomic import atomic_write, atomic_write_bytes, check_writable
from spin_fast.cli import run_command
from spin_fast.constants import FOCAL_LENGTH, IMG_RES
from spin_fast.errors import SpinFastError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
OUTPUT_SUFFIX = ".overlay.png"
VIDEO_SUFFIX = ".overlay.mp4"
PREDICTIONS = "predictions.json"
SMPL_PARAMS = "smpl_params.npz"
MESH_COLOR = (0.65, 0.74, 0.86)
PERSON_COLORS = [MESH_COLOR, (0.90, 0.62, 0.45), (0.55, 0.80, 0.55), (0.85, 0.55, 0.80), (0.90, 0.85, 0.45),
                 (0.50, 0.80, 0.85)]
ALPHA = 0.85
SAVE_EVERY_FRAMES = 50  # a video's smpl_params.npz is rewritten this often (and at the end)


class DemoError(SpinFastError):
    """A demo input or output that cannot be used as given (the message names the file and box)."""


# --- boxes ------------------------------------------------------------------------------------------------
def _parse_box(box, where: str) -> np.ndarray:
    numbers = isinstance(box, list) and len(box) in (4, 5) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    arr = np.asarray(box[:4], dtype=np.float64) if numbers else np.zeros(0)
    if arr.shape != (4,) or not np.all(np.isfinite(arr)) or arr[2] <= 0 or arr[3] <= 0:
        raise DemoError(f"{where} has {box!r}, expected [x, y, w, h] (numbers) with w, h > 0")
    return arr


def parse_boxes(value, where: str) -> np.ndarray:
    """[x, y, w, h] -> (4,); [[x, y, w, h], ...] -> (K, 4); an empty list is refused."""
    if isinstance(value, list) and value and all(isinstance(b, list) for b in value):
        return np.stack([_parse_box(b, f"{where} box {i}") for i, b in enumerate(value)])
    if isinstance(value, list) and not value:
        raise DemoError(f"{where} has an empty box list; give at least one [x, y, w, h], or leave it out to use "
                        "the whole image")
    return _parse_box(value, where)


def _read_json(path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DemoError(f"--bboxes {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DemoError(f"--bboxes {path}: not valid JSON ({e})") from None


def read_bboxes(path: str | os.PathLike, image_names: list[str]) -> dict[str, np.ndarray]:
    """{name: (4,) one box | (K, 4) boxes} (float64) from JSON or a HumanData .npz; names are among
    `image_names` (file names, or paths under --images for a HumanData file)."""
    if str(path).lower().endswith(".npz"):
        return read_humandata_bboxes(path, image_names)
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DemoError(f"--bboxes {path}: expected a JSON object {{file name: [x, y, w, h] or [[x, y, w, h], ...]}}")
    out = {}
    for name, box in raw.items():
        if name not in image_names:
            raise DemoError(f"--bboxes {path}: {name!r} is not an image in --images")
        out[name] = parse_boxes(box, f"--bboxes {path}: {name!r}")
    return out


def read_humandata_bboxes(path, image_names: list[str]) -> dict[str, np.ndarray]:
    """A HumanData .npz's image_path and bbox_xywh -> {name: (K, 4)}, rows of an image in file order."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if "image_path" not in f.files or "bbox_xywh" not in f.files:
                raise DemoError(f"--bboxes {path}: a HumanData file needs image_path and bbox_xywh (it has "
                                f"{', '.join(sorted(f.files)[:8])})")
            image_path, bbox = f["image_path"], f["bbox_xywh"]
    except FileNotFoundError:
        raise DemoError(f"--bboxes {path} does not exist") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DemoError(f"--bboxes {path}: not a readable HumanData .npz (image_path as strings, bbox_xywh "
                        f"numbers): {str(e).splitlines()[0][:160]}") from None
    if bbox.ndim != 2 or bbox.shape[1] not in (4, 5) or len(bbox) != len(image_path):
        raise DemoError(f"--bboxes {path}: bbox_xywh has shape {bbox.shape}, expected ({len(image_path)}, 4 or 5)")
    if not len(image_path):
        raise DemoError(f"--bboxes {path}: an empty box list (no rows)")
    names = set(image_names)
    by_file_name = {Path(n).name: n for n in image_names}
    out: dict[str, list] = {}
    for i, (rel, box) in enumerate(zip(image_path, bbox)):
        rel = str(rel)
        name = rel if rel in names else by_file_name.get(Path(rel).name)
        if name is None:
            raise DemoError(f"--bboxes {path}: row {i}: image_path {rel!r} is not an image in --images")
        out.setdefault(name, []).append(_parse_box([float(v) for v in box], f"--bboxes {path}: row {i} ({rel!r})"))
    return {k: np.stack(v) for k, v in out.items()}


def read_frame_bboxes(path) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """--video's boxes: ({frame index: (4,) | (K, 4)}, None) or ({}, boxes for every frame)."""
    if str(path).lower().endswith(".npz"):
        raise DemoError(f"--bboxes {path}: with --video give JSON {{\"frame index\": [[x, y, w, h], ...]}} or one "
                        "box for every frame")
    raw = _read_json(path)
    if isinstance(raw, list):
        return {}, parse_boxes(raw, f"--bboxes {path}: the box for every frame")
    if not isinstance(raw, dict):
        raise DemoError(f"--bboxes {path}: expected {{\"frame index\": [[x, y, w, h], ...]}} or [x, y, w, h]")
    out = {}
    for key, box in raw.items():
        if not (isinstance(key, str) and key.strip().isdigit()):
            raise DemoError(f"--bboxes {path}: key {key!r} is not a frame index (0, 1, ...)")
        out[int(key)] = parse_boxes(box, f"--bboxes {path}: frame {key}")
    return out, None


def as_boxes(boxes: np.ndarray) -> np.ndarray:
    """(4,) or (K, 4) -> (K, 4)."""
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def box_outside(box, W: int, H: int) -> bool:
    x, y, w, h = box
    return x >= W or y >= H or x + w <= 0 or y + h <= 0


def check_boxes_inside(bboxes: dict[str, np.ndarray], files: list[Path], source) -> None:
    """DemoError naming the file and the box when a box lies wholly outside its image (its crop would
    be black); the size is read from the header (an unreadable image is skipped later, as always)."""
    from spin_fast.data.batch import ImageError, image_size, read_image_bytes

    for f in files:
        if f.name not in bboxes:
            continue
        try:
            W, H = image_size(f, read_image_bytes(f))
        except ImageError:
            continue
        for k, box in enumerate(as_boxes(bboxes[f.name])):
            if box_outside(box, W, H):
                which = "" if bboxes[f.name].ndim == 1 else f" box {k}"
                raise DemoError(f"--bboxes {source}: {f.name!r}{which} has box {[float(v) for v in box]}, wholly "
                                f"outside the image ({W} x {H} pixels)")


# --- outputs ----------------------------------------------------------------------------------------------
def output_name(image: Path) -> str:
    """a.jpg -> a.jpg.overlay.png: distinct inputs never share an output, and none is an image input."""
    return image.name + OUTPUT_SUFFIX


def mesh_name(image: Path, person: int, fmt: str) -> str:
    """a.jpg, person 1 -> a.jpg.person1.obj."""
    return f"{image.name}.person{person}.{fmt}"


def check_outputs(out_dir: Path, inputs_dir: Path | None, files: list[Path], overwrite: bool, targets: list[Path],
                  what: str = "--images") -> None:
    """Refuse an --out that is the inputs' folder (None: a single input file), or that already holds
    files (unless `overwrite`), or where an output would be one of the inputs."""
    if out_dir.is_dir() and inputs_dir is not None and inputs_dir.is_dir() and os.path.samefile(out_dir, inputs_dir):
        raise DemoError(f"--out {out_dir} is the {what} folder: the renders would be written among the "
                        "inputs; choose another folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        shown = sorted(p.name for p in out_dir.iterdir())
        raise DemoError(f"--out {out_dir} already holds files ({', '.join(shown[:4])}"
                        f"{' ...' if len(shown) > 4 else ''}); choose another folder, or pass --overwrite to "
                        "replace the demo's own files there")
    for target in targets:
        if target.exists() and any(f.exists() and os.path.samefile(target, f) for f in files):
            raise DemoError(f"--out {out_dir}: {target.name} is one of the inputs; choose another folder")


# --- cameras and prediction -------------------------------------------------------------------------------
def crop_person(image: np.ndarray, bbox_xywh: np.ndarray):
    """(H, W, 3) uint8 and [x, y, w, h] -> (normalised crop (3, 224, 224) float32, centre (2,), side)."""
    from spin_fast.data.augment import AugParams, crop_matrix, noise_and_normalize
    from spin_fast.data.reference_loader import warp_image
    from PIL import Image

    x, y, w, h = bbox_xywh
    center = np.array([x + w / 2, y + h / 2])
    side = float(max(w, h))
    M = crop_matrix(center[None], np.array([side]), AugParams.identity(1))
    crop = warp_image(Image.fromarray(image), M[0], IMG_RES)
    return noise_and_normalize(crop, np.ones(3, np.float32)), center, side


def image_camera(center, side: float) -> tuple[float, np.ndarray]:
    """(focal, principal point) in image pixels of the crop camera (f = 5000 at (112, 112)) of the
    crop with this bbox centre and side (see the module docstring)."""
    return FOCAL_LENGTH * side / IMG_RES, np.asarray(center, np.float64)


def full_image_camera(width: int, height: int) -> tuple[float, np.ndarray]:
    """(focal, principal point) of the camera every person of a W x H image is placed in: the crop
    camera of the whole image (the module docstring)."""
    return image_camera([width / 2, height / 2], max(width, height))


def image_translation(cam_t: np.ndarray, centers: np.ndarray, sides: np.ndarray, width: int,
                      height: int) -> np.ndarray:
    """(K, 3) crop-camera translations -> (K, 3) translations in `full_image_camera(W, H)`: each root
    projects to the same pixel, depths scale with 1 / the person's size (the module docstring)."""
    F, C = full_image_camera(width, height)
    f = FOCAL_LENGTH * np.asarray(sides, np.float64) / IMG_RES
    tz = cam_t[:, 2] * F / f
    txy = cam_t[:, :2] + (np.asarray(centers, np.float64) - C) * tz[:, None] / F
    return np.concatenate([txy, tz[:, None]], 1)


@dataclass
class People:
    """The people of one image, in box order: all arrays (K, ...) float64 on the CPU."""

    boxes: np.ndarray        # (K, 4) x, y, w, h
    cam: np.ndarray          # (K, 3) the network's weak-perspective [s, tx, ty]
    cam_t_crop: np.ndarray   # (K, 3) translation in each crop's camera
    transl: np.ndarray       # (K, 3) translation in the image camera
    focal: float             # the image camera
    principal_point: np.ndarray  # (2,)
    betas: np.ndarray        # (K, 10)
    pose: np.ndarray         # (K, 72) axis-angle, global orient first
    vertices: np.ndarray     # (K, 6890, 3) posed, in the image camera's frame (transl added)


def predict_people(model, body, image: np.ndarray, boxes: np.ndarray, device) -> People:
    """Every box of `image` through the network as one batch, then SMPL (the module docstring)."""
    from spin_fast.geometry import rotmat_to_axis_angle, weak_perspective_to_translation

    H, W = image.shape[:2]
    crops, centers, sides = zip(*(crop_person(image, b) for b in boxes))
    out = model(torch.from_numpy(np.stack(crops)).to(device))
    rotmat, betas, cam = out.rotmat.float(), out.betas.float(), out.cam.float()
    cam_t = weak_perspective_to_translation(cam).cpu().numpy().astype(np.float64)
    transl = image_translation(cam_t, np.stack(centers), np.array(sides), W, H)
    mesh = body(betas, rotmat[:, 1:], rotmat[:, :1], joint_set="smpl_24")  # transl added below, in float64
    focal, pp = full_image_camera(W, H)
    K = len(boxes)
    return People(boxes=np.asarray(boxes, np.float64), cam=cam.cpu().numpy().astype(np.float64), cam_t_crop=cam_t,
                  transl=transl, focal=focal, principal_point=pp, betas=betas.cpu().numpy().astype(np.float64),
                  pose=rotmat_to_axis_angle(rotmat).reshape(K, 72).cpu().numpy().astype(np.float64),
                  vertices=mesh.vertices.cpu().numpy().astype(np.float64) + transl[:, None])


def draw(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, focal: float, center, render=None) -> np.ndarray:
    """The people (K, V, 3) (camera frame, metres) over `image` in the camera (focal, center), beside
    their side view. One z-buffered render, the farther people first (nearer ones cover them)."""
    if render is None:
        from spin_fast.render import render_mesh as render
    H, W = image.shape[:2]
    vertices = np.asarray(vertices, np.float64).reshape(-1, *np.shape(vertices)[-2:])
    order = np.argsort(-vertices[:, :, 2].mean(1), kind="stable")  # farther first
    V = vertices.shape[1]
    v = np.concatenate([vertices[k] for k in order])
    f = np.concatenate([faces + i * V for i in range(len(order))])
    colors = np.concatenate([np.tile(np.asarray(PERSON_COLORS[k % len(PERSON_COLORS)]), (len(faces), 1))
                             for k in order])
    front, mask, _ = render(v, f, colors, focal, center, W, H, background=image)
    overlay = image.copy()
    overlay[mask] = np.round(ALPHA * front[mask] + (1 - ALPHA) * image[mask]).astype(np.uint8)
    # side view: turn each person 90 degrees about the vertical (y) axis through its own centre
    Ry = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    c = np.repeat(np.stack([vertices[k].mean(0) for k in order]), V, axis=0)
    side_v = (v - c) @ Ry.T + c
    white = np.full_like(image, 255)
    side_img, _, _ = render(side_v, f, colors, focal, center, W, H, background=white)
    return np.concatenate([overlay, side_img], axis=1)


def person_records(people: People) -> list[dict]:
    """predictions.json's entry of each person."""
    return [{"bbox_xywh": [float(b) for b in people.boxes[k]], "cam": people.cam[k].tolist(),
             "cam_t_crop": people.cam_t_crop[k].tolist(), "transl": people.transl[k].tolist(),
             "focal_length": float(people.focal), "principal_point": people.principal_point.tolist(),
             "betas": people.betas[k].tolist(), "pose_axis_angle": people.pose[k].tolist()}
            for k in range(len(people.boxes))]


class ParamsTable:
    """The rows of smpl_params.npz (one a person), written atomically as HumanData: image_path relative
    to `image_root` (HumanData's convention), which `misc` holds as an absolute path."""

    def __init__(self, image_root: Path):
        self.image_root = Path(image_root).resolve()
        self.rows: list[tuple[str, int, int, People]] = []  # (image path, frame index, person index, people)

    def add(self, image_path: str, people: People, frame_index: int = -1) -> None:
        for k in range(len(people.boxes)):
            self.rows.append((image_path, frame_index, k, people))

    def write(self, path: Path, video: bool = False) -> None:
        from spin_fast.mesh_io import humandata_smpl_bytes

        def col(get):
            return np.stack([get(p, k) for _, _, k, p in self.rows])

        pose = col(lambda p, k: p.pose[k])
        extra = {"focal_length": col(lambda p, k: np.float32(p.focal)),
                 "principal_point": col(lambda p, k: p.principal_point.astype(np.float32)),
                 "person_index": np.array([k for _, _, k, _ in self.rows], np.int64)}
        if video:
            extra["frame_index"] = np.array([i for _, i, _, _ in self.rows], np.int64)
        misc = {"camera": "pinhole, principal point (W/2, H/2), focal 5000 max(W, H) / 224 pixels; x right, y down, "
                          "z forward; smpl.transl places each person in it", "gender": "neutral",
                "image_root": str(self.image_root)}
        data = humandata_smpl_bytes([p for p, _, _, _ in self.rows], col(lambda p, k: p.boxes[k]), pose[:, :3],
                                    pose[:, 3:], col(lambda p, k: p.betas[k]), col(lambda p, k: p.transl[k]),
                                    config="spin_fast_demo", misc=misc, extra=extra)
        atomic_write_bytes(path, data)


# --- inputs -----------------------------------------------------------------------------------------------
def list_images(folder: Path, flag: str = "--images") -> list[Path]:
    if not folder.is_dir():
        raise DemoError(f"{flag} {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DemoError(f"{flag} {folder}: no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="HMR weights (mmhuman3d, SPIN or spin_fast)")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of .jpg/.png images")
    source.add_argument("--video", help="a video file (PyAV: the extra `video`) or a folder of frames")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--bboxes", help='JSON {"file name": [x, y, w, h] or [[x, y, w, h], ...]}, a HumanData .npz, '
                                     'or with --video {"frame index": [[x, y, w, h], ...]}; default: the whole image')
    ap.add_argument("--mesh-format", choices=("obj", "ply"), default="obj", help="each person's mesh file (images)")
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate of the overlay video of a frames folder")
    ap.add_argument("--data-root", help="SMPL assets (default: $SPIN_FAST_DATA_ROOT, else the synthetic stand-in)")
    ap.add_argument("--backbone", choices=("resnet50", "resnet18"), help="default: read from the checkpoint")
    ap.add_argument("--device", help="default: cuda if available, else cpu")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="allow full unpickling of a checkpoint that weights_only=True refuses")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into an --out folder that already holds files (the demo's own files are replaced)")
    return ap


def main(argv=None) -> int:
    """The command, through the one handler of every command (spin_fast.cli): a user error is one
    line and exit status 2."""
    return run_command("demo", run, argv)


def _load(args):
    """(device, body, faces, model) once the inputs are checked."""
    from spin_fast.body import BodyModel
    from spin_fast.assets import resolve_data_root
    from spin_fast.config import parse_device
    from spin_fast.model.checkpoint_import import load_model

    device = parse_device(args.device)
    if device.type == "cuda":  # Triton launches on the current device, whatever the tensors' device
        torch.cuda.set_device(device)
    paths = resolve_data_root(args.data_root)
    body = BodyModel.from_paths(paths).to(device)
    faces = body.faces.cpu().numpy()
    model = load_model(args.checkpoint, paths.mean_params, args.backbone, trust=args.trust_checkpoint, device=device)
    return device, body, faces, model


@torch.no_grad()
def run(argv=None) -> list[Path]:
    """The demo on the command line `argv`; returns the overlays written (images, or the video)."""
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        raise DemoError(f"--checkpoint {args.checkpoint} does not exist")
    if args.video is not None:
        return run_video(args)
    from PIL import Image
    from spin_fast.data.batch import ImageError, decode_image

    files = list_images(Path(args.images))
    bboxes = read_bboxes(args.bboxes, [f.name for f in files]) if args.bboxes else {}
    check_boxes_inside(bboxes, files, args.bboxes)
    out_dir = Path(args.out)
    targets = [out_dir / output_name(f) for f in files] + [out_dir / PREDICTIONS, out_dir / SMPL_PARAMS]
    targets += [out_dir / mesh_name(f, k, args.mesh_format) for f in files
                for k in range(len(as_boxes(bboxes[f.name])) if f.name in bboxes else 1)]
    check_outputs(out_dir, Path(args.images), files, args.overwrite, targets)
    check_writable(out_dir, "--out")
    device, body, faces, model = _load(args)
    from spin_fast.mesh_io import write_mesh

    written, predictions, skipped, table = [], {}, [], ParamsTable(Path(args.images))
    for f in files:
        try:
            image = decode_image(f)
        except ImageError as e:
            print(f"skipped {e}", file=sys.stderr)
            skipped.append(f.name)
            continue
        H, W = image.shape[:2]
        given = bboxes.get(f.name, np.array([0.0, 0.0, W, H]))
        people = predict_people(model, body, image, as_boxes(given), device)
        canvas = draw(image, people.vertices, faces, people.focal, people.principal_point)
        meshes = [write_mesh(out_dir / mesh_name(f, k, args.mesh_format), people.vertices[k], faces)
                  for k in range(len(people.boxes))]
        buf = io.BytesIO()
        Image.fromarray(canvas).save(buf, format="PNG")
        target = out_dir / output_name(f)
        atomic_write_bytes(target, buf.getvalue())
        written.append(target)
        records = person_records(people)
        for r, m in zip(records, meshes):
            r["mesh"] = m.name
        predictions[f.name] = records if given.ndim == 2 else records[0]
        table.add(f.name, people)
        # after every image: a crash later keeps what is done
        atomic_write_bytes(out_dir / PREDICTIONS, (json.dumps(predictions, indent=1) + "\n").encode())
        table.write(out_dir / SMPL_PARAMS)
        print(f"{f.name} -> {target} ({len(meshes)} {'person' if len(meshes) == 1 else 'people'})", file=sys.stderr)
    if not predictions:
        raise DemoError(f"--images {args.images}: none of the {len(files)} images could be read")
    if skipped:
        print(f"demo: {len(written)} image(s) done, {len(skipped)} skipped as unreadable: {', '.join(skipped)}",
              file=sys.stderr)
    return written


# --- video ------------------------------------------------------------------------------------------------
def _frames_folder(folder: Path):
    """(index, image or the reason it cannot be read) of a folder's frames, sorted by name."""
    from spin_fast.data.batch import ImageError, decode_image

    for i, f in enumerate(list_images(folder, "--video")):
        try:
            yield i, decode_image(f), f.name
        except ImageError as e:
            yield i, str(e), f.name


def run_video(args) -> list[Path]:
    """--video: an overlay video and smpl_params.npz (one row a person a frame)."""
    from spin_fast.progress import Progress

    source = Path(args.video)
    out_dir = Path(args.out)
    per_frame, every = read_frame_bboxes(args.bboxes) if args.bboxes else ({}, None)
    if source.is_dir():
        files = list_images(source, "--video")
        from spin_fast.data.batch import ImageError, image_size, read_image_bytes

        try:
            W, H = image_size(files[0], read_image_bytes(files[0]))
        except ImageError:
            W = H = None
        frames, total, fps, inputs_dir = _frames_folder(source), len(files), args.fps, source
        if not args.fps > 0:
            raise DemoError(f"--fps must be > 0, got {args.fps}")
    else:
        from spin_fast.video import VideoReader

        reader = VideoReader(source)
        files, W, H, total, fps, inputs_dir = [source], reader.width, reader.height, reader.num_frames, reader.fps, None
        frames = ((i, frame, source.name) for i, frame in reader)
    if W is not None:
        for key, boxes in ([("every frame", every)] if every is not None else []) + sorted(per_frame.items()):
            for box in as_boxes(boxes):
                if box_outside(box, W, H):
                    where = key if isinstance(key, str) else f"frame {key}"
                    raise DemoError(f"--bboxes {args.bboxes}: {where} has box {[float(v) for v in box]}, wholly "
                                    f"outside the frame ({W} x {H} pixels)")
    if total is not None and per_frame and max(per_frame) >= total:
        raise DemoError(f"--bboxes {args.bboxes}: frame {max(per_frame)} is past the last frame ({total - 1})")
    target = out_dir / (source.name + VIDEO_SUFFIX)
    check_outputs(out_dir, inputs_dir, files, args.overwrite, [target, out_dir / SMPL_PARAMS], what="--video")
    check_writable(out_dir, "--out")
    device, body, faces, model = _load(args)
    from spin_fast.video import VideoWriter

    table, skipped, done = ParamsTable(source if source.is_dir() else source.parent), [], [0]

    def encode(fh):
        writer, size = None, None
        with Progress(total, f"demo {source.name}", unit="img") as bar:
            for index, image, path in frames:
                if isinstance(image, str):
                    bar.write(f"skipped {image}")
                    skipped.append(index)
                    bar.update(1)
                    continue
                H, W = image.shape[:2]
                if writer is None:
                    writer, size = VideoWriter(fh, 2 * W, H, fps), (W, H)  # overlay | side view
                elif (W, H) != size:
                    skipped.append(index)
                    bar.write(f"skipped frame {index} ({path}): {W} x {H} pixels, the video is {size[0]} x {size[1]}")
                    bar.update(1)
                    continue
                boxes = every if every is not None else per_frame.get(index, np.array([0.0, 0.0, W, H]))
                people = predict_people(model, body, image, as_boxes(boxes), device)
                writer.write(draw(image, people.vertices, faces, people.focal, people.principal_point))
                table.add(path, people, frame_index=index)
                done[0] += 1
                if done[0] % SAVE_EVERY_FRAMES == 0:
                    table.write(out_dir / SMPL_PARAMS, video=True)
                bar.update(1)
        if writer is None:
            raise DemoError(f"--video {source}: none of its frames could be read")
        writer.close()

    try:
        atomic_write(target, encode)
    except KeyboardInterrupt:
        from spin_fast.errors import Interrupted

        if table.rows:  # the frames done are kept; the video itself is not half-written
            table.write(out_dir / SMPL_PARAMS, video=True)
        raise Interrupted(f"frame {done[0] + len(skipped)}{f' of {total}' if total else ''} ({SMPL_PARAMS} holds the "
                          f"{done[0]} frame(s) done; the overlay video was not written)") from None
    table.write(out_dir / SMPL_PARAMS, video=True)
    print(f"{source.name} -> {target} ({done[0]} frames" + (f", {len(skipped)} skipped as unreadable: frame "
          f"{', '.join(map(str, skipped[:10]))}{' ...' if len(skipped) > 10 else ''}" if skipped else "") + ")",
          file=sys.stderr)
    return [target]


if __name__ == "__main__":
    sys.exit(main())
