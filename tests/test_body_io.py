"""Loading SMPL-format files without chumpy: official chumpy pickles, plain pickles, npz, refusals."""
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from spin_fast.body.io import AssetError, load_gmm, load_mean_params, load_regressor, load_smpl, safe_load_pickle
from spin_fast.constants import SMPL_PARENTS

V = 50  # a small SMPL-format model: loading does not care about 6890


def small_model(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.random((V, 24))
    w /= w.sum(1, keepdims=True)
    return {
        "v_template": rng.normal(size=(V, 3)), "shapedirs": rng.normal(size=(V, 3, 10)),
        "posedirs": rng.normal(size=(V, 3, 207)), "weights": w,
        "J_regressor": scipy.sparse.random(24, V, density=0.2, random_state=seed, format="csc"),
        "f": rng.integers(0, V, size=(30, 3)).astype(np.uint32),
    }


class FakeCh:
    """What chumpy.ch.Ch pickles as: a new-style object whose state dict holds the array as 'x'."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = set()

    def __reduce_ex__(self, protocol):
        return (_newobj, (FakeCh,), {"x": self.x, "_dirty_vars": set(), "_cache": {}})


def _newobj(cls):
    return cls.__new__(cls)


class FakeCsc:
    """scipy <= 1.7's csc_matrix state."""

    def __init__(self, m):
        self.m = m

    def __reduce_ex__(self, protocol):
        return (_newobj, (FakeCsc,), {"_shape": self.m.shape, "data": self.m.data, "indices": self.m.indices,
                                      "indptr": self.m.indptr, "maxprint": 50})


def write_chumpy_pickle(path, model):
    """Pickle (protocol 2) with FakeCh as chumpy.ch.Ch and FakeCsc as scipy.sparse.csc.csc_matrix,
    with copyreg.__newobj__ as Python 2's cPickle would write it."""
    import copyreg

    kt = np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64)
    kt[0, 0] = 4294967295
    d = {k: FakeCh(model[k]) for k in ("v_template", "shapedirs", "posedirs", "weights")}
    d.update(J_regressor=FakeCsc(model["J_regressor"]), kintree_table=kt, f=model["f"], bs_type="lrotmin")

    def reduce_ch(obj):
        return (copyreg.__newobj__, (FakeCh,), obj.__reduce_ex__(2)[2])

    def reduce_csc(obj):
        return (copyreg.__newobj__, (FakeCsc,), obj.__reduce_ex__(2)[2])

    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    ch_mod, csc_mod = types.ModuleType("chumpy.ch"), types.ModuleType("scipy.sparse.csc")
    ch_mod.Ch, csc_mod.csc_matrix = FakeCh, FakeCsc
    FakeCh.__module__, FakeCh.__qualname__ = "chumpy.ch", "Ch"
    FakeCsc.__module__, FakeCsc.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch_mod, "scipy.sparse.csc": csc_mod})
    try:
        with open(path, "wb") as fh:
            p = pickle.Pickler(fh, protocol=2)
            p.dispatch_table = {FakeCh: reduce_ch, FakeCsc: reduce_csc}
            p.dump(d)
    finally:
        FakeCh.__module__, FakeCh.__qualname__ = __name__, "FakeCh"
        FakeCsc.__module__, FakeCsc.__qualname__ = __name__, "FakeCsc"
        for k, m in saved.items():
            sys.modules.pop(k, None) if m is None else sys.modules.__setitem__(k, m)


def assert_model_equal(loaded, model):
    for k in ("v_template", "shapedirs", "posedirs", "weights"):
        np.testing.assert_array_equal(loaded[k], model[k])
    np.testing.assert_array_equal(loaded["J_regressor"].toarray(), model["J_regressor"].toarray())
    np.testing.assert_array_equal(loaded["f"], model["f"].astype(np.int64))
    assert loaded["parents"].tolist() == SMPL_PARENTS


def test_chumpy_pickle_loads_without_chumpy(tmp_path):
    model = small_model()
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    write_chumpy_pickle(path, model)
    assert b"chumpy.ch" in path.read_bytes() and b"scipy.sparse.csc" in path.read_bytes()
    with pytest.raises(ModuleNotFoundError):  # the real thing is not importable here
        pickle.loads(path.read_bytes(), encoding="latin1")
    assert "chumpy" not in sys.modules
    assert_model_equal(load_smpl(path), model)


def test_project_writer_is_readable_by_the_test_reader(tmp_path):
    """spin_fast.assets writes the same official format (checked with this file's expectations)."""
    from spin_fast.assets import write_smpl_pkl

    model = small_model(1)
    write_smpl_pkl(tmp_path / "m.pkl", model)
    assert_model_equal(load_smpl(tmp_path / "m.pkl"), model)


def test_plain_pickle_and_npz(tmp_path):
    model = small_model(2)
    plain = dict(model, J_regressor=model["J_regressor"].toarray(),
                 kintree_table=np.stack([np.array(SMPL_PARENTS), np.arange(24)]))
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump(plain, fh)
    assert_model_equal(load_smpl(tmp_path / "plain.pkl"), model)
    np.savez(tmp_path / "m.npz", **plain)
    assert_model_equal(load_smpl(tmp_path / "m.npz"), model)


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(AssetError, match=r"evil\.pkl.*refusing to load global '(posix|os)\.system'"):
        load_smpl(path)
    path.write_bytes(pickle.dumps(Evil(), protocol=0))
    with pytest.raises(AssetError, match="refusing"):
        safe_load_pickle(path)


def test_missing_and_malformed_files_name_file_and_expectation(tmp_path):
    with pytest.raises(AssetError, match=r"SMPL_MALE\.pkl: file not found"):
        load_smpl(tmp_path / "SMPL_MALE.pkl")
    model = small_model()
    bad = dict(model, J_regressor=model["J_regressor"].toarray(),
               kintree_table=np.stack([np.array(SMPL_PARENTS), np.arange(24)]))
    del bad["weights"]
    np.savez(tmp_path / "noweights.npz", **bad)
    with pytest.raises(AssetError, match=r"noweights\.npz: missing key 'weights'"):
        load_smpl(tmp_path / "noweights.npz")
    bad["weights"] = np.ones((V, 23))
    np.savez(tmp_path / "badw.npz", **bad)
    with pytest.raises(AssetError, match=r"badw\.npz: key 'weights' has shape \(50, 23\).*expected \(50, 24\)"):
        load_smpl(tmp_path / "badw.npz")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(AssetError, match=r"junk\.pkl: not a readable pickle"):
        load_smpl(tmp_path / "junk.pkl")
    np.save(tmp_path / "reg.npy", np.ones((9, 10)))
    with pytest.raises(AssetError, match=r"reg\.npy: regressor has shape \(9, 10\), expected \(9, 6890\)"):
        load_regressor(tmp_path / "reg.npy", 9, 6890)
    with open(tmp_path / "gmm.pkl", "wb") as fh:
        pickle.dump({"means": np.zeros((8, 69)), "covars": np.zeros((8, 69, 69)), "weights": np.ones(8)}, fh)
    with pytest.raises(AssetError, match="not positive definite"):
        load_gmm(tmp_path / "gmm.pkl")
    np.savez(tmp_path / "mean.npz", pose=np.zeros(144), shape=np.zeros(10))
    with pytest.raises(AssetError, match=r"mean\.npz: missing key 'cam'"):
        load_mean_params(tmp_path / "mean.npz")
