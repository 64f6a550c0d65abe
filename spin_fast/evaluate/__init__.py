"""Evaluation: the runner (metrics: `spin_fast.metrics`) (weights are loaded by `spin_fast.model.checkpoint_import`).

CLI: `python -m spin_fast.evaluate --checkpoint CKPT [--data-root DIR] ...` (see `__main__`).
"""
