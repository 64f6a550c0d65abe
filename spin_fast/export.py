"""`python -m spin_fast.export --checkpoint CKPT --out hmr.onnx [--batch N | --dynamic-batch] [--input-res R]`

The HMR network of a checkpoint (spin_fast, mmhuman3d or SPIN, as `evaluate` reads them) as an ONNX
file, checked before it is written: onnxruntime and the torch network run the same crops and every
output must agree to --atol (the differences are printed). The file's input and outputs are described
in spin_fast.model.onnx (img (B, 3, R, R) ImageNet-normalised -> rotmat, betas, cam, pose6d).

--input-res R: the network runs at R x R (the 224 crop resized to R, bilinear, antialiased, as a
spin_fast run trained with model.input_res does); default: the checkpoint's own side, else 224.
An existing --out is replaced only with --overwrite. Needs the extra `export`
(`pip install 'spin_fast[export]'`: onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from spin_fast.cli import run_command
from spin_fast.errors import SpinFastError


class ExportError(SpinFastError):
    """An export that cannot be made as asked (the message names the flag and the file)."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="HMR weights (mmhuman3d, SPIN or spin_fast)")
    ap.add_argument("--out", required=True, help="the .onnx file to write")
    batch = ap.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size of the file (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="a batch axis of any size")
    ap.add_argument("--input-res", type=int, help="input side R (default: the checkpoint's, else 224)")
    ap.add_argument("--data-root", help="SMPL assets for the mean parameters (default: $SPIN_FAST_DATA_ROOT, else "
                                        "the synthetic stand-in)")
    ap.add_argument("--backbone", choices=("resnet50", "resnet18"), help="default: read from the checkpoint")
    ap.add_argument("--atol", type=float, default=1e-4, help="largest |onnx - torch| accepted (default 1e-4)")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="allow full unpickling of a checkpoint that weights_only=True refuses")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return ap


def main(argv=None) -> int:
    """The command, through the one handler of every command (spin_fast.cli)."""
    return run_command("export", run, argv)


def run(argv=None) -> dict:
    """The export on the command line `argv`; returns {path, max_abs_diff, input_res, batch}."""
    args = build_parser().parse_args(argv)
    from spin_fast.assets import resolve_data_root
    from spin_fast.atomic import check_writable
    from spin_fast.constants import IMG_RES, MIN_INPUT_RES
    from spin_fast.model.checkpoint_import import load_model
    from spin_fast.model.onnx import OnnxHMR, compare_onnx, example_crops, export_onnx

    if not os.path.isfile(args.checkpoint):
        raise ExportError(f"--checkpoint {args.checkpoint} does not exist")
    if args.batch < 1:
        raise ExportError(f"--batch must be >= 1, got {args.batch}")
    if args.input_res is not None and args.input_res < MIN_INPUT_RES:
        raise ExportError(f"--input-res must be >= {MIN_INPUT_RES} (the backbone's stride), got {args.input_res}")
    out = Path(args.out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; name the .onnx file to write")
    if out.exists() and not args.overwrite:
        raise ExportError(f"--out {out} already exists; choose another name, or pass --overwrite to replace it")
    check_writable(out.parent if str(out.parent) else Path("."), "--out")
    paths = resolve_data_root(args.data_root)
    model = load_model(args.checkpoint, paths.mean_params, args.backbone, trust=args.trust_checkpoint, device="cpu")
    trained = model.input_res
    res = args.input_res or trained or IMG_RES
    if trained is not None and res != trained:
        print(f"export: the checkpoint was trained at input_res {trained}; exporting it at {res}", file=sys.stderr)
    model.input_res = res if res != IMG_RES or trained is not None else None  # the network runs at R
    batch = None if args.dynamic_batch else args.batch
    meta = {"backbone": model.backbone.arch, "checkpoint": os.path.basename(args.checkpoint)}
    # write beside the target first: the file lands at --out only once onnxruntime agrees with torch
    staging = out.parent / f".{out.name}.{os.getpid()}.check.onnx"
    try:
        export_onnx(model, staging, batch=batch, input_res=res, metadata=meta)
        n = 3 if batch is None else batch  # a dynamic file is checked on a batch unlike the traced one (2)
        comparison = compare_onnx(OnnxHMR(staging), model, example_crops(n, res, seed=1))
        diffs = "  ".join(f"{k} {v:.2e}" for k, v in comparison.max_abs_diff.items())
        if comparison.worst > args.atol:
            raise ExportError(f"--out {out}: onnxruntime and torch differ by up to {comparison.worst:.3g} (> --atol "
                              f"{args.atol:g}): {diffs}; nothing written")
        os.replace(staging, out)
    finally:
        if staging.exists():
            staging.unlink()
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB): {meta['backbone']}, img ({'batch' if batch is None else batch}, 3, {res}, "
          f"{res}); onnxruntime vs torch on {comparison.batch} crops, max |diff|: {diffs}", file=sys.stderr)
    return {"path": str(out), "max_abs_diff": comparison.max_abs_diff, "input_res": res, "batch": batch}


if __name__ == "__main__":
    sys.exit(main())
