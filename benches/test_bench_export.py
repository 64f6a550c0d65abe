"""The exported network against the torch one: HMR ResNet-50 (224 input) forward on a batch of 8 on the
CPU, torch eager fp32 vs the ONNX file `python -m spin_fast.export` writes, run by onnxruntime.

Group `hmr-resnet50-onnx-B8`: rows `torch_ref` (the reference) and `onnxruntime` (the same weights,
exported with a dynamic batch); both use the same number of CPU threads (torch's). Each row's
`extra_info.images_per_s` is 8 / mean time. The export itself (tens of seconds) is left out.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from spin_fast.model import HMR  # noqa: E402
from spin_fast.model.onnx import OnnxHMR, compare_onnx, example_crops, export_onnx  # noqa: E402

B = 8


@pytest.fixture(scope="module")
def networks(synthetic_assets, tmp_path_factory):
    torch.manual_seed(0)
    model = HMR("resnet50", mean_params=synthetic_assets.mean_params).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "hmr.onnx", batch=None)
    onnx_model = OnnxHMR(path)
    crops = example_crops(B, 224, seed=1)
    assert compare_onnx(onnx_model, model, crops).worst <= 1e-4
    return model, onnx_model, crops


@pytest.mark.parametrize("row", ["torch_ref", "onnxruntime"])
def test_hmr_forward_cpu(benchmark, networks, row):
    model, onnx_model, crops = networks
    benchmark.group = f"hmr-resnet50-onnx-B{B}"
    benchmark.name = row
    x = crops.numpy()

    def torch_forward():
        with torch.no_grad():
            return model(crops).rotmat

    fn = torch_forward if row == "torch_ref" else (lambda: onnx_model.run(x)[0])
    out = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    assert np.asarray(out).shape == (B, 24, 3, 3)
    benchmark.extra_info["images_per_s"] = B / benchmark.stats.stats.mean
    benchmark.extra_info["threads"] = torch.get_num_threads()
