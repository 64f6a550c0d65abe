"""fit: `spin_fast.fit.run.fit_dataset` over a 512-sample dataset, SPIN's 100 + 100 iterations, in batches of
64 and 512: fits/s of the whole command's work (labels, starting camera, SMPLify, metrics, the file).

Group `fit`, rows `B64` / `B512` on the CPU, and on CUDA the same on the GPU (skipped without one).
The dataset is label-only (no images: `--init static` never reads them): poses of the synthetic
stand-in's sampler, bodies about 50 m from a f = 5000 camera in a 224 px crop, 2 px keypoint noise,
10% invisible keypoints, static fits = the truth + noise. One round (the first batch's warm-up is
counted; on CUDA a warm-up run first captures the graphs). fits/s goes into extra_info.
"""
import numpy as np
import pytest
import torch

from spin_fast.config import AssetPaths
from spin_fast.data.batch import Sources
from spin_fast.data.datasets import get_dataset
from spin_fast.data.humandata import HumanData, spin49_to_humandata, write_humandata, write_static_fits
from spin_fast.data.synth import sample_pose
from spin_fast.fit.run import FitConfig, fit_dataset
from spin_fast.geometry import perspective_projection

from conftest import HAS_CUDA

N = 512
ITERS = 100


@pytest.fixture(scope="module")
def dataset(synthetic_assets):
    from spin_fast.body import BodyModel

    paths = synthetic_assets
    rng = np.random.default_rng(0)
    pose = sample_pose(rng, N)
    betas = np.clip(rng.normal(0, 0.8, (N, 10)), -2.5, 2.5)
    body = BodyModel.from_paths(paths)
    with torch.no_grad():
        t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        joints = body.joints_only(t(betas), t(pose[:, 3:]), t(pose[:, :3]), joint_set="smpl_49")
        cam = t(np.c_[rng.normal(0, 0.1, (N, 2)), rng.uniform(40, 60, N)])
        uv = perspective_projection(joints, cam).double().numpy() + rng.normal(0, 2, (N, 49, 2))
    kp = np.concatenate([uv, (rng.uniform(size=(N, 49, 1)) > 0.1)], -1)
    spec = get_dataset("h36m")
    path = paths.preprocessed(spec.ann_file)
    write_humandata(path, image_path=[f"images/{i:05d}.jpg" for i in range(N)],
                    bbox_xywh=np.tile([0.0, 0.0, 224.0, 224.0], (N, 1)), keypoints2d=spin49_to_humandata(kp)[0],
                    smpl={"body_pose": pose[:, 3:], "global_orient": pose[:, :3], "betas": betas},
                    has_smpl=np.ones(N, bool), config="spin_fast bench fit")
    write_static_fits(paths.static_fits(spec.fits),
                      np.c_[pose + rng.normal(0, 0.08, pose.shape), betas + rng.normal(0, 0.3, betas.shape)])
    return paths, Sources(["h36m"], [HumanData(path)], [paths.images(spec.image_folder)])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not HAS_CUDA, reason="GPU rows need a CUDA GPU"))])
@pytest.mark.parametrize("batch", [64, 512])
def test_fit(benchmark, dataset, tmp_path, batch, device):
    paths, sources = dataset
    cfg = FitConfig("h36m", stage1_iters=ITERS, stage2_iters=ITERS, batch_size=batch, init="static")
    if device == "cuda":
        torch.cuda.set_device(0)
        fit_dataset(sources, paths, cfg, tmp_path / "warmup.npy", device=device, progress=False)
    runs = iter(range(10))

    def run():
        out = fit_dataset(sources, paths, cfg, tmp_path / f"fits{next(runs)}.npy", device=device, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = "fit"
    benchmark.extra_info.update(op="fit", batch=batch, samples=N, iterations=2 * ITERS, device=device,
                                threads=torch.get_num_threads())
    res = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["fits_per_s"] = N / benchmark.stats.stats.mean
    benchmark.extra_info["valid_fraction"] = res.report["valid_fraction"]
    benchmark.extra_info["mean_reprojection_px"] = res.report["mean_reprojection_px"]
    assert res.report["valid_fraction"] > 0.9
