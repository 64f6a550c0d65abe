"""gmm_prior op: SPIN's max-mixture GMM pose prior (8 components over the 69-D body pose).

`gmm_prior(pose, means, precisions, nll_weights)` runs the Triton kernel when
`_dispatch.use_triton` says so (CUDA tensors, or SPIN_FAST_BACKEND=triton) and the torch reference
`gmm_prior_torch` otherwise. Build the constants once with `gmm_constants(...)`.
"""
import torch

from .._dispatch import use_triton
from .reference import gmm_constants, gmm_prior_torch

__all__ = ["gmm_constants", "gmm_prior", "gmm_prior_torch"]


def gmm_prior(
    pose: torch.Tensor,
    means: torch.Tensor,
    precisions: torch.Tensor,
    nll_weights: torch.Tensor,
) -> torch.Tensor:
    """pose (B, D) body pose axis-angle (D = 69); means (K, D); precisions (K, D, D) symmetric;
    nll_weights (K,) from `gmm_constants`. Returns (B,) the max-mixture negative log-likelihood,
    differentiable w.r.t. pose (the Triton path gives the prior constants no gradient)."""
    from .function import check_gmm_args  # imports triton (not its driver): deferred to the call

    check_gmm_args(pose, means, precisions, nll_weights)
    if use_triton(pose, means, precisions, nll_weights):
        from .function import gmm_prior_triton

        return gmm_prior_triton(pose, means, precisions, nll_weights)
    return gmm_prior_torch(pose, means, precisions, nll_weights)
