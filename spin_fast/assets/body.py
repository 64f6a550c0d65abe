"""A synthetic person with SMPL topology: 6890 vertices, 13776 faces, SMPL's kinematic tree.

How it is made (deterministic; most of `write_assets`' ~5 s of CPU time):
  1. A rest-pose (T-pose, metres, y up, facing +z, the subject's left at +x) signed distance field: a
     smooth union of ellipsoids and round cones (torso, pelvis, neck, head, nose, ears, limbs, flat
     hands, feet). Legs and arms never touch, so the surface is one closed genus-0 sheet.
  2. Marching cubes at the coarsest spacing whose mesh has <= 6890 vertices, then the longest edges
     are split until there are exactly 6890 vertices; Euler (V - E + F = 2) then gives 13776 faces.
  3. The 21 smplx landmark vertices (nose, eyes, ears, toes, heels, fingertips) are the vertices
     nearest their anatomical spots, renumbered to SMPL's landmark ids.
  4. Skinning weights from the distance to each joint's bone (<= 4 non-zeros a vertex); J_regressor
     and the extra / H36M regressors are sparse non-negative weights on ~30 nearby vertices that
     regress the designed joint positions; 10 shape components (size, girth, leg length, shoulders,
     belly, arm length, head, hips, two smooth random fields); small pose correctives.
"""
from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse

from spin_fast.constants import LANDMARK_VERTICES, NUM_JOINTS, NUM_VERTICES, SMPL_PARENTS
from spin_fast.errors import SpinFastError

NUM_FACES = 13776

# Rest joints (SMPL order), subject's left = +x.
REST_JOINTS = np.array([
    [0.00, -0.23, 0.02],   # 0 pelvis
    [0.08, -0.31, 0.01],   # 1 L hip
    [-0.08, -0.31, 0.01],  # 2 R hip
    [0.00, -0.12, 0.00],   # 3 spine1
    [0.10, -0.70, 0.02],   # 4 L knee
    [-0.10, -0.70, 0.02],  # 5 R knee
    [0.00, 0.01, 0.02],    # 6 spine2
    [0.10, -1.10, -0.02],  # 7 L ankle
    [-0.10, -1.10, -0.02],  # 8 R ankle
    [0.00, 0.07, 0.03],    # 9 spine3
    [0.11, -1.17, 0.10],   # 10 L foot
    [-0.11, -1.17, 0.10],  # 11 R foot
    [0.00, 0.27, -0.01],   # 12 neck
    [0.07, 0.18, 0.00],    # 13 L collar
    [-0.07, 0.18, 0.00],   # 14 R collar
    [0.00, 0.36, 0.04],    # 15 head
    [0.17, 0.21, -0.01],   # 16 L shoulder
    [-0.17, 0.21, -0.01],  # 17 R shoulder
    [0.42, 0.20, -0.03],   # 18 L elbow
    [-0.42, 0.20, -0.03],  # 19 R elbow
    [0.66, 0.21, -0.01],   # 20 L wrist
    [-0.66, 0.21, -0.01],  # 21 R wrist
    [0.74, 0.20, -0.01],   # 22 L hand
    [-0.74, 0.20, -0.01],  # 23 R hand
])


def _mirror(p):
    return np.array([-p[0], p[1], p[2]])


# Landmark targets (rest pose); the nearest surface vertex becomes the landmark.
_L = {
    "nose": [0.0, 0.44, 0.16], "leye": [0.035, 0.475, 0.12], "lear": [0.11, 0.45, 0.02],
    "LBigToe": [0.09, -1.17, 0.20], "LSmallToe": [0.15, -1.17, 0.17], "LHeel": [0.10, -1.20, -0.09],
    "lthumb": [0.80, 0.19, 0.07], "lindex": [0.86, 0.20, 0.035], "lmiddle": [0.87, 0.20, 0.0],
    "lring": [0.86, 0.20, -0.03], "lpinky": [0.84, 0.20, -0.055],
}
LANDMARK_TARGETS = {
    "nose": _L["nose"], "reye": _mirror(_L["leye"]), "leye": _L["leye"], "rear": _mirror(_L["lear"]),
    "lear": _L["lear"], "LBigToe": _L["LBigToe"], "LSmallToe": _L["LSmallToe"], "LHeel": _L["LHeel"],
    "RBigToe": _mirror(_L["LBigToe"]), "RSmallToe": _mirror(_L["LSmallToe"]), "RHeel": _mirror(_L["LHeel"]),
    **{k: _L[k] for k in ("lthumb", "lindex", "lmiddle", "lring", "lpinky")},
    **{"r" + k[1:]: _mirror(_L[k]) for k in ("lthumb", "lindex", "lmiddle", "lring", "lpinky")},
}

# Extra regressor targets (docs/spin.md order: right_hip, left_hip, neck, headtop, pelvis, thorax, spine, jaw, head).
EXTRA_TARGETS = np.array([
    [-0.09, -0.33, 0.01], [0.09, -0.33, 0.01], [0.0, 0.29, -0.01], [0.0, 0.555, 0.03], [0.0, -0.28, 0.02],
    [0.0, 0.22, 0.0], [0.0, 0.05, 0.02], [0.0, 0.37, 0.09], [0.0, 0.44, 0.04],
])
# H36M-17 targets in SPIN's regressor order (pelvis, L leg 1-3, R leg 4-6, spine, thorax, neck/nose,
# head top, L arm 11-13, R arm 14-16), consistent with constants.H36M_TO_J14.
H36M_TARGETS = np.array([
    [0.0, -0.27, 0.02], REST_JOINTS[1], REST_JOINTS[4], REST_JOINTS[7], REST_JOINTS[2], REST_JOINTS[5],
    REST_JOINTS[8], [0.0, 0.03, 0.02], [0.0, 0.25, 0.0], [0.0, 0.40, 0.07], [0.0, 0.54, 0.03],
    REST_JOINTS[16], REST_JOINTS[18], REST_JOINTS[20], REST_JOINTS[17], REST_JOINTS[19], REST_JOINTS[21],
])


# --- signed distance field -------------------------------------------------------------------------
def _round_cone(p, a, b, ra, rb):
    """Distance to a capsule whose radius goes linearly from ra (at a) to rb (at b) (approximate)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ba = b - a
    h = np.clip(((p - a) @ ba) / (ba @ ba), 0.0, 1.0)
    return np.linalg.norm(p - a - h[..., None] * ba, axis=-1) - (ra + (rb - ra) * h)


def _ellipsoid(p, c, r):
    q = (p - np.asarray(c, float)) / np.asarray(r, float)
    k = np.linalg.norm(q, axis=-1)
    return (k - 1.0) * np.min(r)


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _parts(side: float):
    """Parts of one side (side=+1 left, -1 right) as (kind, args)."""
    s = np.array([side, 1.0, 1.0])
    return [
        ("cone", (s * [0.08, -0.30, 0.01], s * [0.10, -0.70, 0.02], 0.075, 0.055)),   # thigh
        ("cone", (s * [0.10, -0.70, 0.02], s * [0.10, -1.09, -0.02], 0.052, 0.038)),  # shin
        ("cone", (s * [0.10, -1.16, -0.06], s * [0.115, -1.165, 0.16], 0.038, 0.034)),  # foot
        ("cone", (s * [0.10, -1.10, -0.03], s * [0.10, -1.15, -0.05], 0.038, 0.038)),  # ankle-heel
        ("cone", (s * [0.12, 0.21, -0.01], s * [0.42, 0.20, -0.03], 0.055, 0.043)),   # upper arm
        ("cone", (s * [0.42, 0.20, -0.03], s * [0.66, 0.21, -0.01], 0.042, 0.032)),   # forearm
        ("ellipsoid", (s * [0.77, 0.20, 0.0], [0.085, 0.026, 0.05])),                  # hand
        ("ellipsoid", (s * [0.095, 0.45, 0.02], [0.022, 0.035, 0.02])),                # ear
    ]


def body_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of the rest-pose body at points p (..., 3)."""
    k = 0.025
    d = _ellipsoid(p, [0.0, 0.02, 0.015], [0.16, 0.25, 0.105])           # chest/abdomen
    d = _smin(d, _ellipsoid(p, [0.0, -0.26, 0.02], [0.165, 0.13, 0.11]), k)  # pelvis
    d = _smin(d, _round_cone(p, [0, 0.2, 0.0], [0, 0.36, 0.02], 0.055, 0.05), k)  # neck
    d = _smin(d, _ellipsoid(p, [0.0, 0.45, 0.035], [0.085, 0.105, 0.10]), k)  # head
    d = _smin(d, _ellipsoid(p, [0.0, 0.43, 0.13], [0.018, 0.03, 0.03]), 0.01)  # nose
    for side in (1.0, -1.0):
        for kind, args in _parts(side):
            part = _round_cone(p, *args) if kind == "cone" else _ellipsoid(p, *args)
            d = _smin(d, part, 0.012 if kind == "ellipsoid" else k)
    return d


# --- mesh ------------------------------------------------------------------------------------------
def _marching_cubes():
    """scikit-image's marching cubes, which only building the stand-in needs (the extra `synthetic`)."""
    try:
        from skimage.measure import marching_cubes
    except ImportError:
        raise SpinFastError("building the synthetic stand-in needs scikit-image, which is not installed: "
                            "pip install 'spin_fast[synthetic]' (training on real data does not need it)") from None
    return marching_cubes


def _march(h: float):
    marching_cubes = _marching_cubes()
    xs = np.arange(-0.97, 0.97 + h, h)
    ys = np.arange(-1.30, 0.62 + h, h)
    zs = np.arange(-0.20, 0.27 + h, h)
    P = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1)
    v, f, _, _ = marching_cubes(body_sdf(P), 0.0, spacing=(h, h, h))
    v = v + np.array([xs[0], ys[0], zs[0]])
    # weld duplicate vertices (marching cubes can emit coincident ones) and drop degenerate faces
    key = np.round(v / (h * 1e-4)).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    f = inverse.reshape(-1)[f]
    v = v[first]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    return v, f


def _edges(f):
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return e


def _split_longest_edges(v, f, target: int):
    """Split the longest edges (each split: +1 vertex, +2 faces) until len(v) == target."""
    v, f = v.copy(), f.copy()
    while len(v) < target:
        half = _edges(f)  # directed half-edges, face id = row % F
        F = len(f)
        face_of = np.tile(np.arange(F), 3)
        key = np.sort(half, axis=1)
        length = np.linalg.norm(v[key[:, 0]] - v[key[:, 1]], axis=1)
        order = np.argsort(-length, kind="stable")
        used = np.zeros(F, bool)
        done = set()
        # pair each undirected edge with its two faces
        ukey = key[:, 0] * len(v) + key[:, 1]
        faces_by_edge: dict[int, list[int]] = {}
        for i in order[: 4 * (target - len(v)) + 64]:
            faces_by_edge.setdefault(int(ukey[i]), []).append(i)
        new_faces = []
        new_verts = []
        drop = np.zeros(F, bool)
        budget = target - len(v)
        for i in order:
            if budget == 0:
                break
            k = int(ukey[i])
            if k in done:
                continue
            halves = faces_by_edge.get(k)
            if halves is None:
                break  # past the considered prefix: recompute
            if len(halves) != 2:
                continue
            f0, f1 = face_of[halves[0]], face_of[halves[1]]
            if used[f0] or used[f1]:
                continue
            done.add(k)
            used[f0] = used[f1] = True
            a, b = key[i]
            m = len(v) + len(new_verts)
            new_verts.append(0.5 * (v[a] + v[b]))
            for fi in (f0, f1):
                tri = list(f[fi])
                # rotate so the split edge is (tri[0], tri[1]) in this face's orientation
                while not ({tri[0], tri[1]} == {a, b}):
                    tri = tri[1:] + tri[:1]
                x, y, c = tri
                new_faces += [[x, m, c], [m, y, c]]
                drop[fi] = True
            budget -= 1
        v = np.concatenate([v, np.array(new_verts)])
        f = np.concatenate([f[~drop], np.array(new_faces, dtype=f.dtype)])
    return v, f


def build_mesh():
    """(vertices (6890, 3), faces (13776, 3)) of the rest-pose body, outward-facing triangles."""
    lo, hi = 0.012, 0.04
    for _ in range(30):  # coarsest spacing whose mesh fits in 6890 vertices
        mid = 0.5 * (lo + hi)
        n = len(_march(mid)[0])
        if n > NUM_VERTICES:
            lo = mid
        else:
            hi = mid
        if n <= NUM_VERTICES and NUM_VERTICES - n < 400:
            break
    v, f = _march(hi)
    v, f = _split_longest_edges(v, f, NUM_VERTICES)
    e = np.unique(np.sort(_edges(f), axis=1), axis=0)
    if len(v) - len(e) + len(f) != 2 or len(f) != NUM_FACES:
        raise RuntimeError(f"synthetic mesh is not a closed genus-0 surface: V={len(v)} E={len(e)} F={len(f)}")
    # outward orientation: positive signed volume
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    if vol < 0:
        f = f[:, [0, 2, 1]]
    return v, f


def place_landmarks(v, f):
    """Renumber vertices so SMPL's landmark ids sit at the anatomical targets."""
    perm = np.arange(len(v))  # perm[new_id] = old_id
    taken = set()
    for name, vid in LANDMARK_VERTICES.items():
        d = np.linalg.norm(v - np.asarray(LANDMARK_TARGETS[name]), axis=1)
        for old in np.argsort(d):
            if int(old) not in taken:
                break
        taken.add(int(old))
        pos_old = int(np.nonzero(perm == old)[0][0])
        perm[pos_old], perm[vid] = perm[vid], perm[pos_old]
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return v[perm], inv[f]


# --- rigging ---------------------------------------------------------------------------------------
def _bones():
    """Segment (a, b) and radius of the body part each joint moves."""
    J = REST_JOINTS
    tips = {10: [0.11, -1.17, 0.19], 11: [-0.11, -1.17, 0.19], 15: [0.0, 0.55, 0.03],
            22: [0.86, 0.20, 0.0], 23: [-0.86, 0.20, 0.0]}
    child = {0: None, 1: 4, 2: 5, 3: 6, 4: 7, 5: 8, 6: 9, 7: 10, 8: 11, 9: 12, 12: 15, 13: 16, 14: 17,
             16: 18, 17: 19, 18: 20, 19: 21, 20: 22, 21: 23}
    radius = {0: 0.14, 1: 0.07, 2: 0.07, 3: 0.13, 4: 0.045, 5: 0.045, 6: 0.13, 7: 0.035, 8: 0.035, 9: 0.12,
              10: 0.03, 11: 0.03, 12: 0.05, 13: 0.05, 14: 0.05, 15: 0.09, 16: 0.05, 17: 0.05, 18: 0.04,
              19: 0.04, 20: 0.035, 21: 0.035, 22: 0.03, 23: 0.03}
    segs = []
    for j in range(NUM_JOINTS):
        if j == 0:
            a, b = np.array([-0.07, -0.27, 0.02]), np.array([0.07, -0.27, 0.02])
        elif j in tips:
            a, b = J[j], np.asarray(tips[j], float)
        else:
            a, b = J[j], J[child[j]]
        segs.append((a, b, radius[j]))
    return segs


def _segment_distance(p, a, b):
    ba = b - a
    h = np.clip(((p - a) @ ba) / max(ba @ ba, 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - a - h[:, None] * ba, axis=1), a + h[:, None] * ba


def skinning_weights(v, sigma: float = 0.025):
    """(V, 24) weights, <= 4 non-zeros a row, rows summing to 1."""
    segs = _bones()
    d = np.stack([_segment_distance(v, a, b)[0] - r for a, b, r in segs], 1)  # distance to each part
    logits = -np.maximum(d, -0.02) / sigma
    top = np.argsort(-logits, axis=1)[:, :4]
    sel = np.take_along_axis(logits, top, 1)
    w = np.exp(sel - sel[:, :1])
    w[w < 1e-3] = 0.0
    w /= w.sum(1, keepdims=True)
    W = np.zeros((len(v), NUM_JOINTS))
    np.put_along_axis(W, top, w, 1)
    return W


def regressor(v, targets, tol: float = 2e-3) -> np.ndarray:
    """(J, V) non-negative rows summing to 1 on vertices near each target whose weighted mean lands
    on the target (NNLS with a small pull toward uniform weights). The candidate set grows until the
    target is inside their hull (joints deep in the torso need vertices from both sides)."""
    R = np.zeros((len(targets), len(v)))
    for j, t in enumerate(np.asarray(targets, float)):
        order = np.argsort(np.linalg.norm(v - t, axis=1))
        for k in (24, 48, 96, 192, 384):
            idx = order[:k]
            lam, mu = 1e-4, 10.0
            A = np.vstack([v[idx].T, mu * np.ones((1, k)), np.sqrt(lam) * np.eye(k)])
            y = np.concatenate([t, [mu], np.sqrt(lam) * np.full(k, 1.0 / k)])
            w, _ = scipy.optimize.nnls(A, y)
            w[w < 1e-4] = 0.0
            w /= w.sum()
            if np.linalg.norm(w @ v[idx] - t) < tol:
                break
        R[j, idx] = w
    return R


def shape_directions(v, weights, rng) -> np.ndarray:
    """(V, 3, 10) shape components, metres per unit beta."""
    segs = _bones()
    owner = weights.argmax(1)
    radial = np.zeros_like(v)
    for j, (a, b, _) in enumerate(segs):
        m = owner == j
        if m.any():
            _, foot = _segment_distance(v[m], a, b)
            r = v[m] - foot
            radial[m] = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-9)
    x, y, z = v.T
    S = np.zeros((len(v), 3, 10))
    S[:, :, 0] = 0.05 * (v - np.array([0.0, -0.25, 0.0]))                     # overall size
    S[:, :, 1] = 0.015 * radial                                               # girth
    legs = np.clip((-0.3 - y) / 0.85, 0, 1)
    S[:, 1, 2] = -0.05 * legs                                                 # leg length
    sh = np.clip((np.abs(x) - 0.05) / 0.15, 0, 1) * (y > 0.05)
    S[:, 0, 3] = 0.025 * np.sign(x) * sh                                      # shoulder width
    S[:, 2, 4] = 0.03 * np.exp(-((y + 0.1) / 0.12) ** 2) * np.clip(z / 0.1, 0, 1) * (np.abs(x) < 0.2)  # belly
    S[:, 0, 5] = 0.04 * np.sign(x) * np.clip((np.abs(x) - 0.2) / 0.5, 0, 1)   # arm length
    head = np.array([0.0, 0.45, 0.035])
    S[:, :, 6] = 0.08 * (v - head) * (weights[:, 15] + weights[:, 12] * 0.5)[:, None]  # head size
    hips = np.exp(-((y + 0.3) / 0.12) ** 2) * (np.abs(x) < 0.3)
    S[:, 0, 7] = 0.02 * np.sign(x) * hips                                     # hip width
    for c in (8, 9):                                                           # smooth random fields
        centres = v[rng.choice(len(v), 6, replace=False)]
        for cen in centres:
            g = np.exp(-np.sum((v - cen) ** 2, 1) / (2 * 0.08 ** 2))
            S[:, :, c] += 0.01 * g[:, None] * rng.normal(size=3)
    return S


def pose_directions(v, weights, rng) -> np.ndarray:
    """(V, 3, 207) small pose correctives: ~1 cm per unit of pose feature near each joint."""
    P = np.zeros((len(v), 3, (NUM_JOINTS - 1) * 9))
    coef = rng.uniform(-1, 1, size=(NUM_JOINTS - 1, 9, 3)) * 0.01
    for j in range(1, NUM_JOINTS):
        w = weights[:, j] + weights[:, SMPL_PARENTS[j]]
        P[:, :, 9 * (j - 1): 9 * j] = w[:, None, None] * coef[j - 1].T[None]
    return P
