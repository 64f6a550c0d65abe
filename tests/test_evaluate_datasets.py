"""The Human3.6M (protocols 1 and 2) and MPI-INF-3DHP test sets: each protocol against an independent
implementation written here from SPIN's eval.py / datasets/preprocess/h36m.py / utils/pose_utils.py and
mmhuman3d's core/evaluation/eval_utils.py (keypoint_3d_pck, keypoint_3d_auc) and keypoint conventions,
per sample; `--dataset all` from the command line on the stand-in; the errors of a wrong or missing test
file or name; the synthetic test splits, `data check` on them and the extension of an older stand-in.

What the originals do with a missing ground-truth joint (confidence 0), and so what these tests expect:
SPIN's eval.py drops the confidence column (`pose_3d[:, joint_mapper_gt, :-1]`) and mmhuman3d's
HumanImageDataset evaluates Human3.6M with an all-ones mask, so MPJPE and PA-MPJPE count the joint at
its stored coordinates; mmhuman3d's keypoint_3d_pck / keypoint_3d_auc leave joints whose mask is False
out of the pooled mean (`error[mask].mean()`) after aligning on all joints, so PCK and AUC count only
the visible joints (mask = confidence > 0).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spin_fast.data import build_eval_loader
from spin_fast.data.humandata import HumanDataError
from spin_fast.data.datasets import DATASETS, TEST_DATASETS, TRAIN_DATASETS
from spin_fast.evaluate.runner import Bodies, evaluate, mean_pose_predictor

ROOT = Path(__file__).resolve().parents[1]

# --- the reference, from the original code ---------------------------------------------------------
# SPIN constants.py
SPIN_H36M_TO_J17 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9]
SPIN_J24_TO_J17 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17]
# SPIN datasets/preprocess/h36m.py (and mpi_inf_3dhp.py test_data, after its joints17_idx reorder):
# H36M-17 joint h goes to S24[global_idx[h]]
SPIN_GLOBAL_IDX = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
# mmhuman3d core/conventions/keypoints_mapping/h36m.py H36M_KEYPOINTS, and each name's index in
# human_data.py HUMAN_DATA (where the converters store it)
MMH_H36M_KEYPOINTS = ["pelvis_extra", "left_hip_extra", "left_knee", "left_ankle", "right_hip_extra", "right_knee",
                      "right_ankle", "spine_extra", "neck_extra", "head_extra", "headtop", "left_shoulder",
                      "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist"]
MMH_HUMAN_DATA_INDEX = {"left_knee": 4, "right_knee": 5, "left_ankle": 7, "right_ankle": 8, "left_shoulder": 16,
                        "right_shoulder": 17, "left_elbow": 18, "right_elbow": 19, "left_wrist": 20,
                        "right_wrist": 21, "right_hip_extra": 144, "left_hip_extra": 145, "neck_extra": 146,
                        "headtop": 147, "pelvis_extra": 148, "spine_extra": 150, "head_extra": 152}


def spin_similarity_transform(S1, S2):
    """utils/pose_utils.py compute_similarity_transform, (N, 3) points (numpy, float64)."""
    S1, S2 = S1.T, S2.T
    mu1, mu2 = S1.mean(1, keepdims=True), S2.mean(1, keepdims=True)
    X1, X2 = S1 - mu1, S2 - mu2
    var1 = np.sum(X1 ** 2)
    K = X1.dot(X2.T)
    U, _, Vh = np.linalg.svd(K)
    V = Vh.T
    Z = np.eye(3)
    Z[-1, -1] *= np.sign(np.linalg.det(U.dot(V.T)))
    R = V.dot(Z.dot(U.T))
    scale = np.trace(R.dot(K)) / var1
    t = mu2 - scale * R.dot(mu1)
    return (scale * R.dot(S1) + t).T


def spin_s24(npz_path) -> np.ndarray:
    """(N, 24, 4) ground truth laid out as SPIN's own test files hold it (`S`), from a HumanData file:
    each H36M joint read from the column of its mmhuman3d name, put where SPIN's preprocessing puts it."""
    with np.load(npz_path, allow_pickle=True) as z:  # the test's own synthetic file
        kp, mask = z["keypoints3d"], z["keypoints3d_mask"].astype(bool)
        full = np.zeros((kp.shape[0], 190, 4), np.float64)
        full[:, mask] = kp if bool(z["__keypoints_compressed__"]) else kp[:, mask]
    s24 = np.zeros((len(full), 24, 4))
    for h, name in enumerate(MMH_H36M_KEYPOINTS):
        s24[:, SPIN_GLOBAL_IDX[h]] = full[:, MMH_HUMAN_DATA_INDEX[name]]
    return s24


def reference(pred_h36m: np.ndarray, s24: np.ndarray, joints: int) -> dict:
    """Per sample: SPIN eval.py's MPJPE / reconstruction error (mm) and mmhuman3d's PCK / AUC inputs."""
    h36m_map, gt_map = SPIN_H36M_TO_J17[:joints], SPIN_J24_TO_J17[:joints]
    pred = (pred_h36m[:, h36m_map] - pred_h36m[:, [0]]) * 1000  # eval.py: pred pelvis subtracted
    gt = s24[:, gt_map, :-1] * 1000                               # eval.py: as stored (pelvis-centred)
    aligned = np.stack([spin_similarity_transform(p, g) for p, g in zip(pred, gt)])
    err, pa_err = np.linalg.norm(pred - gt, axis=-1), np.linalg.norm(aligned - gt, axis=-1)
    mask = s24[:, gt_map, -1] > 0
    thresholds = np.linspace(0.0, 150, 31)
    return {"mpjpe": err.mean(-1), "pa_mpjpe": pa_err.mean(-1), "err": err, "pa_err": pa_err, "mask": mask,
            "3dpck": (err < 150.0), "pa_3dpck": (pa_err < 150.0),
            "3dauc": np.stack([err < t for t in thresholds]), "pa_3dauc": np.stack([pa_err < t for t in thresholds])}


def mmh_pck(correct, mask):
    """keypoint_3d_pck: (error < threshold).astype(float32)[mask].mean() * 100."""
    return correct.astype(np.float32)[mask].mean() * 100


def mmh_auc(correct_t, mask):
    """keypoint_3d_auc: the PCK at each of the 31 thresholds, averaged, * 100."""
    return np.array([c.astype(np.float32)[mask].mean() for c in correct_t]).mean() * 100


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(synthetic_data):
    """The four test splits at 16 a dataset: 3DPW 16, Human3.6M 2 frames x 4 cameras (p2: 2), 3DHP 4."""
    return synthetic_data(per_dataset=16, names=TEST_DATASETS)


@pytest.fixture(scope="module")
def bodies(root):
    return Bodies.from_paths(root)


class Recorder:
    """A predictor that varies with the image (mean pose turned about y by the image's mean, betas scaled)
    and records what it predicted."""

    def __init__(self, mean_params):
        self.mean = mean_pose_predictor(mean_params)
        self.calls = []

    def __call__(self, img):
        R, betas = self.mean(img)
        a = 3.0 * img.mean((1, 2, 3)).double()
        c, s, z, o = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
        Ry = torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(-1, 3, 3).float()
        R = torch.cat([Ry[:, None] @ R[:, :1], R[:, 1:]], 1)
        betas = betas * (1 + a[:, None].float())
        self.calls.append((R.clone(), betas.clone()))
        return R, betas


def predicted_h36m(root, bodies, calls) -> np.ndarray:
    """The recorded predictions through the neutral model's vertices and the J_regressor_h36m file
    (eval.py: torch.matmul in float32)."""
    R = torch.cat([c[0] for c in calls])
    betas = torch.cat([c[1] for c in calls])
    with torch.no_grad():
        verts = bodies.neutral(betas, R[:, 1:], R[:, :1], joint_set="h36m_17").vertices
    J = torch.from_numpy(np.load(root.j_regressor_h36m)).float()
    return torch.matmul(J[None].expand(len(verts), -1, -1), verts).double().numpy()


def run(root, bodies, name, batches=None):
    rec = Recorder(root.mean_params)
    if batches is None:
        batches = build_eval_loader(root, name, batch_size=3, backend="reference", threads=0)
    result = evaluate(rec, batches, bodies, keep_per_sample=True, protocol=DATASETS[name].protocol)
    return result, predicted_h36m(root, bodies, rec.calls)


# --- the protocols against the reference ----------------------------------------------------------
@pytest.mark.parametrize("name", ["h36m-p1", "h36m-p2", "mpi-inf-3dhp"])
def test_protocol_equals_spin_and_mmhuman3d_per_sample(root, bodies, name):
    joints = 17 if name == "mpi-inf-3dhp" else 14
    result, pred = run(root, bodies, name)
    ref = reference(pred, spin_s24(DATASETS[name].npz_path(root)), joints)
    n = len(pred)
    assert result.num_samples == n == {"h36m-p1": 8, "h36m-p2": 2, "mpi-inf-3dhp": 4}[name]
    for k in ("mpjpe", "pa_mpjpe"):
        np.testing.assert_allclose(result.per_sample[k].numpy(), ref[k], rtol=0, atol=1e-4, err_msg=k)
        assert result.metrics[k] == pytest.approx(ref[k].mean(), abs=1e-4)
    assert ref["mpjpe"].min() > 20 and ref["pa_mpjpe"].min() > 5  # real errors, not trivially small ones
    if joints == 14:
        assert set(result.metrics) == {"mpjpe", "pa_mpjpe"}
        return
    mask = ref["mask"]
    assert mask.all()  # the converters' test files: every joint present
    for k in ("3dpck", "pa_3dpck"):  # per sample: the same joints within 150 mm
        want = 100 * (ref[k] & mask).sum(-1) / mask.sum(-1)
        np.testing.assert_array_equal(result.per_sample[k].numpy(), want, err_msg=k)
        assert result.metrics[k] == pytest.approx(mmh_pck(ref[k], mask), rel=1e-6)
    for k in ("3dauc", "pa_3dauc"):
        want = 100 * (ref[k] & mask).sum((0, 2)) / (31 * mask.sum(-1))
        np.testing.assert_allclose(result.per_sample[k].numpy(), want, rtol=1e-12, err_msg=k)
        assert result.metrics[k] == pytest.approx(mmh_auc(ref[k], mask), rel=1e-6)
    assert 0 < result.metrics["3dpck"] < 100 and result.metrics["pa_3dpck"] > result.metrics["3dpck"]


@pytest.mark.parametrize("name", ["h36m-p1", "mpi-inf-3dhp"])
def test_missing_ground_truth_joints(root, bodies, name):
    """Sample 0: three joints with confidence 0 at their coordinates; sample 1: two read as absent
    (zeros, confidence 0, as a column outside the file's mask reads); sample 2: no visible joint."""
    joints = 17 if name == "mpi-inf-3dhp" else 14
    batch = next(iter(build_eval_loader(root, name, batch_size=3, backend="reference", threads=0)))
    kp = batch["keypoints3d"].clone()
    gt = 25 + np.array([0, 3, 13, 8, 10])  # R ankle, L hip, the head top's slot, R shoulder, L elbow (of the 49)
    kp[0, gt[:3], 3] = 0
    kp[1, gt[3:]] = 0
    kp[2, :, 3] = 0
    result, pred = run(root, bodies, name, [{**batch, "keypoints3d": kp}])
    s24 = spin_s24(DATASETS[name].npz_path(root))[:3]
    s24[0, [SPIN_GLOBAL_IDX[MMH_H36M_KEYPOINTS.index(n)] for n in ("right_ankle", "left_hip_extra", "headtop")], 3] = 0
    s24[1, [SPIN_GLOBAL_IDX[MMH_H36M_KEYPOINTS.index(n)] for n in ("right_shoulder", "left_elbow")]] = 0
    s24[2, :, 3] = 0
    ref = reference(pred, s24, joints)
    for k in ("mpjpe", "pa_mpjpe"):  # every joint counts, a missing one at its stored coordinates
        np.testing.assert_allclose(result.per_sample[k].numpy(), ref[k], rtol=0, atol=1e-4, err_msg=k)
    full = reference(pred, spin_s24(DATASETS[name].npz_path(root))[:3], joints)
    assert abs(ref["mpjpe"][1] - full["mpjpe"][1]) > 1  # the zeroed joints did change sample 1
    np.testing.assert_allclose(ref["mpjpe"][0], full["mpjpe"][0], atol=1e-9)  # confidence alone changes nothing
    if joints == 14:
        return
    mask = ref["mask"]
    assert mask.sum(-1).tolist() == [14, 15, 0]
    for k in ("3dpck", "pa_3dpck"):
        got = result.per_sample[k].numpy()
        np.testing.assert_array_equal(got[:2], 100 * (ref[k] & mask).sum(-1)[:2] / mask.sum(-1)[:2], err_msg=k)
        assert np.isnan(got[2])  # nothing to count
        assert result.metrics[k] == pytest.approx(mmh_pck(ref[k], mask), rel=1e-6)
    for k in ("3dauc", "pa_3dauc"):
        assert result.metrics[k] == pytest.approx(mmh_auc(ref[k], mask), rel=1e-6)


def test_mmhuman3d_files_store_the_head_joints_where_spin_files_do_not(root):
    """The joint maps: applied to a HumanData file's 24 ground-truth joints as they read back, SPIN's
    J24_TO_J17 would take the H36M head (mmhuman3d 'head_extra') where eval.py takes the head top."""
    from spin_fast.constants import H36M_HUMANDATA_COLUMNS, HUMANDATA_J24_TO_J17, J24_TO_J17
    from spin_fast.data.humandata import HumanData

    assert H36M_HUMANDATA_COLUMNS == [MMH_HUMAN_DATA_INDEX[n] for n in MMH_H36M_KEYPOINTS]
    assert J24_TO_J17 == SPIN_J24_TO_J17
    hd = HumanData(DATASETS["mpi-inf-3dhp"].npz_path(root))
    ours = hd.keypoints3d(np.arange(len(hd)))[:, 25:][:, HUMANDATA_J24_TO_J17]
    spins = spin_s24(DATASETS["mpi-inf-3dhp"].npz_path(root))[:, SPIN_J24_TO_J17]
    np.testing.assert_array_equal(ours, spins.astype(np.float32))
    assert not np.allclose(hd.keypoints3d(0)[0, 25:][J24_TO_J17], spins[0])


# --- the command line --------------------------------------------------------------------------------
def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "SPIN_FAST_DATA_ROOT"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def test_all_test_sets_from_the_command_line_without_a_data_root(root, tmp_path):
    """`--dataset all` with no data root: the stand-in in the cache (here the module's small render under
    the default stand-in's marker, so no default-size render is made) gives one table of the four test
    sets, each beside the mean pose; --out holds the same numbers, the work dir's TensorBoard events
    every one of them at the checkpoint's step, --histogram a panel per test set and metric."""
    from spin_fast.data.synth import MARKER, PER_DATASET, _marker
    from spin_fast.model import HMR

    data = tmp_path / "cache" / "synthetic" / "data"
    data.mkdir(parents=True)
    for entry in root.root.iterdir():
        if entry.name != MARKER:
            (data / entry.name).symlink_to(entry)
    (data / MARKER).write_text(_marker(1, 0, PER_DATASET))
    torch.manual_seed(0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"meta": {"step": 5}, "state_dict": HMR("resnet18", mean_params=root.mean_params).state_dict()},
               run / "checkpoints" / "latest.pth")
    out, png = tmp_path / "all.json", tmp_path / "all.png"
    proc = subprocess.run([sys.executable, "-m", "spin_fast.evaluate", "--work-dir", str(run), "--dataset", "all",
                           "--batch-size", "8", "--loader", "reference", "--threads", "1", "--out", str(out),
                           "--histogram", str(png)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=_env(SPIN_FAST_CACHE=str(tmp_path / "cache")), timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["dataset"] == "all" and report["synthetic"] and report["datasets"] == list(TEST_DATASETS)
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("dataset "))
    table = [line.split() for line in lines[head + 1:head + 9]]
    assert [(r[0], " ".join(r[2:4]) if r[2] == "mean" else r[2]) for r in table] == [
        (n, m) for n in TEST_DATASETS for m in ("checkpoint", "mean pose")]
    columns = ["mpjpe", "pa_mpjpe", "pve", "3dpck", "pa_3dpck", "3dauc", "pa_3dauc"]
    for r in table:
        res = report["results"][r[0]]
        values = r[4:11] if r[2] == "mean" else r[3:10]
        want = res["baseline"] if r[2] == "mean" else res
        assert res["num_samples"] == int(r[1])
        for k, v in zip(columns, values):
            assert v == ("-" if k not in res["units"] else f"{want[k]:.2f}"), (r, k)
    assert set(report["results"]["mpi-inf-3dhp"]["units"]) == set(columns) - {"pve"}
    assert "synthetic stand-in" in lines[head + 9]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for name, res in report["results"].items():
        for k in res["units"]:
            for tag, want in ((f"eval/{name}/{k}", res[k]), (f"eval/{name}/mean_pose_{k}", res["baseline"][k])):
                (event,) = acc.Scalars(tag)
                assert event.step == 5 and event.value == pytest.approx(want, rel=1e-6), tag
    assert len(tags) == 2 * (3 + 2 + 2 + 6)
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[1] > im.size[0]  # 13 panels, 3 a row: 5 rows


def test_unknown_name_and_missing_file_are_one_line_errors(tmp_path, synthetic_assets):
    proc = subprocess.run([sys.executable, "-m", "spin_fast.evaluate", "--mean-pose", "--dataset", "h36m"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(SPIN_FAST_CACHE=str(tmp_path)),
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "spin_fast.evaluate: error: --dataset h36m is a training set; evaluate a test set "
        "(pw3d, h36m-p1, h36m-p2, mpi-inf-3dhp, all)"]
    proc = subprocess.run([sys.executable, "-m", "spin_fast.evaluate", "--mean-pose", "--dataset", "h3.6m",
                           "--data-root", str(tmp_path / "never-read")], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(), timeout=120)  # the name is checked before the data root
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "spin_fast.evaluate: error: --dataset: unknown dataset 'h3.6m'; known: pw3d, h36m-p1, h36m-p2, "
        "mpi-inf-3dhp, all"]
    proc = subprocess.run([sys.executable, "-m", "spin_fast.evaluate", "--mean-pose", "--dataset", "mpi-inf-3dhp",
                           "--data-root", str(synthetic_assets.root)], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(), timeout=120)  # body models, no test files
    missing = synthetic_assets.root / "preprocessed_datasets" / "mpi_inf_3dhp_test.npz"
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"spin_fast.evaluate: error: {missing}: test set mpi-inf-3dhp: file does not exist")
    assert "Traceback" not in proc.stderr


def test_wrong_or_missing_test_file_names_file_key_and_dataset(root, tmp_path, synthetic_assets):
    from spin_fast.data.check import check_data_root
    from spin_fast.data.humandata import write_humandata
    from spin_fast.evaluate.__main__ import main

    data = tmp_path / "data"
    data.mkdir()
    for name in ("body_models", synthetic_assets.gmm.name):
        (data / name).symlink_to(synthetic_assets.root / name)
    args = ["--mean-pose", "--data-root", str(data), "--loader", "reference", "--threads", "0"]
    p1 = data / "preprocessed_datasets" / "h36m_valid_protocol1.npz"
    with pytest.raises(HumanDataError, match=f"^{re.escape(str(p1))}: test set h36m-p1: file does not exist$"):
        main(args + ["--dataset", "h36m-p1"])
    n = 2
    kp = np.zeros((n, 190, 4), np.float32)
    write_humandata(p1, image_path=["a.jpg", "b.jpg"], bbox_xywh=np.ones((n, 4)), keypoints2d=kp[..., :3])
    with pytest.raises(HumanDataError, match=f"^{re.escape(str(p1))}: key 'keypoints3d': test set h36m-p1 is "
                                             "scored on the 3D joints; the file has none"):
        main(args + ["--dataset", "h36m-p1"])
    cols = [MMH_HUMAN_DATA_INDEX[n] for n in MMH_H36M_KEYPOINTS if n != "headtop"]  # a 16-joint convention
    mask = np.zeros(190, np.uint8)
    mask[cols] = 1
    tdhp = data / "preprocessed_datasets" / "mpi_inf_3dhp_test.npz"
    write_humandata(tdhp, image_path=["a.jpg", "b.jpg"], bbox_xywh=np.ones((n, 4)), keypoints3d=kp,
                    keypoints_mask=mask)
    with pytest.raises(HumanDataError, match=rf"^{re.escape(str(tdhp))}: key 'keypoints3d_mask': test set "
                                             r"mpi-inf-3dhp: the evaluation joints \['Top of Head \(LSP\)'\] are "
                                             r"not in the file$"):
        main(args + ["--dataset", "mpi-inf-3dhp"])
    reports = {r.name: r for r in check_data_root(data, ["h36m-p1", "mpi-inf-3dhp"])}
    assert "key 'keypoints3d'" in reports["h36m-p1"].errors[0]
    assert "key 'keypoints3d_mask'" in reports["mpi-inf-3dhp"].errors[0]
    write_humandata(data / "preprocessed_datasets" / "spin_pw3d_test.npz", image_path=["a.jpg"],
                    bbox_xywh=np.ones((1, 4)), keypoints3d=kp[:1])
    with pytest.raises(HumanDataError, match="spin_pw3d_test.npz: key 'smpl': test set pw3d is scored on the "
                                             "gendered SMPL ground truth"):
        main(args)


# --- the synthetic test splits ------------------------------------------------------------------------
def test_synthetic_test_splits_are_in_the_converters_format(root, bodies):
    """Human3.6M: no SMPL, 17 masked columns, p2 = p1's frontal camera (the same images and labels),
    pelvis-centred 3D joints = the stand-in's H36M joints of a body whose 2D joints are the 3D ones
    projected; MPI-INF-3DHP: every joint inside its image; `data check` passes them."""
    from spin_fast.data.check import check_data_root
    from spin_fast.data.humandata import HumanData

    p1, p2 = (HumanData(DATASETS[n].npz_path(root)) for n in ("h36m-p1", "h36m-p2"))
    assert (len(p1), len(p2)) == (8, 2)
    assert p1.image_path[0] == "S9/images/S9_Directions_1.54138969/S9_Directions_1.54138969_000001.jpg"
    front = np.array([".60457274_" in p for p in p1.image_path])
    assert p2.image_path.tolist() == p1.image_path[front].tolist()
    np.testing.assert_array_equal(p2.keypoints3d(np.arange(2)), p1.keypoints3d(np.nonzero(front)[0]))
    for name in KEYPOINT_SETS:
        with np.load(DATASETS[name].npz_path(root), allow_pickle=True) as z:
            assert "smpl" not in z and "has_smpl" not in z and "meta" not in z
            assert z["keypoints3d_mask"].sum() == z["keypoints2d_mask"].sum() == 17
            assert z["keypoints3d"].shape[1:] == (17, 4) and z["keypoints2d"].shape[1:] == (17, 3)
            assert (z["keypoints3d"][..., 3] == 1).all() and (z["keypoints2d"][..., 2] == 1).all()
        hd = HumanData(DATASETS[name].npz_path(root))
        kp3 = hd.keypoints3d(np.arange(len(hd)))
        np.testing.assert_array_equal(kp3[:, 39, :3], 0)  # pelvis-centred
        assert not hd.has_smpl.any() and hd.gender is None
        lengths = np.linalg.norm(kp3[:, 26, :3] - kp3[:, 25, :3], axis=-1)  # R shin: the same body seen 4 times
        if name == "h36m-p1":
            np.testing.assert_allclose(lengths.reshape(2, 4), lengths.reshape(2, 4)[:, :1].repeat(4, 1), rtol=1e-5)
        if name == "mpi-inf-3dhp":
            from PIL import Image

            for i in range(len(hd)):
                with Image.open(DATASETS[name].image_root(root) / hd.image_path[i]) as im:
                    uv = hd.keypoints2d(i)[0][hd.keypoints2d(i)[0][:, 2] > 0, :2]
                    assert ((uv >= 0) & (uv < im.size)).all()
    reports = check_data_root(root.root, list(TEST_DATASETS))
    assert all(r.ok for r in reports), [r.errors + r.missing for r in reports]


KEYPOINT_SETS = ("h36m-p1", "h36m-p2", "mpi-inf-3dhp")


def test_an_older_stand_in_is_extended_to_a_fresh_one(synthetic_data, synthetic_assets, tmp_path):
    """A stand-in of format 2 (no Human3.6M / MPI-INF-3DHP test splits) gets them, rendered as a fresh
    stand-in renders them; its other files are left alone; a current one is left alone altogether."""
    from spin_fast.config import AssetPaths
    from spin_fast.data.synth import MARKER, _marker, ensure_synthetic_dataset, write_synthetic_datasets

    old = AssetPaths(tmp_path / "data")
    old.root.mkdir()
    for name in ("body_models", synthetic_assets.gmm.name):
        (old.root / name).symlink_to(synthetic_assets.root / name)
    write_synthetic_datasets(old.root, per_dataset=2, names=TRAIN_DATASETS + ("pw3d",))
    (old.root / MARKER).write_text(_marker(1, 0, 2, version=2))
    before = {n: DATASETS[n].npz_path(old).stat().st_mtime_ns for n in TRAIN_DATASETS + ("pw3d",)}
    ensure_synthetic_dataset(old.root, announce=False, per_dataset=2)
    assert (old.root / MARKER).read_text() == _marker(1, 0, 2)
    assert before == {n: DATASETS[n].npz_path(old).stat().st_mtime_ns for n in before}
    fresh = synthetic_data(per_dataset=2)
    for name in KEYPOINT_SETS + ("pw3d",):
        with np.load(DATASETS[name].npz_path(old), allow_pickle=True) as a, \
                np.load(DATASETS[name].npz_path(fresh), allow_pickle=True) as b:
            assert sorted(a) == sorted(b)
            for k in a:
                if k != "config" and a[k].dtype != object:
                    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
    ensure_synthetic_dataset(old.root, announce=False, per_dataset=2)  # current: nothing rendered
    assert before == {n: DATASETS[n].npz_path(old).stat().st_mtime_ns for n in before}
