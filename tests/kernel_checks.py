"""Shared checks of the Triton kernel tests (tests/test_kernels_*.py): batch sizes and the tolerance rule."""
ODD_BATCHES = [1, 3, 17]


def batches(device, extra=()):
    """Odd batch sizes (masked lanes), plus full size on CUDA where the interpreter is off."""
    return ODD_BATCHES + list(extra) + ([1024] if device == "cuda" else [])


def assert_as_good_as_torch(ours, torch32, ref64, what):
    """|ours - ref64| <= 2 |torch32 - ref64| + 1e-6 max|ref64|, elementwise maxima: the kernel may be at
    most twice as wrong as PyTorch at the same precision, both measured against an fp64 reference."""
    assert ours.shape == ref64.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref64.shape)}"
    ref64 = ref64.double()
    err_ours = (ours.double() - ref64).abs().max().item()
    err_torch = (torch32.double() - ref64).abs().max().item()
    floor = 1e-6 * ref64.abs().max().item()
    assert err_ours <= 2 * err_torch + floor, (
        f"{what}: kernel error {err_ours:.3g} > 2 x torch fp32 error {err_torch:.3g} + floor {floor:.3g}")
