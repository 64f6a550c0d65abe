"""The reference loader: a plain torch DataLoader, PIL decoding and warping, numpy augmentation.

It reads the same `BatchPlan`s as the DALI loader (same samples, same parameters, same matrices),
so the two give the same batches up to interpolation rounding. Worker processes (`threads` of them)
read, decode, warp and normalise the images; the labels are assembled from the step's plan in the
main process (`assemble_labels`), once the worker's images of the step are back.
"""
from __future__ import annotations

import collections
import io
import itertools
import sys
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from spin_fast.constants import IMG_RES
from spin_fast.data.augment import invert_affine, noise_and_normalize, sampling_roi, to_half_pixel
from spin_fast.data.batch import BatchPlan, ImageError, Sources, assemble_labels, read_image_bytes, to_device


def warp_image(image: Image.Image, matrix: np.ndarray, res: int = IMG_RES) -> np.ndarray:
    """Warp a PIL image with `matrix` (2, 3) image -> crop pixels, bilinear, black outside (the one
    PIL crop warp: the reference loader's and the demo's). Returns (res, res, 3) uint8 RGB.

    The region the crop samples is cut out first with black beyond the image (`Image.crop` pads with
    zeros), so the bilinear taps that fall outside the image read black and the image border lands
    where the matrix puts it, as in a window pasted into a black canvas (SPIN's crop) and as
    grid_sample / warp_affine sample; PIL's transform alone would paint a whole crop pixel black as
    soon as its centre maps outside the image (the border up to 0.5 crop pixels off)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    inv = invert_affine(matrix[None])  # crop -> image, integer-centred
    lo, hi = sampling_roi(inv, res)
    region = image.crop((int(lo[0, 0]), int(lo[0, 1]), int(hi[0, 0]), int(hi[0, 1])))
    inv[:, :, 2] -= lo  # crop -> region
    inv = to_half_pixel(inv)[0]  # PIL takes crop -> source, half-pixel centred
    out = region.transform((res, res), Image.Transform.AFFINE, data=tuple(inv.reshape(-1)),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out)


def warp_pil(path, data: bytes, matrix: np.ndarray, res: int = IMG_RES) -> np.ndarray:
    """Decode `data` and `warp_image` it; a file PIL cannot read is an ImageError naming `path`."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return warp_image(im, matrix, res)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(path, f"corrupt image: {e}") from None


class _PlanItems:
    """batch_sampler for DataLoader (runs in the main process): yields each step's per-sample items
    and remembers the step's plan, so outputs (which come back in order) can be matched to it."""

    def __init__(self, planner: Callable[[int], BatchPlan], start: int, stop: int | None):
        self.planner, self.start, self.stop = planner, start, stop
        self.plans: collections.deque[BatchPlan] = collections.deque()

    def __iter__(self):
        steps = itertools.count(self.start) if self.stop is None else range(self.start, self.stop)
        for step in steps:
            plan = self.planner(step)
            self.plans.append(plan)
            yield [(i, plan.files[i], plan.matrix[i], plan.params.noise[i]) for i in range(len(plan))]


class _CropDataset(torch.utils.data.Dataset):
    """item (row, file, matrix (2, 3), noise (3,)) -> (row, normalised crop (3, 224, 224) or None, error).

    An unreadable image comes back as its error (not raised in the worker, where torch would re-raise
    it as 'Caught ImageError in DataLoader worker process N' with the worker's traceback): the main
    process skips it or raises it naming the file and the sample."""

    def __getitem__(self, item):
        i, path, matrix, noise = item
        try:
            crop = warp_pil(path, read_image_bytes(path), matrix)
        except ImageError as e:
            return i, None, e
        return i, torch.from_numpy(noise_and_normalize(crop, noise)), None


def _collate(outputs):
    """In the worker: the rows that loaded, their stacked images, the errors of the others."""
    rows = [i for i, img, _ in outputs if img is not None]
    imgs = [img for _, img, _ in outputs if img is not None]
    errors = [(i, e) for i, img, e in outputs if img is None]
    stacked = torch.stack(imgs) if imgs else torch.zeros(0, 3, IMG_RES, IMG_RES)
    return torch.tensor(rows, dtype=torch.long), stacked, errors


def _worker_context():
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class ReferenceLoader:
    """Batches of a planner through a torch DataLoader with `threads` worker processes (0: inline).

    `iter_from(step)` yields the batch dicts of steps step, step+1, ... (up to `num_steps`)."""

    backend = "reference"

    def __init__(self, sources: Sources, planner: Callable[[int], BatchPlan], threads: int = 2,
                 skip_bad_images: bool = False, device=None, num_steps: int | None = None):
        self.sources, self.planner, self.threads = sources, planner, threads
        self.skip_bad_images, self.device, self.num_steps = skip_bad_images, device, num_steps
        self.skipped: list[str] = []  # error messages of the skipped samples

    def iter_from(self, step: int = 0) -> Iterator[dict]:
        items = _PlanItems(self.planner, step, self.num_steps)
        loader = torch.utils.data.DataLoader(
            _CropDataset(), batch_sampler=items, num_workers=self.threads,
            collate_fn=_collate, prefetch_factor=2 if self.threads > 0 else None,
            # workers come from a fresh single-threaded server process, never forked from this one: a
            # fork of a process whose other threads (OpenMP, DALI, torch) hold a lock can deadlock
            multiprocessing_context=_worker_context() if self.threads > 0 else None)
        for rows, imgs, errors in loader:
            plan = items.plans.popleft()
            if errors and not self.skip_bad_images:
                i, e = errors[0]
                d = int(plan.dataset_id[i])
                raise ImageError(e.path, f"{e.reason} (dataset {self.sources.names[d]}, sample "
                                         f"{int(plan.sample_index[i])})")
            if errors:
                errors = [str(e) for _, e in errors]
                self.skipped.extend(errors)
                print(f"spin_fast: skipped {len(errors)} unreadable image(s) ({len(self.skipped)} so far): "
                      f"{errors[0]}", file=sys.stderr)
                plan = plan.select(rows.numpy())
            if len(plan) == 0:
                continue
            batch = assemble_labels(self.sources, plan)
            batch["img"] = imgs
            yield to_device(batch, self.device)

    def __iter__(self):
        return self.iter_from(0)
