"""One run a work dir, one fit an output: a second process is refused at once, naming the holder's pid;
the first runs exactly as it would alone; a SIGKILLed holder leaves no lock behind that stops the next run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from spin_fast.run_lock import LockHeld, RunLock
from spin_fast.train.checkpoint import load_checkpoint
from spin_fast.train.run_dir import LOCK_NAME

from test_safety_runs import _rows, _wait
from test_train import REPO, _cli_args, _run_cli, data_root  # noqa: F401  (the module's synthetic data root fixture)

HOLD = "import sys, time; from spin_fast.run_lock import RunLock; RunLock(sys.argv[1], 'x').acquire(); print('held', flush=True); time.sleep(600)"


def _holder(path):
    """A process holding the lock `path` (printing 'held' once it does)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_held_lock_is_refused_naming_the_pid_and_freed_by_sigkill(tmp_path):
    path = tmp_path / "out" / ".lock"
    holder = _holder(path)
    try:
        assert RunLock(path, "the output").in_use()
        with pytest.raises(LockHeld, match=f"in use by process {holder.pid}"):
            RunLock(path, "the output").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert path.exists()  # the killed holder's file stays, its lock does not
    with RunLock(path, "the output") as lock:
        assert lock.held and path.read_text().split()[0] == str(os.getpid())
    assert not path.exists()  # released: removed


def test_a_second_demo_run_picks_a_fresh_work_dir_while_the_first_starts(tmp_path):
    from spin_fast.train.run_dir import fresh_work_dir

    base = tmp_path / "demo"
    holder = _holder(base / LOCK_NAME)  # a first demo, locked in but nothing written yet
    try:
        assert fresh_work_dir(base) == tmp_path / "demo-2"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert fresh_work_dir(base) == base  # a killed start leaves it free


def test_two_trainings_into_one_work_dir(data_root, tmp_path):  # noqa: F811
    """The second is refused within seconds, naming the first's pid; the first ends as a lone run does."""
    work, lone = tmp_path / "run", tmp_path / "lone"
    first = _run_cli(_cli_args(data_root, work, 2))
    try:
        assert _wait(lambda: (work / LOCK_NAME).is_file(), first, timeout=120), first.communicate()
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "spin_fast.train", *_cli_args(data_root, work, 2)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        assert first.poll() is None, "the first run ended before the second was refused: no overlap tested"
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate()
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    assert lines[-1].startswith(f"spin_fast.train: error: work dir {work} is in use by process {first.pid}"), lines
    assert took < 30, took  # refused at once: an interpreter start, no data, no model
    assert not (work / LOCK_NAME).exists()  # released by the first at its end

    alone = subprocess.run([sys.executable, "-m", "spin_fast.train", *_cli_args(data_root, lone, 2)], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr
    a, b = load_checkpoint(work), load_checkpoint(lone)
    assert a["meta"]["step"] == b["meta"]["step"] == 2
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert torch.equal(a["fits"]["data"], b["fits"]["data"])
    assert _rows(work / "log.csv") == _rows(lone / "log.csv")
    history = (work / "config_history.yaml").read_text()
    assert history.count("started:") == 1  # one start recorded: the refused run wrote nothing


def test_after_a_sigkill_of_the_holder_resume_starts_without_clean_up(data_root, tmp_path):  # noqa: F811
    work = tmp_path / "run"
    run = _run_cli(_cli_args(data_root, work, 40) + ["--ckpt_every", "1"])
    try:
        assert _wait(lambda: (work / "checkpoints" / "step_0000001.pth").is_file(), run, timeout=300), \
            run.communicate()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
    assert (work / LOCK_NAME).is_file()  # left behind by the killed run, and no obstacle:
    again = subprocess.run([sys.executable, "-m", "spin_fast.train", *_cli_args(data_root, work, 2), "--resume"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stderr and load_checkpoint(work)["meta"]["step"] == 2
    assert not (work / LOCK_NAME).exists()


def test_a_second_fit_onto_a_held_output_is_refused(data_root, tmp_path):  # noqa: F811
    from spin_fast.fit.run import output_lock

    out = tmp_path / "fits" / "h36m_fits.npy"
    holder = _holder(output_lock(out).path)
    try:
        p = subprocess.run([sys.executable, "-m", "spin_fast.fit", "--dataset", "h36m", "--data-root", str(data_root),
                            "--out", str(out), "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"spin_fast.fit: error: fits output {out}") and f"process {holder.pid}" in line, line
    assert not out.exists() and not out.with_name(out.name + ".progress").exists()
