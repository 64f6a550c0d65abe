"""The SMPL body model: full mesh forward and a joints-only forward that never builds the mesh.

Math (smplx.lbs, docs/spin.md "SMPL forward"):
    1. rest joints   J = J_template + J_shapedirs . betas         (folded: J_regressor . v_shaped)
    2. rotations     R = rodrigues(pose)                           (B, 24, 3, 3)
    3. pose feature  (R[1:] - I).flatten()                         (B, 207)
    4. chain         posed joints and rest-relative transforms A   (B, 24, 3, 4)
    5. full:         vertices = skinning(betas, pose feature, A)   (B, V, 3);
                     vertex joints = regressor . vertices
       joints-only:  vertex joints = sum over kept (joint, bone) pairs of the folded terms
                     (`spin_fast_kernels.joints_only.reference.fold_regressor`), no V anywhere.
    6. joints of the requested set = [24 posed joints | vertex joints] gathered, + transl.

Joint sets: 'smpl_24' (posed kinematic joints), 'smpl_45' (+ the 21 smplx landmark vertices),
'smpl_54' (+ J_regressor_extra), 'smpl_49' (SPIN's, smpl_54[SMPL_54_TO_49]), 'h36m_17'.
Each op (rodrigues, kinematic chain, skinning, joints-only) is called through `spin_fast_kernels`'
public dispatching function (Triton for CUDA tensors, torch otherwise: for the chain and the
skinning the written-out paths of kinematic_chain/cpu.py and skinning/cpu.py, laid out once here),
except on CPU float32 / float64 (`kinematic_chain.use_host`), where steps 1-4 are one NumPy op
(`shaped_rodrigues_chain_host`: at these sizes the time is per-call cost, about half of torch's).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import scipy.sparse
import torch

from spin_fast.constants import LANDMARK_VERTEX_IDS, NUM_JOINTS, SMPL_54_TO_49
from spin_fast_kernels.joints_only import joints_only as joints_only_op
from spin_fast_kernels.joints_only.reference import fold_regressor
from spin_fast_kernels.kinematic_chain import (kinematic_chain, rodrigues, rodrigues_chain,
                                               shaped_rodrigues_chain_host, use_host)
from spin_fast_kernels.skinning import SkinningBasis, skinning, skinning_basis

JOINT_SETS = ("smpl_24", "smpl_45", "smpl_54", "smpl_49", "h36m_17")
NUM_LANDMARKS = len(LANDMARK_VERTEX_IDS)


class BodyOutput(NamedTuple):
    vertices: torch.Tensor  # (B, V, 3)
    joints: torch.Tensor  # (B, J, 3) of the requested joint set
    rotmats: torch.Tensor  # (B, 24, 3, 3) local joint rotations (global orient first)


class Body(Protocol):
    """What the training step and the fits in the loop call on a body model: `BodyModel`, or the
    smplx-based `spin_fast.body.smplx_reference.SmplxBody`. Poses are axis-angle (B, 69) / (B, 3) or
    rotation matrices (B, 23, 3, 3) / (B, 1, 3, 3); betas (B, 10)."""

    def __call__(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                 transl: torch.Tensor | None = None, joint_set: str = "smpl_49") -> BodyOutput: ...

    def joints_only(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                    transl: torch.Tensor | None = None, joint_set: str = "smpl_49") -> torch.Tensor: ...


def _dense(a) -> np.ndarray:
    return np.asarray(a.toarray() if scipy.sparse.issparse(a) else a, dtype=np.float64)


def _shape_error(name: str, got: torch.Tensor, accepted: str) -> ValueError:
    return ValueError(f"{name}: got shape {tuple(got.shape)}, accepted shapes are {accepted}")


class BodyModel(torch.nn.Module):
    """SMPL from a `spin_fast.body.io.load_smpl` dict (numpy arrays) and the two extra regressors.

    smpl: v_template (V,3), shapedirs (V,3,S), posedirs (V,3,207), J_regressor (24,V) dense or
    scipy.sparse, weights (V,24), f (F,3), and parents (24,) or kintree_table (2,24).
    j_regressor_extra (9,V) / j_regressor_h36m (17,V): None makes the joint sets that need them
    unavailable. All derived terms are computed in float64, then cast to `dtype`.
    """

    def __init__(self, smpl: dict, j_regressor_extra: np.ndarray | None = None,
                 j_regressor_h36m: np.ndarray | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        v_template = _dense(smpl["v_template"])
        shapedirs = _dense(smpl["shapedirs"])
        posedirs = _dense(smpl["posedirs"])
        J_regressor = _dense(smpl["J_regressor"])
        weights = _dense(smpl["weights"])
        V = v_template.shape[0]
        if "parents" in smpl:
            parents = np.asarray(smpl["parents"], dtype=np.int64).copy()
        else:
            parents = np.asarray(smpl["kintree_table"], dtype=np.int64)[0].copy()
        parents[0] = -1
        if any(not (0 <= parents[i] < i) for i in range(1, len(parents))):
            raise ValueError(f"parents must list each joint's parent before it, got {parents.tolist()}")
        self.num_betas = shapedirs.shape[-1]
        self.parents_list = parents.tolist()

        t64 = torch.from_numpy
        buf = lambda a: t64(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
        self.register_buffer("v_template", buf(v_template))
        self.register_buffer("shapedirs", buf(shapedirs))
        self.register_buffer("posedirs", buf(posedirs))
        self.register_buffer("lbs_weights", buf(weights))
        self.register_buffer("J_regressor", buf(J_regressor))
        self.register_buffer("faces", t64(np.asarray(smpl["f"], dtype=np.int64)))
        self.register_buffer("parents", t64(parents))
        # Rest joints without the mesh: J_regressor . (v_template + shapedirs . betas).
        self.register_buffer("J_template", buf(J_regressor @ v_template))  # (24, 3)
        self.register_buffer("J_shapedirs", buf(np.einsum("jv,vcs->jcs", J_regressor, shapedirs)))
        # The model arrays as the torch skinning path reads them (coordinate-major), laid out once.
        for name, t in zip(("v_template", "dirs", "weights_t"),
                           skinning_basis(*(t64(a) for a in (v_template, shapedirs, posedirs, weights)))):
            self.register_buffer(f"skin_{name}", t.to(dtype), persistent=False)

        # Vertex-regressed joint groups, as (rows, V) regressors; landmarks are one-hot rows.
        groups: dict[str, np.ndarray] = {}
        landmarks = np.zeros((NUM_LANDMARKS, V))
        landmarks[np.arange(NUM_LANDMARKS), LANDMARK_VERTEX_IDS] = 1.0
        groups["landmarks"] = landmarks
        if j_regressor_extra is not None:
            groups["extra"] = self._check_regressor("j_regressor_extra", j_regressor_extra, 9, V)
        if j_regressor_h36m is not None:
            groups["h36m"] = self._check_regressor("j_regressor_h36m", j_regressor_h36m, 17, V)

        # Each joint set = [24 posed joints | its vertex joints] gathered by `index` (None: as is).
        # smpl_54 numbering: 0-23 kinematic, 24-44 landmarks, 45-53 extra.
        rows_54 = [("landmarks", i) for i in range(NUM_LANDMARKS)] + [("extra", i) for i in range(9)]
        used_49 = sorted({i for i in SMPL_54_TO_49 if i >= NUM_JOINTS})
        specs = {
            "smpl_24": ([], None),
            "smpl_45": (rows_54[:NUM_LANDMARKS], None),
            "smpl_54": (rows_54, None),
            "smpl_49": ([rows_54[i - NUM_JOINTS] for i in used_49],
                        [i if i < NUM_JOINTS else NUM_JOINTS + used_49.index(i) for i in SMPL_54_TO_49]),
            "h36m_17": ([("h36m", i) for i in range(17)], list(range(NUM_JOINTS, NUM_JOINTS + 17))),
        }
        basis = (t64(v_template), t64(shapedirs), t64(posedirs), t64(weights))
        self.joint_sets: dict[str, int] = {}  # available set -> number of joints
        for name, (rows, index) in specs.items():
            if any(g not in groups for g, _ in rows):
                continue
            self.joint_sets[name] = len(index) if index is not None else NUM_JOINTS + len(rows)
            reg = np.stack([groups[g][i] for g, i in rows]) if rows else np.zeros((0, V))
            self.register_buffer(f"{name}_regressor", buf(reg), persistent=False)  # (Jv, V)
            coeffs, bone_weight, pair_joint, pair_bone = self._fold(reg, *basis)
            self.register_buffer(f"{name}_coeffs", coeffs.to(dtype), persistent=False)  # (P, 3, K)
            self.register_buffer(f"{name}_bone_weight", bone_weight.to(dtype), persistent=False)
            self.register_buffer(f"{name}_pair_joint", pair_joint, persistent=False)
            self.register_buffer(f"{name}_pair_bone", pair_bone, persistent=False)
            idx = torch.tensor(index, dtype=torch.long) if index is not None else None
            self.register_buffer(f"{name}_index", idx, persistent=False)

    @staticmethod
    def _check_regressor(name: str, reg, rows: int, V: int) -> np.ndarray:
        reg = _dense(reg)
        if reg.shape != (rows, V):
            raise ValueError(f"{name}: got shape {reg.shape}, expected ({rows}, {V})")
        return reg

    @staticmethod
    def _fold(reg: np.ndarray, v_template, shapedirs, posedirs, weights):
        """fold_regressor over only the vertices some row uses (float64)."""
        cols = torch.from_numpy(np.nonzero(np.any(reg != 0, axis=0))[0])
        return fold_regressor(torch.from_numpy(reg)[:, cols], v_template[cols], shapedirs[cols],
                              posedirs[cols], weights[cols])

    @classmethod
    def from_paths(cls, paths, gender: str = "neutral", dtype: torch.dtype = torch.float32) -> "BodyModel":
        """Load SMPL_{GENDER}.pkl, J_regressor_extra.npy and J_regressor_h36m.npy of an AssetPaths."""
        from spin_fast.body.io import load_regressor, load_smpl

        return cls(load_smpl(paths.smpl(gender)), load_regressor(paths.j_regressor_extra),
                   load_regressor(paths.j_regressor_h36m), dtype=dtype)

    # --- inputs -----------------------------------------------------------------------------------
    def _rotmats(self, body_pose: torch.Tensor, global_orient: torch.Tensor, B: int) -> torch.Tensor:
        """body_pose (B,69)|(B,23,3)|(B,23,3,3), global_orient (B,3)|(B,1,3)|(B,3,3)|(B,1,3,3)
        -> local rotations (B, 24, 3, 3)."""
        dtype = self.v_template.dtype
        nb = NUM_JOINTS - 1
        bp = body_pose
        if bp.shape in ((B, nb * 3), (B, nb, 3)):
            body_R = rodrigues(bp.reshape(B, nb, 3).to(dtype))
        elif bp.shape == (B, nb, 3, 3):
            body_R = bp.to(dtype)
        else:
            raise _shape_error("body_pose", bp,
                               f"({B}, {nb * 3}) or ({B}, {nb}, 3) axis-angle, ({B}, {nb}, 3, 3) rotation matrices")
        go = global_orient
        if go.shape in ((B, 3), (B, 1, 3)):
            orient_R = rodrigues(go.reshape(B, 1, 3).to(dtype))
        elif go.shape in ((B, 3, 3), (B, 1, 3, 3)):
            orient_R = go.reshape(B, 1, 3, 3).to(dtype)
        else:
            raise _shape_error("global_orient", go,
                               f"({B}, 3) or ({B}, 1, 3) axis-angle, ({B}, 3, 3) or ({B}, 1, 3, 3) rotation matrices")
        return torch.cat([orient_R, body_R], dim=1)

    def _check(self, betas, transl, joint_set):
        if joint_set not in self.joint_sets:
            missing = "" if joint_set not in JOINT_SETS else " (its regressor was not given to BodyModel)"
            raise ValueError(f"joint_set: got {joint_set!r}{missing}, available: {sorted(self.joint_sets)}")
        if betas.dim() != 2 or betas.shape[1] != self.num_betas:
            raise _shape_error("betas", betas, f"(B, {self.num_betas})")
        B = betas.shape[0]
        if transl is not None and transl.shape != (B, 3):
            raise _shape_error("transl", transl, f"({B}, 3) or None")
        return B

    def _pose(self, betas, body_pose, global_orient, B, skin: bool = True):
        """Steps 1-4: rotations, pose feature, posed joints, transforms. skin=False: the posed joints
        are all the caller needs (pose feature None; the torch path then skips the transforms too)."""
        dtype = self.v_template.dtype
        betas = betas.to(dtype)
        nb = NUM_JOINTS - 1
        axis_angle = body_pose.shape in ((B, nb * 3), (B, nb, 3)) and global_orient.shape in ((B, 3), (B, 1, 3))
        if axis_angle and use_host(betas):
            # CPU: steps 1-4 as one NumPy op (its per-call cost is about half of torch's)
            rotmats, posed_joints, transforms = shaped_rodrigues_chain_host(
                betas, global_orient.to(dtype), body_pose.to(dtype), self.J_template, self.J_shapedirs,
                self.parents_list, need_transforms=skin)
        else:
            rest = torch.addmm(self.J_template.view(1, -1), betas, self.J_shapedirs.view(-1, self.num_betas).t())
            rest = rest.view(B, NUM_JOINTS, 3)  # J_template + J_shapedirs . betas
            if axis_angle:
                # axis-angle in: Rodrigues and the chain in one fused op (one launch each way on CUDA)
                aa = torch.cat([global_orient.reshape(B, 1, 3), body_pose.reshape(B, nb, 3)], dim=1).to(dtype)
                rotmats, posed_joints, transforms = rodrigues_chain(aa, rest, self.parents_list,
                                                                    need_transforms=skin)
            else:
                rotmats = self._rotmats(body_pose, global_orient, B)  # (B, 24, 3, 3)
                posed_joints, transforms = kinematic_chain(rotmats, rest, self.parents_list)
        pose_feature = None
        if skin:
            eye = torch.eye(3, dtype=dtype, device=rotmats.device)
            pose_feature = (rotmats[:, 1:] - eye).reshape(B, -1)  # (B, 207)
        return betas, rotmats, pose_feature, posed_joints, transforms

    def _assemble(self, posed_joints, vertex_joints, transl, joint_set):
        joints = torch.cat([posed_joints, vertex_joints], dim=1) if vertex_joints.shape[1] else posed_joints
        index = getattr(self, f"{joint_set}_index")
        if index is not None:
            joints = joints[:, index]
        if transl is not None:
            joints = joints + transl.to(joints.dtype)[:, None]
        return joints

    # --- evaluations ------------------------------------------------------------------------------
    def forward(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                transl: torch.Tensor | None = None, joint_set: str = "smpl_49") -> BodyOutput:
        """betas (B, S); body_pose (B, 69) | (B, 23, 3) axis-angle or (B, 23, 3, 3) rotations;
        global_orient (B, 3) | (B, 1, 3) or (B, 3, 3) | (B, 1, 3, 3); transl (B, 3) or None.
        Returns BodyOutput(vertices (B, V, 3), joints (B, J, 3), rotmats (B, 24, 3, 3))."""
        B = self._check(betas, transl, joint_set)
        betas, rotmats, pose_feature, posed_joints, transforms = self._pose(betas, body_pose, global_orient, B)
        basis = SkinningBasis(self.skin_v_template, self.skin_dirs, self.skin_weights_t)
        vertices = skinning(betas, pose_feature, transforms, self.v_template, self.shapedirs,
                            self.posedirs, self.lbs_weights, basis=basis)  # (B, V, 3)
        reg = getattr(self, f"{joint_set}_regressor")
        vertex_joints = torch.einsum("jv,bvc->bjc", reg, vertices) if reg.shape[0] else posed_joints[:, :0]
        joints = self._assemble(posed_joints, vertex_joints, transl, joint_set)
        if transl is not None:
            vertices = vertices + transl.to(vertices.dtype)[:, None]
        return BodyOutput(vertices, joints, rotmats)

    def joints_only(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                    transl: torch.Tensor | None = None, joint_set: str = "smpl_49") -> torch.Tensor:
        """Same inputs as `forward`; returns only joints (B, J, 3), without building the vertices."""
        B = self._check(betas, transl, joint_set)
        n = getattr(self, f"{joint_set}_regressor").shape[0]
        betas, _, pose_feature, posed_joints, transforms = self._pose(betas, body_pose, global_orient, B, skin=n > 0)
        if n:
            vertex_joints = joints_only_op(
                betas, pose_feature, transforms, getattr(self, f"{joint_set}_coeffs"),
                getattr(self, f"{joint_set}_bone_weight"), getattr(self, f"{joint_set}_pair_joint"),
                getattr(self, f"{joint_set}_pair_bone"), n)
        else:
            vertex_joints = posed_joints[:, :0]
        return self._assemble(posed_joints, vertex_joints, transl, joint_set)
