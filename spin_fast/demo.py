"""`python -m spin_fast.demo --checkpoint CKPT --images DIR --out DIR [--bboxes FILE] [--data-root DIR]`

For each image: crop the person (bbox centre -> crop centre, max(w, h) -> 224 px, the test-time
warp), run HMR, pose the neutral SMPL with the prediction, and write `<out>/<name>.overlay.png` (the
full input name kept: a.jpg -> a.jpg.overlay.png, so a.jpg and a.png never share an output) = the
mesh drawn over the image | a side view (the mesh turned 90 degrees about its vertical axis), plus
`<out>/predictions.json` (bbox, camera, betas, axis-angle pose per image). Files are written atomically,
predictions.json after every image; an unreadable image is reported and skipped, the others go on.

Nothing of the user's is written over: --out may not be the --images folder, and a folder that
already holds files is used only with --overwrite (which replaces the demo's own files there, never
an input). Every input is checked before the first image: the checkpoint, the boxes (numbers, w and
h > 0, each overlapping its image) and that --out can be written.

Camera: the network's weak-perspective [s, tx, ty] becomes the crop-space translation
[tx, ty, 2 f / (224 s)] with f = 5000 at crop centre (112, 112); the crop is the image scaled by
224 / side about the bbox centre, so in image pixels the same camera has focal 5000 side / 224 and
principal point at the bbox centre.

--bboxes: JSON {"<file name>": [x, y, w, h], ...} in image pixels (HumanData's bbox_xywh without
the confidence); images without an entry use the whole image.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from spin_fast.atomic import atomic_write_bytes, check_writable
from spin_fast.cli import run_command
from spin_fast.constants import FOCAL_LENGTH, IMG_RES
from spin_fast.errors import SpinFastError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
OUTPUT_SUFFIX = ".overlay.png"
PREDICTIONS = "predictions.json"
MESH_COLOR = (0.65, 0.74, 0.86)
ALPHA = 0.85


class DemoError(SpinFastError):
    """A demo input or output that cannot be used as given (the message names the file and box)."""


def read_bboxes(path: str | os.PathLike, image_names: list[str]) -> dict[str, np.ndarray]:
    """JSON {name: [x, y, w, h]} -> {name: (4,) float64}; names must be among `image_names`."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DemoError(f"--bboxes {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DemoError(f"--bboxes {path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise DemoError(f"--bboxes {path}: expected a JSON object {{file name: [x, y, w, h]}}")
    out = {}
    for name, box in raw.items():
        if name not in image_names:
            raise DemoError(f"--bboxes {path}: {name!r} is not an image in --images")
        numbers = isinstance(box, list) and len(box) in (4, 5) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        arr = np.asarray(box[:4], dtype=np.float64) if numbers else np.zeros(0)
        if arr.shape != (4,) or not np.all(np.isfinite(arr)) or arr[2] <= 0 or arr[3] <= 0:
            raise DemoError(f"--bboxes {path}: {name!r} has {box!r}, expected [x, y, w, h] (numbers) with w, h > 0")
        out[name] = arr
    return out


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
        x, y, w, h = bboxes[f.name]
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            raise DemoError(f"--bboxes {source}: {f.name!r} has box {[float(v) for v in bboxes[f.name]]}, wholly "
                            f"outside the image ({W} x {H} pixels)")


def output_name(image: Path) -> str:
    """a.jpg -> a.jpg.overlay.png: distinct inputs never share an output, and none is an image input."""
    return image.name + OUTPUT_SUFFIX


def check_outputs(out_dir: Path, images_dir: Path, files: list[Path], overwrite: bool) -> None:
    """Refuse an --out that is the --images folder, or that already holds files (unless `overwrite`),
    or where an output would be one of the inputs."""
    if out_dir.is_dir() and os.path.samefile(out_dir, images_dir):
        raise DemoError(f"--out {out_dir} is the --images folder: the renders would be written among the "
                        "inputs; choose another folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        shown = sorted(p.name for p in out_dir.iterdir())
        raise DemoError(f"--out {out_dir} already holds files ({', '.join(shown[:4])}"
                        f"{' ...' if len(shown) > 4 else ''}); choose another folder, or pass --overwrite to "
                        "replace the demo's own files there")
    for target in [out_dir / output_name(f) for f in files] + [out_dir / PREDICTIONS]:
        if target.exists() and any(os.path.samefile(target, f) for f in files):
            raise DemoError(f"--out {out_dir}: {target.name} is one of the input images; choose another folder")


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


def draw(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, cam_t: np.ndarray, center, side: float,
         render=None) -> np.ndarray:
    """The mesh (SMPL frame, metres) at crop translation cam_t over `image`, beside its side view."""
    if render is None:
        from spin_fast.render import render_mesh as render
    H, W = image.shape[:2]
    focal, center = image_camera(center, side)
    colors = np.tile(np.asarray(MESH_COLOR), (len(faces), 1))
    v = vertices + cam_t[None]
    front, mask, _ = render(v, faces, colors, focal, center, W, H, background=image)
    overlay = image.copy()
    overlay[mask] = np.round(ALPHA * front[mask] + (1 - ALPHA) * image[mask]).astype(np.uint8)
    # side view: turn the body 90 degrees about the vertical (y) axis through its centre
    c = v.mean(0)
    Ry = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    side_v = (v - c) @ Ry.T + c
    white = np.full_like(image, 255)
    side_img, _, _ = render(side_v, faces, colors, focal, center, W, H, background=white)
    return np.concatenate([overlay, side_img], axis=1)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DemoError(f"--images {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DemoError(f"--images {folder}: no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="HMR weights (mmhuman3d, SPIN or spin_fast)")
    ap.add_argument("--images", required=True, help="folder of .jpg/.png images")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--bboxes", help='JSON {"file name": [x, y, w, h]}; default: the whole image')
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


@torch.no_grad()
def run(argv=None) -> list[Path]:
    """The demo on the command line `argv`; returns the images written."""
    args = build_parser().parse_args(argv)
    from spin_fast.body import BodyModel
    from spin_fast.assets import resolve_data_root
    from spin_fast.config import parse_device
    from spin_fast.data.batch import ImageError, decode_image
    from spin_fast.model.checkpoint_import import load_model
    from spin_fast.geometry import rotmat_to_axis_angle, weak_perspective_to_translation

    if not os.path.isfile(args.checkpoint):
        raise DemoError(f"--checkpoint {args.checkpoint} does not exist")
    files = list_images(Path(args.images))
    bboxes = read_bboxes(args.bboxes, [f.name for f in files]) if args.bboxes else {}
    check_boxes_inside(bboxes, files, args.bboxes)
    out_dir = Path(args.out)
    check_outputs(out_dir, Path(args.images), files, args.overwrite)
    check_writable(out_dir, "--out")
    device = parse_device(args.device)
    if device.type == "cuda":  # Triton launches on the current device, whatever the tensors' device
        torch.cuda.set_device(device)
    paths = resolve_data_root(args.data_root)
    body = BodyModel.from_paths(paths).to(device)
    faces = body.faces.cpu().numpy()
    model = load_model(args.checkpoint, paths.mean_params, args.backbone, trust=args.trust_checkpoint, device=device)

    from PIL import Image

    written, predictions, skipped = [], {}, []
    for f in files:
        try:
            image = decode_image(f)
        except ImageError as e:
            print(f"skipped {e}", file=sys.stderr)
            skipped.append(f.name)
            continue
        H, W = image.shape[:2]
        bbox = bboxes.get(f.name, np.array([0.0, 0.0, W, H]))
        crop, center, side = crop_person(image, bbox)
        out = model(torch.from_numpy(crop)[None].to(device))
        rotmat, betas, cam = out.rotmat.float(), out.betas.float(), out.cam.float()
        mesh = body(betas, rotmat[:, 1:], rotmat[:, :1], joint_set="smpl_24")
        cam_t = weak_perspective_to_translation(cam)[0].cpu().numpy().astype(np.float64)
        canvas = draw(image, mesh.vertices[0].cpu().numpy().astype(np.float64), faces, cam_t, center, side)
        buf = io.BytesIO()
        Image.fromarray(canvas).save(buf, format="PNG")
        target = out_dir / output_name(f)
        atomic_write_bytes(target, buf.getvalue())
        written.append(target)
        predictions[f.name] = {
            "bbox_xywh": [float(b) for b in bbox], "cam": cam[0].tolist(), "cam_t_crop": cam_t.tolist(),
            "betas": betas[0].tolist(), "pose_axis_angle": rotmat_to_axis_angle(rotmat[0]).reshape(72).tolist()}
        # after every image: a crash later keeps what is done
        atomic_write_bytes(out_dir / PREDICTIONS, (json.dumps(predictions, indent=1) + "\n").encode())
        print(f"{f.name} -> {target}", file=sys.stderr)
    if not predictions:
        raise DemoError(f"--images {args.images}: none of the {len(files)} images could be read")
    if skipped:
        print(f"demo: {len(written)} image(s) done, {len(skipped)} skipped as unreadable: {', '.join(skipped)}",
              file=sys.stderr)
    return written


if __name__ == "__main__":
    sys.exit(main())
