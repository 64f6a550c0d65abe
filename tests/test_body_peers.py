"""The peers of benches/test_bench_body_peers.py compute what spin_fast computes: their 24 joints and
vertices (and the gradients w.r.t. betas, body_pose and global_orient) equal spin_fast's on the
synthetic stand-in, 1e-5 relative (the gradients 1e-4: float32 sums in another order). Skipped where
a peer's library is not installed (the `bench` extra); the compiled peers are the bench's only."""
import importlib.util
from pathlib import Path

import pytest
import torch

BENCHES = Path(__file__).resolve().parents[1] / "benches"
_spec = importlib.util.spec_from_file_location("_bench_body_peers", BENCHES / "body_peers.py")
body_peers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(body_peers)

EAGER = ["smplx", "smplfitter", "body_models", pytest.param("body_models_warp", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("peers")


@pytest.fixture(scope="module")
def spin_fast(synthetic_assets, scratch):
    return body_peers.PEERS["spin_fast"](synthetic_assets.smpl("neutral"), scratch)


def outputs_and_grads(fn, B=5):
    xs = body_peers.inputs(B, grad=True)
    out = fn(*xs)
    (2 * out.square().sum()).backward()
    return out.detach(), [x.grad for x in xs]


@pytest.mark.parametrize("name", EAGER)
def test_peer_equals_spin_fast(name, synthetic_assets, scratch, spin_fast):
    try:
        peer = body_peers.PEERS[name](synthetic_assets.smpl("neutral"), scratch)
    except body_peers.PeerMissing as e:
        pytest.skip(str(e))
    for task in ("joints", "mesh"):
        fn = getattr(peer, task)
        if fn is None:
            continue
        got, got_grads = outputs_and_grads(fn)
        want, want_grads = outputs_and_grads(getattr(spin_fast, task))
        assert got.shape == want.shape
        err = body_peers.max_relative_error(got, want)
        assert err <= 1e-5, f"{name} {task}: {err:.2e}"
        for k, (a, b) in enumerate(zip(got_grads, want_grads)):
            err = body_peers.max_relative_error(a, b)
            assert err <= 1e-4, f"{name} {task} gradient {k}: {err:.2e}"
