"""Static fits for whole datasets: `python -m spin_fast.fit` (library: `spin_fast.fit.run`)."""
from spin_fast.fit.run import FitConfig, FitResult, fit_dataset  # noqa: F401
