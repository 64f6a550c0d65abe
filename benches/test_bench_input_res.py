"""What `model.input_res` buys: one HMR training update (forward, a loss on every output, backward,
Adam step) on 224-pixel crops, fed to the backbone as they are or resized to a smaller side first.

Group `hmr-update-<backbone>-B<batch>`: rows `input_224_ref` (the reference: the crop as it is)
and `input_<side>` for each smaller side (benches/ratio.py: 224 time / that side's). ResNet-50 at
batch 64 on CUDA (bf16 autocast, channels_last, as the trainer runs it); ResNet-18 at batch 16 and
one torch thread on CPU (the quick-run setting).
extra_info: images_per_s, torch_threads. The resize itself is inside the timed update. Measured on
this project's 2-core CPU (2026-12-01): 3.85 s at 224, 1.04 s at 112 (3.7x), 0.44 s at 64 (8.8x).
"""
import pytest
import torch

from conftest import HAS_CUDA
from spin_fast.model import HMR

BACKBONE, B = ("resnet50", 64) if HAS_CUDA else ("resnet18", 16)
SIDES = (None, 112, 64)
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def row_name(side: int | None) -> str:
    return f"input_{side}" if side else "input_224_ref"


@pytest.mark.parametrize("side", SIDES, ids=row_name)
def test_hmr_update(benchmark, synthetic_assets, device, side):
    torch.manual_seed(0)
    model = HMR(BACKBONE, mean_params=synthetic_assets.mean_params, input_res=side).to(device).train()
    if HAS_CUDA:
        model = model.to(memory_format=torch.channels_last)
    optim = torch.optim.Adam(model.parameters(), lr=3e-5)
    img = torch.randn(B, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    if HAS_CUDA:
        img = img.contiguous(memory_format=torch.channels_last)

    def update():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=HAS_CUDA):
            out = model(img)
        loss = out.rotmat.float().square().mean() + out.betas.float().square().mean() + out.cam.float().square().mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if HAS_CUDA:
            torch.cuda.synchronize()
        return loss

    benchmark.group = f"hmr-update-{BACKBONE}-B{B}"
    benchmark.name = row_name(side)
    loss = benchmark.pedantic(update, rounds=3 if device.type == "cpu" else 20, iterations=1, warmup_rounds=1)
    assert torch.isfinite(loss)
    benchmark.extra_info["images_per_s"] = B / benchmark.stats.stats.mean
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
