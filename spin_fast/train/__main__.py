"""`python -m spin_fast.train [--config FILE.yaml] [--section.key VALUE ...] [--resume [CKPT]] [--overwrite]`

With no data root (`--data-root`, `data.root` in the config, or $SPIN_FAST_DATA_ROOT) this runs a short
demo on the synthetic stand-in (generated on first use, and announced). Many GPUs / processes:
`torchrun --nproc_per_node=N -m spin_fast.train ...`; many nodes: add torchrun's
`--nnodes=M --node_rank=K --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT` on every node.

A work dir that already holds a run is never overwritten: continue it with `--resume`, pick another
`--work-dir`, or `--overwrite` (moves it aside to `<work_dir>.old-N`). The demo (no data root, no
--work-dir) writes to a fresh `work_dirs/demo[-N]` each time.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from spin_fast.cli import run_command
from spin_fast.train.config import DEFAULT_PRESET, PRESETS, build_config, describe, load_yaml, nearest_keys

ALIASES = {"data_root": "data.root", "work_dir": "work_dir", "max_steps": "max_steps", "batch_size": "data.batch_size",
           "backbone": "model.backbone"}


def parser(preset: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """The command line; the config keys' defaults shown are `preset`'s resolved values."""
    from spin_fast.recipes import help_lines, not_reproduced, recipe

    smplify = help_lines(recipe(preset).smplify)
    missing = "\n".join(f"  - {item}" for item in not_reproduced(preset)) or "  nothing known"
    ap = argparse.ArgumentParser(prog="python -m spin_fast.train", description=__doc__,
                                 usage="%(prog)s [--config FILE.yaml] [--preset P] [--KEY VALUE ...] [--resume [CKPT]] [--overwrite]",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"SMPLify recipe of --preset {preset} (spin_fast.recipes; docs/presets.md):\n"
                                        f"{smplify}\nnot reproduced by --preset {preset}:\n{missing}")
    ap.add_argument("--config", help="YAML config file (same nesting as the keys below)")
    ap.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                    help="continue from the work dir's newest readable checkpoint, or from the file CKPT")
    ap.add_argument("--overwrite", action="store_true",
                    help="start afresh in a work dir that holds a run, moving that run aside (never deleted)")
    ap.add_argument("--allow-config-change", action="store_true",
                    help="resume even though config keys differ from the checkpoint's (each is listed)")
    ap.add_argument("--data-root", dest="data_root", help="mmhuman3d data root (alias of --data.root)")
    ap.add_argument("--work-dir", dest="work_dir", help="output folder (alias of --work_dir)")
    ap.add_argument("--max-steps", dest="max_steps", help="alias of --max_steps")
    ap.add_argument("--batch-size", dest="batch_size", help="alias of --data.batch_size")
    ap.add_argument("--backbone", dest="backbone", help="alias of --model.backbone")
    group = ap.add_argument_group(f"config keys: what each does [allowed values] (default with --preset {preset}; "
                                  "the other preset's; the synthetic demo's)")
    for key, text in describe(preset).items():
        if key in ("work_dir", "max_steps"):  # spelt --work-dir / --max-steps above: their help is the key's
            next(a for a in ap._actions if a.dest == key).help = text
            continue
        group.add_argument(f"--{key}", dest=f"cfg:{key}", metavar="V", help=text)
    return ap


def parse(ap: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """parse_args, but a misspelt flag is named with the nearest known ones."""
    args, unknown = ap.parse_known_args(argv)
    if unknown:
        flags = [f for f in unknown if f.startswith("--")]
        known = [o[2:] for a in ap._actions for o in a.option_strings if o.startswith("--")]
        bad = (flags or unknown)[0]
        near = nearest_keys(bad[2:].split("=")[0], known) if flags else []
        ap.error(f"unrecognized argument {bad}" + (f" (did you mean {' or '.join('--' + k for k in near)}?)"
                                                    if near else ""))
    return args


def chosen_preset(argv) -> str:
    """The --preset given on the command line (for the defaults --help shows), else the default."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", dest="cfg:preset")
    value = vars(pre.parse_known_args(argv)[0])["cfg:preset"]
    return value if value in PRESETS else DEFAULT_PRESET


def resume_command(argv: list[str], work_dir: str, work_dir_given: bool) -> str:
    """The command line that continues this run: the same arguments, without --overwrite and
    --resume [CKPT], with --work-dir when the demo picked it, and --resume (or, when no checkpoint
    was written yet, --overwrite: the run starts again, the old one moved aside)."""
    kept, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--resume":
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        if a.startswith("--resume=") or a == "--overwrite":
            continue
        kept.append(a)
    if not work_dir_given:
        kept += ["--work-dir", work_dir]
    has_checkpoint = any((Path(work_dir) / "checkpoints").glob("*.pth"))
    return shlex.join(["python", "-m", "spin_fast.train", *kept, "--resume" if has_checkpoint else "--overwrite"])


def main(argv=None) -> int:
    """The command, through the one handler of every command (spin_fast.cli): a user error is one
    line and exit status 2, Ctrl-C says the step reached and the command that resumes, exit 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    state: dict = {}
    return run_command("train", lambda a: _main(a, state), argv, resume=lambda: state["resume"]() if state else None,
                       user_errors=(FloatingPointError,))


def _main(argv: list[str], state: dict) -> int:
    args = parse(parser(chosen_preset(argv)), argv)
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    for alias, key in ALIASES.items():
        v = getattr(args, alias)
        if v is not None:
            overrides[key] = v
    cfg = build_config(args.config, overrides)
    work_dir_given = "work_dir" in overrides or bool(args.config and "work_dir" in load_yaml(args.config))
    from spin_fast.train.loop import train
    from spin_fast.train.run_dir import fresh_work_dir

    if cfg.demo and not work_dir_given and not args.resume and not args.overwrite:
        cfg.work_dir = str(fresh_work_dir(cfg.work_dir))  # a second demo keeps the first

    if cfg.demo:
        print("spin_fast.train: no data root configured: running the short synthetic demo "
              f"({cfg.max_steps} steps, {cfg.model.backbone}, batch {cfg.data.batch_size}) in {cfg.work_dir}",
              file=sys.stderr)
    state["resume"] = lambda: resume_command(argv, cfg.work_dir, work_dir_given)  # read when interrupted
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, allow_config_change=args.allow_config_change)
    if result and len(result) > 1:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float))
        print(f"spin_fast.train: done step={result['step']} {metrics} checkpoint={cfg.work_dir}/checkpoints/latest.pth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
