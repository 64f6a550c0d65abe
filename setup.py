"""spin_fast: a fast SPIN (HMR + SMPLify-in-the-loop) training engine.

`kernels/` is a source folder holding the package `spin_fast_kernels` (Triton kernels and their
torch references); it is mapped here so that the PyPI package named `kernels` is never shadowed.
No hardware is probed here: the Triton/torch choice is made per call from the tensors' device.
"""
from setuptools import find_packages, setup

EXPORT = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]
VIDEO = ["av>=12"]

setup(
    name="spin_fast",
    version="0.1.0",
    description="Fast SPIN training engine: fused SMPL/SMPLify Triton kernels, DALI loader, PyTorch trainer",
    python_requires=">=3.10",
    packages=find_packages(include=["spin_fast", "spin_fast.*"])
    + find_packages("kernels", include=["spin_fast_kernels", "spin_fast_kernels.*"]),
    package_dir={"spin_fast_kernels": "kernels/spin_fast_kernels"},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "smplx>=0.1.28",
        "pillow>=10",
        "pyyaml>=6",
        "scikit-image>=0.22",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
    ],
    extras_require={
        # DALI ships Linux x86_64/aarch64 wheels only; its CPU operators run without a GPU.
        "dali": ["nvidia-dali-cuda120>=1.40"],
        # the `torchvision` loader (nvJPEG decode on the GPU without DALI): needs the torchvision
        # built for the installed torch, which the CPU-only torch wheels do not have beside them
        "gpu": ["torchvision>=0.19"],
        # `python -m spin_fast.export` and `evaluate --onnx`: torch's ONNX exporter needs onnx and onnxscript;
        # the exported file is checked and run by onnxruntime
        "export": EXPORT,
        # `python -m spin_fast.demo --video`: PyAV reads and writes video with its own bundled FFmpeg
        "video": VIDEO,
        # the SMPL implementations benches/test_bench_body_peers.py times beside spin_fast (their
        # equality tests skip without them); warp-lang runs body-models' Warp skinning on the CPU too
        "bench": ["smplfitter>=0.6", "body-models>=0.26; python_version >= '3.11'", "warp-lang>=1.12"],
        # pytest-xdist: the README's test command runs the suite on every core (`-n auto`); the export
        # and video packages so that their tests run in CI too
        "test": ["pytest>=8", "pytest-benchmark>=4", "pytest-xdist>=3"] + EXPORT + VIDEO,
    },
)
