"""The synthetic SMPL stand-in: SMPL topology and format, anatomy and determinism (the body model built
from its files is checked against smplx in tests/test_smplx_reference_body.py)."""
import numpy as np
import pytest
import torch

from spin_fast.body import BodyModel
from spin_fast.body.io import load_gmm, load_mean_params, load_regressor, load_smpl
from spin_fast.constants import LANDMARK_VERTICES, SMPL_PARENTS
from spin_fast.geometry import rot6d_to_rotmat


@pytest.fixture(scope="module")
def neutral(synthetic_assets):
    return load_smpl(synthetic_assets.smpl("neutral"))


def test_files_and_formats(synthetic_assets, neutral):
    for p in synthetic_assets.body_model_files():
        assert p.is_file(), p
    assert b"chumpy.ch" in synthetic_assets.smpl("neutral").read_bytes()
    assert neutral["v_template"].shape == (6890, 3) and neutral["f"].shape == (13776, 3)
    assert neutral["shapedirs"].shape == (6890, 3, 10) and neutral["posedirs"].shape == (6890, 3, 207)
    assert neutral["parents"].tolist() == SMPL_PARENTS
    w = neutral["weights"]
    assert (w >= 0).all() and np.allclose(w.sum(1), 1) and (np.count_nonzero(w, axis=1) <= 4).all()
    J = neutral["J_regressor"]
    assert J.shape == (24, 6890) and J.nnz < 24 * 400 and np.allclose(np.asarray(J.sum(1)).ravel(), 1)
    for name, rows in (("j_regressor_extra", 9), ("j_regressor_h36m", 17)):
        reg = load_regressor(getattr(synthetic_assets, name), rows, 6890)
        assert np.allclose(reg.sum(1), 1) and (np.count_nonzero(reg, axis=1) <= 400).all()
    gmm = load_gmm(synthetic_assets.gmm)
    assert gmm["means"].shape == (8, 69) and np.isclose(gmm["weights"].sum(), 1)
    mp = load_mean_params(synthetic_assets.mean_params)
    R = rot6d_to_rotmat(torch.tensor(mp["pose"]).view(24, 6).double())
    assert torch.allclose(R[0], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)), atol=1e-6)


def test_closed_genus0_manifold(neutral):
    f = neutral["f"]
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    assert (counts == 2).all(), "every edge is shared by exactly two faces"
    assert 6890 - len(uniq) + len(f) == 2
    # consistently oriented outward: positive enclosed volume, every directed edge appears once
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    v = neutral["v_template"]
    assert np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() > 0


def test_person_proportions_and_landmark_anatomy(synthetic_assets, neutral):
    bm = BodyModel.from_paths(synthetic_assets, dtype=torch.float64)
    z = torch.zeros(1, 69, dtype=torch.float64)
    j = bm.joints_only(torch.zeros(1, 10, dtype=torch.float64), z, torch.zeros(1, 3, dtype=torch.float64),
                       joint_set="smpl_45")[0].numpy()
    v = neutral["v_template"]
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.95
    head, neck, pelvis = j[15], j[12], j[0]
    assert head[1] > neck[1] > pelvis[1] > j[4][1] > j[7][1]                 # head > neck > pelvis > knee > ankle
    assert j[16][0] > 0 > j[17][0] and j[20][0] > j[18][0] > j[16][0]         # left arm at +x, T-pose
    lm = {name: v[vid] for name, vid in LANDMARK_VERTICES.items()}
    assert lm["nose"][2] > head[2] + 0.08 and abs(lm["nose"][0]) < 0.02        # nose in front of the head
    assert lm["leye"][0] > 0 > lm["reye"][0] and lm["leye"][1] > lm["nose"][1]
    assert lm["lear"][0] > lm["leye"][0] and lm["rear"][0] < lm["reye"][0]
    for s in ("L", "R"):
        assert lm[f"{s}BigToe"][2] > j[10 if s == "L" else 11][2] > lm[f"{s}Heel"][2]  # toes front, heel back
        assert lm[f"{s}Heel"][1] < j[7 if s == "L" else 8][1]
    for s, wrist in (("l", j[20]), ("r", j[21])):
        tips = np.array([lm[s + f] for f in ("thumb", "index", "middle", "ring", "pinky")])
        assert (np.abs(tips[:, 0]) > abs(wrist[0]) + 0.1).all()                # fingertips beyond the wrist
        assert np.all(np.diff(tips[:, 2]) < 0)                                  # thumb..pinky front to back


def test_deterministic(tmp_path, synthetic_assets):
    from spin_fast.assets import write_assets

    other = write_assets(tmp_path / "again", seed=0)
    for a, b in zip(synthetic_assets.body_model_files(), other.body_model_files()):
        if a.suffix == ".npz":
            with np.load(a) as x, np.load(b) as y:
                assert all(np.array_equal(x[k], y[k]) for k in x.files)
        else:
            assert a.read_bytes() == b.read_bytes(), a.name
