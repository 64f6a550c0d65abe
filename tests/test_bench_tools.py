"""benches/ratio.py (the RESULTS.md table) and the machine_info hook of benches/conftest.py, on
hand-made pytest-benchmark JSON: pairs, ratios and the device column."""
import importlib.util
import json
from pathlib import Path

import torch

BENCHES = Path(__file__).resolve().parents[1] / "benches"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(name, group, mean):
    return {"name": name, "group": group, "stats": {"mean": mean}}


def _write(tmp_path, machine_info, benches):
    p = tmp_path / "run.json"
    p.write_text(json.dumps({"machine_info": machine_info, "datetime": "2026-11-28T10:00:00",
                             "benchmarks": benches}))
    return p


def test_ratio_pairs_like_with_like(tmp_path):
    ratio = _load("ratio")
    p = _write(tmp_path, {"gpu": "NVIDIA H100 80GB HBM3"}, [
        _bench("test_body[smplx_fwd-64]", "body-B64", 0.016),
        _bench("test_body[smplx_fwd_bwd-64]", "body-B64", 0.048),
        _bench("test_body[ours_full_fwd-64]", "body-B64", 0.004),
        _bench("test_body[ours_joints_only_fwd_bwd-64]", "body-B64", 0.0006),
        _bench("test_smplify[smplx_reference]", "smplify-B64", 9.0),
        _bench("test_smplify[fast]", "smplify-B64", 0.12),
        _bench("test_loader[reference_dataloader]", "loader", 0.2),
        _bench("test_loader_gpu[torchvision_gpu]", "loader", 0.05),
    ])
    got = {(r[1], r[2]): r for r in ratio.rows(p)}
    assert set(got) == {("test_body[smplx_fwd-64]", "test_body[ours_full_fwd-64]"),
                        ("test_body[smplx_fwd_bwd-64]", "test_body[ours_joints_only_fwd_bwd-64]"),
                        ("test_smplify[smplx_reference]", "test_smplify[fast]"),
                        ("test_loader[reference_dataloader]", "test_loader_gpu[torchvision_gpu]")}
    r = got[("test_body[smplx_fwd_bwd-64]", "test_body[ours_joints_only_fwd_bwd-64]")]
    assert abs(r[5] - 80.0) < 1e-9 and r[6] == "NVIDIA H100 80GB HBM3" and r[7] == "2026-11-28"
    assert abs(got[("test_smplify[smplx_reference]", "test_smplify[fast]")][5] - 75.0) < 1e-9


def test_ratio_anchor_compares_every_peer_with_ours(tmp_path):
    """--anchor spin_fast: each peer row over spin_fast's rows of the same passes (> 1: ours faster)."""
    ratio = _load("ratio")
    p = _write(tmp_path, {"gpu": None}, [
        _bench("test_body_peers[spin_fast_fwd-mesh-B64]", "peers-mesh-B64", 0.010),
        _bench("test_body_peers[spin_fast_compiled_fwd-mesh-B64]", "peers-mesh-B64", 0.008),
        _bench("test_body_peers[spin_fast_fwd_bwd-mesh-B64]", "peers-mesh-B64", 0.020),
        _bench("test_body_peers[smplx_fwd-mesh-B64]", "peers-mesh-B64", 0.030),
        _bench("test_body_peers[body_models_compiled_fwd-mesh-B64]", "peers-mesh-B64", 0.012),
        _bench("test_body_peers[body_models_compiled_fwd_bwd-mesh-B64]", "peers-mesh-B64", 0.040),
        _bench("test_body_peers[spin_fastest_fwd-mesh-B64]", "peers-mesh-B64", 0.050),
    ])
    got = {(r[1].split("[")[1].split("-")[0], r[2].split("[")[1].split("-")[0]): r[5]
           for r in ratio.rows(p, anchor="spin_fast")}
    assert set(got) == {(peer, ours) for ours in ("spin_fast_fwd", "spin_fast_compiled_fwd")
                        for peer in ("smplx_fwd", "body_models_compiled_fwd", "spin_fastest_fwd")} | {
        ("body_models_compiled_fwd_bwd", "spin_fast_fwd_bwd")}
    assert abs(got[("smplx_fwd", "spin_fast_fwd")] - 3.0) < 1e-9
    assert abs(got[("body_models_compiled_fwd_bwd", "spin_fast_fwd_bwd")] - 2.0) < 1e-9


def test_ratio_names_the_cpu_when_there_is_no_gpu(tmp_path, capsys):
    ratio = _load("ratio")
    p = _write(tmp_path, {"gpu": None, "cpu": {"brand_raw": "AMD EPYC", "count": 2}},
               [_bench("a[torch_fwd-64]", "g", 2.0), _bench("a[triton_fwd-64]", "g", 1.0)])
    assert ratio.main([str(p), "--markdown"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == "| g | a[torch_fwd-64] | a[triton_fwd-64] | 2000.000 | 1000.000 | 2.0x | CPU AMD EPYC (2 cores) | 2026-11-28 |"


def test_machine_info_names_the_gpu(monkeypatch):
    hook = _load("conftest").pytest_benchmark_update_machine_info
    info = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    hook(None, info)
    assert info["gpu"] is None and info["gpu_count"] == 0 and info["torch"] == torch.__version__
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    hook(None, info)
    assert info["gpu"] == "NVIDIA H200" and info["gpu_count"] == 1


# --- benches/gpu_check.sh and its deadline plugin ---------------------------------------------------------
def _gpu_check(tmp_path, *args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    return subprocess.run(["bash", str(BENCHES / "gpu_check.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_gpu_check_dry_run_without_a_gpu_prints_the_plan_and_exits_2(tmp_path):
    out = tmp_path / "results"
    r = _gpu_check(tmp_path, str(out), "--dry-run", "--budget-s", "480")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "no CUDA GPU" in r.stderr and "nothing run" in r.stderr
    plan = r.stdout
    assert "gpu_check plan (budget 480 s" in plan
    assert "-m pytest -m gpu tests" in plan and "--junitxml=" in plan
    assert "-m pytest benches --benchmark-only" in plan and "benches/ratio.py --markdown" in plan
    import re

    shares = [int(s) for s in re.findall(r"\((\d+) s, deadline plugin", plan)]
    assert len(shares) == 2 and sum(shares) <= 480, shares
    assert not out.exists()  # nothing written


def test_gpu_check_refuses_bad_arguments(tmp_path):
    for args in ([], ["out", "--budget-s", "ten"], ["out", "--budget-s", "30"], ["out", "--only", "kernels"],
                 ["out", "--frobnicate"]):
        r = _gpu_check(tmp_path, *args)
        assert r.returncode == 2 and "gpu_check" in r.stderr + r.stdout, (args, r.stderr)


def test_deadline_plugin_skips_what_would_start_late(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": f"{BENCHES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    base = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "pytest_deadline", "-p", "no:cacheprovider",
            str(tmp_path / "test_x.py"), "--rootdir", str(tmp_path)]
    late = subprocess.run(base + ["--deadline", "1"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "2 skipped" in late.stdout and "time budget spent" in late.stdout, late.stdout
    early = subprocess.run(base + ["--deadline", "4102444800"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "2 passed" in early.stdout, early.stdout


def test_ratio_wide_table_puts_every_implementation_in_a_column(tmp_path, capsys):
    """--wide --anchor spin_fast: a row per task, passes and batch; medians; ratios over spin_fast's; the
    fastest other implementation over spin_fast's."""
    ratio = _load("ratio")

    def row(impl, passes, task, B, median):
        return {"name": f"test_body_peers[{impl}_{passes}-{task}-B{B}]", "group": f"peers-{task}-B{B}",
                "stats": {"mean": 2 * median, "median": median},
                "extra_info": {"impl": impl, "passes": passes, "task": task, "batch": B}}

    p = _write(tmp_path, {"gpu": None}, [
        row("spin_fast", "fwd", "mesh", 64, 0.020), row("smplx", "fwd", "mesh", 64, 0.030),
        row("body_models_compiled", "fwd", "mesh", 64, 0.025),
        row("spin_fast", "fwd_bwd", "joints24", 512, 0.004), row("smplx", "fwd_bwd", "joints24", 512, 2.0),
    ])
    assert ratio.main([str(p), "--wide", "--anchor", "spin_fast"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| task | B | spin_fast | smplx | body_models_compiled | fastest other / spin_fast |"
    assert lines[2] == "| joints24 forward + backward | 512 | 4 | 2000 (500.00x) | - | 500.00x (smplx) |"
    assert lines[3] == "| mesh forward | 64 | 20 | 30 (1.50x) | 25 (1.25x) | 1.25x (body_models_compiled) |"


def test_ratio_names_a_file_it_cannot_read(tmp_path, capsys):
    """A missing file, one that is not JSON, and JSON without a 'benchmarks' list: one line naming the
    file and exit 2, in every mode; --wide without --anchor too."""
    import pytest

    ratio = _load("ratio")
    garbage, other = tmp_path / "garbage.json", tmp_path / "other.json"
    garbage.write_text("not json")
    other.write_text('{"a": 1}')
    cases = [([str(tmp_path / "missing.json")], "missing.json: No such file or directory"),
             ([str(garbage), "--markdown"], "garbage.json: not JSON"),
             ([str(other), "--wide", "--anchor", "spin_fast"], "other.json: not a pytest-benchmark JSON file"),
             ([str(other), "--wide"], "--wide needs --anchor")]
    for argv, said in cases:
        with pytest.raises(SystemExit) as e:
            ratio.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and said in err[-1] and "Traceback" not in "\n".join(err), (argv, err)
