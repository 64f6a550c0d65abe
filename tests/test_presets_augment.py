"""Crop geometry of each preset against its codebase, written out here:

spin      SPIN @ 2476c43 utils/imutils.py: `crop` (window corners through the inverse of
          get_transform, truncated; padded when rotating; scipy.misc.imrotate = PIL rotate about the
          padded window's centre; the padding cut; scipy.misc.imresize = PIL resize to 224), then
          base_dataset's flip_img; the labels through `transform` (int(.) + 1) and flip_kp.
mmhuman3d mmhuman3d @ 8c95747 data/datasets/pipelines/transforms.py: RandomHorizontalFlip on the full
          image (x -> W - 1 - x, the bbox centre too), then MeshAffine's get_affine_transform (three
          point pairs: the centre, the rotated top-centre, a third at 90 degrees) for image and labels.
A dot (a smooth blob) is drawn in an image, cropped by spin_fast's reference warp, and its centroid
must land where the upstream arithmetic puts it.
"""
import math

import numpy as np
import pytest
from PIL import Image

from spin_fast.constants import SPIN_49_FLIP
from spin_fast.data.augment import AugParams, crop_matrix, keypoint_matrix, label_rotation, transform_keypoints2d
from spin_fast.data.reference_loader import warp_pil

RES = 224
IMG_W, IMG_H = 400, 360


# --- SPIN, written out -----------------------------------------------------------------------------
def spin_get_transform(center, h, rot=0.0):
    """imutils.get_transform with scale = h / 200 (3 x 3)."""
    t = np.zeros((3, 3))
    t[0, 0] = RES / h
    t[1, 1] = RES / h
    t[0, 2] = RES * (-float(center[0]) / h + 0.5)
    t[1, 2] = RES * (-float(center[1]) / h + 0.5)
    t[2, 2] = 1
    if rot != 0:
        r = -rot * np.pi / 180
        sn, cs = np.sin(r), np.cos(r)
        rm = np.array([[cs, -sn, 0], [sn, cs, 0], [0, 0, 1.0]])
        tm = np.eye(3)
        tm[0, 2] = tm[1, 2] = -RES / 2
        ti = tm.copy()
        ti[:2, 2] *= -1
        t = ti @ rm @ tm @ t
    return t


def spin_transform(pt, center, h, invert=False, rot=0.0):
    """imutils.transform: (pt - 1) through the matrix, astype(int) + 1."""
    t = spin_get_transform(center, h, rot)
    if invert:
        t = np.linalg.inv(t)
    new = t @ np.array([pt[0] - 1, pt[1] - 1, 1.0])
    return new[:2].astype(int) + 1


def spin_label(kp, center, h, rot, flip):
    """base_dataset.j2d_processing for one point: transform(kp + 1), 2x/res - 1, flip_kp negates x;
    returned in crop pixels again ((x + 1) res / 2)."""
    p = spin_transform(np.asarray(kp) + 1, center, h, rot=rot).astype(np.float64)
    n = 2 * p / RES - 1
    if flip:
        n[0] = -n[0]
    return (n + 1) * RES / 2


def spin_crop_point(p, center, h, rot, flip):
    """Where imutils.crop (+ flip_img) moves the image point p (integer-centred pixel coordinates)."""
    ul = np.array(spin_transform([1, 1], center, h, invert=True)) - 1
    br = np.array(spin_transform([RES + 1, RES + 1], center, h, invert=True)) - 1
    pad = int(np.linalg.norm(br - ul) / 2 - float(br[1] - ul[1]) / 2)
    if rot != 0:
        ul, br = ul - pad, br + pad
    Wp, Hp = br - ul
    q = np.asarray(p, np.float64) - ul  # in the (padded) window, integer-centred
    if rot != 0:  # PIL rotate(rot): counter-clockwise about (w/2, h/2) in half-pixel coordinates
        ctr = np.array([Wp / 2.0, Hp / 2.0])
        a = math.radians(rot)
        R = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        q = ctr + R @ (q + 0.5 - ctr) - 0.5
        q = q - pad
    W, H = Wp - 2 * pad if rot != 0 else Wp, Hp - 2 * pad if rot != 0 else Hp
    out = (q + 0.5) * np.array([RES / W, RES / H]) - 0.5  # PIL resize: pixel areas
    if flip:
        out[0] = RES - 1 - out[0]
    return out


# --- mmhuman3d, written out ------------------------------------------------------------------------
def mmh_point(p, center, side, rot, flip, img_w=IMG_W):
    """RandomHorizontalFlip (image width img_w) then get_affine_transform + affine_transform."""
    p, c = np.asarray(p, np.float64).copy(), np.asarray(center, np.float64).copy()
    if flip:
        p[0] = img_w - 1 - p[0]
        c[0] = img_w - 1 - c[0]
    r = np.pi * rot / 180
    sn, cs = np.sin(r), np.cos(r)
    src_dir = np.array([0 * cs - (side * -0.5) * sn, 0 * sn + (side * -0.5) * cs])
    third = lambda a, b: b + np.array([-(a - b)[1], (a - b)[0]])
    src = np.stack([c, c + src_dir, third(c, c + src_dir)])
    d0 = np.array([RES * 0.5, RES * 0.5])
    d1 = d0 + np.array([0.0, RES * -0.5])
    dst = np.stack([d0, d1, third(d0, d1)])
    # the affine through three point pairs (cv2.getAffineTransform)
    A = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # (2, 3)
    return A @ np.array([p[0], p[1], 1.0])


# --- the dot --------------------------------------------------------------------------------------
def _dot_image(tmp_path, p, sigma=2.5):
    yy, xx = np.mgrid[0:IMG_H, 0:IMG_W]
    g = 255 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * sigma ** 2))
    img = np.repeat(np.round(g).astype(np.uint8)[..., None], 3, -1)
    path = tmp_path / "dot.png"
    Image.fromarray(img).save(path)
    return path


def _centroid(crop):
    w = crop[..., 0].astype(np.float64)
    w = np.where(w > 3, w, 0.0)
    yy, xx = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


CASES = [  # centre, side, scale, rot, flip
    ((201.3, 170.8), 180.7, 1.0, 0.0, False),
    ((198.6, 181.2), 205.1, 1.13, 30.0, False),
    ((210.4, 175.5), 190.2, 0.87, -42.5, True),
    ((190.9, 168.3), 230.6, 1.0, 17.0, True),
]


def _crop_dot(tmp_path, case, seed, geometry):
    """A dot near CASES[case]'s centre, cropped with `geometry`: (dot, params, matrix, crop centroid,
    49 random keypoints around the dot (1, 49, 3), the crop side h = side * scale)."""
    center, side, scale, rot, flip = CASES[case]
    rng = np.random.default_rng(seed)
    p = np.array(center) + rng.uniform(-40, 40, 2)
    params = AugParams(np.ones((1, 3), np.float32), np.array([flip]), np.array([scale], np.float32),
                       np.array([rot], np.float32))
    path = _dot_image(tmp_path, p)
    M = crop_matrix(np.array([center]), np.array([side]), params, geometry=geometry)
    got = _centroid(warp_pil(path, path.read_bytes(), M[0]))
    kp = np.zeros((1, 49, 3))
    kp[0, :, :2] = p + rng.uniform(-30, 30, (49, 2))
    kp[0, :, 2] = 1.0
    return p, params, M, got, kp, side * float(params.scale[0])


@pytest.mark.parametrize("case", range(len(CASES)))
def test_spin_crop_puts_the_dot_where_spin_does(tmp_path, case):
    center, side, _, _, flip = CASES[case]
    p, params, M, got, kp, h = _crop_dot(tmp_path, case, case, "spin")
    rot = float(params.rot_deg[0])
    want = spin_crop_point(p, center, h, rot, flip)
    assert np.abs(got - want).max() <= 0.05, (got, want)
    # the matrix itself, without interpolation
    assert np.abs(M[0, :, :2] @ p + M[0, :, 2] - want).max() < 1e-9
    # the 2D labels: SPIN's transform() (whole pixels) and flip_kp, exactly
    lab = transform_keypoints2d(kp, keypoint_matrix(np.array([center]), np.array([side]), params), params.flip, "spin")
    perm = SPIN_49_FLIP if flip else np.arange(49)
    for j in range(49):
        np.testing.assert_allclose(lab[0, j, :2], spin_label(kp[0, perm[j], :2], center, h, rot, flip), atol=1e-4)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_mmhuman3d_crop_flips_then_rotates(tmp_path, case):
    center, _, _, _, flip = CASES[case]
    p, params, M, got, kp, s = _crop_dot(tmp_path, case, 10 + case, "mmhuman3d")
    rot = float(params.rot_deg[0])
    want = mmh_point(p, center, s, rot, flip)
    assert np.abs(got - want).max() <= 0.05, (got, want)
    lab = transform_keypoints2d(kp, M, params.flip, "mmhuman3d")
    perm = SPIN_49_FLIP if flip else np.arange(49)
    for j in range(49):
        np.testing.assert_allclose(lab[0, j, :2], mmh_point(kp[0, perm[j], :2], center, s, rot, flip), atol=1e-3)
    if flip and rot:
        # rotating first (SPIN's order) would put the dot elsewhere
        assert np.abs(spin_crop_point(p, center, s, rot, flip) - want).max() > 5.0
        # the labels' rotation: mirroring first then rotating by r is rotating by -r then mirroring
        assert label_rotation(params, "mmhuman3d")[0] == -params.rot_deg[0]
        assert label_rotation(params, "spin")[0] == params.rot_deg[0]


def test_bad_geometry_is_an_error():
    with pytest.raises(ValueError, match="geometry"):
        crop_matrix(np.zeros((1, 2)), np.ones(1), AugParams.identity(1), geometry="cv2")
