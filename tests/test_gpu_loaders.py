"""GPU twins of the loaders: on a CUDA device, DALI's 'mixed' (nvJPEG) pipeline, the torchvision
loader (nvJPEG via decode_jpeg) and the torch crop alone (PIL decoding, the crop on the GPU) against
the reference loader (PIL on the CPU) on the same plans: pixels within 2 levels (0-255) in the mean
over the batch and over every sample, labels exact, batch tensors on the device.

A backend that does not import here skips with the reason (DALI is never installed on the GPU
machine; torchvision does not import beside a CPU-only torch). The `cpu` rows run the same
comparison with each backend on the CPU, so the twin code runs on every machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spin_fast.data import backend_status
from spin_fast.data.batch import make_plan
from spin_fast.data.dali_loader import DaliLoader
from spin_fast.data.reference_loader import ReferenceLoader
from spin_fast.data.torchvision_loader import TorchvisionLoader, pil_decoder
from test_data_loaders import assert_same_batch, fixed_params, tiny  # noqa: F401  (module fixture)

BACKENDS = ["dali", "torchvision", "torchcrop"]


def build(backend, sources, plans, device):
    n = len(plans)
    if backend == "dali":
        return DaliLoader(sources, plans.__getitem__, batch_size=len(plans[0]), threads=1, num_steps=n, device=device)
    decoder = pil_decoder if backend == "torchcrop" else None
    return TorchvisionLoader(sources, plans.__getitem__, num_steps=n, device=device, decoder=decoder)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.gpu), "cpu"])
def test_loader_on_device_matches_reference(tiny, device, backend):  # noqa: F811
    why = backend_status(backend) if backend != "torchcrop" else None
    if why is not None:
        pytest.skip(why)
    n = len(tiny.data[0])
    rng = np.random.default_rng(3)
    plans = [make_plan(tiny, 0, np.zeros(n, np.int64), np.arange(n), fixed_params(n)),
             make_plan(tiny, 1, np.zeros(n, np.int64), rng.permutation(n), fixed_params(n))]
    ref = list(ReferenceLoader(tiny, plans.__getitem__, threads=0, num_steps=2).iter_from(0))
    ours = list(build(backend, tiny, plans, device).iter_from(0))
    assert len(ours) == len(ref) == 2
    for a, b in zip(ref, ours):
        assert all(v.device.type == device for v in b.values() if torch.is_tensor(v))
        assert_same_batch(a, b)
