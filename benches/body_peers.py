"""The SMPL implementations that users pick instead of spin_fast, behind one calling convention, for
benches/test_bench_body_peers.py and tests/test_body_peers.py.

Each peer is built from the official SMPL `.pkl` format (here the synthetic stand-in's
SMPL_NEUTRAL.pkl) and gives two functions of (betas (B, 10), body_pose (B, 69), global_orient (B, 3)):
`joints` -> the 24 posed kinematic joints (B, 24, 3) and `mesh` -> the vertices (B, 6890, 3).

- `smplx`: smplx.SMPL (the reference of the other benches), built from the pkl's arrays.
- `spin_fast`: spin_fast.body.BodyModel, `joints_only(joint_set="smpl_24")` and `forward(...).vertices`;
  `spin_fast_compiled`: the same with SPIN_FAST_COMPILE=1 (its torch paths through torch.compile).
- `smplfitter` (smplfitter.pt.BodyModel): reads `<root>/basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl`,
  so the pkl is linked under that name in a scratch folder, beside the all-zero `kid_template.npy`
  that smplfitter documents as the placeholder for users without the kid template (its kid blend
  shape is then zero). `joints`: forward(return_vertices=False).
- `body_models` (body_models.smpl.torch.SMPL(model_path=pkl)): `forward_skeleton` (translations of
  the (B, 24, 4, 4) joint transforms) and `forward_vertices`, global orient as `pelvis_rotation`.
  `kernel_backend="warp"` (NVIDIA Warp, which runs its kernels on the CPU too) only changes the
  skinning, so the warp peer has a mesh and no joints of its own.
- `*_compiled`: the same functions through `torch.compile` (inductor; the first calls compile).

A peer whose library is not installed raises `PeerMissing` with the reason (the `bench` extra of
pyproject.toml installs them all).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

NUM_BODY = 23


class PeerMissing(Exception):
    """The peer's library is not installed (the message says which)."""


class Peer(NamedTuple):
    joints: Callable | None  # (betas, body_pose, global_orient) -> (B, 24, 3); None: no joints path
    mesh: Callable  # -> (B, V, 3)
    env: dict = {}  # environment variables its calls (forward and backward) run under


def _need(module: str, dist: str):
    if importlib.util.find_spec(module) is None:
        raise PeerMissing(f"{dist} is not installed (pip install -e '.[bench]')")


def _smplx(pkl: Path, scratch: Path) -> Peer:
    import smplx
    from smplx.utils import Struct

    from spin_fast.body.io import load_smpl

    smpl = load_smpl(pkl)
    struct = Struct(**{k: smpl[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                            "kintree_table", "f")})
    models: dict = {}

    def model(B):
        if B not in models:  # smplx.SMPL is built for one batch size
            models[B] = smplx.SMPL(model_path=None, data_struct=struct, batch_size=B)
        return models[B]

    def run(betas, body_pose, orient):
        return model(betas.shape[0])(betas=betas, body_pose=body_pose, global_orient=orient)

    return Peer(lambda *a: run(*a).joints[:, :24], lambda *a: run(*a).vertices)


def _spin_fast(pkl: Path, scratch: Path) -> Peer:
    from spin_fast.body import BodyModel
    from spin_fast.body.io import load_smpl

    body = BodyModel(load_smpl(pkl))
    return Peer(lambda b, p, o: body.joints_only(b, p, o, joint_set="smpl_24"),
                lambda b, p, o: body(b, p, o, joint_set="smpl_24").vertices)


def _smplfitter(pkl: Path, scratch: Path) -> Peer:
    _need("smplfitter", "smplfitter")
    from smplfitter.pt import BodyModel

    root = scratch / "smplfitter" / "smpl"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    if not link.exists():
        link.symlink_to(Path(pkl).resolve())
    from spin_fast.body.io import load_smpl

    np.save(root / "kid_template.npy", np.zeros_like(load_smpl(pkl)["v_template"]))
    model = BodyModel("smpl", "neutral", model_root=str(root))

    def run(betas, body_pose, orient, vertices):
        return model(pose_rotvecs=torch.cat([orient, body_pose], 1), shape_betas=betas, return_vertices=vertices)

    return Peer(lambda *a: run(*a, False)["joints"], lambda *a: run(*a, True)["vertices"])


def _body_models(pkl: Path, scratch: Path, kernel_backend: str = "torch") -> Peer:
    _need("body_models", "body-models")
    if kernel_backend == "warp":
        _need("warp", "warp-lang")
    from body_models.smpl.torch import SMPL

    model = SMPL(model_path=pkl, kernel_backend=kernel_backend)

    def joints(betas, body_pose, orient):
        return model.forward_skeleton(body_pose=body_pose.view(-1, NUM_BODY, 3), pelvis_rotation=orient,
                                      shape=betas)[..., :3, 3]

    def mesh(betas, body_pose, orient):
        return model.forward_vertices(body_pose=body_pose.view(-1, NUM_BODY, 3), pelvis_rotation=orient,
                                      shape=betas)

    return Peer(joints if kernel_backend == "torch" else None, mesh)


def _compiled(build: Callable) -> Callable:
    def make(pkl: Path, scratch: Path) -> Peer:
        peer = build(pkl, scratch)
        compile = lambda f: torch.compile(f, dynamic=False)  # noqa: E731  (one graph a batch size: their best case)
        return Peer(compile(peer.joints) if peer.joints else None, compile(peer.mesh))

    return make


PEERS: dict[str, Callable[[Path, Path], Peer]] = {
    "smplx": _smplx,
    "spin_fast": _spin_fast,
    "spin_fast_compiled": lambda pkl, scratch: _spin_fast(pkl, scratch)._replace(env={"SPIN_FAST_COMPILE": "1"}),
    "smplfitter": _smplfitter,
    "smplfitter_compiled": _compiled(_smplfitter),
    "body_models": _body_models,
    "body_models_compiled": _compiled(_body_models),
    "body_models_warp": lambda pkl, scratch: _body_models(pkl, scratch, "warp"),
}


def inputs(B: int, dtype=torch.float32, seed: int = 0, grad: bool = False) -> list[torch.Tensor]:
    """betas (B, 10), body_pose (B, 69), global_orient (B, 3): a fixed random draw."""
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(B, 10, generator=g, dtype=torch.float64), 0.3 * torch.randn(B, 69, generator=g,
         dtype=torch.float64), torch.randn(B, 3, generator=g, dtype=torch.float64)]
    return [x.to(dtype).requires_grad_(grad) for x in t]


def max_relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (the equality the benches and tests ask for: <= 1e-5)."""
    return float((got.detach().double() - want.detach().double()).abs().max() / want.detach().abs().max())
