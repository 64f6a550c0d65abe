"""Max-mixture GMM pose prior in plain torch: the oracle and the CPU path.

Math (SPIN's MaxMixturePrior.merged_log_likelihood; docs/spin.md "SMPLify"):
    gmm(theta) = min_k [ 1/2 (theta - mu_k)^T P_k (theta - mu_k) + nll_k ],   P_k = Sigma_k^-1
    nll_k      = -log( w_k / ((2 pi)^(D/2) sqrt(det Sigma_k)) )              (exact)
               = the above - 1/2 min_j log det Sigma_j                        (shift='spin')
SPIN's and mmhuman3d's prior.py (smplify-x's MaxMixturePrior, merged) store the normaliser
w_k / ((2 pi)^(D/2) sqrt(det_k / det_min)) itself in float32 and take its log there
(`normaliser_dtype=torch.float32`): where ln(sqrt(det_k/det_min) / w_k) passes ~24 that value is
subnormal (few significant bits), past ~40 it is 0 and the component's nll is +inf (it never wins).
The gradient is that of the winning component, P_k* (theta - mu_k*) (P symmetric).
"""
from __future__ import annotations

import math

import torch


def gmm_constants(
    means: torch.Tensor,
    covars: torch.Tensor,
    weights: torch.Tensor,
    shift: str = "spin",
    dtype: torch.dtype | None = None,
    normaliser_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precompute the per-component constants of the prior, in float64.

    means (K, D); covars (K, D, D) symmetric positive definite; weights (K,) mixture weights.
    shift: 'spin' (default) subtracts 1/2 min_k log det Sigma_k from every nll_k, exactly as SPIN's
    MaxMixturePrior does (nll_weights = w / (c * sqrt_det / min sqrt_det)); the minimising component
    and every gradient are unchanged, only the value moves by that constant. 'exact' keeps the true
    negative log normaliser -log(w_k / ((2 pi)^(D/2) sqrt(det Sigma_k))).
    normaliser_dtype: the precision the normaliser exp(-nll_k) is held in before its log is taken:
    float64 (exact) or float32 (SPIN's and mmhuman3d's prior.py; see the module docstring).
    Returns (means (K, D), precisions (K, D, D) = Sigma^-1 symmetrised, nll_weights (K,)) in `dtype`
    (float64 when None).
    """
    if shift not in ("spin", "exact"):
        raise ValueError(f"shift must be 'spin' or 'exact', got {shift!r}")
    if normaliser_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"normaliser_dtype must be torch.float32 or torch.float64, got {normaliser_dtype}")
    means64 = means.to(torch.float64)
    covars64 = covars.to(torch.float64)
    weights64 = weights.to(torch.float64)
    D = means64.shape[-1]
    precisions = torch.linalg.inv(covars64)
    precisions = 0.5 * (precisions + precisions.transpose(-1, -2))  # exact symmetry for the gradient
    # det > 0 alone would accept e.g. -I in even dimensions: ask Cholesky for definiteness.
    if bool((torch.linalg.cholesky_ex(covars64).info != 0).any()):
        raise ValueError("every covariance must be positive definite")
    sign, logdet = torch.linalg.slogdet(covars64)
    nll = -torch.log(weights64) + 0.5 * D * math.log(2.0 * math.pi) + 0.5 * logdet
    if shift == "spin":
        nll = nll - 0.5 * logdet.min()
    if normaliser_dtype == torch.float32:
        # the normaliser rounded (or flushed to a subnormal / 0) in float32, its log taken in float32
        nll = -torch.log(torch.exp(-nll).to(torch.float32)).to(torch.float64)
    out = dtype or torch.float64
    return means64.to(out), precisions.to(out), nll.to(out)


def gmm_prior_torch(
    pose: torch.Tensor,
    means: torch.Tensor,
    precisions: torch.Tensor,
    nll_weights: torch.Tensor,
) -> torch.Tensor:
    """pose (B, D) body pose axis-angle (D = 69); means (K, D); precisions (K, D, D) symmetric;
    nll_weights (K,) from `gmm_constants`. Returns (B,) the max-mixture negative log-likelihood.
    Samples are independent: row b of the result depends on pose[b] only."""
    diff = pose[:, None, :] - means[None]  # (B, K, D)
    quad = torch.einsum("bki,kij,bkj->bk", diff, precisions, diff)  # (B, K)
    return (0.5 * quad + nll_weights[None]).min(dim=1).values
