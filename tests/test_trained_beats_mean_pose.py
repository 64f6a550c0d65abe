"""A model trained for a few hundred steps on the synthetic stand-in scores a better PA-MPJPE on
the synthetic 3DPW-format split than the mean-pose prediction, through the user-facing commands.

Measured 2026-11-28 (2 CPU cores): trained 147.38 mm vs mean pose 160.36 mm PA-MPJPE, ~7 minutes. The
run weights the OpenPose 2D joints by 1 (the synthetic labels for them are exact); with the mmhuman3d
preset's 0 the same 600 steps scored 159.97 mm, too close to the mean pose for a test.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args, env):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_trained_model_beats_mean_pose_on_synthetic_3dpw(tmp_path):
    env = {**os.environ, "SPIN_FAST_CACHE": str(tmp_path / "cache")}
    env.pop("SPIN_FAST_DATA_ROOT", None)
    work = tmp_path / "run"
    # the synthetic demo settings (resnet18, no data root), 4x the default dataset size, 600 steps
    _run(["spin_fast.train", "--work-dir", str(work), "--data.synthetic_scale", "4", "--max-steps", "600",
          "--batch-size", "16", "--optim.lr", "1e-4", "--smplify.stage1_iters", "5", "--smplify.stage2_iters", "5",
          "--log_every", "50", "--ckpt_every", "600", "--loss.openpose_2d", "1.0"], env)
    ckpt = work / "checkpoints" / "latest.pth"
    _run(["spin_fast.evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "trained.json")], env)
    _run(["spin_fast.evaluate", "--mean-pose", "--out", str(tmp_path / "mean.json")], env)
    trained = json.loads((tmp_path / "trained.json").read_text())
    mean = json.loads((tmp_path / "mean.json").read_text())
    assert trained["synthetic"] and mean["synthetic"] and trained["num_samples"] == mean["num_samples"] > 0
    print(f"PA-MPJPE trained {trained['pa_mpjpe']:.2f} mm, mean pose {mean['pa_mpjpe']:.2f} mm; "
          f"MPJPE {trained['mpjpe']:.2f} / {mean['mpjpe']:.2f} mm")  # shown with pytest -s or -rP
    assert trained["pa_mpjpe"] < mean["pa_mpjpe"], (trained["pa_mpjpe"], mean["pa_mpjpe"])
