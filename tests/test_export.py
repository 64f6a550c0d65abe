"""ONNX export: the file's outputs equal the torch network's (fixed and dynamic batch, the three
checkpoint kinds), `evaluate --onnx` scores it as the checkpoint, and bad inputs are one line."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from spin_fast.export import main as export_main  # noqa: E402
from spin_fast.export import run as export  # noqa: E402
from spin_fast.model import HMR  # noqa: E402
from spin_fast.model.checkpoint_import import load_model  # noqa: E402
from spin_fast.model.onnx import OUTPUTS, OnnxHMR, example_crops  # noqa: E402

RES = 64  # a small network input: the same graph, far less convolution


def trained_like(mean_params, seed=0) -> HMR:
    """A ResNet-18 HMR whose decoders are not near zero, so every output depends on the image."""
    torch.manual_seed(seed)
    model = HMR("resnet18", mean_params=mean_params, input_res=RES)
    for dec in (model.head.decpose, model.head.decshape, model.head.deccam):
        torch.nn.init.normal_(dec.weight, std=0.02)
    return model.eval()


@pytest.fixture(scope="module")
def pw3d_root(synthetic_data):
    return synthetic_data(per_dataset=3).root


@pytest.fixture(scope="module")
def checkpoints(pw3d_root, tmp_path_factory):
    """The same weights as a spin_fast, an mmhuman3d and a SPIN checkpoint."""
    model = trained_like(pw3d_root / "body_models" / "smpl_mean_params.npz")
    sd = model.state_dict()
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {"spin_fast": folder / "latest.pth", "mmhuman3d": folder / "mmhuman3d.pth", "spin": folder / "spin.pt"}
    torch.save({"meta": {"config": {"model": {"input_res": RES}}}, "state_dict": sd}, paths["spin_fast"])
    torch.save({"meta": {}, "state_dict": {**sd, "disc.fc.weight": torch.zeros(2, 2)}}, paths["mmhuman3d"])
    torch.save({"model": {k.split(".", 1)[1]: v for k, v in sd.items()}, "epoch": 3}, paths["spin"])
    return paths


@pytest.fixture(scope="module")
def exported(checkpoints, pw3d_root, tmp_path_factory):
    """The spin_fast checkpoint exported with a dynamic batch (once for the module)."""
    out = tmp_path_factory.mktemp("onnx") / "hmr.onnx"
    result = export(["--checkpoint", str(checkpoints["spin_fast"]), "--out", str(out), "--dynamic-batch",
                     "--data-root", str(pw3d_root)])
    return out, result


def test_dynamic_batch_file_equals_torch(exported, checkpoints, pw3d_root):
    out, result = exported
    assert result["input_res"] == RES and result["batch"] is None
    assert max(result["max_abs_diff"].values()) <= 1e-4, result
    model = load_model(checkpoints["spin_fast"], pw3d_root / "body_models" / "smpl_mean_params.npz")
    net = OnnxHMR(out)
    assert net.batch is None and net.input_res == RES and net.metadata["backbone"] == "resnet18"
    for B in (1, 5):
        crops = example_crops(B, RES, seed=B)
        got = net.run(crops.numpy())
        with torch.no_grad():
            ref = model(crops)
        for name, g in zip(OUTPUTS, got):
            assert g.shape == tuple(getattr(ref, name).shape)
            np.testing.assert_allclose(g, getattr(ref, name).numpy(), rtol=0, atol=1e-4, err_msg=name)
    # a 224 crop is resized to the file's side as HMR does
    crops = example_crops(2, 224, seed=7)
    with torch.no_grad():
        ref = model(crops)
    np.testing.assert_allclose(net(crops).rotmat.numpy(), ref.rotmat.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind, flags", [("mmhuman3d", ["--batch", "2"]), ("spin", ["--input-res", "96"])])
def test_other_checkpoint_kinds_and_fixed_batch(kind, flags, checkpoints, pw3d_root, tmp_path):
    out = tmp_path / f"{kind}.onnx"
    result = export(["--checkpoint", str(checkpoints[kind]), "--out", str(out), "--data-root", str(pw3d_root), *flags])
    net = OnnxHMR(out)
    res = 96 if kind == "spin" else 224  # mmhuman3d / SPIN files carry no input side: 224 unless asked
    assert net.input_res == res and result["input_res"] == res
    assert net.batch == (2 if kind == "mmhuman3d" else 1)
    assert max(result["max_abs_diff"].values()) <= 1e-4, result
    model = load_model(checkpoints[kind], pw3d_root / "body_models" / "smpl_mean_params.npz")
    model.input_res = None
    crops = example_crops(3, res, seed=3)  # 3 through a fixed-batch file: chunks, the last padded
    with torch.no_grad():
        ref = model(crops)
    got = net(crops)
    for name in OUTPUTS:
        np.testing.assert_allclose(getattr(got, name).numpy(), getattr(ref, name).numpy(), rtol=0, atol=1e-4)


def test_evaluate_onnx_scores_as_the_checkpoint(exported, checkpoints, pw3d_root):
    from spin_fast.evaluate.__main__ import main

    common = ["--data-root", str(pw3d_root), "--batch-size", "2", "--loader", "reference", "--threads", "1",
              "--device", "cpu", "--no-baseline"]
    torch_report = main(["--checkpoint", str(checkpoints["spin_fast"]), *common])
    onnx_report = main(["--onnx", str(exported[0]), *common])
    assert onnx_report["num_samples"] == torch_report["num_samples"] == 3
    assert onnx_report["backbone"] == "resnet18" and onnx_report["onnx"] == str(exported[0].resolve())
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        assert abs(onnx_report[k] - torch_report[k]) < 0.01, (k, onnx_report[k], torch_report[k])


def test_bad_inputs_are_one_line(checkpoints, pw3d_root, tmp_path, capsys):
    def one_error(argv, *words, cmd=export_main, name="export"):
        capsys.readouterr()
        assert cmd(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"spin_fast.{name}: error: "), err
        for w in words:
            assert w in err, (w, err)

    root = ["--data-root", str(pw3d_root)]
    unknown = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, unknown)
    one_error(["--checkpoint", str(unknown), "--out", str(tmp_path / "a.onnx"), *root], str(unknown),
              "unexpected key 'encoder.weight'")
    assert not (tmp_path / "a.onnx").exists()
    kept = tmp_path / "kept.onnx"
    kept.write_bytes(b"someone's file")
    one_error(["--checkpoint", str(checkpoints["spin"]), "--out", str(kept), *root], f"--out {kept} already exists",
              "--overwrite")
    assert kept.read_bytes() == b"someone's file"
    one_error(["--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "b.onnx")], "does not exist")
    one_error(["--checkpoint", str(checkpoints["spin"]), "--out", str(tmp_path / "c.onnx"), "--batch", "0"],
              "--batch must be >= 1")

    from spin_fast.evaluate.__main__ import main as evaluate_main

    def evaluate_cli(argv):
        from spin_fast.cli import run_command
        return run_command("evaluate", evaluate_main, argv)

    one_error(["--onnx", str(kept), *root, "--loader", "reference"], str(kept), "not a readable ONNX model",
              cmd=evaluate_cli, name="evaluate")
    one_error(["--onnx", str(tmp_path / "gone.onnx"), *root], "does not exist", cmd=evaluate_cli, name="evaluate")
    one_error(["--onnx", str(kept), "--bf16", *root], "--bf16", cmd=evaluate_cli, name="evaluate")
