"""Batched SMPLify (SPIN pixel-space, mmhuman3d variant selectable), camera least squares, fits store,
and SPIN's fits in the loop for one batch (`fit_in_loop`)."""
from spin_fast.smplify.camera import CameraEstimate, default_translation, estimate_camera_translation
from spin_fast.smplify.fit import SMPLify, fitting_loss
from spin_fast.smplify.fits import FitsStore, Selection, reaugment, reset_extreme_betas, unaugment
from spin_fast.smplify.in_loop import Fitter, fit_in_loop
from spin_fast.smplify.reference import SMPLifyReference
from spin_fast.smplify.result import SMPLifyResult

__all__ = [
    "CameraEstimate", "default_translation", "estimate_camera_translation",
    "FitsStore", "Selection", "reaugment", "reset_extreme_betas", "unaugment",
    "SMPLify", "SMPLifyReference", "SMPLifyResult", "fitting_loss", "Fitter", "fit_in_loop",
]
