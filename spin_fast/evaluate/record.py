"""A training run's record: its network on a test set over training, and its fits over training.

    python -m spin_fast.evaluate.record RUN [--data-root DIR] [--dataset pw3d] [--png FILE] [--out FILE]

For every checkpoint the run kept (RUN/checkpoints/step_*.pth; train with `--keep_checkpoints 0` to
keep them all), `spin_fast.evaluate` scores the network beside the mean pose on the same samples (and
adds eval/<set>/* to the run's TensorBoard events at the checkpoint's step). From RUN/log.csv come the
fits' columns: `fit_updated` (fits/updated_fraction: the share of the logged step's batch whose in-loop
SMPLify fit replaced the stored one) and `fits_pa_mpjpe` (fits/pa_mpjpe_to_truth: the stored fits'
PA-MPJPE to the ground truth, where training samples have it). Writes the record as JSON (default
RUN/record.json) and a figure (default RUN/record.png), both atomically, and prints the summary.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from pathlib import Path

METRICS = {"pa_mpjpe": "PA-MPJPE", "mpjpe": "MPJPE", "pve": "PVE"}
ROLLING = 5  # logged rows the updated share is averaged over in the figure (one logged batch is noisy)


def _float(row: dict, key: str) -> float:
    try:
        return float(row.get(key, "nan") or "nan")
    except ValueError:
        return float("nan")


def fits_series(rows: list[dict]) -> dict:
    """The fits' columns of log.csv rows: steps, updated share, stored fits' PA-MPJPE to the truth."""
    return {"step": [int(r["step"]) for r in rows], "updated_fraction": [_float(r, "fit_updated") for r in rows],
            "pa_mpjpe_to_truth": [_float(r, "fits_pa_mpjpe") for r in rows]}


def rolling_mean(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        w = [v for v in values[max(0, i - window + 1):i + 1] if math.isfinite(v)]
        out.append(sum(w) / len(w) if w else float("nan"))
    return out


def build_record(run: Path, data_root: str | None, dataset: str) -> dict:
    """Evaluate every kept checkpoint of `run` and read its log.csv (see the module docstring)."""
    from spin_fast.evaluate.__main__ import main as evaluate
    from spin_fast.plots import read_log_csv
    checkpoints = sorted((int(m.group(1)), p) for p in (run / "checkpoints").glob("step_*.pth")
                         if (m := re.fullmatch(r"step_(\d+)\.pth", p.name)))
    if not checkpoints:
        raise SystemExit(f"{run / 'checkpoints'}: no step_*.pth checkpoints to evaluate")
    log = run / "log.csv"
    if not log.is_file():
        raise SystemExit(f"{log}: no training log")
    evals, mean_pose, synthetic = [], None, None
    with tempfile.TemporaryDirectory() as tmp:
        for step, path in checkpoints:
            argv = ["--checkpoint", str(path), "--dataset", dataset, "--work-dir", str(run),
                    "--out", os.path.join(tmp, f"{step}.json")]
            if data_root is not None:
                argv += ["--data-root", data_root]
            report = evaluate(argv)
            evals.append({"step": step, **{k: report[k] for k in METRICS if k in report}})
            mean_pose = {k: report["baseline"][k] for k in METRICS if k in report["baseline"]}
            synthetic = report["synthetic"]
    fits = fits_series(read_log_csv(log))
    truth = [v for v in fits["pa_mpjpe_to_truth"] if math.isfinite(v)]
    updated = [v for v in fits["updated_fraction"] if math.isfinite(v)]
    last = evals[-1]
    summary = {
        "steps": last["step"], "dataset": dataset, "synthetic": synthetic,
        "final": {k: last[k] for k in METRICS if k in last}, "mean_pose": mean_pose,
        "final_over_mean_pose": {k: last[k] / mean_pose[k] for k in METRICS if k in last and k in mean_pose},
        "updated_fraction_mean": sum(updated) / len(updated) if updated else None,
        "updated_fraction_last_rows": sum(updated[-ROLLING:]) / len(updated[-ROLLING:]) if updated else None,
        "fits_pa_mpjpe_to_truth_start": truth[0] if truth else None,
        "fits_pa_mpjpe_to_truth_end": truth[-1] if truth else None,
    }
    return {"run": str(run), "summary": summary, "evaluations": evals, "fits": fits}


def record_figure(record: dict):
    from spin_fast.plots import training_record_figure

    evals, s = record["evaluations"], record["summary"]
    metrics = {label: [e[k] for e in evals] for k, label in METRICS.items() if k in evals[0]}
    mean_pose = {METRICS[k]: v for k, v in (s["mean_pose"] or {}).items()}
    fits = record["fits"]
    series = {f"in-loop fits replacing the stored one (share, mean of {ROLLING} logs)":
              rolling_mean(fits["updated_fraction"], ROLLING)}
    if any(math.isfinite(v) for v in fits["pa_mpjpe_to_truth"]):
        series["stored fits' PA-MPJPE to the truth (mm)"] = fits["pa_mpjpe_to_truth"]
    title = f"{Path(record['run']).name}: {s['dataset']}" + (" (synthetic stand-in)" if s["synthetic"] else "")
    return training_record_figure([e["step"] for e in evals], metrics, mean_pose, fits["step"], series, title=title)


def summary_lines(record: dict) -> list[str]:
    s = record["summary"]
    lines = [f"{s['dataset']} at step {s['steps']}: " + ", ".join(
        f"{METRICS[k]} {v:.2f} mm (mean pose {s['mean_pose'][k]:.2f}, {s['final_over_mean_pose'][k]:.2f}x)"
        for k, v in s["final"].items())]
    if s["updated_fraction_mean"] is not None:
        lines.append(f"in-loop fits that replaced the stored one: {100 * s['updated_fraction_mean']:.1f}% of the logged "
                     f"batches' samples ({100 * s['updated_fraction_last_rows']:.1f}% in the last {ROLLING} logged)")
    if s["fits_pa_mpjpe_to_truth_start"] is not None:
        lines.append(f"stored fits' PA-MPJPE to the truth: {s['fits_pa_mpjpe_to_truth_start']:.2f} mm at the first "
                     f"logged step, {s['fits_pa_mpjpe_to_truth_end']:.2f} mm at the last")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.evaluate.record", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="the training work dir")
    ap.add_argument("--data-root", default=None, help="the data root the run trained on (default: as evaluate)")
    ap.add_argument("--dataset", default="pw3d", help="the test set (default pw3d)")
    ap.add_argument("--png", default=None, help="the figure (default RUN/record.png)")
    ap.add_argument("--out", default=None, help="the record as JSON (default RUN/record.json)")
    args = ap.parse_args(argv)
    from spin_fast.atomic import atomic_write_json, check_writable
    from spin_fast.plots import save_png

    run = Path(args.run)
    if not run.is_dir():
        raise SystemExit(f"{run}: no such training work dir")
    png, out = Path(args.png or run / "record.png"), Path(args.out or run / "record.json")
    for flag, target in (("--png", png), ("--out", out)):  # before the evaluations, not after
        if target.is_dir():
            raise SystemExit(f"{flag} {target} is a folder; name the file to write")
        check_writable(target.parent, flag)
    record = build_record(run, args.data_root, args.dataset)
    save_png(record_figure(record), png)
    atomic_write_json(record, out)
    print("\n".join(summary_lines(record)))
    print(f"wrote {out} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from spin_fast.cli import run_command

    sys.exit(run_command("evaluate.record", main, sys.argv[1:]))
