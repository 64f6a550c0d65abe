"""Synthetic datasets and the renderer: files in the real formats, labels consistent with the body
model, and the augmentation's sign conventions checked on a rendered body (crop keypoints land on
the body; rotated 3D joints, global orient and 2D keypoints agree)."""
import numpy as np
import pytest
import torch
from PIL import Image

from spin_fast.body import BodyModel
from spin_fast.constants import SPIN_49_FLIP
from spin_fast.data import build_train_loader
from spin_fast.data.augment import AugParams, denormalize
from spin_fast.data.batch import Sources, make_plan
from spin_fast.data.dali_loader import DaliLoader
from spin_fast.data.datasets import DATASETS, TEST_DATASETS, TRAIN_DATASETS
from spin_fast.data.humandata import HumanData, load_static_fits, spin49_to_humandata, write_humandata
from spin_fast.data.reference_loader import ReferenceLoader
from spin_fast.data.synth import KEYPOINT_TEST_SETS, part_colors, sample_pose, write_synthetic_datasets
from spin_fast.render import project, rasterize, render_mesh


@pytest.fixture(scope="module")
def synth_root(synthetic_data):
    return synthetic_data(per_dataset=4)


@pytest.fixture(scope="module")
def bodies(synthetic_assets):
    return {g: BodyModel.from_paths(synthetic_assets, g) for g in ("neutral", "male", "female")}


def test_rasterizer_depth_and_coverage():
    # a near small triangle in front of a far square: nearest wins; square covers its projected area
    v = np.array([[-1, -1, 4], [1, -1, 4], [1, 1, 4], [-1, 1, 4], [0, 0, 2], [0.5, 0, 2], [0, 0.5, 2]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    fid, depth = rasterize(v, f, 100.0, (50, 50), 101, 101)
    assert ((fid == 0) | (fid == 1)).sum() + (fid == 2).sum() == 51 * 51  # pixels 25..75 both ways
    assert fid[55, 55] == 2 and depth[55, 55] == pytest.approx(2.0)
    assert fid[30, 70] in (0, 1) and depth[30, 70] == pytest.approx(4.0)
    assert fid[10, 10] == -1 and np.isinf(depth[10, 10])
    fid2, _ = rasterize(v, f, 100.0, (50, 50), 101, 101, chunk_pairs=100)
    assert np.array_equal(fid, fid2)


def test_files_in_the_real_formats(synth_root, bodies):
    sizes = set()
    for name in TRAIN_DATASETS + TEST_DATASETS:
        if name in KEYPOINT_TEST_SETS:  # their own sizes and labels: tests/test_evaluate_datasets.py
            continue
        spec = DATASETS[name]
        hd = HumanData(spec.npz_path(synth_root))
        assert len(hd) == 4
        for p in hd.image_path:
            with Image.open(spec.image_root(synth_root) / p) as im:
                sizes.add(im.size)
                assert im.format == "JPEG"
        if spec.fits:
            assert load_static_fits(spec.fits_path(synth_root), 4).shape == (4, 82)
        if name == "h36m":
            assert hd.has_smpl.all() and hd.has_keypoints3d
        if name in ("lsp", "coco"):
            assert not hd.has_smpl.any() and not hd.has_keypoints3d
        if name == "pw3d":
            assert hd.gender is not None and set(hd.gender) <= {"m", "f"}
            # 3D ground truth = the gendered body model of the stored parameters
            for i in range(4):
                body = bodies["male" if hd.gender[i] == "m" else "female"]
                pose, betas = torch.from_numpy(hd.pose[i:i + 1]), torch.from_numpy(hd.betas[i:i + 1])
                j = body.joints_only(betas, pose[:, 3:], pose[:, :3], joint_set="smpl_49")[0].numpy()
                np.testing.assert_allclose(hd.keypoints3d(i)[0, 25:, :3], j[25:], atol=1e-4)
        kp = hd.keypoints2d(np.arange(4))
        assert (kp[..., 2] == 0).any() and (kp[..., 2] == 1).mean() > 0.6  # some invisible, most visible
    assert len(sizes) > 10  # varied image sizes


def test_bboxes_json_beside_the_images_is_what_the_demo_reads(synth_root):
    """Each dataset's bboxes.json holds its HumanData boxes by image file name, in demo --bboxes' format."""
    import json

    from spin_fast.demo import list_images, read_bboxes

    for name in ("coco", "pw3d"):
        spec = DATASETS[name]
        folder = spec.image_root(synth_root)
        hd = HumanData(spec.npz_path(synth_root))
        files = list_images(folder / "images")
        boxes = read_bboxes(folder / "bboxes.json", [f.name for f in files])
        assert sorted(boxes) == sorted(f.name for f in files) == sorted(p.split("/")[-1] for p in hd.image_path)
        for i, rel in enumerate(hd.image_path):  # the loaders' crop centre and side of the same box
            x, y, w, h = boxes[rel.split("/")[-1]]
            np.testing.assert_allclose([x + w / 2, y + h / 2, max(w, h)], [*hd.center[i], hd.scale[i]], atol=0.02)
        assert json.loads((folder / "bboxes.json").read_text())  # plain JSON


def test_check_prints_plain_progress_lines_on_a_non_terminal_stderr(synth_root, capsys):
    from spin_fast.data.check import check_data_root

    reports = check_data_root(synth_root.root, ["lsp"])
    assert reports[0].ok
    err = capsys.readouterr().err
    assert "\r" not in err and "check lsp: 4/4 imgs (100%) | elapsed 0:00:00 | ETA 0:00:00 |" in err


def test_sample_pose_joint_limits():
    p = sample_pose(np.random.default_rng(0), 500).reshape(500, 24, 3)
    assert (p[:, 4, 0] >= 0).all() and (p[:, 5, 0] >= 0).all()         # knees bend one way
    assert (p[:, 18, 1] <= 0).all() and (p[:, 19, 1] >= 0).all()       # elbows forwards (mirrored)
    assert np.abs(p[:, 1:]).max() < 2.5


@pytest.mark.parametrize("geometry", ["mmhuman3d", "spin"])
@pytest.mark.parametrize("loader_cls", [ReferenceLoader, DaliLoader], ids=["reference", "dali"])
def test_augmentation_signs_on_a_rendered_body(tmp_path, bodies, loader_cls, geometry):
    """Render one body on black, crop it with rotations / flips / scales: every visible keypoint of
    the crop lies on the body, and the augmented 3D joints, the body model of the augmented pose and
    the 2D keypoints agree on the in-plane orientation."""
    rng = np.random.default_rng(3)
    body = bodies["neutral"]
    pose = torch.from_numpy(sample_pose(rng, 1)).float()
    betas = torch.zeros(1, 10)
    with torch.no_grad():
        out = body(betas, pose[:, 3:], pose[:, :3], joint_set="smpl_49")
    verts, joints = out.vertices[0].double().numpy(), out.joints[0].double().numpy()
    W, H, f, t = 260, 300, 600.0, np.array([0.0, 0.0, 5.0])  # on the optical axis
    faces = body.faces.numpy()
    img, mask, _ = render_mesh(verts + t, faces, part_colors(body.lbs_weights.numpy(), faces), f, (W / 2, H / 2), W, H)
    Image.fromarray(img).save(tmp_path / "b.png")
    uv = project(joints + t, f, (W / 2, H / 2))
    fid, _ = rasterize(verts + t, faces, f, (W / 2, H / 2), W, H)
    ij = np.round(uv).astype(int)
    on_body = np.array([mask[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any() for x, y in ij])
    assert on_body[25:].mean() > 0.9  # the GT joints sit on the silhouette in the original image
    kp = np.c_[uv, on_body][None]
    vu = project(verts + t, f, (W / 2, H / 2))
    lo, hi = vu.min(0), vu.max(0)
    n = 4
    write_humandata(tmp_path / "b.npz", image_path=["b.png"] * n, bbox_xywh=np.array([[*lo, *(hi - lo)]] * n),
                    keypoints2d=spin49_to_humandata(np.repeat(kp, n, 0))[0],
                    keypoints3d=spin49_to_humandata(np.repeat(np.c_[joints, np.ones(49)][None], n, 0))[0],
                    smpl={"body_pose": np.repeat(pose[:, 3:].numpy(), n, 0).reshape(n, 23, 3),
                          "global_orient": np.repeat(pose[:, :3].numpy(), n, 0), "betas": np.zeros((n, 10))},
                    has_smpl=np.ones(n))
    src = Sources(["b"], [HumanData(tmp_path / "b.npz")], [tmp_path])
    params = AugParams(np.ones((n, 3), np.float32), np.array([False, False, True, True]),
                       np.array([1.0, 1.2, 0.9, 1.1], np.float32), np.array([0.0, 45.0, -30.0, 60.0], np.float32))
    plan = make_plan(src, 0, np.zeros(n, np.int64), np.arange(n), params, geometry=geometry)
    kw = dict(batch_size=n) if loader_cls is DaliLoader else {}
    (b,) = list(loader_cls(src, lambda s: plan, threads=1, num_steps=1, **kw).iter_from(0))
    crops = denormalize(b["img"]).numpy()
    for s in range(n):
        crop_mask = crops[s].max(-1) > 30
        k2 = b["keypoints2d"][s].numpy()
        vis = k2[:, 2] > 0
        hits = [crop_mask[max(0, int(round(y)) - 1):int(round(y)) + 2, max(0, int(round(x)) - 1):int(round(x)) + 2].any()
                for x, y in k2[vis, :2] if 0 <= x < 224 and 0 <= y < 224]
        assert np.mean(hits) > 0.9, (s, np.mean(hits))
        # the augmented 3D joints, projected (the body sits on the optical axis at z = 5 m, so the
        # image rotation is a rotation about it), are the crop keypoints up to scale and shift:
        # crop = a * xy / (z + 5) + b with a > 0. A wrong rotation or flip sign fails this.
        k3 = b["keypoints3d"][s, 25:, :3].numpy().astype(np.float64)
        q = k3[:, :2] / (k3[:, 2:] + t[2])
        x2 = k2[25:, :2]
        A = np.c_[np.r_[q[:, 0], q[:, 1]], np.r_[np.ones(24), np.zeros(24)], np.r_[np.zeros(24), np.ones(24)]]
        sol, *_ = np.linalg.lstsq(A, np.r_[x2[:, 0], x2[:, 1]], rcond=None)
        resid = np.abs(A @ sol - np.r_[x2[:, 0], x2[:, 1]]).max()
        # (SPIN's 2D labels are truncated to whole pixels: up to ~1 px off the fitted line)
        assert sol[0] > 0 and resid < (0.05 if geometry == "mmhuman3d" else 1.5), (s, sol, resid)
        # the body model of the augmented pose gives the augmented 3D joints (global orient rotated too)
        p = b["pose"][s:s + 1]
        j = body.joints_only(b["betas"][s:s + 1], p[:, 3:], p[:, :3], joint_set="smpl_49")[0]
        j3 = b["keypoints3d"][s, :, :3]
        err = ((j - j[39]) - (j3 - j3[39])).norm(dim=-1)
        # exact without a flip; a flip mirrors joints of a body that is not exactly mirror-symmetric
        assert err[25:].max() < (2e-3 if not params.flip[s] else 0.03), (s, err)


def test_train_loader_on_synthetic_root(synth_root):
    mix = {"h36m": 0.35, "mpi_inf_3dhp": 0.15, "lsp": 0.1, "lspet": 0.1, "mpii": 0.1, "coco": 0.2}
    ld = build_train_loader(synth_root, mix, batch_size=6, backend="reference", threads=0, seed=1)
    it = ld.iter_from(3)
    b = next(it)
    assert b["img"].shape == (6, 3, 224, 224) and b["keypoints2d"].shape == (6, 49, 3)
    assert ld.dataset_names == list(mix) and ld.dataset_sizes == [4] * 6
    d = build_train_loader(synth_root, mix, batch_size=6, backend="dali", threads=1, seed=1)
    b2 = next(d.iter_from(3))
    assert torch.equal(b["sample_index"], b2["sample_index"]) and torch.equal(b["keypoints2d"], b2["keypoints2d"])
    assert (denormalize(b["img"]) - denormalize(b2["img"])).abs().mean() < 2.0


def test_flip_prob_reaches_the_batches(synth_root):
    """data.flip_prob 0 mirrors no sample; every other draw (samples, noise, scale, rotation) is SPIN's
    0.5's, and the samples 0.5 mirrors are the unmirrored ones with x -> 224 - x and left / right swapped."""
    mix = {"h36m": 0.35, "mpi_inf_3dhp": 0.15, "lsp": 0.1, "lspet": 0.1, "mpii": 0.1, "coco": 0.2}
    kept = next(build_train_loader(synth_root, mix, batch_size=16, backend="reference", threads=0, seed=1,
                                   flip_prob=0.0).iter_from(3))
    spin = next(build_train_loader(synth_root, mix, batch_size=16, backend="reference", threads=0, seed=1).iter_from(3))
    assert not kept["flip"].any() and 0 < spin["flip"].sum() < 16
    for key in ("sample_index", "dataset_id", "noise", "scale", "center"):
        assert torch.equal(kept[key], spin[key]), key
    assert torch.equal(kept["rot_deg"].abs(), spin["rot_deg"].abs())  # the labels' angle: negated when mirrored
    same, mirrored = ~spin["flip"], spin["flip"] & (spin["rot_deg"] == 0)
    assert torch.equal(kept["keypoints2d"][same], spin["keypoints2d"][same])
    assert torch.equal(denormalize(kept["img"][same]), denormalize(spin["img"][same]))
    assert mirrored.any()
    a, b = kept["keypoints2d"][mirrored], spin["keypoints2d"][mirrored][:, SPIN_49_FLIP]  # crop pixels
    assert torch.equal(a[..., 2], b[..., 2])
    assert torch.allclose(a[..., 1], b[..., 1], atol=1e-3) and torch.allclose(a[..., 0], 224 - b[..., 0], atol=1.0)


def test_check_cli_reports_missing_and_unreadable(synthetic_assets, tmp_path, capsys):
    from spin_fast.data.__main__ import main

    root = write_synthetic_datasets(tmp_path / "data", assets=synthetic_assets.root, per_dataset=2,
                                    names=("lsp", "pw3d"))
    assert main(["check", str(tmp_path), "--datasets", "lsp,pw3d", "--decode"]) == 0
    (root.images("lsp") / "images" / "00001.jpg").unlink()
    bad = root.images("pw3d") / "images" / "00000.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    root.static_fits("lsp").write_bytes(b"junk")
    assert main(["check", str(root.root), "--datasets", "lsp,pw3d"]) == 1
    out = capsys.readouterr().out
    assert "missing: " + str(root.images("lsp") / "images" / "00001.jpg") in out
    assert "unreadable: image " + str(bad) in out and "lsp_fits.npy" in out
