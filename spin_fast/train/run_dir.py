"""A run's work dir: never overwritten, resumed from its last good state, its config history kept.

- `work_dir_lock`: one run a work dir: the lock (`spin_fast.run_lock`) a run holds for its life, so a
  second process into the same work dir is refused at once, naming the holder's pid.
- `prepare_work_dir`: a dir that already holds a run (a checkpoint or log.csv) is refused unless the
  run is resumed, or `overwrite` moves it aside to `<dir>.old-N` (nothing is ever deleted); the
  temporary files of killed writes are swept.
- `fresh_work_dir`: `base`, or `base-2`, `base-3`, ... for the demo, so a second demo keeps the first
  (also while the first is still starting).
- `find_resume_checkpoint`: the newest complete, readable checkpoint (latest.pth, or the newest
  readable step_*.pth when latest.pth is truncated / unreadable / older), saying what it skipped.
- `truncate_log`: log.csv without the rows after the resumed step (no duplicates after a resume).
- `config_changes` / `record_config`: the keys a resume changes (refused unless allowed), and
  config.yaml (what is really used) plus config_history.yaml (every start: step and changes).
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path

import yaml

from spin_fast.atomic import atomic_write_bytes, remove_stale_temporaries
from spin_fast.train.checkpoint import CheckpointLoadError, load_checkpoint, step_files
from spin_fast.errors import SpinFastError
from spin_fast.run_lock import RunLock

LOCK_NAME = ".spin_fast.lock"  # held by the run writing the work dir (removed when it ends)

# keys that steer the run but not what it computes: free to change on resume
RUN_CONTROL_KEYS = ("work_dir", "max_steps", "log_every", "ckpt_every", "keep_checkpoints", "data.threads", "device")


class RunDirError(SpinFastError, RuntimeError):
    """The work dir or the checkpoint to resume from does not allow the requested start."""


def run_contents(work_dir: str | os.PathLike) -> list[str]:
    """What marks `work_dir` as holding a run: its checkpoints and log.csv (relative names)."""
    work_dir = Path(work_dir)
    found = sorted(str(p.relative_to(work_dir)) for p in (work_dir / "checkpoints").glob("*.pth"))
    if (work_dir / "log.csv").is_file():
        found.append("log.csv")
    return found


def work_dir_lock(work_dir: str | os.PathLike) -> RunLock:
    """The lock of a work dir (not yet taken: `take_lock`)."""
    return RunLock(Path(work_dir) / LOCK_NAME, f"work dir {work_dir}")


def take_lock(lock: RunLock, work_dir: Path) -> None:
    """Take the work dir's lock (creating the dir): LockHeld when another run holds it, RunDirError
    when the dir cannot be written."""
    try:
        lock.acquire()
    except OSError as e:
        raise RunDirError(f"work dir {work_dir}: cannot write there ({e.strerror or e})") from None


def _aside(work_dir: Path) -> Path:
    n = 1
    while (work_dir.parent / f"{work_dir.name}.old-{n}").exists():
        n += 1
    return work_dir.parent / f"{work_dir.name}.old-{n}"


def prepare_work_dir(work_dir: str | os.PathLike, resume: bool, overwrite: bool, move: bool = True,
                     lock: RunLock | None = None) -> Path | None:
    """Check (and with `move`, the writing rank, create) the work dir; returns where an overwritten
    run was moved, else None. RunDirError when it holds a run and neither resume nor overwrite is set.
    `lock` (the writing rank's `work_dir_lock`) is taken first, and follows the work dir when an
    overwritten run is moved aside: nothing is decided, moved or written while another run holds it."""
    work_dir = Path(work_dir)
    moved = None
    if lock is not None:
        take_lock(lock, work_dir)
    if not resume:
        contents = run_contents(work_dir)
        if contents:
            if not overwrite:
                shown = ", ".join(contents[:4]) + (f" and {len(contents) - 4} more" if len(contents) > 4 else "")
                raise RunDirError(
                    f"work dir {work_dir} already holds a run ({shown}); to keep it, choose: --resume to continue "
                    f"it, another --work-dir for a new run, or --overwrite to move it aside to {_aside(work_dir)} "
                    "(nothing is deleted)")
            if move:
                moved = _aside(work_dir)
                os.rename(work_dir, moved)
                if lock is not None:  # the lock file went with the old run: take the new dir's
                    lock.path = moved / LOCK_NAME
                    lock.release()
                    lock.path = work_dir / LOCK_NAME
                    take_lock(lock, work_dir)
                print(f"spin_fast: moved the previous run in {work_dir} aside to {moved}", file=sys.stderr)
    if move:
        (work_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for folder in (work_dir, work_dir / "checkpoints"):
            for tmp in remove_stale_temporaries(folder):
                print(f"spin_fast: removed {tmp}, left by a killed write", file=sys.stderr)
    return moved


def fresh_work_dir(base: str | os.PathLike) -> Path:
    """`base` when it holds no run (and no run is starting in it), else the first of base-2, base-3, ...
    that holds none."""
    base = Path(base)
    candidate, n = base, 1
    while run_contents(candidate) or work_dir_lock(candidate).in_use():
        n += 1
        candidate = base.parent / f"{base.name}-{n}"
    return candidate


def find_resume_checkpoint(work_dir: str | os.PathLike, path: str | os.PathLike | None = None,
                           announce: bool = True) -> tuple[Path, dict]:
    """(file, checkpoint) to resume from: `path` when given, else the newest complete readable
    checkpoint under work_dir/checkpoints. RunDirError names what it looked at and why it failed."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RunDirError(f"--resume {path}: no such checkpoint file")
        try:
            return path, load_checkpoint(path)
        except CheckpointLoadError as e:
            raise RunDirError(f"--resume: {e}") from None
    folder = Path(work_dir) / "checkpoints"
    latest = folder / "latest.pth"
    skipped: list[str] = []
    best: tuple[Path, dict] | None = None

    def attempt(p: Path):
        try:
            return load_checkpoint(p)
        except CheckpointLoadError as e:
            skipped.append(str(e))
            return None

    if latest.is_file():
        ckpt = attempt(latest)
        if ckpt is not None:
            best = (latest, ckpt)
    newest_step = best[1]["meta"]["step"] if best else -1
    for step, p in step_files(folder):
        if step <= newest_step:
            break
        if best is not None and os.path.samefile(p, best[0]):
            continue
        ckpt = attempt(p)
        if ckpt is not None:  # newer than latest.pth (a kill between the two writes) or latest.pth bad
            best = (p, ckpt)
            break
    if best is None:
        why = "".join(f"\n  skipped {s}" for s in skipped)
        raise RunDirError(f"--resume: no checkpoint to resume from in {folder} (looked for latest.pth and "
                          f"step_*.pth){why}")
    if announce:
        for s in skipped:
            print(f"spin_fast: resume: skipped {s}", file=sys.stderr)
        if skipped:
            print(f"spin_fast: resume: using {best[0]} (step {best[1]['meta']['step']})", file=sys.stderr)
    return best


def truncate_log(log_path: str | os.PathLike, step: int) -> int:
    """Rewrite log.csv (atomically) without its rows after `step` and any torn last line; returns the
    number of rows dropped."""
    log_path = Path(log_path)
    if not log_path.is_file():
        return 0
    lines = log_path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    header, kept, dropped = lines[0], [], 0
    if not header.endswith("\n"):  # killed while writing the header
        log_path.unlink()
        return 0
    for line in lines[1:]:
        row = next(csv.reader(io.StringIO(line)), [])
        try:
            ok = line.endswith("\n") and int(row[0]) <= step
        except (ValueError, IndexError):
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(log_path, "".join([header, *kept]).encode())
    return dropped


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and f"{prefix}{k}" != "data.mix":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_as_it_ran(old: dict) -> dict:
    """A checkpoint's saved config with the recipe keys of later versions filled in as that run had
    them (its preset's values), so a resume compares like with like; as saved when it no longer loads."""
    from spin_fast.train.config import ConfigError, from_dict, to_dict

    try:
        return to_dict(from_dict(old))
    except (ConfigError, TypeError, ValueError):
        return old


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """{key: (old, new)} for every config leaf a resume would change, run-control keys left out."""
    a, b = _flat(old), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in RUN_CONTROL_KEYS and a.get(k) != b.get(k)}


def format_changes(changes: dict[str, tuple]) -> str:
    return "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items())


def record_config(work_dir: str | os.PathLike, config: dict, step: int, resumed_from: str | None,
                  changes: dict[str, tuple]) -> None:
    """config.yaml = the config really used; config_history.yaml gains this start's entry."""
    work_dir = Path(work_dir)
    atomic_write_bytes(work_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    history_path = work_dir / "config_history.yaml"
    history = []
    if history_path.is_file():
        try:
            history = yaml.safe_load(history_path.read_text()) or []
        except yaml.YAMLError:
            history = []
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": int(step), "resumed_from": resumed_from,
             "changed": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}
    if not history:
        entry["config"] = config
    history = (history if isinstance(history, list) else []) + [entry]
    atomic_write_bytes(history_path, yaml.safe_dump(history, sort_keys=False).encode())


def open_run(config: dict, work_dir: str | os.PathLike, resume, overwrite: bool, allow_config_change: bool,
             rank: int = 0, barrier=None, lock: RunLock | None = None) -> tuple[Path | None, dict | None, dict[str, tuple]]:
    """Everything decided before a run starts: (checkpoint file, checkpoint, config changes), the
    first two None for a new run. `resume`: False, True (the work dir's newest good checkpoint) or a
    checkpoint path. Every rank checks; rank 0 takes `lock` first, then moves, creates and sweeps;
    `barrier()` syncs them."""
    prepare_work_dir(work_dir, bool(resume), overwrite, move=rank == 0, lock=lock)
    if barrier is not None:
        barrier()
    if not resume:
        return None, None, {}
    path, ckpt = find_resume_checkpoint(work_dir, None if resume is True else resume, announce=rank == 0)
    old = ckpt["meta"].get("config") or {}
    old_backbone = (old.get("model") or {}).get("backbone")
    new_backbone = config["model"]["backbone"]
    if old_backbone and old_backbone != new_backbone:
        raise RunDirError(f"{path}: checkpoint is {old_backbone}, config asks {new_backbone} "
                          f"(resume with --backbone {old_backbone}, or start a new run)")
    changes = config_changes(config_as_it_ran(old), config)
    if changes and not allow_config_change:
        raise RunDirError(f"{path}: resuming with a changed config: {format_changes(changes)}; resume with the "
                          "checkpoint's values, or pass --allow-config-change to continue with the new ones")
    if changes and rank == 0:
        print(f"spin_fast: resume with a changed config: {format_changes(changes)}", file=sys.stderr)
    return path, ckpt, changes
