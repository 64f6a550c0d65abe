"""3DPW evaluation: the core over hand-built batches (perfect -> 0 mm, gender routing, a rotated
prediction against numpy, batching), predictors, and the CLI on a tiny synthetic 3DPW split."""
import json

import numpy as np
import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.constants import H36M_TO_J14
from spin_fast.metrics import pw3d_metrics
from spin_fast.evaluate.runner import (Bodies, evaluate, gender_ids, hmr_predictor, mean_pose_predictor,
                                       write_json_atomic)
from spin_fast.geometry import axis_angle_to_rotmat
from spin_fast.model import HMR


@pytest.fixture(scope="module")
def models(synthetic_assets):
    return {g: BodyModel.from_paths(synthetic_assets, g) for g in ("neutral", "male", "female")}


def make_batches(sizes, genders, seed=0):
    """Batches whose img carries the sample number in pixel (0, 0, 0), so a predictor can look it up."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    pose = 0.3 * torch.randn(n, 72, generator=g)
    betas = torch.randn(n, 10, generator=g)
    gender = torch.as_tensor(genders)
    batches, start = [], 0
    for b in sizes:
        img = torch.zeros(b, 3, 224, 224)
        img[:, 0, 0, 0] = torch.arange(start, start + b, dtype=torch.float32)
        batches.append({"img": img, "pose": pose[start:start + b], "betas": betas[start:start + b],
                        "gender": gender[start:start + b]})
        start += b
    return batches, pose, betas


def oracle(pose, betas, orient_R=None):
    """Predicts the ground truth (optionally with the global orientation pre-multiplied by orient_R)."""
    def predict(img):
        idx = img[:, 0, 0, 0].long()
        R = axis_angle_to_rotmat(pose[idx].reshape(-1, 24, 3))
        if orient_R is not None:
            R = torch.cat([orient_R @ R[:, :1], R[:, 1:]], 1)
        return R, betas[idx]
    return predict


def test_perfect_prediction_is_zero(models):
    same = models["neutral"]
    bodies = Bodies(same, same, same)
    batches, pose, betas = make_batches([3, 2], [0, 1, -1, 1, 0])
    r = evaluate(oracle(pose, betas), batches, bodies)
    assert r.num_samples == 5
    assert r.mpjpe < 1e-3 and r.pa_mpjpe < 1e-3 and r.pve < 1e-3
    assert r.images_per_s > 0 and r.seconds > 0


def test_gender_picks_the_ground_truth_model(models):
    # prediction (neutral) = female model: female rows are perfect, male rows carry the male-female gap
    bodies = Bodies(neutral=models["female"], male=models["male"], female=models["female"])
    genders = [0, 1, 1, 0]
    batches, pose, betas = make_batches([4], genders)
    r = evaluate(oracle(pose, betas), batches, bodies, keep_per_sample=True)
    f = models["female"](betas, pose[:, 3:], pose[:, :3], joint_set="h36m_17")
    m = models["male"](betas, pose[:, 3:], pose[:, :3], joint_set="h36m_17")
    gap = pw3d_metrics(f.joints, m.joints, f.vertices, m.vertices)
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        per = r.per_sample[k]
        assert per[1] < 1e-3 and per[2] < 1e-3, k
        torch.testing.assert_close(per[[0, 3]], gap[k][[0, 3]].double(), atol=1e-3, rtol=1e-4)
        assert (per[[0, 3]] > 1.0).all(), k  # the stand-in's genders do differ
    # unknown gender -> the neutral model (here: male), so a perfect prediction of it is 0
    bodies = Bodies(neutral=models["male"], male=models["female"], female=models["female"])
    batches, pose, betas = make_batches([2], [-1, -1])
    assert evaluate(oracle(pose, betas), batches, bodies).mpjpe < 1e-3


def test_rotated_prediction_against_numpy(models):
    """Global orientation off by 90 deg about y: PA-MPJPE ~ 0, MPJPE = mean |R p - p| of the
    pelvis-centred J14 joints (numpy), PVE the same on pelvis-centred vertices."""
    body = models["neutral"]
    bodies = Bodies(body, body, body)
    batches, pose, betas = make_batches([2, 1], [0, 1, 0], seed=1)
    Ry = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    r = evaluate(oracle(pose, betas, Ry), batches, bodies, keep_per_sample=True)
    gt = body(betas, pose[:, 3:], pose[:, :3], joint_set="h36m_17")
    J = gt.joints.double().numpy()
    pelvis = J[:, :1]
    j14 = (J - pelvis)[:, H36M_TO_J14]
    R = Ry.double().numpy()
    exp_mpjpe = 1000 * np.linalg.norm(j14 @ R.T - j14, axis=-1).mean(-1)
    V = gt.vertices.double().numpy() - pelvis
    exp_pve = 1000 * np.linalg.norm(V @ R.T - V, axis=-1).mean(-1)
    np.testing.assert_allclose(r.per_sample["mpjpe"].numpy(), exp_mpjpe, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(r.per_sample["pve"].numpy(), exp_pve, rtol=1e-4, atol=1e-2)
    assert r.per_sample["pa_mpjpe"].max() < 1e-2
    assert exp_mpjpe.min() > 50  # a real error, not a trivially small one
    assert r.mpjpe == pytest.approx(exp_mpjpe.mean(), rel=1e-4)  # mean over samples across batches


def test_batching_does_not_change_the_result(models):
    bodies = Bodies(models["neutral"], models["male"], models["female"])
    genders = [0, 1, 1, 0, 1]
    whole, pose, betas = make_batches([5], genders, seed=2)
    split, _, _ = make_batches([2, 3], genders, seed=2)
    noisy = lambda img: (axis_angle_to_rotmat((pose[img[:, 0, 0, 0].long()] + 0.1).reshape(-1, 24, 3)),  # noqa: E731
                         betas[img[:, 0, 0, 0].long()] * 0.5)
    a, b = evaluate(noisy, whole, bodies), evaluate(noisy, split, bodies)
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-6)
        assert getattr(a, k) > 1.0


def test_bad_batches_are_named(models):
    body = models["neutral"]
    bodies = Bodies(body, body, body)
    batches, pose, betas = make_batches([2], [0, 1])
    with pytest.raises(KeyError, match="gender"):
        evaluate(oracle(pose, betas), [{k: v for k, v in batches[0].items() if k != "gender"}], bodies)
    with pytest.raises(ValueError, match=r"pose has shape \(2, 69\)"):
        evaluate(oracle(pose, betas), [{**batches[0], "pose": pose[:2, 3:]}], bodies)
    with pytest.raises(ValueError, match="no samples"):
        evaluate(oracle(pose, betas), [], bodies)
    with pytest.raises(ValueError, match="'x'"):
        gender_ids(["m", "x"])
    assert gender_ids(["m", "f", "n"]).tolist() == [0, 1, -1]


def test_predictors(synthetic_assets):
    mean = mean_pose_predictor(synthetic_assets.mean_params)
    R, betas = mean(torch.zeros(3, 3, 224, 224))
    with np.load(synthetic_assets.mean_params) as f:
        want_R = HMR("resnet18", mean_params={k: f[k] for k in ("pose", "shape", "cam")}).head.init_pose
    from spin_fast.geometry import rotmat_to_rot6d
    torch.testing.assert_close(rotmat_to_rot6d(R[0]).reshape(1, 144), want_R, atol=1e-5, rtol=0)
    assert R.shape == (3, 24, 3, 3) and betas.shape == (3, 10)
    torch.manual_seed(0)
    model = HMR("resnet18", mean_params=synthetic_assets.mean_params)
    R, betas = hmr_predictor(model, torch.bfloat16, channels_last=True)(torch.randn(2, 3, 224, 224))
    assert not model.training and R.dtype == betas.dtype == torch.float32 and R.shape == (2, 24, 3, 3)


def test_write_json_atomic(tmp_path):
    out = tmp_path / "sub" / "r.json"
    write_json_atomic({"b": 1.5, "a": [1, 2]}, out)
    assert json.loads(out.read_text()) == {"a": [1, 2], "b": 1.5}
    with pytest.raises(TypeError):
        write_json_atomic({"bad": object()}, out)
    assert json.loads(out.read_text()) == {"a": [1, 2], "b": 1.5}  # the old file survives
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]


@pytest.fixture(scope="module")
def pw3d_root(synthetic_data):
    return synthetic_data(per_dataset=3).root


def test_cli_on_synthetic_pw3d(pw3d_root, tmp_path, capsys):
    from spin_fast.evaluate.__main__ import main

    torch.manual_seed(0)
    ckpt = tmp_path / "hmr.pth"
    torch.save({"meta": {}, "state_dict": HMR("resnet18", mean_params=pw3d_root / "body_models" /
                                              "smpl_mean_params.npz").state_dict()}, ckpt)
    out = tmp_path / "res.json"
    report = main(["--checkpoint", str(ckpt), "--data-root", str(pw3d_root), "--batch-size", "2",
                   "--loader", "reference", "--threads", "1", "--bf16", "--channels-last", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["num_samples"] == 3 and saved["backbone"] == "resnet18" and saved["bf16"] is True
    for k in ("mpjpe", "pa_mpjpe", "pve", "images_per_s"):
        assert np.isfinite(saved[k]) and saved[k] > 0, k
    assert saved["mpjpe"] == pytest.approx(report["mpjpe"])
    assert "PA-MPJPE" in capsys.readouterr().out
    mean = main(["--mean-pose", "--data-root", str(pw3d_root), "--batch-size", "3", "--loader", "reference",
                 "--threads", "1"])
    assert mean["num_samples"] == 3 and mean["checkpoint"] is None and mean["mpjpe"] > 0
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--checkpoint", str(tmp_path / "nope.pth"), "--data-root", str(pw3d_root)])
    with pytest.raises(SystemExit):
        main(["--data-root", str(pw3d_root)])  # neither --checkpoint nor --mean-pose
    with pytest.raises(SystemExit, match="training set"):
        main(["--mean-pose", "--data-root", str(pw3d_root), "--dataset", "coco"])
    # an --out that cannot be written is found before the run, not after it
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    with pytest.raises(SystemExit, match=f"--out {blocked}: cannot write there"):
        main(["--mean-pose", "--data-root", str(tmp_path / "never-read"), "--out", str(blocked / "res.json")])
    with pytest.raises(SystemExit, match="is a folder"):
        main(["--mean-pose", "--data-root", str(tmp_path / "never-read"), "--out", str(tmp_path)])


def test_baseline_in_the_same_pass_equals_its_own_run(models, synthetic_assets):
    """The mean-pose baseline scored beside a predictor equals evaluating the mean pose alone."""
    batches, pose, betas = make_batches([3, 2], [-1] * 5, seed=3)  # neutral GT: the oracle scores 0
    bodies = Bodies(models["neutral"], models["male"], models["female"])
    mean = mean_pose_predictor(synthetic_assets.mean_params)
    both = evaluate(oracle(pose, betas), batches, bodies, baseline=mean)
    alone = evaluate(mean, batches, bodies)
    assert both.mpjpe == pytest.approx(0.0, abs=1e-3) and alone.mpjpe > 10
    assert both.baseline == pytest.approx({k: getattr(alone, k) for k in ("mpjpe", "pa_mpjpe", "pve")}, rel=1e-9)
    assert alone.baseline is None


def test_cli_work_dir_baseline_histogram_and_events(pw3d_root, tmp_path, capsys):
    """--work-dir: its latest checkpoint is scored beside the mean pose, the metrics land in its
    TensorBoard events at the checkpoint's step; --histogram draws one panel per metric; stderr
    (not a terminal here) gets a plain progress line with ETA."""
    import re

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from spin_fast.evaluate.__main__ import main
    from spin_fast.plots import error_histogram_figure

    torch.manual_seed(0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"meta": {"step": 7}, "state_dict": HMR("resnet18", mean_params=pw3d_root / "body_models" /
                                                       "smpl_mean_params.npz").state_dict()},
               run / "checkpoints" / "latest.pth")
    report = main(["--work-dir", str(run), "--data-root", str(pw3d_root), "--batch-size", "2", "--loader",
                   "reference", "--threads", "1", "--out", str(tmp_path / "r.json"),
                   "--histogram", str(tmp_path / "errors.png")])
    captured = capsys.readouterr()
    mean = main(["--mean-pose", "--data-root", str(pw3d_root), "--batch-size", "3", "--loader", "reference",
                 "--threads", "1"])
    capsys.readouterr()
    assert report["baseline"] == pytest.approx({k: mean[k] for k in ("mpjpe", "pa_mpjpe", "pve")}, rel=1e-6)
    assert f"mean-pose baseline, same samples:  MPJPE {mean['mpjpe']:.2f} mm" in captured.out
    assert re.search(r"evaluate pw3d: 3/3 imgs \(100%\) \| elapsed \d+:\d\d:\d\d \| ETA 0:00:00 \| [\d.]+ img/s",
                     captured.err), captured.err
    acc = EventAccumulator(str(run))
    acc.Reload()
    for k in ("mpjpe", "pa_mpjpe", "pve", "mean_pose_pa_mpjpe"):
        (event,) = acc.Scalars(f"eval/pw3d/{k}")
        want = report[k] if not k.startswith("mean_pose_") else report["baseline"][k[len("mean_pose_"):]]
        assert event.step == 7 and event.value == pytest.approx(want, rel=1e-6)
    png = Image.open(tmp_path / "errors.png")
    assert png.format == "PNG" and (np.asarray(png.convert("L")) < 128).mean() > 0.005
    fig = error_histogram_figure({"mpjpe": [1.0, 2.0, 4.0], "pve": [3.0, 3.5, 9.0]}, baseline={"mpjpe": 5.0})
    a, b = fig.get_axes()
    assert (a.get_title(), b.get_title()) == ("mpjpe", "pve") and a.get_xlabel() == "error (mm)"
    assert sum(p.get_height() for p in a.patches) == 3  # every sample counted once
    assert [list(line.get_xdata()) for line in a.get_lines()] == [[7 / 3, 7 / 3], [5.0, 5.0]]  # mean, baseline
