"""Runs are never lost: work dirs are not overwritten, resume finds the last good checkpoint, a NaN never
reaches a checkpoint, checkpoints are pruned and linked, files get the umask and survive a full disk."""
import errno
import os
import shutil
import stat

import pytest
import torch
import yaml

from spin_fast.train.checkpoint import load_checkpoint, save_checkpoint, step_files
from spin_fast.train.run_dir import (RunDirError, config_as_it_ran, config_changes, find_resume_checkpoint,
                                    truncate_log)

from test_train import data_root, small_config  # noqa: F401  (the module's synthetic data root fixture)


@pytest.fixture(scope="module")
def base_run(data_root, tmp_path_factory):  # noqa: F811
    """A finished 4-step run (checkpoints at 2 and 4, a log row a step), copied by the tests below."""
    from spin_fast.train.loop import train

    work = tmp_path_factory.mktemp("base") / "run"
    train(small_config(data_root, work, max_steps=4, keep_checkpoints=0))
    return work


def copy_run(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def test_a_run_is_never_overwritten(data_root, base_run, tmp_path):  # noqa: F811
    from spin_fast.train.loop import train

    work = copy_run(base_run, tmp_path)
    before = {p.name: p.read_bytes() for p in (work / "checkpoints").iterdir()}
    with pytest.raises(RunDirError) as e:
        train(small_config(data_root, work, max_steps=4))
    msg = str(e.value)
    assert str(work) in msg and "--resume" in msg and "--work-dir" in msg and "--overwrite" in msg, msg
    assert {p.name: p.read_bytes() for p in (work / "checkpoints").iterdir()} == before
    # --overwrite moves the old run aside, every file intact, and starts afresh
    train(small_config(data_root, work, max_steps=1, ckpt_every=1), overwrite=True)
    aside = tmp_path / "run.old-1"
    assert {p.name: p.read_bytes() for p in (aside / "checkpoints").iterdir()} == before
    assert (aside / "log.csv").read_text() == (base_run / "log.csv").read_text()
    assert load_checkpoint(work)["meta"]["step"] == 1


def test_demo_twice_keeps_the_first(data_root, tmp_path, monkeypatch):  # noqa: F811
    """The README's `python -m spin_fast.train` (no data root, no --work-dir) twice: two demo dirs."""
    from spin_fast.train.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPIN_FAST_DATA_ROOT", raising=False)
    monkeypatch.setenv("SPIN_FAST_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "synthetic").mkdir(parents=True)
    (tmp_path / "cache" / "synthetic" / "data").symlink_to(data_root)  # the stand-in, already rendered
    args = ["--max-steps", "1", "--batch-size", "2", "--data.loader", "reference", "--data.threads", "1",
            "--smplify.stage1_iters", "1", "--smplify.stage2_iters", "1", "--model.channels_last", "false"]
    assert main(args) == 0
    first = (tmp_path / "work_dirs/demo/checkpoints/step_0000001.pth").read_bytes()
    assert main(args) == 0
    assert (tmp_path / "work_dirs/demo/checkpoints/step_0000001.pth").read_bytes() == first
    assert load_checkpoint(tmp_path / "work_dirs/demo-2")["meta"]["step"] == 1


def test_resume_falls_back_from_a_truncated_latest(base_run, tmp_path, capsys):
    work = copy_run(base_run, tmp_path)
    latest = work / "checkpoints" / "latest.pth"
    data = latest.read_bytes()
    latest.unlink()  # a separate, truncated file (the step file it linked to stays whole)
    latest.write_bytes(data[: len(data) // 2])
    path, ckpt = find_resume_checkpoint(work)
    err = capsys.readouterr().err
    assert path.name == "step_0000004.pth" and ckpt["meta"]["step"] == 4
    assert f"skipped {latest}: unreadable" in err and "using" in err and "step_0000004.pth" in err, err
    # the step file itself truncated too: the next older one
    (work / "checkpoints" / "step_0000004.pth").write_bytes(data[:1000])
    path, ckpt = find_resume_checkpoint(work)
    assert path.name == "step_0000002.pth" and ckpt["meta"]["step"] == 2
    # a step file newer than latest.pth (killed between writing it and linking latest.pth) wins
    work2 = copy_run(base_run, tmp_path / "b")
    shutil.copy(work2 / "checkpoints" / "step_0000002.pth", work2 / "checkpoints" / "latest.pth.new")
    os.replace(work2 / "checkpoints" / "latest.pth.new", work2 / "checkpoints" / "latest.pth")
    assert find_resume_checkpoint(work2)[0].name == "step_0000004.pth"


def test_resume_errors_name_the_right_path(data_root, base_run, tmp_path, capsys):  # noqa: F811
    from spin_fast.train.loop import train

    with pytest.raises(RunDirError, match=rf"no checkpoint to resume from in {tmp_path / 'new' / 'checkpoints'}"):
        train(small_config(data_root, tmp_path / "new", max_steps=4), resume=True)
    with pytest.raises(RunDirError, match=r"--resume .*nope\.pth: no such checkpoint file"):
        train(small_config(data_root, tmp_path / "new", max_steps=4), resume=str(tmp_path / "nope.pth"))
    work = copy_run(base_run, tmp_path)
    assert train(small_config(data_root, work, max_steps=4), resume=True) == {"step": 4}
    assert "is at step 4, past max_steps 4: nothing to train" in capsys.readouterr().err
    # --resume PATH: from the named (older) checkpoint
    assert train(small_config(data_root, work, max_steps=2),
                 resume=str(work / "checkpoints" / "step_0000002.pth")) == {"step": 2}


def test_weights_only_refusal_names_the_file(base_run, tmp_path):
    work = copy_run(base_run, tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"meta": {"step": 1}, "x": shutil.copy}, evil)  # a global weights_only refuses
    with pytest.raises(RunDirError) as e:
        find_resume_checkpoint(work, evil)
    msg = str(e.value)
    assert str(evil) in msg and "refusing to load" in msg and "shutil.copy" in msg, msg
    advice = msg.replace(str(evil), "")
    assert "weights_only" not in advice and "False" not in advice  # no advice to turn the safety off


def test_a_key_newer_than_the_checkpoint_counts_as_what_its_preset_gave():
    """A run saved before data.flip_prob existed flipped with its preset's 0.5: resuming it with 0.5 is
    no change, with 0 it is one."""
    from spin_fast.train.config import build_config, to_dict

    for preset in ("mmhuman3d", "spin"):
        now = to_dict(build_config(overrides={"data.root": "/d", "preset": preset}))
        old = yaml.safe_load(yaml.safe_dump(now))
        del old["data"]["flip_prob"]
        assert config_changes(old, now) == {"data.flip_prob": (None, 0.5)}
        assert config_changes(config_as_it_ran(old), now) == {}
        no_flip = to_dict(build_config(overrides={"data.root": "/d", "preset": preset, "data.flip_prob": 0}))
        assert config_changes(config_as_it_ran(old), no_flip) == {"data.flip_prob": (0.5, 0.0)}
    assert config_as_it_ran({"data": {"no_such_key": 1}}) == {"data": {"no_such_key": 1}}


def test_changed_config_is_refused_then_recorded(data_root, base_run, tmp_path):  # noqa: F811
    from spin_fast.train.loop import train

    work = copy_run(base_run, tmp_path)
    cfg = small_config(data_root, work, max_steps=5, **{"optim.lr": 5e-5, "smplify.stage1_iters": 2})
    with pytest.raises(RunDirError) as e:
        train(cfg, resume=True)
    msg = str(e.value)
    assert "optim.lr: 0.0001 -> 5e-05" in msg and "smplify.stage1_iters: 3 -> 2" in msg, msg
    assert "--allow-config-change" in msg and "max_steps" not in msg
    with pytest.raises(RunDirError, match="checkpoint is resnet18, config asks resnet50"):
        train(small_config(data_root, work, max_steps=5, **{"model.backbone": "resnet50"}), resume=True,
              allow_config_change=True)
    train(cfg, resume=True, allow_config_change=True, return_state=True)
    ckpt = load_checkpoint(work)
    # the new lr is really used (the restored optimizer state does not keep the old one) and recorded
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-5)
    assert ckpt["meta"]["config"]["optim"]["lr"] == 5e-5
    assert yaml.safe_load((work / "config.yaml").read_text())["optim"]["lr"] == 5e-5
    history = yaml.safe_load((work / "config_history.yaml").read_text())
    assert [h["step"] for h in history] == [0, 4]
    assert history[0]["config"]["optim"]["lr"] == 1e-4
    assert history[1]["changed"]["optim.lr"] == {"old": 1e-4, "new": 5e-5}
    assert history[1]["resumed_from"].endswith("latest.pth")


def test_log_rows_after_the_resumed_step_are_dropped(base_run, tmp_path):
    work = copy_run(base_run, tmp_path)
    log = work / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    assert [ln.split(",")[0] for ln in lines] == ["step", "1", "2", "3", "4"]
    log.write_text("".join(lines) + "5,0.1,0.2")  # a row torn by a kill
    assert truncate_log(log, 2) == 3
    assert log.read_text() == "".join(lines[:3])


def test_nan_on_a_non_logging_step_never_reaches_a_checkpoint(data_root, tmp_path, monkeypatch):  # noqa: F811
    """One sample's predicted betas become NaN at step 3; logging and checkpoints are at step 4."""
    import spin_fast.train.loop as loop

    real_step, calls, poisoned = loop.train_step, [], {}

    def step_with_poison(ctx, batch):
        calls.append(1)
        if len(calls) != 3:
            return real_step(ctx, batch)
        net = ctx.model

        def forward(img):
            out = net(img)
            betas = out.betas.clone()
            betas[1] = float("nan")
            return out._replace(betas=betas)

        ctx.model = forward
        poisoned.update(path=batch["image_path"][1], index=int(batch["sample_index"][1]))
        try:
            return real_step(ctx, batch)
        finally:
            ctx.model = net

    monkeypatch.setattr(loop, "train_step", step_with_poison)
    work = tmp_path / "nan"
    cfg = small_config(data_root, work, max_steps=8, log_every=4, ckpt_every=2)
    with pytest.raises(FloatingPointError) as e:
        loop.train(cfg)
    msg = str(e.value)
    assert "at step 3" in msg and f"index {poisoned['index']} image {poisoned['path']}" in msg, msg
    saved = step_files(work / "checkpoints")
    assert [s for s, _ in saved] == [2]
    ckpt = load_checkpoint(work)
    assert ckpt["meta"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    # the first step is always logged; step 4, the next logging step, never was
    assert [r.split(",")[0] for r in (work / "log.csv").read_text().splitlines()[1:]] == ["1"]


def test_non_finite_state_is_never_saved(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, 1, model, opt, None, None, {})
    opt.state[model.weight]["exp_avg"][0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"step-2 checkpoint: non-finite values in optimizer\.state\.0\.exp_avg"):
        save_checkpoint(tmp_path, 2, model, opt, None, None, {})
    assert [s for s, _ in step_files(tmp_path / "checkpoints")] == [1]
    assert load_checkpoint(tmp_path)["meta"]["step"] == 1


def test_keep_checkpoints_and_latest_is_a_link(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, opt, None, None, {}, keep=3)
    folder = tmp_path / "checkpoints"
    assert [s for s, _ in step_files(folder)] == [5, 4, 3]
    assert os.path.samefile(folder / "latest.pth", folder / "step_0000005.pth")
    assert sorted(p.name for p in folder.iterdir()) == ["latest.pth", "step_0000003.pth", "step_0000004.pth",
                                                         "step_0000005.pth"]


def test_files_get_the_umask_and_stale_temporaries_go(tmp_path):
    from spin_fast.atomic import atomic_write_bytes, remove_stale_temporaries

    old = os.umask(0o027)
    try:
        p = atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    # a killed writer's temporary file (its pid is gone) goes when the same target is next written
    dead = _dead_pid()
    stale = tmp_path / f".a.json.{dead}.k1ll3d.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / f".b.json.{dead}.k1ll3d.tmp"
    other.write_bytes(b"half")
    live = tmp_path / f".a.json.{os.getppid()}.alive1.tmp"  # a live process's write in progress stays
    live.write_bytes(b"busy")
    atomic_write_bytes(tmp_path / "a.json", b"[]")
    assert not stale.exists() and other.exists() and live.exists()
    assert remove_stale_temporaries(tmp_path) == [other] and live.exists()


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_full_disk_keeps_the_previous_checkpoint(data_root, base_run, tmp_path, monkeypatch):  # noqa: F811
    """ENOSPC while the step-6 checkpoint is written: a clear error, no temporary file, step 4 resumable."""
    import spin_fast.atomic as atomic
    from spin_fast.train.__main__ import main

    work = copy_run(base_run, tmp_path)
    real_fsync = atomic.os.fsync

    def fsync(fd):
        if os.fstat(fd).st_size > 1_000_000:  # the checkpoint, not log.csv or config.yaml
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    from test_train import _cli_args

    args = _cli_args(data_root, work, 6) + ["--optim.lr", "1e-4", "--resume"]
    import io
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 2
    assert f"no space left on device while writing {work / 'checkpoints' / 'step_0000006.pth'}" in err.getvalue()
    assert not [p for p in (work / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert find_resume_checkpoint(work)[1]["meta"]["step"] == 4


def _wait(cond, run, timeout=600, poll=0.002):
    import time

    deadline = time.time() + timeout
    while not cond() and run.poll() is None and time.time() < deadline:
        time.sleep(poll)
    return cond()


def _rows(path):
    import csv

    def timing(k):  # measurements (images_per_s, the phase timers *_ms): the only columns that may differ
        return k == "images_per_s" or k.endswith("_ms")

    with open(path) as fh:
        return [{k: v for k, v in r.items() if not timing(k)} for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(data_root, tmp_path):  # noqa: F811
    """SIGKILL (the run and its loader workers) a little after a checkpoint, then in the middle of a
    checkpoint write, then at a random moment again; resume after each. The end state equals an
    uninterrupted run's exactly: weights, optimizer, fits, RNG states and log.csv (timing columns
    aside), with no temporary file and no duplicate log row."""
    import random
    import signal
    import time

    from test_train import _cli_args, _run_cli

    steps = 8
    rng = random.Random(13)
    work = tmp_path / "killed"
    folder = work / "checkpoints"

    def newest():
        return max((s for s, _ in step_files(folder)), default=0)

    def writing():
        return [p for p in folder.glob(".step_*.tmp")] if folder.is_dir() else []

    full = _run_cli(_cli_args(data_root, tmp_path / "full", steps))  # runs beside the killed ones (own folder)
    try:
        kills = []
        for i, how in enumerate(["after a checkpoint", "during a checkpoint write", "after a checkpoint"]):
            run = _run_cli(_cli_args(data_root, work, steps) + (["--resume"] if i else []))
            if how == "during a checkpoint write":
                assert _wait(lambda: bool(writing()), run), run.communicate()
            else:
                seen = newest()
                assert _wait(lambda: newest() > seen, run), run.communicate()
                time.sleep(rng.uniform(0.0, 1.0))
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            kills.append((how, newest(), [p.name for p in writing()]))
        assert kills[1][2], kills  # the second kill really interrupted a checkpoint write
        final = _run_cli(_cli_args(data_root, work, steps) + ["--resume"])
        out, err = final.communicate(timeout=900)
        assert final.returncode == 0, err
        assert "resumed" in err or "nothing to train" in err, err
        out, err = full.communicate(timeout=900)
        assert full.returncode == 0, err
    finally:
        if full.poll() is None:
            os.killpg(full.pid, signal.SIGKILL)
            full.communicate()

    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(work)
    assert a["meta"]["step"] == b["meta"]["step"] == steps
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert torch.equal(a["fits"]["data"], b["fits"]["data"])
    for i, sa in a["optimizer"]["state"].items():
        for name, v in sa.items():
            assert torch.equal(v, b["optimizer"]["state"][i][name]), (i, name)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows_a, rows_b = _rows(tmp_path / "full" / "log.csv"), _rows(work / "log.csv")
    assert [r["step"] for r in rows_b] == [str(s) for s in range(1, steps + 1)]
    assert rows_a == rows_b
    assert not [p for p in work.rglob("*.tmp")], kills
