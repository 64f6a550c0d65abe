#!/usr/bin/env bash
# The GPU checks as one prepared run for a machine with a CUDA GPU and no network:
#
#   benches/gpu_check.sh OUT_DIR [--budget-s 480] [--only tests|benches] [--dry-run]
#
#   tests    `pytest -m gpu tests`: the CUDA twin of every GPU path against its CPU/torch path
#            (tests/test_gpu_*.py, and the CUDA variants of the kernel, loader and SMPLify tests)
#   benches  every benchmark (`pytest benches --benchmark-only`; the one-launch SMPLify rows run first,
#            benches/conftest.py), then its ratio table
#
# Nothing is downloaded. spin_fast runs from this tree (PYTHONPATH); packages the machine lacks come
# from wheels carried in the tree's git-ignored .whl/ folder, installed with --no-index --no-deps into
# a temporary folder (never into the machine's python): smplx (the reference body model) and
# scikit-image + lazy_loader (the synthetic stand-in's marching cubes). Get them, on any machine with
# network, for the GPU machine's Python (3.12, x86-64 Linux):
#
#   pip download smplx==0.1.28 scikit-image==0.25.2 lazy_loader==0.4 --no-deps --python-version 3.12 \
#       --platform manylinux2014_x86_64 --only-binary=:all: -d .whl
#
# DALI is never carried (hundreds of MB): its tests and rows skip with a reason.
#
# Time: stages get shares of --budget-s (default 480 s: give the command a 600 s limit): tests 45%,
# benches the rest. A pytest deadline (benches/pytest_deadline.py) skips what would start late, and
# `timeout` stops a stage at its end. OUT_DIR receives at most 7 files (logs cut to 16 MiB):
#   env.txt  summary.txt  tests.log  tests.xml  benches.log  <gpu>-<date>.json  <gpu>-<date>.md
# (the JSON and the table are what go into benches/results/ and benches/RESULTS.md).
#
# Where torch sees no CUDA device it prints the plan and exits 2 without running anything;
# --dry-run prints the plan and stops there (exit 0 on a GPU machine, 2 without a GPU).
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
usage() { echo "usage: benches/gpu_check.sh OUT_DIR [--budget-s SECONDS] [--only tests|benches] [--dry-run]" >&2; exit 2; }

out="" budget=480 only=all dry=0
while [ $# -gt 0 ]; do
    case "$1" in
        --budget-s) [ $# -ge 2 ] || usage; budget="$2"; shift 2 ;;
        --budget-s=*) budget="${1#*=}"; shift ;;
        --only) [ $# -ge 2 ] || usage; only="$2"; shift 2 ;;
        --only=*) only="${1#*=}"; shift ;;
        --dry-run) dry=1; shift ;;
        -h|--help) usage ;;
        -*) echo "gpu_check: unknown option $1" >&2; usage ;;
        *) [ -z "$out" ] || usage; out="$1"; shift ;;
    esac
done
[ -n "$out" ] || { echo "gpu_check: give the results folder (OUT_DIR)" >&2; usage; }
case "$only" in tests|benches|all) ;; *) echo "gpu_check: --only must be tests or benches, got $only" >&2; usage ;; esac
case "$budget" in ''|*[!0-9]*) echo "gpu_check: --budget-s must be whole seconds, got $budget" >&2; usage ;; esac
[ "$budget" -ge 60 ] || { echo "gpu_check: --budget-s $budget is too short (at least 60)" >&2; exit 2; }

tests_s=$(( budget * 45 / 100 )); benches_s=$(( budget - tests_s - 10 ))
[ "$only" = tests ] && tests_s=$(( budget - 10 ))
[ "$only" = benches ] && benches_s=$(( budget - 10 ))
wheels=$(ls "$repo"/.whl/*.whl 2>/dev/null | xargs -r -n1 basename | tr '\n' ' ')

echo "gpu_check plan (budget ${budget} s, results in $out):"
echo "  0. setup    PYTHONPATH=$repo:$repo/kernels; .whl/ wheels installed --no-index --no-deps into a temp folder: ${wheels:-none found (smplx-dependent tests will fail)}"
[ "$only" != benches ] && echo "  1. tests    $PY -m pytest -m gpu tests -rs --junitxml=$out/tests.xml   (${tests_s} s, deadline plugin, timeout)"
[ "$only" != tests ] && echo "  2. benches  $PY -m pytest benches --benchmark-only --benchmark-max-time=0.2 --benchmark-min-rounds=3 --benchmark-json=$out/<gpu>-<date>.json; benches/ratio.py --markdown   (${benches_s} s, deadline plugin, timeout)"

gpu="$(cd /tmp && "$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)"
if [ -z "$gpu" ]; then
    echo "gpu_check: no CUDA GPU: torch.cuda.is_available() is False for $PY; nothing run" >&2
    exit 2
fi
echo "gpu_check: $gpu"
[ "$dry" = 1 ] && { echo "gpu_check: dry run, nothing run"; exit 0; }

t0=$(date +%s)
mkdir -p "$out"
site="$(mktemp -d)"; trap 'rm -rf "$site"' EXIT
for w in $wheels; do  # one by one: a wheel for another Python does not stop the others
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
        --target "$site" "$repo/.whl/$w" \
        || echo "gpu_check: could not install .whl/$w (for another Python or platform?)" >&2
done
export PYTHONPATH="$repo:$repo/kernels:$site:$repo/benches${PYTHONPATH:+:$PYTHONPATH}"
export SPIN_FAST_CACHE="${SPIN_FAST_CACHE:-$site/cache}"
{
    echo "gpu: $gpu"; date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    "$PY" -c 'import sys, torch, triton, numpy; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "numpy", numpy.__version__)'
    for m in smplx skimage torchvision nvidia.dali spin_fast spin_fast_kernels; do
        "$PY" -c "import $m as x; print('$m', getattr(x, '__version__', ''), x.__file__)" 2>&1 | tail -1
    done
    echo "wheels: ${wheels:-none}"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

cap() { [ -f "$1" ] && [ "$(stat -c %s "$1")" -gt 16777216 ] && { tail -c 16000000 "$1" > "$1.cut"; mv "$1.cut" "$1"; }; true; }
stage() {  # name seconds command...: run with a deadline 20 s before the stage's end and a hard timeout
    local name="$1" secs="$2"; shift 2
    local start; start=$(date +%s)
    timeout --signal=INT --kill-after=10 "$secs" "$@" -p pytest_deadline --deadline=$(( start + secs - 20 )) \
        > "$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - start )) s (budget $secs s)" | tee -a "$out/summary.txt"
    tail -n 25 "$out/$name.log"
    cap "$out/$name.log"
    return $rc
}
: > "$out/summary.txt"
rc=0
cd "$repo"
if [ "$only" != benches ]; then
    stage tests "$tests_s" "$PY" -m pytest -m gpu tests -q -rs --junitxml="$out/tests.xml" || rc=1
fi
if [ "$only" != tests ]; then
    left=$(( budget - ($(date +%s) - t0) - 10 ))
    [ "$left" -lt "$benches_s" ] && benches_s=$left
    name="$(echo "$gpu" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')-$(date +%Y-%m-%d)"
    stage benches "$benches_s" "$PY" -m pytest benches --benchmark-only --benchmark-json="$out/$name.json" \
        --benchmark-max-time=0.2 --benchmark-min-rounds=3 --benchmark-columns=min,mean,median,rounds -q -rs || rc=1
    [ -f "$out/$name.json" ] && "$PY" benches/ratio.py "$out/$name.json" --markdown > "$out/$name.md"
    for f in "$out/$name.json" "$out/$name.md"; do cap "$f"; done
fi
echo "total: $(( $(date +%s) - t0 )) s of $budget s, exit $rc" | tee -a "$out/summary.txt"
exit $rc
