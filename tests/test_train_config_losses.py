"""Training config (file + flags + validation), SPIN losses against hand-worked numbers, checkpoints."""
import math
import random

import numpy as np
import pytest
import torch

from spin_fast.train import losses as L
from spin_fast.atomic import atomic_torch_save
from spin_fast.train.checkpoint import rng_state, set_rng_state
from spin_fast.train.config import DEMO_OVERRIDES, ConfigError, LossConfig, TrainConfig, build_config, from_dict, resolve, to_dict
from spin_fast.train.__main__ import main as train_main


# --- config ------------------------------------------------------------------------------------------
def test_precedence_defaults_demo_file_flags(tmp_path):
    cfg = build_config(overrides={"data.root": "/x"})
    assert not cfg.demo and cfg.model.backbone == "resnet50" and cfg.optim.lr == 3e-5
    demo = build_config(overrides={})
    assert demo.demo and demo.model.backbone == "resnet18" and demo.max_steps == DEMO_OVERRIDES["max_steps"]
    assert demo.model.input_res == 64 and demo.data.rot_prob == 0.0 and demo.data.batch_size == 32
    assert demo.data.flip_prob == 0.0 and cfg.data.flip_prob == 0.5
    f = tmp_path / "c.yaml"
    f.write_text("data: {root: /d, batch_size: 4, mix: {h36m: 1.0}}\noptim: {lr: 1.0e-4}\nsmplify: {flavor: mmhuman3d}\n")
    cfg = build_config(str(f), {"optim.lr": "2e-4", "model.bf16": "false"})
    assert cfg.data.batch_size == 4 and cfg.data.mix == {"h36m": 1.0} and cfg.optim.lr == 2e-4
    assert cfg.model.bf16 is False and cfg.smplify.flavor == "mmhuman3d"
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"optim.lr": "fast"}, "'optim.lr' must be a number"),
    ({"optim.lr": "-1"}, "'optim.lr' must be > 0"),
    ({"data.batch_size": "2.5"}, "'data.batch_size' must be an integer"),
    ({"model.backbone": "vgg"}, "'model.backbone' must be one of"),
    ({"smplify.stage1_iters": "-3"}, "'smplify.stage1_iters' must be >= 0"),
    ({"data.rot_prob": "1.5"}, "'data.rot_prob' must be in"),
    ({"data.flip_prob": "-0.1"}, r"'data.flip_prob' must be in \[0, 1\]"),
    ({"model.input_res": "16"}, "'model.input_res' must be >= 32"),
    ({"model.bf16": "maybe"}, "'model.bf16' must be true or false"),
    ({"optim.learning_rate": "1"}, "unknown config key 'optim.learning_rate'"),
])
def test_bad_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config(overrides=overrides)


def test_bad_file_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not found"):
        build_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("optim: {lr: [1, 2}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "unknown.yaml").write_text("optim: {lrr: 1}\n")
    assert train_main(["--config", str(tmp_path / "unknown.yaml")]) == 2
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err


# --- losses ------------------------------------------------------------------------------------------
def test_camera_prior_and_param_losses_hand_worked():
    cam = torch.tensor([[0.0, 1.0, 2.0], [0.1, 0.0, 0.0]])
    assert math.isclose(L.camera_prior(cam).item(), (1.0 + math.exp(-2.0)) / 2, rel_tol=1e-6)
    rot = torch.eye(3).expand(2, 24, 3, 3).clone()
    target = torch.zeros(2, 72)
    target[0, 3] = math.pi / 2  # joint 1 rotated 90 deg about x: R - I has entries 1,1,-1,-1 -> 4 squared units
    betas = torch.tensor([[1.0] * 10, [0.0] * 10])
    betas[1] = 7.0  # sample 1 is not a valid fit: never counted
    target[1, 6] = 1.0
    valid = torch.tensor([True, False])
    # both codebases average over the valid fits only (mmhuman3d's mesh_estimator.py since 2022, SPIN)
    pose_l, beta_l = L.smpl_param_losses(rot, betas, target, torch.zeros(2, 10), valid)
    assert math.isclose(pose_l.item(), 4.0 / (24 * 9), rel_tol=1e-5)
    assert math.isclose(beta_l.item(), 1.0, rel_tol=1e-6)
    z_pose, z_beta = L.smpl_param_losses(rot, betas, target, torch.zeros(2, 10), valid & False)
    assert z_pose.item() == 0.0 and z_beta.item() == 0.0
    verts = torch.zeros(2, 5, 3)
    target_v = verts.clone()
    target_v[0, 2, 1] = 0.3
    target_v[1] = 9.0
    assert math.isclose(L.vertex_loss(verts, target_v, valid).item(), 0.3 / 15, rel_tol=1e-6)
    assert L.vertex_loss(verts, target_v, valid & False).item() == 0.0


def test_keypoint_losses_hand_worked():
    gt2d = torch.zeros(1, 49, 3)
    gt2d[0, 30] = torch.tensor([100.0, 50.0, 1.0])
    gt2d[0, 3] = torch.tensor([10.0, 20.0, 1.0])  # an OpenPose joint
    # mmhuman3d: a projection (principal point 112) at x + 0.5 lands on a label at x (its (x - 112) * 2/223
    # against 2x/223 - 1); spin: at x
    for conv, shift in (("mmhuman3d", 0.5), ("spin", 0.0)):
        pred = gt2d[..., :2] + shift
        assert L.keypoints2d_loss(pred, gt2d, 224, "mse", 1.0, conv).item() < 1e-12
        pred[0, 30, 0] += 223.0 / 2 if conv == "mmhuman3d" else 224.0 / 2  # +1.0 in normalised x
        # mmhuman3d divides by the entries of positive confidence (2 joints x 2), SPIN by all 49 x 2
        n = 4 if conv == "mmhuman3d" else 49 * 2
        assert math.isclose(L.keypoints2d_loss(pred, gt2d, 224, "mse", 1.0, conv).item(), 1.0 / n, rel_tol=1e-5)
        pred[0, 3, 1] += 30.0  # weighted by openpose_weight (0: out of mmhuman3d's count as well)
        n = 2 if conv == "mmhuman3d" else 49 * 2
        assert math.isclose(L.keypoints2d_loss(pred, gt2d, 224, "mse", 0.0, conv).item(), 1.0 / n, rel_tol=1e-5)
    gt3d = torch.zeros(2, 49, 4)
    gt3d[0, 25:, 3] = 1.0  # sample 0: the 24 GT joints; sample 1: no 3D (confidence 0)
    gt3d[:, 27, :3] = torch.tensor([-0.1, 0.0, 0.0])
    gt3d[:, 28, :3] = torch.tensor([0.1, 0.0, 0.0])
    has = torch.tensor([True, False])
    pred3d = gt3d[..., :3] + torch.tensor([5.0, -2.0, 1.0])  # a pure translation: 0 after hip centring
    for conv in ("mmhuman3d", "spin"):
        assert L.keypoints3d_loss(pred3d, gt3d, has, "smooth_l1", conv).item() < 1e-12
    pred3d[0, 0, 1] += 0.5  # an OpenPose joint without 3D confidence
    pred3d[1, 30, 1] += 0.5  # a sample without 3D
    for conv in ("mmhuman3d", "spin"):
        assert L.keypoints3d_loss(pred3d, gt3d, has, "smooth_l1", conv).item() < 1e-12
    pred3d[0, 30, 1] += 0.5  # GT joint 5 of sample 0: smooth L1 of 0.5 = 0.5 * 0.25
    got = {c: L.keypoints3d_loss(pred3d, gt3d, has, "smooth_l1", c).item() for c in ("mmhuman3d", "spin")}
    assert math.isclose(got["mmhuman3d"], 0.125 / (24 * 3), rel_tol=1e-5)  # entries of positive confidence
    assert math.isclose(got["spin"], 0.125 / (1 * 24 * 3), rel_tol=1e-5)  # samples with 3D, 24 GT joints
    gt3d[0, 0, 3] = 1.0  # the OpenPose joint gets 3D confidence: mmhuman3d counts it, SPIN never does
    got = {c: L.keypoints3d_loss(pred3d, gt3d, has, "smooth_l1", c).item() for c in ("mmhuman3d", "spin")}
    assert math.isclose(got["mmhuman3d"], 0.25 / (25 * 3), rel_tol=1e-5)
    assert math.isclose(got["spin"], 0.125 / (1 * 24 * 3), rel_tol=1e-5)
    for conv in ("mmhuman3d", "spin"):
        assert L.keypoints3d_loss(pred3d, gt3d * torch.tensor([1.0, 1, 1, 0]), torch.tensor([False, False]),
                                  "smooth_l1", conv).item() == 0.0
    with pytest.raises(ValueError, match="convention"):
        L.keypoints3d_loss(pred3d, gt3d, has, "smooth_l1", "other")


def test_presets_follow_their_codebases():
    """mmhuman3d @ 8c95747 weights every joint, OpenPose included, by its confidence; SPIN weights
    OpenPose 2D by 0."""
    for name, conv, op in (("mmhuman3d", "mmhuman3d", 1.0), ("spin", "spin", 0.0)):
        w = resolve(TrainConfig(preset=name)).loss
        assert w.openpose_2d == op and w.averaging == conv
    assert resolve(TrainConfig(preset="spin", loss=LossConfig(convention="mmhuman3d"))).loss.averaging == "mmhuman3d"


# --- checkpoints -------------------------------------------------------------------------------------
def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    atomic_torch_save({"rng": rng_state()}, tmp_path / "r.pth")
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "r.pth", weights_only=True)["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"x": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"x": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_skip_bad_images_refused_with_several_processes(monkeypatch, capsys, tmp_path):
    """A skipped image would make the ranks' batches (and the fits all_gather) differ in size."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train_main(["--data.skip_bad_images", "true", "--work-dir", str(tmp_path)]) == 2
    assert "data.skip_bad_images" in capsys.readouterr().err
