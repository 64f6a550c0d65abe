"""The DALI loader: decode (ROI where it saves work), one bilinear warp_affine to 224x224 per sample,
per-channel noise, ImageNet normalisation; outputs torch tensors.

Per step the Python side takes the step's `BatchPlan` (the same one the reference loader gets),
reads the encoded files, works out from the header the part of each image its crop samples (the
ROI, decoded alone by `decoders.image_slice`) and feeds through one `external_source`:

    encoded bytes, ROI anchor (x0, y0), ROI shape (w, h), matrix (2, 3) crop -> ROI pixels, noise (3,)

Steps are kept in flight (`prefetch`, default 2): DALI decodes and warps the next step while the
caller trains on the current one, and a helper thread reads the files of the step after that.

Pipeline (`device_id=None`: DALI's CPU operators; a GPU id: nvJPEG 'mixed' decoding and GPU warp):

    decoders.image_slice (RGB) -> warp_affine (bilinear, black outside, uint8)
    -> float * noise -> min(., 255) -> crop_mirror_normalize (ImageNet mean/std, CHW float32)

Unreadable images: the cheap checks of `read_image_bytes` (missing, empty, truncated JPEG, bad
header) run before feeding; a decode error inside DALI is traced to its file by decoding the batch's
files with PIL. Either way the error names the file, or with `skip_bad_images` the sample is left
out, counted in `skipped` and the pipeline rebuilt.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import sys
from typing import Callable, Iterator

import numpy as np
import torch

from spin_fast.constants import IMAGENET_MEAN, IMAGENET_STD, IMG_RES
from spin_fast.data.augment import invert_affine, sampling_roi, to_half_pixel
from spin_fast.data.batch import (BatchPlan, ImageError, Sources, assemble_labels, decode_image, image_size,
                                  read_image_bytes, to_device)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


INPUTS = ("encoded", "anchor", "shape", "matrix", "noise")


def _build_pipeline(batch_size: int, threads: int, device_id: int | None, roi_decode: bool, seed: int,
                    prefetch: int = 2):
    from nvidia.dali import fn, pipeline_def, types
    import nvidia.dali.math as dmath

    gpu = device_id is not None

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id, prefetch_queue_depth=prefetch,
                  seed=seed)
    def crop_pipeline():
        encoded, anchor, shape, matrix, noise = (fn.external_source(name=n, dtype=t) for n, t in zip(
            INPUTS, (types.UINT8, types.FLOAT, types.FLOAT, types.FLOAT, types.FLOAT)))
        decoder_device = "mixed" if gpu else "cpu"
        if roi_decode:
            img = fn.decoders.image_slice(encoded, anchor, shape, device=decoder_device, output_type=types.RGB,
                                          normalized_anchor=False, normalized_shape=False, axis_names="WH",
                                          adjust_orientation=False)
        else:
            img = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB, adjust_orientation=False)
        crop = fn.warp_affine(img, matrix=matrix, size=[IMG_RES, IMG_RES], interp_type=types.INTERP_LINEAR,
                              fill_value=0, inverse_map=True)  # matrix: crop -> source, half-pixel centred
        x = fn.cast(crop, dtype=types.FLOAT) * (noise.gpu() if gpu else noise)
        x = dmath.min(x, 255.0)
        return fn.crop_mirror_normalize(x, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), output_layout="CHW",
                                        dtype=types.FLOAT)

    pipe = crop_pipeline()
    pipe.build()
    return pipe


def _to_torch(tensor_list) -> torch.Tensor:
    """DALI TensorList (dense) -> an owned torch tensor (DALI reuses its buffers)."""
    t = tensor_list.as_tensor()
    return torch.from_dlpack(t).clone()


class DaliLoader:
    """Batches of a planner through a DALI pipeline. `iter_from(step)` yields batch dicts."""

    backend = "dali"

    def __init__(self, sources: Sources, planner: Callable[[int], BatchPlan], batch_size: int, threads: int = 2,
                 skip_bad_images: bool = False, device=None, num_steps: int | None = None,
                 roi_decode: bool = True, seed: int = 0, prefetch: int = 2):
        if not dali_available():
            raise ImportError("the DALI loader needs nvidia-dali (pip install spin_fast[dali]); "
                              "use the reference loader (data.loader=reference) otherwise")
        self.sources, self.planner, self.batch_size, self.threads = sources, planner, batch_size, threads
        self.skip_bad_images, self.num_steps, self.roi_decode = skip_bad_images, num_steps, roi_decode
        self.seed = seed
        if prefetch < 1:
            raise ValueError(f"DaliLoader prefetch must be >= 1 (steps in the pipeline at once), got {prefetch}")
        self.prefetch = prefetch
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.device_id = (self.device.index or 0) if self.device.type == "cuda" else None
        self.skipped: list[str] = []
        self._bad: set[str] = set()

    # --- feeding ----------------------------------------------------------------------------------
    def _skip(self, err: ImageError):
        self._bad.add(err.path)
        self.skipped.append(str(err))
        print(f"spin_fast: skipped an unreadable image ({len(self.skipped)} so far): {err}", file=sys.stderr)

    def _prepare(self, plan: BatchPlan):
        """Read and check the plan's files -> (kept plan, the 5 external_source lists)."""
        keep, data, anchors, shapes, mats = [], [], [], [], []
        inv = invert_affine(plan.matrix)  # crop -> image
        lo, hi = sampling_roi(inv)
        for i, path in enumerate(plan.files):
            if str(path) in self._bad:
                continue
            try:
                raw = read_image_bytes(path)
                w, h = image_size(path, raw)
            except ImageError as e:
                if not self.skip_bad_images:
                    raise
                self._skip(e)
                continue
            x0, y0 = max(0, lo[i, 0]), max(0, lo[i, 1])
            x1, y1 = min(w, hi[i, 0]), min(h, hi[i, 1])
            if not self.roi_decode or x1 - x0 < 1 or y1 - y0 < 1:
                x0, y0, x1, y1 = 0, 0, w, h  # crop entirely outside the image: decode it whole
            m = inv[i].copy()
            m[:, 2] -= (x0, y0)  # sample the ROI, whose pixel (0, 0) is image pixel (x0, y0)
            keep.append(i)
            data.append(np.frombuffer(raw, np.uint8))
            anchors.append(np.array([x0, y0], np.float32))
            shapes.append(np.array([x1 - x0, y1 - y0], np.float32))
            mats.append(to_half_pixel(m[None])[0].astype(np.float32))
        plan = plan.select(np.asarray(keep, np.int64)) if len(keep) < len(plan) else plan
        return plan, (data, anchors, shapes, mats, [n.astype(np.float32) for n in plan.params.noise])

    def _locate_decode_error(self, plans: list[BatchPlan], err: Exception) -> list[ImageError]:
        """The files of `plans` (the failed step and those queued behind it) that PIL cannot decode."""
        bad = []
        for path in dict.fromkeys(f for p in plans for f in p.files):
            try:
                decode_image(path)
            except ImageError as e:
                bad.append(e)
        if not bad:
            p = plans[0]
            raise RuntimeError(f"DALI failed on the batch of step {p.step} ({len(p)} images, first "
                               f"{p.files[0] if p.files else None}) and PIL reads every image of the steps in "
                               f"flight: {err}")
        return bad

    def _feed(self, pipe, feed):
        for name, data in zip(INPUTS, feed):
            if self.roi_decode or name not in ("anchor", "shape"):  # unused inputs are pruned
                pipe.feed_input(name, data)

    # --- iterating --------------------------------------------------------------------------------
    def iter_from(self, step: int = 0) -> Iterator[dict]:
        """Batches of steps step, step+1, ...

        Up to `prefetch` steps are in the pipeline at once: while the caller works on batch k, DALI
        decodes and warps the steps after it (schedule_run / share_outputs), and a helper thread reads
        and checks the files of the next step to feed. A decode error stops the pipeline: its step is
        traced to the file, and with `skip_bad_images` that step and every step queued behind it go
        again to a new pipeline, so order and content are those of a run without prefetching."""
        steps = itertools.count(step) if self.num_steps is None else iter(range(step, self.num_steps))
        pipe, queued = None, collections.deque()  # queued: plans fed and scheduled, oldest first
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            def submit():
                s = next(steps, None)
                return None if s is None else pool.submit(lambda: self._prepare(self.planner(s)))

            nxt = submit()

            def fill(group):
                """Top `group` ((plan, feed) not yet fed) up from the step stream and schedule it."""
                nonlocal pipe, nxt
                depth = self.prefetch if pipe is None else pipe.prefetch_queue_depth
                while nxt is not None and len(queued) + len(group) < depth:
                    plan, feed = nxt.result()  # an ImageError raised while reading surfaces here
                    nxt = submit()
                    if any(str(f) in self._bad for f in plan.files):  # read before a decode error found it
                        plan, feed = self._prepare(plan)
                    if len(plan):
                        group.append((plan, feed))
                if not group:
                    return
                if pipe is None:  # a new pipeline runs `depth` iterations at its first schedule_run
                    pipe = _build_pipeline(self.batch_size, max(1, self.threads), self.device_id, self.roi_decode,
                                           self.seed, len(group))
                    for plan, feed in group:
                        self._feed(pipe, feed)
                        queued.append(plan)
                    pipe.schedule_run()
                    return
                for plan, feed in group:
                    self._feed(pipe, feed)
                    pipe.schedule_run()
                    queued.append(plan)

            fill([])
            while queued:
                try:
                    (out,) = pipe.share_outputs()
                    img = _to_torch(out)
                    pipe.release_outputs()
                except RuntimeError as e:
                    stalled = list(queued)  # the failing step and those scheduled behind it
                    queued.clear()
                    pipe = None  # a failed pipeline is not reused
                    bad = self._locate_decode_error(stalled, e)
                    if not self.skip_bad_images:
                        raise bad[0] from None
                    for b in bad:
                        self._skip(b)
                    fill([x for x in map(self._prepare, stalled) if len(x[0])])
                    continue
                plan = queued.popleft()
                fill([])  # the next step starts before the caller gets this one
                batch = to_device(assemble_labels(self.sources, plan), self.device)
                batch["img"] = img if img.device == self.device else img.to(self.device)
                yield batch

    def __iter__(self):
        return self.iter_from(0)
