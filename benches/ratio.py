"""Ratio tables from pytest-benchmark JSON: `python benches/ratio.py FILE.json [...] [--markdown]`.

Within each benchmark group the reference row (a name with a word `ref`, `reference`, `smplx` or `torch`,
words split at anything not a letter or digit, so `torchvision_gpu` is not one) is compared
with every other row timing the same passes (`fwd` with `fwd`, `fwd_bwd` with `fwd_bwd`): ratio =
reference mean / row mean (> 1: ours is faster). With `--anchor NAME` the rows whose name (the test id
inside [...] where there is one) starts with NAME are ours and every other row is a peer to compare
with them: ratio = peer mean / ours mean (> 1: ours is faster), e.g. `--anchor spin_fast` for
benches/test_bench_body_peers.py. With --markdown it
prints the table rows of benches/RESULTS.md (op, batch, reference, ours, ratio, device, date). With
`--wide --anchor NAME` (the peers bench, whose rows record task, passes, batch and impl in extra_info)
it prints one markdown row per task, passes and batch, one column per implementation: median ms and,
in brackets, its median over NAME's (> 1: NAME is faster), then the fastest other one over NAME.
Save a run with `python -m pytest benches --benchmark-only --benchmark-json=benches/results/NAME.json`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

REFERENCE_WORDS = {"smplx", "ref", "reference", "torch"}


def device_name(machine_info: dict) -> str:
    gpu = machine_info.get("gpu") or machine_info.get("cuda_device")
    if gpu:
        return str(gpu)
    cpu = machine_info.get("cpu", {})
    return f"CPU {cpu.get('brand_raw', machine_info.get('processor', '?'))} ({cpu.get('count', '?')} cores)"


def is_reference(name: str) -> bool:
    return not REFERENCE_WORDS.isdisjoint(re.split(r"[^a-z0-9]+", name.lower()))


def passes(name: str) -> str | None:
    """'fwd_bwd' or 'fwd' where the row's name says which passes it times (None: not said)."""
    return "fwd_bwd" if "fwd_bwd" in name else "fwd" if "fwd" in name else None


def comparable(ref: str, other: str) -> bool:
    """Rows are compared only like with like: a forward-only row never against a forward+backward one."""
    a, b = passes(ref), passes(other)
    return a is None or b is None or a == b


def is_anchor(name: str, anchor: str) -> bool:
    """The row's id (inside the brackets of a parametrized test) starts with `anchor`, followed by the end
    or a character that is not a letter or digit (so `spin_fast` matches `spin_fast_fwd` and
    `spin_fast_compiled_fwd` but not `spin_fastest`)."""
    row = name[name.index("[") + 1:] if "[" in name else name
    return re.match(re.escape(anchor) + r"(?![A-Za-z0-9])", row) is not None


def load(path: Path) -> dict:
    """A pytest-benchmark JSON file; ValueError naming the file where it is missing or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: {e.strerror if isinstance(e, OSError) else 'not JSON'}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return data


def rows(path: Path, anchor: str | None = None):
    data = load(path)
    device = device_name(data.get("machine_info", {}))
    date = data.get("datetime", "")[:10]
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b.get("group") or b["name"]].append(b)
    for group, benches in sorted(groups.items()):
        if anchor is not None:  # each peer (as the reference) against each of our rows
            ours = [b for b in benches if is_anchor(b["name"], anchor)]
            for b in ours:
                for peer in benches:
                    if is_anchor(peer["name"], anchor) or passes(peer["name"]) != passes(b["name"]):
                        continue
                    r, o = peer["stats"]["mean"], b["stats"]["mean"]
                    yield group, peer["name"], b["name"], r, o, r / o, device, date
            continue
        refs = [b for b in benches if is_reference(b["name"])]
        for ref in refs:
            for b in benches:
                if b is ref or is_reference(b["name"]) or not comparable(ref["name"], b["name"]):
                    continue
                r, o = ref["stats"]["mean"], b["stats"]["mean"]
                yield group, ref["name"], b["name"], r, o, r / o, device, date


def _ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def wide_table(path: Path, anchor: str) -> list[str]:
    """Markdown lines: a row per (task, passes, batch), a column per implementation (median ms and its
    ratio over `anchor`'s), and the fastest non-anchor implementation over `anchor`."""
    cells: dict = defaultdict(dict)
    impls: list[str] = []
    for b in load(path)["benchmarks"]:
        info = b.get("extra_info", {})
        if not {"task", "passes", "batch", "impl"} <= set(info):
            continue
        cells[(info["task"], info["passes"], int(info["batch"]))][info["impl"]] = b["stats"]["median"]
        if info["impl"] not in impls:
            impls.append(info["impl"])
    others = [i for i in impls if not is_anchor(i, anchor)]
    lines = ["| task | B | " + " | ".join(impls) + " | fastest other / " + anchor + " |",
             "|---|---|" + "---|" * (len(impls) + 1)]
    for (task, passes_, batch), row in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] != "fwd", kv[0][2])):
        ours = row.get(anchor)
        out = []
        for impl in impls:
            t = row.get(impl)
            if t is None:
                out.append("-")
            else:
                out.append(_ms(t) if impl == anchor or ours is None else f"{_ms(t)} ({t / ours:.2f}x)")
        best = min((row[i], i) for i in others if i in row) if any(i in row for i in others) else None
        tail = "-" if best is None or ours is None else f"{best[0] / ours:.2f}x ({best[1]})"
        label = f"{task} {'forward' if passes_ == 'fwd' else 'forward + backward'}"
        lines.append(f"| {label} | {batch} | " + " | ".join(out) + f" | {tail} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--anchor", help="rows whose name starts with this are ours, every other row a peer")
    ap.add_argument("--wide", action="store_true", help="with --anchor: the peers table, a column per implementation")
    args = ap.parse_args(argv)
    try:
        return _print(args)
    except ValueError as e:
        ap.error(str(e))


def _print(args) -> int:
    if args.wide:
        if args.anchor is None:
            raise ValueError("--wide needs --anchor")
        for f in args.files:
            print("\n".join(wide_table(f, args.anchor)))
        return 0
    if args.markdown:
        print("| group | reference | ours | reference ms | ours ms | ratio | device | date |")
        print("|---|---|---|---|---|---|---|---|")
    for f in args.files:
        for group, rn, on, r, o, ratio, device, date in rows(f, args.anchor):
            if args.markdown:
                print(f"| {group} | {rn} | {on} | {1e3 * r:.3f} | {1e3 * o:.3f} | {ratio:.1f}x | {device} | {date} |")
            else:
                print(f"{group:28s} {on:50s} {1e3 * o:10.3f} ms vs {rn} {1e3 * r:10.3f} ms  ratio {ratio:7.2f}x  [{device}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
