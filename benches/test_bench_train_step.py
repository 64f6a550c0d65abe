"""One full SPIN training step, fast path vs reference path: images/s, and where the step's time goes.

A step, as `spin_fast.train.loop` runs it: the loader's next batch, `spin_fast.train.step.train_step`
(HMR forward, SMPL of the prediction, fits in the loop: the stored fit scored, SMPLify 100 + 100 on
the prediction, the better fit kept in the fits store, GT joints, target mesh; all losses), then
backward and the Adam step. Rows of one group `train-step-<setting>`:
    fast             BodyModel (joints_only inside SMPLify), spin_fast.smplify.SMPLify, the loader
                     `data.loader auto` picks (DALI 'mixed' or torchvision nvJPEG on CUDA, the reference
                     on CPU; extra_info['loader'])
    smplx_reference  spin_fast.body.smplx_reference.SmplxBody (smplx.SMPL full mesh, joints_only = the
                     full forward), SMPLifyReferenceInLoop (SPIN's SMPLify: smplx every iteration,
                     torch.optim.Adam), the reference loader (torch DataLoader + PIL)
Everything else is the same in both rows: the step function, HMR with the same initial weights, the
network settings the training loop uses on the device (channels_last; bf16 autocast on CUDA only),
Adam lr 3e-5, a fresh fits store from the static fits, 2 loader threads, the same batches.

Setting: the target one is batch 64, ResNet-50, SMPLify 100 + 100. On CUDA, or with
SPIN_FAST_BENCH_FULL=1, that is what runs; on CPU the default is batch 16 (a reference step takes
tens of seconds there), so the file finishes in a few minutes. The setting is in the test id, the
group and extra_info. Each row: one warm-up step (loader workers / DALI pipeline start, CUDA graph
capture), then one measured step (`benchmark.pedantic`, rounds=1).

extra_info: images_per_s; smplify_share (time inside the SMPLify fit call / step time); fits_share
(the step's whole fits-in-the-loop block, train_step's `smplify` phase, spin_fast.train.timing); data_share (time blocked
in the loader's next() / step time; loaders prefetch, so this is the wait the trainer sees). On CUDA
the step is synchronised around the loader call and the SMPLify call to time them.

Threads: on CPU the module sets torch.set_num_threads(1) (restored afterwards, recorded in
extra_info['threads']): on a 2-core machine torch's default 2 threads make SMPLify's many tiny ops
much slower, and the loader's workers / DALI threads need the second core.
"""
import os
import time

import pytest
import torch

from conftest import HAS_CUDA
from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast.body.smplx_reference import SmplxBody
from spin_fast.smplify.reference import SMPLifyReferenceInLoop
from spin_fast.config import AssetPaths
from spin_fast.data import build_train_loader
from spin_fast.model import HMR
from spin_fast.smplify import FitsStore, SMPLify
from spin_fast.constants import MMHUMAN3D_MIX
from spin_fast.recipes import recipe
from spin_fast.train.config import ModelConfig
from spin_fast.train.step import StepContext, train_step
from spin_fast.train.timing import PhaseTimer

FULL = HAS_CUDA or os.environ.get("SPIN_FAST_BENCH_FULL") == "1"
BATCH = 64 if FULL else 16
BACKBONE = "resnet50"
ITERS = (100, 100)
THREADS = 2  # loader threads (DataConfig default)
LR = 3e-5
SETTING = f"B{BATCH}-{BACKBONE}-smplify{ITERS[0]}+{ITERS[1]}"
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # before the data fixtures, as for the steps


@pytest.fixture(scope="module")
def data_root(synthetic_assets, tmp_path_factory):
    """The synthetic stand-in's body files + rendered training datasets (mmhuman3d layout)."""
    from spin_fast.data.synth import write_synthetic_datasets

    root = tmp_path_factory.mktemp("train_step_bench") / "data"
    return write_synthetic_datasets(root, assets=synthetic_assets.root, names=tuple(MMHUMAN3D_MIX))


def _components(impl: str, assets: AssetPaths, device):
    """(body, fitter, loader backend) of a row."""
    smpl = load_smpl(assets.smpl("neutral"))
    extra = load_regressor(assets.j_regressor_extra)
    h36m = load_regressor(assets.j_regressor_h36m)
    gmm = load_gmm(assets.gmm)
    kw = dict(stage1_iters=ITERS[0], stage2_iters=ITERS[1], flavor="spin")
    if impl == "fast":
        body = BodyModel(smpl, extra, h36m).to(device)
        return body, SMPLify(body, gmm=gmm, **kw), "auto"  # DALI or torchvision on CUDA (data.loader auto)
    body = SmplxBody(smpl, extra, h36m).to(device)
    return body, SMPLifyReferenceInLoop(smpl, extra, gmm, device=device, **kw), "reference"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("setting", [SETTING])
@pytest.mark.parametrize("impl", ["smplx_reference", "fast"])
def test_train_step(benchmark, data_root, synthetic_assets, device, one_cpu_thread, impl, setting):
    body, fitter, backend = _components(impl, synthetic_assets, device)
    loader = build_train_loader(data_root, MMHUMAN3D_MIX, batch_size=BATCH, backend=backend, threads=THREADS,
                                seed=0, device=device)
    fits = FitsStore.from_static_fits(data_root, loader.dataset_names,
                                      sizes=dict(zip(loader.dataset_names, loader.dataset_sizes)), device=device)
    torch.manual_seed(0)
    net_cfg = ModelConfig(backbone=BACKBONE)
    model = HMR(backbone=BACKBONE, mean_params=synthetic_assets.mean_params).to(device)
    if net_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    amp = torch.bfloat16 if net_cfg.bf16 and device.type == "cuda" else None
    ctx = StepContext(model=model, body=body, fits=fits, smplify=fitter, loss=recipe("mmhuman3d").loss,
                      amp_dtype=amp, channels_last=net_cfg.channels_last, timer=PhaseTimer(device))
    it = loader.iter_from(0)
    record = {}

    def step():
        t0 = time.perf_counter()
        batch = next(it)
        _sync(device)
        t1 = time.perf_counter()
        loss, logs = train_step(ctx, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        t2 = time.perf_counter()
        phases = ctx.timer.read()  # the fits block of the step, and the SMPLify call in it (fit_in_loop times it)
        record.update(n=batch["img"].shape[0], data=t1 - t0, step=t2 - t0, smplify=phases["smplify_fit"],
                      fits=phases["smplify"], loss=float(loss.detach()))

    benchmark.group = f"train-step-{setting}"
    benchmark.pedantic(step, warmup_rounds=1, rounds=1, iterations=1)
    total = record["step"]
    assert torch.isfinite(torch.tensor(record["loss"]))
    assert record["n"] == BATCH and 0 < record["smplify"] <= record["fits"] <= total
    benchmark.extra_info.update(
        op="train_step", impl=impl, setting=setting, batch=BATCH, backbone=BACKBONE,
        smplify_iters=f"{ITERS[0]}+{ITERS[1]}", loader=loader.backend, loader_threads=THREADS, device=str(device),
        threads=one_cpu_thread, amp=str(amp), channels_last=net_cfg.channels_last,
        images_per_s=record["n"] / benchmark.stats.stats.mean, step_s=total,
        smplify_share=record["smplify"] / total, fits_share=record["fits"] / total,
        data_share=record["data"] / total, loss=record["loss"])
