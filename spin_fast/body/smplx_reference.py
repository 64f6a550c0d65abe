"""The SMPL body through smplx: the reference that BodyModel is checked against and the body of the
reference SMPLify (spin_fast.smplify.reference) and of the training-step benchmark's reference path.

`smplx_body` builds smplx.SMPL from a `load_smpl` dict. `SmplxBody` has BodyModel's API
(`forward(...) -> BodyOutput`, `joints_only(...)`, the same joint sets) but evaluates everything the
way SPIN does: smplx.SMPL's full mesh forward (45 smplx joints) and the extra regressors applied to
its vertices. `joints_only` is the full forward's joints: no shortcut, the mesh is built every call.
"""
from __future__ import annotations

import numpy as np
import torch

from spin_fast.body.model import JOINT_SETS, BodyOutput
from spin_fast.constants import NUM_JOINTS, SMPL_54_TO_49
from spin_fast.errors import SpinFastError

NUM_BODY = NUM_JOINTS - 1


def smplx_body(smpl: dict, dtype: torch.dtype = torch.float32):
    """smplx.SMPL built from a `spin_fast.body.io.load_smpl` dict (no file, no chumpy)."""
    try:
        import smplx
        from smplx.utils import Struct
    except ImportError:
        raise SpinFastError("the smplx reference body needs smplx, which is not installed: "
                            "pip install 'spin_fast[reference]'") from None

    struct = Struct(**{k: smpl[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                                            "weights", "kintree_table", "f")})
    return smplx.SMPL(model_path="", data_struct=struct, create_betas=False, create_global_orient=False,
                      create_body_pose=False, create_transl=False, num_betas=smpl["shapedirs"].shape[-1],
                      dtype=dtype)


def _rotmat_input(x: torch.Tensor, B: int, n: int) -> bool:
    """True for rotation matrices (B, n, 3, 3) (or (B, 3, 3) when n == 1), False for axis-angle
    (B, 3n) / (B, n, 3); anything else is an error naming the accepted shapes."""
    shape = tuple(x.shape)
    if shape in ((B, n, 3, 3),) or (n == 1 and shape == (B, 3, 3)):
        return True
    if shape in ((B, 3 * n), (B, n, 3)):
        return False
    name = "global_orient" if n == 1 else "body_pose"
    raise ValueError(f"{name}: got shape {shape}, accepted shapes are ({B}, {3 * n}) or ({B}, {n}, 3) axis-angle, "
                     f"({B}, {n}, 3, 3) rotation matrices")


class SmplxBody(torch.nn.Module):
    """SMPL through smplx.SMPL, with BodyModel's call API.

    smpl: a `spin_fast.body.io.load_smpl` dict; j_regressor_extra (9, V) / j_regressor_h36m (17, V)
    as for BodyModel (None: the joint sets that need them are unavailable).
    """

    def __init__(self, smpl: dict, j_regressor_extra: np.ndarray | None = None,
                 j_regressor_h36m: np.ndarray | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.smpl = smplx_body(smpl, dtype)
        self.num_betas = self.smpl.shapedirs.shape[-1]
        self.joint_sets = {"smpl_24": NUM_JOINTS, "smpl_45": 45}
        extra = None if j_regressor_extra is None else torch.tensor(np.asarray(j_regressor_extra), dtype=dtype)
        h36m = None if j_regressor_h36m is None else torch.tensor(np.asarray(j_regressor_h36m), dtype=dtype)
        self.register_buffer("j_regressor_extra", extra)
        self.register_buffer("j_regressor_h36m", h36m)
        if extra is not None:
            self.joint_sets.update(smpl_54=54, smpl_49=len(SMPL_54_TO_49))
        if h36m is not None:
            self.joint_sets["h36m_17"] = 17
        self.register_buffer("smpl_54_to_49", torch.tensor(SMPL_54_TO_49), persistent=False)

    @property
    def v_template(self) -> torch.Tensor:  # dtype / device, as BodyModel exposes them
        return self.smpl.v_template

    @property
    def faces(self) -> torch.Tensor:
        return self.smpl.faces_tensor

    @classmethod
    def from_paths(cls, paths, gender: str = "neutral", dtype: torch.dtype = torch.float32) -> "SmplxBody":
        from spin_fast.body.io import load_regressor, load_smpl

        return cls(load_smpl(paths.smpl(gender)), load_regressor(paths.j_regressor_extra),
                   load_regressor(paths.j_regressor_h36m), dtype=dtype)

    def forward(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                transl: torch.Tensor | None = None, joint_set: str = "smpl_49") -> BodyOutput:
        """Same inputs and output as BodyModel.forward (axis-angle or rotation matrices)."""
        if joint_set not in self.joint_sets:
            missing = "" if joint_set not in JOINT_SETS else " (its regressor was not given to SmplxBody)"
            raise ValueError(f"joint_set: got {joint_set!r}{missing}, available: {sorted(self.joint_sets)}")
        if betas.dim() != 2 or betas.shape[1] != self.num_betas:
            raise ValueError(f"betas: got shape {tuple(betas.shape)}, accepted shapes are (B, {self.num_betas})")
        B = betas.shape[0]
        if transl is not None and tuple(transl.shape) != (B, 3):
            raise ValueError(f"transl: got shape {tuple(transl.shape)}, accepted shapes are ({B}, 3) or None")
        dtype = self.v_template.dtype
        body_rot, orient_rot = _rotmat_input(body_pose, B, NUM_BODY), _rotmat_input(global_orient, B, 1)
        if body_rot != orient_rot:  # smplx takes one kind for both: turn the axis-angle one into matrices
            from smplx.lbs import batch_rodrigues

            if not body_rot:
                body_pose = batch_rodrigues(body_pose.reshape(-1, 3)).reshape(B, NUM_BODY, 3, 3)
            else:
                global_orient = batch_rodrigues(global_orient.reshape(-1, 3)).reshape(B, 1, 3, 3)
        rot = body_rot or orient_rot
        # smplx concatenates the two on dim 1: (B, 3) + (B, 69) axis-angle, (B, 1, 3, 3) + (B, 23, 3, 3) matrices
        shapes = ((B, 1, 3, 3), (B, NUM_BODY, 3, 3)) if rot else ((B, 3), (B, 3 * NUM_BODY))
        out = self.smpl(betas=betas.to(dtype), body_pose=body_pose.reshape(shapes[1]).to(dtype),
                        global_orient=global_orient.reshape(shapes[0]).to(dtype), pose2rot=not rot)
        vertices, joints = out.vertices, out.joints  # (B, V, 3), (B, 45, 3)
        if joint_set == "smpl_24":
            joints = joints[:, :NUM_JOINTS]
        elif joint_set in ("smpl_54", "smpl_49"):
            joints = torch.cat([joints, torch.einsum("jv,bvc->bjc", self.j_regressor_extra, vertices)], 1)
            if joint_set == "smpl_49":
                joints = joints[:, self.smpl_54_to_49]
        elif joint_set == "h36m_17":
            joints = torch.einsum("jv,bvc->bjc", self.j_regressor_h36m, vertices)
        if transl is not None:
            joints = joints + transl.to(dtype)[:, None]
            vertices = vertices + transl.to(dtype)[:, None]
        if rot:
            rotmats = torch.cat([global_orient.reshape(B, 1, 3, 3), body_pose.reshape(B, NUM_BODY, 3, 3)], 1).to(dtype)
        else:
            from smplx.lbs import batch_rodrigues

            aa = torch.cat([global_orient.reshape(B, 3), body_pose.reshape(B, 3 * NUM_BODY)], 1).to(dtype)
            rotmats = batch_rodrigues(aa.reshape(-1, 3)).reshape(B, NUM_JOINTS, 3, 3)
        return BodyOutput(vertices, joints, rotmats)

    def joints_only(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                    transl: torch.Tensor | None = None, joint_set: str = "smpl_49") -> torch.Tensor:
        """The full forward's joints (the mesh is built: this is the reference, not a shortcut)."""
        return self.forward(betas, body_pose, global_orient, transl, joint_set).joints

