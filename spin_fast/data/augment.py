"""Training augmentation (docs/spin.md "Augmentation"): parameters, the crop affine, and the labels.

Every loader (DALI, torchvision, the reference) takes the same `AugParams`, builds the same 2x3
matrix with `crop_matrix`, warps the image once with it (bilinear) and moves the labels with
`transform_keypoints2d` / `augment_labels`. Two geometries, one per preset:

  mmhuman3d (data/datasets/pipelines/transforms.py @ 8c95747: RandomHorizontalFlip, then
            GetRandomScaleRotation + MeshAffine): the full image is mirrored first (x -> W - 1 - x,
            the bbox centre with it), then the crop maps the centre to (112, 112), a side of
            `scale * max(w, h)` pixels to 224 and rotates by rot_deg about the centre: the rotation
            acts in the mirrored frame. Labels go through the same affine.
  spin      (utils/imutils.py `crop` + `flip_img`, `transform`; datasets/base_dataset.py): the
            window is rounded to whole pixels (ul = int(c - h/2), br = int(c + h/2), h the side),
            rotated about the (padded) window centre (ul + br - 1)/2, resized to 224 x 224 (pixel
            area geometry: W pixels -> 224), then mirrored u -> 223 - u. The 2D labels take SPIN's
            `transform`: the continuous centre/side map rotated about (112, 112), truncated
            `int(.) + 1`, mirrored x -> 224 - x: they sit ~+0.5 px right/down of the image content.

Conventions (checked against SPIN's and mmhuman3d's code, and by a test that renders a body, crops
it and checks its keypoints land on it):
  * pixel coordinates: pixel (i, j) is the point x = j, y = i (centres on integers), y down.
  * rotation rot_deg > 0 turns the image content counter-clockwise as seen on screen (SPIN's
    imrotate, mmhuman3d's get_affine_transform); in y-down pixel coordinates points move by
    R(-rot_deg), R(a) = [[cos a, -sin a], [sin a, cos a]].
  * the labels and fits follow SPIN's order, rotate then flip. Mirroring first and rotating by r
    equals rotating by -r and mirroring, so `label_rotation` gives the mmhuman3d geometry's flipped
    samples -r: the 3D joints and global orient turn by minus that about the camera z axis
    (`geometry.rotate_points_z`, `geometry.rotate_global_orient`), then flip (SPIN_49_FLIP, 3D
    x -> -x, `flip_pose`).
  * pixel noise: per channel, value * U[0.6, 1.4], saturating at 255, applied to the warped uint8 crop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spin_fast.constants import IMAGENET_MEAN, IMAGENET_STD, IMG_RES, SPIN_49_FLIP
from spin_fast.geometry import flip_pose, rotate_global_orient, rotate_points_z
from spin_fast.recipes import CODEBASES, DEFAULT_CODEBASE, Codebase

NOISE_FACTOR = 0.4   # pixel noise U[1 - f, 1 + f]
ROT_FACTOR = 30.0    # rotation N(0, 30 deg) clipped to +-60
SCALE_FACTOR = 0.25  # scale N(1, 0.25) clipped to [0.75, 1.25]
FLIP_PROB = 0.5
ROT_PROB = 0.6       # mmhuman3d; SPIN 0.4


@dataclass
class AugParams:
    """Per-sample augmentation parameters (all length B numpy arrays)."""

    noise: np.ndarray    # (B, 3) float32 per-channel multipliers
    flip: np.ndarray     # (B,) bool
    scale: np.ndarray    # (B,) float32 crop side multiplier
    rot_deg: np.ndarray  # (B,) float32 counter-clockwise image rotation, degrees

    def __len__(self):
        return len(self.flip)

    def select(self, idx) -> "AugParams":
        return AugParams(self.noise[idx], self.flip[idx], self.scale[idx], self.rot_deg[idx])

    @staticmethod
    def identity(n: int) -> "AugParams":
        """Test time: the same warp without augmentation."""
        return AugParams(np.ones((n, 3), np.float32), np.zeros(n, bool), np.ones(n, np.float32),
                         np.zeros(n, np.float32))


def sample_aug_params(rng: np.random.Generator, n: int, rot_prob: float = ROT_PROB,
                      flip_prob: float = FLIP_PROB) -> AugParams:
    """SPIN's augm_params for n samples: flip with probability flip_prob (SPIN's: 0.5), noise U[0.6, 1.4]^3,
    rot clip(N(0, 30), +-60) kept with probability rot_prob, scale clip(N(1, 0.25), 0.75, 1.25).
    The draws do not depend on the probabilities, so changing one changes no other parameter."""
    for name, p in (("rot_prob", rot_prob), ("flip_prob", flip_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    flip = rng.uniform(size=n) < flip_prob
    noise = rng.uniform(1 - NOISE_FACTOR, 1 + NOISE_FACTOR, size=(n, 3))
    rot = np.clip(rng.normal(size=n) * ROT_FACTOR, -2 * ROT_FACTOR, 2 * ROT_FACTOR)
    rot = np.where(rng.uniform(size=n) < rot_prob, rot, 0.0)
    scale = np.clip(1 + rng.normal(size=n) * SCALE_FACTOR, 1 - SCALE_FACTOR, 1 + SCALE_FACTOR)
    return AugParams(noise.astype(np.float32), flip, scale.astype(np.float32), rot.astype(np.float32))


# --- the crop affine --------------------------------------------------------------------------------
GEOMETRIES = CODEBASES  # whose crop geometry (spin_fast.recipes)


def _check_geometry(geometry: Codebase) -> None:
    if geometry not in GEOMETRIES:
        raise ValueError(f"augmentation geometry must be one of {GEOMETRIES}, got {geometry!r}")


def _rotation(rot_deg: np.ndarray) -> np.ndarray:
    """R(-rot) in y-down pixel coordinates, (B, 2, 2): content turns counter-clockwise on screen."""
    a = np.deg2rad(np.asarray(rot_deg, np.float64))
    c, sn = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, sn], -1), np.stack([-sn, c], -1)], -2)


def _affine(A: np.ndarray, src: np.ndarray, dst) -> np.ndarray:
    """(B, 2, 3) of x -> A (x - src) + dst."""
    t = dst - np.einsum("bij,bj->bi", A, src)
    return np.concatenate([A, t[:, :, None]], -1)


def keypoint_matrix(center: np.ndarray, side: np.ndarray, params: AugParams, res: int = IMG_RES) -> np.ndarray:
    """The continuous crop map, no mirror: centre -> (res/2, res/2), side * scale -> res, rotation by
    rot_deg about the crop centre. (B, 2, 3) float64. SPIN's `transform` (before its truncation)."""
    center = np.asarray(center, np.float64).reshape(-1, 2)
    k = res / (np.asarray(side, np.float64).reshape(-1) * params.scale.astype(np.float64))
    return _affine(_rotation(params.rot_deg) * k[:, None, None], center, res / 2.0)


def spin_window(center: np.ndarray, h: np.ndarray, res: int = IMG_RES) -> tuple[np.ndarray, np.ndarray]:
    """SPIN's crop window corners ul, br (B, 2) int64: the crop pixels (0, 0) and (res, res) through
    the inverse of get_transform (float64 inverse, as `transform(..., invert=1)`), truncated."""
    center = np.asarray(center, np.float64).reshape(-1, 2)
    h = np.asarray(h, np.float64).reshape(-1)
    T = np.zeros((len(h), 3, 3))
    T[:, 0, 0] = T[:, 1, 1] = res / h
    T[:, :2, 2] = res * (-center / h[:, None] + 0.5)
    T[:, 2, 2] = 1.0
    Ti = np.linalg.inv(T)
    ul = np.trunc(Ti[:, :2, 2]).astype(np.int64)
    br = np.trunc(Ti[:, :2, :2] @ np.array([res, res], np.float64) + Ti[:, :2, 2]).astype(np.int64)
    return ul, br


def crop_matrix(center: np.ndarray, side: np.ndarray, params: AugParams, res: int = IMG_RES,
                geometry: Codebase = DEFAULT_CODEBASE) -> np.ndarray:
    """Image pixels -> crop pixels, (B, 2, 3) float64: the warp of the image (module docstring).
    mmhuman3d: mirror (when flip) about the bbox centre, then the continuous crop map;
    spin:      SPIN's rounded window rotated about its centre and resized, then u -> res - 1 - u."""
    _check_geometry(geometry)
    flip = params.flip.astype(bool)
    if geometry == "mmhuman3d":
        center = np.asarray(center, np.float64).reshape(-1, 2)
        k = res / (np.asarray(side, np.float64).reshape(-1) * params.scale.astype(np.float64))
        F = np.tile(np.eye(2), (len(flip), 1, 1))
        F[flip, 0, 0] = -1.0
        return _affine(_rotation(params.rot_deg) @ F * k[:, None, None], center, res / 2.0)
    h = np.asarray(side, np.float64).reshape(-1) * params.scale.astype(np.float64)
    ul, br = spin_window(center, h, res)
    size = (br - ul).astype(np.float64)  # (W, H) of the window, resized to res x res
    A = (res / size)[:, :, None] * _rotation(params.rot_deg)
    M = _affine(A, (ul + br - 1) / 2.0, (res - 1) / 2.0)
    M[flip, 0, :] *= -1
    M[flip, 0, 2] += res - 1
    return M


def label_rotation(params: AugParams, geometry: Codebase = DEFAULT_CODEBASE) -> np.ndarray:
    """(B,) float32: the rotation of SPIN's order (rotate, then flip) that the labels and fits take.
    mmhuman3d rotates after its mirror, which is rotating by -rot_deg before it."""
    _check_geometry(geometry)
    rot = params.rot_deg.astype(np.float32)
    if geometry == "mmhuman3d":
        rot = np.where(params.flip.astype(bool), -rot, rot).astype(np.float32)
    return rot


def invert_affine(M: np.ndarray) -> np.ndarray:
    """(B, 2, 3) -> its inverse (B, 2, 3)."""
    A, t = M[:, :, :2], M[:, :, 2]
    Ai = np.linalg.inv(A)
    return np.concatenate([Ai, -np.einsum("bij,bj->bi", Ai, t)[:, :, None]], -1)


def to_half_pixel(M: np.ndarray) -> np.ndarray:
    """Affine in integer-centred pixel coordinates -> the same map in the half-pixel-centred
    coordinates DALI and PIL sample in (pixel (i, j) covers [j, j+1) x [i, i+1)): x' = x + 0.5."""
    M = M.copy()
    M[:, :, 2] += 0.5 - 0.5 * M[:, :, :2].sum(-1)
    return M


def sampling_roi(M_inv: np.ndarray, res: int = IMG_RES, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Integer (x0, y0) and (x1, y1) (B, 2) of the image region the crop samples (bounding box of
    the crop's corners through the inverse map, plus a margin for the bilinear footprint)."""
    corners = np.array([[0, 0, 1], [res - 1, 0, 1], [0, res - 1, 1], [res - 1, res - 1, 1]], np.float64)
    pts = np.einsum("bij,kj->bki", M_inv, corners)
    lo = np.floor(pts.min(1)).astype(np.int64) - margin
    hi = np.ceil(pts.max(1)).astype(np.int64) + margin + 1
    return lo, hi


# --- labels -----------------------------------------------------------------------------------------
def transform_keypoints2d(kp: np.ndarray, M: np.ndarray, flip: np.ndarray, geometry: Codebase = DEFAULT_CODEBASE,
                          res: int = IMG_RES) -> np.ndarray:
    """Image keypoints (B, J, 3) (x, y, conf) -> crop pixels; flipped samples get the left/right
    permutation SPIN_49_FLIP.
    mmhuman3d: M is the crop matrix (it mirrors x itself when flip);
    spin:      M is `keypoint_matrix` (no mirror): SPIN's transform, int(M kp) + 1 (truncation
               towards zero), then x -> res - x when flipped (its flip_kp negates x in [-1, 1])."""
    _check_geometry(geometry)
    out = kp.astype(np.float32, copy=True)
    xy = np.einsum("bij,bkj->bki", M[:, :, :2], kp[..., :2].astype(np.float64)) + M[:, None, :, 2]
    flip = np.asarray(flip, bool)
    if geometry == "spin":
        xy = np.trunc(xy) + 1.0
        xy[flip, :, 0] = res - xy[flip, :, 0]
    out[..., :2] = xy
    if flip.any():
        out[flip] = out[flip][:, SPIN_49_FLIP]
    return out


def augment_labels(kp3d: torch.Tensor, pose: torch.Tensor, flip: torch.Tensor, rot_deg: torch.Tensor):
    """Rotate then flip the 3D joints (B, 49, 4) and SMPL pose (B, 72) like the image.

    Samples with rot_deg == 0 keep their values bit for bit (no axis-angle round trip), as in
    `spin_fast.smplify.fits.reaugment`."""
    rot_deg = rot_deg.to(pose.dtype)
    rotated = rot_deg != 0
    if rotated.any():
        xyz = torch.where(rotated[:, None, None], rotate_points_z(kp3d[..., :3], rot_deg), kp3d[..., :3])
        kp3d = torch.cat([xyz, kp3d[..., 3:]], -1)
        root = torch.where(rotated[:, None], rotate_global_orient(pose[:, :3], rot_deg), pose[:, :3])
        pose = torch.cat([root, pose[:, 3:]], 1)
    flip = flip.bool()
    if flip.any():
        f3 = kp3d[:, SPIN_49_FLIP].clone()
        f3[..., 0] = -f3[..., 0]
        kp3d = torch.where(flip[:, None, None], f3, kp3d)
        pose = torch.where(flip[:, None], flip_pose(pose), pose)
    return kp3d, pose


# --- pixels (the reference's numpy path; DALI does the same with its operators) --------------------
_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)


def noise_and_normalize(crop: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """uint8 crop (H, W, 3) RGB -> float32 (3, H, W): min(255, value * noise) then ImageNet mean/std."""
    x = np.minimum(crop.astype(np.float32) * noise.astype(np.float32), 255.0)
    return ((x - _MEAN) / _STD).transpose(2, 0, 1).copy()


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised -> (B, H, W, 3) float 0-255, for looking at crops."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype, device=img.device)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype, device=img.device)
    return img.permute(0, 2, 3, 1) * std + mean
