"""Fits store (SPIN's fits dictionary) and the camera least squares: no body model needed."""
import numpy as np
import pytest
import torch

from spin_fast.geometry import axis_angle_to_rotmat, perspective_projection
from spin_fast.smplify.camera import default_translation, estimate_camera_translation
from spin_fast.smplify.fits import FitsStore, reaugment, reset_extreme_betas, unaugment


def _random_fits(n, seed=0, pose_scale=0.4):
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(n, 72, generator=g) * pose_scale
    betas = torch.randn(n, 10, generator=g)
    return torch.cat([pose, betas], 1)


# --- camera least squares ----------------------------------------------------------------------------
def _scene(B=6, J=49, seed=0):
    g = torch.Generator().manual_seed(seed)
    joints = torch.randn(B, J, 3, generator=g, dtype=torch.float64) * torch.tensor([0.3, 0.7, 0.2], dtype=torch.float64)
    t = torch.stack([torch.randn(B, generator=g, dtype=torch.float64) * 0.2,
                     torch.randn(B, generator=g, dtype=torch.float64) * 0.2,
                     40 + 20 * torch.rand(B, generator=g, dtype=torch.float64)], -1)
    uv = perspective_projection(joints, t, 5000.0, torch.full((B, 2), 112.0, dtype=torch.float64))
    conf = (torch.rand(B, J, generator=g, dtype=torch.float64) > 0.3).double() * torch.rand(B, J, generator=g, dtype=torch.float64)
    return joints, t, torch.cat([uv, conf[..., None]], -1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_camera_lsq_recovers_known_translation(dtype):
    joints, t, kp = _scene()
    est, valid = estimate_camera_translation(joints.to(dtype), kp.to(dtype), 5000.0, 224)
    assert valid.all()
    tol = 1e-8 if dtype == torch.float64 else 2e-3  # fp32 inputs: pixels carry ~1e-5 px rounding
    torch.testing.assert_close(est.double(), t, atol=tol, rtol=0)


def test_camera_lsq_matches_spin_numpy_loop():
    """Same numbers as SPIN's per-sample numpy estimate_translation_np with noisy keypoints."""
    joints, t, kp = _scene(B=4, seed=3)
    kp = kp.clone()
    kp[..., :2] += torch.randn(kp[..., :2].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    est, valid = estimate_camera_translation(joints, kp, 5000.0, 224)
    for i in range(4):
        S, j2d = joints[i, 25:].numpy(), kp[i, 25:].numpy()
        conf, j2d = j2d[:, 2], j2d[:, :2]
        n = S.shape[0]
        Z = np.reshape(np.tile(S[:, 2], (2, 1)).T, -1)
        XY = np.reshape(S[:, :2], -1)
        O = np.tile([112.0, 112.0], n)
        F = np.tile([5000.0, 5000.0], n)
        w = np.reshape(np.tile(np.sqrt(conf), (2, 1)).T, -1)
        Q = np.array([F * np.tile([1, 0], n), F * np.tile([0, 1], n), O - np.reshape(j2d, -1)]).T
        c = (np.reshape(j2d, -1) - O) * Z - F * XY
        Q, c = w[:, None] * Q, w * c
        ref = np.linalg.solve(Q.T @ Q, Q.T @ c)
        np.testing.assert_allclose(est[i].numpy(), ref, rtol=1e-9, atol=1e-9)
    assert valid.all()


def test_camera_lsq_all_zero_confidence_falls_back():
    joints, t, kp = _scene(B=5)
    kp = kp.clone()
    kp[1, :, 2] = 0  # nothing visible
    kp[2, 25:, 2] = 0
    kp[2, 30, 2] = 1.0  # one joint: two equations, three unknowns
    kp[3, 40, :2] = float("nan")  # a NaN keypoint is ignored, not propagated
    fallback = torch.arange(15, dtype=torch.float64).view(5, 3)
    est, valid = estimate_camera_translation(joints, kp, 5000.0, 224, fallback=fallback)
    assert valid.tolist() == [True, False, False, True, True]
    torch.testing.assert_close(est[1], fallback[1])
    torch.testing.assert_close(est[2], fallback[2])
    assert torch.isfinite(est).all()
    good = [0, 3, 4]
    torch.testing.assert_close(est[good], t[good], atol=1e-8, rtol=0)
    est2, _ = estimate_camera_translation(joints, kp, 5000.0, 224)
    torch.testing.assert_close(est2[1], default_translation(1, dtype=torch.float64)[0])


# --- augmentation ------------------------------------------------------------------------------------
def test_reaugment_then_unaugment_is_identity():
    fits = _random_fits(64)
    flip = torch.arange(64) % 2 == 0
    rot = torch.linspace(-60, 60, 64)
    rot[::5] = 0
    back = unaugment(reaugment(fits, flip, rot), flip, rot)
    # Compare roots as rotation matrices (axis-angle is unique only up to 2 pi).
    torch.testing.assert_close(axis_angle_to_rotmat(back[:, :3]), axis_angle_to_rotmat(fits[:, :3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(back[:, 3:], fits[:, 3:])
    assert torch.equal(back[~flip & (rot == 0)], fits[~flip & (rot == 0)])  # untouched bit for bit


def test_reaugment_applies_rotation_then_flip():
    fits = _random_fits(3)
    rot = torch.tensor([30.0, 0.0, -45.0])
    flip = torch.tensor([True, True, False])
    out = reaugment(fits, flip, rot)
    from spin_fast.geometry import flip_pose, rotate_global_orient

    rotated = torch.cat([rotate_global_orient(fits[:, :3], rot), fits[:, 3:72]], 1)
    expect0 = flip_pose(rotated[0:1])
    torch.testing.assert_close(out[0, :72], expect0[0])
    torch.testing.assert_close(out[1, :72], flip_pose(fits[1:2, :72])[0])
    torch.testing.assert_close(out[2, :72], rotated[2])
    torch.testing.assert_close(out[:, 72:], fits[:, 72:])
    # the flip really changed something
    assert not torch.allclose(out[1, :72], fits[1, :72])


def test_beta_reset():
    fits = _random_fits(4) * 0.1
    fits[1, 72 + 3] = 3.5
    fits[2, 72 + 9] = -3.01
    fits[3, 72 + 0] = 3.0  # not > 3
    out = reset_extreme_betas(fits)
    assert torch.equal(out[[1, 2], 72:], torch.zeros(2, 10))
    assert torch.equal(out[[0, 3]], fits[[0, 3]])
    assert torch.equal(out[:, :72], fits[:, :72])


# --- the store ---------------------------------------------------------------------------------------
def _store():
    return FitsStore({"coco": _random_fits(7, 1), "h36m": _random_fits(5, 2), "lsp": _random_fits(3, 3)})


def test_get_put_keys_by_dataset_and_index():
    store = _store()
    ds = torch.tensor([0, 1, 2, 1])
    idx = torch.tensor([6, 0, 2, 4])
    expect = torch.stack([store.table("coco")[6], store.table("h36m")[0], store.table("lsp")[2], store.table("h36m")[4]])
    assert torch.equal(store.get(ds, idx), expect)
    new = _random_fits(4, 9)
    store.put(ds, idx, new, mask=torch.tensor([True, False, True, True]))
    assert torch.equal(store.table("coco")[6], new[0])
    assert torch.equal(store.table("h36m")[0], expect[1])  # masked out
    assert torch.equal(store.table("lsp")[2], new[2])
    with pytest.raises(IndexError):
        store.get(torch.tensor([2]), torch.tensor([3]))
    with pytest.raises(IndexError):
        store.get(torch.tensor([3]), torch.tensor([0]))


def test_select_keeps_the_better_and_writes_back_unaugmented():
    store = _store()
    before = store.data.clone()
    B = 6
    ds = torch.tensor([0, 0, 1, 1, 2, 2])
    idx = torch.tensor([0, 1, 0, 1, 0, 1])
    flip = torch.tensor([True, False, True, False, True, False])
    rot = torch.tensor([20.0, -35.0, 0.0, 10.0, 0.0, 0.0])
    stored = reaugment(store.get(ds, idx), flip, rot)
    new = reaugment(_random_fits(B, 5) * 0.5, flip, rot)
    stored_loss = torch.tensor([50.0, 50.0, 150.0, float("nan"), 10.0, 80.0])
    new_loss = torch.tensor([40.0, 60.0, 120.0, 500.0, float("nan"), 80.0])
    sel = store.select_and_update(ds, idx, flip, rot, stored, stored_loss, new, new_loss)
    assert sel.updated.tolist() == [True, False, True, True, False, False]
    expect_fit = torch.where(sel.updated[:, None], new, stored)
    torch.testing.assert_close(sel.fit, reset_extreme_betas(expect_fit))
    torch.testing.assert_close(sel.joint_loss, torch.tensor([40.0, 50.0, 120.0, 500.0, 10.0, 80.0]))
    assert sel.valid_fit.tolist() == [True, True, False, False, True, True]
    # written back in the dataset frame: re-augmenting what is stored gives the new fit again
    got = reaugment(store.get(ds, idx), flip, rot)
    upd = sel.updated
    torch.testing.assert_close(axis_angle_to_rotmat(got[upd, :3]), axis_angle_to_rotmat(new[upd, :3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(got[upd, 3:], new[upd, 3:], atol=1e-6, rtol=0)
    # rows not updated are untouched bit for bit
    rows = store._rows(ds, idx)
    assert torch.equal(store.data[rows[~upd]], before[rows[~upd]])
    untouched = torch.ones(store.data.shape[0], dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(store.data[untouched], before[untouched])


def test_select_gt_override_and_beta_reset_shape_target_only():
    store = _store()
    ds, idx = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 1])
    flip, rot = torch.zeros(3, dtype=torch.bool), torch.zeros(3)
    stored = store.get(ds, idx)
    new = _random_fits(3, 11) * 0.1
    new[0, 72] = 4.0  # extreme beta in a winning fit
    gt = _random_fits(3, 12)
    has_smpl = torch.tensor([False, True, False])
    cams = [torch.full((3, 3), v) for v in (1.0, 2.0, 3.0)]
    sel = store.select_and_update(ds, idx, flip, rot, stored, torch.full((3, 49), 500.0), new,
                                  torch.full((3, 49), 200.0), has_smpl=has_smpl, gt_fit=gt,
                                  stored_cam_t=cams[0], new_cam_t=cams[1], gt_cam_t=cams[2])
    assert sel.updated.all()
    assert torch.equal(sel.fit[0, 72:], torch.zeros(10))  # reset in the target
    assert torch.equal(store.get(ds[:1], idx[:1])[0], new[0])  # raw fit in the table
    assert torch.equal(sel.fit[1], gt[1])
    assert torch.equal(sel.fit[2], new[2])
    assert sel.cam_t[:, 0].tolist() == [2.0, 3.0, 2.0]
    assert sel.valid_fit.tolist() == [False, True, False]  # loss 200 > 100 unless GT


def test_save_load_round_trip(tmp_path):
    store = _store()
    store.put(torch.tensor([1]), torch.tensor([2]), torch.full((1, 82), 7.0))
    path = tmp_path / "ckpt" / "fits.pt"
    store.save(path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["fits.pt"]  # no temp left
    loaded = FitsStore.load(path)
    assert loaded.names == store.names and loaded.sizes == store.sizes
    assert torch.equal(loaded.data, store.data)
    # load_state_dict into an existing store (resume), and refuse a mismatched one
    other = FitsStore.filled({"coco": 7, "h36m": 5, "lsp": 3})
    other.load_state_dict(store.state_dict())
    assert torch.equal(other.data, store.data)
    with pytest.raises(ValueError):
        FitsStore.filled({"coco": 7, "h36m": 4, "lsp": 3}).load_state_dict(store.state_dict())
    # overwrite atomically
    store.put(torch.tensor([0]), torch.tensor([0]), torch.zeros(1, 82))
    store.save(path)
    assert torch.equal(FitsStore.load(path).data, store.data)


def test_from_static_fits(tmp_path):
    from spin_fast.config import AssetPaths

    paths = AssetPaths(tmp_path)
    (tmp_path / "static_fits").mkdir()
    coco = _random_fits(6).numpy()
    np.save(paths.static_fits("coco"), coco)
    init = torch.zeros(82)
    init[0] = np.pi
    store = FitsStore.from_static_fits(paths, ["coco", "h36m"], sizes={"h36m": 4}, init_fit=init)
    assert torch.equal(store.table("coco"), torch.from_numpy(coco))
    assert torch.equal(store.table("h36m"), init.expand(4, 82))
    with pytest.raises(ValueError):
        FitsStore.from_static_fits(paths, ["coco"], sizes={"coco": 5})
    with pytest.raises(FileNotFoundError):
        FitsStore.from_static_fits(paths, ["lsp"])
