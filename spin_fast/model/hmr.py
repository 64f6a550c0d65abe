"""HMR: ResNet backbone + iterative error feedback (IEF) regressor of SMPL pose, shape and camera.

docs/spin.md "HMR network". Parameter names follow mmhuman3d (`backbone.*`, `head.*`), so an mmhuman3d
checkpoint's state_dict (less its body-model and discriminator entries) loads as is.

    feat = spatial mean of layer4                                   (B, 2048) [512 for ResNet-18]
    for 3 iterations:
        x = cat(feat, pose (144, 24 x 6D), shape (10), cam (3))     (B, 2205)
        x = drop(fc2(drop(fc1(x))))                                 no ReLU (as SPIN)
        pose, shape, cam += decpose(x), decshape(x), deccam(x)
    rotmat = rot6d_to_rotmat(pose)                                  (B, 24, 3, 3)
With `input_res` set, the backbone sees the crop resized to input_res x input_res (bilinear,
antialiased) first: fewer pixels, much less convolution work (quick runs); the labels, camera and
SMPLify stay in the 224-pixel crop's coordinates, as the weak-perspective camera is resolution-free.
Under bf16 autocast the convolutions and linears run in bf16; the running estimates start from
fp32 buffers, so the sums (and everything returned) stay fp32.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spin_fast.constants import MIN_INPUT_RES
from spin_fast.geometry import rot6d_to_rotmat
from spin_fast.model.resnet import ResNet

NPOSE = 24 * 6
NSHAPE = 10
NCAM = 3


class HMROutput(NamedTuple):
    rotmat: torch.Tensor   # (B, 24, 3, 3) local joint rotations, global orient first
    betas: torch.Tensor    # (B, 10)
    cam: torch.Tensor      # (B, 3) weak perspective [s, tx, ty]
    pose6d: torch.Tensor   # (B, 144) the regressed 6D pose, before orthonormalisation

    # mmhuman3d's names
    @property
    def pred_rotmat(self) -> torch.Tensor:
        return self.rotmat

    @property
    def pred_betas(self) -> torch.Tensor:
        return self.betas

    @property
    def pred_cam(self) -> torch.Tensor:
        return self.cam


def read_mean_params(mean_params) -> dict[str, np.ndarray]:
    """smpl_mean_params as float32 arrays pose (144,), shape (10,), cam (3,) from a path, a dict or None."""
    if mean_params is None:
        # Identity rotations, mean shape 0, SPIN-like camera: only for tests and quick runs.
        pose = np.tile(np.array([1, 0, 0, 1, 0, 0], np.float32), 24)
        return {"pose": pose, "shape": np.zeros(NSHAPE, np.float32), "cam": np.array([0.9, 0, 0], np.float32)}
    if isinstance(mean_params, (str, os.PathLike)):
        from spin_fast.body.io import load_mean_params

        return load_mean_params(mean_params)
    if not isinstance(mean_params, Mapping):
        raise TypeError(f"mean_params must be a path, a dict or None, got {type(mean_params).__name__}")
    out = {}
    for key, n in (("pose", NPOSE), ("shape", NSHAPE), ("cam", NCAM)):
        if key not in mean_params:
            raise ValueError(f"mean_params: missing key {key!r} (need pose ({NPOSE},), shape ({NSHAPE},), cam ({NCAM},))")
        arr = np.asarray(mean_params[key] if not torch.is_tensor(mean_params[key]) else mean_params[key].cpu(),
                         dtype=np.float32).reshape(-1)
        if arr.shape != (n,):
            raise ValueError(f"mean_params[{key!r}]: got {arr.size} values, expected ({n},)")
        out[key] = arr
    return out


class HMRHead(nn.Module):
    """feat (B, F) -> (pose6d (B, 144), betas (B, 10), cam (B, 3)) by `n_iter` IEF steps."""

    def __init__(self, feat_dim: int, mean_params=None, n_iter: int = 3):
        super().__init__()
        self.n_iter = n_iter
        mp = read_mean_params(mean_params)
        self.register_buffer("init_pose", torch.from_numpy(mp["pose"]).reshape(1, NPOSE))
        self.register_buffer("init_shape", torch.from_numpy(mp["shape"]).reshape(1, NSHAPE))
        self.register_buffer("init_cam", torch.from_numpy(mp["cam"]).reshape(1, NCAM))
        self.fc1 = nn.Linear(feat_dim + NPOSE + NSHAPE + NCAM, 1024)
        self.drop1 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout(0.5)
        self.decpose = nn.Linear(1024, NPOSE)
        self.decshape = nn.Linear(1024, NSHAPE)
        self.deccam = nn.Linear(1024, NCAM)
        for layer in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)  # biases keep nn.Linear's default (as SPIN)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B = feat.shape[0]
        pose = self.init_pose.expand(B, -1)
        shape = self.init_shape.expand(B, -1)
        cam = self.init_cam.expand(B, -1)
        for _ in range(self.n_iter):
            x = torch.cat([feat, pose.to(feat.dtype), shape.to(feat.dtype), cam.to(feat.dtype)], 1)
            x = self.drop2(self.fc2(self.drop1(self.fc1(x))))
            # Sums stay in the buffers' fp32 even when the linears run in bf16.
            pose = pose + self.decpose(x).float()
            shape = shape + self.decshape(x).float()
            cam = cam + self.deccam(x).float()
        return pose, shape, cam


def check_input_res(value):
    """`value` when it is None or an int >= MIN_INPUT_RES (the backbone's stride), else ValueError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < MIN_INPUT_RES):
        raise ValueError(f"input_res: got {value!r}, expected None or an int >= {MIN_INPUT_RES} "
                         "(the backbone's stride)")
    return value


class HMR(nn.Module):
    """img (B, 3, 224, 224), ImageNet-normalised RGB -> HMROutput(rotmat, betas, cam, pose6d).

    backbone: 'resnet50' (SPIN) or 'resnet18' (quick runs); mean_params: path of
    smpl_mean_params.npz, a dict {pose (144,), shape (10,), cam (3,)}, or None (identity pose);
    input_res: side the image is resized to before the backbone (None: as given).
    """

    def __init__(self, backbone: str = "resnet50", mean_params=None, n_iter: int = 3, input_res: int | None = None):
        super().__init__()
        self.input_res = check_input_res(input_res)
        self.backbone = ResNet(backbone)
        self.head = HMRHead(self.backbone.feature_dim, mean_params, n_iter)

    def forward(self, img: torch.Tensor) -> HMROutput:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"img: got shape {tuple(img.shape)}, expected (B, 3, H, W)")
        r = self.input_res
        if r is not None and tuple(img.shape[-2:]) != (r, r):
            img = F.interpolate(img, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        feat = self.backbone(img).mean((2, 3))  # (B, F): the global average pool
        pose6d, betas, cam = self.head(feat)
        rotmat = rot6d_to_rotmat(pose6d.reshape(-1, 24, 6))
        return HMROutput(rotmat, betas, cam, pose6d)
