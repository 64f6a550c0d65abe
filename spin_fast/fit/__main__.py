"""`python -m spin_fast.fit --dataset NAME [--data-root DIR] [--out FILE] [--preset spin|mmhuman3d]
[--stage1-iters N --stage2-iters N] [--batch-size N] [--init mean|static|checkpoint] [--checkpoint CKPT]
[--device D] [--resume] [--overwrite]`: SMPLify every sample of a dataset, write its static fits.

Writes static_fits/<name>_fits.npy under the data root (or --out): (N, 82) = 72 axis-angle + 10 betas
in dataset order, the file training starts from, and <name>_fits.report.json beside it. Without
--data-root (or $SPIN_FAST_DATA_ROOT) it fits the synthetic stand-in. Several processes:
`torchrun --nproc_per_node=K -m spin_fast.fit ...` (each fits its share, rank 0 writes).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch

from spin_fast.cli import run_command
from spin_fast.fit.run import PRESETS
from spin_fast.recipes import RECIPES, help_lines


def build_parser() -> argparse.ArgumentParser:
    recipes = "\n".join(f"--preset {cb}: SMPLify recipe (crop geometry {RECIPES[cb].data.geometry})\n"
                         + help_lines(RECIPES[cb].smplify) for cb in PRESETS)
    ap = argparse.ArgumentParser(prog="python -m spin_fast.fit", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"{recipes}\n(spin_fast.recipes; docs/presets.md)")
    ap.add_argument("--dataset", required=True, help="dataset of the registry (h36m, coco, ...)")
    ap.add_argument("--data-root", help="mmhuman3d data/ folder (default: $SPIN_FAST_DATA_ROOT, else synthetic)")
    ap.add_argument("--out", help="fits file (default: <data root>/static_fits/<name>_fits.npy)")
    ap.add_argument("--preset", default="spin", choices=PRESETS,
                    help="the SMPLify recipe (objective, iterations, ftol and its stop rule, keypoint normaliser, "
                         "valid-fit rule: spin_fast.recipes) and crop geometry of that codebase (default spin)")
    iters = ", ".join(f"{cb} {RECIPES[cb].smplify.stage1_iters}" for cb in PRESETS)
    ap.add_argument("--stage1-iters", type=int, help=f"default: the preset's ({iters})")
    ap.add_argument("--stage2-iters", type=int, help=f"default: the preset's ({iters})")
    ap.add_argument("--batch-size", type=int, default=64, help="samples a batch; fixes the result with the rest")
    ap.add_argument("--init", default="mean", choices=("mean", "static", "checkpoint"),
                    help="start from the mean parameters, the existing static fits, or an HMR checkpoint")
    ap.add_argument("--checkpoint", help="HMR weights for --init checkpoint (mmhuman3d, SPIN or spin_fast)")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="allow full unpickling of a checkpoint that weights_only=True refuses")
    ap.add_argument("--device", help="default: cuda if available, else cpu (under torchrun: cuda:LOCAL_RANK)")
    ap.add_argument("--resume", action="store_true", help="continue the saved progress of a killed run")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing fits file / progress")
    ap.add_argument("--save-every", type=int, default=10, help="save progress every N batches")
    ap.add_argument("--loader", default="auto", choices=("auto", "dali", "torchvision", "reference"),
                    help="image loader (--init checkpoint only)")
    ap.add_argument("--threads", type=int, default=2, help="loader threads (--init checkpoint only)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted fit: the same arguments, --resume instead of
    --overwrite (the saved progress is kept and used)."""
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    return shlex.join(["python", "-m", "spin_fast.fit", *kept, "--resume"])


def main(argv=None) -> int:
    """The command, through the one handler of every command (spin_fast.cli): a user error is one
    line and exit status 2; Ctrl-C saves the progress and says how to continue, exit 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command("fit", _main, argv, resume=lambda: resume_command(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from spin_fast.config import init_distributed
    from spin_fast.data.batch import Sources
    from spin_fast.data.datasets import get_dataset
    from spin_fast.data.synth import open_data_root
    from spin_fast.fit.run import FitConfig, fit_dataset

    spec = get_dataset(args.dataset)
    try:
        cfg = FitConfig(args.dataset, args.preset, args.stage1_iters, args.stage2_iters, args.batch_size, args.init,
                        args.checkpoint).validate()
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if args.save_every < 1:
        raise SystemExit(f"--save-every must be >= 1, got {args.save_every}")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise SystemExit(f"--checkpoint {args.checkpoint} does not exist")
    rank, world, device = init_distributed(args.device or "auto")
    if args.device and world == 1:
        from spin_fast.config import parse_device

        device = parse_device(args.device)
    if device.type == "cuda":  # Triton launches on the current device, whatever the tensors' device
        torch.cuda.set_device(device)
    paths, _ = open_data_root(args.data_root, rank=rank, barrier=torch.distributed.barrier if world > 1 else None)
    if args.out:
        out = args.out
    elif spec.fits is not None:
        out = paths.static_fits(spec.fits)
    else:
        raise SystemExit(f"dataset {args.dataset} has no static fits file name; give --out")
    sources = Sources.from_registry(paths, [args.dataset])
    sources.data[0].require_training_labels()  # SMPLify fits the 2D keypoints: without them, nothing to fit
    result = fit_dataset(sources, paths, cfg, out, device=device, resume=args.resume, overwrite=args.overwrite,
                         save_every=args.save_every, rank=rank, world=world, loader_backend=args.loader,
                         threads=args.threads, trust_checkpoint=args.trust_checkpoint,
                         progress=not args.no_progress)
    if result is not None:
        r = result.report
        fps = f"{r['fits_per_s']:.1f} fits/s" if r["fits_per_s"] else "nothing left to fit"
        extra = (f"  PA-MPJPE {r['has_smpl']['pa_mpjpe']:.2f} mm vs GT ({r['has_smpl']['count']} with SMPL)"
                 if "has_smpl" in r else "")
        print(f"spin_fast.fit: {args.dataset}: {r['num_samples']} fits, {100 * r['valid_fraction']:.1f}% valid, "
              f"mean reprojection {r['mean_reprojection_px'] or float('nan'):.2f} px, {fps}{extra}"
              + (f" (resumed {result.batches_resumed} batches)" if result.batches_resumed else "")
              + f"\n  wrote {out} and {r['report']}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
