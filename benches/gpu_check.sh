#!/usr/bin/env bash
# The GPU checks as one prepared run, for a machine with a CUDA GPU (the development machines have none):
#
#   benches/gpu_check.sh [tests|benches|all]        (default: all)
#
#   tests    the test suite without the slow CPU-sized tests: on CUDA the kernel tests run the compiled
#            Triton kernels at full size, and the CUDA variants (SMPLify CUDA graph, DALI 'mixed'
#            decode, ...) that CPU runs skip are run
#   benches  every benchmark, saved as benches/results/<gpu>-<date>.json (pytest-benchmark's JSON, GPU
#            named in machine_info by benches/conftest.py) plus the ratio table <same name>.md that
#            goes into benches/RESULTS.md
#
# Exits 2 without touching anything where torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in tests|benches|all) ;; *) echo "usage: benches/gpu_check.sh [tests|benches|all]" >&2; exit 2 ;; esac

gpu="$(python -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
if [ -z "$gpu" ]; then
    echo "gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False); nothing run" >&2
    exit 2
fi
echo "gpu_check: $gpu"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

if [ "$what" != benches ]; then
    python -m pytest -q -x -m "not slow" tests
fi
if [ "$what" != tests ]; then
    name="$(echo "$gpu" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')-$(date +%Y-%m-%d)"
    mkdir -p benches/results
    python -m pytest benches --benchmark-only --benchmark-json="benches/results/$name.json" \
        --benchmark-columns=min,mean,median,rounds
    python benches/ratio.py "benches/results/$name.json" --markdown | tee "benches/results/$name.md"
fi
