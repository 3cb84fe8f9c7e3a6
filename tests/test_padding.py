"""Explicit and asymmetric padding, and padding modes, against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import fastconv

torch = pytest.importorskip("torch")
F = torch.nn.functional

EXPLICIT = [
    (2, (2, 2, 2, 2)),
    ((1, 3), (1, 1, 3, 3)),
    ((0, 2, 3, 1), (0, 2, 3, 1)),  # asymmetric: what PyTorch's Conv2d cannot take
    ([1, 0, 0, 2], (1, 0, 0, 2)),
]
MODES = ["zeros", "reflect", "replicate", "circular"]


def torch_reference(x, w, b, grad_y, stride, pads, mode, dilation=1, groups=1):
    """PyTorch: F.pad in the mode (zeros = constant), then a convolution without padding."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    top, bottom, left, right = pads
    torch_mode = "constant" if mode == "zeros" else mode
    y = F.conv2d(
        F.pad(xt, (left, right, top, bottom), mode=torch_mode), wt, bt, stride=stride, dilation=dilation, groups=groups
    )
    y.backward(torch.tensor(grad_y))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding,pads", EXPLICIT, ids=["int", "pair", "asym", "list"])
@pytest.mark.parametrize("stride", [1, 2])
def test_explicit_padding_and_modes_match_pytorch(rng, backend, dtype, mode, padding, pads, stride):
    x = rng.standard_normal((2, 4, 7, 9)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, groups=2, padding_mode=mode, backend=backend)
    y = fastconv.conv2d(x, w, b, **kwargs)
    g = rng.standard_normal(y.shape).astype(dtype)
    grads = fastconv.conv2d_backward(g, x, w, **kwargs)
    expected = torch_reference(x, w, b, g, stride, pads, mode, groups=2)
    for name, got, want in zip(("output", "dL/dX", "dL/dF", "dL/db"), (y, *grads), expected):
        assert_close(got, want, f"{mode} {padding}: {name}")


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("mode", MODES)
def test_same_padding_with_modes_matches_pytorch_conv2d(rng, mode):
    """nn.Conv2d(padding="same", padding_mode=...) at stride 1, weights shared."""
    conv = torch.nn.Conv2d(3, 5, (3, 4), padding="same", padding_mode=mode, dtype=torch.float64)
    layer = fastconv.Conv2D(5, (3, 4), padding="same", padding_mode=mode, in_channels=3, dtype="float64")
    layer.weight = conv.weight.detach().numpy()
    layer.bias = conv.bias.detach().numpy()
    x = rng.standard_normal((2, 3, 6, 7))
    xt = torch.tensor(x, requires_grad=True)
    yt = conv(xt)
    y = layer.forward(x)
    assert_close(y, yt.detach().numpy(), f"{mode} output")
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    grad_w, grad_x = layer.backward(g)
    assert_close(grad_x, xt.grad.numpy(), f"{mode} dL/dX")
    assert_close(grad_w, conv.weight.grad.numpy(), f"{mode} dL/dF")
    assert_close(layer.grad_bias, conv.bias.grad.numpy(), f"{mode} dL/db")


def test_padding_for_reports_the_padding_used():
    assert fastconv.Conv2D(2, 4, stride=2, padding="same").padding_for((1, 1, 8, 8)) == (1, 1, 1, 1)
    assert fastconv.Conv2D(2, 3, stride=2, padding="same").padding_for((1, 8, 8)) == (0, 1, 0, 1)
    assert fastconv.Conv2D(2, 3, padding="valid").padding_for((1, 1, 8, 8)) == (0, 0, 0, 0)
    assert fastconv.Conv2D(2, 3, padding=(1, 2)).padding_for((1, 1, 8, 8)) == (1, 1, 2, 2)
    assert fastconv.Conv2D(2, 3, padding=(0, 1, 2, 3)).padding_for((1, 1, 8, 8)) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="input shape must be"):
        fastconv.Conv2D(2, 3).padding_for((8, 8))


def test_layer_with_padding_mode_matches_the_functional_api(rng):
    layer = fastconv.Conv2D(4, 3, padding=(1, 2, 0, 1), padding_mode="reflect", in_channels=2, dtype="float64", seed=0)
    assert repr(layer) == (
        "Conv2D(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 2, 0, 1), padding_mode=reflect, dtype=float64)"
    )
    x = rng.standard_normal((3, 2, 5, 6))
    y = layer.forward(x)
    kwargs = dict(padding=(1, 2, 0, 1), padding_mode="reflect")
    np.testing.assert_array_equal(y, fastconv.conv2d(x, layer.weight, layer.bias, **kwargs))
    g = rng.standard_normal(y.shape)
    grad_w, grad_x = layer.backward(g)
    ref = fastconv.conv2d_backward(g, x, layer.weight, **kwargs)
    np.testing.assert_array_equal(grad_x, ref.input)
    np.testing.assert_array_equal(grad_w, ref.weight)
    assert grad_x.shape == x.shape
