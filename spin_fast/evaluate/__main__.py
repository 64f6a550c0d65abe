"""`python -m spin_fast.evaluate --checkpoint CKPT | --work-dir RUN [--data-root DIR] [--dataset pw3d]
[--batch-size N] [--bf16] [--channels-last] [--out results.json] [--histogram errors.png]`:
3DPW MPJPE / PA-MPJPE / PVE (mm) and images/s, beside the mean-pose baseline on the same samples.

Without --data-root (or $SPIN_FAST_DATA_ROOT) it evaluates on the synthetic 3DPW-format split,
rendered on first use. `--mean-pose` instead of `--checkpoint` scores the mean-parameter baseline alone.
`--work-dir RUN` (a training work dir) evaluates RUN/checkpoints/latest.pth unless --checkpoint is
given, and adds the metrics to RUN's TensorBoard events (`eval/<dataset>/<metric>` at the checkpoint's step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from spin_fast.evaluate.runner import Bodies, evaluate, hmr_predictor, mean_pose_predictor, write_json_atomic
from spin_fast.model.checkpoint_import import load_model

PUBLISHED = {"mmhuman3d SPIN": {"mpjpe": 94.11, "pa_mpjpe": 57.54}, "SPIN paper": {"pa_mpjpe": 59.2},
             "HMR init (mmhuman3d)": {"mpjpe": 112.34, "pa_mpjpe": 67.53}}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.evaluate", description=__doc__.split("\n\n")[0])
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--checkpoint", help="HMR weights: mmhuman3d .pth, SPIN model_checkpoint.pt or spin_fast")
    what.add_argument("--mean-pose", action="store_true", help="score the mean pose/shape baseline (no network)")
    ap.add_argument("--data-root", help="mmhuman3d data/ folder (default: $SPIN_FAST_DATA_ROOT, else synthetic)")
    ap.add_argument("--dataset", default="pw3d", help="test set of the registry (default pw3d)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backbone", choices=("resnet50", "resnet18"), help="default: read from the checkpoint")
    ap.add_argument("--bf16", action="store_true", help="network under bf16 autocast (SMPL and metrics stay fp32)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--loader", default="auto", choices=("auto", "dali", "torchvision", "reference"))
    ap.add_argument("--threads", type=int, default=2, help="loader threads")
    ap.add_argument("--device", help="default: cuda if available, else cpu")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="allow full unpickling of a checkpoint that weights_only=True refuses")
    ap.add_argument("--out", help="write the results as JSON here (atomically)")
    ap.add_argument("--histogram", metavar="PNG", help="write a per-sample error histogram (MPJPE, PA-MPJPE, PVE) here")
    ap.add_argument("--work-dir", help="a training work dir: its latest checkpoint by default, and the metrics "
                                       "go to its TensorBoard events")
    ap.add_argument("--no-baseline", action="store_true", help="do not score the mean pose beside the checkpoint")
    return ap


def _checkpoint_step(path: str) -> int | None:
    """The training step a spin_fast checkpoint was written at (None for other checkpoints)."""
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("meta") or {}
        return int(meta["step"]) if "step" in meta else None
    except Exception:  # not ours, or not loadable without trust: no step to file the metrics under
        return None


def log_to_tensorboard(work_dir: str, dataset: str, metrics: dict, step: int) -> None:
    """eval/<dataset>/<metric> scalars in an event file of work_dir (TensorBoard shows it beside training's)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=work_dir, filename_suffix=".eval") as tb:
        for k, v in metrics.items():
            tb.add_scalar(f"eval/{dataset}/{k}", v, step)


def main(argv=None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.work_dir and not args.checkpoint and not args.mean_pose:
        args.checkpoint = os.path.join(args.work_dir, "checkpoints", "latest.pth")
    if not args.checkpoint and not args.mean_pose:
        ap.error("one of --checkpoint, --mean-pose or --work-dir is required")
    from spin_fast.config import default_device
    from spin_fast.data import BackendUnavailable, build_eval_loader, choose_backend
    from spin_fast.data.datasets import get_dataset
    from spin_fast.data.synth import open_data_root

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}")
    spec = get_dataset(args.dataset)
    if spec.split != "test":
        raise SystemExit(f"--dataset {args.dataset} is a training set; evaluate a test set (e.g. pw3d)")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise SystemExit(f"--checkpoint {args.checkpoint} does not exist")
    if args.work_dir and not os.path.isdir(args.work_dir):
        raise SystemExit(f"--work-dir {args.work_dir} is not a folder")
    from spin_fast.atomic import check_writable

    for flag, target in (("--out", args.out), ("--histogram", args.histogram)):
        if target:
            check_writable(os.path.dirname(os.path.abspath(target)), flag)  # before the run, not after
            if os.path.isdir(target):
                raise SystemExit(f"{flag} {target} is a folder; name the file to write")
    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda":  # Triton launches on the current device, whatever the tensors' device
        torch.cuda.set_device(device)
    try:
        choose_backend(args.loader, device)
    except BackendUnavailable as e:
        raise SystemExit(str(e)) from None

    paths, synthetic = open_data_root(args.data_root)
    bodies = Bodies.from_paths(paths, device)
    amp = torch.bfloat16 if args.bf16 else None
    if args.mean_pose:
        predict, backbone = mean_pose_predictor(paths.mean_params), None
    else:
        model = load_model(args.checkpoint, paths.mean_params, args.backbone, trust=args.trust_checkpoint,
                           device=device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        predict, backbone = hmr_predictor(model, amp, args.channels_last), model.backbone.arch
    loader = build_eval_loader(paths, args.dataset, batch_size=args.batch_size, backend=args.loader,
                               threads=args.threads, device=device)
    baseline = None if args.mean_pose or args.no_baseline else mean_pose_predictor(paths.mean_params)
    from spin_fast.progress import Progress

    with Progress(sum(loader.dataset_sizes), f"evaluate {args.dataset}", unit="img") as bar:
        result = evaluate(predict, loader, bodies, device=device, baseline=baseline,
                          keep_per_sample=bool(args.histogram), progress=bar)

    report = {
        "dataset": args.dataset, "data_root": str(paths.root), "synthetic": synthetic,
        "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
        "mean_pose": args.mean_pose, "backbone": backbone, "batch_size": args.batch_size, "bf16": args.bf16,
        "channels_last": args.channels_last, "device": str(device), "loader": loader.backend,
        "torch": torch.__version__, **{k: v for k, v in result.summary().items()},
        "units": {"mpjpe": "mm", "pa_mpjpe": "mm", "pve": "mm"}, "published_3dpw": PUBLISHED,
    }
    print(f"{args.dataset}: {result.num_samples} samples  MPJPE {result.mpjpe:.2f} mm  "
          f"PA-MPJPE {result.pa_mpjpe:.2f} mm  PVE {result.pve:.2f} mm  "
          f"{result.images_per_s:.1f} images/s ({device}, {'bf16' if args.bf16 else 'fp32'}"
          f"{', channels_last' if args.channels_last else ''})" + ("  [synthetic data]" if synthetic else ""))
    if result.baseline is not None:
        b = result.baseline
        print(f"{args.dataset}: mean-pose baseline, same samples:  MPJPE {b['mpjpe']:.2f} mm  "
              f"PA-MPJPE {b['pa_mpjpe']:.2f} mm  PVE {b['pve']:.2f} mm  "
              f"(the checkpoint is {'better' if result.pa_mpjpe < b['pa_mpjpe'] else 'NOT better'} in PA-MPJPE "
              f"by {abs(b['pa_mpjpe'] - result.pa_mpjpe):.2f} mm)")
    if args.histogram:
        from spin_fast.plots import error_histogram_figure, save_png

        what = "mean pose" if args.mean_pose else os.path.basename(args.checkpoint)
        fig = error_histogram_figure({k: result.per_sample[k].numpy() for k in ("mpjpe", "pa_mpjpe", "pve")},
                                     baseline=result.baseline, title=f"{args.dataset}: {what}",
                                     labels={"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "pve": "PVE"})
        save_png(fig, args.histogram)
        print(f"wrote {args.histogram}", file=sys.stderr)
    if args.work_dir:
        step = _checkpoint_step(args.checkpoint) if args.checkpoint else None
        metrics = {k: getattr(result, k) for k in ("mpjpe", "pa_mpjpe", "pve")}
        if result.baseline is not None:
            metrics.update({f"mean_pose_{k}": v for k, v in result.baseline.items()})
        log_to_tensorboard(args.work_dir, args.dataset, metrics, step or 0)
        print(f"added eval/{args.dataset}/* to the TensorBoard events of {args.work_dir} at step {step or 0}",
              file=sys.stderr)
    if args.out:
        write_json_atomic(report, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    from spin_fast.data import HumanDataError

    try:
        main()
    except HumanDataError as e:  # a data file's problem, named: no traceback
        raise SystemExit(f"spin_fast.evaluate: error: {e}") from None
