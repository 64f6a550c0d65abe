"""Static fits for a whole dataset: batched SMPLify over every sample, resumable, shardable.

`fit_dataset(sources, ...)` reads one dataset through the training label pipeline at test time
(the bbox crop of `spin_fast.data.batch.make_plan`, identity augmentation, `assemble_labels`), so
every fit lives in the dataset's own frame, the one the trainer's fits store keeps. Per batch:

    1. start:    the mean parameters (twice: facing the camera and turned round, the lower SMPLify
                 objective wins, since a 2D fit seldom turns a body round by itself), the dataset's
                 existing static fits, or an HMR network's prediction (pose, betas and its
                 weak-perspective camera) on the test-time crop
    2. camera:   for mean / static starts, weighted least squares on the GT joints (all 49 where that
                 system is singular), as the trainer does for a stored fit
    3. SMPLify:  the trainer's `spin_fast.smplify.SMPLify` built from the preset's recipe
                 (`spin_fast.recipes`: objective, iterations, ftol and its stop rule, keypoint
                 normaliser), given the keypoints as that trainer gives them (`trainer_keypoints`)
    4. result:   fits SMPLify could not run (non-finite input, no visible keypoint) become the mean
                 parameters; valid = SMPLify ran and the recipe's valid-fit rule holds (spin: mean
                 joint loss < 100; mmhuman3d: summed < 10)

Batches are fixed by the batch size alone (batch b = samples b*B .. (b+1)*B - 1) and a batch's fits
depend on its own samples only (the mmhuman3d recipe's batch-wide stop couples the samples of one
batch, never batches), so a batch's result depends on nothing else: a run resumed from saved
progress, or split over processes (batch b on rank b % world), writes the same file as one
uninterrupted run. Progress goes to `<out>.progress/` (one file per launch and rank, written
atomically every `save_every` batches) and is removed once the fits file is written.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from spin_fast.atomic import atomic_torch_save, atomic_write_json
from spin_fast.constants import NUM_BETAS
from spin_fast.recipes import CODEBASES, Codebase, SMPLifyRecipe, recipe
from spin_fast.errors import Interrupted, SpinFastError
from spin_fast.run_lock import RunLock
from spin_fast.smplify.fits import FIT_DIM

INITS = ("mean", "static", "checkpoint")
PRESETS = CODEBASES  # whose SMPLify recipe and crop geometry (spin_fast.recipes)
# per-sample result columns kept while fitting (float32 arrays of shape (N,) unless noted)
_COLUMNS = {"fits": FIT_DIM, "cam_t": 3, "loss": 0, "px": 0, "valid": 0, "mpjpe": 0, "pa_mpjpe": 0}


class FitError(SpinFastError, ValueError):
    """A fit that cannot start as asked: its output, its saved progress or its dataset."""


@dataclass(frozen=True)
class FitConfig:
    """What determines the fits (anything else, device or process count, does not)."""

    dataset: str
    preset: Codebase = "spin"           # whose SMPLify recipe and crop geometry (spin_fast.recipes, docs/presets.md)
    stage1_iters: int | None = None     # None: the flavor's default (100 / 50)
    stage2_iters: int | None = None
    batch_size: int = 64
    init: str = "mean"                  # mean | static | checkpoint
    checkpoint: str | None = None       # HMR weights for init='checkpoint'

    def validate(self) -> "FitConfig":
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        for name in ("stage1_iters", "stage2_iters"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if (self.init == "checkpoint") != (self.checkpoint is not None):
            raise ValueError("init 'checkpoint' needs a checkpoint, and a checkpoint needs init 'checkpoint'")
        return self


def fit_recipe(cfg: FitConfig) -> SMPLifyRecipe:
    """The preset's SMPLify recipe (spin_fast.recipes) with the config's iterations where given."""
    import dataclasses

    base = recipe(cfg.preset).smplify
    return dataclasses.replace(base, **{k: getattr(cfg, k) for k in ("stage1_iters", "stage2_iters")
                                        if getattr(cfg, k) is not None})


@dataclass
class FitResult:
    fits: np.ndarray            # (N, 82) float32: 72 axis-angle + 10 betas, dataset order
    report: dict                # what goes into the report JSON
    batches_resumed: int = 0    # batches taken from saved progress


def mean_fit(mean_params) -> torch.Tensor:
    """The mean parameters (smpl_mean_params) as one (82,) axis-angle + betas row."""
    from spin_fast.geometry import rot6d_to_rotmat, rotmat_to_axis_angle
    from spin_fast.model.hmr import read_mean_params

    mp = read_mean_params(mean_params)
    pose = rotmat_to_axis_angle(rot6d_to_rotmat(torch.from_numpy(mp["pose"]).reshape(24, 6))).reshape(72)
    return torch.cat([pose.float(), torch.from_numpy(mp["shape"]).float()[:NUM_BETAS]])


def batch_indices(n: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


# --- one batch --------------------------------------------------------------------------------------------
def initial_camera(body, fits: torch.Tensor, kp2d: torch.Tensor) -> torch.Tensor:
    """Least-squares camera (B, 3) of fits (B, 82) on the GT joints, all 49 where that fails."""
    from spin_fast.smplify.camera import estimate_camera_translation

    joints = body.joints_only(fits[:, 72:], fits[:, 3:72], fits[:, :3], joint_set="smpl_49")
    every = estimate_camera_translation(joints, kp2d, joint_subset=None).translation
    return estimate_camera_translation(joints, kp2d, fallback=every).translation


def reprojection_px(body, fits: torch.Tensor, cam_t: torch.Tensor, kp2d: torch.Tensor) -> torch.Tensor:
    """(B,) mean pixel distance between the projected 49 joints and the keypoints of positive
    confidence (NaN where none is visible)."""
    from spin_fast.geometry import perspective_projection

    joints = body.joints_only(fits[:, 72:], fits[:, 3:72], fits[:, :3], joint_set="smpl_49")
    err = (perspective_projection(joints, cam_t) - kp2d[..., :2]).norm(dim=-1)
    vis = torch.isfinite(kp2d).all(-1) & (kp2d[..., 2] > 0)
    err = torch.where(vis, err, torch.zeros_like(err))
    return err.sum(-1) / vis.sum(-1)  # 0 / 0 = NaN: nothing to measure


def turned_around(fits: torch.Tensor) -> torch.Tensor:
    """fits (B, 82) with the body turned 180 degrees about its own vertical (y) axis."""
    from spin_fast.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle

    R = axis_angle_to_rotmat(fits[:, :3]) @ torch.diag(fits.new_tensor([-1.0, 1.0, -1.0]))
    return torch.cat([rotmat_to_axis_angle(R).reshape(-1, 3), fits[:, 3:]], 1)


def fit_batch(smplify, body, labels: dict, starts: list[torch.Tensor], init_cam: torch.Tensor | None,
              fallback: torch.Tensor, rec: SMPLifyRecipe | None = None) -> dict[str, torch.Tensor]:
    """SMPLify on one batch of labels (assemble_labels) from each start (B, 82) in `starts` (camera:
    init_cam or the least-squares one); per sample the fit of lowest SMPLify objective wins. rec: the
    SMPLify recipe (trainer keypoints, valid-fit rule; default the one of smplify.flavor). Returns
    the per-sample columns of `_COLUMNS` on the CPU."""
    from spin_fast.metrics import pw3d_metrics
    from spin_fast.smplify.in_loop import spin_trainer_keypoints

    dev = body.v_template.device
    kp2d = labels["keypoints2d"].to(dev).float()
    B = kp2d.shape[0]
    # the keypoints as the trainer hands them to SMPLify (spin: joints 1, 9, 12, 27, 28 at confidence 0)
    rec = recipe(smplify.flavor).smplify if rec is None else rec
    fit_kp = spin_trainer_keypoints(kp2d) if rec.trainer_keypoints else kp2d
    with torch.no_grad():
        res = None
        for init_fit in starts:
            init_fit = init_fit.to(dev).float()
            cam0 = init_cam
            if cam0 is None:
                safe = torch.where(torch.isfinite(init_fit).all(-1, keepdim=True), init_fit, fallback.to(dev))
                cam0 = initial_camera(body, safe, torch.nan_to_num(kp2d, nan=0.0))
            r = smplify(init_fit[:, :72], init_fit[:, 72:], cam0.to(dev).float(), fit_kp)
            if res is None:
                res = r
            else:  # strictly lower objective wins: ties and all-invalid samples keep the first start
                better = r.total_loss < res.total_loss
                res = res._replace(**{f: torch.where(better.reshape((-1,) + (1,) * (getattr(r, f).dim() - 1)),
                                                     getattr(r, f), getattr(res, f))
                                      for f in ("pose", "betas", "cam_t", "joint_loss", "total_loss", "valid")})
        ok = res.valid
        fits = torch.where(ok[:, None], torch.cat([res.pose, res.betas], 1), fallback.to(dev).expand(B, -1))
        cam = torch.where(ok[:, None], res.cam_t, torch.full_like(res.cam_t, float("nan")))
        loss = res.joint_loss.mean(-1)  # SPIN's fitting loss: the mean over the 49 joints
        rule = rec.valid_fit
        valid = ok & ((loss if rule.reduction == "mean" else res.joint_loss.sum(-1)) < rule.threshold)
        px = torch.where(ok, reprojection_px(body, fits, torch.nan_to_num(cam), kp2d),
                         torch.full_like(loss, float("nan")))
        mpjpe = torch.full_like(loss, float("nan"))
        pa = mpjpe.clone()
        has_smpl = labels["has_smpl"].bool().to(dev)
        if bool(has_smpl.any()):
            gt_pose, gt_betas = labels["pose"].to(dev).float(), labels["betas"].to(dev).float()
            # the neutral model, as the trainer reads ground-truth SMPL
            gt_joints = body.joints_only(gt_betas, gt_pose[:, 3:], gt_pose[:, :3], joint_set="h36m_17")
            pred = body.joints_only(fits[:, 72:], fits[:, 3:72], fits[:, :3], joint_set="h36m_17")
            m = pw3d_metrics(pred, gt_joints)
            mpjpe = torch.where(has_smpl, m["mpjpe"].float(), mpjpe)
            pa = torch.where(has_smpl, m["pa_mpjpe"].float(), pa)
    out = {"fits": fits, "cam_t": cam, "loss": loss, "px": px, "valid": valid.float(), "mpjpe": mpjpe,
           "pa_mpjpe": pa}
    return {k: v.detach().float().cpu() for k, v in out.items()}


# --- progress ---------------------------------------------------------------------------------------------
class SavedProgress:
    """The batches done so far and their per-sample results, saved to and merged from `folder`."""

    def __init__(self, folder: Path, config: dict, n: int, num_batches: int, run_id: str, rank: int):
        self.folder, self.config, self.n, self.run_id, self.rank = Path(folder), config, n, run_id, rank
        self.done = np.zeros(num_batches, bool)
        self.mine = np.zeros(num_batches, bool)  # the batches this process reports (its own and resumed ones)
        self.cols = {k: np.full((n, d) if d else (n,), np.nan, np.float32) for k, d in _COLUMNS.items()}
        self.seconds = 0.0  # fitting time of the batches this process did

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.pt")) if self.folder.is_dir() else []

    def load(self, take: bool) -> int:
        """Merge every saved progress file; `take`: this process reports the merged batches. Returns
        the number of batches found done."""
        for path in self.files():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                config, n = state["config"], int(state["n"])
            except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign: named, never half-used
                raise FitError(f"{path}: unreadable saved progress ({str(e).splitlines()[0][:200]}); pass "
                               "--overwrite to start over") from None
            if config != self.config or n != self.n:
                raise FitError(f"{path}: progress of a different fit ({state['config']}, {state['n']} samples); "
                                 f"this one is {self.config}, {self.n} samples: pass --overwrite to start over")
            done = state["done"].numpy().astype(bool)
            rows = np.repeat(done, self.config["batch_size"])[: self.n]
            for k in _COLUMNS:
                self.cols[k][rows] = state[k].numpy()[rows]
            self.done |= done
        if take:
            self.mine |= self.done
        return int(self.done.sum())

    def record(self, b: int, rows: np.ndarray, values: dict) -> None:
        for k, v in values.items():
            self.cols[k][rows] = v.numpy()
        self.done[b] = self.mine[b] = True

    def save(self) -> None:
        rows = np.repeat(self.mine, self.config["batch_size"])[: self.n]
        state = {"config": self.config, "n": self.n, "done": torch.from_numpy(self.mine.copy())}
        for k, v in self.cols.items():
            state[k] = torch.from_numpy(np.where(rows.reshape((-1,) + (1,) * (v.ndim - 1)), v, np.nan))
        atomic_torch_save(state, self.folder / f"{self.run_id}-rank{self.rank}.pt")


# --- the whole dataset -------------------------------------------------------------------------------------
def _all_reduce_sum(arr: np.ndarray, device) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def fit_dataset(sources, paths, cfg: FitConfig, out: str | os.PathLike, *, device=None, resume: bool = False,
                overwrite: bool = False, save_every: int = 10, rank: int = 0, world: int = 1,
                loader_backend: str = "auto", threads: int = 2, trust_checkpoint: bool = False,
                progress: bool = True) -> FitResult | None:
    """Fit dataset 0 of `sources` (spin_fast.data.batch.Sources) and write `out` (N, 82) .npy plus
    `<out stem>.report.json` beside it. paths: the AssetPaths of the body model, GMM, mean parameters
    and (init 'static') the dataset's static fits. Under several processes (torch.distributed
    initialised, rank / world given) each fits its share of the batches and rank 0 writes; the
    other ranks return None.

    The writing rank holds `out`'s lock (`output_lock`) for the whole fit: a second fit onto the same
    output (and progress folder) is refused at once, naming the holder's pid; taking it also proves,
    before the first sample, that the output's folder can be written."""
    out = Path(out)
    if out.is_dir():
        raise FitError(f"--out {out} is a folder; name the .npy file to write")
    lock = output_lock(out) if rank == 0 else None
    if lock is not None:
        try:
            lock.acquire()
        except OSError as e:
            raise FitError(f"--out {out}: cannot write in {out.parent} ({e.strerror or e})") from None
    try:
        return _fit_dataset(sources, paths, cfg, out, device=device, resume=resume, overwrite=overwrite,
                            save_every=save_every, rank=rank, world=world, loader_backend=loader_backend,
                            threads=threads, trust_checkpoint=trust_checkpoint, progress=progress)
    finally:
        if lock is not None:
            lock.release()


def output_lock(out: Path) -> RunLock:
    """The lock of a fits output and its progress folder: `.<name>.lock` beside it (removed at the end)."""
    return RunLock(out.with_name(f".{out.name}.lock"), f"fits output {out} (and {out.name}.progress)")


def _fit_dataset(sources, paths, cfg: FitConfig, out: Path, *, device, resume: bool, overwrite: bool,
                 save_every: int, rank: int, world: int, loader_backend: str, threads: int,
                 trust_checkpoint: bool, progress: bool) -> FitResult | None:
    from spin_fast.body import BodyModel
    from spin_fast.data.augment import AugParams
    from spin_fast.data.batch import assemble_labels, make_plan
    from spin_fast.data.datasets import get_dataset
    from spin_fast.data.humandata import load_static_fits, write_static_fits
    from spin_fast.smplify import SMPLify

    cfg.validate()
    out = Path(out)
    report_path = report_path_for(out)
    progress_dir = out.with_name(out.name + ".progress")
    device = torch.device(device) if device is not None else torch.device("cpu")
    n = sources.sizes[0]
    if n == 0:
        raise FitError(f"dataset {cfg.dataset!r} has no samples")
    config = asdict(cfg)
    batches = batch_indices(n, cfg.batch_size)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if not resume and progress_dir.is_dir() and not overwrite:  # every rank refuses alike: none waits
        raise FileExistsError(f"{progress_dir} holds the progress of an earlier run; pass --resume to "
                              "continue it or --overwrite to start over")
    if world > 1:
        dist.barrier()  # every rank has checked the files before rank 0 may remove old progress
    if rank == 0 and not resume and progress_dir.is_dir():
        shutil.rmtree(progress_dir)
    run_id = f"{time.time_ns()}"
    if world > 1:
        ids = [None] * world
        dist.all_gather_object(ids, run_id)
        run_id = ids[0]
        dist.barrier()
    state = SavedProgress(progress_dir, config, n, len(batches), run_id, rank)
    resumed = state.load(take=rank == 0) if resume else 0
    if world > 1:
        dist.barrier()  # every rank has read the saved progress before any writes more
    todo = [b for b in range(len(batches)) if not state.done[b]]
    mine = todo[rank::world]

    # 1. models: the neutral body, SMPLify, the start
    body = BodyModel.from_paths(paths).to(device)
    rec = fit_recipe(cfg)
    smplify = SMPLify.from_recipe(rec, body, gmm_path=paths.gmm)
    fallback = mean_fit(paths.mean_params).to(device)
    static = None
    if cfg.init == "static":
        spec = get_dataset(cfg.dataset)
        if spec.fits is None:
            raise FitError(f"dataset {cfg.dataset!r} has no static fits to start from (use --init mean)")
        static = load_static_fits(paths.static_fits(spec.fits), n)

    def plan(step: int):
        idx = batches[mine[step]]
        return make_plan(sources, step, np.zeros(len(idx), np.int64), idx, AugParams.identity(len(idx)),
                         geometry=recipe(cfg.preset).data.geometry)

    batch_iter = None
    if cfg.init == "checkpoint":
        from spin_fast.data import _impl
        from spin_fast.model.checkpoint_import import load_model

        model = load_model(cfg.checkpoint, paths.mean_params, trust=trust_checkpoint, device=device)
        if mine:
            batch_iter = _impl(loader_backend, sources, plan, cfg.batch_size, threads, False, device,
                               len(mine), 0).iter_from(0)

    # 2. the batches
    from spin_fast.progress import Progress

    done_before = int(sum(len(batches[b]) for b in np.nonzero(state.done)[0]))
    bar = Progress(n, f"fit {cfg.dataset}", unit="fit", initial=done_before, enabled=progress and rank == 0)
    since_save = 0
    try:
        for step, b in enumerate(mine):
            t0 = time.perf_counter()
            if batch_iter is not None:
                labels = next(batch_iter)
                with torch.no_grad():
                    from spin_fast.geometry import rotmat_to_axis_angle, weak_perspective_to_translation

                    pred = model(labels["img"].to(device))
                    aa = rotmat_to_axis_angle(pred.rotmat.float()).reshape(-1, 72)
                    starts = [torch.cat([torch.nan_to_num(aa, nan=0.0), pred.betas.float()], 1)]
                    init_cam = weak_perspective_to_translation(pred.cam.float())
            else:
                labels = assemble_labels(sources, plan(step))
                idx = batches[b]
                if static is not None:
                    starts = [torch.from_numpy(np.asarray(static[idx], np.float32))]
                else:  # facing the camera and facing away: a 2D fit rarely turns a body round by itself
                    starts = [fallback.expand(len(idx), -1), turned_around(fallback[None]).expand(len(idx), -1)]
                init_cam = None
            values = fit_batch(smplify, body, labels, starts, init_cam, fallback, rec)
            state.record(b, batches[b], values)
            state.seconds += time.perf_counter() - t0
            done = len(batches[b]) * world  # the other ranks' batches, roughly in step with this one's
            bar.update(done, images=done, phases={"fit": time.perf_counter() - t0})
            since_save += 1
            if since_save >= save_every:
                state.save()
                since_save = 0
    except KeyboardInterrupt:
        bar.close()
        if since_save:
            state.save()  # the batches done since the last save are kept too
        kept = int(state.done.sum())
        raise Interrupted(f"{kept} of {len(batches)} batches done, saved in {progress_dir}") from None
    finally:
        bar.close()

    # 3. all batches together (on rank 0), the file and the report
    cols = state.cols
    fit_seconds = state.seconds
    if world > 1:
        comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
        rows = np.repeat(state.mine, cfg.batch_size)[:n]
        # each row is owned by exactly one rank and is 0 elsewhere (NaN + 0 stays NaN): the sum gathers
        cols = {k: _all_reduce_sum(np.where(rows.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0).astype(np.float64), comm)
                for k, v in cols.items()}
        fit_seconds = float(_all_reduce_sum(np.array([state.seconds]), comm)[0]) / world
        if rank != 0:
            dist.barrier()
            return None
    fits = np.asarray(cols["fits"], np.float32)
    write_static_fits(out, fits)
    report = build_report(cfg, cols, n, fit_seconds, len(batches) - len(todo), out, device, world)
    report["report"] = str(report_path)
    atomic_write_json(report, report_path)
    shutil.rmtree(progress_dir, ignore_errors=True)
    if world > 1:
        dist.barrier()
    return FitResult(fits, report, resumed)


def report_path_for(out: Path) -> Path:
    """static_fits/h36m_fits.npy -> static_fits/h36m_fits.report.json"""
    return Path(out).with_suffix(".report.json")


def _finite_or_none(a: np.ndarray) -> list:
    return [float(x) if math.isfinite(x) else None for x in np.asarray(a, np.float64)]


def build_report(cfg: FitConfig, cols: dict, n: int, seconds: float, resumed_batches: int, out: Path, device,
                 world: int) -> dict:
    valid = np.asarray(cols["valid"]) > 0.5
    loss, px = np.asarray(cols["loss"], np.float64), np.asarray(cols["px"], np.float64)
    fitted = n - min(n, resumed_batches * cfg.batch_size)
    report = {
        "dataset": cfg.dataset, "output": str(out), "num_samples": n, "config": asdict(cfg),
        "device": str(device), "processes": world,
        "valid_rule": fit_recipe(cfg).valid_fit.describe(), "num_valid": int(valid.sum()), "valid_fraction": float(valid.mean()),
        "mean_reprojection_loss": float(loss[np.isfinite(loss)].mean()) if np.isfinite(loss).any() else None,
        "mean_reprojection_px": float(np.nanmean(px)) if np.isfinite(px).any() else None,
        "fits_per_s": fitted / seconds if seconds > 0 and fitted > 0 else None, "fit_seconds": seconds,
        "units": {"reprojection_loss": "the SMPLify flavor's fitting loss, mean over the 49 joints",
                  "reprojection_px": "crop pixels, mean over the visible keypoints", "mpjpe": "mm",
                  "pa_mpjpe": "mm"},
        "per_sample": {"reprojection_loss": _finite_or_none(loss), "reprojection_px": _finite_or_none(px),
                       "valid": valid.tolist()},
    }
    has = np.isfinite(np.asarray(cols["mpjpe"], np.float64))
    if has.any():
        report["has_smpl"] = {"count": int(has.sum()), "mpjpe": float(np.mean(cols["mpjpe"][has])),
                              "pa_mpjpe": float(np.mean(cols["pa_mpjpe"][has]))}
        report["per_sample"]["mpjpe"] = _finite_or_none(cols["mpjpe"])
        report["per_sample"]["pa_mpjpe"] = _finite_or_none(cols["pa_mpjpe"])
    return report
