"""What a training run shows: TensorBoard scalars and images read back with tensorboard's own event
reader, loss_curve.png's panels, and the progress lines on a non-terminal stderr."""
import csv
import re

import numpy as np
import pytest
import torch

from spin_fast.train.monitor import LOSS_TERMS, TAGS
from test_train import small_config

SCALAR_TAGS = {"loss/total", *(f"loss/{t}" for t in LOSS_TERMS), "train/lr", "train/images_per_s",
               "time/data_ms", "time/forward_ms", "time/smplify_ms", "time/backward_ms", "time/smplify_fit_ms",
               "time/network_ms", "time/fits_ms", "fits/valid_fraction", "smplify/final_loss"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_data):
    """A 2-step run (training images at step 2) on the session's synthetic data root; its stderr captured."""
    import contextlib
    import io

    from spin_fast.train.loop import train

    tmp = tmp_path_factory.mktemp("monitor")
    # the tests' small run, at the preset's lr and the full 224 input as this run always had
    cfg = small_config(synthetic_data().root, tmp / "run", max_steps=2, image_every=2,
                       **{"smplify.stage1_iters": 2, "smplify.stage2_iters": 2, "optim.lr": "3e-5",
                          "model.input_res": "none"})
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = train(cfg)
    return tmp / "run", result, err.getvalue()


def test_event_file_holds_every_scalar_tag_and_the_training_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work_dir, result, _ = run
    events = list(work_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(work_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert SCALAR_TAGS <= tags, SCALAR_TAGS - tags
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2]
    # the event file holds the numbers of log.csv
    with open(work_dir / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    inverse = {tag: col for col, tag in TAGS.items()}
    for tag in SCALAR_TAGS:
        logged = [e.value for e in acc.Scalars(tag)]
        assert logged == pytest.approx([float(r[inverse[tag]]) for r in rows], rel=1e-6), tag
    assert acc.Scalars("loss/total")[-1].value == pytest.approx(result["loss"], rel=1e-6)
    assert all(e.value > 0 for e in acc.Scalars("time/smplify_fit_ms"))
    # the split the progress shows adds up to the timed phases
    for r in rows:
        parts = sum(float(r[f"{p}_ms"]) for p in ("data", "network", "smplify_fit", "fits"))
        whole = sum(float(r[f"{p}_ms"]) for p in ("data", "forward", "backward"))
        assert parts == pytest.approx(whole, rel=1e-6)
        assert float(r["smplify_fit_ms"]) <= float(r["smplify_ms"]) <= float(r["forward_ms"])
    # crops | prediction | fit, 4 samples of 224 px, at step 2 only
    images = acc.Images("train/crops")
    assert [e.step for e in images] == [2]
    assert (images[0].height, images[0].width) == (4 * 224, 3 * 224)


def test_training_image_draws_the_meshes_over_the_crop(run):
    """The prediction and fit columns differ from the bare crop where the mesh is drawn, and only there."""
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run[0]), size_guidance={"images": 0})
    acc.Reload()
    img = np.asarray(Image.open(io.BytesIO(acc.Images("train/crops")[0].encoded_image_string)).convert("RGB"))
    crop, pred, fit = (img[:224, k * 224:(k + 1) * 224].astype(int) for k in range(3))
    for drawn in (pred, fit):
        changed = np.abs(drawn - crop).max(-1) > 30
        assert 0.002 < changed.mean() < 0.9


def test_loss_curve_png_has_a_panel_per_term_total_and_lr(run):
    from PIL import Image

    from spin_fast.plots import loss_curve_figure, read_log_csv

    work_dir = run[0]
    png = Image.open(work_dir / "loss_curve.png")
    assert png.format == "PNG" and png.size[0] > 1000
    pixels = np.asarray(png.convert("L"))
    assert (pixels < 128).mean() > 0.01  # axes, labels and curves, not a blank page
    rows = read_log_csv(work_dir / "log.csv")
    steps = [int(r["step"]) for r in rows]
    fig = loss_curve_figure(steps, {"total": [float(r["loss"]) for r in rows],
                                    **{t: [float(r[t]) for r in rows] for t in LOSS_TERMS}},
                            [float(r["lr"]) for r in rows])
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["total", *LOSS_TERMS, "learning rate"]
    assert all(a.get_xlabel() == "step" and a.get_ylabel() for a in axes)
    assert list(axes[0].get_lines()[0].get_xdata()) == steps


def test_loss_curve_marks_lr_changes_and_uses_log_y_for_wide_ranges():
    from spin_fast.plots import loss_curve_figure

    steps = list(range(1, 11))
    fig = loss_curve_figure(steps, {"total": [10.0 ** -k for k in range(10)], "camera": [1.0 + 0.1 * k for k in range(10)]},
                            [1e-4] * 5 + [1e-5] * 5)
    total, camera, lr = fig.get_axes()
    assert total.get_yscale() == "log" and camera.get_yscale() == "linear" and lr.get_yscale() == "log"
    for ax in (total, camera, lr):  # the lr drop at step 6 is a vertical line in every panel
        assert any(list(line.get_xdata()) == [6, 6] for line in ax.get_lines()[1:])


def test_progress_lines_on_a_non_terminal_stderr(run):
    err = run[2]
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("train: ")]
    # from step 1: count, ETA, img/s and the phase split of the step
    assert [ln.split(" |")[0] for ln in lines] == ["train: 1/2 steps (50%)", "train: 2/2 steps (100%)"]
    for ln in lines:
        assert re.search(r"elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d \| [\d.]+ img/s \| data \d+ ms  network \d+ ms"
                         r"  SMPLify \d+ ms  fits \d+ ms \| loss [\d.e+-]+", ln), ln


def test_fit_in_loop_times_the_smplify_call_and_returns_its_result():
    """fit_in_loop times the fitter's call as phase 'smplify_fit' and hands its result back in the
    Selection (the step logs SMPLify's own loss from it); joint_loss scores the stored fits."""
    from spin_fast.smplify import FitsStore, SMPLifyResult
    from spin_fast.smplify.in_loop import fit_in_loop
    from spin_fast.train.timing import PhaseTimer

    B = 3

    class Body:
        def joints_only(self, betas, body_pose, orient, joint_set):
            return torch.randn(betas.shape[0], 49, 3) + torch.tensor([0.0, 0.0, 40.0])

    class Fitter:
        flavor = "mmhuman3d"

        def __call__(self, pose, betas, cam, kp):
            z = torch.zeros(B)
            return SMPLifyResult(pose, betas, cam, torch.full((B, 49), 0.01), z, z == 0, z.long().sum(),
                                 torch.zeros(B, 2, dtype=torch.long))

        def joint_loss(self, pose, *rest):
            return torch.full((B, 49), 1.0)

    batch = {"dataset_id": torch.zeros(B, dtype=torch.long), "sample_index": torch.arange(B),
             "flip": torch.zeros(B, dtype=torch.bool), "rot_deg": torch.zeros(B),
             "keypoints2d": torch.cat([100 * torch.rand(B, 49, 2), torch.ones(B, 49, 1)], -1),
             "pose": torch.zeros(B, 72), "betas": torch.zeros(B, 10), "has_smpl": torch.zeros(B, dtype=torch.bool)}
    timer = PhaseTimer()
    sel = fit_in_loop(Body(), Fitter(), FitsStore.filled({"d": B}), batch, torch.zeros(B, 72), torch.zeros(B, 10),
                      torch.tensor([[0.0, 0.0, 40.0]]).repeat(B, 1), timer=timer)
    assert set(timer.read()) == {"smplify_fit"}
    assert torch.equal(sel.smplify.joint_loss, torch.full((B, 49), 0.01)) and sel.updated.all()
