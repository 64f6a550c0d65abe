"""The synthetic stand-in's static fits are SMPLify fits of its own keypoints, as real static fits are,
not the truth plus noise: the manifest states their quality, the file is what `spin_fast.fit --init mean`
writes, and SMPLify in the loop from a better start replaces them (and the fits' distance to the truth,
as the trainer logs it, falls)."""
import json

import numpy as np
import pytest
import torch

from spin_fast.config import AssetPaths
from spin_fast.data.augment import AugParams
from spin_fast.data.batch import Sources, assemble_labels, make_plan
from spin_fast.data.datasets import DATASETS, TRAIN_DATASETS
from spin_fast.data.synth import MANIFEST, STATIC_FIT_PRESET
from spin_fast.fit.run import FitConfig, fit_dataset

N = 8  # samples a dataset


@pytest.fixture(scope="module")
def root(synthetic_data):
    return synthetic_data(per_dataset=N, names=TRAIN_DATASETS)


@pytest.fixture(scope="module")
def body(root):
    from spin_fast.body import BodyModel

    return BodyModel.from_paths(root)


def _procrustes_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-sample PA-MPJPE (mm) of (N, J, 3) joints in metres, written out with numpy: the similarity
    transform (scale, rotation, translation) of pred that best fits gt in least squares (Umeyama)."""
    out = []
    for p, g in zip(pred.astype(np.float64), gt.astype(np.float64)):
        mp, mg = p.mean(0), g.mean(0)
        p0, g0 = p - mp, g - mg
        U, S, Vt = np.linalg.svd(g0.T @ p0)
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
        R = U @ D @ Vt
        s = np.trace(np.diag(S) @ D) / (p0 ** 2).sum()
        out.append(1000 * np.linalg.norm(s * p0 @ R.T - g0, axis=1).mean())
    return np.asarray(out)


def _j14(body, fits: np.ndarray) -> np.ndarray:
    from spin_fast.constants import H36M_TO_J14

    f = torch.as_tensor(np.asarray(fits), dtype=torch.float32)
    with torch.no_grad():
        j = body.joints_only(f[:, 72:], f[:, 3:72], f[:, :3], joint_set="h36m_17")
    return j[:, list(H36M_TO_J14)].numpy()


def test_the_manifest_states_the_quality_of_smplify_fits(root, body, tmp_path):
    from spin_fast.data.humandata import HumanData, load_static_fits

    manifest = json.loads((root.root / MANIFEST).read_text())
    assert set(manifest["static_fits"]) == set(TRAIN_DATASETS)
    for name in TRAIN_DATASETS:
        entry = manifest["static_fits"][name]
        report = json.loads(DATASETS[name].fits_path(root).with_suffix(".report.json").read_text())
        assert entry["samples"] == N and entry["init"] == "mean" and entry["preset"] == STATIC_FIT_PRESET
        assert entry["reprojection_px"] == pytest.approx(np.mean(report["per_sample"]["reprojection_px"]))
        data = HumanData(DATASETS[name].npz_path(root))
        has = np.asarray(data.has_smpl, bool)
        assert ("pa_mpjpe_to_truth_mm" in entry) == bool(has.any())
        if has.any():
            fits = load_static_fits(DATASETS[name].fits_path(root), N)
            truth = np.concatenate([data.pose, data.betas], 1)
            pa = _procrustes_mm(_j14(body, fits[has]), _j14(body, truth[has]))
            print(f"{name}: static fits {entry['reprojection_px']:.2f} px, PA-MPJPE to the truth {pa.mean():.2f} mm "
                  f"(manifest {entry['pa_mpjpe_to_truth_mm']:.2f}) over {has.sum()} samples")
            assert entry["pa_mpjpe_to_truth_mm"] == pytest.approx(pa.mean(), abs=0.05)
            assert entry["with_smpl"] == has.sum()

    # the file is SMPLify's fit from the mean pose: fitting again writes the same rows
    name = "h36m"
    again = fit_dataset(Sources.from_registry(root, [name]), root, FitConfig(name, STATIC_FIT_PRESET, init="mean"),
                        tmp_path / "again.npy", progress=False)
    stored = load_static_fits(DATASETS[name].fits_path(root), N)
    np.testing.assert_allclose(again.fits, stored, atol=2e-4)
    assert again.report["mean_reprojection_px"] == pytest.approx(manifest["static_fits"][name]["reprojection_px"],
                                                                  abs=1e-3)


def test_a_fit_from_a_better_start_replaces_the_static_fit(root, body):
    """One in-loop fit started from the truth (a network better than the static fits) replaces the
    stored fits, and the fits' PA-MPJPE to the truth the trainer logs falls; FitsTruth's number is the
    numpy Procrustes of the same joints."""
    from spin_fast.recipes import recipe, smplify_kwargs
    from spin_fast.smplify import FitsStore, SMPLify
    from spin_fast.smplify.camera import estimate_camera_translation
    from spin_fast.smplify.in_loop import fit_in_loop, loop_rules
    from spin_fast.train.fit_truth import FitsTruth

    sources = Sources.from_registry(root, ["h36m"])
    fits = FitsStore.from_static_fits(root, ["h36m"], sizes={"h36m": N})
    truth = FitsTruth.from_sources(sources, body)
    assert len(truth) == N
    before = truth.pa_mpjpe(fits)
    gt = np.concatenate([sources.data[0].pose, sources.data[0].betas], 1)
    reference = _procrustes_mm(_j14(body, fits.table("h36m").numpy()), _j14(body, gt)).mean()
    assert before == pytest.approx(reference, abs=0.05)

    plan = make_plan(sources, 0, np.zeros(N, np.int64), np.arange(N), AugParams.identity(N), geometry="spin")
    batch = assemble_labels(sources, plan)
    start = torch.cat([batch["pose"], batch["betas"]], 1).float()
    with torch.no_grad():
        joints = body.joints_only(start[:, 72:], start[:, 3:72], start[:, :3], joint_set="smpl_49")
    cam = estimate_camera_translation(joints, batch["keypoints2d"].float()).translation
    rec = recipe("spin").smplify
    fitter = SMPLify(body, gmm_path=root.gmm, **smplify_kwargs(rec))
    sel = fit_in_loop(body, fitter, fits, batch, start[:, :72], start[:, 72:], cam, **loop_rules(rec))
    after = truth.pa_mpjpe(fits)
    print(f"in-loop fit from the truth: {int(sel.updated.sum())} of {N} static fits replaced; fits' PA-MPJPE to the "
          f"truth {before:.2f} -> {after:.2f} mm")
    assert int(sel.updated.sum()) >= N // 2
    assert after < before


@pytest.mark.parametrize("threads", [1, 2, 3])  # one of them differs from the session's own count
def test_the_static_fits_do_not_depend_on_the_thread_count(synthetic_data, tmp_path, threads):
    """The stand-in's static fits are the same bytes whatever the process's torch thread count (the
    session's were written under its own): a fit under another count differs in the last bits, and those
    grow into a different training run. At the default size (at 8 samples a set the counts agree anyway),
    lsp alone (its static fits are written as in the whole stand-in's rendering)."""
    from spin_fast.data.synth import write_static_fits_by_smplify

    root = synthetic_data(names=["lsp"])
    copy = AssetPaths(tmp_path / "data")
    copy.root.mkdir()
    for entry in root.root.iterdir():
        if entry.name not in ("static_fits", MANIFEST):
            (copy.root / entry.name).symlink_to(entry)
    fits = DATASETS["lsp"].fits
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        write_static_fits_by_smplify(copy, ["lsp"], model_paths=root)
        assert torch.get_num_threads() == threads  # the caller's count is given back
    finally:
        torch.set_num_threads(n)
    assert copy.static_fits(fits).read_bytes() == root.static_fits(fits).read_bytes()
