"""Hostile inputs through the public API: each gives the right answer (the
NumPy reference on a well-formed copy) or a clear ValueError/TypeError naming
the argument (MemoryError only for a truly huge allocation) -- never a crash,
a hang, SystemError or garbage. test_errors.py has the everyday mistakes;
this file has the strange ones."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close
from hostile import LAYOUTS, NOT_FLOAT

import fastconv

BACKENDS = ["cpp", "numpy"]
RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 4, 7, 6))
W = RNG.standard_normal((6, 2, 3, 2))  # groups=2
B = RNG.standard_normal(6)
KW = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
GY = RNG.standard_normal(fastconv.conv2d(X, W, B, **KW).shape)


def clean(a):
    """A well-formed copy: a plain, C-contiguous, aligned, native float64 array."""
    return np.array(np.asarray(a), dtype=np.float64, order="C")


def reference(x, w, b, gy, **kw):
    """Output and gradients from the NumPy backend on well-formed copies."""
    kw = {**KW, **kw}
    y = fastconv.conv2d(clean(x), clean(w), None if b is None else clean(b), backend="numpy", **kw)
    grads = fastconv.conv2d_backward(clean(gy), clean(x), clean(w), bias=b is not None, backend="numpy", **kw)
    return y, grads


def run(x, w, b, gy, backend, **kw):
    kw = {**KW, **kw}
    y = fastconv.conv2d(x, w, b, backend=backend, **kw)
    grads = fastconv.conv2d_backward(gy, x, w, bias=b is not None, backend=backend, **kw)
    return y, grads


def assert_same(got, want):
    (y, grads), (y_ref, ref) = got, want
    assert_close(y, y_ref, "output")
    for name, a, e in zip(("dL/dX", "dL/dW", "dL/db"), grads, ref):
        assert_close(a, e, name)


# -- the same numbers in awkward memory: the right answer ------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("role", ["input", "weight", "bias", "grad_output"])
def test_awkward_memory_gives_the_right_answer(backend, layout, role):
    args = dict(input=X, weight=W, bias=B, grad_output=GY)
    args[role] = LAYOUTS[layout](args[role])
    got = run(args["input"], args["weight"], args["bias"], args["grad_output"], backend)
    assert_same(got, reference(X, W, B, GY))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_awkward_memory_in_channels_last_data(backend, layout):
    to_nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    x, gy = LAYOUTS[layout](to_nhwc(X)), LAYOUTS[layout](to_nhwc(GY))
    y = fastconv.conv2d(x, W, B, data_format="NHWC", backend=backend, **KW)
    grads = fastconv.conv2d_backward(gy, x, W, data_format="NHWC", backend=backend, **KW)
    y_ref, ref = reference(X, W, B, GY)
    assert_close(y, to_nhwc(y_ref), "output")
    assert_close(grads.input, to_nhwc(ref.input), "dL/dX")
    assert_close(grads.weight, ref.weight, "dL/dW")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_awkward_memory_through_the_layer(backend, layout):
    layer = fastconv.Conv2D(6, (3, 2), **KW, dtype="float64", backend=backend)
    layer.weight = LAYOUTS[layout](W)
    layer.bias = LAYOUTS[layout](B)
    y = layer.forward(LAYOUTS[layout](X))
    grad_w, grad_x = layer.backward(LAYOUTS[layout](GY))
    y_ref, ref = reference(X, W, B, GY)
    assert_close(y, y_ref, "output")
    assert_close(grad_w, ref.weight, "dL/dW")
    assert_close(grad_x, ref.input, "dL/dX")
    assert_close(layer.grad_bias, ref.bias, "dL/db")


def test_zero_strides_broadcast_input():
    x = np.broadcast_to(X[:1, :, :1, :1], X.shape)  # every stride but one is 0
    for backend in BACKENDS:
        assert_same(run(x, W, B, GY, backend), reference(x, W, B, GY))


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_values_are_refused_not_silently_used(backend):
    # np.asarray would drop the mask and convolve the hidden values.
    x = np.ma.masked_less(X, 0)
    with pytest.raises(ValueError, match=r"input is a masked array with \d+ masked values: fill them first"):
        fastconv.conv2d(x, W, B, backend=backend, **KW)
    with pytest.raises(ValueError, match="weight is a masked array with 1 masked values"):
        fastconv.conv2d(X, np.ma.masked_array(W, mask=W == W.flat[0]), backend=backend, **KW)
    with pytest.raises(ValueError, match="grad_output is a masked array"):
        fastconv.conv2d_backward(np.ma.masked_greater(GY, 0), X, W, backend=backend, **KW)
    # filled, they are ordinary numbers
    assert_same(run(x.filled(0), W, B, GY, backend), reference(x.filled(0), W, B, GY))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,result", [(np.float16, np.float32), (np.longdouble, np.float64)])
def test_other_float_widths_compute_in_float32_or_float64(backend, dtype, result):
    x, w = X.astype(dtype), W.astype(dtype)
    y = fastconv.conv2d(x, w, backend=backend, **KW)
    assert y.dtype == result
    want = fastconv.conv2d(x.astype(result), w.astype(result), backend="numpy", **KW)
    assert_close(y, want, "output")


# -- not floating-point data: TypeError ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(NOT_FLOAT))
@pytest.mark.parametrize("role", ["input", "weight", "bias", "grad_output"])
def test_non_float_data_is_a_type_error(backend, kind, role):
    args = dict(input=X, weight=W, bias=B, grad_output=GY)
    args[role] = NOT_FLOAT[kind](args[role])
    if role == "bias" and args[role] is None:  # None means no bias: fine
        return
    with pytest.raises(TypeError, match=f"{role} (must hold floating-point numbers|could not be converted)"):
        run(args["input"], args["weight"], args["bias"], args["grad_output"], backend)


@pytest.mark.parametrize("kind", list(NOT_FLOAT))
def test_non_float_data_through_the_layer(kind):
    layer = fastconv.Conv2D(6, (3, 2), **KW)
    with pytest.raises(TypeError, match="input (must hold floating-point numbers|could not be converted)"):
        layer.forward(NOT_FLOAT[kind](X))
    layer.forward(X)
    with pytest.raises(TypeError, match="grad_output (must hold floating-point numbers|could not be converted)"):
        layer.backward(NOT_FLOAT[kind](GY))
    with pytest.raises(TypeError, match="weight (must hold floating-point numbers|could not be converted)"):
        layer.weight = NOT_FLOAT[kind](W)


def test_an_array_method_that_fails_with_memory_error_stays_a_memory_error():
    class Huge:
        def __array__(self, *args, **kwargs):
            raise MemoryError("pretend this is 1 PiB")

    with pytest.raises(MemoryError, match="1 PiB"):
        fastconv.conv2d(Huge(), W, groups=2)


# -- shapes: zero sizes and wrong dimensions --------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_empty_batch_gives_empty_results_and_zero_gradients(backend, data_format):
    x = X[:0] if data_format == "NCHW" else X[:0].transpose(0, 2, 3, 1)
    y = fastconv.conv2d(x, W, B, backend=backend, data_format=data_format, **KW)
    nchw = (0, *GY.shape[1:])
    assert y.shape == (nchw if data_format == "NCHW" else (0, *nchw[2:], nchw[1]))
    grads = fastconv.conv2d_backward(y, x, W, backend=backend, data_format=data_format, **KW)
    assert grads.input.shape == x.shape
    np.testing.assert_array_equal(grads.weight, np.zeros_like(W))  # no image, no gradient (not np.empty's garbage)
    np.testing.assert_array_equal(grads.bias, np.zeros_like(B))
    layer = fastconv.Conv2D(6, (3, 2), **KW, data_format=data_format, backend=backend)
    y = layer.forward(x)
    grad_w, grad_x = layer.backward(y)
    assert grad_x.shape == x.shape and not grad_w.any() and not layer.grad_bias.any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "x_shape,w_shape,message",
    [
        ((2, 0, 7, 6), (6, 0, 3, 2), "at least one channel, got 0"),
        ((2, 4, 0, 6), (6, 2, 3, 2), "height and width must be >= 1, got 0x6"),
        ((2, 4, 7, 0), (6, 2, 3, 2), "height and width must be >= 1, got 7x0"),
        ((2, 4, 7, 6), (0, 2, 3, 2), r"weight shape \(0, 2, 3, 2\) has a zero dimension"),
        ((2, 4, 7, 6), (6, 2, 0, 2), r"weight shape \(6, 2, 0, 2\) has a zero dimension"),
        ((2, 4, 7, 6), (6, 2, 3, 0), r"weight shape \(6, 2, 3, 0\) has a zero dimension"),
        ((2, 4, 7, 6), (6, 0, 3, 2), r"weight shape \(6, 0, 3, 2\) has a zero dimension"),
        ((0, 0, 0, 0), (0, 0, 0, 0), "height and width must be >= 1"),
    ],
)
def test_zero_sizes_other_than_the_batch_are_value_errors(backend, x_shape, w_shape, message):
    x, w = np.zeros(x_shape), np.zeros(w_shape)
    with pytest.raises(ValueError, match=message):
        fastconv.conv2d(x, w, backend=backend, groups=2 if w_shape[1] else 1)
    with pytest.raises(ValueError, match=message):
        fastconv.conv2d_backward(np.zeros((2, 6, 5, 5)), x, w, backend=backend, groups=2 if w_shape[1] else 1)


@pytest.mark.parametrize("shape", [(), (3,), (7, 6), (1, 2, 4, 7, 6), (1, 1, 2, 4, 7, 6)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=f"input must have shape .*got {len(shape)} dimensions"):
        fastconv.conv2d(np.zeros(shape), W, groups=2)
    with pytest.raises(ValueError, match=f"got {len(shape)} dimensions"):
        fastconv.Conv2D(6, 3).forward(np.zeros(shape))
    if len(shape) != 4:
        with pytest.raises(ValueError, match=f"weight must have shape .*got {len(shape)} dimensions"):
            fastconv.conv2d(X, np.zeros(shape))
        with pytest.raises(ValueError, match=f"bias must have shape \\(6,\\)"):
            fastconv.conv2d(X, W, np.zeros(shape), groups=2)
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        fastconv.conv2d_backward(np.zeros(shape), X, W, **KW)
