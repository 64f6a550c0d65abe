"""Checkpoint import: mmhuman3d, original SPIN and spin_fast layouts; refusals name the key."""
import collections

import pytest
import torch

from spin_fast.model.checkpoint_import import (CheckpointError, extract_state_dict, infer_backbone,
                                             load_hmr_weights, read_checkpoint)
from spin_fast.model import HMR


def mmhuman3d_resnet50_shapes() -> dict[str, tuple]:
    """Every `backbone.*` / `head.*` name and shape of an mmhuman3d SPIN (ResNet-50) checkpoint,
    written from the architecture (torchvision Bottleneck, expansion 4) rather than from our model."""
    shapes: dict[str, tuple] = {}

    def bn(prefix, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{s}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["backbone.conv1.weight"] = (64, 3, 7, 7)
    bn("backbone.bn1", 64)
    inplanes = 64
    for li, n in enumerate([3, 4, 6, 3], 1):
        planes = 64 * 2 ** (li - 1)
        for b in range(n):
            p = f"backbone.layer{li}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            bn(f"{p}.bn3", 4 * planes)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    shapes.update({
        "head.init_pose": (1, 144), "head.init_shape": (1, 10), "head.init_cam": (1, 3),
        "head.fc1.weight": (1024, 2048 + 157), "head.fc1.bias": (1024,), "head.fc2.weight": (1024, 1024),
        "head.fc2.bias": (1024,), "head.decpose.weight": (144, 1024), "head.decpose.bias": (144,),
        "head.decshape.weight": (10, 1024), "head.decshape.bias": (10,), "head.deccam.weight": (3, 1024),
        "head.deccam.bias": (3,)})
    return shapes


def random_weights(shapes: dict, seed: int = 0) -> collections.OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict(
        (k, torch.randint(0, 100, s, generator=g) if k.endswith("num_batches_tracked")
         else torch.randn(s, generator=g)) for k, s in shapes.items())


JUNK = {  # parts of an mmhuman3d checkpoint that are not the network
    "body_model_train.v_template": (6890, 3), "body_model_train.shapedirs": (6890, 3, 10),
    "body_model_train.J_regressor": (24, 6890), "body_model_train.faces_tensor": (13776, 3),
    "body_model_test.v_template": (6890, 3), "body_model_test.J_regressor_extra": (9, 6890),
    "disc.beta_discriminator.fc_blocks.regressor_fc_0.weight": (10, 10),
    "disc.pose_discriminator.conv_blocks.conv_0.weight": (32, 9, 1, 1),
}


@pytest.fixture(scope="module")
def shapes():
    return mmhuman3d_resnet50_shapes()


@pytest.fixture(scope="module")
def weights(shapes):
    return random_weights(shapes)


@pytest.fixture
def model():
    return HMR("resnet50")


def assert_loaded(model, weights):
    sd = model.state_dict()
    assert set(sd) == set(weights)
    for k, v in weights.items():
        assert torch.equal(sd[k], v.to(sd[k].dtype)), k


def test_mmhuman3d_checkpoint_loads_strictly(tmp_path, shapes, weights, model):
    assert len([k for k in shapes if k.startswith("backbone.")]) == 318
    sd = collections.OrderedDict(weights)
    sd.update({k: torch.zeros(s) for k, s in JUNK.items()})
    path = tmp_path / "spin_pw3d.pth"
    torch.save({"meta": {"epoch": 10, "iter": 31250, "mmcv_version": "1.5.0", "CLASSES": None},
                "state_dict": sd}, path)
    load_hmr_weights(model, path)
    assert_loaded(model, weights)
    assert infer_backbone(read_checkpoint(path)) == "resnet50"


def test_spin_original_unprefixed(tmp_path, weights, model):
    unprefixed = {k.split(".", 1)[1]: v for k, v in weights.items()}
    assert "conv1.weight" in unprefixed and "decpose.bias" in unprefixed and "init_pose" in unprefixed
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"model": unprefixed, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3,
                "batch_idx": 0, "batch_size": 64, "total_step_count": 0}, path)
    load_hmr_weights(model, path)
    assert_loaded(model, weights)


def test_spin_fast_own_and_ddp_prefix(tmp_path):
    torch.manual_seed(3)
    src = HMR("resnet18")
    dst = HMR("resnet18")
    path = tmp_path / "latest.pth"
    torch.save({"meta": {"step": 5}, "state_dict": src.state_dict(), "optimizer": {}}, path)
    load_hmr_weights(dst, path)
    assert_loaded(dst, src.state_dict())
    dst = HMR("resnet18")
    load_hmr_weights(dst, {"model": {"module." + k: v for k, v in src.state_dict().items()}})
    assert_loaded(dst, src.state_dict())
    assert infer_backbone(src.state_dict()) == "resnet18"


def test_renamed_key_is_refused_by_name(weights, model):
    sd = dict(weights)
    sd["backbone.layer2.1.bn2.wieght"] = sd.pop("backbone.layer2.1.bn2.weight")
    with pytest.raises(CheckpointError) as err:
        load_hmr_weights(model, {"state_dict": sd})
    assert "backbone.layer2.1.bn2.weight" in str(err.value) and "backbone.layer2.1.bn2.wieght" in str(err.value)
    assert "missing 1" in str(err.value) and "unexpected 1" in str(err.value)


def test_missing_and_foreign_keys_are_refused(weights, model):
    sd = dict(weights)
    del sd["head.init_cam"]
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): head.init_cam"):
        load_hmr_weights(model, {"state_dict": sd})
    with pytest.raises(CheckpointError, match="neck.fc.weight"):
        load_hmr_weights(model, {"state_dict": {**weights, "neck.fc.weight": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="meta"):
        load_hmr_weights(model, {"state_dict": {**weights, "meta": {"epoch": 1}}})


def test_misshaped_key_is_refused_by_name(weights, model):
    sd = dict(weights)
    sd["head.fc1.weight"] = torch.zeros(1024, 669)  # a ResNet-18 head
    before = model.state_dict()["head.fc2.weight"].clone()
    with pytest.raises(CheckpointError, match=r"head.fc1.weight \(1024, 669\) \(model expects \(1024, 2205\)\)"):
        load_hmr_weights(model, {"state_dict": sd})
    assert torch.equal(model.state_dict()["head.fc2.weight"], before)  # nothing half-loaded


def test_resnet18_checkpoint_into_resnet50_is_refused(model, tmp_path):
    torch.save({"state_dict": HMR("resnet18").state_dict()}, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"r18\.pth: checkpoint is resnet18, config asks resnet50"):
        load_hmr_weights(model, tmp_path / "r18.pth")


class NotATensor:  # module level so that torch.save can pickle it
    pass


def test_weights_only_reading(tmp_path, weights, model):
    path = tmp_path / "pickled.pth"
    torch.save({"meta": {"hook": NotATensor()}, "state_dict": weights}, path)
    with pytest.raises(CheckpointError, match="weights_only=True.*--trust-checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_hmr_weights(model, path)
    load_hmr_weights(model, path, trust=True)
    assert_loaded(model, weights)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pth"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="expected a dict"):
        extract_state_dict([1, 2])
    with pytest.raises(CheckpointError, match="no backbone/head weights"):
        extract_state_dict({"state_dict": {"disc.w": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="'head.fc1.weight' is a list"):
        extract_state_dict({"state_dict": {"head.fc1.weight": [1.0]}})
    with pytest.raises(CheckpointError, match="neither ResNet-50 nor ResNet-18"):
        infer_backbone({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}})
