"""What the SMPL-op benchmarks (benches/test_bench_<op>.py) share: the model, each op's inputs on the
synthetic SMPL stand-in (6890 vertices), and one timed step = forward, a fixed random upstream
gradient, backward to every differentiable input, and a device sync."""
import pytest
import smplx
import torch
from smplx.utils import Struct

from spin_fast.body import BodyModel
from spin_fast.body.io import load_smpl
from spin_fast.constants import SMPL_PARENTS
from spin_fast_kernels.joints_only.reference import joints_only_torch
from spin_fast_kernels.kinematic_chain import rodrigues_chain_torch
from spin_fast_kernels.kinematic_chain.reference import kinematic_chain_torch, rodrigues_torch
from spin_fast_kernels.skinning.reference import skinning_torch

from conftest import requires_cuda  # benches/conftest.py (benches/ is on sys.path: no __init__.py)

BATCHES = [64, 1024]
JOINT_SET = "smpl_45"  # smplx.SMPL's own 45 joints: the same work on both sides


@pytest.fixture(scope="module")
def smpl(synthetic_assets):
    return load_smpl(synthetic_assets.smpl("neutral"))


@pytest.fixture(scope="module")
def body(synthetic_assets):
    return BodyModel.from_paths(synthetic_assets)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _inputs(op, B, body):
    """Differentiable inputs of the op (float32, on the body model's device) and the constant
    arguments after them."""
    dev = body.J_template.device
    g = torch.Generator().manual_seed(B)
    aa = (0.3 * torch.randn(B, 24, 3, generator=g)).to(dev)
    R = rodrigues_torch(aa)
    if op == "rodrigues":
        return [aa], []
    shape = (0.5 * torch.randn(B, 10, generator=g)).to(dev)
    rest = body.J_template + torch.einsum("bs,jcs->bjc", shape, body.J_shapedirs)
    if op == "kinematic_chain":
        return [R, rest], [SMPL_PARENTS]
    if op == "rodrigues_chain":
        return [aa, rest], [SMPL_PARENTS]
    betas = torch.randn(B, 10, generator=g).to(dev)
    pose_feature = (R[:, 1:] - torch.eye(3, device=dev)).reshape(B, 207)
    _, transforms = kinematic_chain_torch(R, rest, SMPL_PARENTS)
    diff = [betas, pose_feature, transforms]
    if op == "skinning":
        return diff, [getattr(body, k) for k in ("v_template", "shapedirs", "posedirs", "lbs_weights")]
    consts = [getattr(body, f"{JOINT_SET}_{k}") for k in ("coeffs", "bone_weight", "pair_joint", "pair_bone")]
    return diff, consts + [body.joint_sets[JOINT_SET] - 24]


def _op_fn(op, impl):
    if impl == "torch":
        return {"rodrigues": rodrigues_torch, "kinematic_chain": kinematic_chain_torch,
                "rodrigues_chain": rodrigues_chain_torch, "skinning": skinning_torch,
                "joints_only": joints_only_torch}[op]
    if op in ("rodrigues", "kinematic_chain", "rodrigues_chain"):
        from spin_fast_kernels.kinematic_chain import function as f

        return {"rodrigues": f.rodrigues_triton, "kinematic_chain": f.kinematic_chain_triton,
                "rodrigues_chain": f.rodrigues_chain_triton}[op]
    if op == "skinning":
        from spin_fast_kernels.skinning.function import skinning_triton

        return skinning_triton
    from spin_fast_kernels.joints_only.function import joints_only_triton

    return joints_only_triton


def _smplx_step(smpl, op, B, device):
    struct = Struct(**{k: smpl[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                            "kintree_table", "f")})
    model = smplx.SMPL(model_path=None, data_struct=struct, batch_size=B).to(device)
    g = torch.Generator().manual_seed(B)
    args = [torch.randn(B, 10, generator=g), 0.3 * torch.randn(B, 69, generator=g),
            0.3 * torch.randn(B, 3, generator=g)]
    betas, body_pose, orient = (a.to(device).requires_grad_(True) for a in args)
    out = "vertices" if op == "skinning" else "joints"
    shape = (B, smpl["v_template"].shape[0], 3) if op == "skinning" else (B, 45, 3)
    up = torch.randn(*shape, generator=g).to(device)

    def step():
        res = getattr(model(betas=betas, body_pose=body_pose, global_orient=orient), out)
        (res * up).sum().backward()
        _sync(device)

    return step


def cases(ops, impls):
    """pytest params (op, impl) with ids `<op>-<impl>`; Triton rows need CUDA."""
    return [pytest.param(o, i, marks=[requires_cuda] if i == "triton" else [], id=f"{o}-{i}")
            for o in ops for i in impls]


def bench_smpl_op(benchmark, smpl, body, device, op, impl, B):
    """Group `<op>-B<B>`: one row per impl (torch reference, triton, smplx's whole model)."""
    if impl == "triton":
        device = torch.device("cuda")
    if impl == "smplx":
        step = _smplx_step(smpl, op, B, device)
    else:
        diff, consts = _inputs(op, B, body.to(device))  # Module.to: in place, a no-op once there
        diff = [t.detach().requires_grad_(True) for t in diff]
        fn = _op_fn(op, impl)
        outs = fn(*diff, *consts)
        outs = outs if isinstance(outs, tuple) else (outs,)
        g = torch.Generator().manual_seed(B + 1)
        ups = [torch.randn(o.shape, generator=g).to(device) for o in outs]

        def step():
            res = fn(*diff, *consts)
            res = res if isinstance(res, tuple) else (res,)
            sum((r * u).sum() for r, u in zip(res, ups)).backward()
            _sync(device)

    benchmark.group = f"{op}-B{B}"
    benchmark.extra_info.update(op=op, batch=B, impl=impl, device=str(device), pass_="fwd+bwd")
    heavy = B >= 1024 and device.type == "cpu" and op in ("skinning", "joints_only")
    benchmark.pedantic(step, warmup_rounds=1, rounds=3 if heavy else 10, iterations=1)
