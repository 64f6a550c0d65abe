"""gmm_prior op: SPIN's max-mixture GMM pose prior (8 components over the 69-D body pose)."""
from .reference import gmm_constants, gmm_prior_torch

__all__ = ["gmm_constants", "gmm_prior_torch"]
