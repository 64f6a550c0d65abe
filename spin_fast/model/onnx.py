"""The HMR network as an ONNX file: export (`export_onnx`), checking it against the torch network
(`compare_onnx`) and running it through onnxruntime in place of the torch network (`OnnxHMR`).

The file's interface (what `python -m spin_fast.export` writes):

    input   img     (B, 3, R, R) float32  RGB crop, ImageNet-normalised: (pixel 0-255 - mean) / std,
                                          mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375];
                                          the 224-pixel test-time crop resized to R (bilinear, antialiased)
    output  rotmat  (B, 24, 3, 3)         SMPL's local joint rotations, global orient first (matrices
                                          whose columns are the orthonormalised 6D pairs)
            betas   (B, 10)               SMPL shape
            cam     (B, 3)                weak-perspective [s, tx, ty] of the 224 crop
                                          (translation [tx, ty, 2 * 5000 / (224 s)] at focal 5000)
            pose6d  (B, 144)              the regressed 6D pose (24 x [a1x, a2x, a1y, a2y, a1z, a2z])

B is fixed (`batch`) or any (`batch=None`: a dynamic axis named `batch`). The file's metadata
(`metadata_props`) says the backbone, R and the normalisation.

onnx, onnxscript (torch's exporter) and onnxruntime are the optional extra `export`
(`pip install 'spin_fast[export]'`); without them these functions raise `OnnxError` saying so.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spin_fast.atomic import atomic_write_bytes
from spin_fast.constants import IMAGENET_MEAN, IMAGENET_STD, IMG_RES
from spin_fast.errors import SpinFastError
from spin_fast.model.hmr import HMROutput

INPUT = "img"
OUTPUTS = ("rotmat", "betas", "cam", "pose6d")
OUTPUT_SHAPES = {"rotmat": (24, 3, 3), "betas": (10,), "cam": (3,), "pose6d": (144,)}
INSTALL = "pip install 'spin_fast[export]'"


class OnnxError(SpinFastError):
    """An ONNX file that cannot be used (missing, not ONNX, another interface) or a missing package."""


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxError(f"{module} is not installed; the ONNX export and runtime need the extra: {INSTALL}") \
            from None


class _Exportable(nn.Module):
    """HMR with its outputs as a plain tuple in OUTPUTS order (what the exporter traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor):
        out = self.model(img)
        return out.rotmat, out.betas, out.cam, out.pose6d


def example_crops(batch: int, input_res: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, R, R) float32 crops of normalised noise: the inputs the export is checked on."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, input_res, input_res, generator=g)


def export_onnx(model: nn.Module, path: str | os.PathLike, batch: int | None = 1, input_res: int = IMG_RES,
                metadata: dict | None = None) -> Path:
    """Write `model` (an HMR network; eval mode is set) to `path` as ONNX, atomically.

    batch: the fixed batch size, or None for a dynamic batch axis; input_res: R, the input's side
    (the network resizes it further if its own `input_res` differs); metadata: extra string
    entries for the file's metadata_props."""
    _require("onnxscript")
    onnx = _require("onnx")
    model.eval()
    wrapped = _Exportable(model).eval()
    example = example_crops(2 if batch is None else batch, input_res)
    dynamic = {INPUT: {0: torch.export.Dim("batch", min=1)}} if batch is None else None
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        # the exporter's notes on ops this network does not use (torchvision's) and on its own internals
        exporter_log.setLevel(logging.ERROR)
        warnings.simplefilter("ignore", FutureWarning)
        onnx_path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(wrapped, (example,), str(onnx_path), input_names=[INPUT], output_names=list(OUTPUTS),
                              dynamic_shapes=dynamic, dynamo=True, external_data=False, verbose=False)
        finally:
            exporter_log.setLevel(level)
        proto = onnx.load(str(onnx_path))
    props = {"producer": "spin_fast", "input": f"{INPUT} (B, 3, {input_res}, {input_res}) float32 RGB, "
             "(pixel - mean) / std", "mean": str(IMAGENET_MEAN), "std": str(IMAGENET_STD),
             "input_res": str(input_res), "batch": "dynamic" if batch is None else str(batch),
             "outputs": ", ".join(OUTPUTS), **{k: str(v) for k, v in (metadata or {}).items()}}
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write_bytes(path, proto.SerializeToString())


class OnnxHMR:
    """An exported HMR file run by onnxruntime on the CPU, called like the torch network:
    `OnnxHMR(path)(img)` -> HMROutput on img's device (fp32).

    img may have any batch size (a fixed-batch file runs it in chunks, the last one padded) and any
    side: a side other than the file's R is resized first as HMR does (bilinear, antialiased)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxError(f"--onnx {self.path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()  # as many as torch would use
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for an unreadable file
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise OnnxError(f"--onnx {self.path}: not a readable ONNX model ({type(e).__name__}: {first})") from None
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        if [i.name for i in inputs] != [INPUT] or outputs != list(OUTPUTS):
            raise OnnxError(f"--onnx {self.path}: inputs {[i.name for i in inputs]} and outputs {outputs}, expected "
                            f"[{INPUT!r}] and {list(OUTPUTS)} (a file written by python -m spin_fast.export)")
        shape = inputs[0].shape  # [B or 'batch', 3, R, R]
        self.batch = shape[0] if isinstance(shape[0], int) else None
        self.input_res = int(shape[2])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, img: np.ndarray) -> list[np.ndarray]:
        """The raw outputs (OUTPUTS order) of a float32 (B, 3, R, R) array."""
        if self.batch is None:
            return self.session.run(None, {INPUT: img})
        n, B = self.batch, img.shape[0]
        parts = []
        for start in range(0, B, n):
            chunk = img[start:start + n]
            if len(chunk) < n:  # pad the last chunk to the file's fixed batch
                chunk = np.concatenate([chunk, np.zeros((n - len(chunk),) + chunk.shape[1:], chunk.dtype)])
            parts.append(self.session.run(None, {INPUT: chunk}))
        return [np.concatenate([p[k] for p in parts])[:B] for k in range(len(OUTPUTS))]

    def __call__(self, img: torch.Tensor) -> HMROutput:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"img: got shape {tuple(img.shape)}, expected (B, 3, H, W)")
        x = img.float()
        r = self.input_res
        if tuple(x.shape[-2:]) != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        out = self.run(np.ascontiguousarray(x.detach().cpu().numpy()))
        rotmat, betas, cam, pose6d = (torch.from_numpy(o).to(img.device) for o in out)
        return HMROutput(rotmat, betas, cam, pose6d)


class Comparison(NamedTuple):
    max_abs_diff: dict  # output name -> max |onnx - torch|
    batch: int

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


@torch.no_grad()
def compare_onnx(onnx_model: OnnxHMR, model: nn.Module, crops: torch.Tensor) -> Comparison:
    """Max |difference| of each output between the ONNX file and the torch network on the same crops."""
    model.eval()
    ref = model(crops.to(next(model.parameters()).device))
    got = onnx_model.run(np.ascontiguousarray(crops.cpu().numpy()))
    diffs = {name: float(np.abs(g - getattr(ref, name).float().cpu().numpy()).max()) for name, g in zip(OUTPUTS, got)}
    return Comparison(diffs, len(crops))
