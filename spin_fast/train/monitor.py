"""What a training run shows and writes besides checkpoints (rank 0 only).

Every step: the progress display (`spin_fast.progress`: elapsed, ETA, img/s and the phase split
data / network / SMPLify / fits in ms per step, from step 1). Every logging step (the first one, every
`log_every`-th and the last; the only steps that turn the logged tensors into numbers and read the
phase timers of `spin_fast.train.timing`, CUDA events on a GPU): a row of `log.csv` and TensorBoard
scalars in the work dir:

    loss/total, loss/<term>          the weighted total and every unweighted loss term
    train/lr, train/images_per_s     learning rate, images/s (all processes) since the last logging step
    time/<phase>_ms                  ms per step since the last logging step: the timers' data, forward,
                                     smplify (the fits block), backward and smplify_fit (the SMPLify call
                                     in it), and the split the progress shows: network (forward + backward
                                     - the fits block) and fits (the fits block - the SMPLify call)
    fits/valid_fraction              share of the batch with a valid fit (or ground truth) as target
    fits/updated_fraction            share whose SMPLify fit replaced the stored one
    fits/kept_loss, smplify/final_loss   joint loss of the kept fit and SMPLify's final loss
    fits/pa_mpjpe_to_truth           where training samples have ground-truth SMPL: the stored fits'
                                     mean PA-MPJPE (mm) to it (spin_fast.train.fit_truth)

Every `image_every` steps: a few training crops with the predicted mesh and the SMPLify fit drawn
over them (`train/crops`: crop | prediction | fit, one row a sample). At the end: `loss_curve.png`.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch

from spin_fast.progress import Progress

LOSS_TERMS = ("keypoints3d", "keypoints2d", "vertices", "pose", "betas", "camera")
TIMED = ("data", "forward", "smplify", "backward", "smplify_fit")  # the loop's and the step's timer phases
SPLIT = {"data": "data", "network": "network", "SMPLify": "smplify_fit", "fits": "fits"}  # shown: column
IMAGE_SAMPLES = 4
PRED_COLOR, FIT_COLOR = (0.55, 0.7, 0.95), (0.95, 0.65, 0.35)
# log.csv column -> TensorBoard tag
TAGS = {"loss": "loss/total", **{t: f"loss/{t}" for t in LOSS_TERMS}, "lr": "train/lr",
        "images_per_s": "train/images_per_s",
        **{f"{p}_ms": f"time/{p}_ms" for p in TIMED + ("network", "fits")},
        "valid_fit": "fits/valid_fraction", "fit_updated": "fits/updated_fraction", "fit_loss": "fits/kept_loss",
        "smplify_loss": "smplify/final_loss", "fits_pa_mpjpe": "fits/pa_mpjpe_to_truth"}
_NOT_SCALARS = ("visuals",)


class TrainMonitor:
    """Progress, log.csv, TensorBoard and loss_curve.png of one run; every rank calls it the same way,
    only the `enabled` one (rank 0) writes."""

    def __init__(self, work_dir: Path, total_steps: int, start: int, log_every: int, image_every: int,
                 enabled: bool, resume: bool, body=None):
        self.work_dir, self.total, self.start = Path(work_dir), total_steps, start
        self.log_every, self.image_every, self.enabled, self.body = log_every, image_every, enabled, body
        self._last_log_step = start
        self.csv_path = self.work_dir / "log.csv"
        self._csv = self._writer = None
        self._resume = resume
        self._window_t, self._window_images = time.perf_counter(), 0
        self.progress = Progress(total_steps, "train", unit="step", initial=start, enabled=enabled)
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run drops the events logged after its checkpoint
            self.tb = SummaryWriter(log_dir=str(self.work_dir), purge_step=start + 1 if resume else None)

    # --- per step -----------------------------------------------------------------------------------
    def is_log_step(self, step: int) -> bool:
        return step == self.start + 1 or step % self.log_every == 0 or step == self.total

    def is_image_step(self, step: int) -> bool:
        return self.enabled and self.image_every > 0 and self.body is not None and step % self.image_every == 0

    def begin(self, step: int, ctx) -> None:
        """Before a step: the step keeps the image tensors on image steps."""
        ctx.keep_visuals = self.is_image_step(step)

    def end(self, step: int, logs: dict, batch: dict, images: int, lr: float, timer=None) -> dict | None:
        """After a step; on logging steps reads `timer` (a spin_fast.train.timing.PhaseTimer) and
        returns the logged numbers (every rank), else None."""
        self._window_images += images
        values = phases = None
        if self.is_log_step(step):
            dt = time.perf_counter() - self._window_t
            steps = max(step - self._last_log_step, 1)
            read = timer.read() if timer is not None else {}
            ms = {p: 1000 * read.get(p, 0.0) / steps for p in TIMED}
            ms["network"] = max(ms["forward"] + ms["backward"] - ms["smplify"], 0.0)
            ms["fits"] = max(ms["smplify"] - ms["smplify_fit"], 0.0)
            values = {k: float(v) for k, v in logs.items() if k not in _NOT_SCALARS}
            values.update(images_per_s=self._window_images / max(dt, 1e-9), lr=lr,
                          **{f"{p}_ms": ms[p] for p in TIMED + ("network", "fits")})
            self._window_t, self._window_images, self._last_log_step = time.perf_counter(), 0, step
            self._write(step, values)
            phases = {label: ms[col] / 1000 for label, col in SPLIT.items()}
        shown = {k: values[k] for k in ("loss", "keypoints2d", "keypoints3d")} if values else {}
        self.progress.update(1, images=images, phases=phases, force=values is not None, **shown)
        if "visuals" in logs and self.enabled:
            self.tb.add_image("train/crops", training_images(batch, logs["visuals"], self.body), step,
                              dataformats="HWC")
            self.tb.flush()
        return values

    def _write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        if self._csv is None:
            fields = ["step"] + list(values)
            exists = self.csv_path.is_file() and self._resume
            self._csv = open(self.csv_path, "a" if exists else "w", newline="")
            self._writer = csv.DictWriter(self._csv, fieldnames=fields, extrasaction="ignore")
            if not exists:
                self._writer.writeheader()
        self._writer.writerow({"step": step, **values})
        self._csv.flush()
        for key, tag in TAGS.items():
            if key in values and math.isfinite(values[key]):
                self.tb.add_scalar(tag, values[key], step)
        self.tb.flush()  # on disk now: a run that stops with an error keeps its curves

    def close(self, plot: bool = True) -> None:
        """Close the files and (with `plot`) draw loss_curve.png from log.csv."""
        self.progress.close()
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if plot and self.enabled and self.csv_path.is_file():
            from spin_fast.plots import plot_loss_curve

            plot_loss_curve(self.csv_path, self.work_dir / "loss_curve.png", terms=LOSS_TERMS)


# --- training images ---------------------------------------------------------------------------------
def crop_to_uint8(img: torch.Tensor) -> np.ndarray:
    """A normalised crop (3, H, W) -> (H, W, 3) uint8 RGB."""
    from spin_fast.constants import IMAGENET_MEAN, IMAGENET_STD

    x = img.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(x * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN), 0, 255).astype(np.uint8)


def overlay_mesh(crop: np.ndarray, vertices: np.ndarray, cam_t: np.ndarray, faces: np.ndarray, color,
                 alpha: float = 0.8) -> np.ndarray:
    """The mesh (SMPL frame, metres) at crop-camera translation cam_t (f = 5000 at the crop centre) over the crop."""
    from spin_fast.constants import FOCAL_LENGTH
    from spin_fast.render import render_mesh

    H, W = crop.shape[:2]
    rendered, mask, _ = render_mesh(vertices + cam_t[None], faces, np.tile(np.asarray(color), (len(faces), 1)),
                                    FOCAL_LENGTH, (W / 2, H / 2), W, H, background=crop)
    out = crop.copy()
    out[mask] = np.round(alpha * rendered[mask] + (1 - alpha) * crop[mask]).astype(np.uint8)
    return out


@torch.no_grad()
def training_images(batch: dict, visuals: dict, body, n: int = IMAGE_SAMPLES) -> np.ndarray:
    """(n * H, 3 * W, 3) uint8: per sample the crop, the prediction over it, the SMPLify fit over it."""
    n = min(n, batch["img"].shape[0])
    fit = visuals["fit"][:n].float()
    fit_vertices = body(fit[:, 72:], fit[:, 3:72], fit[:, :3], joint_set="smpl_24").vertices
    faces = body.faces.cpu().numpy()
    rows = []
    for i in range(n):
        crop = crop_to_uint8(batch["img"][i])
        pred = overlay_mesh(crop, visuals["pred_vertices"][i].float().cpu().numpy(),
                            visuals["pred_cam_t"][i].float().cpu().numpy(), faces, PRED_COLOR)
        fitted = overlay_mesh(crop, fit_vertices[i].cpu().numpy(), visuals["fit_cam_t"][i].float().cpu().numpy(),
                              faces, FIT_COLOR)
        rows.append(np.concatenate([crop, pred, fitted], axis=1))
    return np.concatenate(rows, axis=0)
