"""A model trained on the synthetic stand-in beats the mean pose on the synthetic 3DPW split in MPJPE,
PA-MPJPE and PVE, through the user-facing commands: `spin_fast.train` with no data root (the demo's
settings: ResNet-18 at a 64-pixel input, batch 32, lr 3e-4, no rotation or flip augmentation) for STEPS steps,
then `spin_fast.evaluate`, whose report scores the mean pose on the same samples. On the session's
stand-in (the files the synthetic default writes, rendered once for the whole test run; its static fits
are SMPLify's, the same bytes under any thread count).

80 steps of the demo's own settings leave PA-MPJPE (the articulation left after a Procrustes alignment)
above the mean pose's (166.09 and 169.82 mm with seeds 0 and 1, against 160.36); so the run here changes
what decides it (OVERRIDES): the SMPL pose loss at 30 instead of 3 (the network learns the articulation
from the static fits sooner), lr 0.1x after 50 of the 80 steps (the last steps settle instead of
swinging), SMPLify 5 + 5 in the loop (its fits replace no static fit this early). Measured with seeds
0-3: PA-MPJPE 142.70-147.62 mm against the mean pose's 160.36 (12.7-17.7 mm below), MPJPE 256-270 against
340.86, PVE 232-247 against 309.68; about 47 s on 2 cores, the session's stand-in (about 15 s) apart.
Two threads, set here, so the run's own rounding does not depend on the runner.
"""
import json

import pytest
import torch

STEPS = 80
OVERRIDES = ["--loss.pose", "30", "--optim.samples_per_epoch", str(50 * 32), "--optim.lr_decay", "0.1",
             "--smplify.stage1_iters", "5", "--smplify.stage2_iters", "5"]


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
                      "--image_every", "0", *OVERRIDES]) == 0
        evaluate(["--checkpoint", str(work / "checkpoints" / "latest.pth"), "--out", str(tmp_path / "eval.json")])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "eval.json").read_text())
    trained, mean = report, report["baseline"]
    assert report["synthetic"] and report["num_samples"] > 0 and report["backbone"] == "resnet18"
    numbers = (f"trained / mean pose: MPJPE {trained['mpjpe']:.2f} / {mean['mpjpe']:.2f} mm, PA-MPJPE "
               f"{trained['pa_mpjpe']:.2f} / {mean['pa_mpjpe']:.2f} mm, PVE {trained['pve']:.2f} / {mean['pve']:.2f} mm")
    print(numbers)  # shown with pytest -s
    assert trained["mpjpe"] < mean["mpjpe"] and trained["pve"] < mean["pve"], numbers
    assert trained["pa_mpjpe"] < mean["pa_mpjpe"], numbers
