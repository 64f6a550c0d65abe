"""`python -m spin_fast.train --help` explains every config key (what it does, allowed values, default),
from the dataclass field comments; misspelt keys and flags name the nearest known ones."""
import dataclasses
import typing
from dataclasses import dataclass

import pytest

from spin_fast.train import config as C
from spin_fast.train.__main__ import main as train_main
from spin_fast.train.__main__ import parser


def walk(cls, prefix=""):
    """Every leaf key of the config dataclasses, with its default and type (independent of C.leaves)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            yield from walk(f.default_factory, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield f"{prefix}{f.name}", default, hints[f.name]


def help_of(key):
    ap = parser()
    action = next(a for a in ap._actions if a.dest in (f"cfg:{key}", key))
    assert f"--{key}" in action.option_strings or f"--{key.replace('_', '-')}" in action.option_strings
    return action.help


KEYS = list(walk(C.TrainConfig))


def show(value):
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    if isinstance(value, (dict, list)):
        return str(value).replace("'", "")  # YAML flow style: {h36m: 0.35, ...}, [3]
    return str(value)


def test_the_walk_finds_every_key():
    assert len(KEYS) == len(C.leaves()) > 40


@pytest.mark.parametrize("key, default, hint", KEYS, ids=[k for k, _, _ in KEYS])
def test_every_key_has_a_description_allowed_values_and_default(key, default, hint):
    text = help_of(key)
    description, rest = text.split(" [", 1)
    assert len(description.split()) >= 2, text          # says what it does, in words
    allowed, default_part = rest.split("] (default: ", 1)
    assert allowed
    if key in C.PRESETS["mmhuman3d"]:  # filled by the preset: its value, and the other preset's
        assert default is None
        assert default_part.startswith(show(C.PRESETS["mmhuman3d"][key]) + " from --preset mmhuman3d"), text
        assert f"spin: {show(C.PRESETS['spin'][key])}" in default_part, text
    else:
        assert default_part.startswith(show(default)), (text, show(default))
    if key in C.CHOICES:
        assert all(("none" if c is None else c) in allowed for c in C.CHOICES[key])
    if hint is bool:
        assert allowed == "true | false"
    if key in C.POSITIVE:
        assert "> 0" in allowed
    if key in C.DEMO_OVERRIDES:
        assert f"demo: " in default_part


def test_help_runs_and_lists_every_key(capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for key, _, _ in KEYS:
        assert f"--{key} " in out or f"--{key.replace('_', '-')} " in out, key


def test_help_of_the_chosen_preset_puts_its_values_first():
    ap = parser("spin")
    text = next(a for a in ap._actions if a.dest == "cfg:loss.keypoints3d").help
    assert text.endswith("(default: 5.0 from --preset spin; mmhuman3d: 100.0)")


def test_field_comments_reads_trailing_and_continued_comments():
    @dataclass
    class Demo:
        a: int = 1         # the first
        #                    and more of it
        b: str = "#x"      # the second (a '#' in a string is not a comment)
        c: float = 0.0

        # a comment block of its own
        d: int = 2  # the fourth

    assert C.field_comments(Demo) == {"a": "the first and more of it",
                                      "b": "the second (a '#' in a string is not a comment)", "d": "the fourth"}


@pytest.mark.parametrize("key, nearest", [("optim.lrr", "optim.lr"), ("data.batchsize", "data.batch_size"),
                                          ("model.backbon", "model.backbone"), ("smplify.stage1_iter", "smplify.stage1_iters"),
                                          ("batch_size", "data.batch_size")])
def test_a_misspelt_key_suggests_the_nearest(key, nearest):
    with pytest.raises(C.ConfigError, match=rf"unknown config key '{key}' \(did you mean '{nearest}'"):
        C.build_config(overrides={key: "1"})


def test_a_far_off_key_points_at_help():
    with pytest.raises(C.ConfigError, match=r"unknown config key 'zzzz' \(`python -m spin_fast.train --help`"):
        C.build_config(overrides={"zzzz": "1"})


def test_a_misspelt_flag_suggests_the_nearest(capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["--optim.lrr", "1e-4"])
    assert e.value.code == 2
    assert "unrecognized argument --optim.lrr (did you mean --optim.lr" in capsys.readouterr().err


def test_a_misspelt_key_in_a_yaml_file(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("data: {batch_sise: 4}\n")
    assert train_main(["--config", str(tmp_path / "c.yaml")]) == 2
    assert "unknown config key 'data.batch_sise' (did you mean 'data.batch_size'" in capsys.readouterr().err
