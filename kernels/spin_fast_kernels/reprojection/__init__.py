"""reprojection op: SMPLify's robust (Geman-McClure) 2D reprojection loss, SPIN or mmhuman3d flavor."""
from .reference import gmof, project_points, reprojection_loss_torch

__all__ = ["gmof", "project_points", "reprojection_loss_torch"]
