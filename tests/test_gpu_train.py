"""GPU twins of training: one step with the network in bf16 autocast against the same step in fp32
(losses close, every gradient finite and pointing the same way), and 2 steps run as 1 + resume
against 2 uninterrupted (weights and fits equal), on CUDA (marked gpu) and on the CPU (bf16 autocast
exists there too), with the same comparison code.

The bf16 comparison runs without SMPLify (fits from the store): a slightly different prediction
could otherwise flip a sample's kept fit, which changes its target and is not what bf16 is about.
On CUDA cuDNN is made deterministic for the resume comparison (its default convolution backward is
not run-to-run exact, and Adam turns a sign flip of a tiny gradient into a full step).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spin_fast.train.checkpoint import load_checkpoint
from test_train import data_root, small_config  # noqa: F401  (module fixture: synthetic assets + datasets)

DEVICES = [pytest.param("cuda", marks=pytest.mark.gpu), "cpu"]


def step_context(cfg, device, amp_dtype):
    """What `spin_fast.train.loop.train` builds for one rank, without the loop."""
    from spin_fast.body import BodyModel
    from spin_fast.config import AssetPaths
    from spin_fast.data import build_train_loader
    from spin_fast.model import HMR
    from spin_fast.smplify import FitsStore
    from spin_fast.train.config import resolve
    from spin_fast.train.step import StepContext

    paths = AssetPaths(Path(cfg.data.root))
    torch.manual_seed(0)
    body = BodyModel.from_paths(paths).to(device)
    model = HMR(backbone=cfg.model.backbone, mean_params=paths.mean_params, input_res=cfg.model.input_res)
    model = model.to(device).train()
    loader = build_train_loader(paths, cfg.data.mix, batch_size=cfg.data.batch_size, backend="reference", threads=0,
                                seed=0, device=device)
    fits = FitsStore.from_static_fits(paths, loader.dataset_names,
                                     sizes=dict(zip(loader.dataset_names, loader.dataset_sizes)), device=device)
    ctx = StepContext(model=model, body=body, fits=fits, smplify=None, loss=resolve(cfg).loss,
                      amp_dtype=amp_dtype)
    return ctx, next(loader.iter_from(0))


def one_step(ctx, batch, seed=1):
    from spin_fast.train.step import train_step

    store = ctx.fits.data.clone()
    torch.manual_seed(seed)  # the same dropout mask in both runs
    loss, logs = train_step(ctx, batch)
    ctx.model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().float().cpu().clone() for n, p in ctx.model.named_parameters() if p.grad is not None}
    ctx.fits.data.copy_(store)  # the step wrote the fits back: the next run starts from the same store
    return {k: float(v) for k, v in logs.items() if torch.is_tensor(v) and v.dim() == 0}, grads


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_step_close_to_fp32(data_root, tmp_path, device):  # noqa: F811
    cfg = small_config(data_root, tmp_path / "w")
    ctx, batch = step_context(cfg, device, None)
    fp32, g32 = one_step(ctx, batch)
    ctx.amp_dtype = torch.bfloat16
    bf16, g16 = one_step(ctx, batch)
    assert set(g16) == set(g32) and len(g32) > 10
    for name, g in g16.items():
        assert torch.isfinite(g).all(), name
    flat32, flat16 = (torch.cat([g[n].flatten() for n in sorted(g32)]) for g in (g32, g16))
    cos = torch.nn.functional.cosine_similarity(flat32, flat16, dim=0)
    assert cos > 0.95, cos
    for k in ("loss", "keypoints2d", "keypoints3d", "vertices", "pose", "betas", "camera"):
        assert abs(bf16[k] - fp32[k]) <= 0.05 * abs(fp32[k]) + 1e-6, (k, bf16[k], fp32[k])
    assert fp32["loss"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_two_steps_as_one_plus_resume_equal_uninterrupted(data_root, tmp_path, monkeypatch, device):  # noqa: F811
    from spin_fast.train.loop import train

    if device == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    kw = dict(device=device, ckpt_every=1)
    train(small_config(data_root, tmp_path / "full", max_steps=2, **kw))
    train(small_config(data_root, tmp_path / "resumed", max_steps=1, **kw))
    mid = load_checkpoint(tmp_path / "resumed")
    assert mid["meta"]["step"] == 1
    train(small_config(data_root, tmp_path / "resumed", max_steps=2, **kw), resume=True)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "resumed")
    assert a["meta"]["step"] == b["meta"]["step"] == 2
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    torch.testing.assert_close(b["fits"]["data"], a["fits"]["data"], rtol=0, atol=1e-6)
    # the resumed step trained (equal weights are not two unchanged copies)
    assert any(not torch.equal(mid["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])


# --- no host sync inside a training step -------------------------------------------------------------
HOST_SYNC_CALLS = {"item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "argwhere", "masked_select",
                   "unique", "cpu", "numpy", "new_tensor", "repeat_interleave", "solve", "inv", "cholesky"}
# deliberate, CPU-only branches (`if device.type == "cpu"`): range checks that would sync on a GPU
CPU_ONLY = {("fits.py", "_rows"), ("function.py", "check_joints_only_args")}
# the fused SMPLify's torch fit and the body model's NumPy chain: on CUDA tensors the ops run their Triton
# kernels instead (the cuda row)
CPU_ONLY_FILES = ("spin_fast_kernels/smplify/reference.py", "spin_fast_kernels/kinematic_chain/host.py")


class HostSyncAudit(torch.overrides.TorchFunctionMode):
    """Records every call that makes the host wait for a GPU (or, on the CPU, would): reading values
    (.item, bool(), .tolist, nonzero, boolean-mask or list indexing), host-to-device copies of host
    data (torch.tensor / as_tensor of non-tensors), error-checking linalg. The place is the first
    frame outside torch."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import sys

        name = getattr(func, "__name__", str(func))
        hit = name in HOST_SYNC_CALLS
        if name in ("tensor", "as_tensor"):
            hit = not torch.is_tensor(args[0] if args else kwargs.get("data"))
        if name in ("__getitem__", "__setitem__"):
            idx = args[1] if isinstance(args[1], tuple) else (args[1],)
            hit = any(isinstance(i, list) or type(i).__module__ == "numpy"
                      or (torch.is_tensor(i) and i.dtype == torch.bool) for i in idx)
        if hit:
            f = sys._getframe(1)
            while f is not None and "/torch/" in f.f_code.co_filename:
                f = f.f_back
            where = (f.f_code.co_filename.rsplit("/", 1)[-1], f.f_code.co_name) if f is not None else ("?", "?")
            # torch's own (Adam reads its CPU step counter) when called straight from this test
            cpu_only = where in CPU_ONLY or (f is not None and f.f_code.co_filename.endswith(CPU_ONLY_FILES))
            if not cpu_only and f is not None and f.f_code.co_filename != __file__:
                self.found.append((name, *where, f.f_lineno if f is not None else 0))
        return func(*args, **(kwargs or {}))


def _steps(ctx, batches, optimizer):
    from spin_fast.train.step import train_step

    for batch in batches:
        loss, logs = train_step(ctx, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return logs


@pytest.mark.parametrize("device", DEVICES)
def test_training_steps_make_no_host_sync(data_root, tmp_path, device):  # noqa: F811
    """Two training steps (SMPLify in the loop, CUDA graphs on a GPU, the loop's timer) after a warm-up
    step: on CUDA under torch.cuda.set_sync_debug_mode('error') (any synchronising call raises); on the
    CPU under HostSyncAudit (the calls that would synchronise on a GPU are recorded)."""
    from spin_fast.smplify import SMPLify
    from spin_fast.train.timing import PhaseTimer

    cfg = small_config(data_root, tmp_path / "w", **{"smplify.stage1_iters": 3, "smplify.stage2_iters": 3})
    ctx, batch = step_context(cfg, device, torch.bfloat16 if device == "cuda" else None)
    from spin_fast.config import AssetPaths

    ctx.smplify = SMPLify(ctx.body, AssetPaths(Path(cfg.data.root)).gmm, stage1_iters=3, stage2_iters=3)
    ctx.timer = PhaseTimer(device)
    optimizer = torch.optim.Adam(ctx.model.parameters(), lr=1e-5)
    _steps(ctx, [batch], optimizer)  # warm-up: Triton compiles, graphs are captured, Adam's state is made
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            logs = _steps(ctx, [batch, batch], optimizer)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    else:
        audit = HostSyncAudit()
        with audit:
            logs = _steps(ctx, [batch, batch], optimizer)
        assert audit.found == [], sorted(set(audit.found))
    assert ctx.timer.read()["smplify"] > 0  # the timer is read here, at the 'logging step'
    assert torch.isfinite(logs["loss"])
