"""HumanData reader/writer: round trips (compressed / uncompressed keypoints, deflated / stored zip),
the 190 -> 49 conversion, bbox -> center/scale, smpl -> pose/betas, and clear errors on bad files."""
import zipfile

import numpy as np
import pytest

from spin_fast.constants import HUMAN_DATA_TO_SPIN_49
from spin_fast.data.humandata import (HumanData, HumanDataError, load_static_fits, spin49_to_humandata,
                                      write_humandata, write_static_fits)


def make_fields(n=7, seed=0):
    rng = np.random.default_rng(seed)
    kp2d = rng.uniform(0, 300, (n, 190, 3)).astype(np.float32)
    kp2d[..., 2] = rng.integers(0, 2, (n, 190))
    kp3d = rng.normal(size=(n, 190, 4)).astype(np.float32)
    kp3d[:, 100:140] = 0  # some columns never used -> dropped by compression
    smpl = {"body_pose": rng.normal(size=(n, 23, 3)), "global_orient": rng.normal(size=(n, 3)),
            "betas": rng.normal(size=(n, 10))}
    return dict(image_path=[f"img/{i:05d}.jpg" for i in range(n)],
                bbox_xywh=np.c_[rng.uniform(0, 50, (n, 2)), rng.uniform(20, 100, (n, 2)), np.ones(n)],
                keypoints2d=kp2d, keypoints3d=kp3d, smpl=smpl, has_smpl=rng.integers(0, 2, n),
                gender=rng.choice(["m", "f"], n))


@pytest.mark.parametrize("compress_keypoints", [True, False], ids=["kp_compressed", "kp_full"])
@pytest.mark.parametrize("zip_compress", [True, False], ids=["deflated", "stored"])
def test_round_trip(tmp_path, compress_keypoints, zip_compress):
    f = make_fields()
    p = write_humandata(tmp_path / "x.npz", compress_keypoints=compress_keypoints, zip_compress=zip_compress, **f)
    hd = HumanData(p)
    n = len(f["image_path"])
    assert len(hd) == n and list(hd.image_path) == f["image_path"]
    x, y, w, h = f["bbox_xywh"][:, :4].T
    np.testing.assert_allclose(hd.center, np.c_[x + w / 2, y + h / 2], rtol=1e-6)
    np.testing.assert_allclose(hd.scale, np.maximum(w, h), rtol=1e-6)
    idx = np.array([3, 0, 6, 3])
    np.testing.assert_array_equal(hd.keypoints2d(idx), f["keypoints2d"][idx][:, HUMAN_DATA_TO_SPIN_49])
    np.testing.assert_array_equal(hd.keypoints3d(idx), f["keypoints3d"][idx][:, HUMAN_DATA_TO_SPIN_49])
    np.testing.assert_allclose(hd.pose[:, :3], f["smpl"]["global_orient"], rtol=1e-6)
    np.testing.assert_allclose(hd.pose[:, 3:], f["smpl"]["body_pose"].reshape(n, 69), rtol=1e-6)
    np.testing.assert_allclose(hd.betas, f["smpl"]["betas"], rtol=1e-6)
    np.testing.assert_array_equal(hd.has_smpl, f["has_smpl"].astype(bool))
    np.testing.assert_array_equal(hd.gender, f["gender"])
    s = hd.sample(2)
    assert s["image_path"] == "img/00002.jpg" and s["keypoints2d"].shape == (49, 3)
    # stored (np.savez) keypoints are memory-mapped, not loaded
    assert isinstance(hd._kp["keypoints2d"][0], np.memmap) == (not zip_compress)


def test_readable_by_numpy_like_mmhuman3d(tmp_path):
    """What mmhuman3d's HumanData.load does: np.load(allow_pickle=True), .item() on 0-d arrays."""
    f = make_fields(5)
    p = write_humandata(tmp_path / "x.npz", **f)
    with np.load(p, allow_pickle=True) as z:
        assert z["__keypoints_compressed__"].item() is True and z["__data_len__"].item() == 5
        mask = z["keypoints2d_mask"]
        assert z["keypoints2d"].shape == (5, int(mask.sum()), 3)
        assert z["smpl"].item()["body_pose"].shape == (5, 23, 3)
        assert list(z["meta"].item()["gender"]) == list(f["gender"])
        assert z["bbox_xywh"].shape == (5, 5)


def test_hand_made_mmhuman3d_file(tmp_path):
    """A file written directly with np.savez_compressed (as mmhuman3d dumps), compressed keypoints,
    no keypoints3d, no has_smpl (smpl present -> has_smpl true), 4-column bbox."""
    n = 3
    kp = np.zeros((n, 190, 3), np.float32)
    kp[:, 8] = [10, 20, 1]   # 'Right Ankle' of the 49 (index 25) comes from HumanData 8
    kp[:, 153] = [1, 2, 1]   # OpenPose nose = 49-index 0
    mask = np.zeros(190, np.uint8)
    mask[[8, 153, 7]] = 1
    np.savez_compressed(tmp_path / "h.npz", image_path=np.array(["a.jpg", "b.jpg", "c.jpg"]),
                        bbox_xywh=np.array([[0, 0, 10, 20]] * n, np.float32), keypoints2d=kp[:, mask.astype(bool)],
                        keypoints2d_mask=mask, __keypoints_compressed__=True, __data_len__=n,
                        smpl={"body_pose": np.ones((n, 69)), "global_orient": np.zeros((n, 1, 3)),
                              "betas": np.zeros((n, 10))})
    hd = HumanData(tmp_path / "h.npz")
    k = hd.keypoints2d([0, 2])
    assert k.shape == (2, 49, 3)
    np.testing.assert_array_equal(k[:, 25], [[10, 20, 1]] * 2)
    np.testing.assert_array_equal(k[:, 0], [[1, 2, 1]] * 2)
    assert np.count_nonzero(k[0]) == 6  # everything else absent
    np.testing.assert_array_equal(hd.center, [[5, 10]] * n)
    assert hd.scale.tolist() == [20] * n and hd.has_smpl.all() and hd.gender is None
    assert (hd.keypoints3d([1]) == 0).all() and not hd.has_keypoints3d
    assert (hd.pose[:, 3:] == 1).all()


def test_spin49_embedding_round_trip():
    kp = np.random.default_rng(1).normal(size=(4, 49, 3)).astype(np.float32)
    full, mask = spin49_to_humandata(kp)
    assert mask.sum() == 49 and full.shape == (4, 190, 3)
    np.testing.assert_array_equal(full[:, HUMAN_DATA_TO_SPIN_49], kp)


def _write(tmp_path, **over):
    f = make_fields(4)
    keys = dict(image_path=np.array(f["image_path"]), bbox_xywh=f["bbox_xywh"], keypoints2d=f["keypoints2d"],
                smpl=f["smpl"])
    keys.update(over)
    keys = {k: v for k, v in keys.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **keys)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("over, key, words", [
    (dict(bbox_xywh=np.zeros((4, 3))), "bbox_xywh", "expected shape (4, 4) or (4, 5)"),
    (dict(bbox_xywh=np.array([[0, 0, 0, 5.0]] * 4)), "bbox_xywh", "w, h > 0"),
    (dict(image_path=None), "image_path", "required key missing"),
    (dict(keypoints2d=np.zeros((4, 17, 3))), "keypoints2d", "expected shape (4, 190, 3)"),
    (dict(smpl={"body_pose": np.zeros((4, 69)), "global_orient": np.zeros((4, 3))}), "smpl", "smpl['betas'] missing"),
    (dict(smpl=np.zeros((4, 3))), "smpl", "expected a dict"),
    (dict(has_smpl=np.ones(5)), "has_smpl", "expected shape (4,)"),
    (dict(__data_len__=9), "__data_len__", "expected 4"),
    (dict(meta={"gender": np.array(["m", "x", "f", "f"])}), "meta", "expected 'm'/'f'"),
])
def test_bad_files_are_refused_clearly(tmp_path, over, key, words):
    p = _write(tmp_path, **over)
    with pytest.raises(HumanDataError) as e:
        HumanData(p)
    msg = str(e.value)
    assert str(p) in msg and repr(key) in msg and words in msg, msg


def test_not_an_npz(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip")
    with pytest.raises(HumanDataError, match="junk.npz.*not a readable"):
        HumanData(p)
    with pytest.raises(HumanDataError, match="does not exist"):
        HumanData(tmp_path / "missing.npz")
    # truncated zip
    good = write_humandata(tmp_path / "g.npz", **make_fields(3))
    trunc = tmp_path / "t.npz"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(HumanDataError, match="t.npz"):
        HumanData(trunc)


def test_static_fits(tmp_path):
    fits = np.random.default_rng(0).normal(size=(6, 82)).astype(np.float32)
    p = write_static_fits(tmp_path / "coco_fits.npy", fits)
    np.testing.assert_array_equal(load_static_fits(p, 6), fits)
    with pytest.raises(HumanDataError, match=r"expected shape \(7, 82\)"):
        load_static_fits(p, 7)


def test_many_samples_stay_lazy(tmp_path):
    """Stored keypoints of a large file are a memory map; gathering a few rows reads only those."""
    n = 200_000
    kp = np.zeros((n, 49, 3), np.float32)
    kp[:, :, 0] = np.arange(n, dtype=np.float32)[:, None]
    full, _ = spin49_to_humandata(kp)
    p = write_humandata(tmp_path / "big.npz", image_path=np.full(n, "x.jpg"), bbox_xywh=np.ones((n, 4)),
                        keypoints2d=full, compress_keypoints=False, zip_compress=False)
    del full
    hd = HumanData(p)
    assert isinstance(hd._kp["keypoints2d"][0], np.memmap)
    np.testing.assert_array_equal(hd.keypoints2d([199_999, 5])[:, 0, 0], [199_999, 5])
