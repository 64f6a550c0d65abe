"""3DPW evaluation (docs/spin.md "Evaluation on 3DPW"; the SPIN / mmhuman3d protocol), read top to bottom.

    1. network:  img -> predicted rotation matrices (24) and betas           (bf16 autocast optional)
    2. SMPL:     neutral model of the prediction -> vertices -> J_regressor_h36m (17 joints)   fp32
                 ground truth: male model for gender 'm' (0), female for 'f' (1) -> the same path;
                 samples of unknown gender (-1, not in 3DPW) use the neutral model
    3. metrics:  pelvis-centred J14 MPJPE, similarity-Procrustes PA-MPJPE, PVE (mm), per sample
Per-sample sums stay on the device; the one host sync is at the end (and per batch only when
`sync_timing` asks for exact per-batch timing on CUDA).

`evaluate(predict, batches, bodies)` runs over any iterable of batch dicts holding img (B,3,224,224)
normalised, pose (B,72) axis-angle, betas (B,10) and gender (B,) (0 male, 1 female, -1 unknown);
`predict(img) -> (rotmat (B,24,3,3), betas (B,10))`. `hmr_predictor` / `mean_pose_predictor` build
`predict` from a network or from the mean parameters alone (the baseline every model must beat).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import torch

from spin_fast.atomic import atomic_write_json
from spin_fast.constants import GENDER_CODES, GENDER_IDS
from spin_fast.metrics import pw3d_metrics
from spin_fast.geometry import rot6d_to_rotmat

METRICS = ("mpjpe", "pa_mpjpe", "pve")
GENDER_MALE, GENDER_FEMALE = GENDER_IDS["m"], GENDER_IDS["f"]

Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Bodies:
    """The three SMPL models of the protocol (spin_fast.body.BodyModel with the H36M regressor)."""

    neutral: torch.nn.Module
    male: torch.nn.Module
    female: torch.nn.Module

    @classmethod
    def from_paths(cls, paths, device=None) -> "Bodies":
        from spin_fast.body import BodyModel

        return cls(*(BodyModel.from_paths(paths, g).to(device) for g in ("neutral", "male", "female")))


@dataclass
class EvalResult:
    num_samples: int
    mpjpe: float          # mm
    pa_mpjpe: float       # mm
    pve: float            # mm
    seconds: float        # wall time of the whole loop, data loading included
    images_per_s: float   # num_samples / seconds
    loader_seconds: float = 0.0  # time spent waiting for the next batch
    per_sample: dict = field(default_factory=dict, repr=False)  # metric -> (N,) CPU tensor, if kept
    baseline: dict | None = None  # metric -> mean (mm) of the `baseline` predictor on the same samples

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("per_sample")
        return d


def hmr_predictor(model: torch.nn.Module, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False) -> Predictor:
    """predict(img) of an HMR network in eval mode; the outputs are fp32 whatever the autocast."""
    model.eval()

    def predict(img: torch.Tensor):
        if channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        with torch.autocast(img.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(img)
        return out.rotmat.float(), out.betas.float()

    return predict


def mean_pose_predictor(mean_params) -> Predictor:
    """Ignores the image: every prediction is the mean pose and shape (smpl_mean_params)."""
    from spin_fast.model.hmr import read_mean_params

    mp = read_mean_params(mean_params)
    rotmat = rot6d_to_rotmat(torch.from_numpy(mp["pose"]).reshape(24, 6))
    betas = torch.from_numpy(mp["shape"])

    def predict(img: torch.Tensor):
        B = img.shape[0]
        return (rotmat.to(img.device).expand(B, -1, -1, -1).contiguous(),
                betas.to(img.device).expand(B, -1).contiguous())

    return predict


def gender_ids(gender) -> torch.Tensor:
    """A batch's gender as int64 ids: tensor/array of ids, or a sequence of 'm' / 'f' / 'n' strings."""
    if torch.is_tensor(gender):
        return gender.long()
    items = list(gender)
    if items and isinstance(items[0], str):
        ids = {name: GENDER_IDS[code] for name, code in GENDER_CODES.items() if name}
        bad = sorted({g for g in items if g not in ids})
        if bad:
            raise ValueError(f"gender: unknown value(s) {bad}, expected 'm', 'f' or 'n'")
        return torch.tensor([ids[g] for g in items], dtype=torch.long)
    return torch.as_tensor(items, dtype=torch.long).reshape(-1)


def _check_batch(batch: Mapping, i: int) -> int:
    for key in ("img", "pose", "betas", "gender"):
        if key not in batch:
            raise KeyError(f"batch {i}: missing {key!r} (need img, pose, betas, gender)")
    img, pose, betas, gender = batch["img"], batch["pose"], batch["betas"], gender_ids(batch["gender"])
    B = img.shape[0]
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"batch {i}: img has shape {tuple(img.shape)}, expected (B, 3, H, W)")
    if tuple(pose.shape) != (B, 72):
        raise ValueError(f"batch {i}: pose has shape {tuple(pose.shape)}, expected ({B}, 72) axis-angle")
    if tuple(betas.shape) != (B, 10):
        raise ValueError(f"batch {i}: betas has shape {tuple(betas.shape)}, expected ({B}, 10)")
    if tuple(gender.shape) != (B,):
        raise ValueError(f"batch {i}: gender has shape {tuple(gender.shape)}, expected ({B},)")
    return B


def ground_truth(bodies: Bodies, pose: torch.Tensor, betas: torch.Tensor, gender: torch.Tensor):
    """Gendered GT mesh and H36M joints: (vertices (B,V,3), joints (B,17,3)), metres.

    Each model runs on the whole batch and a mask picks its rows (no data-dependent shapes). Which
    models are needed is read from `gender` when it is on the CPU (the loaders' usual case);
    for a device tensor all three run rather than sync the host on every batch."""
    pose, betas = pose.float(), betas.float()
    unknown = (gender != GENDER_MALE) & (gender != GENDER_FEMALE)
    parts = [(bodies.male, gender == GENDER_MALE), (bodies.female, gender == GENDER_FEMALE),
             (bodies.neutral, unknown)]
    if gender.device.type == "cpu":
        parts = [(b, sel) for b, sel in parts if bool(sel.any())]
    device = bodies.neutral.v_template.device
    verts = joints = None
    for body, sel in parts:
        out = body(betas, pose[:, 3:], pose[:, :3], joint_set="h36m_17")
        if verts is None:
            verts, joints = out.vertices, out.joints
        else:
            m = sel.to(device)[:, None, None]
            verts, joints = torch.where(m, out.vertices, verts), torch.where(m, out.joints, joints)
    return verts, joints


@torch.no_grad()
def _metrics(predict: Predictor, img, bodies: Bodies, gt_verts, gt_joints) -> torch.Tensor:
    """(3, B) per-sample MPJPE, PA-MPJPE, PVE (mm) of `predict` against the ground truth."""
    # 1. network
    rotmat, pred_betas = predict(img)
    # 2. SMPL: neutral prediction (the ground truth is gendered)
    pred = bodies.neutral(pred_betas.float(), rotmat[:, 1:].float(), rotmat[:, :1].float(), joint_set="h36m_17")
    # 3. metrics (per sample, mm)
    m = pw3d_metrics(pred.joints, gt_joints, pred.vertices, gt_verts)
    return torch.stack([m[k].double() for k in METRICS])


def evaluate(predict: Predictor, batches: Iterable[Mapping], bodies: Bodies, device=None,
             keep_per_sample: bool = False, sync_timing: bool = False, baseline: Predictor | None = None,
             progress=None) -> EvalResult:
    """Mean MPJPE / PA-MPJPE / PVE (mm) of `predict` over `batches` (see the module docstring).

    baseline: a second predictor scored on the same samples in the same pass (the mean pose), its means
    in `result.baseline`; its time is left out of `seconds` and `images_per_s`. progress: a
    `spin_fast.progress.Progress` in images, advanced after every batch (no host sync)."""
    device = torch.device(device) if device is not None else bodies.neutral.v_template.device
    sums = torch.zeros(len(METRICS), dtype=torch.float64, device=device)
    base_sums = torch.zeros_like(sums)
    base_s = 0.0
    per_sample: dict[str, list] = {m: [] for m in METRICS}
    n = 0
    loader_s = 0.0
    t_start = time.perf_counter()
    it = iter(batches)
    i = 0
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t_data = time.perf_counter()
        loader_s += t_data - t0
        B = _check_batch(batch, i)
        if B == 0:
            continue
        img = batch["img"].to(device, non_blocking=True)
        pose, betas = batch["pose"].to(device), batch["betas"].to(device)
        gender = gender_ids(batch["gender"])  # left where the loader put it (see ground_truth)

        gt_verts, gt_joints = ground_truth(bodies, pose, betas, gender)
        values = _metrics(predict, img, bodies, gt_verts, gt_joints)  # (3, B)
        sums += values.sum(1)
        if baseline is not None:
            t_base = time.perf_counter()
            base_sums += _metrics(baseline, img, bodies, gt_verts, gt_joints).sum(1)
            base_s += time.perf_counter() - t_base
        if keep_per_sample:
            for k, v in zip(METRICS, values):
                per_sample[k].append(v.cpu())
        n += B
        i += 1
        if sync_timing and device.type == "cuda":
            torch.cuda.synchronize(device)
        if progress is not None:
            # host times: on CUDA the network's share is queued work until the final sync
            progress.update(B, phases={"data": t_data - t0, "network+metrics": time.perf_counter() - t_data})
    if n == 0:
        raise ValueError("evaluate: the batches held no samples")
    means = (sums / n).tolist()  # the one host sync: waits for every queued kernel
    seconds = time.perf_counter() - t_start - base_s
    return EvalResult(
        num_samples=n, **dict(zip(METRICS, means)), seconds=seconds, images_per_s=n / seconds,
        loader_seconds=loader_s,
        per_sample={k: torch.cat(v) for k, v in per_sample.items()} if keep_per_sample else {},
        baseline=dict(zip(METRICS, (base_sums / n).tolist())) if baseline is not None else None)


def write_json_atomic(obj: dict, path: str | os.PathLike) -> None:
    """The results as JSON, written atomically (temporary file, fsync, rename)."""
    atomic_write_json(obj, path)

