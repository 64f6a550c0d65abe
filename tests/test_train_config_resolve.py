"""`resolve` turns a config (the keys the user set, the rest at none) into the full recipe once: the
preset's recipe (spin_fast.recipes) with the user's values, nothing left None, each value's upstream
source kept only where the value is the recipe's; config files written for earlier versions load."""
import dataclasses

import pytest

from spin_fast.recipes import RECIPES, Recipe, ValidFitRule
from spin_fast.train.config import ConfigError, TrainConfig, build_config, resolve, resolve_preset


def _walk(rec: Recipe):
    for sub in (rec.loss, rec.smplify, rec.data, rec.optim):
        for f in dataclasses.fields(sub):
            if f.name != "sources":
                yield type(sub).__name__, f.name, getattr(sub, f.name)


@pytest.mark.parametrize("preset", list(RECIPES))
def test_nothing_set_is_the_presets_recipe_with_no_none(preset):
    rec = resolve(TrainConfig(preset=preset))
    assert rec == RECIPES[preset]
    assert [(s, n) for s, n, v in _walk(rec) if v is None] == []
    assert rec.loss.sources == RECIPES[preset].loss.sources
    # the config with the preset written in (what config.yaml holds) resolves to the same recipe
    assert resolve(resolve_preset(TrainConfig(preset=preset))) == rec


def test_set_keys_override_their_fields_only():
    cfg = TrainConfig(preset="spin")
    cfg.loss.keypoints2d, cfg.data.augmentation, cfg.optim.lr_decay_epochs = 7.0, "mmhuman3d", [4, 8]
    rec = resolve(cfg)
    spin = RECIPES["spin"]
    assert rec.loss.keypoints2d == 7.0 and rec.data.geometry == "mmhuman3d" and rec.optim.lr_decay_epochs == (4, 8)
    assert "keypoints2d" not in rec.loss.sources and rec.loss.sources["keypoints3d"] == spin.loss.sources["keypoints3d"]
    assert rec.loss.keypoints3d == spin.loss.keypoints3d and rec.data.rot_prob == spin.data.rot_prob
    assert rec.smplify == spin.smplify


def test_smplify_flavor_brings_its_rules_and_keeps_the_presets_iterations():
    cfg = TrainConfig(preset="spin")
    cfg.smplify.flavor = "mmhuman3d"
    sm = resolve(cfg).smplify
    assert (sm.objective, sm.stop, sm.kp_norm, sm.ftol, sm.trainer_keypoints) == ("mmhuman3d", "batch", 223.0, 1e-4, False)
    assert sm.valid_fit == ValidFitRule("sum", 10.0)
    assert (sm.stage1_iters, sm.stage2_iters) == (100, 100)  # the spin preset's, as build_config writes them
    cfg.smplify.stage2_iters = 7
    assert resolve(cfg).smplify.stage2_iters == 7
    cfg.smplify.flavor = "other"
    with pytest.raises(ConfigError, match="smplify.flavor"):
        resolve(cfg)
    with pytest.raises(ConfigError, match="'preset' must be one of"):
        resolve(TrainConfig(preset="hmr"))


def test_a_config_file_of_every_recipe_key_still_loads(tmp_path):
    """The key names of config files (augmentation, convention, flavor, mix_preset) stay as they were."""
    f = tmp_path / "old.yaml"
    f.write_text("preset: spin\n"
                 "data: {root: /d, augmentation: spin, mix_preset: mmhuman3d, rot_prob: 0.3, batch_size: 16}\n"
                 "smplify: {flavor: spin, stage1_iters: 10, stage2_iters: 20}\n"
                 "loss: {convention: mmhuman3d, criterion: mse, keypoints2d: 2.5, overall: 1.0}\n"
                 "optim: {lr: 1.0e-4, epochs: 3, lr_decay_epochs: [2]}\n")
    rec = resolve(build_config(str(f)))
    assert (rec.data.geometry, rec.data.mix, rec.data.rot_prob, rec.data.batch_size) == ("spin", "mmhuman3d", 0.3, 16)
    assert (rec.smplify.objective, rec.smplify.stage1_iters, rec.smplify.stage2_iters) == ("spin", 10, 20)
    assert (rec.loss.averaging, rec.loss.criterion, rec.loss.keypoints2d, rec.loss.overall) == ("mmhuman3d", "mse", 2.5, 1.0)
    assert (rec.optim.lr, rec.optim.epochs, rec.optim.lr_decay_epochs) == (1e-4, 3, (2,))
