"""Evaluation on the SPIN test sets (docs/spin.md "Evaluation on 3DPW"; SPIN eval.py, mmhuman3d
HumanImageDataset.evaluate and core/evaluation/eval_utils.py), read top to bottom.

    1. network:  img -> predicted rotation matrices (24) and betas           (bf16 autocast optional)
    2. SMPL:     neutral model of the prediction -> vertices -> J_regressor_h36m (17 joints)   fp32
                 ground truth, protocol 'pw3d': male model for gender 'm' (0), female for 'f' (1) -> the
                 same path; samples of unknown gender (-1, not in 3DPW) use the neutral model;
                 protocols 'h36m', 'mpi_inf_3dhp': the batch's keypoints3d (its 24 ground-truth joints)
    3. metrics:  per sample, pelvis-centred; 'pw3d': 14 joints, MPJPE, similarity-Procrustes PA-MPJPE,
                 PVE (mm); 'h36m': 14 joints, MPJPE, PA-MPJPE; 'mpi_inf_3dhp': 17 joints, MPJPE,
                 PA-MPJPE and 3D PCK / AUC with their PA variants (% of the visible joints, pooled)
                 (`spin_fast.metrics.keypoint_metrics` says which joints and what a missing one does)
Per-sample sums stay on the device; the one host sync is at the end (and per batch only when
`sync_timing` asks for exact per-batch timing on CUDA).

`evaluate(predict, batches, bodies, protocol=...)` runs over any iterable of batch dicts holding img
(B,3,224,224) normalised and, for 'pw3d', pose (B,72) axis-angle, betas (B,10) and gender (B,) (0 male,
1 female, -1 unknown); for the others keypoints3d (B,49,4) (SPIN's 49 joints, metres + confidence);
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
from spin_fast.constants import GENDER_CODES, GENDER_IDS, NUM_OPENPOSE_JOINTS
from spin_fast.metrics import keypoint_metrics, pw3d_metrics
from spin_fast.geometry import rot6d_to_rotmat

METRICS = ("mpjpe", "pa_mpjpe", "pve")  # the 3DPW protocol's
# Each protocol's metrics, in order (spin_fast.data.datasets.PROTOCOLS), and their units.
PROTOCOL_METRICS = {"pw3d": METRICS, "h36m": ("mpjpe", "pa_mpjpe"),
                    "mpi_inf_3dhp": ("mpjpe", "pa_mpjpe", "3dpck", "pa_3dpck", "3dauc", "pa_3dauc")}
PERCENT_METRICS = ("3dpck", "pa_3dpck", "3dauc", "pa_3dauc")  # % of the visible joints, pooled over samples
ALL_METRICS = ("mpjpe", "pa_mpjpe", "pve") + PERCENT_METRICS  # (the order of the printed table)
UNITS = {k: "%" if k in PERCENT_METRICS else "mm" for k in ALL_METRICS}
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
    metrics: dict         # metric -> dataset mean: mm, or % for PERCENT_METRICS (PROTOCOL_METRICS[protocol])
    seconds: float        # wall time of the whole loop, data loading included
    images_per_s: float   # num_samples / seconds
    loader_seconds: float = 0.0  # time spent waiting for the next batch
    protocol: str = "pw3d"
    per_sample: dict = field(default_factory=dict, repr=False)  # metric -> (N,) CPU tensor, if kept
    baseline: dict | None = None  # metric -> mean of the `baseline` predictor on the same samples

    @property
    def mpjpe(self) -> float:
        return self.metrics["mpjpe"]

    @property
    def pa_mpjpe(self) -> float:
        return self.metrics["pa_mpjpe"]

    @property
    def pve(self) -> float | None:
        return self.metrics.get("pve")

    def summary(self) -> dict:
        """The metrics at the top level beside num_samples, the timings, protocol and baseline."""
        d = asdict(self)
        d.pop("per_sample")
        return {"num_samples": d.pop("num_samples"), **d.pop("metrics"), **d}


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


def _check_batch(batch: Mapping, i: int, protocol: str = "pw3d") -> int:
    need = ("img", "pose", "betas", "gender") if protocol == "pw3d" else ("img", "keypoints3d")
    for key in need:
        if key not in batch:
            raise KeyError(f"batch {i}: missing {key!r} (protocol {protocol!r} needs {', '.join(need)})")
    img = batch["img"]
    B = img.shape[0]
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"batch {i}: img has shape {tuple(img.shape)}, expected (B, 3, H, W)")
    if protocol != "pw3d":
        kp = batch["keypoints3d"]
        if tuple(kp.shape) != (B, 49, 4):
            raise ValueError(f"batch {i}: keypoints3d has shape {tuple(kp.shape)}, expected ({B}, 49, 4)")
        return B
    pose, betas, gender = batch["pose"], batch["betas"], gender_ids(batch["gender"])
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


@torch.no_grad()
def _keypoint_metrics(predict: Predictor, img, bodies: Bodies, gt_j24, protocol: str) -> torch.Tensor:
    """(K, B) per-sample values of PROTOCOL_METRICS[protocol] (PCK / AUC as joint counts), plus for
    'mpi_inf_3dhp' a last row: the visible joints."""
    # 1. network
    rotmat, pred_betas = predict(img)
    # 2. SMPL: neutral prediction -> H36M joints (as SPIN's eval.py: J_regressor_h36m of the vertices)
    pred = bodies.neutral(pred_betas.float(), rotmat[:, 1:].float(), rotmat[:, :1].float(), joint_set="h36m_17")
    # 3. metrics against the file's 3D joints (per sample)
    three_dhp = protocol == "mpi_inf_3dhp"
    m = keypoint_metrics(pred.joints, gt_j24, joints=17 if three_dhp else 14, pck=three_dhp)
    return torch.stack([m[k] for k in PROTOCOL_METRICS[protocol] + (("visible",) if three_dhp else ())])


def evaluate(predict: Predictor, batches: Iterable[Mapping], bodies: Bodies, device=None,
             keep_per_sample: bool = False, sync_timing: bool = False, baseline: Predictor | None = None,
             progress=None, protocol: str = "pw3d") -> EvalResult:
    """The metrics of `protocol` (PROTOCOL_METRICS) of `predict` over `batches` (see the module docstring).

    baseline: a second predictor scored on the same samples in the same pass (the mean pose), its means
    in `result.baseline`; its time is left out of `seconds` and `images_per_s`. progress: a
    `spin_fast.progress.Progress` in images, advanced after every batch (no host sync)."""
    if protocol not in PROTOCOL_METRICS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOL_METRICS)}, got {protocol!r}")
    names = PROTOCOL_METRICS[protocol]
    rows = len(names) + (protocol == "mpi_inf_3dhp")  # + the visible joints
    device = torch.device(device) if device is not None else bodies.neutral.v_template.device
    sums = torch.zeros(rows, dtype=torch.float64, device=device)
    base_sums = torch.zeros_like(sums)
    base_s = 0.0
    kept: list[torch.Tensor] = []
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
        B = _check_batch(batch, i, protocol)
        if B == 0:
            continue
        img = batch["img"].to(device, non_blocking=True)
        if protocol == "pw3d":
            pose, betas = batch["pose"].to(device), batch["betas"].to(device)
            gender = gender_ids(batch["gender"])  # left where the loader put it (see ground_truth)
            gt_verts, gt_joints = ground_truth(bodies, pose, betas, gender)
            score = lambda p: _metrics(p, img, bodies, gt_verts, gt_joints)  # noqa: E731
        else:
            gt_j24 = batch["keypoints3d"][:, NUM_OPENPOSE_JOINTS:].to(device)
            score = lambda p: _keypoint_metrics(p, img, bodies, gt_j24, protocol)  # noqa: E731
        values = score(predict)  # (rows, B)
        sums += values.sum(1)
        if baseline is not None:
            t_base = time.perf_counter()
            base_sums += score(baseline).sum(1)
            base_s += time.perf_counter() - t_base
        if keep_per_sample:
            kept.append(values.cpu())
        n += B
        i += 1
        if sync_timing and device.type == "cuda":
            torch.cuda.synchronize(device)
        if progress is not None:
            # host times: on CUDA the network's share is queued work until the final sync
            progress.update(B, phases={"data": t_data - t0, "network+metrics": time.perf_counter() - t_data})
    if n == 0:
        raise ValueError("evaluate: the batches held no samples")
    means = _means(names, sums.tolist(), n)  # the one host sync: waits for every queued kernel
    seconds = time.perf_counter() - t_start - base_s
    per_sample = {}
    if keep_per_sample:
        values = torch.cat(kept, 1)
        per_sample = {k: (100 * values[j] / values[-1] if k in PERCENT_METRICS else values[j])
                      for j, k in enumerate(names)}
    return EvalResult(
        num_samples=n, metrics=means, seconds=seconds, images_per_s=n / seconds, loader_seconds=loader_s,
        protocol=protocol, per_sample=per_sample,
        baseline=_means(names, base_sums.tolist(), n) if baseline is not None else None)


def _means(names, sums: list[float], n: int) -> dict[str, float]:
    """Dataset values from the summed rows: mm metrics over the samples, PCK / AUC over the visible joints
    (the last row), as percentages (nan when no joint is visible)."""
    visible = sums[-1]
    return {k: (100 * s / visible if visible > 0 else float("nan")) if k in PERCENT_METRICS else s / n
            for k, s in zip(names, sums)}


def write_json_atomic(obj: dict, path: str | os.PathLike) -> None:
    """The results as JSON, written atomically (temporary file, fsync, rename)."""
    atomic_write_json(obj, path)

