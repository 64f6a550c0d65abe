"""SMPL on the CPU beside the libraries users pick instead: smplx, smplfitter, body-models (eager, with
torch.compile, and its Warp skinning), against spin_fast's torch path (eager, and with
SPIN_FAST_COMPILE=1).

Tasks: `joints24` (the 24 posed kinematic joints) and `mesh` (the 6890 vertices), each forward
(`fwd`, under no_grad) and forward + backward (`fwd_bwd`: sum of squares, backward w.r.t. betas,
body_pose and global_orient, as SMPLify needs), B = 64, 512, 4096, one torch thread on a CPU-only
machine. Groups `peers-<task>-B<B>`, rows `<impl>_<passes>`; the rows of one group run one after the
other, so the peers are measured under the same machine load.

Every peer loads the synthetic stand-in's SMPL_NEUTRAL.pkl, in the official SMPL `.pkl` format;
smplfitter reads it through a link named as its loader expects (benches/body_peers.py says how). Before
it is timed, each row checks that its joints / vertices equal spin_fast's (max error / max value
<= 1e-5), and spin_fast's row checks them against smplx, so only the same work is compared. The
compiled rows compile in their first calls (before timing). Rounds: 20 / 5 / 3 at B = 64 / 512 / 4096
after a warm-up round; a row whose checked call took over a second (smplx and the eager peers at large
B) runs 2 rounds after it, without another warm-up.

The peers are the `bench` extra of pyproject.toml (`pip install -e '.[bench]'`); a row whose library is
missing is skipped with the reason. `python benches/ratio.py RUN.json --anchor spin_fast` prints each
peer's time over spin_fast's (> 1: spin_fast is faster).
"""
import time

import pytest
import torch

from body_peers import PEERS, PeerMissing, inputs, max_relative_error

BATCHES = [64, 512, 4096]
TASKS = ["joints24", "mesh"]
PASSES = ["fwd", "fwd_bwd"]
TOLERANCE = 1e-5
ROUNDS = {64: 20, 512: 5, 4096: 3}
SLOW_S = 1.0  # a row whose checked call took longer is timed over 2 rounds, without a warm-up round
# one group's rows back to back (the machine's load is then the same for all of them)
CASES = [(impl, passes, task, B) for B in BATCHES for task in TASKS for passes in PASSES for impl in PEERS]


@pytest.fixture(scope="module")
def built(synthetic_assets, tmp_path_factory, one_cpu_thread):
    """name -> Peer, or the PeerMissing reason; each built on first use."""
    scratch = tmp_path_factory.mktemp("peers")
    cache: dict = {}

    def get(name):
        if name not in cache:
            try:
                cache[name] = PEERS[name](synthetic_assets.smpl("neutral"), scratch)
            except PeerMissing as e:
                cache[name] = str(e)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def expected(built):
    """(task, B) -> spin_fast's output (checked once against smplx)."""
    cache: dict = {}

    def get(task, B):
        if (task, B) not in cache:
            ours, ref = built("spin_fast"), built("smplx")
            with torch.no_grad():
                got = getattr(ours, "joints" if task == "joints24" else "mesh")(*inputs(B))
                want = getattr(ref, "joints" if task == "joints24" else "mesh")(*inputs(B))
            err = max_relative_error(got, want)
            assert err <= TOLERANCE, f"spin_fast {task} B={B}: {err:.2e} from smplx"
            cache[(task, B)] = got
        return cache[(task, B)]

    return get


@pytest.mark.parametrize("impl,passes,task,B", CASES, ids=[f"{i}_{p}-{t}-B{b}" for i, p, t, b in CASES])
def test_body_peers(benchmark, built, expected, monkeypatch, impl, passes, task, B):
    peer = built(impl)
    if isinstance(peer, str):
        pytest.skip(peer)
    expected(task, B)  # spin_fast's output, computed before the row's environment is set
    for name, value in peer.env.items():
        monkeypatch.setenv(name, value)
    fn = peer.joints if task == "joints24" else peer.mesh
    if fn is None:
        pytest.skip(f"{impl} has no {task} path of its own")
    grad = passes == "fwd_bwd"
    args = inputs(B, grad=grad)

    def step():
        if grad:
            out = fn(*args)
            out.square().sum().backward()
        else:
            with torch.no_grad():
                out = fn(*args)
        return out

    t0 = time.perf_counter()
    err = max_relative_error(step(), expected(task, B))  # also the compiled rows' first (compiling) call
    slow = time.perf_counter() - t0 > SLOW_S and not impl.endswith("compiled")
    assert err <= TOLERANCE, f"{impl} {task} B={B}: {err:.2e} from spin_fast"
    benchmark.group = f"peers-{task}-B{B}"
    benchmark.extra_info.update(op="body_peers", task=task, batch=B, impl=impl, passes=passes,
                                max_relative_error=err)
    benchmark.pedantic(step, warmup_rounds=0 if slow else 1, rounds=2 if slow else ROUNDS[B], iterations=1)
