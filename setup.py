"""Packaging of spin_fast; the metadata, dependencies and extras are in pyproject.toml.

This file keeps only the package layout: `kernels/` is a source folder holding the package
`spin_fast_kernels` (Triton kernels and their torch references), mapped here so that the PyPI package
named `kernels` is never shadowed. No hardware is probed here: the Triton/torch choice is made per
call from the tensors' device.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["spin_fast", "spin_fast.*"])
    + find_packages("kernels", include=["spin_fast_kernels", "spin_fast_kernels.*"]),
    package_dir={"spin_fast_kernels": "kernels/spin_fast_kernels"},
)
