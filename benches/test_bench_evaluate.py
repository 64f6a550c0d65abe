"""Evaluation throughput: HMR ResNet-50 forward + SMPL (neutral prediction, gendered GT) + 3DPW
metrics on one batch of 32, i.e. `spin_fast.evaluate.runner.evaluate` without the loader.

Group `evaluate-resnet50-B32`: rows `fp32_ref` (contiguous fp32, the reference), `fp32_channels_last`,
`bf16`, `bf16_channels_last` (network under bf16 autocast; SMPL and metrics fp32). Each row's
`extra_info.images_per_s` is 32 / mean time. CPU rounds are few (a round is seconds); on CUDA the
same rows run on the GPU. bf16 on a CPU without native bf16 matmul units is emulated and slow.
"""
import pytest
import torch

from spin_fast.evaluate.runner import Bodies, evaluate, hmr_predictor
from spin_fast.model import HMR

B = 32
CASES = {"fp32_ref": (None, False), "fp32_channels_last": (None, True),
         "bf16": (torch.bfloat16, False), "bf16_channels_last": (torch.bfloat16, True)}


@pytest.fixture(scope="module")
def setup(synthetic_assets, device):
    torch.manual_seed(0)
    bodies = Bodies.from_paths(synthetic_assets, device)
    g = torch.Generator().manual_seed(0)
    batch = {"img": torch.randn(B, 3, 224, 224, generator=g).to(device),
             "pose": (0.3 * torch.randn(B, 72, generator=g)).to(device),
             "betas": torch.randn(B, 10, generator=g).to(device),
             "gender": torch.arange(B) % 2}  # half male, half female; on the CPU as the loaders give it
    model = HMR("resnet50", mean_params=synthetic_assets.mean_params).to(device).eval()
    return bodies, batch, model


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_throughput(benchmark, setup, device, case):
    bodies, batch, model = setup
    amp, channels_last = CASES[case]
    net = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    predict = hmr_predictor(net, amp, channels_last)
    benchmark.group = f"evaluate-resnet50-B{B}"
    benchmark.name = case
    # evaluate() ends with a host sync (the metric means), so each round times finished work.
    rounds = 2 if device.type == "cpu" else 10
    result = benchmark.pedantic(lambda: evaluate(predict, [batch], bodies, device=device), rounds=rounds,
                                iterations=1, warmup_rounds=1)
    assert result.num_samples == B and result.mpjpe > 0
    benchmark.extra_info["images_per_s"] = B / benchmark.stats.stats.mean
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
