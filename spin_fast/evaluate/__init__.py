"""Evaluation: 3DPW metrics (`metrics`) and the runner (weights are loaded by `spin_fast.model.checkpoint_import`).

CLI: `python -m spin_fast.evaluate --checkpoint CKPT [--data-root DIR] ...` (see `__main__`).
"""
from spin_fast.metrics import mpjpe, pa_mpjpe, pw3d_metrics  # noqa: F401
