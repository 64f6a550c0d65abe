"""HMR network: torchvision/mmhuman3d names and shapes, the IEF head, 6D rotations, precision modes."""
import numpy as np
import pytest
import torch

from spin_fast.geometry import rot6d_to_rotmat, rotmat_to_rot6d
from spin_fast.model import HMR, HMROutput, ResNet


def torchvision_backbone_keys(blocks: list[int], bottleneck: bool) -> list[str]:
    """torchvision's resnet state_dict key order without fc.*, written from its architecture."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    n_conv = 3 if bottleneck else 2
    for li, n in enumerate(blocks, 1):
        for b in range(n):
            p = f"layer{li}.{b}."
            for c in range(1, n_conv + 1):
                keys += [f"{p}conv{c}.weight"] + [f"{p}bn{c}.{s}" for s in bn]
            if b == 0 and (bottleneck or li > 1):
                keys += [f"{p}downsample.0.weight"] + [f"{p}downsample.1.{s}" for s in bn]
    return keys


HEAD_KEYS = {  # mmhuman3d HMRHead, ResNet-50 feature 2048
    "head.init_pose": (1, 144), "head.init_shape": (1, 10), "head.init_cam": (1, 3),
    "head.fc1.weight": (1024, 2205), "head.fc1.bias": (1024,), "head.fc2.weight": (1024, 1024),
    "head.fc2.bias": (1024,), "head.decpose.weight": (144, 1024), "head.decpose.bias": (144,),
    "head.decshape.weight": (10, 1024), "head.decshape.bias": (10,), "head.deccam.weight": (3, 1024),
    "head.deccam.bias": (3,),
}


@pytest.fixture(scope="module")
def hmr50():
    torch.manual_seed(0)
    return HMR("resnet50").eval()


def test_resnet50_state_dict_keys_and_shapes(hmr50):
    sd = hmr50.state_dict()
    backbone = [k[len("backbone."):] for k in sd if k.startswith("backbone.")]
    assert len(backbone) == 318
    assert backbone == torchvision_backbone_keys([3, 4, 6, 3], bottleneck=True)
    assert {k: tuple(v.shape) for k, v in sd.items() if k.startswith("head.")} == HEAD_KEYS
    assert set(sd) == {"backbone." + k for k in backbone} | set(HEAD_KEYS)
    shapes = {"conv1.weight": (64, 3, 7, 7), "layer1.0.conv1.weight": (64, 64, 1, 1),
              "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
              "layer3.5.bn3.running_var": (1024,), "layer4.2.conv3.weight": (2048, 512, 1, 1)}
    for k, s in shapes.items():
        assert tuple(sd["backbone." + k].shape) == s, k
    # torchvision resnet50: 25,557,032 parameters, of which fc holds 2048*1000 + 1000
    assert sum(p.numel() for p in hmr50.backbone.parameters()) == 25_557_032 - 2_049_000


def test_resnet18_keys_and_parameter_count():
    net = ResNet("resnet18")
    assert list(net.state_dict()) == torchvision_backbone_keys([2, 2, 2, 2], bottleneck=False)
    assert sum(p.numel() for p in net.parameters()) == 11_689_512 - 513_000  # torchvision resnet18 less fc
    assert net.feature_dim == 512
    with pytest.raises(ValueError, match="resnet34"):
        ResNet("resnet34")


def test_forward_shapes_and_valid_rotations(hmr50):
    with torch.no_grad():
        out = hmr50(torch.randn(2, 3, 224, 224))
    assert isinstance(out, HMROutput)
    assert out.rotmat.shape == (2, 24, 3, 3) and out.pred_rotmat is out.rotmat
    assert out.betas.shape == (2, 10) and out.cam.shape == (2, 3) and out.pose6d.shape == (2, 144)
    R = out.rotmat.double()
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(2, 24, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="img"):
        hmr50(torch.randn(2, 224, 224))


def test_rot6d_to_rotmat_hand_worked_and_round_trip():
    # a1 = elements (0, 2, 4) = (0, 1, 0), a2 = elements (1, 3, 5) = (2, 0, 0)
    x = torch.tensor([0.0, 2.0, 1.0, 0.0, 0.0, 0.0])
    expected = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # columns b1, b2, b1 x b2
    torch.testing.assert_close(rot6d_to_rotmat(x), expected)
    # Gram-Schmidt on a non-orthogonal pair: b2 loses its b1 component
    x = torch.tensor([3.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # a1 = (3,0,0), a2 = (1,1,0)
    torch.testing.assert_close(rot6d_to_rotmat(x), torch.eye(3))
    torch.manual_seed(0)
    R = rot6d_to_rotmat(torch.randn(100, 6, dtype=torch.float64))
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=torch.float64))
    torch.testing.assert_close(rot6d_to_rotmat(rotmat_to_rot6d(R)), R)


def test_head_starts_from_mean_params_when_decoders_are_zero():
    rng = np.random.default_rng(0)
    R = torch.linalg.qr(torch.from_numpy(rng.standard_normal((24, 3, 3))))[0]
    R = R * torch.linalg.det(R)[:, None, None]  # proper rotations
    mean = {"pose": rotmat_to_rot6d(R).reshape(144).float().numpy(),
            "shape": rng.standard_normal(10).astype(np.float32), "cam": np.array([0.8, 0.1, -0.2], np.float32)}
    model = HMR("resnet18", mean_params=mean).eval()
    torch.testing.assert_close(model.head.init_pose, torch.from_numpy(mean["pose"])[None])
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.zeros_(dec.weight)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    # zero weights: each of the 3 iterations adds only the bias
    h = model.head
    torch.testing.assert_close(out.pose6d, (torch.from_numpy(mean["pose"]) + 3 * h.decpose.bias.detach()).expand(2, -1))
    torch.testing.assert_close(out.betas, (torch.from_numpy(mean["shape"]) + 3 * h.decshape.bias.detach()).expand(2, -1))
    torch.testing.assert_close(out.cam, (torch.from_numpy(mean["cam"]) + 3 * h.deccam.bias.detach()).expand(2, -1))
    for dec in (h.decpose, h.decshape, h.deccam):
        torch.nn.init.zeros_(dec.bias)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    torch.testing.assert_close(out.rotmat, R.float().expand(2, -1, -1, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.betas, torch.from_numpy(mean["shape"]).expand(2, -1), atol=0, rtol=0)


def test_head_matches_numpy_ief_reference():
    """Three IEF steps re-done in float64 numpy from the head's weights (eval mode: no dropout)."""
    torch.manual_seed(1)
    model = HMR("resnet18").eval()
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.normal_(dec.weight, std=0.02)  # larger than gain 0.01 so the steps matter
    feat = torch.randn(3, 512)
    with torch.no_grad():
        pose, shape, cam = model.head(feat)
    W = {n: (getattr(model.head, n).weight.detach().double().numpy(), getattr(model.head, n).bias.detach().double().numpy())
         for n in ("fc1", "fc2", "decpose", "decshape", "deccam")}
    lin = lambda n, x: x @ W[n][0].T + W[n][1]  # noqa: E731
    p = np.tile(model.head.init_pose.double().numpy(), (3, 1))
    s = np.tile(model.head.init_shape.double().numpy(), (3, 1))
    c = np.tile(model.head.init_cam.double().numpy(), (3, 1))
    f = feat.double().numpy()
    for _ in range(3):
        x = lin("fc2", lin("fc1", np.concatenate([f, p, s, c], 1)))
        p, s, c = p + lin("decpose", x), s + lin("decshape", x), c + lin("deccam", x)
    np.testing.assert_allclose(pose.numpy(), p, atol=1e-5)
    np.testing.assert_allclose(shape.numpy(), s, atol=1e-5)
    np.testing.assert_allclose(cam.numpy(), c, atol=1e-5)
    assert np.abs(p - np.tile(model.head.init_pose.numpy(), (3, 1))).max() > 1e-2  # the steps moved it


def test_dropout_active_in_train_mode_only():
    torch.manual_seed(0)
    model = HMR("resnet18")
    feat = torch.randn(2, 512)
    model.train()
    a, b = model.head(feat)[0], model.head(feat)[0]
    assert not torch.equal(a, b)
    model.eval()
    torch.testing.assert_close(model.head(feat)[0], model.head(feat)[0], atol=0, rtol=0)


def test_mean_params_from_file_and_bad_dict(synthetic_assets):
    model = HMR("resnet18", mean_params=synthetic_assets.mean_params)
    with np.load(synthetic_assets.mean_params) as f:
        np.testing.assert_array_equal(model.head.init_pose.numpy()[0], f["pose"].astype(np.float32))
        np.testing.assert_array_equal(model.head.init_shape.numpy()[0], f["shape"].astype(np.float32))
        np.testing.assert_array_equal(model.head.init_cam.numpy()[0], f["cam"].astype(np.float32))
    with pytest.raises(ValueError, match="cam"):
        HMR("resnet18", mean_params={"pose": np.zeros(144), "shape": np.zeros(10)})
    with pytest.raises(ValueError, match="shape"):
        HMR("resnet18", mean_params={"pose": np.zeros(144), "shape": np.zeros(9), "cam": np.zeros(3)})


def test_channels_last_and_bf16_autocast_match_fp32():
    torch.manual_seed(0)
    model = HMR("resnet18").eval()
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.normal_(dec.weight, std=0.01)  # outputs that depend on the image
    img = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(img)
        cl_model = HMR("resnet18").eval()
        cl_model.load_state_dict(model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last)
        cl = cl_model(img.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = model(img)
    torch.testing.assert_close(cl.rotmat, ref.rotmat, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cl.cam, ref.cam, atol=1e-4, rtol=1e-4)
    assert bf.rotmat.dtype == bf.betas.dtype == bf.cam.dtype == torch.float32
    spread = (ref.pose6d - model.head.init_pose).abs().max()
    assert spread > 0.05  # the comparison below is not trivially met by the mean
    assert (bf.pose6d - ref.pose6d).abs().max() < 0.1 * spread
    R = bf.rotmat.double()
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-5, rtol=0)


def test_gradients_reach_backbone_and_head():
    torch.manual_seed(0)
    model = HMR("resnet18").train()
    out = model(torch.randn(2, 3, 224, 224))
    (out.rotmat.sum() + out.betas.sum() + out.cam.sum()).backward()
    for name in ("backbone.conv1.weight", "backbone.layer4.1.bn2.weight", "head.fc1.weight", "head.decpose.bias"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    assert model.head.init_pose.grad is None  # buffer, not a parameter


def test_input_res_resizes_as_pil_does_before_the_backbone():
    """With input_res the network sees the crop resized as PIL's antialiased bilinear resize makes it
    (an independent implementation), and an image already at that side is left alone."""
    from PIL import Image

    torch.manual_seed(0)
    model = HMR("resnet18", input_res=64).eval()
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.normal_(dec.weight, std=0.01)
    plain = HMR("resnet18").eval()
    plain.load_state_dict(model.state_dict())
    img = torch.rand(2, 3, 224, 224)
    small = torch.from_numpy(np.stack([np.stack([
        np.asarray(Image.fromarray(img[b, c].numpy(), mode="F").resize((64, 64), Image.BILINEAR))
        for c in range(3)]) for b in range(2)]))
    with torch.no_grad():
        got, want = model(img), plain(small)
        same = model(small)
    assert (want.pose6d - model.head.init_pose).abs().max() > 0.05  # the outputs depend on the image
    torch.testing.assert_close(got.pose6d, want.pose6d, atol=2e-4, rtol=0)
    torch.testing.assert_close(got.cam, want.cam, atol=2e-4, rtol=0)
    torch.testing.assert_close(same.pose6d, want.pose6d, atol=0, rtol=0)
    with pytest.raises(ValueError, match="input_res"):
        HMR("resnet18", input_res=16)


def test_load_model_takes_input_res_from_a_spin_fast_checkpoint(tmp_path):
    from spin_fast.model.checkpoint_import import CheckpointError, load_model

    sd = {f"{k}": v for k, v in HMR("resnet18").state_dict().items()}
    for meta, want in (({"step": 1, "config": {"model": {"input_res": 64}}}, 64),
                       ({"step": 1, "config": {"model": {"input_res": None}}}, None), ({}, None)):
        torch.save({"meta": meta, "state_dict": sd}, tmp_path / "c.pth")
        assert load_model(tmp_path / "c.pth").input_res == want
    torch.save({"meta": {"config": {"model": {"input_res": "64"}}}, "state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth.*meta\.config\.model\.input_res"):
        load_model(tmp_path / "bad.pth")
