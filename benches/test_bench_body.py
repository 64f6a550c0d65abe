"""Body model: smplx.SMPL forward(+backward) vs our full forward and joints-only forward+backward.

Groups `body-B{64,512}`: rows `smplx_fwd`, `smplx_fwd_bwd`, `ours_full_fwd`, `ours_full_fwd_bwd`,
`ours_joints_only_fwd_bwd`. The target: joints-only fwd+bwd >= 10x smplx fwd+bwd on CPU.
The backward is through (betas, body_pose, global_orient), as SMPLify needs.
"""
import pytest
import smplx
import torch
from smplx.utils import Struct

from spin_fast.body import BodyModel
from spin_fast.body.io import load_smpl


@pytest.fixture(scope="module")
def models(synthetic_assets, device):
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    struct = Struct(**{k: smpl[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                            "kintree_table", "f")})
    ref = {B: smplx.SMPL(model_path=None, data_struct=struct, batch_size=B).to(device) for B in (64, 512)}
    return ref, BodyModel.from_paths(synthetic_assets).to(device)


def inputs(B, device, grad):
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(B, 10, generator=g), 0.3 * torch.randn(B, 69, generator=g), torch.randn(B, 3, generator=g)]
    return [x.to(device).requires_grad_(grad) for x in t]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CASES = ["smplx_fwd", "smplx_fwd_bwd", "ours_full_fwd", "ours_full_fwd_bwd", "ours_joints_only_fwd_bwd"]


@pytest.mark.parametrize("B", [64, 512])
@pytest.mark.parametrize("case", CASES)
def test_body(benchmark, models, device, B, case):
    ref, ours = models
    grad = case.endswith("bwd")
    betas, body_pose, orient = inputs(B, device, grad)
    # smplx returns 45 joints (24 + 21 landmarks); ours the same set, so the work is comparable.
    if case.startswith("smplx"):
        def f():
            return ref[B](betas=betas, body_pose=body_pose, global_orient=orient).joints
    elif case.startswith("ours_full"):
        def f():
            return ours(betas, body_pose, orient, joint_set="smpl_45").joints
    else:
        def f():
            return ours.joints_only(betas, body_pose, orient, joint_set="smpl_45")

    def step():
        if grad:
            f().square().sum().backward()
        else:
            with torch.no_grad():
                f()
        _sync(device)

    benchmark.group = f"body-B{B}"
    benchmark.extra_info.update(op="body", batch=B, impl=case, device=str(device))
    benchmark.pedantic(step, warmup_rounds=1, rounds=5 if B == 512 else 10, iterations=1)
