"""A model trained on the synthetic stand-in beats the mean pose on the synthetic 3DPW split in MPJPE,
PA-MPJPE and PVE, through the user-facing commands: `spin_fast.train` with no data root (the demo's
settings: ResNet-18 at a 64-pixel input, batch 32, lr 3e-4, no rotation augmentation, SMPLify 10 + 10
in the loop), cut to STEPS steps, then `spin_fast.evaluate`, whose report scores the mean pose on the
same samples. On the session's stand-in (the files the synthetic default writes, rendered once for the
whole test run; its static fits are SMPLify's).

Two threads, set here: the run is then the same wherever the suite runs (a different thread count
changes the rounding of the reductions, and a few hundred Adam steps carry that into the weights).
"""
import json

import pytest
import torch

STEPS = 100


@pytest.mark.slow
def test_trained_model_beats_mean_pose_on_synthetic_3dpw(synthetic_data, tmp_path, monkeypatch):
    from spin_fast.evaluate.__main__ import main as evaluate
    from spin_fast.train.__main__ import main as train

    # the synthetic default's data root is $SPIN_FAST_CACHE/synthetic/data: the session's stand-in
    cache = tmp_path / "cache"
    (cache / "synthetic").mkdir(parents=True)
    (cache / "synthetic" / "data").symlink_to(synthetic_data().root)
    monkeypatch.setenv("SPIN_FAST_CACHE", str(cache))
    monkeypatch.delenv("SPIN_FAST_DATA_ROOT", raising=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        work = tmp_path / "run"
        assert train(["--work-dir", str(work), "--max-steps", str(STEPS), "--ckpt_every", str(STEPS),
                      "--image_every", "0"]) == 0
        evaluate(["--checkpoint", str(work / "checkpoints" / "latest.pth"), "--out", str(tmp_path / "eval.json")])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "eval.json").read_text())
    trained, mean = report, report["baseline"]
    assert report["synthetic"] and report["num_samples"] > 0 and report["backbone"] == "resnet18"
    numbers = (f"trained / mean pose: MPJPE {trained['mpjpe']:.2f} / {mean['mpjpe']:.2f} mm, PA-MPJPE "
               f"{trained['pa_mpjpe']:.2f} / {mean['pa_mpjpe']:.2f} mm, PVE {trained['pve']:.2f} / {mean['pve']:.2f} mm")
    print(numbers)  # shown with pytest -s
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        assert trained[k] < mean[k], numbers
