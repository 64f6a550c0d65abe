"""reprojection op."""
