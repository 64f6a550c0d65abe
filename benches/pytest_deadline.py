"""pytest plugin of benches/gpu_check.sh: `-p pytest_deadline --deadline EPOCH_SECONDS` skips every
test or benchmark that would start after the deadline, so a run given a time budget ends on time with
its reports written (a test that has started runs to its end; the script's outer `timeout` is the
hard stop)."""
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--deadline", type=float, default=None,
                     help="seconds since the epoch after which no further test starts (skipped, reason given)")


def pytest_runtest_setup(item):
    deadline = item.config.getoption("--deadline")
    if deadline is not None and time.time() > deadline:
        pytest.skip(f"time budget spent: not started after the deadline {time.strftime('%H:%M:%S', time.localtime(deadline))}")
