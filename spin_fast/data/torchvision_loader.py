"""The torchvision loader: JPEG decoding without DALI, on the training device, and the crop in torch.

Per step it takes the step's `BatchPlan` (the same one the DALI and reference loaders get):

    1. a helper thread reads and checks the files (`read_image_bytes`) and assembles the labels of
       the steps ahead (`prefetch` of them);
    2. `decode`: the step's JPEGs in one `torchvision.io.decode_jpeg` call on the device (nvJPEG,
       batched, when the device is CUDA); other formats through PIL on the host, then moved;
    3. `warp_crops`: each sample's one affine (the plan's crop matrix) as `affine_grid` +
       `grid_sample` (bilinear, black outside) on the part of the image the crop samples, rounded to
       0..255 levels as the uint8 warps of the other loaders are;
    4. `noise_and_normalize_torch`: min(255, value * noise), ImageNet mean/std.

Steps 3-4 are plain torch and import nothing optional; torchvision is imported for step 2 only
(`torchvision_decoder`), so the crop runs, and is tested, on machines where torchvision does not
import (tests/test_data_loaders.py decodes with PIL there). torchvision is the `gpu` extra of
pyproject.toml; where it does not import, `torchvision_status()` says why and the backend is refused.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import sys
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spin_fast.constants import IMAGENET_MEAN, IMAGENET_STD, IMG_RES
from spin_fast.data.augment import invert_affine, sampling_roi
from spin_fast.data.batch import BatchPlan, ImageError, Sources, assemble_labels, decode_image, read_image_bytes, to_device

JPEG_SOI = b"\xff\xd8\xff"

Decoder = Callable[[Sequence, Sequence[bytes], torch.device], list]


def torchvision_status() -> str | None:
    """None when torchvision.io.decode_jpeg is usable here, else why not (one line)."""
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception as e:  # ImportError, or RuntimeError 'operator torchvision::nms does not exist'
        return (f"torchvision does not import here ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "it needs a torchvision built for this torch (pip install spin_fast[gpu] beside a matching torch)")
    return None


# --- decoding ---------------------------------------------------------------------------------------
def pil_decoder(paths: Sequence, datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """Every image through PIL on the host -> list of (3, H, W) uint8 on `device`."""
    return [torch.from_numpy(np.array(decode_image(p, d))).permute(2, 0, 1).to(device) for p, d in zip(paths, datas)]


def torchvision_decoder(paths: Sequence, datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """JPEGs in one batched `decode_jpeg` on `device` (nvJPEG on CUDA), the rest through PIL.
    A failed batch is decoded file by file; a JPEG torchvision refuses (a CMYK one on the GPU, say)
    goes through PIL, and one PIL cannot read either is an ImageError naming it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list = [None] * len(datas)
    jpeg = [i for i, d in enumerate(datas) if d[:3] == JPEG_SOI]
    other = sorted(set(range(len(datas))) - set(jpeg))
    if jpeg:
        encoded = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in jpeg]
        target = device if device.type == "cuda" else "cpu"
        try:
            imgs = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=target)
        except RuntimeError:
            imgs = []
            for i, enc in zip(jpeg, encoded):
                try:
                    imgs.append(decode_jpeg(enc, mode=ImageReadMode.RGB, device=target))
                except RuntimeError:
                    imgs.extend(pil_decoder([paths[i]], [datas[i]], device))  # ImageError if corrupt
        for i, img in zip(jpeg, imgs):
            out[i] = img.to(device)
    for i, img in zip(other, pil_decoder([paths[i] for i in other], [datas[i] for i in other], device)):
        out[i] = img
    return out


# --- the crop, in torch ---------------------------------------------------------------------------------
def crop_theta(matrix: np.ndarray, offset: np.ndarray, size: np.ndarray, res: int = IMG_RES) -> np.ndarray:
    """affine_grid's theta (B, 2, 3) float64 for crops through `matrix` (B, 2, 3) image -> crop pixels
    (integer-centred) sampling the region of each image whose pixel (0, 0) is image pixel `offset`
    (B, 2) and whose size is `size` (B, 2) (w, h). Both sides in grid_sample's align_corners=False
    normalised coordinates: pixel i of n spans [2i/n - 1, 2(i+1)/n - 1]."""
    inv = invert_affine(np.asarray(matrix, np.float64))  # crop -> image pixels
    inv[:, :, 2] -= offset
    n = len(inv)
    # output normalised -> crop pixels: u = (x + 1) res / 2 - 1/2
    out_to_px = np.zeros((n, 3, 3))
    out_to_px[:, 0, 0] = out_to_px[:, 1, 1] = res / 2.0
    out_to_px[:, :2, 2] = res / 2.0 - 0.5
    out_to_px[:, 2, 2] = 1.0
    # region pixels -> region normalised: x_n = (2 x + 1) / w - 1
    w, h = size[:, 0].astype(np.float64), size[:, 1].astype(np.float64)
    px_to_in = np.zeros((n, 2, 3))
    px_to_in[:, 0, 0], px_to_in[:, 1, 1] = 2.0 / w, 2.0 / h
    px_to_in[:, 0, 2], px_to_in[:, 1, 2] = 1.0 / w - 1.0, 1.0 / h - 1.0
    inv3 = np.concatenate([inv, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], 1)
    return px_to_in @ inv3 @ out_to_px


def warp_crops(images: Sequence[torch.Tensor], matrix: np.ndarray, res: int = IMG_RES) -> torch.Tensor:
    """images: B (3, H, W) uint8 tensors on one device; matrix (B, 2, 3) image -> crop pixels.
    Returns (B, 3, res, res) float32 crops, bilinear, black outside, rounded to whole levels 0..255
    (the uint8 output of PIL's and DALI's warps). Each image is sliced to the region its crop samples
    (`sampling_roi`) before it is converted to float, so a large image costs its crop's footprint only."""
    B = len(images)
    device = images[0].device if B else torch.device("cpu")
    if B == 0:
        return torch.zeros(0, 3, res, res, device=device)
    lo, hi = sampling_roi(invert_affine(np.asarray(matrix, np.float64)), res)
    offsets, sizes, regions = np.zeros((B, 2)), np.zeros((B, 2)), []
    for i, img in enumerate(images):
        h, w = img.shape[-2:]
        x0, y0 = max(0, int(lo[i, 0])), max(0, int(lo[i, 1]))
        x1, y1 = min(w, int(hi[i, 0])), min(h, int(hi[i, 1]))
        if x1 - x0 < 1 or y1 - y0 < 1:  # the crop misses the image: sample it whole (all black)
            x0, y0, x1, y1 = 0, 0, w, h
        regions.append(img[:, y0:y1, x0:x1])
        offsets[i], sizes[i] = (x0, y0), (x1 - x0, y1 - y0)
    # one host -> device copy of every sample's theta (B x 6 numbers), non-blocking from pinned memory
    theta = torch.from_numpy(crop_theta(matrix, offsets, sizes, res).astype(np.float32))
    if device.type == "cuda":
        theta = theta.pin_memory().to(device, non_blocking=True)
    grid = F.affine_grid(theta, [B, 3, res, res], align_corners=False)  # (B, res, res, 2)
    out = torch.empty(B, 3, res, res, device=device)
    for i, region in enumerate(regions):
        out[i] = F.grid_sample(region[None].float(), grid[i:i + 1], mode="bilinear", padding_mode="zeros",
                               align_corners=False)[0]
    return out.round_().clamp_(0.0, 255.0)


def noise_and_normalize_torch(crops: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float 0..255 crops, noise (B, 3) -> min(255, value * noise), ImageNet mean/std
    (the torch twin of augment.noise_and_normalize)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=crops.dtype).to(crops.device, non_blocking=True)
    std = torch.tensor(IMAGENET_STD, dtype=crops.dtype).to(crops.device, non_blocking=True)
    x = torch.clamp(crops * noise.to(crops)[:, :, None, None], max=255.0)
    return (x - mean[:, None, None]) / std[:, None, None]


# --- the loader ---------------------------------------------------------------------------------------
class TorchvisionLoader:
    """Batches of a planner, decoded by `decoder` (default torchvision's) and cropped in torch on
    `device`. `iter_from(step)` yields batch dicts (spin_fast.data docstring)."""

    backend = "torchvision"

    def __init__(self, sources: Sources, planner: Callable[[int], BatchPlan], skip_bad_images: bool = False,
                 device=None, num_steps: int | None = None, prefetch: int = 2, decoder: Decoder | None = None):
        if decoder is None:
            why = torchvision_status()
            if why is not None:
                raise ImportError(f"data.loader torchvision: {why}")
            decoder = torchvision_decoder
        if prefetch < 1:
            raise ValueError(f"TorchvisionLoader prefetch must be >= 1 (steps read ahead), got {prefetch}")
        self.sources, self.planner, self.decoder = sources, planner, decoder
        self.skip_bad_images, self.num_steps, self.prefetch = skip_bad_images, num_steps, prefetch
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.skipped: list[str] = []

    def _skip(self, err: ImageError):
        self.skipped.append(str(err))
        print(f"spin_fast: skipped an unreadable image ({len(self.skipped)} so far): {err}", file=sys.stderr)

    def _read(self, plan: BatchPlan):
        """In the helper thread: the plan's checked file bytes (bad files dropped or raised)."""
        keep, datas = [], []
        for i, path in enumerate(plan.files):
            try:
                datas.append(read_image_bytes(path))
                keep.append(i)
            except ImageError as e:
                if not self.skip_bad_images:
                    raise
                self._skip(e)
        return (plan.select(np.asarray(keep, np.int64)) if len(keep) < len(plan) else plan), datas

    def _decode(self, plan: BatchPlan, datas: list[bytes]):
        """Decode the step; with skip_bad_images a file that fails is dropped (decoded one by one)."""
        try:
            return plan, self.decoder(plan.files, datas, self.device)
        except ImageError:
            if not self.skip_bad_images:
                raise
        keep, imgs = [], []
        for i, (path, data) in enumerate(zip(plan.files, datas)):
            try:
                imgs.extend(self.decoder([path], [data], self.device))
                keep.append(i)
            except ImageError as e:
                self._skip(e)
        return plan.select(np.asarray(keep, np.int64)), imgs

    def iter_from(self, step: int = 0) -> Iterator[dict]:
        steps = itertools.count(step) if self.num_steps is None else iter(range(step, self.num_steps))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ahead: collections.deque = collections.deque()

            def top_up():
                while len(ahead) < self.prefetch:
                    s = next(steps, None)
                    if s is None:
                        return
                    ahead.append(pool.submit(lambda s=s: self._read(self.planner(s))))

            top_up()
            while ahead:
                plan, datas = ahead.popleft().result()  # an ImageError of the checks surfaces here
                top_up()
                plan, imgs = self._decode(plan, datas)
                if len(plan) == 0:
                    continue
                crops = warp_crops(imgs, plan.matrix)
                noise = torch.from_numpy(plan.params.noise.astype(np.float32))
                batch = to_device(assemble_labels(self.sources, plan), self.device)
                batch["img"] = noise_and_normalize_torch(crops, noise.to(self.device, non_blocking=True))
                yield batch

    def __iter__(self):
        return self.iter_from(0)
