"""Triton kernels of spin_fast and their torch references.

One folder per op: `reference.py` (pure torch, the oracle and the CPU path), `kernel.py`
(`@triton.jit` only), `function.py` (launchers + autograd.Function) and a public function in the
op's `__init__.py` that dispatches by device (see `_dispatch.py`). Importing this package never
touches the Triton driver.
"""
