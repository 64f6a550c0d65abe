"""The GMM pose prior's per-component constant: SPIN's and mmhuman3d's prior.py (smplify-x's
MaxMixturePrior, merged) hold the normaliser w_k / ((2 pi)^(69/2) sqrt(det_k) / min_j sqrt(det_j)) in a
float32 buffer and take -log of it there; spin_fast's float32 mode reproduces that, float64 is exact.
"""
import math

import numpy as np
import pytest
import torch

from spin_fast_kernels.gmm_prior import gmm_constants, gmm_prior_torch

D = 69


def _gmm(seed=0):
    """Three components; component 1's covariance scaled so its normaliser is subnormal in float32
    (ln(sqrt(det ratio) / w) ~ 38: a few significant bits), component 2's so it underflows to 0 (~ 46)."""
    rng = np.random.default_rng(seed)
    covs = []
    for k, scale in enumerate((1.0, math.exp(2 * 37 / D), math.exp(2 * 45 / D))):
        q, _ = np.linalg.qr(rng.normal(size=(D, D)))
        covs.append(scale * (q * rng.uniform(0.5, 2.0, D)) @ q.T)
    return {"means": rng.normal(0, 0.3, (3, D)), "covars": np.stack(covs), "weights": np.full(3, 1 / 3)}


def smplifyx_nll_float32(gmm):
    """smplify-x prior.py, written out: numpy float64 sqrt(det) of the pickled covariances, the
    normaliser w / (const * (sqrdets / sqrdets.min())), a float32 buffer, -torch.log of it."""
    sqrdets = np.array([np.sqrt(np.linalg.det(c)) for c in gmm["covars"]])
    const = (2 * np.pi) ** (D / 2.0)
    nll_weights = torch.tensor(np.asarray(gmm["weights"] / (const * (sqrdets / sqrdets.min()))), dtype=torch.float32)
    return -torch.log(nll_weights)


def exact_nll_float64(gmm):
    """The same shifted constant in float64: -log w + D/2 log 2 pi + 1/2 (log det_k - min log det)."""
    logdet = np.array([np.linalg.slogdet(c)[1] for c in gmm["covars"]])
    return torch.tensor(-np.log(gmm["weights"]) + 0.5 * D * math.log(2 * math.pi) + 0.5 * (logdet - logdet.min()))


def _constants(gmm, normaliser_dtype):
    return gmm_constants(*(torch.as_tensor(gmm[k]) for k in ("means", "covars", "weights")),
                         normaliser_dtype=normaliser_dtype)


def test_float32_normaliser_matches_smplifyx_and_float64_is_exact():
    gmm = _gmm()
    want32, want64 = smplifyx_nll_float32(gmm), exact_nll_float64(gmm)
    # the setting: float32 differs from float64 (subnormal component) or is +inf (flushed to 0)
    assert abs(want32[1].item() - want64[1].item()) > 1e-3 and math.isinf(want32[2].item())
    assert want32[0].item() == pytest.approx(want64[0].item(), rel=1e-6)
    _, _, nll32 = _constants(gmm, torch.float32)
    _, _, nll64 = _constants(gmm, torch.float64)
    torch.testing.assert_close(nll32.float(), want32, rtol=1e-6, atol=0)
    torch.testing.assert_close(nll64, want64, rtol=1e-12, atol=1e-10)


def test_a_flushed_component_never_wins_in_float32_mode():
    gmm = _gmm(1)
    means, prec, nll32 = _constants(gmm, torch.float32)
    _, _, nll64 = _constants(gmm, torch.float64)
    pose = torch.as_tensor(gmm["means"][2])[None] + 3.0  # far out, where the widest component is likeliest
    quad = torch.einsum("bki,kij,bkj->bk", pose[:, None] - means, prec, pose[:, None] - means)
    assert (0.5 * quad + nll64).argmin().item() == 2  # exact: component 2 wins here
    got32 = gmm_prior_torch(pose, means, prec, nll32)
    assert got32.item() == pytest.approx((0.5 * quad[:, :2] + smplifyx_nll_float32(gmm)[:2].double()).min().item(),
                                         rel=1e-6)
    assert math.isfinite(got32.item())


@pytest.mark.parametrize("mode, want", [("float32", smplifyx_nll_float32), ("float64", exact_nll_float64)])
def test_smplify_uses_the_selected_normaliser(synthetic_assets, mode, want):
    from spin_fast.body import BodyModel
    from spin_fast.body.io import load_regressor, load_smpl
    from spin_fast.smplify import SMPLify

    body = BodyModel(load_smpl(synthetic_assets.smpl("neutral")), load_regressor(synthetic_assets.j_regressor_extra),
                     load_regressor(synthetic_assets.j_regressor_h36m))
    gmm = _gmm(2)
    for flavor in ("spin", "mmhuman3d"):
        fitter = SMPLify(body, gmm=gmm, flavor=flavor, gmm_normaliser=mode)
        torch.testing.assert_close(fitter.gmm[2], want(gmm).float(), rtol=1e-6, atol=0)
    assert torch.isinf(SMPLify(body, gmm=gmm).gmm[2][2])  # the default is the upstream float32
    with pytest.raises(ValueError, match="gmm_normaliser"):
        SMPLify(body, gmm=gmm, gmm_normaliser="float16")
