"""spin_fast.recipes is the one place that says whose training: every preset value comes from it with
its upstream source, the docs page and --help are generated from it, and no other module spells the
choice of codebase out."""
import re
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest

from spin_fast import recipes as R
from spin_fast.train import config as C

ROOT = Path(__file__).resolve().parents[1]


def test_docs_presets_page_is_generated_from_the_recipes():
    assert (ROOT / "docs" / "presets.md").read_text() == R.markdown(), \
        "docs/presets.md is stale: python -m spin_fast.recipes > docs/presets.md"


@pytest.mark.parametrize("codebase", R.CODEBASES)
def test_every_recipe_value_has_an_upstream_source(codebase):
    rec = R.recipe(codebase)
    for sub in (rec.loss, rec.smplify, rec.data, rec.optim):
        for f in fields(sub):
            if f.name != "sources":
                assert R.source_of(sub, f.name), (codebase, type(sub).__name__, f.name)
    with pytest.raises(FrozenInstanceError):
        rec.smplify.stop = "sample"


def test_the_config_presets_are_the_recipes():
    for cb in R.CODEBASES:
        rec = R.recipe(cb)
        assert C.PRESETS[cb]["smplify.stage1_iters"] == rec.smplify.stage1_iters
        assert C.PRESETS[cb]["data.augmentation"] == rec.data.geometry
        assert C.PRESETS[cb]["optim.lr_decay_epochs"] == list(rec.optim.lr_decay_epochs)
        assert C.PRESETS[cb]["loss.convention"] == rec.loss.averaging
        assert C.PRESETS[cb]["loss.keypoints3d"] == rec.loss.keypoints3d


def test_help_shows_the_recipe_values_with_their_sources(capsys):
    from spin_fast.train.__main__ import parser

    text = parser("spin").format_help()
    assert "utils/train_options.py:43" in text  # the keypoint weight's source
    assert "stop: sample" in text and "valid_fit: mean over the 49 joints < 100" in text
    assert "not reproduced by --preset spin" in text and "crop content" in text
    mmh = parser("mmhuman3d").format_help()
    assert "stop: batch" in mmh and "kp_norm: 223.0" in mmh and "sum over the 49 joints < 10" in mmh


def test_the_codebase_choice_is_spelt_only_in_recipes():
    """No module but spin_fast/recipes.py lists the codebases as a literal pair (they read CODEBASES or
    type Codebase), neither in the package nor in the kernels or the benchmarks."""
    pair = re.compile(r"""[(\[]\s*["'](mmhuman3d|spin)["']\s*,\s*["'](mmhuman3d|spin)["']\s*[)\]]""")
    files = [p for top in ("spin_fast", "kernels", "benches") for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 50
    found = [str(p.relative_to(ROOT)) for p in files if p.name != "recipes.py" and pair.search(p.read_text())]
    assert found == []
    assert pair.search('choices=("spin", "mmhuman3d")') and pair.search('Literal["mmhuman3d", "spin"]')


def test_the_kernel_ops_take_numeric_switches():
    """The reprojection and SMPLify ops are told the data units by a number, never by a codebase name
    (a string switch would be a second spelling of the choice, below the package)."""
    from spin_fast_kernels.reprojection import NORMALISED, PIXELS, reprojection_loss

    name = re.compile(r"""["'](mmhuman3d|spin)["']""")
    found = [str(p.relative_to(ROOT)) for op in ("reprojection", "smplify")
             for p in sorted((ROOT / "kernels" / "spin_fast_kernels" / op).glob("*.py")) if name.search(p.read_text())]
    assert found == []
    import torch

    j, t = torch.zeros(1, 2, 3), torch.tensor([[0.0, 0.0, 10.0]])
    kp, conf = torch.full((1, 2, 2), 112.0 + 22.4), torch.ones(1, 2)
    # a residual of 22.4 px: pixels give GMoF_100(22.4) per coordinate, normalised (2 r / 224 = 0.2) its square's
    px = reprojection_loss(j, t, kp, conf, units=PIXELS, sigma=100.0)
    nm = reprojection_loss(j, t, kp, conf, units=NORMALISED, sigma=100.0)
    rho = lambda x: 1e4 * x * x / (1e4 + x * x)  # noqa: E731
    assert torch.allclose(px, torch.tensor([4 * rho(22.4)]), rtol=1e-5)
    assert torch.allclose(nm, torch.tensor([4 * rho(0.2 ** 2)]), rtol=1e-5)
    with pytest.raises(ValueError, match="units"):
        reprojection_loss(j, t, kp, conf, units="spin")


def test_fit_help_shows_both_smplify_recipes():
    from spin_fast.fit.__main__ import build_parser

    text = build_parser().format_help()
    assert "--preset mmhuman3d: SMPLify recipe (crop geometry mmhuman3d)" in text
    assert "stop: batch" in text and "kp_norm: 223.0" in text and "registrants/smplify.py:381" in text
    assert "valid_fit: mean over the 49 joints < 100" in text and "stage1_iters: 100" in text
