"""BodyModel against smplx.SMPL built from the same arrays, joints-only against the full path, and the
Triton backend against the torch one.

Two models: a random SMPL-format dict made here (SMPL topology sizes, random blend shapes, sparse
≤4-bone weights, sparse regressors) and the synthetic stand-in from `spin_fast.assets` (against smplx
in tests/test_smplx_reference_body.py; the Triton backend runs on a few-hundred-vertex cut of it).
"""
import copy

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch
from smplx.utils import Struct

from kernel_checks import assert_close64, gen
from spin_fast.body import BodyModel, BodyOutput
from spin_fast.body.model import JOINT_SETS
from spin_fast.constants import NUM_JOINTS, NUM_VERTICES, SMPL_54_TO_49, SMPL_PARENTS

TOL = 1e-5


def random_smpl(seed: int = 0, V: int = NUM_VERTICES, S: int = 10):
    """A random SMPL-format dict (as `spin_fast.body.io.load_smpl` returns) and two regressors."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((V, NUM_JOINTS))
    for v in range(V):
        bones = rng.choice(NUM_JOINTS, size=rng.integers(1, 5), replace=False)
        weights[v, bones] = rng.random(len(bones)) + 0.1
    weights /= weights.sum(1, keepdims=True)

    def sparse_regressor(rows, per_row):
        reg = np.zeros((rows, V))
        for j in range(rows):
            cols = rng.choice(V, size=per_row, replace=False)
            reg[j, cols] = rng.random(per_row) + 0.1
        return reg / reg.sum(1, keepdims=True)

    kintree = np.stack([np.array(SMPL_PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # as in the official files
    smpl = {
        "v_template": rng.normal(scale=0.3, size=(V, 3)),
        "shapedirs": rng.normal(scale=0.02, size=(V, 3, S)),
        "posedirs": rng.normal(scale=0.02, size=(V, 3, 207)),
        "J_regressor": scipy.sparse.csr_matrix(sparse_regressor(NUM_JOINTS, 12)),
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, V, size=(13776, 3)).astype(np.int64),
        "parents": np.array(SMPL_PARENTS, dtype=np.int64),
    }
    # float32-representable values: smplx stores its buffers through float32 whatever its dtype.
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    for k in ("v_template", "shapedirs", "posedirs", "weights"):
        smpl[k] = f32(smpl[k])
    smpl["J_regressor"] = scipy.sparse.csr_matrix(f32(smpl["J_regressor"].toarray()))
    return smpl, sparse_regressor(9, 40), sparse_regressor(17, 40)


def smplx_model(smpl: dict, dtype=torch.float32) -> smplx.SMPL:
    struct = Struct(**{k: smpl[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                                            "weights", "kintree_table", "f")})
    return smplx.SMPL(model_path="", data_struct=struct, create_betas=False, create_global_orient=False,
                      create_body_pose=False, create_transl=False, dtype=dtype)


def random_inputs(B: int, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 10, generator=g, dtype=dtype),
            0.5 * torch.randn(B, 69, generator=g, dtype=dtype),
            0.5 * torch.randn(B, 3, generator=g, dtype=dtype),
            torch.randn(B, 3, generator=g, dtype=dtype))


@pytest.fixture(scope="module")
def random_data():
    return random_smpl()


@pytest.fixture(scope="module")
def models(random_data):
    smpl, extra, h36m = random_data
    return {dt: (BodyModel(smpl, extra, h36m, dtype=dt), smplx_model(smpl, dt))
            for dt in (torch.float32, torch.float64)}


def reference_joints(smpl_data, ref_out, joint_set):
    """Expected joints of a set from smplx's vertices and 45 joints (numpy float64)."""
    _, extra, h36m = smpl_data
    v = ref_out.vertices.detach().double().numpy()
    j45 = ref_out.joints.detach().double().numpy()
    j54 = np.concatenate([j45, np.einsum("jv,bvc->bjc", extra, v)], axis=1)
    return {"smpl_24": j45[:, :NUM_JOINTS], "smpl_45": j45, "smpl_54": j54, "smpl_49": j54[:, SMPL_54_TO_49],
            "h36m_17": np.einsum("jv,bvc->bjc", h36m, v)}[joint_set]


@pytest.mark.parametrize("B", [1, 7, 64])
def test_matches_smplx_random_model_fp32(models, random_data, B):
    ours, ref = models[torch.float32]
    betas, body_pose, orient, _ = random_inputs(B)
    out = ours(betas, body_pose, orient, joint_set="smpl_45")
    expected = ref(betas=betas, body_pose=body_pose, global_orient=orient)
    assert isinstance(out, BodyOutput)
    assert out.vertices.shape == (B, NUM_VERTICES, 3) and out.joints.shape == (B, 45, 3)
    torch.testing.assert_close(out.vertices, expected.vertices, atol=TOL, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints, atol=TOL, rtol=0)
    for joint_set in JOINT_SETS:
        joints = ours(betas, body_pose, orient, joint_set=joint_set).joints
        np.testing.assert_allclose(joints.double().numpy(), reference_joints(random_data, expected, joint_set),
                                   atol=TOL, rtol=0, err_msg=joint_set)


def test_matches_smplx_random_model_fp64_exact(models):
    """In float64 the two evaluations agree to rounding: the algorithm is the same, not close."""
    ours, ref = models[torch.float64]
    betas, body_pose, orient, _ = random_inputs(7, dtype=torch.float64)
    out = ours(betas, body_pose, orient, joint_set="smpl_45")
    expected = ref(betas=betas, body_pose=body_pose, global_orient=orient)
    torch.testing.assert_close(out.vertices, expected.vertices, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints, atol=1e-12, rtol=0)


def test_rotation_matrix_input_equals_axis_angle(models):
    from spin_fast_kernels.kinematic_chain.reference import rodrigues_torch

    ours, _ = models[torch.float32]
    betas, body_pose, orient, _ = random_inputs(5)
    aa = ours(betas, body_pose, orient)
    body_R = rodrigues_torch(body_pose.view(5, 23, 3))
    orient_R = rodrigues_torch(orient)
    for bp, go in [(body_R, orient_R), (body_R, orient_R[:, None]), (body_pose.view(5, 23, 3), orient[:, None]),
                   (body_pose, orient_R)]:
        out = ours(betas, bp, go)
        torch.testing.assert_close(out.vertices, aa.vertices, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.joints, aa.joints, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.rotmats, aa.rotmats, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.joints_only(betas, bp, go), aa.joints, atol=TOL, rtol=0)


def test_transl_moves_vertices_and_joints(models):
    ours, ref = models[torch.float32]
    betas, body_pose, orient, transl = random_inputs(4)
    moved = ours(betas, body_pose, orient, transl=transl)
    still = ours(betas, body_pose, orient)
    torch.testing.assert_close(moved.vertices, still.vertices + transl[:, None], atol=1e-6, rtol=0)
    torch.testing.assert_close(moved.joints, still.joints + transl[:, None], atol=1e-6, rtol=0)
    expected = ref(betas=betas, body_pose=body_pose, global_orient=orient, transl=transl)
    torch.testing.assert_close(ours(betas, body_pose, orient, transl, "smpl_45").joints, expected.joints,
                               atol=TOL, rtol=0)
    torch.testing.assert_close(ours.joints_only(betas, body_pose, orient, transl), moved.joints, atol=TOL, rtol=0)


@pytest.mark.parametrize("joint_set", JOINT_SETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_joints_only_equals_full_forward(models, joint_set, dtype):
    ours, _ = models[dtype]
    betas, body_pose, orient, transl = random_inputs(7, seed=3, dtype=dtype)
    full = ours(betas, body_pose, orient, transl, joint_set=joint_set).joints
    fast = ours.joints_only(betas, body_pose, orient, transl, joint_set=joint_set)
    assert fast.shape == full.shape == (7, ours.joint_sets[joint_set], 3)
    torch.testing.assert_close(fast, full, atol=TOL if dtype == torch.float32 else 1e-12, rtol=0)


@pytest.mark.parametrize("joint_set", ["smpl_49", "h36m_17", "smpl_45"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_joints_only_gradients_equal_full_forward(models, joint_set, dtype):
    ours, _ = models[dtype]
    B = 6
    g = torch.Generator().manual_seed(4)
    upstream = torch.randn(B, ours.joint_sets[joint_set], 3, generator=g, dtype=dtype)

    def grads(fn):
        inputs = [t.clone().requires_grad_(True) for t in random_inputs(B, seed=5, dtype=dtype)]
        # x2: a kernel that assumes an upstream gradient of 1 would not notice otherwise.
        (2 * (fn(*inputs, joint_set=joint_set) * upstream).sum()).backward()
        return [t.grad for t in inputs]

    full = grads(lambda *a, **k: ours(*a, **k).joints)
    fast = grads(ours.joints_only)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for name, a, b in zip(["betas", "body_pose", "global_orient", "transl"], fast, full):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=name)


def test_bad_shapes_raise_clear_errors(models):
    ours, _ = models[torch.float32]
    betas, body_pose, orient, transl = random_inputs(3)
    cases = [
        ((betas[:, :5], body_pose, orient, None), "betas", "(3, 5)"),
        ((betas, body_pose[:, :66], orient, None), "body_pose", "(3, 66)"),
        ((betas, body_pose.view(3, 23, 3)[:2], orient, None), "body_pose", "(2, 23, 3)"),
        ((betas, body_pose, orient[:, :2], None), "global_orient", "(3, 2)"),
        ((betas, body_pose, torch.zeros(3, 2, 3), None), "global_orient", "(3, 2, 3)"),
        ((betas, body_pose, orient, transl[:, :2]), "transl", "(3, 2)"),
    ]
    for fn in (ours, ours.joints_only):
        for args, name, got in cases:
            with pytest.raises(ValueError) as err:
                fn(*args)
            msg = str(err.value)
            assert msg.startswith(name) and got in msg and "accepted" in msg, msg
        with pytest.raises(ValueError, match="joint_set"):
            fn(betas, body_pose, orient, joint_set="coco_17")


def test_missing_regressors_limit_joint_sets(random_data):
    smpl, _, _ = random_data
    model = BodyModel(smpl, None, None)
    assert sorted(model.joint_sets) == ["smpl_24", "smpl_45"]
    betas, body_pose, orient, _ = random_inputs(2)
    with pytest.raises(ValueError, match="regressor was not given"):
        model(betas, body_pose, orient)  # default smpl_49 needs J_regressor_extra
    torch.testing.assert_close(model.joints_only(betas, body_pose, orient, joint_set="smpl_45"),
                               model(betas, body_pose, orient, joint_set="smpl_45").joints, atol=TOL, rtol=0)


def test_buffers_and_rest_joints(models, random_data):
    ours, _ = models[torch.float64]
    smpl = random_data[0]
    assert ours.faces.dtype == torch.long and ours.faces.shape == (13776, 3)
    assert ours.parents.tolist() == SMPL_PARENTS
    J = smpl["J_regressor"].toarray()
    np.testing.assert_allclose(ours.J_template.numpy(), J @ smpl["v_template"], atol=1e-12)
    np.testing.assert_allclose(ours.J_shapedirs.numpy(), np.einsum("jv,vcs->jcs", J, smpl["shapedirs"]), atol=1e-12)
    # Only (joint, bone) pairs a joint's vertices are weighted to are kept.
    for name in ("smpl_49", "h36m_17"):
        assert ours.get_buffer(f"{name}_coeffs").shape[0] < ours.get_buffer(f"{name}_regressor").shape[0] * 24
    # The derived buffers move with the module.
    moved = copy.deepcopy(ours).to(torch.float32)
    assert moved.smpl_49_coeffs.dtype == torch.float32 and moved.smpl_49_pair_joint.dtype == torch.long


def reduced_stand_in(smpl: dict, regressors: list[np.ndarray], stride: int = 41):
    """The stand-in cut down to a few hundred of its vertices: the landmark vertices, the first 4
    vertices of every regressor row, every `stride`-th vertex. Returns the SMPL dict, the regressors
    (columns of the kept vertices, rows renormalised) and the landmark ids in the new numbering."""
    from spin_fast.constants import LANDMARK_VERTEX_IDS

    dense = [smpl["J_regressor"].toarray()] + [np.asarray(r) for r in regressors]
    firsts = [np.nonzero(row)[0][:4] for reg in dense for row in reg]
    keep = np.unique(np.concatenate([LANDMARK_VERTEX_IDS, np.arange(0, len(smpl["v_template"]), stride), *firsts]))
    new_id = np.full(len(smpl["v_template"]), -1)
    new_id[keep] = np.arange(len(keep))
    cut = [reg[:, keep] / reg[:, keep].sum(1, keepdims=True) for reg in dense]
    faces = new_id[smpl["f"]]
    small = {k: smpl[k][keep] for k in ("v_template", "shapedirs", "posedirs", "weights")}
    small.update(J_regressor=scipy.sparse.csr_matrix(cut[0]), f=faces[(faces >= 0).all(1)],
                 parents=smpl["parents"], kintree_table=smpl["kintree_table"])
    return small, cut[1:], new_id[LANDMARK_VERTEX_IDS].tolist()


def test_body_model_on_the_triton_backend_matches_torch(monkeypatch, synthetic_assets):
    """BodyModel picks the four public ops up: with every op on Triton (fp64) vertices, joints,
    joints-only and all input gradients match the torch backend. The model is a cut of the
    stand-in to 329 of its vertices (`reduced_stand_in`; not a multiple of the 32-vertex tile, so
    the last tile is masked): the Triton interpreter needs ~1.5 min for the skinning kernel's
    forward and backward over all 6890 vertices. At full size the ops are compared with the torch
    reference by tests/test_gpu_kernels.py: skinning over all 6890 vertices in its cuda rows,
    joints_only with the stand-in's whole smpl_49 regressor in its interpreter row too."""
    import spin_fast.body.model as body_model
    import spin_fast_kernels.joints_only
    import spin_fast_kernels.kinematic_chain
    import spin_fast_kernels.skinning
    from spin_fast.body.io import load_regressor, load_smpl
    from spin_fast_kernels.skinning.function import BLOCK_V

    # the model really calls the dispatching ops (not the references it falls back to)
    assert body_model.rodrigues is spin_fast_kernels.kinematic_chain.rodrigues
    assert body_model.kinematic_chain is spin_fast_kernels.kinematic_chain.kinematic_chain
    assert body_model.skinning is spin_fast_kernels.skinning.skinning
    assert body_model.joints_only_op is spin_fast_kernels.joints_only.joints_only
    whole = BodyModel.from_paths(synthetic_assets, dtype=torch.float64)  # before the landmarks are remapped
    regressors = [load_regressor(p) for p in (synthetic_assets.j_regressor_extra, synthetic_assets.j_regressor_h36m)]
    small, small_regressors, landmarks = reduced_stand_in(load_smpl(synthetic_assets.smpl("neutral")), regressors)
    monkeypatch.setattr(body_model, "LANDMARK_VERTEX_IDS", landmarks)
    model = BodyModel(small, *small_regressors, dtype=torch.float64)
    V = model.v_template.shape[0]
    assert 2 * BLOCK_V < V < 400 and V % BLOCK_V, V
    # the cut keeps the landmarks: its smpl_45 rest joints 24-44 are the stand-in's landmark vertices
    rest = [torch.zeros(1, n, dtype=torch.float64) for n in (10, 69, 3)]
    torch.testing.assert_close(model.joints_only(*rest, joint_set="smpl_45")[0, NUM_JOINTS:],
                               whole.joints_only(*rest, joint_set="smpl_45")[0, NUM_JOINTS:], atol=1e-12, rtol=0)
    g = gen(0)
    args = [torch.randn(3, 10, generator=g, dtype=torch.float64), 0.3 * torch.randn(3, 69, generator=g,
            dtype=torch.float64), 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)]
    up = torch.randn(3, V, 3, generator=g, dtype=torch.float64)
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("SPIN_FAST_BACKEND", backend)
        xs = [a.clone().requires_grad_(True) for a in args]
        out = model(*xs, joint_set="smpl_49")
        jo = model.joints_only(*xs, joint_set="smpl_49")
        (2 * ((out.vertices * up).sum() + out.joints.square().sum() + jo.square().sum())).backward()
        results[backend] = [out.vertices.detach(), out.joints.detach(), jo.detach()] + [x.grad for x in xs]
    for name, a, b in zip(["vertices", "joints", "joints_only", "betas", "body_pose", "global_orient"],
                          results["triton"], results["torch"]):
        assert_close64(a, b, f"BodyModel {name}")
