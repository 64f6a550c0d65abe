"""Phase timers of the training loop that never make the host wait inside a step.

On CUDA a phase is bracketed by two CUDA events recorded on the current stream: recording is
asynchronous, and the elapsed times are read only at logging steps (`read`, which waits for the last
event), so a phase's time is the GPU time of the work it enqueued, SMPLify's kernels and graph
replays included, not the time the host took to launch them. On the CPU a phase is host wall time
(perf_counter), which is where the CPU work runs.

The loop's phases (`spin_fast.train.loop`), in ms per step over the steps since the last log:
    data_ms      host wall time waiting for the loader's next batch (host time on every device:
                 loading is host work; the loaders prefetch, so this is the wait the trainer sees)
    forward_ms   train_step: network, SMPL of the prediction, fits in the loop, losses
    smplify_ms   the fits-in-the-loop block inside it: the stored fit's loss, SMPLify, the selection,
                 the write-back and the target mesh (part of forward_ms)
    backward_ms  loss.backward(), optimizer and scheduler steps
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates named phases; `read()` returns seconds per phase since the last read and resets."""

    def __init__(self, device=None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self._events: dict[str, list] = defaultdict(list)
        self._host: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str, host: bool = False):
        """Time the block as phase `name` (host wall time when `host` or on the CPU)."""
        if self.cuda and not host:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events[name].append((start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._host[name] += time.perf_counter() - t0

    def read(self) -> dict[str, float]:
        """Seconds per phase since the last read (waits for the GPU work of the timed phases)."""
        out = dict(self._host)
        for name, spans in self._events.items():
            if spans:
                spans[-1][1].synchronize()
                out[name] = out.get(name, 0.0) + sum(a.elapsed_time(b) for a, b in spans) / 1000.0
        self._events.clear()
        self._host.clear()
        return out


@contextmanager
def maybe_phase(timer: PhaseTimer | None, name: str):
    """`timer.phase(name)`, or nothing when there is no timer."""
    if timer is None:
        yield
    else:
        with timer.phase(name):
            yield
