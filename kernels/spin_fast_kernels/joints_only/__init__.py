"""joints_only op."""
