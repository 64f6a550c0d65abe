"""Count the GPU kernels a piece of code launches, without a GPU.

A launch costs a GPU a few microseconds whatever it does, so how many a fit launches sets a floor
under its time that no kernel tuning removes. That count is a fact of the code path, not of the
hardware, and it can be read on a CPU: with `SPIN_FAST_BACKEND=triton` and `TRITON_INTERPRET=1` (set
before `spin_fast_kernels` is imported) the code takes its CUDA path on CPU tensors, so

  * every Triton launch (`kernel[grid](...)`) is one kernel: counted by wrapping the interpreter's
    launch, and the torch ops the interpreter itself runs to stage the arguments are not counted;
  * every torch op that would launch a CUDA kernel is seen by a `TorchDispatchMode`: all dispatched
    ops count except views, bare allocations (`empty*`: no kernel) and metadata-only ops. Fills
    (`zeros`, `full`), copies, casts and reductions all count; a device-to-host read
    (`.item()`, `_local_scalar_dense`) is counted apart, as `syncs`.

Use:
    with count_launches() as n:
        fitter(*args)
    print(n.triton, n.torch, n.total, n.syncs, n.by_op.most_common(5))
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops that launch nothing on a GPU: allocations without a fill, and metadata or aliasing
_NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty", "aten::new_empty_strided",
    "aten::detach", "aten::alias", "aten::lift_fresh", "aten::set_", "aten::resize_", "aten::_reshape_alias",
    "aten::is_same_size", "aten::sym_size", "aten::sym_stride", "aten::sym_numel", "aten::sym_storage_offset",
    "aten::record_stream", "prim::device",
    "aten::result_type", "aten::promote_types", "aten::can_cast",  # dtype queries
}
_SYNCS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal"}


@dataclass
class LaunchCounter:
    triton: int = 0  # Triton kernel launches
    torch: int = 0  # torch ops that launch a kernel on CUDA
    syncs: int = 0  # device-to-host reads (each waits for the GPU)
    by_op: Counter = field(default_factory=Counter)  # name -> count, Triton kernels by function name

    @property
    def total(self) -> int:
        return self.triton + self.torch


class _TorchOps(TorchDispatchMode):
    def __init__(self, counter: LaunchCounter):
        super().__init__()
        self.counter = counter
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            name = func._schema.name
            if name in _SYNCS:
                self.counter.syncs += 1
                self.counter.by_op[name] += 1
            elif not (func.is_view or name in _NO_KERNEL):
                self.counter.torch += 1
                self.counter.by_op[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_launches() -> Iterator[LaunchCounter]:
    """Count, inside the block, Triton launches (under TRITON_INTERPRET=1) and kernel-launching torch
    ops. Raises if the Triton kernels are not running under the interpreter (on a GPU, use a
    profiler instead)."""
    from triton.runtime.interpreter import InterpretedFunction

    counter = LaunchCounter()
    mode = _TorchOps(counter)
    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        if warmup:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        counter.triton += 1
        counter.by_op[f"triton:{self.__name__}"] += 1
        mode.paused += 1  # the interpreter's own staging copies are not the kernel's launches
        try:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            mode.paused -= 1

    InterpretedFunction.run = run
    try:
        with mode:
            yield counter
    finally:
        InterpretedFunction.run = original


def require_interpreter() -> None:
    """Raise unless Triton kernels run under the interpreter (TRITON_INTERPRET=1 before import)."""
    from triton.runtime.interpreter import InterpretedFunction

    from .kinematic_chain.kernel import _rodrigues_forward_kernel

    if not isinstance(_rodrigues_forward_kernel, InterpretedFunction):
        raise RuntimeError("count_launches needs TRITON_INTERPRET=1 set before spin_fast_kernels is imported")


__all__ = ["LaunchCounter", "count_launches", "require_interpreter"]
