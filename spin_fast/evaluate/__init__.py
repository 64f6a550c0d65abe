"""Evaluation: 3DPW metrics (`metrics`), checkpoint import (`checkpoint_import`) and the runner.

CLI: `python -m spin_fast.evaluate --checkpoint CKPT [--data-root DIR] ...` (see `__main__`).
"""
from spin_fast.evaluate.metrics import mpjpe, pa_mpjpe, pw3d_metrics  # noqa: F401
