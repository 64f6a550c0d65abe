"""Backend choice for every public op: Triton for CUDA tensors, the torch reference otherwise.

`SPIN_FAST_BACKEND` = auto | torch | triton overrides it (read at each call, so tests may set it).
Nothing here touches the Triton driver: on a machine without a GPU, `triton` only works with
TRITON_INTERPRET=1 set before this package is imported.
"""
from __future__ import annotations

import os

import torch

ENV_BACKEND = "SPIN_FAST_BACKEND"
BACKENDS = ("auto", "torch", "triton")


def backend_setting() -> str:
    choice = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"{ENV_BACKEND} must be one of {BACKENDS}, got {choice!r}")
    return choice


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the op should run its Triton kernel for these input tensors."""
    choice = backend_setting()
    if choice == "auto":
        return all(t.is_cuda for t in tensors if isinstance(t, torch.Tensor))
    return choice == "triton"
