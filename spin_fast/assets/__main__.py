"""`python -m spin_fast.assets --out DIR [--seed N]`: write the synthetic SMPL stand-in."""
import argparse
import sys
import time

from spin_fast.assets import write_assets
from spin_fast.cli import run_command


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.assets", description=__doc__)
    ap.add_argument("--out", required=True, help="folder to write (the mmhuman3d `data/` layout)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    paths = write_assets(args.out, seed=args.seed)
    print(f"wrote the synthetic SMPL stand-in (not SMPL) to {paths.root} in {time.perf_counter() - t0:.1f} s")
    for p in paths.body_model_files():
        print(f"  {p}")
    return 0


def main(argv=None) -> int:
    """Through the one handler of every command (spin_fast.cli): a user error is one line, exit 2."""
    return run_command("assets", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
