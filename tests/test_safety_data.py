"""Data files never run code: object arrays of every .npz go through the restricted unpickler, refusals
name the file, key and global, and files written the way mmhuman3d writes them still load. Bad labels
are data problems: non-finite values are masked, counted and reported; wrong shapes and bad configs are
errors that name what is wrong."""
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


def test_train_cli_refuses_a_crafted_dataset(synthetic_assets, tmp_path, capsys):
    import shutil

    from spin_fast.train.__main__ import main

    marker = tmp_path / "ran"
    root = tmp_path / "data"
    shutil.copytree(synthetic_assets.root, root)
    crafted_humandata(AssetPaths(root).preprocessed("h36m_mosh_train"), marker, "image_path")
    rc = main(["--data-root", str(root), "--work-dir", str(tmp_path / "w"), "--data.mix", "{h36m: 1.0}",
               "--backbone", "resnet18", "--max-steps", "1", "--data.loader", "reference", "--data.threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert "h36m_mosh_train.npz: key 'image_path': refusing to load global 'io.open'" in err, err


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
    # as numpy 1.x wrote it: its array reconstructor lived in numpy.core.multiarray
    old = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in old
    buf.write(old)
    buf.seek(0)
    d = read_npy(buf).item()
    assert d["b"] == b"\x00\xff" and d["x"].tolist() == [0, 1, 2]


# --- bad labels are data problems: masked, counted, reported ------------------------------------------
def labelled(n=8, seed=0):
    from spin_fast.constants import HUMAN_DATA_TO_SPIN_49

    rng = np.random.default_rng(seed)
    kp2d = np.zeros((n, 190, 3), np.float32)
    kp3d = np.zeros((n, 190, 4), np.float32)
    cols = list(HUMAN_DATA_TO_SPIN_49)
    kp2d[:, cols] = np.c_[rng.uniform(1, 60, (n * 49, 2)), np.ones(n * 49)].reshape(n, 49, 3)
    kp3d[:, cols] = np.c_[rng.normal(size=(n * 49, 3)), np.ones(n * 49)].reshape(n, 49, 4)
    smpl = {"body_pose": rng.normal(size=(n, 23, 3)) * 0.1, "global_orient": rng.normal(size=(n, 3)) * 0.1,
            "betas": rng.normal(size=(n, 10))}
    return dict(image_path=[f"{i}.png" for i in range(n)], bbox_xywh=np.array([[2, 3, 40, 50]] * n, np.float32),
                keypoints2d=kp2d, keypoints3d=kp3d, smpl=smpl, has_smpl=np.ones(n))


@pytest.mark.parametrize("zip_compress", [True, False], ids=["deflated", "stored_mmap"])
def test_non_finite_labels_are_missing_counted_and_reported(tmp_path, zip_compress):
    from spin_fast.constants import HUMAN_DATA_TO_SPIN_49
    from spin_fast.data.humandata import write_humandata

    f = labelled()
    j = 7  # one of SPIN's 49 joints, stored in HumanData column HUMAN_DATA_TO_SPIN_49[j]
    col = HUMAN_DATA_TO_SPIN_49[j]
    f["keypoints2d"][3, col, 0] = np.nan
    f["keypoints2d"][5, col, 2] = np.inf
    f["keypoints3d"][4, col, 1] = -np.inf
    f["smpl"]["betas"][1, 2] = np.nan
    f["bbox_xywh"][6, 2] = np.nan
    p = write_humandata(tmp_path / "nan.npz", zip_compress=zip_compress, compress_keypoints=False, **f)
    hd = HumanData(p)
    warnings = "\n".join(hd.label_warnings)
    assert len(hd.label_warnings) == 4, warnings
    for key, count, first in (("keypoints2d", 2, "3, 5"), ("keypoints3d", 1, "4"), ("smpl", 1, "1"),
                              ("bbox_xywh", 1, "6")):
        assert f"{p}: key {key!r}: {count} sample(s) with non-finite values (first indices {first})" in warnings, warnings
    k2 = hd.keypoints2d(np.arange(8))
    assert np.isfinite(k2).all() and np.isfinite(hd.keypoints3d(np.arange(8))).all()
    assert (k2[3, j] == 0).all() and (k2[5, j] == 0).all()  # the bad joint is absent (confidence 0) ...
    np.testing.assert_array_equal(k2[3, j + 1], f["keypoints2d"][3, HUMAN_DATA_TO_SPIN_49[j + 1]])  # ... only it
    assert (hd.keypoints3d([4])[0, j] == 0).all()
    assert hd.has_smpl.tolist() == [True, False, True, True, True, True, False, True]
    assert (hd.betas[1] == 0).all() and np.isfinite(hd.pose).all()
    assert (k2[6] == 0).all() and (hd.keypoints3d([6]) == 0).all()  # the bad box's sample has no labels
    assert np.isfinite(hd.center).all() and np.isfinite(hd.scale).all()
    np.testing.assert_array_equal(k2[0], f["keypoints2d"][0, HUMAN_DATA_TO_SPIN_49])  # clean samples untouched


def _pngs(folder, names):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (64, 64), (40, 50, 60)).save(folder / name)


def test_data_check_warns_about_non_finite_labels_and_loaders_report_once(tmp_path, capsys):
    from spin_fast.data.__main__ import main
    from spin_fast.data.batch import Sources
    from spin_fast.data.humandata import write_humandata

    paths = AssetPaths(tmp_path / "data")
    f = labelled()
    from spin_fast.constants import HUMAN_DATA_TO_SPIN_49

    f["keypoints2d"][2, HUMAN_DATA_TO_SPIN_49[10], 1] = np.nan
    write_humandata(paths.preprocessed("spin_pw3d_test"), **f)
    _pngs(paths.images("pw3d"), f["image_path"])
    assert main(["check", str(paths.root), "--datasets", "pw3d"]) == 0  # warnings are not failures
    out = capsys.readouterr().out
    assert "ok, with warnings" in out and "warning: " in out and "key 'keypoints2d': 1 sample(s)" in out, out
    Sources.from_registry(paths, ["pw3d"])
    err = capsys.readouterr().err
    assert err.count("spin_fast: warning:") == 1 and "spin_pw3d_test.npz: key 'keypoints2d'" in err, err


def test_wrong_shape_is_an_error_and_data_check_reports_every_dataset(tmp_path, capsys):
    from spin_fast.data.__main__ import main
    from spin_fast.data.humandata import write_humandata, write_static_fits

    paths = AssetPaths(tmp_path / "data")
    bad = paths.preprocessed("spin_pw3d_test")
    bad.parent.mkdir(parents=True)
    np.savez(bad, image_path=np.array(["0.png", "1.png"]), bbox_xywh=np.array([[0, 0, 9, 9]] * 2, np.float32),
             keypoints2d=np.zeros((2, 17, 3), np.float32))
    f = labelled()
    write_humandata(paths.preprocessed("h36m_mosh_train"), **f)
    write_static_fits(paths.static_fits("h36m"), np.zeros((8, 82), np.float32))
    _pngs(paths.images("h36m"), f["image_path"])
    masked = paths.preprocessed("spin_lsp_train")
    np.savez(masked, image_path=np.array(["0.png"]), bbox_xywh=np.array([[0, 0, 9, 9]], np.float32),
             keypoints2d=np.zeros((1, 190, 3), np.float32), keypoints2d_mask=np.ones(17, np.uint8))
    rc = main(["check", str(paths.root), "--datasets", "pw3d,h36m,lsp"])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"{bad}: key 'keypoints2d': expected shape (2, 190, 3) (uncompressed), got (2, 17, 3)" in out, out
    assert f"{masked}: key 'keypoints2d_mask': expected shape (190,), got (17,)" in out, out
    assert [ln.split()[0] for ln in out.splitlines() if not ln.startswith(" ")] == ["pw3d", "h36m", "lsp"]
    assert "h36m                   8 samples" in out and "ok" in out.splitlines()[2], out


# --- clear messages -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mix, words", [("{pw3d: 1.0}", "['pw3d']"), ("{h36m: 0.5, cocoa: 0.5}", "['cocoa']")])
def test_mix_of_unknown_or_test_datasets_is_a_config_error(mix, words):
    from spin_fast.train.config import ConfigError, build_config

    with pytest.raises(ConfigError) as e:
        build_config(overrides={"data.root": "/data", "data.mix": mix})
    msg = str(e.value)
    assert "data.mix" in msg and words in msg and "h36m, mpi_inf_3dhp, lsp, lspet, mpii, coco" in msg, msg


def test_yaml_section_that_is_not_a_mapping(tmp_path):
    from spin_fast.train.config import ConfigError, build_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: /data/mmhuman3d\n")
    with pytest.raises(ConfigError, match=rf"{cfg}: section 'data' must be a mapping of its keys .*got '/data/mmhuman3d'"):
        build_config(str(cfg))
