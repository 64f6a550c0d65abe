"""gmm_prior op."""
