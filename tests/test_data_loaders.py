"""The loaders (DALI on CPU, torch DataLoader + PIL, torchvision decode + the torch crop): same plan ->
same batch; crop geometry checked against dots drawn at known image points; flips; unreadable images
named; the sampler. The torch crop of the torchvision loader runs here with PIL decoding (`torchcrop`),
since torchvision does not import beside the CPU torch; torchvision's own decode is tested where it
imports (and on CUDA in tests/test_gpu_loaders.py)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from spin_fast.constants import SPIN_49_FLIP
from spin_fast.data.augment import AugParams, denormalize
from spin_fast.data.batch import ImageError, Sources, make_plan
from spin_fast.data.dali_loader import DaliLoader
from spin_fast.data.humandata import HumanData, spin49_to_humandata, write_humandata
from spin_fast.data.reference_loader import ReferenceLoader
from spin_fast.data.torchvision_loader import TorchvisionLoader, pil_decoder, torchvision_status
from spin_fast.data.sampler import MixedSampler
from spin_fast.geometry import flip_pose

SIZES = [(180, 240), (320, 200), (256, 256), (150, 310)]  # (W, H)


def _image(rng, w, h):
    """Smooth colour field with a few soft blobs (bilinear-friendly, JPEG-friendly)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 80 * np.sin(xx / 23 + c) * np.cos(yy / 31 - c) for c in range(3)], -1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 40)
        img += (rng.uniform(-90, 90, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2)[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One dataset of 8 JPEGs of different sizes with bboxes and random labels."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    n = 8
    names, bbox = [], []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        Image.fromarray(_image(rng, w, h)).save(root / f"im{i}.jpg", quality=95)
        names.append(f"im{i}.jpg")
        bw, bh = rng.uniform(0.3, 0.8) * w, rng.uniform(0.3, 0.8) * h
        bbox.append([rng.uniform(-0.1, 0.5) * w, rng.uniform(-0.1, 0.4) * h, bw, bh])
    kp = np.concatenate([rng.uniform(0, 200, (n, 49, 2)), rng.integers(0, 2, (n, 49, 1))], -1)
    kp3 = np.concatenate([rng.normal(size=(n, 49, 3)), np.ones((n, 49, 1))], -1)
    smpl = {"body_pose": 0.3 * rng.normal(size=(n, 23, 3)), "global_orient": rng.normal(size=(n, 3)),
            "betas": rng.normal(size=(n, 10))}
    write_humandata(root / "tiny.npz", image_path=names, bbox_xywh=np.array(bbox),
                    keypoints2d=spin49_to_humandata(kp)[0], keypoints3d=spin49_to_humandata(kp3)[0], smpl=smpl,
                    has_smpl=np.ones(n), gender=["m", "f"] * (n // 2))
    return Sources(["tiny"], [HumanData(root / "tiny.npz")], [root])


def fixed_params(n):
    rng = np.random.default_rng(5)
    return AugParams(noise=rng.uniform(0.6, 1.4, (n, 3)).astype(np.float32), flip=np.arange(n) % 2 == 1,
                     scale=rng.uniform(0.75, 1.25, n).astype(np.float32),
                     rot_deg=np.array([0, 25, -40, 60, 0, -10, 33, 0][:n], np.float32))


TORCH_CROP = "torchcrop"  # TorchvisionLoader with PIL decoding: the torch crop without torchvision


def one_batch(loader_cls, sources, plan, **kw):
    planner = lambda step: plan  # noqa: E731
    if loader_cls is DaliLoader:
        ld = DaliLoader(sources, planner, batch_size=len(plan), threads=1, num_steps=1, **kw)
    elif loader_cls == TORCH_CROP:
        ld = TorchvisionLoader(sources, planner, num_steps=1, decoder=pil_decoder, **kw)
    elif loader_cls is TorchvisionLoader:
        ld = TorchvisionLoader(sources, planner, num_steps=1, **kw)
    else:
        ld = ReferenceLoader(sources, planner, threads=0, num_steps=1, **kw)
    return list(ld.iter_from(0)), ld


@pytest.mark.parametrize("roi_decode", [True, False], ids=["roi", "full"])
def test_dali_matches_reference(tiny, roi_decode):
    n = len(tiny.data[0])
    plan = make_plan(tiny, 0, np.zeros(n, np.int64), np.arange(n), fixed_params(n))
    (ref,), _ = one_batch(ReferenceLoader, tiny, plan)
    (dali,), _ = one_batch(DaliLoader, tiny, plan, roi_decode=roi_decode)
    assert dali["img"].shape == ref["img"].shape == (n, 3, 224, 224) and dali["img"].dtype == torch.float32
    diff = (denormalize(dali["img"]) - denormalize(ref["img"])).abs()
    assert diff.mean() < 2.0, diff.mean()            # 0-255 levels
    assert diff.mean(dim=(1, 2, 3)).max() < 2.0
    for k, v in ref.items():
        if torch.is_tensor(v) and k != "img":
            assert torch.equal(v, dali[k]), k
    assert ref["image_path"] == dali["image_path"]


def assert_same_batch(ref, other, tol_levels=2.0):
    """Pixels within `tol_levels` 0-255 levels in the mean (batch and every sample), labels exact."""
    assert other["img"].shape == ref["img"].shape and other["img"].dtype == torch.float32
    diff = (denormalize(other["img"].cpu()) - denormalize(ref["img"].cpu())).abs()
    assert diff.mean() < tol_levels and diff.mean(dim=(1, 2, 3)).max() < tol_levels, diff.mean(dim=(1, 2, 3))
    for k, v in ref.items():
        if torch.is_tensor(v) and k != "img":
            assert torch.equal(v, other[k].cpu()), k
    assert ref["image_path"] == other["image_path"]


def test_torch_crop_matches_reference(tiny):
    """The torchvision loader's crop (affine_grid + grid_sample), decoded by PIL: the reference's
    pixels within 2 levels in the mean (as DALI), 99% of them within one rounding step (1 level times
    the noise, at most 1.4), labels exact."""
    n = len(tiny.data[0])
    plan = make_plan(tiny, 0, np.zeros(n, np.int64), np.arange(n), fixed_params(n))
    (ref,), _ = one_batch(ReferenceLoader, tiny, plan)
    (ours,), _ = one_batch(TORCH_CROP, tiny, plan)
    assert_same_batch(ref, ours)
    diff = (denormalize(ours["img"]) - denormalize(ref["img"])).abs()
    assert (diff <= 1.41).float().mean() > 0.99, (diff <= 1.41).float().mean()


def test_torchvision_loader_matches_reference(tiny):
    """torchvision's decode_jpeg + the torch crop, on CPU, against the reference (the CUDA twin is in
    tests/test_gpu_loaders.py): pixels within 2 levels in the mean, labels exact."""
    why = torchvision_status()
    if why is not None:
        pytest.skip(why)
    n = len(tiny.data[0])
    plan = make_plan(tiny, 0, np.zeros(n, np.int64), np.arange(n), fixed_params(n))
    (ref,), _ = one_batch(ReferenceLoader, tiny, plan)
    (ours,), _ = one_batch(TorchvisionLoader, tiny, plan)
    assert_same_batch(ref, ours)


@pytest.mark.parametrize("loader_cls", [ReferenceLoader, DaliLoader, TORCH_CROP], ids=["reference", "dali", "torchcrop"])
def test_keypoints_land_on_image_content(tmp_path, loader_cls):
    """Dots drawn at known image points must appear in the crop where keypoints2d says (< 0.5 px)."""
    w, h = 300, 260
    pts = np.array([[100.0, 100.0], [185.0, 145.0], [145.0, 180.0], [95.0, 165.0]])  # bbox centre (140, 135)
    img = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for k, (x, y) in enumerate(pts):
        img[..., k % 3] = np.maximum(img[..., k % 3], (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2 / 3.0 ** 2)).astype(np.uint8))
    Image.fromarray(img).save(tmp_path / "dots.png")
    kp = np.zeros((1, 49, 3))
    kp[0, :4, :2], kp[0, :4, 2] = pts, 1
    write_humandata(tmp_path / "d.npz", image_path=["dots.png"] * 4, bbox_xywh=np.array([[50, 50, 180, 170]] * 4),
                    keypoints2d=spin49_to_humandata(np.repeat(kp, 4, 0))[0])
    src = Sources(["d"], [HumanData(tmp_path / "d.npz")], [tmp_path])
    params = AugParams(np.ones((4, 3), np.float32), np.array([False, True, False, True]),
                       np.array([1.0, 0.8, 1.2, 1.0], np.float32), np.array([0.0, 30.0, -45.0, 60.0], np.float32))
    (b,), _ = one_batch(loader_cls, src, make_plan(src, 0, np.zeros(4, np.int64), np.arange(4), params))
    crops = denormalize(b["img"]).numpy()
    for s in range(4):
        kps = b["keypoints2d"][s].numpy()
        for k in range(4):
            j = SPIN_49_FLIP.index(k) if params.flip[s] else k  # where joint k went after the permutation
            u, v = kps[j, :2]
            ch = crops[s, ..., k % 3]
            r = 6
            y0, x0 = int(round(v)) - r, int(round(u)) - r
            patch = ch[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1].astype(np.float64)
            py, px = np.mgrid[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1]
            wts = np.clip(patch - 20, 0, None)
            cu, cv = (wts * px).sum() / wts.sum(), (wts * py).sum() / wts.sum()
            assert abs(cu - u) < 0.5 and abs(cv - v) < 0.5, (s, k, (cu, cv), (u, v))


@pytest.mark.parametrize("geometry", ["spin", "mmhuman3d"])
def test_flip_is_the_mirror_of_the_original(tiny, geometry):
    """spin: rotate, then mirror the crop (pixels u -> 223 - u, labels x -> 224 - x, its flip_kp);
    mmhuman3d: mirror the image, then rotate, which is the mirror about x = 112 of the crop rotated
    the other way (pixels and labels u -> 224 - u)."""
    n = len(tiny.data[0])
    idx = np.arange(n)
    rot = 20.0 if geometry == "spin" else -20.0
    base = AugParams(np.ones((n, 3), np.float32), np.zeros(n, bool), np.ones(n, np.float32),
                     np.full(n, rot, np.float32))
    flipped = AugParams(base.noise, np.ones(n, bool), base.scale, np.full(n, 20.0, np.float32))
    plan = lambda p: make_plan(tiny, 0, np.zeros(n, np.int64), idx, p, geometry=geometry)
    (a,), _ = one_batch(ReferenceLoader, tiny, plan(base))
    (b,), _ = one_batch(ReferenceLoader, tiny, plan(flipped))
    exp = a["keypoints2d"][:, SPIN_49_FLIP].clone()
    exp[..., 0] = 224 - exp[..., 0]
    torch.testing.assert_close(b["keypoints2d"], exp, atol=1e-3, rtol=0)
    torch.testing.assert_close(b["pose"], flip_pose(a["pose"]), atol=1e-6, rtol=0)
    exp3 = a["keypoints3d"][:, SPIN_49_FLIP].clone()
    exp3[..., 0] *= -1
    torch.testing.assert_close(b["keypoints3d"], exp3, atol=1e-6, rtol=0)
    # the pixels: the flipped crop is the original's columns reversed (mmhuman3d: and moved by one)
    mirrored = a["img"].flip(-1)
    diff = (b["img"] - mirrored if geometry == "spin" else b["img"][..., 1:] - mirrored[..., :-1]).abs() * 58
    assert diff.mean() < 1.0


def _corrupt_sources(tmp_path, kind):
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(_image(rng, 120, 100)).save(tmp_path / f"g{i}.jpg")
    data = (tmp_path / "g1.jpg").read_bytes()
    if kind == "truncated":
        (tmp_path / "g1.jpg").write_bytes(data[: len(data) // 2])
    elif kind == "garbage":  # right size, start and end markers; a bogus Huffman table inside
        body = bytearray(data)
        dht = data.index(b"\xff\xc4")
        body[dht + 5:dht + 21] = b"\xff" * 16
        (tmp_path / "g1.jpg").write_bytes(bytes(body))
    elif kind == "missing":
        (tmp_path / "g1.jpg").unlink()
    write_humandata(tmp_path / "c.npz", image_path=["g0.jpg", "g1.jpg", "g2.jpg"],
                    bbox_xywh=np.array([[10, 10, 80, 70]] * 3))
    src = Sources(["c"], [HumanData(tmp_path / "c.npz")], [tmp_path])
    return src, make_plan(src, 0, np.zeros(3, np.int64), np.arange(3), AugParams.identity(3))


@pytest.mark.parametrize("kind", ["truncated", "missing", "garbage"])
@pytest.mark.parametrize("loader_cls", [ReferenceLoader, DaliLoader, TORCH_CROP], ids=["reference", "dali", "torchcrop"])
def test_unreadable_image_is_named(tmp_path, loader_cls, kind):
    src, plan = _corrupt_sources(tmp_path, kind)
    with pytest.raises(ImageError, match="g1.jpg"):
        one_batch(loader_cls, src, plan)
    batches, ld = one_batch(loader_cls, src, plan, skip_bad_images=True)
    assert len(batches) == 1 and batches[0]["img"].shape[0] == 2
    assert batches[0]["sample_index"].tolist() == [0, 2] and len(ld.skipped) == 1 and "g1.jpg" in ld.skipped[0]


def test_reference_workers(tiny):
    """The multi-process path gives the same batch as the inline one."""
    n = len(tiny.data[0])
    plan = make_plan(tiny, 0, np.zeros(n, np.int64), np.arange(n), fixed_params(n))
    (a,), _ = one_batch(ReferenceLoader, tiny, plan)
    b = next(ReferenceLoader(tiny, lambda s: plan, threads=1, num_steps=1).iter_from(0))
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["keypoints2d"], b["keypoints2d"])


# --- sampler ----------------------------------------------------------------------------------------
def test_sampler_ratios_shards_and_determinism():
    sizes, ratios = [50, 7, 1000, 30], [0.35, 0.15, 0.3, 0.2]
    s = MixedSampler(sizes, ratios, batch_size=8, seed=3, rank=0, world_size=2)
    ids = np.concatenate([s.global_batch(k)[0] for k in range(s.cycle_steps)])
    np.testing.assert_allclose(np.bincount(ids, minlength=4) / len(ids), ratios, atol=1.5 / len(ids))
    # every window of 10 steps has each dataset within a couple of samples of its share
    for start in (0, 37, 501):
        w = np.concatenate([s.global_batch(k)[0] for k in range(start, start + 10)])
        assert np.all(np.abs(np.bincount(w, minlength=4) - 160 * np.array(ratios)) <= 2)
    # shards: rank 0 and rank 1 are the two halves of the global batch
    r1 = MixedSampler(sizes, ratios, batch_size=8, seed=3, rank=1, world_size=2)
    for k in (0, 5):
        g = s.global_batch(k)
        assert np.array_equal(np.concatenate([s.batch(k)[1], r1.batch(k)[1]]), g[1])
    # deterministic and history-free (a resumed run continues exactly)
    fresh = MixedSampler(sizes, ratios, batch_size=8, seed=3, rank=0, world_size=2)
    assert all(np.array_equal(fresh.batch(k)[1], s.batch(k)[1]) for k in (900, 3, 0))
    other = MixedSampler(sizes, ratios, batch_size=8, seed=4, rank=0, world_size=2)
    assert not np.array_equal(other.global_batch(0)[1], s.global_batch(0)[1])
    # inside a dataset: epochs are permutations: whenever a multiple m of the 7 samples of dataset 1
    # has been drawn, each was drawn exactly m times
    counts, checked = np.zeros(7, int), 0
    for k in range(200):
        i, x = s.global_batch(k)
        np.add.at(counts, x[i == 1], 1)
        if s.draws_before(k + 1)[1] % 7 == 0:
            assert (counts == counts[0]).all(), counts
            checked += 1
    assert checked >= 3


def test_sampler_rejects_bad_config():
    with pytest.raises(ValueError, match="empty"):
        MixedSampler([0, 5], [0.5, 0.5], 4)
    with pytest.raises(ValueError, match="rank"):
        MixedSampler([5], [1.0], 4, rank=2, world_size=2)


def _steps_plans(src, n_steps, per_step, seed=7):
    rng = np.random.default_rng(seed)
    n = len(src.data[0])
    plans = []
    for k in range(n_steps):
        idx = rng.integers(0, n, per_step)
        plans.append(make_plan(src, k, np.zeros(per_step, np.int64), idx, fixed_params(per_step)))
    return plans


@pytest.mark.parametrize("prefetch", [1, 3])
def test_dali_prefetch_keeps_order_and_content(tiny, prefetch):
    """With several steps in the pipeline at once, step k's batch is still the reference's step k."""
    plans = _steps_plans(tiny, 5, 4)
    ref = list(ReferenceLoader(tiny, plans.__getitem__, threads=0, num_steps=5).iter_from(1))
    dali = list(DaliLoader(tiny, plans.__getitem__, batch_size=4, threads=1, num_steps=5,
                           prefetch=prefetch).iter_from(1))
    assert len(dali) == len(ref) == 4
    for a, b in zip(ref, dali):
        assert a["sample_index"].tolist() == b["sample_index"].tolist()
        assert (denormalize(a["img"]) - denormalize(b["img"])).abs().mean() < 2.0


def test_dali_decode_error_behind_prefetched_steps(tmp_path):
    """A file DALI cannot decode (it passes the header checks) in step 1 while step 2 is already
    scheduled: named without skipping; with skipping, steps 0-3 all arrive, in order, without it."""
    src, _ = _corrupt_sources(tmp_path, "garbage")
    plans = [make_plan(src, k, np.zeros(2, np.int64), np.array(ix), AugParams.identity(2))
             for k, ix in enumerate([[0, 2], [1, 0], [2, 2], [0, 1]])]
    kw = dict(batch_size=2, threads=1, num_steps=4, prefetch=2)
    with pytest.raises(ImageError, match="g1.jpg"):
        list(DaliLoader(src, plans.__getitem__, **kw).iter_from(0))
    ld = DaliLoader(src, plans.__getitem__, skip_bad_images=True, **kw)
    got = [b["sample_index"].tolist() for b in ld.iter_from(0)]
    assert got == [[0, 2], [0], [2, 2], [0]]
    assert len(ld.skipped) == 1 and "g1.jpg" in ld.skipped[0]


def test_dali_prefetch_must_be_positive(tiny):
    with pytest.raises(ValueError, match="prefetch"):
        DaliLoader(tiny, lambda s: None, batch_size=4, prefetch=0)


# --- backend choice -----------------------------------------------------------------------------------
@pytest.mark.parametrize("have,device,want", [
    ({"dali", "torchvision"}, "cuda", "dali"), ({"torchvision"}, "cuda", "torchvision"), (set(), "cuda", "reference"),
    ({"dali", "torchvision"}, "cpu", "reference"), ({"dali"}, None, "reference"),
], ids=["cuda-dali", "cuda-torchvision", "cuda-reference", "cpu-reference", "nodevice-reference"])
def test_auto_backend_never_picks_what_does_not_import(monkeypatch, have, device, want):
    import spin_fast.data as D

    monkeypatch.setattr(D, "backend_status", lambda b: None if b in have | {"reference"} else f"{b} missing")
    assert D.choose_backend("auto", device) == want
    for b in ("dali", "torchvision"):
        if b in have:
            assert D.choose_backend(b, device) == b
        else:
            with pytest.raises(D.BackendUnavailable, match=f"^data.loader {b}: {b} missing$"):
                D.choose_backend(b, device)
    with pytest.raises(ValueError, match="one of"):
        D.choose_backend("nvjpeg", device)


def test_train_cli_refuses_a_loader_that_does_not_import(tmp_path, capsys):
    """`--data.loader torchvision` where torchvision does not import: exit 2 and one line saying why,
    before any data is generated."""
    from spin_fast.train.__main__ import main

    if torchvision_status() is None:
        pytest.skip("torchvision imports here: the backend is available")
    rc = main(["--data.loader", "torchvision", "--max-steps", "1", "--work-dir", str(tmp_path / "w"),
               "--data-root", str(tmp_path / "no_data_here")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("spin_fast.train: error: data.loader torchvision: torchvision does not import here"), err
    assert not (tmp_path / "w").exists()
