"""kinematic_chain op: Rodrigues (axis-angle -> rotation matrices) and SMPL forward kinematics.

`rodrigues(axis_angle)`, `kinematic_chain(rotmats, rest_joints, parents)` and the fused
`rodrigues_chain(axis_angle, rest_joints, parents)` run the Triton kernels when
`_dispatch.use_triton` says so (CUDA tensors, or SPIN_FAST_BACKEND=triton) and torch otherwise:
the references `rodrigues_torch` and `kinematic_chain_torch`, and for the fused op
for CPU float32 / float64 tensors `rodrigues_chain_host` (host.py: the same written-out maths in NumPy,
whose per-call cost is about half of torch's), else `rodrigues_chain_cpu` (cpu.py: planar layout,
backward written out, the path `SPIN_FAST_COMPILE=1` compiles); their oracle is `rodrigues_chain_torch`,
the references' composition. Every Triton path has hand-written backward kernels.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .._dispatch import compile_setting, use_triton
from .cpu import rodrigues_chain_cpu
from .host import host_accepts, rodrigues_chain_host, shaped_rodrigues_chain_host
from .reference import kinematic_chain_torch, rodrigues_torch

__all__ = ["kinematic_chain", "kinematic_chain_torch", "rodrigues", "rodrigues_chain", "rodrigues_chain_cpu",
           "rodrigues_chain_host", "rodrigues_chain_torch", "rodrigues_torch", "shaped_rodrigues_chain_host",
           "use_host"]


def use_host(*tensors: torch.Tensor) -> bool:
    """True where the torch side of an op runs its NumPy path (host.py): float32 / float64 CPU tensors,
    neither Triton (`SPIN_FAST_BACKEND`) nor `SPIN_FAST_COMPILE=1` asked for."""
    return all(host_accepts(t) for t in tensors) and not use_triton(*tensors) and not compile_setting()


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """axis_angle (..., 3) -> rotation matrices (..., 3, 3), smplx's eps convention."""
    from .function import check_rodrigues_args  # imports triton (not its driver): deferred to the call

    check_rodrigues_args(axis_angle)
    if use_triton(axis_angle):
        from .function import rodrigues_triton

        return rodrigues_triton(axis_angle)
    return rodrigues_torch(axis_angle)


def kinematic_chain(
    rotmats: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """rotmats (B, J, 3, 3) local rotations; rest_joints (B, J, 3); parents: J ints with
    0 <= parents[i] < i (parents[0] ignored, -1 by convention).
    Returns posed_joints (B, J, 3) and transforms (B, J, 3, 4) relative to the rest pose."""
    from .function import check_chain_args

    parents = check_chain_args(rotmats, rest_joints, parents)
    if use_triton(rotmats, rest_joints):
        from .function import kinematic_chain_triton

        return kinematic_chain_triton(rotmats, rest_joints, parents)
    return kinematic_chain_torch(rotmats, rest_joints, parents)


def rodrigues_chain_torch(
    axis_angle: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused op's torch path: rodrigues_torch then kinematic_chain_torch."""
    rotmats = rodrigues_torch(axis_angle)
    return (rotmats, *kinematic_chain_torch(rotmats, rest_joints, parents))


def rodrigues_chain(
    axis_angle: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int], need_transforms: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """axis_angle (B, J, 3) local rotations; rest_joints (B, J, 3); parents as for kinematic_chain.
    Returns rotmats (B, J, 3, 3) (for the pose feature), posed_joints (B, J, 3), transforms
    (B, J, 3, 4); the Triton path is one kernel each way (rotations never round-trip alone). The torch
    path's outputs are batch-major views of planar tensors, and it skips the transforms (None) where
    need_transforms is False."""
    from .function import check_rodrigues_chain_args

    parents = check_rodrigues_chain_args(axis_angle, rest_joints, parents)
    if use_triton(axis_angle, rest_joints):
        from .function import rodrigues_chain_triton

        return rodrigues_chain_triton(axis_angle, rest_joints, parents)
    if use_host(axis_angle):
        return rodrigues_chain_host(axis_angle, rest_joints, parents, need_transforms)
    return rodrigues_chain_cpu(axis_angle, rest_joints, parents, need_transforms)
