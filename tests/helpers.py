"""Shared test helpers: tolerances and a PyTorch oracle."""

from __future__ import annotations

import contextlib

import numpy as np

from fastconv import _backend

# Every instruction set whose kernels this CPU can run (generic always).
ISAS = _backend.core.supported_isas() if _backend.core is not None else []


@contextlib.contextmanager
def forced_isa(name: str):
    """Run the C++ core on the kernels built for `name`, then restore."""
    core = _backend.core
    before = core.isa()
    core.set_isa(name)
    try:
        yield
    finally:
        core.set_isa(before)


# float64: rtol 1e-10; float32: 1e-4 of the result's scale (its largest |value|).
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """|actual - expected| <= tol * max(|expected|), elementwise, with NaN where expected has NaN."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.size == 0:
        return
    tol = TOLERANCE[expected.dtype]
    scale = max(float(np.nanmax(np.abs(expected), initial=0.0)), np.finfo(expected.dtype).tiny)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def torch_conv(x, weight, bias, grad_y, stride, padding4, dilation, groups):
    """PyTorch's forward and autograd gradients; "same" padding applied with F.pad
    as (left, right, top, bottom), since PyTorch's own padding is symmetric."""
    import torch
    import torch.nn.functional as F

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True) if bias is not None else None
    top, bottom, left, right = padding4
    y = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=stride, dilation=dilation, groups=groups)
    if grad_y is None:
        return y.detach().numpy(), None, None, None
    y.backward(torch.tensor(grad_y))
    gb = bt.grad.numpy() if bt is not None else None
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), gb
