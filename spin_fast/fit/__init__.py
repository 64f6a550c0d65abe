"""Static fits for whole datasets: `python -m spin_fast.fit` (library: `spin_fast.fit.run`)."""
