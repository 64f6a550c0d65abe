"""`python -m spin_fast.data check DATA_ROOT` | `python -m spin_fast.data synth --out DIR [--assets DIR] [--scale N]`."""
import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spin_fast.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate every configured HumanData file, static fits and image")
    c.add_argument("root", help="data root (mmhuman3d `data/` folder or its parent)")
    c.add_argument("--decode", action="store_true", help="fully decode every image (slow), not only headers")
    c.add_argument("--datasets", default=None, help="comma-separated names (default: all in the registry)")
    s = sub.add_parser("synth", help="render the synthetic datasets")
    s.add_argument("--out", required=True, help="data root to write (the mmhuman3d `data/` layout)")
    s.add_argument("--assets", default=None, help="body model root (default: --out; written there if missing)")
    s.add_argument("--scale", type=int, default=1, help="size multiplier (32 samples a dataset each)")
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "check":
        from spin_fast.data.check import check_data_root, format_report

        names = args.datasets.split(",") if args.datasets else None
        reports = check_data_root(args.root, names, decode=args.decode)
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


if __name__ == "__main__":
    sys.exit(main())
