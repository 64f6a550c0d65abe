"""`python -m spin_fast.evaluate --checkpoint CKPT | --onnx FILE | --work-dir RUN [--data-root DIR] [--dataset NAME|all]
[--batch-size N] [--bf16] [--channels-last] [--out results.json] [--histogram errors.png]`:
the SPIN test sets, each beside the mean-pose baseline on the same samples, and images/s.

Test sets (`--dataset`, default pw3d; `all` = every one whose file is under the data root):
    pw3d          3DPW               MPJPE, PA-MPJPE, PVE (mm)
    h36m-p1       Human3.6M, prot. 1 MPJPE, PA-MPJPE (mm)
    h36m-p2       Human3.6M, prot. 2 MPJPE, PA-MPJPE (mm)
    mpi-inf-3dhp  MPI-INF-3DHP       MPJPE, PA-MPJPE (mm), 3DPCK, PA-3DPCK, 3DAUC, PA-3DAUC (%)
(spin_fast.evaluate.runner says how each is scored.)

Without --data-root (or $SPIN_FAST_DATA_ROOT) it evaluates on the synthetic test splits, rendered on
first use. `--mean-pose` instead of `--checkpoint` scores the mean-parameter baseline alone; `--onnx FILE`
scores a network exported by `python -m spin_fast.export` (run by onnxruntime on the CPU in place of the
torch network; the data, SMPL and metrics are the same).
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
    what.add_argument("--onnx", help="an HMR network exported by python -m spin_fast.export (run by onnxruntime)")
    ap.add_argument("--data-root", help="mmhuman3d data/ folder (default: $SPIN_FAST_DATA_ROOT, else synthetic)")
    ap.add_argument("--dataset", default="pw3d", help="a test set: pw3d (default), h36m-p1, h36m-p2, mpi-inf-3dhp, "
                                                      "or all (every test set whose file is under the data root)")
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
    ap.add_argument("--histogram", metavar="PNG", help="write the per-sample metrics' histograms (a panel per test "
                                                       "set and metric) here")
    ap.add_argument("--work-dir", help="a training work dir: its latest checkpoint by default, and the metrics "
                                       "go to its TensorBoard events")
    ap.add_argument("--no-baseline", action="store_true", help="do not score the mean pose beside the checkpoint")
    return ap


def onnx_predictor(net):
    """predict(img) of an exported network (spin_fast.model.onnx.OnnxHMR): its only change to the protocol."""
    def predict(img: torch.Tensor):
        out = net(img)
        return out.rotmat, out.betas

    return predict


def _checkpoint_step(path: str) -> int | None:
    """The training step a spin_fast checkpoint was written at (None for other checkpoints)."""
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("meta") or {}
        return int(meta["step"]) if "step" in meta else None
    except Exception:  # not ours, or not loadable without trust: no step to file the metrics under
        return None


class EvaluateError(SystemExit):
    """A command-line mistake, reported in one line with exit status 2 (`spin_fast.cli.run_command`)."""


def log_to_tensorboard(work_dir: str, dataset: str, metrics: dict, step: int) -> None:
    """eval/<dataset>/<metric> scalars in an event file of work_dir (TensorBoard shows it beside training's)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=work_dir, filename_suffix=".eval") as tb:
        for k, v in metrics.items():
            tb.add_scalar(f"eval/{dataset}/{k}", v, step)


def chosen_test_sets(name: str, paths) -> list[str]:
    """The test sets `--dataset name` asks for; `all`: those whose file is under the data root (the rest
    are named on stderr)."""
    from spin_fast.data.datasets import DATASETS, TEST_DATASETS

    known = ", ".join(TEST_DATASETS + ("all",))
    if name != "all":
        if name not in DATASETS:
            raise EvaluateError(f"--dataset: unknown dataset {name!r}; known: {known}")
        if DATASETS[name].split != "test":
            raise EvaluateError(f"--dataset {name} is a training set; evaluate a test set ({known})")
        return [name]
    present = [n for n in TEST_DATASETS if DATASETS[n].npz_path(paths).is_file()]
    for n in TEST_DATASETS:
        if n not in present:
            print(f"spin_fast.evaluate: --dataset all: skipping {n} ({DATASETS[n].npz_path(paths)} does not exist)",
                  file=sys.stderr)
    if not present:
        raise EvaluateError(f"--dataset all: no test set file under {paths.root / 'preprocessed_datasets'} "
                            f"(looked for {', '.join(DATASETS[n].ann_file + '.npz' for n in TEST_DATASETS)})")
    return present


LABELS = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "pve": "PVE", "3dpck": "3DPCK", "pa_3dpck": "PA-3DPCK",
          "3dauc": "3DAUC", "pa_3dauc": "PA-3DAUC"}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_table(results: dict, synthetic: bool) -> str:
    """One row per test set and model (the checkpoint, then the mean pose scored in the same pass)."""
    from spin_fast.evaluate.runner import ALL_METRICS, UNITS

    cols = [k for k in ALL_METRICS if any(k in r["metrics"] for r in results.values())]
    head = ["dataset", "samples", "model"] + [f"{LABELS[k]} ({UNITS[k]})" for k in cols] + ["images/s"]
    rows = []
    for name, r in results.items():
        rows.append([name, str(r["num_samples"]), r["model"]] + [_fmt(r["metrics"].get(k)) for k in cols]
                    + [f"{r['images_per_s']:.1f}"])
        if r["baseline"] is not None:
            rows.append([name, str(r["num_samples"]), "mean pose"]
                        + [_fmt(r["baseline"].get(k)) for k in cols] + ["-"])
    width = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    def line(cells):  # names left, numbers right
        return "  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, width)))

    text = "\n".join([line(head)] + [line(x) for x in rows])
    return text + ("\n(synthetic stand-in data: these numbers say nothing about real accuracy)" if synthetic else "")


def _line(metrics: dict) -> str:
    from spin_fast.evaluate.runner import UNITS

    return "  ".join(f"{LABELS[k]} {v:.2f} {UNITS[k]}" for k, v in metrics.items())


def main(argv=None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.work_dir and not args.checkpoint and not args.mean_pose and not args.onnx:
        args.checkpoint = os.path.join(args.work_dir, "checkpoints", "latest.pth")
    if not args.checkpoint and not args.mean_pose and not args.onnx:
        ap.error("one of --checkpoint, --onnx, --mean-pose or --work-dir is required")
    if args.onnx and (args.bf16 or args.channels_last):
        raise EvaluateError("--bf16 and --channels-last set the torch network; an --onnx file runs as exported")
    from spin_fast.config import parse_device
    from spin_fast.data import BackendUnavailable, build_eval_loader, choose_backend
    from spin_fast.data.humandata import HumanDataError
    from spin_fast.data.datasets import DATASETS
    from spin_fast.data.synth import open_data_root
    from spin_fast.evaluate.runner import UNITS

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dataset != "all":
        chosen_test_sets(args.dataset, None)  # a wrong name before anything is loaded
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise SystemExit(f"--checkpoint {args.checkpoint} does not exist")
    if args.onnx and not os.path.isfile(args.onnx):
        raise SystemExit(f"--onnx {args.onnx} does not exist")
    if args.work_dir and not os.path.isdir(args.work_dir):
        raise SystemExit(f"--work-dir {args.work_dir} is not a folder")
    from spin_fast.atomic import check_writable

    for flag, target in (("--out", args.out), ("--histogram", args.histogram)):
        if target:
            check_writable(os.path.dirname(os.path.abspath(target)), flag)  # before the run, not after
            if os.path.isdir(target):
                raise SystemExit(f"{flag} {target} is a folder; name the file to write")
    device = parse_device(args.device)
    if device.type == "cuda":  # Triton launches on the current device, whatever the tensors' device
        torch.cuda.set_device(device)
    try:
        choose_backend(args.loader, device)
    except BackendUnavailable as e:
        raise SystemExit(str(e)) from None

    paths, synthetic = open_data_root(args.data_root)
    names = chosen_test_sets(args.dataset, paths)
    bodies = Bodies.from_paths(paths, device)
    amp = torch.bfloat16 if args.bf16 else None
    if args.mean_pose:
        predict, backbone = mean_pose_predictor(paths.mean_params), None
    elif args.onnx:
        from spin_fast.model.onnx import OnnxHMR

        net = OnnxHMR(args.onnx)
        predict, backbone = onnx_predictor(net), net.metadata.get("backbone")
    else:
        model = load_model(args.checkpoint, paths.mean_params, args.backbone, trust=args.trust_checkpoint,
                           device=device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        predict, backbone = hmr_predictor(model, amp, args.channels_last), model.backbone.arch
    baseline = None if args.mean_pose or args.no_baseline else mean_pose_predictor(paths.mean_params)
    from spin_fast.progress import Progress

    what = "mean pose" if args.mean_pose else "onnx" if args.onnx else "checkpoint"
    settings = f"{device}, {'bf16' if args.bf16 else 'fp32'}{', channels_last' if args.channels_last else ''}"
    if args.onnx:
        settings = f"onnxruntime cpu, {device}"
    results, per_sample = {}, {}
    for name in names:
        spec = DATASETS[name]
        try:
            loader = build_eval_loader(paths, name, batch_size=args.batch_size, backend=args.loader,
                                       threads=args.threads, device=device)
        except HumanDataError as e:  # the file and key named; add the test set
            where = e.path + (f": key {e.key!r}" if e.key is not None else "") + ": "
            text = str(e)[len(where):] if str(e).startswith(where) else str(e)
            raise HumanDataError(e.path, e.key, text if f"test set {name}" in text else f"test set {name}: {text}") \
                from None
        with Progress(sum(loader.dataset_sizes), f"evaluate {name}", unit="img") as bar:
            result = evaluate(predict, loader, bodies, device=device, baseline=baseline,
                              keep_per_sample=bool(args.histogram), progress=bar, protocol=spec.protocol)
        results[name] = {"model": what, "loader": loader.backend, "units": {k: UNITS[k] for k in result.metrics},
                         **result.summary(), "metrics": dict(result.metrics)}
        print(f"{name}: {result.num_samples} samples  {_line(result.metrics)}  {result.images_per_s:.1f} "
              f"images/s ({settings})" + ("  [synthetic data]" if synthetic else ""))
        if result.baseline is not None:
            pa, base_pa = result.metrics["pa_mpjpe"], result.baseline["pa_mpjpe"]
            print(f"{name}: mean-pose baseline, same samples:  {_line(result.baseline)}  (the checkpoint is "
                  f"{'better' if pa < base_pa else 'NOT better'} in PA-MPJPE by {abs(base_pa - pa):.2f} mm)")
        if args.histogram:
            per_sample[name] = result.per_sample

    print(format_table(results, synthetic))
    common = {
        "data_root": str(paths.root), "synthetic": synthetic,
        "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
        "onnx": os.path.abspath(args.onnx) if args.onnx else None,
        "mean_pose": args.mean_pose, "backbone": backbone, "batch_size": args.batch_size, "bf16": args.bf16,
        "channels_last": args.channels_last, "device": str(device), "torch": torch.__version__,
        "published_3dpw": PUBLISHED,
    }
    per_set = {n: {k: v for k, v in r.items() if k not in ("metrics", "model")} for n, r in results.items()}
    if args.dataset == "all":
        report = {"dataset": "all", "datasets": names, **common, "results": per_set}
    else:  # one test set: its numbers at the top level too
        report = {"dataset": names[0], **common, **per_set[names[0]], "results": per_set}
    if args.histogram:
        from spin_fast.plots import error_histogram_figure, save_png

        title = "mean pose" if args.mean_pose else os.path.basename(args.onnx or args.checkpoint)
        panels, base, labels, units = {}, {}, {}, {}
        for n, ps in per_sample.items():
            for k, v in ps.items():
                panels[f"{n}/{k}"] = v.numpy()
                labels[f"{n}/{k}"] = f"{n} {LABELS[k]}" if len(names) > 1 else LABELS[k]
                units[f"{n}/{k}"] = UNITS[k]
                if results[n]["baseline"] is not None:
                    base[f"{n}/{k}"] = results[n]["baseline"][k]
        fig = error_histogram_figure(panels, baseline=base or None, title=f"{args.dataset}: {title}", labels=labels,
                                     units=units)
        save_png(fig, args.histogram)
        print(f"wrote {args.histogram}", file=sys.stderr)
    if args.work_dir:
        step = _checkpoint_step(args.checkpoint) if args.checkpoint else None
        for n, r in results.items():
            metrics = dict(r["metrics"])
            if r["baseline"] is not None:
                metrics.update({f"mean_pose_{k}": v for k, v in r["baseline"].items()})
            log_to_tensorboard(args.work_dir, n, metrics, step or 0)
        print(f"added eval/{{{','.join(names)}}}/* to the TensorBoard events of {args.work_dir} at step {step or 0}",
              file=sys.stderr)
    if args.out:
        write_json_atomic(report, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    from spin_fast.cli import run_command

    # a wrong name, a data file's problem (file, key, test set named): one line, exit 2
    sys.exit(run_command("evaluate", main))
