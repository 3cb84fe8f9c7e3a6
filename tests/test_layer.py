"""Conv2D as a stateful layer: weights, caching for backward, shapes, repr."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import assert_close

import fastconv
from fastconv import _backend
from fastconv._spec import same_padding
from fastconv._validation import as_float_array


@pytest.mark.parametrize(
    "size,kernel,stride,dilation,expected",
    [
        (7, 3, 2, 1, (1, 1)),  # the task's example: symmetric
        (8, 3, 2, 1, (0, 1)),  # odd total: the extra goes bottom/right
        (6, 4, 1, 1, (1, 2)),  # even kernel
        (5, 1, 3, 1, (0, 0)),  # pointwise never pads
        (7, 3, 1, 2, (2, 2)),  # dilation 2 widens the span to 5
        (10, 3, 4, 1, (0, 1)),  # out = ceil(10/4) = 3, total = 2*4 + 3 - 10 = 1
    ],
)
def test_same_padding_follows_tensorflow(size, kernel, stride, dilation, expected):
    assert same_padding(size, kernel, stride, dilation) == expected


def test_same_padding_output_is_ceil_of_input_over_stride():
    for h in range(1, 12):
        for s in range(1, 5):
            layer = fastconv.Conv2D(2, (3, 4), stride=s, padding="same", in_channels=1)
            assert layer.output_shape((1, 1, h, h + 1)) == (1, 2, math.ceil(h / s), math.ceil((h + 1) / s))


def test_default_init_is_pytorchs_and_seeded():
    layer = fastconv.Conv2D(16, (3, 5), in_channels=6, groups=2, seed=0)
    bound = 1 / math.sqrt(6 // 2 * 3 * 5)
    assert layer.weight.shape == (16, 3, 3, 5) and layer.weight.dtype == np.float32
    assert layer.bias.shape == (16,)
    assert np.all(np.abs(layer.weight) <= bound) and np.all(np.abs(layer.bias) <= bound)
    assert np.abs(layer.weight).max() > 0.8 * bound  # spread over the whole range
    again = fastconv.Conv2D(16, (3, 5), in_channels=6, groups=2, seed=0)
    np.testing.assert_array_equal(layer.weight, again.weight)
    np.testing.assert_array_equal(layer.bias, again.bias)
    other = fastconv.Conv2D(16, (3, 5), in_channels=6, groups=2, seed=1)
    assert not np.array_equal(layer.weight, other.weight)


def test_lazy_in_channels_from_first_input(rng):
    layer = fastconv.Conv2D(5, 3, padding="same", seed=0)
    assert layer.weight is None and layer.in_channels is None
    y = layer.forward(rng.standard_normal((2, 3, 6, 6)))
    assert layer.in_channels == 3 and layer.weight.shape == (5, 3, 3, 3)
    assert y.shape == (2, 5, 6, 6) and y.dtype == np.float32
    with pytest.raises(ValueError, match="4 channels, but the layer expects 3"):
        layer.forward(rng.standard_normal((2, 4, 6, 6)))


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_layer_matches_functional_and_stores_gradients(rng, backend):
    layer = fastconv.Conv2D(
        6,
        (3, 2),
        stride=(2, 1),
        padding="same",
        dilation=(1, 2),
        groups=3,
        in_channels=9,
        dtype="float64",
        backend=backend,
        seed=1,
    )
    x = rng.standard_normal((4, 9, 10, 9))
    y = layer(x)
    np.testing.assert_array_equal(
        y, fastconv.conv2d(x, layer.weight, layer.bias, (2, 1), "same", (1, 2), 3, backend=backend)
    )
    g = rng.standard_normal(y.shape)
    grad_w, grad_x = layer.backward(g)
    ref = fastconv.conv2d_backward(g, x, layer.weight, (2, 1), "same", (1, 2), 3, backend=backend)
    np.testing.assert_array_equal(grad_w, ref.weight)
    np.testing.assert_array_equal(grad_x, ref.input)
    assert layer.grad_weight is grad_w
    np.testing.assert_array_equal(layer.grad_bias, ref.bias)


def test_unbatched_input(rng):
    layer = fastconv.Conv2D(4, 3, stride=2, padding="same", dtype="float64", seed=0)
    x = rng.standard_normal((3, 9, 8))
    y = layer.forward(x)
    assert y.shape == (4, 5, 4) == layer.output_shape(x.shape)
    batched = layer.forward(x[None])
    np.testing.assert_array_equal(y, batched[0])
    g = rng.standard_normal(y.shape)
    layer.forward(x)
    grad_w, grad_x = layer.backward(g)
    assert grad_x.shape == x.shape
    layer.forward(x[None])
    grad_w4, grad_x4 = layer.backward(g[None])
    np.testing.assert_array_equal(grad_x, grad_x4[0])
    np.testing.assert_array_equal(grad_w, grad_w4)


def test_forward_keeps_the_input_without_copying_it(rng):
    layer = fastconv.Conv2D(2, 3, dtype="float64", seed=0)
    x = rng.standard_normal((1, 2, 5, 5))
    y = layer.forward(x)
    assert layer._saved[0] is x  # C-contiguous float64: used as it is, not copied
    grad_w, _ = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(grad_w, fastconv.conv2d_backward(np.ones_like(y), x, layer.weight).weight)


def test_no_bias(rng):
    layer = fastconv.Conv2D(3, 2, bias=False, in_channels=2, seed=0)
    assert layer.bias is None
    y = layer.forward(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    layer.backward(np.ones_like(y))
    assert layer.grad_bias is None and layer.grad_weight.shape == (3, 2, 2, 2)


def test_weight_and_bias_setters(rng):
    layer = fastconv.Conv2D(3, 2, in_channels=2, dtype="float64")
    w = rng.standard_normal((3, 2, 2, 2))
    layer.weight = w
    w[...] = 0  # the layer owns a copy
    assert np.abs(layer.weight).sum() > 0
    layer.bias = np.arange(3.0)
    np.testing.assert_array_equal(layer.bias, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 2, 2, 2\), got \(3, 2, 3, 3\)"):
        layer.weight = np.zeros((3, 2, 3, 3))
    with pytest.raises(TypeError, match="weight must hold floating-point numbers.*int64"):
        layer.weight = np.zeros((3, 2, 2, 2), dtype=np.int64)
    with pytest.raises(TypeError, match="complex128"):
        layer.weight = np.zeros((3, 2, 2, 2), dtype=complex)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\), got \(4,\)"):
        layer.bias = np.zeros(4)
    # Setting the weights of a lazy layer fixes its input channels.
    lazy = fastconv.Conv2D(4, 3, groups=2)
    lazy.weight = np.zeros((4, 3, 3, 3))
    assert lazy.in_channels == 6 and lazy.bias.shape == (4,)


def test_empty_batch_gives_empty_results(rng):
    layer = fastconv.Conv2D(4, 3, padding="same", in_channels=2, seed=0)
    y = layer.forward(np.zeros((0, 2, 5, 5), dtype=np.float32))
    assert y.shape == (0, 4, 5, 5)
    grad_w, grad_x = layer.backward(np.zeros((0, 4, 5, 5), dtype=np.float32))
    assert grad_x.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(grad_w, np.zeros((4, 2, 3, 3)))
    np.testing.assert_array_equal(layer.grad_bias, np.zeros(4))


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_nan_and_inf_propagate_as_in_pytorch(backend):
    torch = pytest.importorskip("torch")
    x = np.ones((1, 1, 5, 5))
    x[0, 0, 2, 2] = np.nan
    x[0, 0, 0, 4] = np.inf
    w = np.ones((1, 1, 3, 3))
    y = fastconv.conv2d(x, w, backend=backend)
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(y[np.isfinite(expected)], expected[np.isfinite(expected)])
    assert np.isnan(y).all()  # every 3x3 window of a 5x5 input holds the centre NaN


def test_float32_layer_casts_float64_input_and_results_are_float32(rng):
    layer = fastconv.Conv2D(2, 3, in_channels=1, seed=0)
    y = layer.forward(rng.standard_normal((1, 1, 5, 5)))
    assert y.dtype == np.float32
    grad_w, grad_x = layer.backward(np.ones((1, 2, 3, 3)))
    assert grad_w.dtype == grad_x.dtype == layer.grad_bias.dtype == np.float32


def test_functional_dtype_follows_inputs(rng):
    x32 = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    w32 = rng.standard_normal((1, 1, 2, 2)).astype(np.float32)
    assert fastconv.conv2d(x32, w32).dtype == np.float32
    assert fastconv.conv2d(x32, w32.astype(np.float64)).dtype == np.float64
    assert fastconv.conv2d(x32.astype(np.float16), w32.astype(np.float16)).dtype == np.float32
    y = fastconv.conv2d(x32.tolist(), w32.tolist())  # nested lists of floats work
    assert y.dtype == np.float64 and y.shape == (1, 1, 3, 3)


def test_contiguous_input_of_the_right_dtype_is_not_copied(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert as_float_array(x, "input") is x
    assert as_float_array(x[:, :, ::2], "input") is not x  # a strided view must be made contiguous


def test_non_contiguous_inputs_give_the_same_result(rng):
    x = rng.standard_normal((2, 5, 8, 8))
    w = rng.standard_normal((3, 5, 3, 3))
    fortran = np.asfortranarray(x)
    view = np.ascontiguousarray(x[:, :, ::-1])[:, :, ::-1]
    for arr in (fortran, view):
        assert_close(fastconv.conv2d(arr, w), fastconv.conv2d(x, w), "non-contiguous input")


def test_repr_is_pytorch_style():
    assert repr(fastconv.Conv2D(8, 3, stride=2, padding="same", in_channels=4)) == (
        "Conv2D(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=same)"
    )
    assert repr(fastconv.Conv2D(8, (1, 3), dilation=2, groups=2, bias=False, dtype="float64")) == (
        "Conv2D(None, 8, kernel_size=(1, 3), stride=(1, 1), padding=valid, dilation=(2, 2), "
        "groups=2, bias=False, dtype=float64)"
    )


def test_auto_backend_falls_back_to_numpy_with_a_warning(monkeypatch, rng):
    monkeypatch.setattr(_backend, "core", None)
    monkeypatch.setattr(_backend, "import_error", ImportError("simulated"))
    monkeypatch.setattr(_backend, "_warned", False)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    with pytest.warns(RuntimeWarning, match="falling back to the slower NumPy reference"):
        y = fastconv.conv2d(x, w)
    np.testing.assert_array_equal(y, fastconv.reference.conv2d(x, w))
    with pytest.raises(ImportError, match="simulated"):
        fastconv.conv2d(x, w, backend="cpp")


def test_auto_backend_uses_the_core_without_warning(rng):
    assert _backend.core is not None, "the C++ extension must be built for the tests"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastconv.conv2d(rng.standard_normal((1, 1, 4, 4)), np.ones((1, 1, 2, 2)))
    assert _backend.resolve("auto") == "cpp"


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_backward_can_skip_the_input_gradient(rng, backend, monkeypatch):
    layer = fastconv.Conv2D(4, 3, padding="same", in_channels=3, dtype="float64", backend=backend, seed=0)
    x = rng.standard_normal((2, 3, 6, 6))
    g = rng.standard_normal(layer.forward(x).shape)
    full_w, full_x = layer.backward(g)
    if backend == "cpp":  # the dL/dX kernel must not even run: the core gets no buffer for it
        core_backward = _backend.core.backward

        def backward_without_input_grad(grad_y, x, w, grad_x, *rest):
            assert grad_x is None
            return core_backward(grad_y, x, w, grad_x, *rest)

        monkeypatch.setattr(_backend.core, "backward", backward_without_input_grad)
    grad_w, grad_x = layer.backward(g, need_input_grad=False)
    assert grad_x is None
    np.testing.assert_array_equal(grad_w, full_w)
    grads = fastconv.conv2d_backward(g, x, layer.weight, padding="same", need_input_grad=False, backend=backend)
    assert grads.input is None
    np.testing.assert_array_equal(grads.weight, full_w)
    unbatched = fastconv.conv2d_backward(g[0], x[0], layer.weight, padding="same", need_input_grad=False)
    assert unbatched.input is None and unbatched.weight.shape == full_w.shape
