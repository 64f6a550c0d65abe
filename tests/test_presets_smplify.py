"""The mmhuman3d recipe's SMPLify and fits in the loop against mmhuman3d's formulas, written out here:

1. keypoint normaliser: `_compute_loss` (mmhuman3d/models/registrants/smplify.py:561-562) maps pixels
   to 2 x / (img_res - 1) - 1 = 2 x / 223 - 1, and KeypointMSELoss(sigma=100) takes
   conf * GMoF(squared difference); the recipe's objective equals that to 1e-12 in float64;
2. stop rule: `_optimize_stage` (smplify.py:381) stops the whole batch once the batch's summed loss
   changes by less than ftol; the per-sample rule gives other fits on the same batch;
3. valid-fit rule: `run_registration(threshold=10.0)` (mesh_estimator.py:288, 359) keeps a fit as a
   target when its keypoint2d loss summed over joints and coordinates is < 10; SPIN's rule is the
   mean over the 49 joints < 100.
"""
import dataclasses
import math

import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_regressor, load_smpl
from spin_fast.constants import STAGE2_IGNORED_JOINTS
from spin_fast.geometry import perspective_projection
from spin_fast.recipes import RECIPES, ValidFitRule, smplify_kwargs
from spin_fast.smplify import FitsStore, SMPLify, SMPLifyReference
from spin_fast.smplify.fits import SPIN_VALID_FIT
from spin_fast.smplify.in_loop import fit_in_loop

F64 = torch.float64
MMH = RECIPES["mmhuman3d"].smplify


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(synthetic_assets):
    smpl = load_smpl(synthetic_assets.smpl("neutral"))
    extra = load_regressor(synthetic_assets.j_regressor_extra)
    return {"smpl": smpl, "extra": extra, "gmm": load_gmm(synthetic_assets.gmm),
            "body64": BodyModel(smpl, extra, dtype=F64), "body": BodyModel(smpl, extra)}


def _batch(body, B, seed, noise=2.0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    orient = torch.tensor([math.pi, 0.0, 0.0]).repeat(B, 1) + 0.2 * torch.randn(B, 3, generator=g)
    body_pose = 0.2 * torch.randn(B, 69, generator=g)
    betas = 0.5 * torch.randn(B, 10, generator=g)
    cam = torch.stack([0.1 * torch.randn(B, generator=g), 0.1 * torch.randn(B, generator=g),
                       45 + 5 * torch.rand(B, generator=g)], 1)
    args = [t.to(dtype) for t in (orient, body_pose, betas, cam)]
    with torch.no_grad():
        px = perspective_projection(body.joints_only(args[2], args[1], args[0]), args[3])
    conf = (0.3 + 0.7 * torch.rand(B, 49, 1, generator=g)).to(dtype)
    kp = torch.cat([px + noise * torch.randn(B, 49, 2, generator=g).to(dtype), conf], -1)
    start = (torch.cat([args[0], args[1]], 1) + 0.1 * torch.randn(B, 72, generator=g).to(dtype),
             torch.zeros(B, 10, dtype=dtype), args[3] * torch.tensor([1.0, 1.0, 1.1], dtype=dtype))
    return kp, start


def mmhuman3d_keypoint2d_loss(joints, cam_t, kp, conf, img_res=224, focal=5000.0, sigma=100.0):
    """mmhuman3d's `_compute_loss` keypoint2d term per joint (B, J), reduction 'none' summed over xy:
    screen projection with principal point img_res / 2, both sides normalised by img_res - 1, then
    KeypointMSELoss: weight * GMoF(F.mse_loss(pred, target, 'none'), sigma)."""
    X = joints + cam_t[:, None]
    projected = focal * X[..., :2] / X[..., 2:3] + img_res / 2
    projected = 2 * projected / (img_res - 1) - 1
    target = 2 * kp / (img_res - 1) - 1
    sq = (projected - target) ** 2
    rho = sigma ** 2 * sq ** 2 / (sigma ** 2 + sq ** 2)
    return (conf[..., None] * rho).sum(-1)


# --- 1. the 223 normaliser -----------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
def test_normaliser_is_mmhuman3ds_compute_loss(assets, fused):
    body = assets["body64"]
    kp, start = _batch(body, 5, seed=0)
    fitter = SMPLify(body, gmm=assets["gmm"], fused=fused, **{**smplify_kwargs(MMH), "stage1_iters": 0,
                                                              "stage2_iters": 0})
    assert fitter.kp_norm == 223.0
    out = fitter(*start, kp)
    keep = torch.ones(49, dtype=F64)
    keep[STAGE2_IGNORED_JOINTS] = 0.0  # mmhuman3d's ignore_keypoints (keypoint_weight 0)
    with torch.no_grad():
        joints = body.joints_only(start[1], start[0][:, 3:], start[0][:, :3], joint_set="smpl_49")
    want = mmhuman3d_keypoint2d_loss(joints, start[2], kp[..., :2], kp[..., 2] * keep)
    err = (out.joint_loss - want).abs().max().item()
    print(f"normaliser 223: max |spin_fast - mmhuman3d _compute_loss| = {err:.3e} (scale {want.max().item():.3e})")
    torch.testing.assert_close(out.joint_loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fitter.joint_loss(start[0], start[1], start[2], kp), want, rtol=1e-12, atol=1e-12)
    # the total: the data term summed + the priors (unchanged by the normaliser)
    priors = fitter.priors(start[0][:, 3:], start[1])
    torch.testing.assert_close(out.total_loss, want.sum(-1) + priors, rtol=1e-12, atol=1e-12)
    # 224, the earlier normaliser, is measurably different
    old = SMPLify(body, gmm=assets["gmm"], fused=fused, flavor="mmhuman3d", stage1_iters=0, stage2_iters=0)
    rel = ((old(*start, kp).joint_loss.sum() - want.sum()) / want.sum()).item()
    print(f"normaliser 224 instead: relative change of the summed data term {rel:.3e}")
    assert abs(rel) > 1e-3


# --- 2. the batch-wide stop ----------------------------------------------------------------------------

def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1.0)


@pytest.mark.parametrize("fused", [True, False])
def test_batch_stop_is_mmhuman3ds_optimize_stage(assets, fused):
    """Stage 2 only. The loss before step k + 1 is the objective of a k-step fit; mmhuman3d stops all
    samples after the first step whose summed loss changed by < ftol relative to the previous one."""
    body = assets["body64"]
    B, N, ftol = 4, 12, 0.0465  # relative changes here are ~0.04-0.05 a step: the rules part ways
    kp, start = _batch(body, B, seed=3, noise=4.0)
    base = dict(smplify_kwargs(MMH), stage1_iters=0)

    def run(iters, **kw):
        return SMPLify(body, gmm=assets["gmm"], fused=fused, **{**base, "stage2_iters": iters, **kw})(*start, kp)

    losses = torch.stack([run(k, ftol=0.0).total_loss for k in range(N)])  # (N, B)
    batch_steps = N
    for k in range(1, N):
        if _rel(float(losses[k - 1].sum()), float(losses[k].sum())) < ftol:
            batch_steps = k + 1
            break
    row_steps = []
    for b in range(B):
        row_steps.append(next((k + 1 for k in range(1, N) if _rel(float(losses[k - 1, b]), float(losses[k, b])) < ftol), N))
    print(f"batch stop: every sample after {batch_steps} steps; per-sample stop: {row_steps}")
    assert batch_steps < N and set(row_steps) != {batch_steps}, (batch_steps, row_steps)

    by_batch = run(N, ftol=ftol, stop="batch")
    by_sample = run(N, ftol=ftol, stop="sample")
    assert by_batch.iterations[:, 1].tolist() == [batch_steps] * B
    assert by_sample.iterations[:, 1].tolist() == row_steps
    plain = run(batch_steps, ftol=0.0)
    torch.testing.assert_close(by_batch.pose, plain.pose, rtol=0, atol=1e-12)
    diff = (by_batch.pose - by_sample.pose).abs().max().item()
    print(f"batch stop vs per-sample stop: max |pose difference| = {diff:.3e} rad")
    assert diff > 1e-6
    # the oracle (smplx + torch.optim.Adam) stops the same way
    ref = SMPLifyReference(assets["smpl"], assets["extra"], assets["gmm"], dtype=F64,
                           **{**base, "stage2_iters": N, "ftol": ftol, "stop": "batch"})(*start, kp)
    assert ref.iterations[:, 1].tolist() == [batch_steps] * B


def test_recipes_choose_the_stop_rule(assets):
    body = assets["body"]
    mmh = SMPLify(body, gmm=assets["gmm"], **smplify_kwargs(MMH))
    spin = SMPLify(body, gmm=assets["gmm"], **smplify_kwargs(RECIPES["spin"].smplify))
    assert (mmh.stop, mmh.kp_norm, mmh.ftol, mmh.stage1_iters) == ("batch", 223.0, 1e-4, 50)
    assert (spin.stop, spin.ftol, spin.stage1_iters, spin.flavor) == ("sample", 0.0, 100, "spin")
    assert mmh._fit_opts.batch_stop and not spin._fit_opts.batch_stop
    with pytest.raises(ValueError, match="stop must be one of"):
        SMPLify(body, gmm=assets["gmm"], stop="each")


# --- 3. the valid-fit rule ------------------------------------------------------------------------------

def test_valid_fit_rule_mmhuman3d_sum_below_10(assets):
    """Sample 0's keypoints are scattered ~60 px about its body: its summed normalised loss is > 10 (not a target
    under mmhuman3d's rule) while its mean is far below 100 (a target under SPIN's rule, in these units)."""
    body = assets["body"]
    kp, start = _batch(body, 3, seed=5, noise=0.5, dtype=torch.float32)
    kp[0, :, :2] += 60.0 * torch.randn(49, 2, generator=torch.Generator().manual_seed(1))
    B = 3
    batch = {"dataset_id": torch.zeros(B, dtype=torch.long), "sample_index": torch.arange(B),
             "flip": torch.zeros(B, dtype=torch.bool), "rot_deg": torch.zeros(B), "keypoints2d": kp,
             "pose": torch.zeros(B, 72), "betas": torch.zeros(B, 10), "has_smpl": torch.zeros(B, dtype=torch.bool)}
    fitter = SMPLify(body, gmm=assets["gmm"], **{**smplify_kwargs(MMH), "stage1_iters": 0, "stage2_iters": 0})
    sel = fit_in_loop(body, fitter, FitsStore.filled({"d": B}), batch, *start, valid_rule=MMH.valid_fit)
    kept = fitter.joint_loss(sel.fit[:, :72], sel.fit[:, 72:], sel.cam_t, kp)  # the kept fit, as mmhuman3d scores it
    summed = kept.sum(-1)
    print(f"valid-fit rule: summed keypoint2d loss {[round(v, 3) for v in summed.tolist()]}, "
          f"mean {[round(v, 4) for v in kept.mean(-1).tolist()]}")
    assert sel.valid_fit.tolist() == (summed < 10.0).tolist() == [False, True, True]
    spin_rule = fit_in_loop(body, fitter, FitsStore.filled({"d": B}), batch, *start, valid_rule=SPIN_VALID_FIT)
    assert spin_rule.valid_fit.tolist() == [True, True, True]
    assert sel.smplify is not None and sel.smplify.joint_loss.shape == (B, 49)


def test_valid_fit_rules_on_the_store():
    """One sample valid under one rule and not the other: per-joint losses 0.5 (sum 24.5, mean 0.5)."""
    store = FitsStore.filled({"d": 2})
    fit = torch.zeros(2, 82)
    loss = torch.tensor([[0.5] * 49, [0.1] * 49])
    args = (torch.zeros(2, dtype=torch.long), torch.arange(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2),
            fit, torch.full((2, 49), math.inf), fit, loss)
    assert store.select_and_update(*args, valid_rule=ValidFitRule("sum", 10.0)).valid_fit.tolist() == [False, True]
    assert store.select_and_update(*args, valid_rule=ValidFitRule("mean", 100.0)).valid_fit.tolist() == [True, True]
    with pytest.raises(ValueError, match="per-joint"):
        store.select_and_update(*args[:5], torch.full((2,), math.inf), fit, loss.mean(-1),
                                valid_rule=ValidFitRule("sum", 10.0))


def test_train_and_fit_follow_the_preset_recipe():
    from spin_fast.fit.run import FitConfig, fit_recipe
    from spin_fast.train.config import build_config, resolve

    for preset in ("mmhuman3d", "spin"):
        rec = resolve(build_config(overrides={"preset": preset}, demo=False)).smplify
        want = RECIPES[preset].smplify
        assert rec == want
        assert fit_recipe(FitConfig("h36m", preset=preset)) == want
    demo = resolve(build_config(overrides={"preset": "mmhuman3d"}, demo=True)).smplify
    assert demo == dataclasses.replace(MMH, stage1_iters=10, stage2_iters=10)
