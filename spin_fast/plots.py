"""Figures spin_fast writes: the training loss curves and the per-sample evaluation errors.

Drawn with matplotlib's object API on the Agg canvas (no display, no pyplot global state), and
written atomically as PNG. The `*_figure` functions return the Figure (tests read its axes).

    loss_curve_figure(steps, series, lr)   one panel per series (the total first), step on x,
                                           log-y when a positive series spans > 20x, the learning
                                           rate in a last panel and every lr change marked in all
    error_histogram_figure(per_sample)     one histogram per metric (mm), mean marked, an optional
                                           baseline (the mean pose) marked beside it
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from spin_fast.atomic import atomic_write

LOG_Y_SPAN = 20.0  # a positive series spanning more than this factor gets a log y axis


def _figure(n_panels: int, cols: int, panel_size=(3.6, 2.6)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(1, min(cols, n_panels))
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _wants_log(values: Sequence[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_Y_SPAN


def lr_changes(steps: Sequence[int], lr: Sequence[float]) -> list[tuple[int, float]]:
    """(step, new lr) wherever the learning rate differs from the previous logged row."""
    return [(s, b) for s, a, b in zip(steps[1:], lr[:-1], lr[1:]) if not math.isclose(a, b, rel_tol=1e-9)]


def loss_curve_figure(steps: Sequence[int], series: Mapping[str, Sequence[float]],
                      lr: Sequence[float] | None = None, title: str = "training losses"):
    """One panel per entry of `series` (in order), plus 'learning rate' when `lr` is given."""
    names = list(series) + (["learning rate"] if lr is not None else [])
    fig, axes = _figure(len(names), cols=4)
    changes = lr_changes(steps, lr) if lr is not None else []
    for ax, name in zip(axes, names):
        values = list(lr) if name == "learning rate" else list(series[name])
        ax.plot(steps, values, color="tab:blue" if name != "learning rate" else "tab:green", lw=1.2,
                marker="." if len(steps) < 30 else None)
        if _wants_log(values) or (name == "learning rate" and changes and min(values) > 0):
            ax.set_yscale("log")
        for s, new_lr in changes:
            ax.axvline(s, color="tab:red", ls=":", lw=1)
        if changes and name == "learning rate":
            for s, new_lr in changes:
                ax.annotate(f"lr {new_lr:.2g}", (s, new_lr), fontsize=7, color="tab:red",
                            xytext=(3, 3), textcoords="offset points")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("lr" if name == "learning rate" else "loss")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title + (" (dotted: lr changes)" if changes else ""), fontsize=11)
    return fig


def save_png(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """The figure as a PNG, written atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))


def read_log_csv(csv_path: str | os.PathLike) -> list[dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_loss_curve(csv_path: str | os.PathLike, png_path: str | os.PathLike,
                    terms: Sequence[str] = ()) -> Path | None:
    """loss_curve.png from a training log.csv: the `loss` column (as 'total') and each of `terms`
    present in the file, with the `lr` column. Returns None when the log has no rows."""
    rows = read_log_csv(csv_path)
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    series = {"total": [float(r["loss"]) for r in rows]}
    for t in terms:
        if t in rows[0]:
            series[t] = [float(r[t]) for r in rows]
    lr = [float(r["lr"]) for r in rows] if "lr" in rows[0] else None
    return save_png(loss_curve_figure(steps, series, lr), png_path)


def error_histogram_figure(per_sample: Mapping[str, Sequence[float]], baseline: Mapping[str, float] | None = None,
                           title: str = "per-sample errors", labels: Mapping[str, str] | None = None,
                           units: Mapping[str, str] | None = None):
    """A histogram per metric of the per-sample values (`units[metric]`, default mm; '%' for a share of
    joints), its mean (and `baseline[metric]`) marked."""
    import numpy as np

    fig, axes = _figure(len(per_sample), cols=3)
    for ax, (metric, values) in zip(axes, per_sample.items()):
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]  # a sample without a visible joint has no PCK
        ax.hist(v, bins=min(30, max(5, len(v) // 2)), color="tab:blue", alpha=0.8)
        ax.axvline(v.mean(), color="tab:orange", lw=1.5, label=f"mean {v.mean():.1f}")
        if baseline and metric in baseline:
            ax.axvline(baseline[metric], color="tab:red", ls="--", lw=1.5,
                       label=f"mean pose {baseline[metric]:.1f}")
        ax.set_title((labels or {}).get(metric, metric), fontsize=10)
        unit = (units or {}).get(metric, "mm")
        ax.set_xlabel("error (mm)" if unit == "mm" else f"per sample ({unit})")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7)
    counts = {len(v) for v in per_sample.values()}
    fig.suptitle(f"{title} ({counts.pop()} samples)" if len(counts) == 1 else title, fontsize=11)
    return fig


def training_record_figure(eval_steps: Sequence[int], metrics: Mapping[str, Sequence[float]],
                           mean_pose: Mapping[str, float], log_steps: Sequence[int],
                           fits: Mapping[str, Sequence[float]], title: str = "training record"):
    """A run's record: the network's test metrics (mm) at each evaluated step, the mean pose's as dashed
    lines of the same colour (left); the fits' series from log.csv (right, one axis each: e.g. the share of
    in-loop fits that replaced a stored one, and the stored fits' PA-MPJPE to the truth)."""
    fig, axes = _figure(1 + len(fits), cols=1 + len(fits), panel_size=(4.4, 3.0))
    ax = axes[0]
    for (name, values), color in zip(metrics.items(), ("tab:blue", "tab:orange", "tab:green", "tab:purple")):
        ax.plot(eval_steps, values, color=color, lw=1.5, marker="o", ms=3, label=name)
        if name in mean_pose:
            ax.axhline(mean_pose[name], color=color, ls="--", lw=1, label=f"{name}, mean pose")
    ax.set_xlabel("step")
    ax.set_ylabel("mm")
    ax.set_title("test split: network vs mean pose", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    for ax, (name, values) in zip(axes[1:], fits.items()):
        ax.plot(log_steps, values, color="tab:red", lw=1.2)
        ax.set_xlabel("step")
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig
