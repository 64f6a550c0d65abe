"""Batched SMPLify (SPIN pixel-space, mmhuman3d variant selectable), camera least squares, fits store."""
from spin_fast.smplify.camera import CameraEstimate, default_translation, estimate_camera_translation
from spin_fast.smplify.fits import FitsStore, Selection, reaugment, reset_extreme_betas, unaugment

__all__ = [
    "CameraEstimate", "default_translation", "estimate_camera_translation",
    "FitsStore", "Selection", "reaugment", "reset_extreme_betas", "unaugment",
]
