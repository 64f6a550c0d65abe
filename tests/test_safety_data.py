"""Data files never run code: object arrays of every .npz go through the restricted unpickler, refusals
name the file, key and global, and files written the way mmhuman3d writes them still load."""
import pickle

import numpy as np
import pytest

from spin_fast.config import AssetPaths
from spin_fast.data.humandata import HumanData, HumanDataError


class MakesMarker:
    """Unpickling this calls open(marker, 'w'): the file appears iff the pickle was run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_payload_really_runs_under_plain_unpickling(tmp_path):
    """The crafted object is live: plain np.load(allow_pickle=True), as mmhuman3d reads, creates the marker."""
    marker = tmp_path / "ran"
    np.savez(tmp_path / "x.npz", meta=np.array({"gender": MakesMarker(marker)}, dtype=object))
    with np.load(tmp_path / "x.npz", allow_pickle=True) as z:
        z["meta"]
    assert marker.exists()


def crafted_humandata(path, marker, key):
    """A valid small HumanData file except that `key` holds a pickled MakesMarker."""
    n = 2
    fields = dict(image_path=np.array(["a.jpg", "b.jpg"]), bbox_xywh=np.array([[0, 0, 10, 10, 1]] * n, np.float32),
                  smpl=np.array({"body_pose": np.zeros((n, 69)), "global_orient": np.zeros((n, 3)),
                                 "betas": np.zeros((n, 10))}, dtype=object))
    evil = MakesMarker(marker)
    if key == "image_path":
        fields["image_path"] = np.array(["a.jpg", evil], dtype=object)
    elif key == "smpl":
        fields["smpl"] = np.array({"body_pose": evil, "global_orient": np.zeros((n, 3)), "betas": np.zeros((n, 10))},
                                  dtype=object)
    else:
        fields[key] = np.array({"gender": [evil]}, dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **fields)
    return path


@pytest.mark.parametrize("key", ["image_path", "smpl", "meta"])
def test_crafted_humandata_is_refused(tmp_path, key):
    marker = tmp_path / "ran"
    p = crafted_humandata(tmp_path / "evil.npz", marker, key)
    with pytest.raises(HumanDataError) as e:
        HumanData(p)
    msg = str(e.value)
    assert str(p) in msg and repr(key) in msg and "refusing to load global 'io.open'" in msg, msg
    assert not marker.exists()


def _crafted_root(tmp_path, marker, ann_file):
    paths = AssetPaths(tmp_path / "data")
    crafted_humandata(paths.preprocessed(ann_file), marker, "meta")
    return paths


def test_data_check_refuses_and_goes_on(tmp_path, capsys):
    from spin_fast.data.__main__ import main

    marker = tmp_path / "ran"
    paths = _crafted_root(tmp_path, marker, "h36m_mosh_train")
    rc = main(["check", str(paths.root), "--datasets", "h36m,lsp"])
    out = capsys.readouterr().out
    assert rc == 1 and not marker.exists()
    assert "h36m_mosh_train.npz: key 'meta': refusing to load global 'io.open'" in out, out
    assert "lsp" in out and "spin_lsp_train.npz: file does not exist" in out, out


def test_eval_and_train_loaders_refuse(tmp_path):
    from spin_fast.data import build_eval_loader, build_train_loader

    marker = tmp_path / "ran"
    paths = _crafted_root(tmp_path, marker, "spin_pw3d_test")
    with pytest.raises(HumanDataError, match=r"spin_pw3d_test\.npz: key 'meta': refusing to load global"):
        build_eval_loader(paths, "pw3d", batch_size=2, backend="reference", threads=0)
    crafted_humandata(paths.preprocessed("h36m_mosh_train"), marker, "smpl")
    with pytest.raises(HumanDataError, match=r"h36m_mosh_train\.npz: key 'smpl': refusing to load global"):
        build_train_loader(paths, {"h36m": 1.0}, batch_size=2, backend="reference", threads=0)
    assert not marker.exists()


def test_crafted_mean_params_are_refused(tmp_path):
    from spin_fast.body.io import AssetError, load_mean_params

    marker = tmp_path / "ran"
    np.savez(tmp_path / "mean.npz", pose=np.zeros(144, np.float32), shape=np.zeros(10, np.float32),
             cam=np.array([MakesMarker(marker), 0, 0], dtype=object))
    with pytest.raises(AssetError, match=r"mean\.npz: key 'cam': refusing to load global 'io.open'"):
        load_mean_params(tmp_path / "mean.npz")
    assert not marker.exists()


def mmhuman3d_dump(path, n=4, seed=0):
    """What mmhuman3d's HumanData.dump writes (mmhuman3d/data/data_structures/human_data.py): its three
    attributes as plain Python values, then every key of the dict as it is held in memory (image_path a
    list of str, smpl/meta dicts, config a str, compressed keypoints with their masks), through
    np.savez_compressed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(190, np.uint8)
    mask[rng.choice(190, 60, replace=False)] = 1
    k = int(mask.sum())
    human_data = {
        "image_path": [f"images/{i:04d}.jpg" for i in range(n)],
        "bbox_xywh": np.c_[rng.uniform(0, 50, (n, 2)), rng.uniform(20, 100, (n, 2)), np.ones(n)],
        "config": "h36m",
        "keypoints2d": rng.uniform(0, 200, (n, k, 3)), "keypoints2d_mask": mask,
        "keypoints3d": rng.normal(size=(n, k, 4)), "keypoints3d_mask": mask,
        "smpl": {"body_pose": rng.normal(size=(n, 23, 3)), "global_orient": rng.normal(size=(n, 3)),
                 "betas": rng.normal(size=(n, 10)), "transl": np.zeros((n, 3))},
        "meta": {"gender": ["m", "f"] * (n // 2)},
        "misc": {"source": "mocap", "fps": np.float32(25.0), "cams": (1, 2.5, None, True, b"raw")},
    }
    dict_to_dump = {"__key_strict__": False, "__temporal_len__": n, "__keypoints_compressed__": True}
    dict_to_dump.update(human_data)
    np.savez_compressed(path, **dict_to_dump)
    return human_data


def test_mmhuman3d_dump_still_loads(tmp_path):
    from spin_fast.constants import HUMAN_DATA_TO_SPIN_49
    from spin_fast.safe_pickle import load_npz

    f = mmhuman3d_dump(tmp_path / "dump.npz")
    hd = HumanData(tmp_path / "dump.npz")
    assert hd.image_path.tolist() == f["image_path"] and hd.gender.tolist() == f["meta"]["gender"]
    full = np.zeros((4, 190, 3))
    full[:, f["keypoints2d_mask"].astype(bool)] = f["keypoints2d"]
    np.testing.assert_allclose(hd.keypoints2d(np.arange(4)), full[:, HUMAN_DATA_TO_SPIN_49], rtol=1e-6)
    np.testing.assert_allclose(hd.pose[:, 3:], f["smpl"]["body_pose"].reshape(4, 69), rtol=1e-6)
    assert hd.has_smpl.all()
    # every member, plain values of every allowed kind included, reads back as numpy would
    got = load_npz(tmp_path / "dump.npz")
    assert got["misc"].item() == {"source": "mocap", "fps": np.float32(25.0), "cams": (1, 2.5, None, True, b"raw")}
    with np.load(tmp_path / "dump.npz", allow_pickle=True) as z:
        assert sorted(z.files) == sorted(got)
        for key in z.files:
            if z[key].dtype != object:
                np.testing.assert_array_equal(got[key], z[key])


def test_object_image_path_and_old_pickle_protocol_load(tmp_path):
    """image_path as an object array, and object members pickled with protocol 2 (bytes via _codecs)."""
    from spin_fast.safe_pickle import read_npy

    n = 2
    np.savez(tmp_path / "o.npz", image_path=np.array(["a.jpg", "b.jpg"], dtype=object),
             bbox_xywh=np.array([[0, 0, 10, 10]] * n, np.float32))
    assert HumanData(tmp_path / "o.npz").image_path.tolist() == ["a.jpg", "b.jpg"]
    import io

    buf = io.BytesIO()
    arr = np.array({"b": b"\x00\xff", "x": np.arange(3)}, dtype=object)
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    pickle.dump(arr, buf, protocol=2)
    buf.seek(0)
    d = read_npy(buf).item()
    assert d["b"] == b"\x00\xff" and d["x"].tolist() == [0, 1, 2]
