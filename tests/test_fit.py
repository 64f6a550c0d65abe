"""`python -m spin_fast.fit` on the synthetic stand-in: fit quality against the ground truth's noise
floor, training from the written file, resume after SIGKILL, bad samples, two gloo processes."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spin_fast.config import AssetPaths
from spin_fast.data.augment import AugParams
from spin_fast.data.batch import Sources, assemble_labels, make_plan
from spin_fast.metrics import h36m_to_j14, pa_mpjpe
from spin_fast.fit.run import FitConfig, fit_dataset, mean_fit
from spin_fast.geometry import perspective_projection
from spin_fast.smplify.camera import estimate_camera_translation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(synthetic_data):
    """The session's synthetic assets + its rendered h36m stand-in (32 samples, all with GT SMPL);
    read-only: tests that write into a data root copy it first."""
    return synthetic_data(names=("h36m",)).root


@pytest.fixture(scope="module")
def labels(data_root):
    """Every h36m sample through the training label pipeline at test time, in the spin preset's crop
    (the fitter's input under its default preset)."""
    sources = Sources.from_registry(AssetPaths(data_root), ["h36m"])
    n = sources.sizes[0]
    plan = make_plan(sources, 0, np.zeros(n, np.int64), np.arange(n), AugParams.identity(n), geometry="spin")
    return assemble_labels(sources, plan)


@pytest.fixture(scope="module")
def body(data_root):
    from spin_fast.body import BodyModel

    return BodyModel.from_paths(AssetPaths(data_root))


def _visible_px(body, fits, kp2d):
    """Independent of the fitter: per-sample mean pixel error on the visible keypoints of fits (N, 82)
    under their least-squares camera (plain projection, no SMPLify)."""
    fits = torch.as_tensor(np.asarray(fits), dtype=torch.float32)
    with torch.no_grad():
        joints = body.joints_only(fits[:, 72:], fits[:, 3:72], fits[:, :3], joint_set="smpl_49")
        cam = estimate_camera_translation(joints, kp2d).translation
        err = (perspective_projection(joints, cam) - kp2d[..., :2]).norm(dim=-1)
    vis = kp2d[..., 2] > 0
    return ((err * vis).sum(1) / vis.sum(1)).numpy()


def _pa_mpjpe(body, fits, gt):
    fits, gt = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (fits, gt))
    with torch.no_grad():
        j = [body.joints_only(f[:, 72:], f[:, 3:72], f[:, :3], joint_set="h36m_17") for f in (fits, gt)]
    return 1000 * pa_mpjpe(h36m_to_j14(j[0]), h36m_to_j14(j[1])).numpy()  # the 3DPW protocol's 14 joints


def _cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "spin_fast.fit", "--no-progress", *map(str, args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def test_fits_reach_the_noise_floor(data_root, labels, body, tmp_path, preset="spin"):
    """Numbers on the stand-in against the GT's own error (SPIN's pixel-space SMPLify, the default)."""
    data_root = shutil.copytree(data_root, tmp_path / "data")
    paths = AssetPaths(data_root)
    kp = labels["keypoints2d"]
    gt = torch.cat([labels["pose"], labels["betas"]], 1)
    assert bool(labels["has_smpl"].all())

    # the ground truth's own reprojection error: the noise floor of the synthetic keypoints
    gt_px = _visible_px(body, gt, kp)
    print(f"\nGT parameters: {gt_px.mean():.2f} px mean reprojection error on the visible keypoints")
    assert 0.5 < gt_px.mean() < 4.0

    # --init static through the CLI, default --out under the data root (exists: refused without --overwrite)
    out = paths.static_fits("h36m")
    static_before = np.load(out)
    cfg = FitConfig("h36m", preset=preset, init="static", batch_size=16)
    with pytest.raises(FileExistsError, match="--overwrite"):
        fit_dataset(Sources.from_registry(paths, ["h36m"]), paths, cfg, out, progress=False)
    assert np.array_equal(np.load(out), static_before)
    p = _cli(["--data-root", data_root, "--dataset", "h36m", "--init", "static", "--batch-size", 16, "--overwrite",
              "--preset", preset])
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    print(stdout.strip())
    fits_static = np.load(out)
    assert fits_static.shape == (32, 82) and fits_static.dtype == np.float32
    report = json.loads(out.with_suffix(".report.json").read_text())
    static_px = np.asarray(report["per_sample"]["reprojection_px"])
    print(f"{preset} --init static: {static_px.mean():.2f} px fitted vs {gt_px.mean():.2f} px GT "
          f"(static start {_visible_px(body, static_before, kp).mean():.2f} px); valid {report['valid_fraction']:.2f}")
    assert static_px.mean() <= 1.5 * gt_px.mean()
    assert report["valid_fraction"] == 1.0 and report["num_samples"] == 32 and report["fits_per_s"] > 0
    # the report's metrics are those of the written file
    np.testing.assert_allclose(report["has_smpl"]["pa_mpjpe"], _pa_mpjpe(body, fits_static, gt).mean(), rtol=1e-3)

    # --init mean (library call): the fit moves far from the mean pose towards the keypoints and the GT
    res = fit_dataset(Sources.from_registry(paths, ["h36m"]), paths,
                      FitConfig("h36m", preset=preset, init="mean", batch_size=32),
                      tmp_path / "mean_fits.npy", progress=False)
    mean_rows = mean_fit(paths.mean_params).expand(32, -1).numpy()
    mean_px, fit_px = _visible_px(body, mean_rows, kp).mean(), np.mean(res.report["per_sample"]["reprojection_px"])
    mean_pa, fit_pa = _pa_mpjpe(body, mean_rows, gt).mean(), _pa_mpjpe(body, res.fits, gt).mean()
    print(f"{preset} --init mean: {fit_px:.2f} px fitted vs {mean_px:.2f} px mean pose; "
          f"PA-MPJPE {fit_pa:.1f} mm fitted vs {mean_pa:.1f} mm mean pose")
    assert fit_px < 0.5 * mean_px
    assert fit_pa < 0.75 * mean_pa
    np.testing.assert_array_equal(np.load(tmp_path / "mean_fits.npy"), res.fits)


def test_the_trainer_trains_from_the_written_file(data_root, tmp_path):
    from spin_fast.train.loop import train
    from test_train import small_config

    data_root = shutil.copytree(data_root, tmp_path / "data")
    paths = AssetPaths(data_root)
    out = paths.static_fits("h36m")
    before = np.load(out)
    cfg = FitConfig("h36m", init="static", stage1_iters=10, stage2_iters=10, batch_size=32)
    fits_static = fit_dataset(Sources.from_registry(paths, ["h36m"]), paths, cfg, out, overwrite=True,
                              progress=False).fits
    np.testing.assert_array_equal(np.load(out), fits_static)
    assert not (fits_static == before).all(1).any()  # every row is new: the store below can only hold ours

    cfg = small_config(data_root, tmp_path / "run", max_steps=2, **{"data.mix": "{h36m: 1.0}", "optim.lr": "3e-5"})
    result = train(cfg, return_state=True)
    assert result["step"] == 2 and np.isfinite(result["loss"])
    store = result["state"]["fits"].numpy()
    same = (store == fits_static).all(1)
    assert same.sum() >= 32 - 2 * 4  # every row the two steps did not improve is the written fit


def _progress_files(out: Path):
    folder = out.with_name(out.name + ".progress")
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    """One uninterrupted CLI run (the reference file of the resume and multi-process tests)."""
    out = tmp_path_factory.mktemp("fit_ref") / "h36m_fits.npy"
    p = _cli(["--data-root", data_root, "--dataset", "h36m", "--out", out, *RESUME_ARGS])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return out


RESUME_ARGS = ["--init", "static", "--batch-size", "2", "--stage1-iters", "30", "--stage2-iters", "30",
               "--save-every", "1"]


def test_sigkill_then_resume_gives_the_same_file(data_root, uninterrupted, tmp_path):
    out = tmp_path / "h36m_fits.npy"
    p = _cli(["--data-root", data_root, "--dataset", "h36m", "--out", out, *RESUME_ARGS])
    deadline = time.time() + 240
    while not _progress_files(out) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    assert not out.exists(), "the run finished before it could be killed"
    assert _progress_files(out)
    # without --resume the saved progress is not silently dropped
    paths = AssetPaths(data_root)
    cfg = FitConfig("h36m", stage1_iters=30, stage2_iters=30, batch_size=2, init="static")
    with pytest.raises(FileExistsError, match="--resume"):
        fit_dataset(Sources.from_registry(paths, ["h36m"]), paths, cfg, out, progress=False)
    q = _cli(["--data-root", data_root, "--dataset", "h36m", "--out", out, *RESUME_ARGS, "--resume"])
    stdout, err = q.communicate(timeout=300)
    assert q.returncode == 0, err
    print(stdout.strip())
    assert "resumed" in stdout
    assert out.read_bytes() == uninterrupted.read_bytes()
    assert not _progress_files(out)


def test_two_gloo_processes_write_the_same_file(data_root, uninterrupted, tmp_path):
    out = tmp_path / "h36m_fits.npy"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={port}", "-m", "spin_fast.fit", "--no-progress", "--device", "cpu",
                        "--data-root", str(data_root), "--dataset", "h36m", "--out", str(out), *RESUME_ARGS],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.read_bytes() == uninterrupted.read_bytes()
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["processes"] == 2 and len(report["per_sample"]["valid"]) == 32


@pytest.mark.parametrize("preset", ["spin", "mmhuman3d"])
def test_bad_samples_get_the_mean_fit_and_leave_the_others_alone(data_root, tmp_path, preset):
    """Sample 3: NaN keypoints; 5: every confidence 0; 7: a NaN static fit. They get the mean
    parameters and count invalid; every other sample's fit is bit for bit the clean run's."""
    clean_root = tmp_path / "clean"
    bad_root = tmp_path / "bad"
    for r in (clean_root, bad_root):
        shutil.copytree(data_root, r, ignore=shutil.ignore_patterns("datasets"))
    npz = AssetPaths(bad_root).preprocessed("h36m_mosh_train")
    arrays = dict(np.load(npz, allow_pickle=True))
    arrays["keypoints2d"] = arrays["keypoints2d"].copy()
    arrays["keypoints2d"][3] = np.nan
    arrays["keypoints2d"][5, :, 2] = 0.0
    np.savez(npz, **arrays)
    static = np.load(AssetPaths(bad_root).static_fits("h36m"))
    static[7] = np.nan
    np.save(AssetPaths(bad_root).static_fits("h36m"), static)

    cfg = FitConfig("h36m", preset=preset, stage1_iters=10, stage2_iters=10, batch_size=8, init="static")
    runs = {}
    for name, root in (("clean", clean_root), ("bad", bad_root)):
        paths = AssetPaths(root)
        runs[name] = fit_dataset(Sources.from_registry(paths, ["h36m"]), paths, cfg, tmp_path / f"{name}.npy",
                                 progress=False)
    bad, clean = runs["bad"], runs["clean"]
    mean = mean_fit(AssetPaths(data_root).mean_params).numpy()
    broken = np.zeros(32, bool)
    broken[[3, 5, 7]] = True
    np.testing.assert_array_equal(bad.fits[broken], np.broadcast_to(mean, (3, 82)))
    np.testing.assert_array_equal(bad.fits[~broken], clean.fits[~broken])
    valid = np.asarray(bad.report["per_sample"]["valid"])
    assert not valid[broken].any() and np.asarray(clean.report["per_sample"]["valid"])[broken].all()
    assert all(bad.report["per_sample"]["reprojection_loss"][i] is None for i in (3, 5, 7))
    assert bad.report["num_valid"] == clean.report["num_valid"] - 3
    print(f"\n{preset}: valid fraction {bad.report['valid_fraction']:.3f} with 3 broken samples "
          f"(clean {clean.report['valid_fraction']:.3f})")


def test_init_checkpoint_starts_from_the_network(data_root, tmp_path):
    """With 0 + 0 iterations the fits are the network's predictions on the test-time crops."""
    from spin_fast.data import build_eval_loader
    from spin_fast.geometry import rotmat_to_axis_angle
    from spin_fast.model import HMR

    paths = AssetPaths(data_root)
    torch.manual_seed(0)
    model = HMR("resnet18", mean_params=paths.mean_params).eval()
    ckpt = tmp_path / "hmr.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    cfg = FitConfig("h36m", preset="mmhuman3d", stage1_iters=0, stage2_iters=0, batch_size=16, init="checkpoint",
                    checkpoint=str(ckpt))
    res = fit_dataset(Sources.from_registry(paths, ["h36m"]), paths, cfg, tmp_path / "fits.npy",
                      loader_backend="reference", threads=1, progress=False)
    preds = []
    with torch.no_grad():
        for batch in build_eval_loader(paths, "h36m", batch_size=8, backend="reference", threads=1):
            out = model(batch["img"])
            preds.append(torch.cat([rotmat_to_axis_angle(out.rotmat).reshape(-1, 72), out.betas], 1))
    np.testing.assert_allclose(res.fits, torch.cat(preds).numpy(), atol=1e-4)
    assert res.report["config"]["init"] == "checkpoint"


@pytest.mark.parametrize("args, message", [
    (["--dataset", "h36m", "--init", "checkpoint"], "needs a checkpoint"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "h36m", "--batch-size", "0"], "batch size must be >= 1"),
    (["--dataset", "h36m", "--init", "checkpoint", "--checkpoint", "/nonexistent.pth"], "does not exist"),
])
def test_bad_arguments_are_named(args, message, capsys):
    from spin_fast.fit.__main__ import main

    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_a_malformed_dataset_file_is_named(data_root, tmp_path, capsys):
    from spin_fast.fit.__main__ import main

    root = shutil.copytree(data_root, tmp_path / "data", ignore=shutil.ignore_patterns("datasets"))
    npz = AssetPaths(root).preprocessed("h36m_mosh_train")
    arrays = dict(np.load(npz, allow_pickle=True))
    arrays["bbox_xywh"] = arrays["bbox_xywh"][:5]
    np.savez(npz, **arrays)
    assert main(["--data-root", str(root), "--dataset", "h36m", "--out", str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err
    assert str(npz) in err and "bbox_xywh" in err
