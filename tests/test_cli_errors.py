"""Every user error of every command, driven through the real command line: exit status 2, one line
`spin_fast.<cmd>: error: ...` naming the file / key / sample, no traceback, and the user's files (inputs,
an earlier run) byte-for-byte unchanged. Ctrl-C: exit 130, where it stopped and the command that continues."""
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spin_fast.config import AssetPaths
from spin_fast.model import HMR

from test_safety_runs import _wait
from test_train import REPO, _cli_args, data_root  # noqa: F401  (the module's synthetic data root fixture)

H36M = "h36m_mosh_train"
MIX = ["--data.mix", "{h36m: 1.0}"]


def cli(cmd: str, *args, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", f"spin_fast.{cmd}", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error(p: subprocess.CompletedProcess, cmd: str, *words: str) -> str:
    """The command failed as a user error: status 2, no traceback, exactly one error line holding `words`."""
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(f"spin_fast.{cmd}: error: ")]
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def hashes(*roots) -> dict[str, str]:
    """sha256 of every file under the roots (a file root: itself)."""
    out = {}
    for root in map(Path, roots):
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def weights(data_root, tmp_path_factory):  # noqa: F811
    """A ResNet-18 HMR state_dict file (the demo's and the wrong-backbone checkpoint)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "hmr18.pth"
    torch.save({"state_dict": HMR("resnet18", mean_params=AssetPaths(data_root).mean_params).state_dict()}, path)
    return path


def _copy_root(data_root, dst):  # noqa: F811
    """A writable copy of the data root (body model links kept)."""
    return Path(shutil.copytree(data_root, dst, symlinks=True))


def _edit_h36m(root: Path, edit) -> Path:
    """Rewrite the h36m HumanData file of `root` with edit(arrays) applied; returns the file."""
    npz = AssetPaths(root).preprocessed(H36M)
    with np.load(npz, allow_pickle=True) as f:  # our own synthetic file
        arrays = dict(f)
    edit(arrays)
    npz.unlink()
    np.savez(npz, **arrays)
    return npz


# --- checkpoints ------------------------------------------------------------------------------------------
def _bad_checkpoints(folder: Path, weights: Path) -> dict[str, tuple[Path, str]]:
    text = folder / "notes.pth"
    text.write_text("not a checkpoint\n")
    whole = weights.read_bytes()
    truncated = folder / "truncated.pth"
    truncated.write_bytes(whole[: len(whole) // 2])
    foreign = folder / "foreign.pth"
    torch.save({"state_dict": {"decoder.weight": torch.zeros(2)}}, foreign)
    return {"text": (text, "not a readable PyTorch checkpoint"),
            "truncated": (truncated, "not a readable PyTorch checkpoint"),
            "foreign": (foreign, "unexpected key 'decoder.weight'"),
            "other backbone": (weights, "checkpoint is resnet18, config asks resnet50")}


@pytest.mark.parametrize("kind", ["text", "truncated", "foreign", "other backbone"])
def test_bad_pretrained_checkpoint(kind, data_root, weights, tmp_path):  # noqa: F811
    path, words = _bad_checkpoints(tmp_path, weights)[kind]
    before = hashes(path, data_root)
    extra = ["--backbone", "resnet50"] if kind == "other backbone" else []
    p = cli("train", *_cli_args(data_root, tmp_path / "w", 1), *MIX, "--model.pretrained", path, *extra)
    one_error(p, "train", str(path), words)
    assert hashes(path, data_root) == before
    assert not (tmp_path / "w" / "log.csv").exists()


def test_bad_checkpoints_in_demo_and_evaluate(data_root, weights, tmp_path):  # noqa: F811
    import types

    bad = _bad_checkpoints(tmp_path, weights)
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (40, 40)).save(images / "a.png")
    # a pickle naming a class of a module that is not installed: unreadable even when trusted
    sys.modules["spin_fast_test_gone"] = module = types.ModuleType("spin_fast_test_gone")
    module.Gone = type("Gone", (), {"__module__": "spin_fast_test_gone"})
    gone = tmp_path / "gone.pth"
    torch.save({"model": module.Gone()}, gone)
    del sys.modules["spin_fast_test_gone"]
    before = hashes(images)
    demo = ["--images", images, "--data-root", data_root, "--device", "cpu"]
    p = cli("demo", "--checkpoint", bad["text"][0], "--out", tmp_path / "o1", *demo)
    one_error(p, "demo", str(bad["text"][0]), "not a readable PyTorch checkpoint")
    p = cli("demo", "--checkpoint", gone, "--out", tmp_path / "o2", *demo)
    one_error(p, "demo", str(gone), "--trust-checkpoint")
    p = cli("demo", "--checkpoint", gone, "--out", tmp_path / "o3", "--trust-checkpoint", *demo)
    one_error(p, "demo", str(gone), "cannot be unpickled even with --trust-checkpoint", "spin_fast_test_gone")
    assert hashes(images) == before
    p = cli("evaluate", "--checkpoint", bad["truncated"][0], "--data-root", data_root, "--loader", "reference")
    one_error(p, "evaluate", str(bad["truncated"][0]), "not a readable PyTorch checkpoint")


def test_a_broken_checkpoint_to_resume_from(data_root, tmp_path):  # noqa: F811
    work = tmp_path / "w"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "latest.pth").write_text("not a checkpoint\n")
    (work / "log.csv").write_text("step,loss\n1,2.0\n")
    before = hashes(work)
    p = cli("train", *_cli_args(data_root, work, 1), *MIX, "--resume")
    one_error(p, "train", "no checkpoint to resume from", str(work / "checkpoints" / "latest.pth"))
    assert hashes(work) == before


# --- names, roots and settings ----------------------------------------------------------------------------
def test_unknown_dataset_and_missing_data_roots(data_root, tmp_path):  # noqa: F811
    one_error(cli("fit", "--dataset", "nope"), "fit", "unknown dataset 'nope'", "h36m")
    one_error(cli("train", "--data-root", tmp_path / "nowhere", "--work-dir", tmp_path / "w"), "train",
              f"data root {tmp_path / 'nowhere'} does not exist")
    p = cli("train", "--work-dir", tmp_path / "w", env={"SPIN_FAST_DATA_ROOT": str(tmp_path / "gone")})
    one_error(p, "train", f"data root {tmp_path / 'gone'} (from $SPIN_FAST_DATA_ROOT) does not exist")
    p = cli("fit", "--dataset", "h36m", env={"SPIN_FAST_DATA_ROOT": str(tmp_path / "gone")})
    one_error(p, "fit", "$SPIN_FAST_DATA_ROOT")
    one_error(cli("data", "check", tmp_path / "nowhere"), "data", f"data root {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("value, words", [
    ("fast", ["$SPIN_FAST_BACKEND is 'fast'", "auto, torch, triton"]),
    pytest.param("triton", ["$SPIN_FAST_BACKEND=triton needs a CUDA GPU", "TRITON_INTERPRET=1"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU runs Triton")),
])
def test_a_kernel_backend_that_cannot_work_is_refused_before_anything(value, words, data_root, tmp_path):  # noqa: F811
    env = {"SPIN_FAST_BACKEND": value, "TRITON_INTERPRET": "0"}
    one_error(cli("train", *_cli_args(data_root, tmp_path / "w", 1), env=env), "train", *words)
    one_error(cli("fit", "--dataset", "h36m", "--data-root", data_root, "--out", tmp_path / "f.npy", env=env),
              "fit", *words)
    assert not (tmp_path / "w").exists() and not list(tmp_path.iterdir())


def test_a_device_that_is_not_there_is_named(data_root, weights, tmp_path):  # noqa: F811
    one_error(cli("fit", "--dataset", "h36m", "--data-root", data_root, "--device", "tpu7"), "fit",
              "device 'tpu7': not a device")
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (40, 40)).save(images / "a.png")
    one_error(cli("demo", "--checkpoint", weights, "--images", images, "--out", tmp_path / "o", "--device", "gpu"),
              "demo", "device 'gpu'")
    one_error(cli("evaluate", "--checkpoint", weights, "--data-root", data_root, "--device", "tpu7"), "evaluate",
              "device 'tpu7': not a device")
    if not torch.cuda.is_available():
        one_error(cli("train", *_cli_args(data_root, tmp_path / "w", 1), "--device", "cuda"), "train",
                  "device 'cuda' requested but torch sees no CUDA GPU")
    assert not (tmp_path / "w").exists()


# --- outputs checked before the work ----------------------------------------------------------------------
def test_unwritable_outputs_are_named_before_the_work(data_root, tmp_path):  # noqa: F811
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    p = cli("train", *_cli_args(data_root, blocker / "w", 1))
    one_error(p, "train", f"work dir {blocker / 'w'}: cannot write there")
    t0 = time.monotonic()
    p = cli("fit", "--dataset", "h36m", "--data-root", data_root, "--out", blocker / "fits.npy", "--no-progress")
    one_error(p, "fit", f"--out {blocker / 'fits.npy'}: cannot write in {blocker}")
    assert time.monotonic() - t0 < 60  # before the first sample, not after the dataset
    assert blocker.read_text() == "a file where a folder should be"


# --- data stays in its folder and is complete -------------------------------------------------------------
def _outside(arrays):
    arrays["image_path"] = arrays["image_path"].astype(object)
    arrays["image_path"][3] = "../lsp/images/x.jpg"


def _no_keypoints2d(arrays):
    del arrays["keypoints2d"], arrays["keypoints2d_mask"]


def _narrow_keypoints(arrays):
    arrays["keypoints2d"] = arrays["keypoints2d"][:, :-1]


@pytest.fixture(scope="module")
def broken_roots(data_root, tmp_path_factory):  # noqa: F811
    """Copies of the data root whose h36m file has one problem each: (root, npz, the words naming it)."""
    base = tmp_path_factory.mktemp("broken")
    out = {}
    for name, edit, words in [
        ("outside", _outside, ["key 'image_path'", "sample 3", "'../lsp/images/x.jpg'", "outside the dataset"]),
        ("no keypoints2d", _no_keypoints2d, ["key 'keypoints2d'", "required for training"]),
        ("narrow keypoints", _narrow_keypoints,
         ["key 'keypoints2d'", "expected shape (32, 49, 3)", "got (32, 48, 3)"]),
    ]:
        root = _copy_root(data_root, base / name.replace(" ", "_"))
        npz = _edit_h36m(root, edit)
        out[name] = (root, npz, words)
    return out


@pytest.mark.parametrize("case", ["outside", "no keypoints2d", "narrow keypoints"])
def test_bad_data_is_named_by_check_train_and_fit(case, broken_roots, tmp_path):
    root, npz, words = broken_roots[case]
    before = hashes(root)
    p = cli("data", "check", root, "--datasets", "h36m")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "PROBLEMS" in p.stdout and str(npz) in p.stdout and all(w in p.stdout for w in words), p.stdout
    p = cli("train", *_cli_args(root, tmp_path / "w", 1), *MIX)
    one_error(p, "train", str(npz), *words)
    assert not (tmp_path / "w" / "log.csv").exists()  # refused before the first step
    p = cli("fit", "--dataset", "h36m", "--data-root", root, "--out", tmp_path / "f.npy", "--no-progress")
    one_error(p, "fit", str(npz), *words)
    assert hashes(root) == before


def test_an_image_error_in_a_loader_worker_names_the_file_and_sample(data_root, tmp_path):  # noqa: F811
    root = _copy_root(data_root, tmp_path / "data")
    for img in (root / "datasets" / "h36m").rglob("*.jpg"):
        img.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    p = cli("train", *_cli_args(root, tmp_path / "w", 1), *MIX, "--data.threads", "1")
    line = one_error(p, "train", f"image {root / 'datasets' / 'h36m'}", "corrupt JPEG", "(dataset h36m, sample ")
    assert "Caught" not in p.stderr and "worker" not in line


def test_data_check_names_missing_body_model_files(data_root, tmp_path):  # noqa: F811
    root = tmp_path / "data"
    shutil.copytree(data_root, root, symlinks=True, ignore=shutil.ignore_patterns("body_models"))
    p = cli("data", "check", root)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    first = p.stdout.splitlines()[0]
    assert first.startswith("body model") and "missing      6" in first and "PROBLEMS" in first, p.stdout
    assert str(root / "body_models" / "smpl" / "SMPL_NEUTRAL.pkl") in p.stdout


# --- the demo writes over nothing -------------------------------------------------------------------------
def test_demo_writes_over_nothing(data_root, weights, tmp_path):  # noqa: F811
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (60, 80), (200, 30, 30)).save(images / "a.jpg")
    Image.new("RGB", (60, 80), (30, 200, 30)).save(images / "a.png")
    inputs = hashes(images)
    common = ["--checkpoint", weights, "--images", images, "--data-root", data_root, "--device", "cpu"]
    # --out is the images folder: refused, nothing written there
    one_error(cli("demo", *common, "--out", images), "demo", f"--out {images} is the --images folder")
    assert hashes(images) == inputs
    # a.jpg and a.png: two outputs, each named after its whole input name
    out = tmp_path / "renders"
    assert cli("demo", *common, "--out", out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.overlay.png", "a.jpg.person0.obj", "a.png.overlay.png",
                                                     "a.png.person0.obj", "predictions.json", "smpl_params.npz"]
    assert set(json.loads((out / "predictions.json").read_text())) == {"a.jpg", "a.png"}
    first = hashes(out)
    # a second run into the same --out: refused without --overwrite, the first run's files unchanged
    one_error(cli("demo", *common, "--out", out), "demo", f"--out {out} already holds files", "--overwrite")
    assert hashes(out) == first and hashes(images) == inputs
    assert cli("demo", *common, "--out", out, "--overwrite").returncode == 0
    # boxes wholly outside their image, or not numbers: named, nothing written
    boxes = tmp_path / "boxes.json"
    for box, words in [([100, 10, 20, 20], "wholly outside the image (60 x 80 pixels)"),
                       ([-50, 0, 40, 40], "wholly outside"),
                       (["10", 0, 40, 40], "expected [x, y, w, h] (numbers)"),
                       ([0, 0, None, 4], "expected [x, y, w, h] (numbers)")]:
        boxes.write_text(json.dumps({"a.png": box}))
        p = cli("demo", *common, "--out", tmp_path / "boxed", "--bboxes", boxes)
        one_error(p, "demo", str(boxes), "'a.png'", words)
        assert not (tmp_path / "boxed").exists()
    assert hashes(images) == inputs


# --- Ctrl-C -------------------------------------------------------------------------------------------------
def _as_from_a_shell() -> None:
    """In the child before it starts: Ctrl-C's signal neither ignored nor blocked, as a shell starts a
    command (a test process may have inherited either from the library code of earlier tests)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _interrupt(args, ready) -> subprocess.CompletedProcess:
    run = subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_shell)
    try:
        assert _wait(ready, run, timeout=300, poll=0.05), run.communicate()
        run.send_signal(signal.SIGINT)  # Ctrl-C reaches the command (not its loader workers, as in a terminal too)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    return subprocess.CompletedProcess(run.args, run.returncode, out, err)


def _continue(p: subprocess.CompletedProcess, cmd: str) -> list[str]:
    here = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    assert p.returncode == 130 and "Traceback" not in p.stderr, (p.returncode, p.stderr[-2000:], here)
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"spin_fast.{cmd}: interrupted at "), line
    how = shlex.split(line.split("; continue with: ")[1])
    assert how[:3] == ["python", "-m", f"spin_fast.{cmd}"] and how[-1] == "--resume", line
    return how


def test_ctrl_c_in_train_names_the_step_and_the_resume_command(data_root, tmp_path):  # noqa: F811
    work = tmp_path / "w"
    p = _interrupt(["spin_fast.train", *_cli_args(data_root, work, 40), "--ckpt_every", "1"],
                   lambda: (work / "checkpoints" / "step_0000001.pth").is_file())
    how = _continue(p, "train")
    assert "of 40 (its checkpoint of step" in p.stderr.strip().splitlines()[-1]
    how[how.index("--max-steps") + 1] = "2"  # continue it, briefly
    again = subprocess.run([sys.executable, *how[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resumed" in again.stderr, again.stderr


def test_ctrl_c_in_fit_keeps_the_progress_and_says_how_to_continue(data_root, tmp_path):  # noqa: F811
    out = tmp_path / "fits.npy"
    progress = tmp_path / "fits.npy.progress"
    args = ["spin_fast.fit", "--dataset", "h36m", "--data-root", data_root, "--out", out, "--batch-size", "4",
            "--stage1-iters", "10", "--stage2-iters", "10", "--save-every", "1", "--no-progress"]
    p = _interrupt(args, lambda: any(progress.glob("*.pt")))
    how = _continue(p, "fit")
    assert f"saved in {progress}" in p.stderr and any(progress.glob("*.pt"))
    again = subprocess.run([sys.executable, *how[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "(resumed " in again.stdout, again.stderr
    assert np.load(out).shape == (32, 82)


# --- the handler itself -------------------------------------------------------------------------------------
def test_os_errors_of_the_writing_commands_are_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_error(cli("assets", "--out", blocker / "data"), "assets", "Not a directory", str(blocker))
    one_error(cli("data", "synth", "--out", blocker / "data"), "data", "Not a directory", str(blocker))
    assert blocker.read_text() == "x"


def test_the_handler_reports_user_errors_and_keeps_bugs_loud(capsys):
    import errno

    from spin_fast.cli import run_command
    from spin_fast.errors import Interrupted

    def raising(e):
        def main(argv):
            raise e
        return main

    cases = [(OSError(errno.ENOSPC, "no space left on device while writing /x/ckpt.pth"),
              "no space left on device while writing /x/ckpt.pth"),
             (PermissionError(errno.EACCES, "Permission denied", "/x/y"), "Permission denied: /x/y"),
             (OSError(errno.EROFS, "Read-only file system", "/x"), "Read-only file system: /x"),
             (SystemExit("--out x: cannot write there"), "--out x: cannot write there"),
             (FileNotFoundError("missing SMPL asset file(s) under data root /d:\n  /d/a.pkl\n  /d/b.pkl"),
              "missing SMPL asset file(s) under data root /d: /d/a.pkl; /d/b.pkl")]
    for e, text in cases:
        assert run_command("x", raising(e), []) == 2
        assert capsys.readouterr().err == f"spin_fast.x: error: {text}\n"
    assert run_command("x", raising(Interrupted("step 3 of 9")), [], resume=lambda: "python -m x --resume") == 130
    assert capsys.readouterr().err == "spin_fast.x: interrupted at step 3 of 9; continue with: python -m x --resume\n"
    assert run_command("x", lambda argv: None, []) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_command("x", lambda argv: 1 / 0, [])
    with pytest.raises(SystemExit) as e:  # argparse's own exits pass through
        run_command("x", raising(SystemExit(2)), [])
    assert e.value.code == 2
