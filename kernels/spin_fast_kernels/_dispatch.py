"""Backend choice for every public op: Triton for CUDA tensors, the torch reference otherwise.

`SPIN_FAST_BACKEND` = auto | torch | triton overrides it (read at each call, so tests may set it).
`SPIN_FAST_COMPILE` = 1 runs the written-out torch paths (`*/cpu.py`) through `torch.compile`
(inductor, one graph per shape, compiled on first use: worth it for long runs of one batch size);
unset or 0: eager.
Nothing here touches the Triton driver: on a machine without a GPU, `triton` only works with
TRITON_INTERPRET=1 set before this package is imported.
"""
from __future__ import annotations

import os

import torch

ENV_BACKEND = "SPIN_FAST_BACKEND"
BACKENDS = ("auto", "torch", "triton")
ENV_COMPILE = "SPIN_FAST_COMPILE"
_COMPILED: dict = {}


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


def compile_setting() -> bool:
    choice = os.environ.get(ENV_COMPILE, "0").strip() or "0"
    if choice not in ("0", "1"):
        raise ValueError(f"{ENV_COMPILE} must be 0 or 1, got {choice!r}")
    return choice == "1"


def compiled(fn):
    """fn, or its torch.compile'd twin (built once) where SPIN_FAST_COMPILE=1."""
    if not compile_setting():
        return fn
    twin = _COMPILED.get(fn)
    if twin is None:
        twin = _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return twin
