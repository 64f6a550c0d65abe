"""The demo's files for other tools: meshes (.obj / .ply) equal to the body model's, smpl_params.npz in
HumanData's layout that smplx rebuilds, several people an image (JSON lists and HumanData boxes),
video in and out, and every bad input named in one line with nothing lost."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from spin_fast.body import BodyModel
from spin_fast.body.io import load_smpl
from spin_fast.body.smplx_reference import smplx_body
from spin_fast.demo import full_image_camera, image_camera, image_translation, main, run
from spin_fast.model import HMR

RES = 64  # the checkpoint's network input side: every crop through the same graph, much less convolution


def read_obj(path):
    v, f = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            f.append([int(x) - 1 for x in line.split()[1:4]])
    return np.array(v), np.array(f)


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode().splitlines()
    assert header[1] == "format binary_little_endian 1.0"
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    v = np.frombuffer(data, "<f8", nv * 3, end).reshape(nv, 3)
    rows = np.frombuffer(data, [("n", "u1"), ("idx", "<i4", (3,))], nf, end + 24 * nv)
    assert (rows["n"] == 3).all()
    return v.astype(np.float64), rows["idx"].astype(np.int64)


@pytest.fixture(scope="module")
def checkpoint(synthetic_assets, tmp_path_factory):
    """A ResNet-18 network at a 64-pixel input whose outputs depend on the image (people differ)."""
    torch.manual_seed(0)
    model = HMR("resnet18", mean_params=synthetic_assets.mean_params, input_res=RES)
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.normal_(dec.weight, std=0.01)
    path = tmp_path_factory.mktemp("ckpt") / "hmr.pth"
    torch.save({"meta": {"config": {"model": {"input_res": RES}}}, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def body(synthetic_assets):
    return BodyModel.from_paths(synthetic_assets)


def noise_image(W, H, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8))


def test_image_translation_keeps_each_root_where_its_crop_camera_put_it():
    rng = np.random.default_rng(1)
    W, H = 320, 200
    centers, sides = rng.uniform(40, 180, (4, 2)), rng.uniform(30, 150, 4)
    cam_t = np.c_[rng.uniform(-0.2, 0.2, (4, 2)), rng.uniform(20, 60, 4)]
    t = image_translation(cam_t, centers, sides, W, H)
    F, C = full_image_camera(W, H)
    for k in range(4):
        f, c = image_camera(centers[k], sides[k])
        np.testing.assert_allclose(F * t[k, :2] / t[k, 2] + C, f * cam_t[k, :2] / cam_t[k, 2] + c, atol=1e-9)
    # the whole image as the box: the crop camera is the image camera, nothing moves
    np.testing.assert_allclose(image_translation(cam_t[:1], [[W / 2, H / 2]], [W], W, H), cam_t[:1], atol=1e-12)
    # the same crop translation for a person half the size: twice as far
    far = image_translation(cam_t[:1], centers[:1], sides[:1] / 2, W, H)
    np.testing.assert_allclose(far[0, 2], 2 * t[0, 2])


def test_two_people_meshes_params_and_smplx(synthetic_assets, checkpoint, body, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    noise_image(200, 150, 0).save(images / "a.png")
    noise_image(90, 120, 1).save(images / "b.png")
    boxes = [[110.0, 20.0, 60.0, 110.0], [10.0, 40.0, 40.0, 80.0]]  # right (larger), then left (smaller: farther)
    (tmp_path / "boxes.json").write_text(json.dumps({"a.png": boxes}))
    out = tmp_path / "out"
    run(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out), "--bboxes",
         str(tmp_path / "boxes.json"), "--data-root", str(synthetic_assets.root), "--device", "cpu"])
    assert sorted(p.name for p in out.iterdir()) == [
        "a.png.overlay.png", "a.png.person0.obj", "a.png.person1.obj", "b.png.overlay.png", "b.png.person0.obj",
        "predictions.json", "smpl_params.npz"]
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["bbox_xywh"] for p in preds["a.png"]] == boxes and isinstance(preds["b.png"], dict)
    assert preds["a.png"][1]["transl"][2] > preds["a.png"][0]["transl"][2]  # the smaller person is farther

    with np.load(out / "smpl_params.npz", allow_pickle=True) as f:
        hd = {k: f[k] for k in f.files}
    smpl = hd["smpl"].item()
    assert list(hd["image_path"]) == ["a.png", "a.png", "b.png"]
    assert hd["misc"].item()["image_root"] == str(images.resolve())
    np.testing.assert_array_equal(hd["bbox_xywh"], np.c_[boxes + [[0, 0, 90, 120]], np.ones(3)].astype(np.float32))
    assert smpl["body_pose"].shape == (3, 23, 3) and smpl["global_orient"].shape == (3, 3)
    assert smpl["betas"].shape == (3, 10) and smpl["transl"].shape == (3, 3)
    assert list(hd["person_index"]) == [0, 1, 0] and int(hd["__temporal_len__"]) == 3
    np.testing.assert_allclose(hd["focal_length"], [5000 * 200 / 224] * 2 + [5000 * 120 / 224], rtol=1e-6)
    np.testing.assert_allclose(hd["principal_point"], [[100, 75], [100, 75], [45, 60]])
    assert not np.allclose(smpl["body_pose"][0], smpl["body_pose"][1])  # two crops, two predictions
    from spin_fast.data.humandata import HumanData  # a HumanData reader takes the file as it is

    read = HumanData(out / "smpl_params.npz")
    assert len(read) == 3 and read.has_smpl.all()
    np.testing.assert_array_equal(read.pose, np.c_[smpl["global_orient"], smpl["body_pose"].reshape(3, 69)])
    np.testing.assert_array_equal(read.betas, smpl["betas"])

    # the files against the body model of the same parameters, and smplx.SMPL of the npz alone
    t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in smpl.items()}
    ours = body(t["betas"], t["body_pose"].reshape(3, 69), t["global_orient"], joint_set="smpl_24").vertices.double()
    ours = ours + torch.from_numpy(smpl["transl"]).double()[:, None]
    d = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in smpl.items()}  # smplx in float64
    ref = smplx_body(load_smpl(synthetic_assets.smpl("neutral")), dtype=torch.float64)(
        betas=d["betas"], body_pose=d["body_pose"].reshape(3, 69), global_orient=d["global_orient"],
        transl=d["transl"]).vertices
    meshes = [out / "a.png.person0.obj", out / "a.png.person1.obj", out / "b.png.person0.obj"]
    for k, path in enumerate(meshes):
        v, faces = read_obj(path)
        np.testing.assert_array_equal(faces, body.faces.numpy())
        np.testing.assert_allclose(v, ours[k].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(v, ref[k].numpy(), rtol=0, atol=1e-5)
        assert (preds["a.png"][k] if k < 2 else preds["b.png"])["mesh"] == path.name

    # the overlay shows both people, each around its box
    a = np.asarray(Image.open(out / "a.png.overlay.png")).astype(int)
    src = np.asarray(Image.open(images / "a.png")).astype(int)
    changed = np.abs(a[:, :200] - src).sum(-1) > 0
    labels = np.zeros_like(changed, dtype=int)
    for k, (x, y, w, h) in enumerate(boxes):
        labels[int(y):int(y + h), int(x):int(x + w)] = k + 1
        assert changed[labels == k + 1].mean() > 0.03
    assert changed[labels == 0].mean() < 0.01  # nothing drawn outside the boxes
    side = a[:, 200:]
    assert ((side != 255).any(-1)[:, :100].sum() > 50) and ((side != 255).any(-1)[:, 100:].sum() > 50)  # both, side on

    # --mesh-format ply: the same vertices and faces
    out_ply = tmp_path / "ply"
    run(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out_ply), "--bboxes",
         str(tmp_path / "boxes.json"), "--data-root", str(synthetic_assets.root), "--device", "cpu",
         "--mesh-format", "ply"])
    for k, path in enumerate(meshes):
        v, faces = read_ply(out_ply / path.name.replace(".obj", ".ply"))
        np.testing.assert_array_equal(faces, body.faces.numpy())
        np.testing.assert_allclose(v, ours[k].numpy(), rtol=0, atol=1e-5)


def test_humandata_boxes(synthetic_assets, checkpoint, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    noise_image(120, 100, 2).save(images / "a.jpg")
    noise_image(100, 100, 3).save(images / "b.jpg")
    bbox = np.array([[5, 5, 40, 80, 0.9], [60, 10, 50, 70, 1.0], [20, 20, 50, 50, 1.0]], np.float32)
    hd = tmp_path / "people.npz"
    np.savez(hd, image_path=np.array(["imgs/b.jpg", "imgs/a.jpg", "imgs/b.jpg"]), bbox_xywh=bbox)
    out = tmp_path / "out"
    run(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out), "--bboxes", str(hd),
         "--data-root", str(synthetic_assets.root), "--device", "cpu"])
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["bbox_xywh"] for p in preds["b.jpg"]] == bbox[[0, 2], :4].tolist()
    assert [p["bbox_xywh"] for p in preds["a.jpg"]] == [bbox[1, :4].tolist()]
    with np.load(out / "smpl_params.npz", allow_pickle=True) as f:
        np.testing.assert_array_equal(f["bbox_xywh"][:, :4], bbox[[1, 0, 2], :4])  # images in name order, boxes in file order
        assert list(f["person_index"]) == [0, 0, 1]
    assert (out / "b.jpg.person1.obj").is_file() and not (out / "a.jpg.person1.obj").exists()


def write_video(path, frames, fps=10):
    from spin_fast.video import VideoWriter

    with open(path, "wb") as fh, VideoWriter(fh, frames[0].shape[1], frames[0].shape[0], fps) as w:
        for f in frames:
            w.write(f)


def test_video_in_overlay_video_and_per_frame_params(synthetic_assets, checkpoint, tmp_path):
    pytest.importorskip("av")
    from spin_fast.video import VideoReader, count_frames

    frames = [np.asarray(noise_image(96, 64, 10 + i)) for i in range(5)]
    clip = tmp_path / "clip.mp4"
    write_video(clip, frames)
    assert count_frames(clip) == 5
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0": [[5, 5, 30, 50], [50, 8, 35, 50]], "3": [[10, 10, 40, 40]]}))
    out = tmp_path / "out"
    written = run(["--checkpoint", str(checkpoint), "--video", str(clip), "--out", str(out), "--bboxes", str(boxes),
                   "--data-root", str(synthetic_assets.root), "--device", "cpu"])
    assert [p.name for p in written] == ["clip.mp4.overlay.mp4"]
    reader = VideoReader(written[0])
    assert (reader.width, reader.height) == (2 * 96, 64)
    assert count_frames(written[0]) == 5
    with np.load(out / "smpl_params.npz", allow_pickle=True) as f:
        assert list(f["frame_index"]) == [0, 0, 1, 2, 3, 4] and list(f["person_index"]) == [0, 1, 0, 0, 0, 0]
        assert f["smpl"].item()["body_pose"].shape == (6, 23, 3)
        np.testing.assert_array_equal(f["bbox_xywh"][:2, :4], [[5, 5, 30, 50], [50, 8, 35, 50]])
        np.testing.assert_array_equal(f["bbox_xywh"][2, :4], [0, 0, 96, 64])

    # a folder of frames, one unreadable: reported and skipped, one box for every frame
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames[:3]):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    (folder / "0001.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "one.json").write_text(json.dumps([20, 5, 40, 50]))
    out2 = tmp_path / "out2"
    written = run(["--checkpoint", str(checkpoint), "--video", str(folder), "--out", str(out2), "--bboxes",
                   str(tmp_path / "one.json"), "--data-root", str(synthetic_assets.root), "--device", "cpu"])
    assert count_frames(written[0]) == 2
    with np.load(out2 / "smpl_params.npz", allow_pickle=True) as f:
        assert list(f["frame_index"]) == [0, 2]
        assert list(f["image_path"]) == ["0000.png", "0002.png"]


def test_an_undecodable_video_frame_is_reported_and_skipped(synthetic_assets, checkpoint, tmp_path, capsys,
                                                           monkeypatch):
    av = pytest.importorskip("av")
    import spin_fast.video

    monkeypatch.setattr(spin_fast.video, "CODECS", ("mpeg4",))  # each packet one frame, a zeroed one fails
    clip = tmp_path / "clip.mp4"
    write_video(clip, [np.asarray(noise_image(64, 48, 20 + i)) for i in range(6)])
    with av.open(str(clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(clip.read_bytes())
    pos, size = packets[2]
    data[pos:pos + size] = bytes(size)
    clip.write_bytes(bytes(data))
    out = tmp_path / "out"
    written = run(["--checkpoint", str(checkpoint), "--video", str(clip), "--out", str(out),
                   "--data-root", str(synthetic_assets.root), "--device", "cpu"])
    err = capsys.readouterr().err
    assert f"skipped frame 2 of {clip}: cannot be decoded" in err and "1 skipped as unreadable: frame 2" in err, err
    assert spin_fast.video.count_frames(written[0]) == 5
    with np.load(out / "smpl_params.npz", allow_pickle=True) as f:
        assert list(f["frame_index"]) == [0, 1, 3, 4, 5]


def one_error(capsys, argv, *words):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spin_fast.demo: error: "), err
    for w in words:
        assert w in err[0], (w, err[0])


def test_bad_inputs_one_line_nothing_lost(synthetic_assets, checkpoint, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    noise_image(60, 80, 4).save(images / "a.png")
    common = ["--checkpoint", str(checkpoint), "--data-root", str(synthetic_assets.root), "--device", "cpu"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [[0, 0, 20, 20], [100, 10, 20, 20]]}))
    one_error(capsys, common + ["--images", str(images), "--out", str(tmp_path / "o"), "--bboxes", str(boxes)],
              "'a.png' box 1 has box [100.0, 10.0, 20.0, 20.0], wholly outside the image (60 x 80 pixels)")
    boxes.write_text(json.dumps({"a.png": []}))
    one_error(capsys, common + ["--images", str(images), "--out", str(tmp_path / "o"), "--bboxes", str(boxes)],
              "'a.png' has an empty box list")
    assert not (tmp_path / "o").exists()
    hd = tmp_path / "hd.npz"
    np.savez(hd, image_path=np.array(["x/zzz.png"]), bbox_xywh=np.ones((1, 5)))
    one_error(capsys, common + ["--images", str(images), "--out", str(tmp_path / "o"), "--bboxes", str(hd)],
              "row 0: image_path 'x/zzz.png' is not an image in --images")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 4)
    one_error(capsys, common + ["--video", str(broken), "--out", str(tmp_path / "v")], f"--video {broken}",
              "not a readable video")
    one_error(capsys, common + ["--video", str(tmp_path / "gone.mp4"), "--out", str(tmp_path / "v")],
              "does not exist")
    unknown = tmp_path / "unknown.pth"
    torch.save({"weights": {"encoder.weight": torch.zeros(2)}}, unknown)
    one_error(capsys, ["--checkpoint", str(unknown), "--images", str(images), "--out", str(tmp_path / "u"),
                       "--data-root", str(synthetic_assets.root), "--device", "cpu"], str(unknown))
    # an output folder of an earlier run: refused without --overwrite, its files unchanged
    out = tmp_path / "done"
    assert main(common + ["--images", str(images), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["a.png.overlay.png", "a.png.person0.obj", "predictions.json", "smpl_params.npz"]
    one_error(capsys, common + ["--images", str(images), "--out", str(out)], "already holds files", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    frames = tmp_path / "frames"
    frames.mkdir()
    noise_image(40, 30, 5).save(frames / "0.png")
    (tmp_path / "f.json").write_text(json.dumps({"0": [[50, 0, 10, 10]]}))
    one_error(capsys, common + ["--video", str(frames), "--out", str(tmp_path / "w"), "--bboxes",
                                str(tmp_path / "f.json")], "frame 0 has box [50.0, 0.0, 10.0, 10.0], wholly outside")
