"""A small z-buffer triangle rasterizer with flat Lambert shading (numpy), for the synthetic datasets
and the demo.

Camera: pinhole, identity rotation, looking down +z, x right, y down (SPIN's camera);
u = f x / z + cx, v = f y / z + cy in pixel coordinates where pixel (i, j) is the point (j, i).
A pixel takes the nearest triangle covering its centre (depth interpolated perspective-correctly).
All triangles are rasterized at once: every (triangle, pixel of its bounding box) pair is tested
with edge functions, then a lexsort keeps the nearest per pixel. Cost grows with the summed
bounding-box area, which is small for a person seen whole (a few ms for SMPL's 13776 faces at
~300 px).
"""
from __future__ import annotations

import numpy as np

NEAR = 1e-3


def project(points: np.ndarray, focal: float, center) -> np.ndarray:
    """(..., 3) camera points -> (..., 2) pixels."""
    z = points[..., 2:3]
    return focal * points[..., :2] / z + np.asarray(center, points.dtype)


def rasterize(vertices: np.ndarray, faces: np.ndarray, focal: float, center, width: int, height: int,
              chunk_pairs: int = 4_000_000):
    """Visible triangle and depth per pixel.

    vertices (V, 3) camera coordinates, faces (F, 3). Returns face_id (H, W) int64 (-1 = none) and
    depth (H, W) float64 (inf = none)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    uv = project(v, focal, center)
    z = v[:, 2]
    p0, p1, p2 = uv[f[:, 0]], uv[f[:, 1]], uv[f[:, 2]]
    z0, z1, z2 = z[f[:, 0]], z[f[:, 1]], z[f[:, 2]]
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    xs = np.stack([p0[:, 0], p1[:, 0], p2[:, 0]], 1)
    ys = np.stack([p0[:, 1], p1[:, 1], p2[:, 1]], 1)
    x_lo = np.maximum(np.ceil(xs.min(1)), 0).astype(np.int64)
    x_hi = np.minimum(np.floor(xs.max(1)), width - 1).astype(np.int64)
    y_lo = np.maximum(np.ceil(ys.min(1)), 0).astype(np.int64)
    y_hi = np.minimum(np.floor(ys.max(1)), height - 1).astype(np.int64)
    ok = (np.minimum(np.minimum(z0, z1), z2) > NEAR) & (np.abs(area) > 1e-12) & (x_hi >= x_lo) & (y_hi >= y_lo)
    ids = np.nonzero(ok)[0]
    bw = x_hi[ids] - x_lo[ids] + 1
    npix = bw * (y_hi[ids] - y_lo[ids] + 1)

    best_depth = np.full(height * width, np.inf)
    best_face = np.full(height * width, -1, np.int64)
    cum = np.cumsum(npix)
    start = 0
    while start < len(ids):  # chunks of faces whose (face, pixel) pairs fit in memory
        base = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + chunk_pairs, side="right")))
        fid = ids[start:stop]
        n = npix[start:stop]
        owner = np.repeat(np.arange(len(fid)), n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        w_ = bw[start:stop][owner]
        px = x_lo[fid][owner] + local % w_
        py = y_lo[fid][owner] + local // w_
        f_ = fid[owner]
        a = area[f_]
        # barycentric weights from edge functions, normalised by the signed area
        w0 = ((p1[f_, 0] - px) * (p2[f_, 1] - py) - (p1[f_, 1] - py) * (p2[f_, 0] - px)) / a
        w1 = ((p2[f_, 0] - px) * (p0[f_, 1] - py) - (p2[f_, 1] - py) * (p0[f_, 0] - px)) / a
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        f_, px, py = f_[inside], px[inside], py[inside]
        inv_z = w0[inside] / z0[f_] + w1[inside] / z1[f_] + w2[inside] / z2[f_]
        depth = 1.0 / inv_z
        pix = py * width + px
        order = np.lexsort((depth, pix))
        pix, depth, f_ = pix[order], depth[order], f_[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        pix, depth, f_ = pix[first], depth[first], f_[first]
        closer = depth < best_depth[pix]
        best_depth[pix[closer]] = depth[closer]
        best_face[pix[closer]] = f_[closer]
        start = stop
    return best_face.reshape(height, width), best_depth.reshape(height, width)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, face_colors: np.ndarray, focal: float, center,
                width: int, height: int, background: np.ndarray | None = None,
                light_dir=(0.3, -0.5, 1.0), ambient: float = 0.35):
    """Flat-shaded render: colour = face colour * (ambient + (1 - ambient) * |n . l|), two-sided.

    face_colors (F, 3) in [0, 1]; background (H, W, 3) uint8 or None (black); light_dir points from
    the scene towards the light (camera coordinates). Returns (image (H, W, 3) uint8, mask (H, W) bool,
    depth (H, W))."""
    face_id, depth = rasterize(vertices, faces, focal, center, width, height)
    light = np.asarray(light_dir, np.float64)
    light = light / np.linalg.norm(light)
    shade = ambient + (1 - ambient) * np.abs(face_normals(vertices, faces) @ -light)
    colors = np.clip(np.asarray(face_colors, np.float64) * shade[:, None], 0, 1) * 255
    img = np.zeros((height, width, 3), np.uint8) if background is None else background.copy()
    mask = face_id >= 0
    img[mask] = np.round(colors[face_id[mask]]).astype(np.uint8)
    return img, mask, depth
