"""spin_fast: a fast SPIN training engine (HMR + SMPLify in the loop).

Importing the package touches no GPU driver: kernels are chosen per call from the tensors' device.
"""
__version__ = "0.1.0"
