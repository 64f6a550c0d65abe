"""Training configuration: dataclasses, a YAML file format, and command-line overrides.

Precedence: defaults < `--config FILE.yaml` < `--section.field VALUE` flags. `preset` (mmhuman3d | spin)
names whose training to reproduce: `resolve(cfg)` turns the keys the user set into that codebase's full
recipe (`spin_fast.recipes.Recipe`, docs/presets.md), once, with no None left; the run hands each piece
its typed sub-recipe (the training step its `LossRecipe`, SMPLify its `SMPLifyRecipe`, the loader its
`DataRecipe`; fit its own via `--preset`). A key left at none takes the preset's value: losses, SMPLify
objective and iterations, crop geometry, rot_prob, batch size, lr and its schedule, the dataset mix. The
rest of a SMPLify recipe (ftol and its stop rule, keypoint normaliser, trainer keypoints, valid-fit rule)
follows smplify.flavor. Every leaf field has a flag (`python -m spin_fast.train --preset spin --help` lists
them with that preset's values and their upstream sources); YAML files use the same nesting:

    preset: spin
    data: {root: /data/mmhuman3d, batch_size: 32}
    optim: {lr: 3.0e-5}

Unknown keys, wrong types and out-of-range values are errors that name the key. The config with every
preset value written in (`build_config`) is saved next to every checkpoint (`config.yaml`) and inside
it, so a saved run reads back to the same recipe even if a preset changes.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spin_fast.config import env_data_root
from spin_fast.constants import MIN_INPUT_RES, MMHUMAN3D_MIX
from spin_fast.errors import SpinFastError
from spin_fast.recipes import CODEBASES, DEFAULT_CODEBASE, RECIPES, Recipe, source_of

# Dataset mixes (docs/spin.md "Training"): mmhuman3d's fixed ratios (constants.MMHUMAN3D_MIX); SPIN's are
# 0.3 / 0.1 / rest by size (`spin_fast.data.datasets.mix_ratios`, computed when the datasets are opened).

# Each preset is a codebase's recipe (spin_fast.recipes, every value with its upstream source); these
# are the config keys it fills, as (sub-recipe, field). samples_per_epoch stays 100,000 for both:
# SPIN's epoch is its largest dataset, known only once the data is opened.
LOSS_KEYS = ("keypoints3d", "keypoints2d", "vertices", "pose", "betas", "camera", "openpose_2d", "criterion",
             "overall", "convention")
RECIPE_KEYS = {
    "data.mix_preset": ("data", "mix"), "data.batch_size": ("data", "batch_size"), "data.rot_prob": ("data", "rot_prob"),
    "data.flip_prob": ("data", "flip_prob"),
    "data.augmentation": ("data", "geometry"), "smplify.flavor": ("smplify", "objective"),
    "smplify.stage1_iters": ("smplify", "stage1_iters"), "smplify.stage2_iters": ("smplify", "stage2_iters"),
    "optim.lr": ("optim", "lr"), "optim.epochs": ("optim", "epochs"), "optim.lr_decay_epochs": ("optim", "lr_decay_epochs"),
    **{f"loss.{k}": ("loss", "averaging" if k == "convention" else k) for k in LOSS_KEYS},
}


def _recipe_value(codebase: str, key: str):
    sub, name = RECIPE_KEYS[key]
    value = getattr(getattr(RECIPES[codebase], sub), name)
    return list(value) if isinstance(value, tuple) else value


def recipe_source(codebase: str, key: str) -> str:
    """The upstream file:line of the value the preset `codebase` gives config key `key` ('' if none)."""
    if key not in RECIPE_KEYS:
        return ""
    sub, name = RECIPE_KEYS[key]
    return source_of(getattr(RECIPES[codebase], sub), name)


PRESETS = {cb: {key: _recipe_value(cb, key) for key in RECIPE_KEYS} for cb in CODEBASES}
DEFAULT_PRESET = DEFAULT_CODEBASE


class ConfigError(SpinFastError, ValueError):
    """A configuration value is missing, unknown or invalid (the message names the key)."""


# Every field's trailing comment (continued by comment lines right below it) is its `--help` text:
# what it does. `describe` adds the allowed values (CHOICES, POSITIVE, NON_NEGATIVE, the type), the
# default and the presets' values; tests check that every key has one.
@dataclass
class DataConfig:
    root: str | None = None          # mmhuman3d data root (its data/ folder or the parent); none: the
    #                                  synthetic stand-in (announced) and the short demo
    mix: dict[str, float] | None = None  # training sets and their sampling ratios, e.g. "{h36m: 0.5, coco: 0.5}";
    #                                      none: data.mix_preset's ratios
    mix_preset: str | None = None    # the ratios when data.mix is none: mmhuman3d's fixed ones, or spin's (h36m 0.3,
    #                                  mpi_inf_3dhp 0.1, 0.6 over the rest by size)
    batch_size: int | None = None    # images per step and process
    loader: str = "auto"             # data loader backend (spin_fast.data); auto: dali, else torchvision on a
    #                                  CUDA device, the reference loader on the CPU
    threads: int = 2                 # CPU threads for decoding and augmentation
    rot_prob: float | None = None    # probability of a random rotation augmentation
    flip_prob: float | None = None   # probability of a horizontal flip (image and labels mirrored)
    augmentation: str | None = None  # crop geometry: mmhuman3d flips the image, then rotates; spin is SPIN's
    #                                  rounded crop, rotated then flipped
    skip_bad_images: bool = False    # count and skip unreadable images instead of failing (one process only)
    synthetic_scale: int = 1         # size multiplier of the generated synthetic datasets (32 samples each)


@dataclass
class ModelConfig:
    backbone: str = "resnet50"       # HMR backbone
    input_res: int | None = None     # side the 224-pixel crop is resized to before the backbone (much less work
    #                                  at e.g. 64, less detail; labels and camera stay in crop pixels); none: 224
    pretrained: str | None = None    # HMR checkpoint to start from (mmhuman3d, SPIN or spin_fast); none: random
    bf16: bool = True                # autocast the network in bf16 on CUDA (SMPL, SMPLify, losses stay fp32)
    channels_last: bool = True       # channels-last memory format for the network (faster convolutions)
    compile: bool = False            # torch.compile the network


@dataclass
class SmplifyConfig:
    enabled: bool = True             # run SMPLify in the loop; false: targets come from the fits store only
    stage1_iters: int | None = None  # SMPLify stage 1 (camera and global orientation) Adam steps
    stage2_iters: int | None = None  # SMPLify stage 2 (full body) Adam steps
    flavor: str | None = None        # whose SMPLify objective (smplify/fit.py)
    gmm_normaliser: str = "float32"  # precision of the GMM prior's constant: float32 as SPIN's and mmhuman3d's
    #                                  prior.py hold it, float64 exact


@dataclass
class LossConfig:
    keypoints3d: float | None = None  # weight of the 3D keypoint loss
    keypoints2d: float | None = None  # weight of the 2D keypoint loss
    vertices: float | None = None    # weight of the vertex L1 to the fit
    pose: float | None = None        # weight of the SMPL pose (rotation matrix) MSE
    betas: float | None = None       # weight of the betas MSE
    camera: float | None = None      # weight of the camera prior
    openpose_2d: float | None = None  # confidence multiplier of the 25 OpenPose joints in the 2D loss
    criterion: str | None = None     # keypoint loss function
    convention: str | None = None    # keypoint normalisation and averaging (losses.py)
    overall: float | None = None     # multiplier of the total


@dataclass
class OptimConfig:
    lr: float | None = None          # Adam learning rate
    weight_decay: float = 0.0        # Adam weight decay
    epochs: int | None = None        # training length in epochs (unless max_steps is set)
    samples_per_epoch: int = 100_000  # images per epoch, all processes together
    lr_decay_epochs: list[int] | None = None  # epochs after which lr *= optim.lr_decay, e.g. "[3, 6]"
    lr_decay: float = 0.1            # lr factor at each of optim.lr_decay_epochs


@dataclass
class TrainConfig:
    preset: str = DEFAULT_PRESET     # whose training to reproduce (README "Presets"); fills every key left at none
    work_dir: str = "work_dirs/spin_fast"  # output folder: checkpoints, log.csv, TensorBoard events, plots
    seed: int = 0                    # random seed (each process adds its rank)
    max_steps: int | None = None     # steps to train; none: epochs * samples_per_epoch / (batch_size * processes)
    log_every: int = 10              # steps between log.csv rows and TensorBoard scalars (the first step too)
    image_every: int = 500           # steps between TensorBoard images of training crops (0: never)
    ckpt_every: int = 500            # steps between checkpoints (the last step too)
    keep_checkpoints: int = 3        # newest step_*.pth files kept (0: all)
    device: str = "auto"             # auto: cuda when available, else cpu
    demo: bool = False               # the quick synthetic run (set automatically without a data root)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    smplify: SmplifyConfig = field(default_factory=SmplifyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# The synthetic demo (no data root; applied before file and flag overrides): what 2 CPU cores train in
# minutes to a network that beats the mean pose on the synthetic 3DPW split in MPJPE, PA-MPJPE and PVE
# (README "What the stand-in shows"). ResNet-18 at a 64-pixel input (model.input_res: about a tenth of
# the convolution work at 224), batch 32, lr 3e-4 and 0.3x that after 400 steps (the presets' 3e-5 /
# 5e-5 assume a pretrained backbone; 1e-3 diverges at once, 3e-4 after about 600 steps), no rotation
# augmentation (the stand-in's people stand upright, and a short run learns the articulation sooner
# without it), no horizontal flips (the stand-in colours the left and right limbs differently, so a
# mirrored crop shows a body whose left limbs wear the right's colours, unlike any test image; with
# flips the network cannot use the colours to tell left from right, nor front from back), SMPLify
# 10 + 10 in the loop.
DEMO_OVERRIDES = {
    "max_steps": 800, "log_every": 20, "ckpt_every": 200, "image_every": 200, "work_dir": "work_dirs/demo",
    "data.batch_size": 32, "data.rot_prob": 0.0, "data.flip_prob": 0.0, "model.backbone": "resnet18",
    "model.input_res": 64, "model.bf16": False, "optim.lr": 3e-4, "optim.samples_per_epoch": 12_800,
    "optim.lr_decay_epochs": [1], "optim.lr_decay": 0.3, "smplify.stage1_iters": 10, "smplify.stage2_iters": 10,
}

CHOICES = {
    "preset": CODEBASES, "data.loader": ("auto", "dali", "torchvision", "reference"),
    "data.mix_preset": CODEBASES, "data.augmentation": CODEBASES,
    "model.backbone": ("resnet50", "resnet18"), "smplify.flavor": CODEBASES,
    "smplify.gmm_normaliser": ("float32", "float64"), "loss.criterion": ("smooth_l1", "mse"),
    "loss.convention": CODEBASES, "device": ("auto", "cpu", "cuda"),
}
POSITIVE = {"data.batch_size", "data.threads", "data.synthetic_scale", "optim.lr", "optim.epochs",
            "optim.samples_per_epoch", "log_every", "ckpt_every", "max_steps"}
NON_NEGATIVE = {"image_every", "smplify.stage1_iters", "smplify.stage2_iters", "optim.weight_decay", "keep_checkpoints"}
PROBABILITIES = ("data.rot_prob", "data.flip_prob")


# --- flattening --------------------------------------------------------------------------------------
def leaves(cfg=None, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{'section.field': (value, type annotation)} for every leaf of a config (default: the defaults)."""
    cfg = TrainConfig() if cfg is None else cfg
    hints = typing.get_type_hints(type(cfg))
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(leaves(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (v, hints[f.name])
    return out


def _coerce(key: str, value: Any, hint) -> Any:
    """value (from YAML or a command-line string) as the field's type, or ConfigError naming key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
        if type(None) in args or hint is type(None):
            return None
        raise ConfigError(f"config key '{key}' may not be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if isinstance(value, str) and hint in (dict, list) or origin in (dict, list):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        kind = origin or hint
        if not isinstance(value, kind):
            raise ConfigError(f"config key '{key}' must be a {kind.__name__}, got {value!r}")
        if kind is dict:
            try:
                return {str(k): float(v) for k, v in value.items()}
            except (TypeError, ValueError):
                raise ConfigError(f"config key '{key}' must map names to numbers, got {value!r}") from None
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a list of integers, got {value!r}") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        try:
            num = float(value) if hint is float else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be {'a number' if hint is float else 'an integer'}, "
                              f"got {value!r}") from None
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return num
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key '{key}': unsupported type {hint}")


def nearest_keys(key: str, known) -> list[str]:
    """The known keys closest to a misspelt one (difflib), best first; also matched on the last part."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    last = {k.rsplit(".", 1)[-1]: k for k in known}
    close += [last[k] for k in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(last), n=2, cutoff=0.75)]
    return list(dict.fromkeys(close))


def unknown_key_message(key: str, known) -> str:
    near = nearest_keys(key, known)
    hint = f"did you mean {' or '.join(repr(k) for k in near)}?" if near else \
        "`python -m spin_fast.train --help` lists every key"
    return f"unknown config key '{key}' ({hint})"


def set_value(cfg: TrainConfig, key: str, value: Any) -> None:
    known = leaves(cfg)
    if key not in known:
        raise ConfigError(unknown_key_message(key, known))
    obj = cfg
    *path, last = key.split(".")
    for p in path:
        obj = getattr(obj, p)
    setattr(obj, last, _coerce(key, value, known[key][1]))


def flatten_mapping(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in ("data.mix",):
            out.update(flatten_mapping(v, key + "."))
        else:
            out[key] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(raw).__name__}")
    sections = [f.name for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.default_factory)]
    for key, value in raw.items():
        if key in sections and not isinstance(value, dict):
            raise ConfigError(f"config file {path}: section '{key}' must be a mapping of its keys "
                              f"(e.g. `{key}: {{{dataclasses.fields(getattr(TrainConfig(), key))[0].name}: ...}}`), "
                              f"got {value!r}")
    return flatten_mapping(raw)


def validate(cfg: TrainConfig) -> TrainConfig:
    flat = {k: v for k, (v, _) in leaves(cfg).items()}
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"config key '{key}' must be one of {[c for c in choices if c]}, got {flat[key]!r}")
    for key in POSITIVE:
        if flat[key] is not None and flat[key] <= 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {flat[key]!r}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {flat[key]!r}")
    if cfg.model.input_res is not None and cfg.model.input_res < MIN_INPUT_RES:
        raise ConfigError(f"config key 'model.input_res' must be >= {MIN_INPUT_RES} (the backbone's stride) or "
                          f"none, got {cfg.model.input_res}")
    for key in PROBABILITIES:
        if not 0.0 <= flat[key] <= 1.0:
            raise ConfigError(f"config key '{key}' must be in [0, 1], got {flat[key]}")
    mix = cfg.data.mix
    from spin_fast.data.datasets import TRAIN_DATASETS

    unknown = [n for n in (mix or {}) if n not in TRAIN_DATASETS]
    if unknown:
        raise ConfigError(f"config key 'data.mix' names {unknown}, which are not training datasets; the training "
                          f"datasets are {', '.join(TRAIN_DATASETS)}")
    if mix is not None and (not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0):
        raise ConfigError(f"config key 'data.mix' needs non-negative ratios with a positive sum, got {mix}")
    return cfg


def _override(sub, values: dict):
    """The frozen sub-recipe `sub` with `values` (field -> value); a field keeps its upstream source only
    where its value is still the recipe's."""
    out = dataclasses.replace(sub, **values)
    sources = {k: v for k, v in sub.sources.items() if getattr(out, k) == getattr(sub, k)}
    return dataclasses.replace(out, sources=sources)


def resolve(cfg: TrainConfig) -> Recipe:
    """The recipe a run follows: `cfg.preset`'s (spin_fast.recipes) with every recipe key the config
    sets (the others at None take the preset's). The SMPLify recipe is the one of smplify.flavor's
    objective (stop rule, keypoint normaliser, trainer keypoints, valid-fit rule) with the preset's
    iterations unless set. Nothing in the result is None."""
    if cfg.preset not in RECIPES:
        raise ConfigError(f"config key 'preset' must be one of {list(RECIPES)}, got {cfg.preset!r}")
    base = RECIPES[cfg.preset]
    flat = {k: v for k, (v, _) in leaves(cfg).items()}
    given = {sub: {} for sub in ("loss", "smplify", "data", "optim")}
    for key, (sub, name) in RECIPE_KEYS.items():
        if flat[key] is not None:
            given[sub][name] = tuple(flat[key]) if isinstance(flat[key], list) else flat[key]
    objective = given["smplify"].get("objective", base.smplify.objective)
    if objective not in RECIPES:
        raise ConfigError(f"config key 'smplify.flavor' must be one of {list(RECIPES)}, got {objective!r}")
    iters = {"stage1_iters": base.smplify.stage1_iters, "stage2_iters": base.smplify.stage2_iters}
    return Recipe(base.codebase, _override(base.loss, given["loss"]),
                  _override(RECIPES[objective].smplify, {**iters, **given["smplify"]}),
                  _override(base.data, given["data"]), _override(base.optim, given["optim"]))


def resolve_preset(cfg: TrainConfig) -> TrainConfig:
    """Write the recipe's value (`resolve`) into every recipe key left at None, in place, so the config
    saved with a run holds them; a mmhuman3d mix preset becomes its ratios (SPIN's need the dataset
    sizes: they stay data.mix_preset 'spin')."""
    rec = resolve(cfg)
    known = leaves(cfg)
    for key, (sub, name) in RECIPE_KEYS.items():
        if known[key][0] is None:
            value = getattr(getattr(rec, sub), name)
            set_value(cfg, key, list(value) if isinstance(value, tuple) else value)
    if cfg.data.mix is None and cfg.data.mix_preset == "mmhuman3d":
        cfg.data.mix = dict(MMHUMAN3D_MIX)
    return cfg


def preset_defaults(preset: str = DEFAULT_PRESET) -> TrainConfig:
    """The defaults with `preset` resolved (what `--help` shows for it)."""
    return resolve_preset(TrainConfig(preset=preset))


# --- help text: one source, the field comments ------------------------------------------------------
def field_comments(cls) -> dict[str, str]:
    """{field: its trailing comment} of a dataclass, read from its source with `tokenize`; a comment
    line right below a field (nothing else on it) continues that field's comment."""
    import inspect
    import io
    import textwrap
    import tokenize

    out: dict[str, str] = {}
    current, last_line, body = None, -1, None
    for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(inspect.getsource(cls))).readline):
        if tok.type == tokenize.INDENT and body is None:
            body = len(tok.string)                          # the class body's indentation
        elif tok.type == tokenize.NAME and tok.start[1] == body and tok.start[0] != last_line:
            current, last_line = tok.string, tok.start[0]   # a field line starts
        elif tok.type == tokenize.COMMENT and current is not None:
            text = tok.string.lstrip("#").strip()
            if tok.start[0] == last_line:
                out[current] = text
            elif tok.line.strip().startswith("#") and tok.start[0] == last_line + 1 and current in out:
                out[current] += " " + text
                last_line = tok.start[0]
    return out


def _allowed(key: str, hint) -> str:
    """'auto | dali', 'integer > 0 | none', ... from CHOICES, POSITIVE, NON_NEGATIVE and the type."""
    args = typing.get_args(hint)
    nullable = type(None) in args
    inner = [a for a in args if a is not type(None)]
    base = inner[0] if nullable and inner else hint
    origin = typing.get_origin(base)
    if key in CHOICES:
        text = " | ".join("none" if c is None else str(c) for c in CHOICES[key])
    elif base is bool:
        text = "true | false"
    elif key in PROBABILITIES:
        text = "number in [0, 1]"
    elif key == "model.input_res":
        text = f"integer >= {MIN_INPUT_RES}"
    elif base in (int, float):
        kind = "integer" if base is int else "number"
        text = f"{kind} > 0" if key in POSITIVE else f"{kind} >= 0" if key in NON_NEGATIVE else kind
    elif origin is dict:
        text = "YAML mapping name: ratio"
    elif origin is list:
        text = "YAML list of integers"
    else:
        text = "path" if key.endswith(("root", "dir", "pretrained")) else "string"
    return text + (" | none" if nullable else "")


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)


def describe(preset: str = DEFAULT_PRESET) -> dict[str, str]:
    """{key: 'what it does [allowed values] (default: D ...)'} for every key: the field comment, the
    allowed values, the default (for a key the presets fill: `preset`'s value and the others'), the demo's."""
    classes = [("", TrainConfig)] + [(f"{f.name}.", f.default_factory) for f in dataclasses.fields(TrainConfig)
                                     if dataclasses.is_dataclass(f.default_factory)]
    comments = {f"{prefix}{k}": v for prefix, cls in classes for k, v in field_comments(cls).items()}
    resolved = leaves(preset_defaults(preset))
    out = {}
    for k, (value, hint) in leaves().items():
        default = _show(value)
        if k in PRESETS[preset]:
            others = ", ".join(f"{name}: {_show(p[k])}" for name, p in PRESETS.items() if name != preset and k in p)
            default = f"{_show(resolved[k][0])} from --preset {preset}" + (f"; {others}" if others else "")
        elif resolved[k][0] != value and k != "preset":
            default = f"{_show(value)}, i.e. {_show(resolved[k][0])} with --preset {preset}"
        if k in DEMO_OVERRIDES:
            default += f"; demo: {_show(DEMO_OVERRIDES[k])}"
        source = recipe_source(preset, k)
        said = comments.get(k, "") + (f"; {preset}: {source}" if source else "")
        out[k] = f"{said} [{_allowed(k, hint)}] (default: {default})".lstrip()
    return out


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> TrainConfig:
    cfg = TrainConfig()
    for k, v in flatten_mapping(d).items():
        set_value(cfg, k, v)
    return validate(resolve_preset(cfg))


def build_config(config_file: str | None = None, overrides: dict[str, Any] | None = None,
                 demo: bool | None = None) -> TrainConfig:
    """Defaults, then the demo settings (when `demo`), then the file, then the overrides, then the
    preset for every field still at None."""
    cfg = TrainConfig()
    file_values = load_yaml(config_file) if config_file else {}
    overrides = dict(overrides or {})
    if demo is None:
        root = overrides.get("data.root", file_values.get("data.root"))
        demo = root is None and env_data_root() is None
    if demo:
        for k, v in DEMO_OVERRIDES.items():
            set_value(cfg, k, v)
        cfg.demo = True
    for source in (file_values, overrides):
        for k, v in source.items():
            set_value(cfg, k, v)
    return validate(resolve_preset(cfg))
