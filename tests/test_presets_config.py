"""One `preset` (mmhuman3d | spin) drives losses, SMPLify, augmentation, rot_prob, batch, lr and its
schedule, iterations and mix; every field stays overridable and config.yaml records the resolved values.

Upstream values: mmhuman3d @ 8c95747 configs/spin/resnet50_spin_pw3d_cache.py (Adam 3e-5, step at
epoch 3 of 10, 32 a GPU, SMPLify 50 + 50, rot_prob 0.6 of GetRandomScaleRotation, partition
0.35/0.15/0.1/0.1/0.1/0.2); SPIN @ 2476c43 utils/train_options.py (lr 5e-5, batch 64, 50 epochs,
num_smplify_iters 100, no scheduler in base_trainer.py), datasets/base_dataset.py (rotation zeroed
with probability 0.6, so kept with 0.4), datasets/mixed_dataset.py (0.3 / 0.6 by size / 0.1).
"""
import re
import subprocess
import sys

import pytest
import yaml

from spin_fast.train.__main__ import main as train_main
from spin_fast.train.config import ConfigError, build_config, from_dict, to_dict

UPSTREAM = {
    "mmhuman3d": {"data.batch_size": 32, "data.rot_prob": 0.6, "data.flip_prob": 0.5,
                  "data.augmentation": "mmhuman3d",
                  "data.mix": {"h36m": 0.35, "mpi_inf_3dhp": 0.15, "lsp": 0.10, "lspet": 0.10, "mpii": 0.10,
                               "coco": 0.20},
                  "smplify.flavor": "mmhuman3d", "smplify.stage1_iters": 50, "smplify.stage2_iters": 50,
                  "optim.lr": 3e-5, "optim.epochs": 10, "optim.lr_decay_epochs": [3],
                  "loss.keypoints3d": 100.0, "loss.keypoints2d": 10.0, "loss.vertices": 2.0, "loss.pose": 3.0,
                  "loss.betas": 0.02, "loss.camera": 60.0, "loss.openpose_2d": 1.0, "loss.criterion": "smooth_l1",
                  "loss.overall": 1.0, "loss.convention": "mmhuman3d"},
    "spin": {"data.batch_size": 64, "data.rot_prob": 0.4, "data.flip_prob": 0.5, "data.augmentation": "spin",
             "data.mix": None,
             "data.mix_preset": "spin", "smplify.flavor": "spin", "smplify.stage1_iters": 100,
             "smplify.stage2_iters": 100, "optim.lr": 5e-5, "optim.epochs": 50, "optim.lr_decay_epochs": [],
             "loss.keypoints3d": 5.0, "loss.keypoints2d": 5.0, "loss.vertices": 0.0, "loss.pose": 1.0,
             "loss.betas": 0.001, "loss.camera": 1.0, "loss.openpose_2d": 0.0, "loss.criterion": "mse",
             "loss.overall": 60.0, "loss.convention": "spin"},
}


def _get(cfg, key):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("preset", ["mmhuman3d", "spin"])
def test_preset_resolves_to_the_upstream_values(preset, tmp_path):
    cfg = build_config(overrides={"data.root": "/d", "preset": preset})
    for key, want in UPSTREAM[preset].items():
        assert _get(cfg, key) == want, key
    # config.yaml holds the resolved values and reads back to the same config
    saved = yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    assert saved["preset"] == preset and saved["loss"]["criterion"] == UPSTREAM[preset]["loss.criterion"]
    assert saved["smplify"]["stage1_iters"] == UPSTREAM[preset]["smplify.stage1_iters"]
    assert from_dict(saved) == cfg


def test_every_preset_field_stays_overridable(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: spin\ndata: {root: /d, rot_prob: 0.5}\nloss: {criterion: smooth_l1}\n")
    cfg = build_config(str(f), {"smplify.flavor": "mmhuman3d", "optim.lr": "1e-4", "data.augmentation": "mmhuman3d",
                                "data.mix": "{h36m: 1.0}", "optim.lr_decay_epochs": "[5]"})
    assert cfg.data.rot_prob == 0.5 and cfg.loss.criterion == "smooth_l1" and cfg.smplify.flavor == "mmhuman3d"
    assert cfg.optim.lr == 1e-4 and cfg.data.augmentation == "mmhuman3d" and cfg.data.mix == {"h36m": 1.0}
    assert cfg.optim.lr_decay_epochs == [5]
    # the rest is still the spin preset's
    assert cfg.loss.overall == 60.0 and cfg.smplify.stage1_iters == 100 and cfg.data.batch_size == 64
    # a saved config keeps its values even though the preset would say otherwise
    assert from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="'preset' must be one of"):
        build_config(overrides={"preset": "hmr"})
    with pytest.raises(ConfigError, match="'data.augmentation' must be one of"):
        build_config(overrides={"data.augmentation": "cv2"})
    with pytest.raises(ConfigError, match="unknown config key 'loss.preset'"):
        build_config(overrides={"loss.preset": "spin"})


def test_demo_settings_win_over_the_preset():
    cfg = build_config(overrides={"preset": "spin"})
    assert cfg.demo and cfg.data.batch_size == 32 and cfg.smplify.stage1_iters == 10
    assert cfg.data.rot_prob == 0.0 and cfg.loss.convention == "spin"  # the demo's rot_prob, the preset's rest


@pytest.mark.parametrize("preset, shown", [
    ("spin", {"data.rot_prob": "(default: 0.4 from --preset spin", "optim.lr": "(default: 5e-05 from --preset spin",
              "loss.criterion": "(default: mse from --preset spin", "smplify.flavor": "(default: spin from",
              "optim.epochs": "(default: 50 from --preset spin"}),
    ("mmhuman3d", {"data.rot_prob": "(default: 0.6 from --preset mmhuman3d",
                   "optim.lr": "(default: 3e-05 from --preset mmhuman3d",
                   "loss.criterion": "(default: smooth_l1 from --preset mmhuman3d",
                   "optim.epochs": "(default: 10 from --preset mmhuman3d"}),
])
def test_help_shows_the_resolved_defaults(preset, shown):
    out = subprocess.run([sys.executable, "-m", "spin_fast.train", "--preset", preset, "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for key, s in shown.items():
        entry = re.split(r" --[\w.]+ V ", text.split(f"--{key} V ", 1)[1])[0]  # that key's help
        assert s in entry, (key, entry)


def test_help_without_preset_is_the_default_one(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: mmhuman3d from --preset mmhuman3d; spin: spin)" in text.split("--smplify.flavor V", 1)[1]
    assert re.split(r" --[\w.]+ V ", text.split("--preset V ", 1)[1])[0].endswith("(default: mmhuman3d)")


def test_spin_mix_follows_the_dataset_sizes(synthetic_data):
    """The spin mix preset is computed when the datasets are opened: h36m 0.3, mpi_inf_3dhp 0.1, the
    four in-the-wild sets 0.6 in proportion to their sizes (SPIN's MixedDataset)."""
    from spin_fast.data import build_train_loader

    root = synthetic_data(per_dataset=3)
    ld = build_train_loader(root, "spin", batch_size=4, backend="reference", threads=0, geometry="spin")
    sizes = dict(zip(ld.dataset_names, ld.dataset_sizes))
    wild = sum(sizes[n] for n in ("lsp", "lspet", "mpii", "coco"))
    want = {"h36m": 0.3, "mpi_inf_3dhp": 0.1, **{n: 0.6 * sizes[n] / wild for n in ("lsp", "lspet", "mpii", "coco")}}
    got = dict(zip(ld.dataset_names, ld.sampler.ratios))
    assert set(got) == set(want)
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-9), n
