"""Load HMR/SPIN weights from mmhuman3d, original SPIN and spin_fast checkpoints (`load_model`: an HMR
network built from one, its backbone depth read from the weights).

Formats recognised (by content, not by file name):
- mmhuman3d: `{'meta': ..., 'state_dict': {...}}` with `backbone.*` and `head.*` (plus
  `body_model_train.*`, `body_model_test.*`, `disc.*`, which are ignored);
- original SPIN `model_checkpoint.pt`: `{'model': {...}, ...}` with the same names unprefixed
  (`conv1.weight`, `layer1.0.conv1.weight`, ..., `fc1.weight`, `decpose.bias`, `init_pose`);
- spin_fast: `{'model': {...}}` with `backbone.*` / `head.*`, or a bare state_dict.
A `module.` prefix (DistributedDataParallel) is stripped. Every backbone/head tensor of the target
model must be supplied with the right shape, and no unknown backbone/head key may be left over;
otherwise `CheckpointError` names the keys.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch

from spin_fast.errors import SpinFastError

IGNORED_PREFIXES = ("body_model_train.", "body_model_test.", "body_model.", "disc.", "discriminator.")
HEAD_NAMES = ("fc1.", "fc2.", "decpose.", "decshape.", "deccam.", "init_pose", "init_shape", "init_cam")
BACKBONE_NAMES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


class CheckpointError(SpinFastError, ValueError):
    pass


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> Mapping:
    """torch.load with weights_only=True; a file that needs arbitrary unpickling is refused unless
    `trust` (the user vouches for it: mmhuman3d `meta` may hold objects weights_only rejects)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a refused global (an object a checkpoint may hold): a broken file
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another "
                                  f"kind of file: {_first_line(err)})") from None
        if not trust:
            raise CheckpointError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({_first_line(err)}); "
                "if you trust this file, pass --trust-checkpoint to load it with full unpickling") from None
    except Exception as err:  # zip/pickle corruption and the like
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another kind of "
                              f"file: {_first_line(err)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a class it names that is not installed, and the like
        raise CheckpointError(f"{path}: cannot be unpickled even with --trust-checkpoint ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def extract_state_dict(ckpt: Mapping, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the HMR weights of a checkpoint with `backbone.` / `head.` prefixes."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(ckpt).__name__}")
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        sd = ckpt["state_dict"]
    elif "model" in ckpt and isinstance(ckpt["model"], Mapping):
        sd = ckpt["model"]
    else:
        sd = ckpt
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(IGNORED_PREFIXES) or key.startswith(("avgpool", "fc.")):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, expected a tensor")
        if key.startswith(("backbone.", "head.")):
            out[key] = value
        elif key.startswith(BACKBONE_NAMES):
            out["backbone." + key] = value
        elif key.startswith(HEAD_NAMES):
            out["head." + key] = value
        else:
            raise CheckpointError(f"{source}: unexpected key {key!r} (neither backbone, head nor an ignored part)")
    if not out:
        raise CheckpointError(f"{source}: no backbone/head weights found")
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel and torch.compile wrappers (itself when unwrapped)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def load_hmr_weights(model: torch.nn.Module, ckpt: Mapping | str | os.PathLike, trust: bool = False,
                     source: str | None = None) -> None:
    """Load every backbone/head tensor of `model` from `ckpt`; refuse another backbone and missing,
    extra or mis-shaped keys. `source` names a dict `ckpt` in errors."""
    model = unwrap(model)
    source = os.fspath(ckpt) if isinstance(ckpt, (str, os.PathLike)) else (source or "checkpoint")
    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = read_checkpoint(ckpt, trust=trust)
    sd = extract_state_dict(ckpt, source)
    want = getattr(getattr(model, "backbone", None), "arch", None)
    try:
        have = infer_backbone(sd, source)
    except CheckpointError:
        have = None  # neither: the key checks below name what is wrong
    if want is not None and have is not None and have != want:
        raise CheckpointError(f"{source}: checkpoint is {have}, config asks {want}")
    expected = model.state_dict()
    wanted = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in wanted if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        raise CheckpointError(f"{source}: " + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} (model expects {tuple(v.shape)})" for k, v in expected.items()
           if k in sd and sd[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{source}: mis-shaped key(s): " + "; ".join(bad))
    model.load_state_dict({k: sd.get(k, v) for k, v in expected.items()}, strict=True)


def infer_backbone(ckpt: Mapping, source: str = "checkpoint") -> str:
    """'resnet50' or 'resnet18' from the weights (bottleneck blocks have conv3, ResNet-50 has layer3.5)."""
    sd = extract_state_dict(ckpt, source)
    if "backbone.layer1.0.conv3.weight" in sd and "backbone.layer3.5.conv1.weight" in sd:
        return "resnet50"
    if "backbone.layer1.0.conv2.weight" in sd and "backbone.layer1.2.conv1.weight" not in sd:
        return "resnet18"
    raise CheckpointError(f"{source}: backbone is neither ResNet-50 nor ResNet-18 "
                          f"(first keys: {', '.join(list(sd)[:4])})")


def trained_input_res(ckpt: Mapping, source: str = "checkpoint") -> int | None:
    """The network input side a spin_fast run trained with (its config's model.input_res, kept in the
    checkpoint's meta); None for mmhuman3d / SPIN checkpoints and runs at the crop's own 224."""
    meta = ckpt.get("meta") if isinstance(ckpt, Mapping) else None
    config = meta.get("config") if isinstance(meta, Mapping) else None
    model_cfg = config.get("model") if isinstance(config, Mapping) else None
    res = model_cfg.get("input_res") if isinstance(model_cfg, Mapping) else None
    from spin_fast.constants import MIN_INPUT_RES
    from spin_fast.model.hmr import check_input_res

    try:
        return check_input_res(res)
    except ValueError:
        raise CheckpointError(f"{source}: meta.config.model.input_res is {res!r}, expected an int >= "
                              f"{MIN_INPUT_RES} or None") from None


def load_model(checkpoint, mean_params=None, backbone: str | None = None, trust: bool = False,
               device=None) -> torch.nn.Module:
    """An HMR network (eval mode) with the weights of `checkpoint` (mmhuman3d, SPIN or spin_fast);
    the backbone depth is read from the weights unless given, the input side from a spin_fast
    checkpoint's config."""
    from spin_fast.model.hmr import HMR

    ckpt = read_checkpoint(checkpoint, trust=trust)
    arch = backbone or infer_backbone(ckpt, os.fspath(checkpoint))
    model = HMR(arch, mean_params=mean_params, input_res=trained_input_res(ckpt, os.fspath(checkpoint)))
    load_hmr_weights(model, ckpt, source=os.fspath(checkpoint))
    return model.to(device).eval()
