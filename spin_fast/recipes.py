"""Whose training spin_fast reproduces: one frozen recipe per codebase, every value with its upstream source.

    Codebase   "mmhuman3d" (open-mmlab/mmhuman3d @ 8c95747, configs/spin/resnet50_spin_pw3d_cache.py)
               or "spin" (nkolot/SPIN @ 2476c43, utils/train_options.py + train/trainer.py)
    Recipe     loss / smplify / data / optim sub-recipes (`RECIPES[codebase]`)

Each sub-recipe is a frozen dataclass of plain numbers and names; its `sources` maps a field to the
upstream `file:line` it reproduces. A training config keeps the user's overrides; `spin_fast.train.config.
resolve` turns them into one full `Recipe` and the pieces that run take their sub-recipe: the training
step its `LossRecipe`, `SMPLify.from_recipe` a `SMPLifyRecipe` (the fits in the loop its valid-fit rule
and trainer keypoints), `spin_fast.data.train_loader_from_recipe` a `DataRecipe`; `python -m
spin_fast.fit --preset` the SMPLify recipe and crop geometry of its codebase. Kernel ops take numeric
switches (the reprojection op's `units`), never a codebase name. `not_reproduced()` lists what a recipe
knowingly does not match, with the size of the difference; `markdown()` is docs/presets.md.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Literal, Mapping

Codebase = Literal["mmhuman3d", "spin"]
CODEBASES: tuple[str, ...] = typing.get_args(Codebase)
DEFAULT_CODEBASE: Codebase = "mmhuman3d"  # the default preset, and the default of every piece that takes a codebase

MMH = "mmhuman3d@8c95747:"
SPIN = "SPIN@2476c43:"
MMH_CONFIG = MMH + "configs/spin/resnet50_spin_pw3d_cache.py"
MMH_SMPLIFY = MMH + "mmhuman3d/models/registrants/smplify.py"
MMH_ESTIMATOR = MMH + "mmhuman3d/models/architectures/mesh_estimator.py"
SPIN_OPTIONS = SPIN + "utils/train_options.py"
SPIN_TRAINER = SPIN + "train/trainer.py"
SPIN_SMPLIFY = SPIN + "smplify/smplify.py"


@dataclass(frozen=True)
class ValidFitRule:
    """A fit (not ground truth) supervises the step when its per-joint stage-2 data term (B, 49),
    reduced over the joints by `reduction`, is below `threshold` (in the objective's own units)."""

    reduction: Literal["mean", "sum"]
    threshold: float

    def __post_init__(self):
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"ValidFitRule: reduction must be 'mean' or 'sum', got {self.reduction!r}")

    def describe(self) -> str:
        return f"{self.reduction} over the 49 joints < {self.threshold:g}"


@dataclass(frozen=True)
class SMPLifyRecipe:
    objective: Codebase            # whose data term and priors (spin: pixels, GMoF, conf^2; mmhuman3d: 2r/S)
    stage1_iters: int              # Adam steps on camera + global orient
    stage2_iters: int              # Adam steps on body pose + betas + global orient
    ftol: float                    # relative loss change that stops (0: every step runs)
    stop: Literal["sample", "batch"]  # ftol tested per sample, or on the batch's summed loss (stops all)
    kp_norm: float                 # S of the normalised residual e = 2 r / S (mmhuman3d objective)
    trainer_keypoints: bool        # SPIN's trainer hands SMPLify joints 1, 9, 12, 27, 28 at confidence 0
    valid_fit: ValidFitRule        # which kept fits become training targets
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LossRecipe:
    keypoints3d: float
    keypoints2d: float
    vertices: float
    pose: float
    betas: float
    camera: float
    openpose_2d: float             # confidence multiplier of the 25 OpenPose joints in the 2D loss
    criterion: Literal["smooth_l1", "mse"]
    averaging: Codebase            # keypoint normalisation and averaging (train/losses.py)
    overall: float
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DataRecipe:
    geometry: Codebase             # crop geometry (data/augment.py)
    rot_prob: float
    flip_prob: float               # probability of a horizontal flip (labels mirrored with the image)
    mix: Codebase                  # dataset ratios (data/datasets.py mix_ratios)
    batch_size: int
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class OptimRecipe:
    lr: float
    epochs: int
    lr_decay_epochs: tuple[int, ...]
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Recipe:
    codebase: Codebase
    loss: LossRecipe
    smplify: SMPLifyRecipe
    data: DataRecipe
    optim: OptimRecipe


RECIPES: dict[str, Recipe] = {
    "mmhuman3d": Recipe(
        "mmhuman3d",
        LossRecipe(keypoints3d=100.0, keypoints2d=10.0, vertices=2.0, pose=3.0, betas=0.02, camera=60.0,
                   openpose_2d=1.0, criterion="smooth_l1", averaging="mmhuman3d", overall=1.0, sources={
                       "keypoints3d": MMH_CONFIG + ":101", "keypoints2d": MMH_CONFIG + ":102",
                       "vertices": MMH_CONFIG + ":103", "pose": MMH_CONFIG + ":104", "betas": MMH_CONFIG + ":105",
                       "camera": MMH_CONFIG + ":106", "criterion": MMH_CONFIG + ":101",
                       "averaging": MMH_ESTIMATOR + " compute_keypoints2d_loss / compute_keypoints3d_loss",
                       "openpose_2d": MMH_ESTIMATOR + " compute_keypoints2d_loss (every joint by its confidence)",
                       "overall": MMH_ESTIMATOR + ":173 (_parse_losses: the weighted terms summed)"}),
        SMPLifyRecipe(objective="mmhuman3d", stage1_iters=50, stage2_iters=50, ftol=1e-4, stop="batch", kp_norm=223.0,
                      trainer_keypoints=False, valid_fit=ValidFitRule("sum", 10.0), sources={
                          "objective": MMH_SMPLIFY + ":492-571 (_compute_loss)",
                          "stage1_iters": MMH_CONFIG + ":24", "stage2_iters": MMH_CONFIG + ":31",
                          "ftol": MMH_SMPLIFY + ":300", "stop": MMH_SMPLIFY + ":381 (_optimize_stage: break on the "
                          "batch's summed loss)", "kp_norm": MMH_SMPLIFY + ":561-562 (_compute_loss: img_res - 1)",
                          "trainer_keypoints": MMH_ESTIMATOR + ":305 (keypoints as they are)",
                          "valid_fit": MMH_ESTIMATOR + ":190, 288, 359 (keypoint2d_loss summed, < threshold=10.0)"}),
        DataRecipe(geometry="mmhuman3d", rot_prob=0.6, flip_prob=0.5, mix="mmhuman3d", batch_size=32, sources={
            "geometry": MMH + "mmhuman3d/data/datasets/pipelines/transforms.py (MeshAffine)",
            "rot_prob": MMH + "mmhuman3d/data/datasets/pipelines/transforms.py:715",
            "flip_prob": MMH_CONFIG + ":122 (RandomHorizontalFlip)",
            "mix": MMH_CONFIG + ":215", "batch_size": MMH_CONFIG + ":161"}),
        OptimRecipe(lr=3e-5, epochs=10, lr_decay_epochs=(3,), sources={
            "lr": MMH_CONFIG + ":66", "epochs": MMH_CONFIG + ":70", "lr_decay_epochs": MMH_CONFIG + ":69"}),
    ),
    "spin": Recipe(
        "spin",
        LossRecipe(keypoints3d=5.0, keypoints2d=5.0, vertices=0.0, pose=1.0, betas=0.001, camera=1.0,
                   openpose_2d=0.0, criterion="mse", averaging="spin", overall=60.0, sources={
                       "keypoints3d": SPIN_OPTIONS + ":43", "keypoints2d": SPIN_OPTIONS + ":43",
                       "vertices": SPIN_OPTIONS + ":42", "pose": SPIN_OPTIONS + ":44", "betas": SPIN_OPTIONS + ":45",
                       "camera": SPIN_TRAINER + ":255-259", "openpose_2d": SPIN_OPTIONS + ":46",
                       "criterion": SPIN_TRAINER + ":35", "averaging": SPIN_TRAINER + ":56 (keypoint_loss) and below",
                       "overall": SPIN_TRAINER + ":260 (loss *= 60)"}),
        SMPLifyRecipe(objective="spin", stage1_iters=100, stage2_iters=100, ftol=0.0, stop="sample", kp_norm=224.0,
                      trainer_keypoints=True, valid_fit=ValidFitRule("mean", 100.0), sources={
                          "objective": SPIN + "smplify/losses.py:26, 60 (body_fitting_loss, camera_fitting_loss)",
                          "stage1_iters": SPIN_OPTIONS + ":50", "stage2_iters": SPIN_OPTIONS + ":50",
                          "ftol": SPIN_SMPLIFY + ":81, 108 (every step runs)",
                          "stop": SPIN_SMPLIFY + ":81, 108 (every step runs)",
                          "kp_norm": SPIN_SMPLIFY + " (pixel units: unused)",
                          "trainer_keypoints": SPIN_TRAINER + ":152-153 + smplify.py get_fitting_loss",
                          "valid_fit": SPIN_TRAINER + ":225 + " + SPIN_OPTIONS + ":49 (mean < 100)"}),
        DataRecipe(geometry="spin", rot_prob=0.4, flip_prob=0.5, mix="spin", batch_size=64, sources={
            "geometry": SPIN + "utils/imutils.py:46 (crop)", "rot_prob": SPIN + "datasets/base_dataset.py:114",
            "flip_prob": SPIN + "datasets/base_dataset.py:98 (augm_params)",
            "mix": SPIN + "datasets/mixed_dataset.py:22-26", "batch_size": SPIN_OPTIONS + ":33"}),
        OptimRecipe(lr=5e-5, epochs=50, lr_decay_epochs=(), sources={
            "lr": SPIN_OPTIONS + ":32", "epochs": SPIN_OPTIONS + ":31", "lr_decay_epochs": SPIN + "utils/base_trainer.py (no scheduler)"}),
    ),
}


def recipe(codebase: str) -> Recipe:
    if codebase not in RECIPES:
        raise ValueError(f"codebase must be one of {CODEBASES}, got {codebase!r}")
    return RECIPES[codebase]


def smplify_kwargs(r: SMPLifyRecipe) -> dict:
    """The SMPLify constructor's arguments of a recipe (spin_fast.smplify.SMPLify)."""
    return dict(flavor=r.objective, stage1_iters=r.stage1_iters, stage2_iters=r.stage2_iters, ftol=r.ftol,
                stop=r.stop, kp_norm=r.kp_norm)


def source_of(sub, name: str) -> str:
    """The upstream source of one field of a sub-recipe ('' where none is recorded)."""
    return sub.sources.get(name, "")


def table(sub) -> list[tuple[str, object, str]]:
    """(field, value, source) rows of a sub-recipe, for help texts and docs."""
    return [(f.name, getattr(sub, f.name), source_of(sub, f.name)) for f in fields(sub) if f.name != "sources"]


# What a recipe knowingly does not reproduce, with the size of the difference (docs and --help read this).
NOT_REPRODUCED: dict[str, tuple[str, ...]] = {
    "mmhuman3d": (),
    "spin": (
        "crop content: SPIN's crop() (utils/imutils.py:46) pastes the rounded window into a black canvas, rotates "
        "it (scipy imrotate) and resizes it (scipy imresize: PIL's filtered resize); spin_fast samples the same "
        "window in one bilinear affine warp. Where the content lands matches: dots within 0.05 px, also for "
        "windows downscaled 2x to 4x and windows that leave the image; the image border within 0.15 px below a 2x "
        "downscale and within 0.3 px from 2x to 4x (tests/test_presets_augment.py, tests/test_presets_spin_crop.py). "
        "The pixel values differ by the resize filter (PIL averages a downscaled window over a triangle as wide as "
        "the scale, the warp reads 4 pixels): a smooth random texture's crops differ by a mean of at most "
        "1 grey level below a 2x downscale and 2.5 / 5 / 7.5 grey levels below 3x / below 4x / at 4x. scipy's "
        "toimage also byte-scales the float canvas to 0..255 over its own minimum and maximum before rotating or "
        "resizing (no change where the window holds a 0 and a 255); spin_fast does not stretch. The 2D labels "
        "follow SPIN's transform() exactly.",
        "epoch length: SPIN's epoch is its largest dataset; optim.samples_per_epoch stays 100,000 images.",
    ),
}


def not_reproduced(codebase: str) -> tuple[str, ...]:
    recipe(codebase)
    return NOT_REPRODUCED[codebase]


def help_lines(sub, indent: str = "  ") -> str:
    """'name: value  (source)' a line, for the command lines' --help."""
    return "\n".join(f"{indent}{name}: {_show(value)}  ({source or '-'})" for name, value, source in table(sub))


def _show(value) -> str:
    if isinstance(value, ValidFitRule):
        return value.describe()
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def markdown() -> str:
    """docs/presets.md: every recipe value of both codebases with its source, and what is not reproduced
    (tests/test_recipes.py checks the file is this text; `python -m spin_fast.recipes > docs/presets.md`)."""
    lines = ["# Presets: whose training, term by term", "",
             "Generated from `spin_fast/recipes.py` (`python -m spin_fast.recipes > docs/presets.md`); do not edit.",
             "`--preset mmhuman3d` (default) follows open-mmlab/mmhuman3d @ 8c95747 "
             "(`configs/spin/resnet50_spin_pw3d_cache.py`), `--preset spin` nkolot/SPIN @ 2476c43. A config key "
             "overrides one value; `python -m spin_fast.train --preset spin --help` shows each value with its source.",
             ""]
    for sub in ("loss", "smplify", "data", "optim"):
        lines += [f"## {sub}", "", "| term | mmhuman3d | source | spin | source |", "|---|---|---|---|---|"]
        rows = {cb: table(getattr(RECIPES[cb], sub)) for cb in CODEBASES}
        for i, (name, _, _) in enumerate(rows[CODEBASES[0]]):
            cells = []
            for cb in CODEBASES:
                _, value, source = rows[cb][i]
                cells += [f"`{_show(value)}`", source.replace("|", "/") or "-"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Not reproduced", ""]
    for cb in CODEBASES:
        items = not_reproduced(cb)
        lines += [f"- {cb}: " + ("nothing known." if not items else " ".join(items))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
