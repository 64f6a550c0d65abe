"""The training loop: set-up, steps, logging, checkpoints, resume, DistributedDataParallel.

`train(cfg, resume=...)` is what `python -m spin_fast.train` calls. One process per GPU under
`torchrun` (NCCL on CUDA, gloo on CPU); rank 0 logs and writes checkpoints; every rank keeps an
identical fits store because each step's fit updates are all-gathered and applied in rank order.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from spin_fast.config import configured_data_root, init_distributed
from spin_fast.data.synth import open_data_root
from spin_fast.model.checkpoint_import import unwrap
from spin_fast.recipes import SMPLifyRecipe
from spin_fast.train.checkpoint import save_checkpoint, set_rng_state
from spin_fast.train.config import TrainConfig, resolve, to_dict
from spin_fast.train.finite import NonFiniteWatch
from spin_fast.train.fit_truth import FitsTruth
from spin_fast.train.monitor import TrainMonitor
from spin_fast.errors import Interrupted
from spin_fast.train.run_dir import open_run, record_config, truncate_log, work_dir_lock
from spin_fast.train.step import StepContext, train_step
from spin_fast.train.timing import PhaseTimer


# --- distributed -------------------------------------------------------------------------------------
def make_fits_sync(fits, world: int):
    """All-gather each rank's updated fits and apply them in rank order on every rank."""
    if world <= 1:
        return None

    def sync(dataset_id, index, updated):
        dataset_id = torch.as_tensor(dataset_id, device=fits.device).long()
        index = torch.as_tensor(index, device=fits.device).long()
        rows = fits.get(dataset_id, index)
        local = torch.cat([dataset_id[:, None].float(), index[:, None].float(), updated[:, None].float(), rows], 1)
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        for g in gathered:  # same order on every rank: identical stores
            fits.put(g[:, 0].long(), g[:, 1].long(), g[:, 3:], mask=g[:, 2].bool())

    return sync


# --- the run -----------------------------------------------------------------------------------------
def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    milestones = [e * steps_per_epoch for e in cfg.optim.lr_decay_epochs]
    return lambda step: cfg.optim.lr_decay ** sum(step >= m for m in milestones)


def _apply_optim_config(cfg: TrainConfig, optimizer, scheduler, steps_per_epoch: int) -> None:
    """After restoring the optimizer and scheduler of a resumed run whose optim.* keys were changed
    (allowed): make the new lr / weight decay / decay schedule the ones really used from here on."""
    scheduler.lr_lambdas = [_lr_lambda(cfg, steps_per_epoch)] * len(optimizer.param_groups)
    scheduler.base_lrs = [cfg.optim.lr] * len(optimizer.param_groups)
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for g in optimizer.param_groups:
        g["initial_lr"], g["weight_decay"], g["lr"] = cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.lr * factor
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def build_smplify(cfg: TrainConfig, rec: SMPLifyRecipe, paths, body, device):
    """The SMPLify fitter of the run's SMPLify recipe that the step calls (None when disabled)."""
    if not cfg.smplify.enabled:
        return None
    from spin_fast.smplify import SMPLify

    return SMPLify.from_recipe(rec, body, gmm_path=paths.gmm, device=device, gmm_normaliser=cfg.smplify.gmm_normaliser)


def train(cfg: TrainConfig, resume: bool | str = False, return_state: bool = False, overwrite: bool = False,
          allow_config_change: bool = False) -> dict:
    """Run (or with `resume`, continue) training; returns the last logged metrics (and, with
    `return_state`, this rank's final 'model' state_dict and 'fits' table, for tests).

    resume: True continues from the work dir's newest good checkpoint, a path from that file.
    A work dir holding a run is refused without `resume` (`overwrite` moves it aside); a resume with a
    changed config is refused without `allow_config_change` (see spin_fast.train.run_dir).
    The writing rank holds the work dir's lock from before anything is decided until it returns;
    another run into the same work dir is refused at once (`spin_fast.run_lock.LockHeld`)."""
    lock = work_dir_lock(cfg.work_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        return _train(cfg, resume, return_state, overwrite, allow_config_change, lock)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, resume, return_state: bool, overwrite: bool, allow_config_change: bool, lock) -> dict:
    from spin_fast.data import choose_backend, train_loader_from_recipe
    from spin_fast.model import HMR
    from spin_fast.body import BodyModel
    from spin_fast.smplify import FitsStore

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and cfg.data.skip_bad_images:
        # a skipped image shortens one rank's batch, and the fits all_gather needs equal sizes on every rank
        from spin_fast.train.config import ConfigError

        raise ConfigError("data.skip_bad_images: not supported with more than one process (a skipped image "
                          "makes the ranks' batches differ in size); run `python -m spin_fast.data check` "
                          "to find the unreadable images, fix or drop them, and train without it")
    rec = resolve(cfg)  # the recipe the run follows; each piece below gets its part
    rank, world, device = init_distributed(cfg.device)
    choose_backend(cfg.data.loader, device)  # a loader that cannot be imported fails here, before any work
    torch.manual_seed(cfg.seed + rank)
    work_dir = Path(cfg.work_dir)
    steps_per_epoch = max(1, cfg.optim.samples_per_epoch // (cfg.data.batch_size * world))
    total_steps = cfg.max_steps or cfg.optim.epochs * steps_per_epoch
    configured_data_root(cfg.data.root)  # a data root that is not there fails before the work dir is touched
    ckpt_path, ckpt, changes = open_run(to_dict(cfg), work_dir, resume, overwrite, allow_config_change, rank,
                                        barrier=dist.barrier if world > 1 else None, lock=lock)
    start = int(ckpt["meta"]["step"]) if ckpt is not None else 0
    if start >= total_steps:
        if rank == 0:
            print(f"spin_fast: {ckpt_path} is at step {start}, past max_steps {total_steps}: nothing to train "
                  "(raise --max-steps to continue)", file=sys.stderr)
        return {"step": start}
    paths, _ = open_data_root(cfg.data.root, scale=cfg.data.synthetic_scale, rank=rank,
                              barrier=dist.barrier if world > 1 else None)

    body = BodyModel.from_paths(paths).to(device)
    model = HMR(backbone=cfg.model.backbone, mean_params=paths.mean_params, input_res=cfg.model.input_res).to(device)
    if cfg.model.pretrained:
        from spin_fast.model.checkpoint_import import load_hmr_weights

        load_hmr_weights(model, cfg.model.pretrained)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = train_loader_from_recipe(paths, rec.data, mix=cfg.data.mix, backend=cfg.data.loader,
                                      threads=cfg.data.threads, seed=cfg.seed, rank=rank, world_size=world,
                                      skip_bad_images=cfg.data.skip_bad_images, device=device)
    fits = FitsStore.from_static_fits(paths, loader.dataset_names, sizes=dict(zip(loader.dataset_names, loader.dataset_sizes)),
                                     device=device)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))

    if ckpt is not None:
        unwrap(model).load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scheduler"] is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if any(k.startswith("optim.") for k in changes):
            _apply_optim_config(cfg, optimizer, scheduler, steps_per_epoch)
        fits.load_state_dict(ckpt["fits"])
        resume_rng = ckpt["rng"]["per_rank"][rank] if "per_rank" in ckpt["rng"] else ckpt["rng"]
        if rank == 0:
            print(f"spin_fast: resumed {work_dir} at step {start} from {ckpt_path}", file=sys.stderr)
            dropped = truncate_log(work_dir / "log.csv", start)
            if dropped:
                print(f"spin_fast: dropped {dropped} log.csv row(s) after step {start}", file=sys.stderr)
        del ckpt

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.model.compile:
        net = torch.compile(net)
    ctx = StepContext(
        model=net, body=body, fits=fits, smplify=build_smplify(cfg, rec.smplify, paths, body, device),
        loss=rec.loss,
        amp_dtype=torch.bfloat16 if cfg.model.bf16 and device.type == "cuda" else None,
        channels_last=cfg.model.channels_last, sync_fits=make_fits_sync(fits, world), timer=PhaseTimer(device),
        fits_recipe=rec.smplify)
    if rank == 0:
        record_config(work_dir, to_dict(cfg), start, str(ckpt_path) if ckpt_path else None, changes)
    monitor = TrainMonitor(work_dir, total_steps, start, cfg.log_every, cfg.image_every, enabled=rank == 0,
                           resume=bool(resume), body=body)
    # where training samples have ground-truth SMPL: how far the stored fits are from it (logged)
    truth = FitsTruth.from_sources(loader.sources, body, fits.names) if rank == 0 else None
    watch = NonFiniteWatch(device, loader.dataset_names)

    model.train()
    it = loader.iter_from(start)
    timer = ctx.timer  # phases: spin_fast.train.timing
    last = {}
    done, saved = start, start if ckpt_path else None  # steps finished, the newest checkpoint's step
    try:
        for step in range(start + 1, total_steps + 1):
            monitor.begin(step, ctx)
            with timer.phase("data", host=True):
                batch = next(it)
            if start and step == start + 1:
                # after the first batch: starting an iterator may draw from the global RNG (DataLoader
                # seeds), as it did at step 1 of the original run, so dropout continues from the saved state
                set_rng_state(resume_rng)
            with timer.phase("forward"):
                loss, logs = train_step(ctx, batch)
                watch.observe(step, loss, batch)
            with timer.phase("backward"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            if monitor.is_log_step(step) or step % cfg.ckpt_every == 0:
                watch.check()  # NaN/inf at any step since the last check stops here, before a checkpoint
            # progress every step; on logging steps the host syncs: logged tensors become numbers, timers are read
            if truth is not None and monitor.is_log_step(step):
                logs["fits_pa_mpjpe"] = truth.pa_mpjpe(fits)
            last = monitor.end(step, logs, batch, images=batch["img"].shape[0] * world, lr=scheduler.get_last_lr()[0],
                               timer=timer) or last
            if step % cfg.ckpt_every == 0 or step == total_steps:
                _checkpoint(work_dir, step, model, optimizer, scheduler, fits, cfg, rank, world)
                saved = step
            done = step
    except KeyboardInterrupt:
        monitor.close(plot=False)  # log.csv and the events are flushed; the picture waits for the resumed run
        from spin_fast.train.checkpoint import step_files

        written = step_files(work_dir / "checkpoints")  # the interrupt may fall between a save and `saved`
        saved = max(saved or 0, written[0][0] if written else 0) or None
        done = max(done, saved or 0)
        kept = f"its checkpoint of step {saved} is kept" if saved else "no checkpoint written yet"
        raise Interrupted(f"step {done} of {total_steps} ({kept})") from None
    if world > 1:
        # DDP re-broadcasts rank 0's buffers (BatchNorm statistics) at every forward; do it once more
        # so the ranks also end identical (parameters already are: gradients are all-reduced)
        for buf in model.buffers():
            dist.broadcast(buf, 0)
    monitor.close()  # rank 0: loss_curve.png
    if world > 1:
        dist.barrier()
    result = {"step": total_steps, **last}
    if return_state:
        result["state"] = {"model": {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()},
                           "fits": fits.data.detach().cpu().clone()}
    return result


def _checkpoint(work_dir, step, model, optimizer, scheduler, fits, cfg, rank, world):
    """Rank 0 writes; every rank's RNG state goes in so a resumed multi-process run continues exactly."""
    from spin_fast.train.checkpoint import rng_state

    states = [rng_state()]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, states[0])
        states = gathered
        dist.barrier()
    if rank == 0:
        save_checkpoint(work_dir, step, model, optimizer, scheduler, fits, to_dict(cfg),
                        rng={"per_rank": states} if world > 1 else states[0], keep=cfg.keep_checkpoints)
    if world > 1:
        dist.barrier()
