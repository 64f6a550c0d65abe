"""`python -m spin_fast.evaluate.record RUN`: every kept checkpoint scored beside the mean pose, the fits'
columns of log.csv, a JSON record and a figure; and the trainer's fits/pa_mpjpe_to_truth column."""
import csv
import json

import numpy as np
import pytest

from test_train import small_config


@pytest.fixture(scope="module")
def run(synthetic_data, tmp_path_factory):
    """A 2-step run on the stand-in with a checkpoint at each step (all kept)."""
    from spin_fast.train.loop import train

    root = synthetic_data().root
    work = tmp_path_factory.mktemp("record") / "run"
    train(small_config(root, work, max_steps=2, ckpt_every=1, keep_checkpoints=0))
    return root, work


def test_the_record_scores_every_checkpoint_beside_the_mean_pose(run, tmp_path):
    from spin_fast.evaluate.__main__ import main as evaluate
    from spin_fast.evaluate.record import main as record

    root, work = run
    png, out = tmp_path / "record.png", tmp_path / "record.json"
    assert record([str(work), "--data-root", str(root), "--png", str(png), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert [e["step"] for e in rec["evaluations"]] == [1, 2]
    # each entry is what evaluate reports for that checkpoint; the mean pose is evaluate --mean-pose's
    direct = evaluate(["--checkpoint", str(work / "checkpoints" / "step_0000002.pth"), "--data-root", str(root),
                       "--no-baseline", "--out", str(tmp_path / "direct.json")])
    mean = evaluate(["--mean-pose", "--data-root", str(root), "--out", str(tmp_path / "mean.json")])
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        assert rec["evaluations"][1][k] == pytest.approx(direct[k], rel=1e-6)
        assert rec["summary"]["mean_pose"][k] == pytest.approx(mean[k], rel=1e-6)
        assert rec["summary"]["final_over_mean_pose"][k] == pytest.approx(direct[k] / mean[k], rel=1e-6)
    assert rec["summary"]["synthetic"] is True
    # the fits' series are log.csv's columns
    with open(work / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rec["fits"]["step"] == [int(r["step"]) for r in rows]
    assert rec["fits"]["updated_fraction"] == [float(r["fit_updated"]) for r in rows]
    assert rec["fits"]["pa_mpjpe_to_truth"] == [float(r["fits_pa_mpjpe"]) for r in rows]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_logged_fits_distance_is_the_stores(run, synthetic_data):
    """fits_pa_mpjpe at the last step is FitsTruth's score of the checkpoint's fits store."""
    import torch

    from spin_fast.body import BodyModel
    from spin_fast.data.batch import Sources
    from spin_fast.smplify import FitsStore
    from spin_fast.train.fit_truth import FitsTruth

    root, work = run
    with open(work / "log.csv", newline="") as fh:
        last = list(csv.DictReader(fh))[-1]
    ckpt = torch.load(work / "checkpoints" / "step_0000002.pth", map_location="cpu", weights_only=True)
    fits = FitsStore.from_state_dict(ckpt["fits"])
    paths = synthetic_data()
    truth = FitsTruth.from_sources(Sources.from_registry(paths, fits.names), BodyModel.from_paths(paths))
    assert np.isfinite(float(last["fits_pa_mpjpe"]))
    assert float(last["fits_pa_mpjpe"]) == pytest.approx(truth.pa_mpjpe(fits), rel=1e-5)
