"""Training: config, losses, the SPIN step, the loop and checkpoints (`python -m spin_fast.train`)."""
