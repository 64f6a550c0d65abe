"""`python -m spin_fast.data check DATA_ROOT` | `python -m spin_fast.data synth --out DIR [--assets DIR] [--scale N]`."""
import argparse
import sys
import time
from pathlib import Path

from spin_fast.cli import run_command


def check_body_model(root) -> "DatasetReport":  # noqa: F821 - spin_fast.data.check.DatasetReport
    """The body model files of a data root (SMPL x3, regressors, mean parameters, GMM): each present
    and readable through its restricted reader."""
    from spin_fast.body.io import load_gmm, load_mean_params, load_regressor, load_smpl
    from spin_fast.config import AssetPaths
    from spin_fast.data.check import DatasetReport
    from spin_fast.errors import SpinFastError

    paths = AssetPaths(root)
    readers = {**{paths.smpl(g): load_smpl for g in ("neutral", "male", "female")},
               paths.j_regressor_extra: load_regressor, paths.j_regressor_h36m: load_regressor,
               paths.mean_params: load_mean_params, paths.gmm: load_gmm}
    rep = DatasetReport("body model")
    for path, read in readers.items():
        if not path.is_file():
            rep.missing.append(str(path))
            continue
        try:
            read(path)
        except (SpinFastError, OSError, ValueError, KeyError) as e:
            rep.unreadable.append(f"{path}: {e}")
    return rep


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate the body model files and every configured HumanData file, static "
                                     "fits and image")
    c.add_argument("root", help="data root (mmhuman3d `data/` folder or its parent)")
    c.add_argument("--decode", action="store_true", help="fully decode every image (slow), not only headers")
    c.add_argument("--datasets", default=None, help="comma-separated names (default: the body model files and every dataset of the registry)")
    s = sub.add_parser("synth", help="render the synthetic datasets")
    s.add_argument("--out", required=True, help="data root to write (the mmhuman3d `data/` layout)")
    s.add_argument("--assets", default=None, help="body model root (default: --out; written there if missing)")
    s.add_argument("--scale", type=int, default=1, help="size multiplier (32 samples a dataset each)")
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "check":
        from spin_fast.data.check import check_data_root, format_report

        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
        names = args.datasets.split(",") if args.datasets else None
        reports = check_data_root(root, names, decode=args.decode)
        if names is None:  # the whole root: its body model files too
            body_root = root / "data" if (root / "data" / "body_models").is_dir() else root
            reports.insert(0, check_body_model(body_root))
        print(format_report(reports))
        return 0 if all(r.ok for r in reports) else 1
    from spin_fast.data.synth import write_synthetic_datasets

    if args.scale < 1:
        ap.error("--scale must be >= 1")
    t0 = time.perf_counter()
    paths = write_synthetic_datasets(args.out, assets=args.assets, scale=args.scale, seed=args.seed)
    print(f"wrote the synthetic datasets (a test fixture, not real data) to {paths.root} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv=None) -> int:
    """Through the one handler of every command (spin_fast.cli): a user error is one line, exit 2."""
    return run_command("data", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
