"""skinning op."""
