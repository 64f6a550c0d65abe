"""SMPLify the straightforward way: the oracle for `spin_fast.smplify.fit` and the baseline of its bench.

SPIN's `smplify/smplify.py` + `smplify/losses.py` + `smplify/prior.py`, batched as SPIN runs it:
smplx.SMPL's full mesh forward every iteration (SPIN's SMPL subclass: 45 smplx joints +
J_regressor_extra . vertices, gathered to smpl_49), plain torch losses, `torch.optim.Adam` over the
parameter tensors, a fresh optimizer per stage. Nothing here is shared with the fast path: the GMM is
SPIN's MaxMixturePrior (numpy inverse and determinants), the projection and robust loss are written
out again.

flavor 'mmhuman3d' is mmhuman3d's SMPLify with the SPIN config (docs/spin.md): projection normalised to
[-1, 1], GMoF on the squared residual, linear confidence, angle prior (exp(s theta) - 1)^2 at
body_pose[55, 58, 12, 15], stage 1 on all joints with every prior and no depth term, the ignored
joints zeroed in both stages, ftol early stop. stop='batch' is mmhuman3d's rule (`_optimize_stage`:
the whole batch stops once the summed loss barely changes); stop='sample' (the default) stops each
sample on its own loss (frozen: its parameters stop moving), which keeps samples independent and
equals running every sample alone. kp_norm is the S of the normalised residual 2 r / S (mmhuman3d's
`_compute_loss`: img_res - 1).
"""
from __future__ import annotations

import numpy as np
import torch

from spin_fast.constants import (ANGLE_PRIOR_INDICES, ANGLE_PRIOR_SIGNS, FOCAL_LENGTH, IMG_RES,
                                 MMH_ANGLE_PRIOR_INDICES, SMPL_54_TO_49, SMPLIFY_ANGLE_PRIOR_WEIGHT,
                                 SMPLIFY_DEPTH_WEIGHT, SMPLIFY_LR, SMPLIFY_POSE_PRIOR_WEIGHT,
                                 SMPLIFY_SHAPE_PRIOR_WEIGHT, SMPLIFY_SIGMA, STAGE2_IGNORED_JOINTS,
                                 TORSO_GT, TORSO_OPENPOSE)
from spin_fast.body.smplx_reference import smplx_body
from spin_fast.recipes import Codebase
from spin_fast.smplify.result import FLAVORS, STOPS, SMPLifyResult, flavor_defaults


class MaxMixturePrior(torch.nn.Module):
    """SPIN's smplify/prior.py MaxMixturePrior.merged_log_likelihood, from a load_gmm dict."""

    def __init__(self, gmm: dict, dtype: torch.dtype = torch.float32):
        super().__init__()
        means = np.asarray(gmm["means"], dtype=np.float64)
        covs = np.asarray(gmm["covars"], dtype=np.float64)
        weights = np.asarray(gmm["weights"], dtype=np.float64)
        precisions = np.stack([np.linalg.inv(c) for c in covs])
        sqrdets = np.array([np.sqrt(np.linalg.det(c)) for c in covs])
        const = (2 * np.pi) ** (means.shape[1] / 2.0)
        nll_weights = weights / (const * (sqrdets / sqrdets.min()))
        self.register_buffer("means", torch.tensor(means, dtype=dtype))
        self.register_buffer("precisions", torch.tensor(precisions, dtype=dtype))
        self.register_buffer("nll_weights", torch.tensor(nll_weights, dtype=dtype)[None])

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (B, 69) -> (B,) min over components of 1/2 d^T P d - log(nll_weight)."""
        diff = pose[:, None, :] - self.means  # (B, K, 69)
        prec_diff = torch.einsum("mij,bmj->bmi", self.precisions, diff)
        quad = (prec_diff * diff).sum(-1)
        return (0.5 * quad - torch.log(self.nll_weights)).min(dim=1).values


def gmof(x: torch.Tensor, sigma: float) -> torch.Tensor:
    x2 = x ** 2
    return sigma ** 2 * x2 / (sigma ** 2 + x2)


def project(joints: torch.Tensor, cam_t: torch.Tensor, focal_length: float, center: torch.Tensor) -> torch.Tensor:
    """SPIN's perspective_projection with identity rotation: (B, J, 3) -> pixels (B, J, 2)."""
    p = joints + cam_t[:, None]
    p = p / p[..., 2:3]
    return focal_length * p[..., :2] + center[:, None]


class SMPLifyReference:
    """SPIN's SMPLify class, for a batch (see the module docstring)."""

    def __init__(self, smpl: dict, j_regressor_extra: np.ndarray, gmm: dict, stage1_iters: int | None = None,
                 stage2_iters: int | None = None, flavor: Codebase = "spin", ftol: float | None = None,
                 lr: float = SMPLIFY_LR, focal_length: float = FOCAL_LENGTH, img_res: int = IMG_RES,
                 device=None, dtype: torch.dtype = torch.float32, stop: str = "sample", kp_norm: float | None = None):
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        if stop not in STOPS:
            raise ValueError(f"stop must be one of {STOPS}, got {stop!r}")
        self.stop = stop
        self.kp_norm = float(img_res if kp_norm is None else kp_norm)
        self.flavor = flavor
        self.stage1_iters, self.stage2_iters, self.ftol = flavor_defaults(flavor, stage1_iters, stage2_iters, ftol)
        self.lr, self.focal_length, self.img_res = lr, float(focal_length), img_res
        self.dtype = dtype
        self.smpl = smplx_body(smpl, dtype).to(device)
        self.j_regressor_extra = torch.tensor(np.asarray(j_regressor_extra), dtype=dtype, device=device)
        self.prior = MaxMixturePrior(gmm, dtype).to(device)

    # --- model and losses ---------------------------------------------------------------------------
    def joints(self, pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """SPIN's SMPL.forward: 45 smplx joints + J_regressor_extra . vertices -> smpl_49 (B, 49, 3)."""
        out = self.smpl(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3])
        extra = torch.einsum("jv,bvc->bjc", self.j_regressor_extra, out.vertices)
        return torch.cat([out.joints, extra], dim=1)[:, SMPL_54_TO_49]

    def angle_prior(self, body_pose: torch.Tensor) -> torch.Tensor:
        signs = torch.tensor(ANGLE_PRIOR_SIGNS, dtype=body_pose.dtype, device=body_pose.device)
        if self.flavor == "spin":
            return (torch.exp(body_pose[:, ANGLE_PRIOR_INDICES] * signs) ** 2).sum(-1)
        return ((torch.exp(body_pose[:, MMH_ANGLE_PRIOR_INDICES] * signs) - 1) ** 2).sum(-1)

    def priors(self, body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """(B,) GMM + angle + shape priors with SPIN's weights."""
        return (SMPLIFY_POSE_PRIOR_WEIGHT ** 2 * self.prior(body_pose)
                + SMPLIFY_ANGLE_PRIOR_WEIGHT ** 2 * self.angle_prior(body_pose)
                + SMPLIFY_SHAPE_PRIOR_WEIGHT ** 2 * (betas ** 2).sum(-1))

    def data_term(self, joints, cam_t, kp, conf, center) -> torch.Tensor:
        """(B, 49) per-joint robust reprojection term of stage 2 (flavor's units)."""
        proj = project(joints, cam_t, self.focal_length, center)
        if self.flavor == "spin":
            return conf ** 2 * gmof(proj - kp, SMPLIFY_SIGMA).sum(-1)
        S = self.kp_norm
        e2 = ((2 * proj / S - 1) - (2 * kp / S - 1)) ** 2  # F.mse_loss(..., reduction='none')
        return conf * gmof(e2, SMPLIFY_SIGMA).sum(-1)

    def camera_loss(self, joints, cam_t, cam_t_init, kp, conf_torso) -> torch.Tensor:
        """SPIN's camera_fitting_loss per sample (B,): 4 torso joints, OpenPose ones if all visible."""
        proj = project(joints, cam_t, self.focal_length, self._center)
        err_op = ((kp[:, TORSO_OPENPOSE] - proj[:, TORSO_OPENPOSE]) ** 2)
        err_gt = ((kp[:, TORSO_GT] - proj[:, TORSO_GT]) ** 2)
        is_valid = (conf_torso[:, TORSO_OPENPOSE].min(dim=-1)[0][:, None, None] > 0).to(joints.dtype)
        reproj = (is_valid * err_op + (1 - is_valid) * err_gt).sum(dim=(1, 2))
        return reproj + SMPLIFY_DEPTH_WEIGHT ** 2 * (cam_t[:, 2] - cam_t_init[:, 2]) ** 2

    # --- the fit --------------------------------------------------------------------------------------
    def _stage(self, params: list[torch.Tensor], loss_fn, iters: int, B: int) -> torch.Tensor:
        """Adam on `params` (each (B, n)); ftol > 0 freezes a sample once its relative loss change is
        below ftol (mmhuman3d's test, on the loss before each step); with stop='batch' the test reads the
        summed loss of the moving samples and stops them all. Returns steps taken (B,)."""
        opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))
        active = torch.ones(B, dtype=torch.bool, device=params[0].device)
        steps = torch.zeros(B, dtype=torch.long, device=params[0].device)
        prev = None
        prev_sum = None
        for _ in range(iters):
            loss = loss_fn()  # (B,)
            opt.zero_grad()
            loss.sum().backward()
            before = [p.detach().clone() for p in params]
            opt.step()
            with torch.no_grad():
                moved = active.clone()
                for p, b in zip(params, before):
                    p.copy_(torch.where(active[:, None], p, b))
                steps += active
                if self.ftol > 0 and self.stop == "batch":
                    cur_sum = float(loss.detach()[moved].sum())
                    if prev_sum is not None and abs(prev_sum - cur_sum) / max(abs(prev_sum), abs(cur_sum), 1.0) < self.ftol:
                        active[:] = False
                    prev_sum = cur_sum
                elif self.ftol > 0:
                    cur = loss.detach()
                    if prev is not None:
                        rel = (prev - cur).abs() / torch.clamp(torch.maximum(prev.abs(), cur.abs()), min=1.0)
                        active &= ~(rel < self.ftol)
                    prev = cur
        return steps

    def __call__(self, init_pose: torch.Tensor, init_betas: torch.Tensor, init_cam_t: torch.Tensor,
                 keypoints2d: torch.Tensor, center: torch.Tensor | None = None) -> SMPLifyResult:
        """init_pose (B, 72), init_betas (B, 10), init_cam_t (B, 3), keypoints2d (B, 49, 3) crop
        pixels + confidence; center (B, 2) principal point (default the crop centre)."""
        dt = self.dtype
        B = init_pose.shape[0]
        global_orient = init_pose[:, :3].detach().clone().to(dt)
        body_pose = init_pose[:, 3:].detach().clone().to(dt)
        betas = init_betas.detach().clone().to(dt)
        cam_t = init_cam_t.detach().clone().to(dt)
        kp = keypoints2d[..., :2].to(dt)
        conf = keypoints2d[..., 2].to(dt).clone()
        self._center = (center.to(dt) if center is not None
                        else torch.full((B, 2), self.img_res / 2.0, dtype=dt, device=kp.device))
        conf_stage1 = conf.clone()
        conf[:, STAGE2_IGNORED_JOINTS] = 0.0

        # Stage 1: camera translation and global orientation.
        global_orient.requires_grad_(True)
        cam_t.requires_grad_(True)
        if self.flavor == "spin":
            def loss1():
                joints = self.joints(torch.cat([global_orient, body_pose], 1), betas)
                return self.camera_loss(joints, cam_t, init_cam_t.to(dt), kp, conf_stage1)
        else:
            def loss1():
                joints = self.joints(torch.cat([global_orient, body_pose], 1), betas)
                return self.data_term(joints, cam_t, kp, conf, self._center).sum(-1) + self.priors(body_pose, betas)
        steps1 = self._stage([global_orient, cam_t], loss1, self.stage1_iters, B)
        cam_t.requires_grad_(False)

        # Stage 2: body pose, betas, global orientation; camera fixed.
        body_pose.requires_grad_(True)
        betas.requires_grad_(True)

        def loss2():
            joints = self.joints(torch.cat([global_orient, body_pose], 1), betas)
            return self.data_term(joints, cam_t, kp, conf, self._center).sum(-1) + self.priors(body_pose, betas)
        steps2 = self._stage([body_pose, betas, global_orient], loss2, self.stage2_iters, B)

        with torch.no_grad():
            pose = torch.cat([global_orient, body_pose], 1)
            joints = self.joints(pose, betas)
            joint_loss = self.data_term(joints, cam_t, kp, conf, self._center)
            total = joint_loss.sum(-1) + self.priors(body_pose, betas)
        valid = torch.isfinite(total) & torch.isfinite(pose).all(-1)
        return SMPLifyResult(pose.detach(), betas.detach(), cam_t.detach(), joint_loss, total, valid,
                             (~valid).sum(), torch.stack([steps1, steps2], 1))


class SMPLifyReferenceInLoop(SMPLifyReference):
    """SMPLifyReference with the `joint_loss` the training step scores stored fits with (the same
    numbers as spin_fast.smplify.SMPLify.joint_loss: stage-2 data term per joint, ignored joints at
    zero confidence, this flavor's units), callable under torch.no_grad() as train_step calls it."""

    def __call__(self, *args, **kw):
        with torch.enable_grad():  # the stages backpropagate through smplx; the step's block is no_grad
            return super().__call__(*args, **kw)

    def joint_loss(self, pose: torch.Tensor, betas: torch.Tensor, cam_t: torch.Tensor, keypoints2d: torch.Tensor,
                   center: torch.Tensor | None = None) -> torch.Tensor:
        """pose (B, 72), betas (B, 10), cam_t (B, 3), keypoints2d (B, 49, 3) -> (B, 49)."""
        dt = self.dtype
        B = pose.shape[0]
        with torch.no_grad():
            conf = keypoints2d[..., 2].to(dt).clone()
            conf[:, STAGE2_IGNORED_JOINTS] = 0.0
            center = (center.to(dt) if center is not None
                      else torch.full((B, 2), self.img_res / 2.0, dtype=dt, device=pose.device))
            joints = self.joints(pose.to(dt), betas.to(dt))
            return self.data_term(joints, cam_t.to(dt), keypoints2d[..., :2].to(dt), conf, center)
