"""Batched SMPLify for fits in the loop: the fast path.

Same objective and optimizer as SPIN's SMPLify (docs/spin.md "SMPLify"; the straightforward version is
`spin_fast.smplify.reference`), evaluated so that an iteration costs little:
    stage 1  camera translation + global orient. Body pose and betas are fixed, so the joints with
             zero global orient X0 (B, 49, 3) are computed once; turning the root by R moves every
             joint to R X0 + s (I - R) J0 (J0 the rest root joint, s the joint regressor's row sum,
             1 for SMPL's), so an iteration is one Rodrigues and a (B, n, 3) product: no body model.
    stage 2  body pose + betas + global orient through `BodyModel.joints_only` (never the mesh),
             the public ops `reprojection_loss` and `gmm_prior` (Triton on CUDA, torch on CPU), the
             GMM constants computed once.
Both stages keep their parameters in one flat (B, n) tensor and step it with a hand-rolled Adam
(torch.optim.Adam's single-tensor update, elementwise, the bias corrections read from a table by a
step counter tensor), masked per sample. The loop has no host sync: on CUDA one iteration of each
stage is captured in a CUDA graph (cached per batch size) and replayed.

By default (fused=True) the whole fit, both stages and the bookkeeping below, runs as the op
`spin_fast_kernels.smplify.smplify_fit`, whose gradients are derived by hand: plain torch on CPU (about
0.4 of the loop's time at B = 64 on one thread), one Triton launch on CUDA; its result equals the loop's to rounding.
fused=False runs the loop described above, gradients from autograd.

Samples are independent with stop='sample' (the default): the objective is a sum of per-sample
terms and Adam is elementwise, so a sample's fit does not depend on the batch. stop='batch' is
mmhuman3d's rule (`_optimize_stage`, mmhuman3d/models/registrants/smplify.py:381): the ftol test on the
batch's summed loss stops every sample at once, so a fit then depends on its batch. A sample whose inputs are not finite, that has no
keypoint of positive confidence to fit, or whose loss or gradient turns non-finite, is frozen (it
never disturbs the others) and returned with its input fit, inf losses and valid = False.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from spin_fast.body.model import BodyModel, rodrigues
from spin_fast.geometry import device_constant
from spin_fast.constants import (ANGLE_PRIOR_INDICES, ANGLE_PRIOR_SIGNS, FOCAL_LENGTH, IMG_RES,
                                 MMH_ANGLE_PRIOR_INDICES, NUM_JOINTS, NUM_SPIN_JOINTS, SMPLIFY_ANGLE_PRIOR_WEIGHT,
                                 SMPLIFY_DEPTH_WEIGHT, SMPLIFY_LR, SMPLIFY_POSE_PRIOR_WEIGHT,
                                 SMPLIFY_SHAPE_PRIOR_WEIGHT, SMPLIFY_SIGMA, STAGE2_IGNORED_JOINTS,
                                 TORSO_GT, TORSO_OPENPOSE)
from spin_fast.smplify.camera import default_translation
from spin_fast.recipes import Codebase, SMPLifyRecipe, smplify_kwargs
from spin_fast.smplify.result import FLAVORS, STOPS, SMPLifyResult, flavor_defaults
from spin_fast_kernels.gmm_prior import gmm_prior
from spin_fast_kernels.gmm_prior.reference import gmm_constants
from spin_fast_kernels.reprojection import NORMALISED, PIXELS, reprojection_loss
from spin_fast_kernels.smplify import FitConstants, FitOptions, smplify_fit

NUM_KEYPOINTS = NUM_SPIN_JOINTS
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
_GRAPH_CACHE_SIZE = 4
GMM_NORMALISERS = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class _Flavor:
    units: int  # the data term's units, the reprojection op's switch (PIXELS: SPIN's; NORMALISED: mmhuman3d's)
    stage1_all_joints: bool  # mmhuman3d: every joint (ignored ones zeroed) + priors; SPIN: 4 torso joints
    depth_weight: float  # weight of (t_z - t_z_init)^2 in stage 1
    angle_indices: tuple
    angle_minus_one: bool  # (exp(s theta) - 1)^2 instead of exp(s theta)^2


_FLAVORS = {
    "spin": _Flavor(PIXELS, False, SMPLIFY_DEPTH_WEIGHT ** 2, tuple(ANGLE_PRIOR_INDICES), False),
    "mmhuman3d": _Flavor(NORMALISED, True, 0.0, tuple(MMH_ANGLE_PRIOR_INDICES), True),
}


def stage2_keep(keypoints2d: torch.Tensor) -> torch.Tensor:
    """(J,) 0 for the joints SMPLify's stage 2 ignores (STAGE2_IGNORED_JOINTS), 1 elsewhere, in the
    keypoints' dtype on their device (a cached constant: no host-to-device copy)."""
    keep = tuple(0.0 if j in STAGE2_IGNORED_JOINTS else 1.0 for j in range(keypoints2d.shape[1]))
    return device_constant(keep, keypoints2d.device, keypoints2d.dtype)


def fitting_loss(joints: torch.Tensor, cam_t: torch.Tensor, keypoints2d: torch.Tensor, units: int = PIXELS,
                 focal_length: float = FOCAL_LENGTH, img_res: int = IMG_RES,
                 center: torch.Tensor | None = None, kp_norm: float | None = None) -> torch.Tensor:
    """SPIN's get_fitting_loss: SMPLify's stage-2 data term per joint (B, 49) of posed joints
    (B, 49, 3) seen through cam_t (B, 3), against keypoints2d (B, 49, 3) crop pixels + confidence,
    with the joints SMPLify ignores at zero confidence. units: PIXELS (SPIN's: GMoF of pixel residuals,
    weighted conf^2) or NORMALISED (mmhuman3d's: of squared normalised residuals, weighted conf): compare
    only fits scored in the same units. center (B, 2): principal point (default the crop centre);
    kp_norm: S of mmhuman3d's normalised residual 2 r / S (default img_res; mmhuman3d's own is img_res - 1)."""
    conf = keypoints2d[..., 2] * stage2_keep(keypoints2d)
    if center is None:
        center = torch.full((joints.shape[0], 2), img_res / 2.0, dtype=joints.dtype, device=joints.device)
    return reprojection_loss(joints, cam_t, keypoints2d[..., :2], conf, focal_length, center, SMPLIFY_SIGMA,
                             units, float(img_res if kp_norm is None else kp_norm), "none")


def _check_shape(name: str, t, shape: tuple) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"SMPLify: {name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        want = "(" + ", ".join("B" if i == 0 else str(s) for i, s in enumerate(shape)) + ")"
        raise ValueError(f"SMPLify: {name} must be {want} with B = {shape[0]}, got {tuple(t.shape)}")


class SMPLify:
    """Batched SMPLify (see the module docstring).

    body: a BodyModel with the smpl_49 joint set (on the device the fits run on).
    gmm_path / gmm: gmm_08.pkl, or a dict means (K, 69), covars (K, 69, 69), weights (K,).
    stage1_iters / stage2_iters: Adam steps per stage (default 100 + 100 'spin', 50 + 50 'mmhuman3d').
    flavor: 'spin' (SPIN's pixel-space SMPLify) or 'mmhuman3d' (docs/spin.md).
    ftol: relative loss change below which a sample stops (default 1e-4 for 'mmhuman3d', off for 'spin').
    stop: what the ftol test reads and stops: 'sample' (default: each sample's own loss, the sample alone;
    samples stay independent of their batch) or 'batch' (mmhuman3d's `_optimize_stage`: the summed loss
    of the samples still moving; when it barely changes, every sample stops).
    kp_norm: S of the 'mmhuman3d' objective's normalised residual e = 2 r / S (default img_res; mmhuman3d's
    `_compute_loss` uses img_res - 1 = 223, which `spin_fast.recipes` sets). Unused by 'spin'.
    cuda_graph: capture each stage's iteration in a CUDA graph when the tensors are on CUDA (fused=False).
    gmm_normaliser: 'float32' (default: the GMM's per-component normaliser held in float32 before its
    log, as SPIN's and mmhuman3d's prior.py do) or 'float64' (exact).
    fused: run the whole fit as the `smplify_fit` op (gradients by hand: the torch reference on CPU,
    one Triton launch on CUDA); False runs the autograd loop below (CUDA graphs on CUDA).
    """

    def __init__(self, body: BodyModel, gmm_path=None, *, gmm: dict | None = None, stage1_iters: int | None = None,
                 stage2_iters: int | None = None, flavor: Codebase = "spin", ftol: float | None = None,
                 lr: float = SMPLIFY_LR, focal_length: float = FOCAL_LENGTH, img_res: int = IMG_RES,
                 device=None, cuda_graph: bool = True, gmm_normaliser: str = "float32", fused: bool = True,
                 stop: str = "sample", kp_norm: float | None = None):
        if flavor not in FLAVORS:
            raise ValueError(f"SMPLify: flavor must be one of {FLAVORS}, got {flavor!r}")
        if stop not in STOPS:
            raise ValueError(f"SMPLify: stop must be one of {STOPS}, got {stop!r}")
        self.stop = stop
        self.kp_norm = float(img_res if kp_norm is None else kp_norm)
        if not self.kp_norm > 0:
            raise ValueError(f"SMPLify: kp_norm must be > 0, got {kp_norm!r}")
        if gmm_normaliser not in GMM_NORMALISERS:
            raise ValueError(f"SMPLify: gmm_normaliser must be one of {tuple(GMM_NORMALISERS)}, got {gmm_normaliser!r}")
        if "smpl_49" not in body.joint_sets:
            raise ValueError("SMPLify: the body model has no smpl_49 joint set (give it J_regressor_extra)")
        self.stage1_iters, self.stage2_iters, self.ftol = flavor_defaults(flavor, stage1_iters, stage2_iters, ftol)
        if self.stage1_iters < 0 or self.stage2_iters < 0:
            raise ValueError(f"SMPLify: iterations must be >= 0, got {self.stage1_iters}, {self.stage2_iters}")
        self.flavor = flavor
        self.cfg = _FLAVORS[flavor]
        self.lr, self.focal_length, self.img_res = float(lr), float(focal_length), img_res
        self.cuda_graph = cuda_graph
        self.body = body
        self.dtype = body.v_template.dtype
        self.device = body.v_template.device  # the fits run where the body model lives
        if device is not None:
            asked = torch.device(device)
            if asked.type != self.device.type or (asked.index is not None and asked != self.device):
                raise ValueError(f"SMPLify: body model is on {self.device}, fits asked on {asked} (move the body)")
        if gmm is None:
            if gmm_path is None:
                raise ValueError("SMPLify: give gmm_path (gmm_08.pkl) or gmm (dict means, covars, weights)")
            from spin_fast.body.io import load_gmm

            gmm = load_gmm(gmm_path)
        kw = dict(dtype=self.dtype, device=self.device)
        # 1. Constants, once: GMM (float64 inverse/logdet, the normaliser in gmm_normaliser's precision,
        #    then cast), angle prior, joint row sums.
        self.gmm = tuple(c.to(self.device) for c in gmm_constants(
            *(torch.as_tensor(np.asarray(gmm[k])) for k in ("means", "covars", "weights")), dtype=self.dtype,
            normaliser_dtype=GMM_NORMALISERS[gmm_normaliser]))
        self.angle_index = torch.tensor(self.cfg.angle_indices, device=self.device)
        self.angle_signs = torch.tensor(ANGLE_PRIOR_SIGNS, **kw)
        stage2_mask = torch.ones(NUM_KEYPOINTS, **kw)
        stage2_mask[STAGE2_IGNORED_JOINTS] = 0.0
        self.stage2_mask = stage2_mask
        vertex_rows = body.smpl_49_regressor.sum(1)  # how much of the rest root each joint carries (1: rigid)
        self.row_sums = torch.cat([torch.ones(NUM_JOINTS, **kw), vertex_rows.to(**kw)])[body.smpl_49_index]
        self.torso = torch.tensor([TORSO_OPENPOSE, TORSO_GT], device=self.device)  # (2, 4)
        self._graphs: dict = {}
        self._tables: dict = {}  # iterations -> Adam's (step_size, bc2_sqrt) on the device
        self._graphs_failed = False
        self.fused = bool(fused)
        if self.fused:
            self._fit_consts = FitConstants(
                parents=tuple(body.parents_list), J_template=body.J_template.to(**kw),
                J_shapedirs=body.J_shapedirs.to(**kw), coeffs=body.smpl_49_coeffs.to(**kw),
                bone_weight=body.smpl_49_bone_weight.to(**kw), pair_joint=body.smpl_49_pair_joint,
                pair_bone=body.smpl_49_pair_bone, num_vertex_joints=body.smpl_49_regressor.shape[0],
                joint_index=body.smpl_49_index, row_sums=self.row_sums, gmm_means=self.gmm[0],
                gmm_precisions=self.gmm[1], gmm_nll=self.gmm[2], angle_index=self.angle_index,
                angle_signs=self.angle_signs, stage2_keep=self.stage2_mask, torso=self.torso)
            self._fit_opts = FitOptions(
                stage1_iters=self.stage1_iters, stage2_iters=self.stage2_iters, lr=self.lr,
                focal_length=self.focal_length, img_res=float(img_res), kp_norm=self.kp_norm,
                units=self.cfg.units, sigma=SMPLIFY_SIGMA, stage1_all_joints=self.cfg.stage1_all_joints,
                depth_weight=self.cfg.depth_weight, angle_minus_one=self.cfg.angle_minus_one,
                pose_prior_weight=SMPLIFY_POSE_PRIOR_WEIGHT ** 2, angle_prior_weight=SMPLIFY_ANGLE_PRIOR_WEIGHT ** 2,
                shape_prior_weight=SMPLIFY_SHAPE_PRIOR_WEIGHT ** 2, ftol=self.ftol, batch_stop=self.stop == "batch",
                beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], eps=ADAM_EPS)

    @classmethod
    def from_recipe(cls, recipe: SMPLifyRecipe, body: BodyModel, gmm_path=None, **options) -> "SMPLify":
        """The fitter of a SMPLify recipe (spin_fast.recipes): its objective, iterations, ftol and stop
        rule, keypoint normaliser; `options` are the rest of the constructor's arguments (gmm, device, ...)."""
        return cls(body, gmm_path, **smplify_kwargs(recipe), **options)

    # --- pieces of the objective --------------------------------------------------------------------
    def priors(self, body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """(B,) 4.78^2 GMM + 15.2^2 angle prior + 5^2 |betas|^2."""
        bent = torch.exp(body_pose.index_select(1, self.angle_index) * self.angle_signs)
        angle = ((bent - 1) if self.cfg.angle_minus_one else bent).square().sum(-1)
        return (SMPLIFY_POSE_PRIOR_WEIGHT ** 2 * gmm_prior(body_pose, *self.gmm)
                + SMPLIFY_ANGLE_PRIOR_WEIGHT ** 2 * angle
                + SMPLIFY_SHAPE_PRIOR_WEIGHT ** 2 * betas.square().sum(-1))

    def data_term(self, joints, cam_t, kp, conf, center, reduction: str = "sum") -> torch.Tensor:
        """Stage-2 robust reprojection term: (B,) or per joint (B, J) with reduction='none'."""
        return reprojection_loss(joints, cam_t, kp, conf, self.focal_length, center, SMPLIFY_SIGMA,
                                 self.cfg.units, self.kp_norm, reduction)

    def joint_loss(self, pose: torch.Tensor, betas: torch.Tensor, cam_t: torch.Tensor, keypoints2d: torch.Tensor,
                   center: torch.Tensor | None = None) -> torch.Tensor:
        """The stage-2 data term per joint (B, 49) of any fit, in this flavor's units (the number
        `joint_loss` of the result holds; compare fits with the same flavor)."""
        B = pose.shape[0]
        with torch.no_grad():
            joints = self.body.joints_only(betas, pose[:, 3:], pose[:, :3], joint_set="smpl_49")
            kp = keypoints2d.to(torch.promote_types(keypoints2d.dtype, self.dtype))  # the confidence in the fit's precision
            return fitting_loss(joints, cam_t, kp, self.cfg.units, self.focal_length, self.img_res, self._center(center, B),
                                self.kp_norm)

    def _center(self, center, B):
        if center is None:
            return torch.full((B, 2), self.img_res / 2.0, dtype=self.dtype, device=self.device)
        _check_shape("center", center, (B, 2))
        return center.to(dtype=self.dtype, device=self.device)

    # --- one iteration of each stage (state tensors updated in place; graph-capturable) ---------------
    def _stage1_step(self, st: dict) -> None:
        x = st["x"]  # (B, 6) = [global orient | camera translation]
        with torch.enable_grad():
            R = rodrigues(x[:, :3])  # (B, 3, 3)
            joints = torch.einsum("bij,bnj->bni", R, st["X0c"]) + st["sJ0"]  # R (X0 - s J0) + s J0
            t = x[:, 3:]
            total = reprojection_loss(joints, t, st["kp"], st["conf"], self.focal_length, st["center"],
                                      st["sigma"], st["units"], self.kp_norm, "sum") + st["const"]
            if self.cfg.depth_weight:
                total = total + self.cfg.depth_weight * (t[:, 2] - st["tz0"]).square()
            (grad,) = torch.autograd.grad(total.sum(), x)
        self._adam(st, grad, total)

    def _stage2_step(self, st: dict) -> None:
        x = st["x"]  # (B, 82) = [global orient | body pose | betas]
        with torch.enable_grad():
            go, body_pose, betas = x[:, :3], x[:, 3:72], x[:, 72:]
            joints = self.body.joints_only(betas, body_pose, go, joint_set="smpl_49")
            total = self.data_term(joints, st["cam_t"], st["kp"], st["conf"], st["center"]) + self.priors(body_pose, betas)
            (grad,) = torch.autograd.grad(total.sum(), x)
        self._adam(st, grad, total)

    def _adam(self, st: dict, grad: torch.Tensor, total: torch.Tensor) -> None:
        """torch.optim.Adam's update (single-tensor, no weight decay) on the rows still active."""
        b1, b2 = ADAM_BETAS
        with torch.no_grad():
            x, m, v, active = st["x"], st["m"], st["v"], st["active"]
            ok = torch.isfinite(grad).all(-1) & torch.isfinite(total)
            st["diverged"].logical_or_(active & ~ok)
            move = active & ok
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            k = st["k"]  # (1,) step index: bias corrections from tables, no Python number per step
            denom = (v.sqrt() / st["bc2_sqrt"].index_select(0, k)).add_(ADAM_EPS)
            step = m / denom * st["step_size"].index_select(0, k)
            x.sub_(torch.where(move[:, None], step, torch.zeros_like(step)))
            k.add_(1)
            st["steps"].add_(move)
            if self.ftol > 0 and self.stop == "batch":  # mmhuman3d: the batch's summed loss before the step
                prev = st["prev_sum"]
                cur = torch.where(move, total, torch.zeros_like(total)).sum().reshape(1)
                rel = (prev - cur).abs() / torch.clamp(torch.maximum(prev.abs(), cur.abs()), min=1.0)
                active.logical_and_(~(rel < self.ftol))
                prev.copy_(cur)
            elif self.ftol > 0:  # each sample on its own loss before the step
                prev = st["prev"]
                rel = (prev - total).abs() / torch.clamp(torch.maximum(prev.abs(), total.abs()), min=1.0)
                active.logical_and_(~(rel < self.ftol))
                prev.copy_(total)
            active.logical_and_(ok)

    def _adam_tables(self, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam's step sizes lr / (1 - b1^t) and bias corrections sqrt(1 - b2^t), t = 1..iters, on the
        device; built once per length (a host-to-device copy each call would stall every step)."""
        tables = self._tables.get(iters)
        if tables is None:
            b1, b2 = ADAM_BETAS
            t = np.arange(1, max(iters, 1) + 1, dtype=np.float64)
            kw = dict(dtype=self.dtype, device=self.device)
            tables = self._tables[iters] = (torch.tensor(self.lr / (1 - b1 ** t), **kw),
                                            torch.tensor(np.sqrt(1 - b2 ** t), **kw))
        return tables

    def _adam_state(self, x: torch.Tensor, active: torch.Tensor, iters: int) -> dict:
        kw = dict(dtype=self.dtype, device=self.device)
        step_size, bc2_sqrt = self._adam_tables(iters)
        return {
            "x": x.detach().clone().requires_grad_(True), "m": torch.zeros_like(x), "v": torch.zeros_like(x),
            "k": torch.zeros(1, dtype=torch.long, device=self.device),
            "step_size": step_size, "bc2_sqrt": bc2_sqrt,
            "active": active.clone(), "diverged": torch.zeros_like(active),
            "steps": torch.zeros(x.shape[0], dtype=torch.long, device=self.device),
            "prev": torch.full((x.shape[0],), float("nan"), **kw),
            "prev_sum": torch.full((1,), float("nan"), **kw),
        }

    # --- running a stage: eager, or a CUDA graph replayed -----------------------------------------------
    def _run(self, name: str, step: Callable, st: dict, iters: int) -> dict:
        if iters == 0:
            return st
        if self._use_graph(st["x"]):
            try:
                return self._run_graph(name, step, st, iters)
            except Exception as e:  # capture unsupported here: fall back to eager for good
                self._graphs_failed = True
                self._graphs.clear()
                warnings.warn(f"SMPLify: CUDA graph capture failed ({type(e).__name__}: {e}); running eagerly")
        for _ in range(iters):
            step(st)
        return st

    def _use_graph(self, x: torch.Tensor) -> bool:
        return (self.cuda_graph and not self._graphs_failed and x.is_cuda
                and hasattr(torch.cuda, "CUDAGraph") and hasattr(torch.cuda, "graph"))

    def _run_graph(self, name: str, step: Callable, st: dict, iters: int) -> dict:
        """Replay one captured iteration `iters` times. The graph reads and writes fixed tensors,
        so each call copies its inputs into them; the step counter lives in one, so no host value
        changes between replays. Cached per (stage, tensor shapes, table length)."""
        key = (name,) + tuple((k, tuple(v.shape), v.dtype) for k, v in st.items() if isinstance(v, torch.Tensor))
        entry = self._graphs.get(key)
        if entry is None:
            static = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
            static["x"].requires_grad_(True)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up (compiles the Triton kernels, fills autograd caches)
                for _ in range(min(3, iters)):  # the step tables hold `iters` entries
                    step(static)
            torch.cuda.current_stream().wait_stream(side)
            self._load(static, st)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step(static)
            if len(self._graphs) >= _GRAPH_CACHE_SIZE:
                self._graphs.pop(next(iter(self._graphs)))
            entry = self._graphs[key] = (static, graph)
        static, graph = entry
        self._load(static, st)
        for _ in range(iters):
            graph.replay()
        return {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in static.items()}

    @staticmethod
    def _load(static: dict, st: dict) -> None:
        with torch.no_grad():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    static[k].copy_(v)

    # --- the fit ----------------------------------------------------------------------------------------
    def __call__(self, init_pose: torch.Tensor, init_betas: torch.Tensor, init_cam_t: torch.Tensor,
                 keypoints2d: torch.Tensor, center: torch.Tensor | None = None) -> SMPLifyResult:
        """init_pose (B, 72) axis-angle (global orient first), init_betas (B, 10), init_cam_t (B, 3),
        keypoints2d (B, 49, 3) crop pixels (0..img_res) + confidence, center (B, 2) principal point
        (default the crop centre). A keypoint whose coordinates or confidence are not finite counts as
        confidence 0. Returns SMPLifyResult (fit, per-joint and total stage-2 losses, validity)."""
        if not isinstance(init_pose, torch.Tensor) or init_pose.dim() != 2:
            raise ValueError(f"SMPLify: init_pose must be a (B, 72) tensor, got "
                             f"{tuple(init_pose.shape) if isinstance(init_pose, torch.Tensor) else type(init_pose).__name__}")
        B = init_pose.shape[0]
        nb = self.body.num_betas
        _check_shape("init_pose", init_pose, (B, 72))
        _check_shape("init_betas", init_betas, (B, nb))
        _check_shape("init_cam_t", init_cam_t, (B, 3))
        _check_shape("keypoints2d", keypoints2d, (B, NUM_KEYPOINTS, 3))
        kw = dict(dtype=self.dtype, device=self.device)
        with torch.no_grad():
            pose_in, betas_in, cam_in = (t.detach().to(**kw) for t in (init_pose, init_betas, init_cam_t))
            kp_in = keypoints2d.detach().to(**kw)
            center = self._center(center, B)
            if self.fused:
                out = smplify_fit(self._fit_consts, self._fit_opts, pose_in, betas_in, cam_in, kp_in, center)
                return SMPLifyResult(pose=out.pose, betas=out.betas, cam_t=out.cam_t, joint_loss=out.joint_loss,
                                     total_loss=out.total_loss, valid=out.valid, num_invalid=(~out.valid).sum(),
                                     iterations=out.iterations)

            # 1. Inputs: a bad keypoint is an invisible one; a bad sample runs on safe values, frozen.
            kp_ok = torch.isfinite(kp_in).all(-1)
            conf_raw = torch.where(kp_ok, kp_in[..., 2], torch.zeros_like(kp_in[..., 2]))
            kp = torch.where(kp_ok[..., None], kp_in[..., :2], torch.zeros_like(kp_in[..., :2]))
            conf2 = conf_raw * self.stage2_mask
            valid_in = (torch.isfinite(pose_in).all(-1) & torch.isfinite(betas_in).all(-1)
                        & torch.isfinite(cam_in).all(-1) & torch.isfinite(center).all(-1)
                        & (conf2 != 0).any(-1))
            pose = torch.where(valid_in[:, None], pose_in, torch.zeros_like(pose_in))
            betas = torch.where(valid_in[:, None], betas_in, torch.zeros_like(betas_in))
            cam_t = torch.where(valid_in[:, None], cam_in, default_translation(B, self.focal_length, self.img_res, **kw))
            center = torch.where(valid_in[:, None], center, torch.full_like(center, self.img_res / 2.0))
            body_pose = pose[:, 3:]

            # 2. Stage 1 set-up: joints with zero global orient, once.
            X0 = self.body.joints_only(betas, body_pose, torch.zeros_like(pose[:, :3]), joint_set="smpl_49")
            J0 = self.body.J_template[0] + torch.einsum("bs,cs->bc", betas, self.body.J_shapedirs[0])  # (B, 3)
            st1 = {"center": center, "tz0": cam_t[:, 2].clone()}
            if self.cfg.stage1_all_joints:
                s = self.row_sums.expand(B, -1)
                st1.update(kp=kp, conf=conf2, const=self.priors(body_pose, betas), sigma=SMPLIFY_SIGMA,
                           units=self.cfg.units)
            else:  # SPIN: OpenPose hips/shoulders when all four are visible, else the GT ones; unweighted squares
                use_gt = (conf_raw.index_select(1, self.torso[0]) <= 0).any(-1).long()
                idx = self.torso[use_gt]  # (B, 4)
                X0 = X0.gather(1, idx[..., None].expand(-1, -1, 3))
                s = self.row_sums[idx]
                st1.update(kp=kp.gather(1, idx[..., None].expand(-1, -1, 2)), conf=torch.ones_like(s),
                           const=torch.zeros(B, **kw), sigma=math.inf, units=PIXELS)
            sJ0 = s[..., None] * J0[:, None]
            st1.update(X0c=X0 - sJ0, sJ0=sJ0)
            st1.update(self._adam_state(torch.cat([pose[:, :3], cam_t], 1), valid_in, self.stage1_iters))
        st1 = self._run("stage1", self._stage1_step, st1, self.stage1_iters)

        with torch.no_grad():
            go, cam_t = st1["x"][:, :3].detach(), st1["x"][:, 3:].detach()
            st2 = {"center": center, "cam_t": cam_t, "kp": kp, "conf": conf2}
            # every sample that did not diverge fits its body (an ftol stop in stage 1 ends stage 1 only)
            st2.update(self._adam_state(torch.cat([go, body_pose, betas], 1), valid_in & ~st1["diverged"],
                                        self.stage2_iters))
        st2 = self._run("stage2", self._stage2_step, st2, self.stage2_iters)

        with torch.no_grad():
            # 3. The result, its per-joint loss (SPIN's get_fitting_loss) and its stage-2 objective.
            x = st2["x"].detach()
            pose_out, betas_out = x[:, :72], x[:, 72:]
            joints = self.body.joints_only(betas_out, x[:, 3:72], x[:, :3], joint_set="smpl_49")
            joint_loss = self.data_term(joints, cam_t, kp, conf2, center, "none")
            total = joint_loss.sum(-1) + self.priors(x[:, 3:72], betas_out)
            valid = (valid_in & ~st1["diverged"] & ~st2["diverged"] & torch.isfinite(total)
                     & torch.isfinite(x).all(-1) & torch.isfinite(cam_t).all(-1))
            keep = valid[:, None]
            inf = torch.full((), float("inf"), **kw)  # a fill, not a host-to-device copy
            return SMPLifyResult(
                pose=torch.where(keep, pose_out, pose_in), betas=torch.where(keep, betas_out, betas_in),
                cam_t=torch.where(keep, cam_t, cam_in),
                joint_loss=torch.where(keep, joint_loss, inf), total_loss=torch.where(valid, total, inf),
                valid=valid, num_invalid=(~valid).sum(), iterations=torch.stack([st1["steps"], st2["steps"]], 1))
