"""Demo: the image-space camera agrees with the crop warp, images are written with the mesh where
the person is, and bad inputs are named."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from spin_fast.data.augment import AugParams, crop_matrix, invert_affine
from spin_fast.demo import DemoError, image_camera, run
from spin_fast.model import HMR


def test_image_camera_matches_the_crop_warp():
    rng = np.random.default_rng(0)
    center, side = np.array([310.5, 140.25]), 187.0
    pts = np.c_[rng.uniform(-0.8, 0.8, (20, 2)), rng.uniform(20, 40, 20)]  # metres, in front of the camera
    crop_uv = 5000.0 * pts[:, :2] / pts[:, 2:] + 112.0  # SPIN's crop projection
    Minv = invert_affine(crop_matrix(center[None], np.array([side]), AugParams.identity(1)))[0]
    via_warp = crop_uv @ Minv[:, :2].T + Minv[:, 2]
    focal, c = image_camera(center, side)
    np.testing.assert_allclose(focal * pts[:, :2] / pts[:, 2:] + c, via_warp, rtol=0, atol=1e-9)


@pytest.fixture
def checkpoint(synthetic_assets, tmp_path):
    torch.manual_seed(0)
    model = HMR("resnet18", mean_params=synthetic_assets.mean_params)
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.zeros_(dec.weight)
        torch.nn.init.zeros_(dec.bias)  # the prediction is the mean pose and camera, whatever the image
    path = tmp_path / "hmr.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_demo_writes_overlay_and_side_view(synthetic_assets, checkpoint, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (160, 120), (20, 30, 40)).save(images / "a.png")
    Image.new("RGB", (140, 200), (200, 10, 10)).save(images / "b.jpg", quality=95)
    (images / "notes.txt").write_text("not an image")
    bbox = [70.0, 20.0, 60.0, 90.0]  # a person on the right of a.png
    (tmp_path / "boxes.json").write_text(json.dumps({"a.png": bbox}))
    out = tmp_path / "out"
    written = run(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                    "--bboxes", str(tmp_path / "boxes.json"), "--data-root", str(synthetic_assets.root),
                    "--device", "cpu"])
    assert [p.name for p in written] == ["a.png.overlay.png", "b.jpg.overlay.png"]
    a = np.asarray(Image.open(out / "a.png.overlay.png"))
    assert a.shape == (120, 320, 3)
    front, side = a[:, :160].astype(int), a[:, 160:]
    drawn = np.abs(front - np.array([20, 30, 40])).sum(-1) > 30
    ys, xs = np.nonzero(drawn)
    assert drawn.sum() > 200
    # the mean-camera mesh fills most of the bbox's height, centred on it
    cx, cy, side_px = bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2, max(bbox[2], bbox[3])
    assert abs(xs.mean() - cx) < 0.2 * side_px and abs(ys.mean() - cy) < 0.2 * side_px
    assert xs.min() >= cx - 0.6 * side_px and (ys.max() - ys.min()) > 0.5 * side_px
    assert (side != 255).any(axis=-1).sum() > 100  # the side view shows the body on white
    b = np.asarray(Image.open(out / "b.jpg.overlay.png"))
    assert b.shape == (200, 280, 3)
    preds = json.loads((out / "predictions.json").read_text())
    assert set(preds) == {"a.png", "b.jpg"}
    assert preds["a.png"]["bbox_xywh"] == bbox and preds["b.jpg"]["bbox_xywh"] == [0.0, 0.0, 140.0, 200.0]
    with np.load(synthetic_assets.mean_params) as f:
        np.testing.assert_allclose(preds["a.png"]["cam"], f["cam"], atol=1e-6)
        np.testing.assert_allclose(preds["a.png"]["betas"], f["shape"], atol=1e-6)
    assert len(preds["a.png"]["pose_axis_angle"]) == 72
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_an_unreadable_image_is_skipped_and_the_rest_kept(synthetic_assets, checkpoint, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (50, 60), (90, 90, 90)).save(images / "a.png")
    (images / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # sorted between the two good ones
    Image.new("RGB", (40, 40), (10, 90, 10)).save(images / "c.png")
    out = tmp_path / "out"
    written = run(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                    "--data-root", str(synthetic_assets.root), "--device", "cpu"])
    assert [p.name for p in written] == ["a.png.overlay.png", "c.png.overlay.png"]
    assert set(json.loads((out / "predictions.json").read_text())) == {"a.png", "c.png"}
    err = capsys.readouterr().err
    assert f"skipped image {images / 'b.jpg'}: corrupt JPEG" in err and "1 skipped as unreadable: b.jpg" in err, err


def test_demo_bad_inputs(synthetic_assets, checkpoint, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (50, 50)).save(images / "a.png")
    common = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--data-root", str(synthetic_assets.root)]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"zzz.png": [0, 0, 10, 10]}))
    with pytest.raises(DemoError, match="'zzz.png' is not an image"):
        run(common + ["--images", str(images), "--bboxes", str(boxes)])
    boxes.write_text(json.dumps({"a.png": [0, 0, -1, 10]}))
    with pytest.raises(DemoError, match="w, h > 0"):
        run(common + ["--images", str(images), "--bboxes", str(boxes)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DemoError, match="no .jpg"):
        run(common + ["--images", str(empty)])
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    (only_broken / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DemoError, match="none of the 1 images could be read"):
        run(common + ["--images", str(only_broken)])
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    with pytest.raises(SystemExit, match=f"--out {blocked}: cannot write there"):
        run(common[:2] + ["--out", str(blocked), "--images", str(images)])
    with pytest.raises(DemoError, match="does not exist"):
        run(["--checkpoint", str(tmp_path / "nope.pth"), "--images", str(images), "--out", str(tmp_path / "o")])
