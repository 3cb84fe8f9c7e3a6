"""Hostile inputs through the public API: each gives the right answer (the
NumPy reference on a well-formed copy) or a clear ValueError/TypeError naming
the argument (MemoryError only for a truly huge allocation) -- never a crash,
a hang, SystemError or garbage. test_errors.py has the everyday mistakes;
this file has the strange ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import ISAS, assert_close, forced_isa
from hostile import INT_LIKE, LAYOUTS, NOT_FLOAT, NOT_INT, OUT_OF_RANGE, FloatRaises, ReprRaises

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


@pytest.mark.parametrize("in_channels", [None, 4])
@pytest.mark.parametrize("shape", [(6, 0, 3, 2), (0, 2, 3, 2), (6, 2, 0, 2), (6, 2, 3, 0), (0, 0, 0, 0)])
def test_layer_weights_with_a_zero_dimension(in_channels, shape):
    # With in_channels unknown, a (6, 0, 3, 2) weight once meant 0 input
    # channels and a ZeroDivisionError in the bias initialisation.
    layer = fastconv.Conv2D(6, (3, 2), groups=2, in_channels=in_channels)
    with pytest.raises(
        ValueError, match=r"weight must have shape \(6, .*, 3, 2\), got \(" + ", ".join(map(str, shape))
    ):
        layer.weight = np.zeros(shape)


@pytest.mark.parametrize(
    "shape,error,message",
    [
        ((1, 4, 7.5, 6), TypeError, r"input shape\[2\] must be a non-negative integer, got 7.5"),
        ((1, 4, "7", 6), TypeError, r"input shape\[2\] must be a non-negative integer, got '7'"),
        ((1, True, 7, 6), TypeError, r"input shape\[1\] must be a non-negative integer, got True"),
        ((1, 4, FloatRaises(), 6), TypeError, r"input shape\[2\] must be a non-negative integer"),
        ((1, 4, 2**70, 6), ValueError, r"input shape\[2\] must be <= 2147483647"),
        ((1, 4, -7, 6), ValueError, r"input shape\[2\] must be >= 0, got -7"),
        (7, TypeError, "input shape must be a tuple of ints, got 7"),
        (None, TypeError, "input shape must be a tuple of ints, got None"),
        ((1, 4, 7, 6, 1), ValueError, r"input shape must be \(N, C, H, W\) or \(C, H, W\)"),
    ],
    ids=str,
)
def test_layer_shape_queries_take_integer_shapes(shape, error, message):
    # output_shape() once truncated 7.5 to 7, read "7" as 7, and let the
    # RuntimeError of a hostile __int__ out.
    layer = fastconv.Conv2D(6, (3, 2), **KW)
    with pytest.raises(error, match=message):
        layer.output_shape(shape)
    with pytest.raises(error, match=message):
        layer.padding_for(shape)
    assert layer.output_shape([np.int64(1), 4, np.uint8(7), 6]) == (1, *GY.shape[1:])


@pytest.mark.parametrize("shape", [(), (3,), (7, 6), (1, 2, 4, 7, 6), (1, 1, 2, 4, 7, 6)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=f"input must have shape .*got {len(shape)} dimensions"):
        fastconv.conv2d(np.zeros(shape), W, groups=2)
    with pytest.raises(ValueError, match=f"got {len(shape)} dimensions"):
        fastconv.Conv2D(6, 3).forward(np.zeros(shape))
    if len(shape) != 4:
        with pytest.raises(ValueError, match=f"weight must have shape .*got {len(shape)} dimensions"):
            fastconv.conv2d(X, np.zeros(shape))
        with pytest.raises(ValueError, match="bias must have shape \\(6,\\)"):
            fastconv.conv2d(X, W, np.zeros(shape), groups=2)
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        fastconv.conv2d_backward(np.zeros(shape), X, W, **KW)


# -- hyper-parameters ------------------------------------------------------------

FUNCTIONAL_INTS = ["stride", "dilation", "groups"]


def call_with(name, value, backend="cpp"):
    kw = {**KW, name: value}
    return fastconv.conv2d(X, W, B, backend=backend, **kw)


@pytest.mark.parametrize("value", NOT_INT, ids=lambda v: f"{type(v).__name__}")
@pytest.mark.parametrize("name", FUNCTIONAL_INTS + ["padding"])
def test_hyper_parameters_that_are_not_integers(name, value):
    if name == "padding" and isinstance(value, (str, bytes)):
        return  # a string is a padding name: test_errors.py checks unknown ones
    with pytest.raises(TypeError, match=f"{name}.* must be a (positive|non-negative) integer|padding must be"):
        call_with(name, value)
    if name == "padding":
        return
    with pytest.raises(TypeError, match=f"{name} must be a positive integer"):
        fastconv.Conv2D(6, 3, **{name: value})
    if name != "groups":  # an (h, w) pair: each item is checked
        with pytest.raises(TypeError, match=f"{name}\\[1\\] must be a positive integer"):
            fastconv.Conv2D(6, 3, **{name: (1, value)})


@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=str)
@pytest.mark.parametrize("name", FUNCTIONAL_INTS + ["padding", "kernel_size", "filters"])
def test_hyper_parameters_out_of_range(name, value):
    if name == "padding" and value == 0:
        return  # no padding: fine
    low = "must be >= 0" if name == "padding" else "must be >= 1"
    message = f"{low}|must be <= 2147483647 \\(2\\*\\*31 - 1\\), got {int(value)}"
    with pytest.raises(ValueError, match=message):
        if name in ("kernel_size", "filters"):
            fastconv.Conv2D(**{"filters": 6, "kernel_size": 3, name: value})
        else:
            call_with(name, value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", INT_LIKE, ids=lambda v: type(v).__name__)
def test_numpy_integers_are_integers(backend, value):
    got = fastconv.conv2d(X, W, B, stride=value, padding=(value, 1), dilation=(1, value), groups=value, backend=backend)
    want = fastconv.conv2d(X, W, B, stride=2, padding=(2, 1), dilation=(1, 2), groups=2, backend="numpy")
    assert_close(got, want, "output")
    layer = fastconv.Conv2D(value, value, value, in_channels=4, dtype="float64")
    assert layer.kernel_size == (2, 2) and type(layer.kernel_size[0]) is int


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_largest_stride_and_dilation_work(backend):
    # 2**31 - 1 is accepted; the output is then a single pixel (or the input's
    # own size for a dilated 1x1 kernel).
    big = 2**31 - 1
    assert_same(
        run(X, W, B, GY[:, :, :1, :1], backend, stride=big, padding=0),
        reference(X, W, B, GY[:, :, :1, :1], stride=big, padding=0),
    )
    w1 = W[:, :, :1, :1]
    y = fastconv.conv2d(X, w1, backend=backend, dilation=big, groups=2)
    assert_close(y, fastconv.conv2d(X, w1, backend="numpy", groups=2), "dilated 1x1")
    # One output column: the C++ kernels used to size a buffer by the stride
    # (std::bad_alloc, then std::terminate); the Python layer now passes them
    # the smallest stride with the same result.
    x, w = np.arange(1.0, 3.0).reshape(1, 1, 1, 2), np.array([[[[10.0, 1.0]]]])
    for padding in [0, (0, 0, 0, 1), "same"]:
        y = fastconv.conv2d(x, w, stride=(1, big), padding=padding, backend=backend)
        np.testing.assert_array_equal(y, [[[[12.0]]]])
        grads = fastconv.conv2d_backward(np.ones_like(y), x, w, stride=(1, big), padding=padding, backend=backend)
        np.testing.assert_array_equal(grads.input, [[[[10.0, 1.0]]]])
        np.testing.assert_array_equal(grads.weight, [[[[1.0, 2.0]]]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=2**20),
        dict(padding=(0, 2**30), stride=2**30),
        dict(padding=(2**30, 0, 0, 0), stride=2**30),
        dict(padding=2**28, stride=2**29),
        dict(padding=2**14, dilation=2**15),
    ],
    ids=str,
)
def test_huge_padding_is_refused_before_any_allocation(backend, kwargs):
    # Millions of pixels of padding would take gigabytes in both backends
    # (and once crashed the C++ kernels: see the core tests below).
    with pytest.raises(ValueError, match=r"padding \(.*\) \(top, bottom, left, right\) would add \d+ values"):
        fastconv.conv2d(X, W, groups=2, backend=backend, **kwargs)
    with pytest.raises(ValueError, match="would add"):
        fastconv.Conv2D(6, 3, padding_mode="replicate", backend=backend, **kwargs).forward(X)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_just_inside_the_limit_gives_the_right_answer(backend):
    # A 1x1 input padded to 2049x2047 gains 4194302 values: just under 2**22.
    x = np.ones((1, 1, 1, 1), np.float32)
    w = np.full((1, 1, 2, 2), 2.0, np.float32)
    kw = dict(padding=(1024, 1024, 1024, 1022), stride=1024, backend=backend)
    y = fastconv.conv2d(x, w, **kw)
    # Windows start at rows and columns 0 and 1024; the input sits at
    # (1024, 1024), under tap (0, 0) of window (1, 1) only.
    np.testing.assert_array_equal(y, [[[[0, 0], [0, 2]]]])
    grads = fastconv.conv2d_backward(np.ones_like(y), x, w, **kw)
    np.testing.assert_array_equal(grads.input, [[[[2]]]])
    np.testing.assert_array_equal(grads.weight, [[[[1, 0], [0, 0]]]])
    with pytest.raises(ValueError, match=r"would add 4196351 values to each 1x1x1 input \(padded to 1x2049x2048\)"):
        fastconv.conv2d(x, w, **{**kw, "padding": (1024, 1024, 1024, 1023)})


def test_padding_of_a_large_input_may_add_three_times_its_size():
    x = np.zeros((1, 1, 1, 2**21), np.float32)  # 2M values: padding rows adds 2M each
    assert fastconv.conv2d(x, np.ones((1, 1, 1, 1), np.float32), padding=(1, 2, 0, 0), stride=(1, 2**20)).shape == (
        1,
        1,
        4,
        2,
    )
    with pytest.raises(ValueError, match="at most 3x the input's own values"):
        fastconv.conv2d(x, np.ones((1, 1, 1, 1), np.float32), padding=(2, 2, 0, 0), stride=(1, 2**20))


def test_hostile_values_in_error_messages():
    with pytest.raises(TypeError, match="stride must be a positive integer, got <ReprRaises object>"):
        call_with("stride", ReprRaises())
    with pytest.raises(TypeError, match=r"padding must be .*got <ReprRaises object> of type ReprRaises"):
        call_with("padding", ReprRaises())
    with pytest.raises(ValueError, match="data_format must be one of .*got <ReprRaises object>"):
        fastconv.conv2d(X, W, groups=2, data_format=ReprRaises())
    with pytest.raises(ValueError, match="backend must be one of .*got <ReprRaises object>"):
        fastconv.conv2d(X, W, groups=2, backend=ReprRaises())
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got <ReprRaises object>"):
        fastconv.Conv2D(6, 3, dtype=ReprRaises())
    long = (1, 2) * 1000
    with pytest.raises(
        ValueError, match=r"stride must be an int or an \(h, w\) pair, got 2000 values: \(1, 2, .*\.\.\.$"
    ):
        call_with("stride", long)


@pytest.mark.parametrize(
    "dtype",
    [None, "float16", ">f4", "int32", "f8,f8", ReprRaises()],
    ids=lambda v: type(v).__name__ + str(v if isinstance(v, str) else ""),
)
def test_layer_dtype_must_name_float32_or_float64(dtype):
    # np.dtype(None) is float64: a silent surprise where the default is float32.
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fastconv.Conv2D(6, 3, dtype=dtype)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fastconv.Conv2D.from_keras(np.zeros((3, 3, 4, 6)), dtype=dtype)


@pytest.mark.parametrize("dtype", ["f", "f4", np.float32, np.dtype("=f4"), "single"])
def test_layer_dtype_spellings_of_float32(dtype):
    assert fastconv.Conv2D(6, 3, dtype=dtype).dtype == np.float32


@pytest.mark.parametrize(
    "name,value",
    [
        ("data_format", None),
        ("data_format", "nchw"),
        ("data_format", ["NCHW"]),
        ("data_format", np.array(["NHWC"])),
        ("data_format", b"NCHW"),
        ("padding_mode", None),
        ("padding_mode", b"zeros"),
        ("padding_mode", ["zeros"]),
        ("backend", None),
        ("backend", "CPP"),
        ("backend", b"cpp"),
    ],
    ids=str,
)
def test_string_options_must_be_strings(name, value):
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        fastconv.conv2d(X, W, groups=2, padding=1, **{name: value})
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        fastconv.Conv2D(6, 3, padding=1, **{name: value})


def test_numpy_strings_are_strings():
    got = fastconv.conv2d(
        X,
        W,
        B,
        **{**KW, "padding": np.str_("same")},
        data_format=np.str_("NCHW"),
        padding_mode=np.str_("reflect"),
        backend=np.str_("cpp"),
    )
    want = fastconv.conv2d(X, W, B, **{**KW, "padding": "same"}, padding_mode="reflect", backend="numpy")
    assert_close(got, want, "output")


@pytest.mark.parametrize("value", [None, 1, 0, "no", "", np.zeros(6), [], 1.0])
def test_yes_no_flags_must_be_booleans(value):
    # The bias flag of conv2d_backward is easily given conv2d's bias array.
    with pytest.raises(TypeError, match="bias must be True or False"):
        fastconv.conv2d_backward(GY, X, W, bias=value, **KW)
    with pytest.raises(TypeError, match="need_input_grad must be True or False"):
        fastconv.conv2d_backward(GY, X, W, need_input_grad=value, **KW)
    with pytest.raises(TypeError, match="bias must be True or False"):
        fastconv.Conv2D(6, 3, bias=value)
    layer = fastconv.Conv2D(6, (3, 2), **KW)
    layer.forward(X)
    with pytest.raises(TypeError, match="need_input_grad must be True or False"):
        layer.backward(GY, value)


def test_numpy_booleans_are_booleans():
    grads = fastconv.conv2d_backward(GY, X, W, bias=np.False_, need_input_grad=np.True_, **KW)
    assert grads.bias is None and grads.input is not None
    assert fastconv.Conv2D(6, 3, bias=np.False_).use_bias is False


# -- NaN and Inf ---------------------------------------------------------------------
#
# They propagate as in the reference and PyTorch. Each case is the smallest
# found where the C++ kernels once differed (tests/test_special_values.py
# compares with PyTorch on whole layers).

NAN = float("nan")


def with_isa(isa, f):
    with forced_isa(isa):
        return f()


def nonfinite_cases():
    """(name, call, expected)."""
    x_nan = np.array([[[[1.0, NAN, 1.0]]]])
    w_nan = np.array([[[[1.0, NAN]]]])
    return [
        # dL/dw[q] sums g * x over the pixels tap q reads: x's NaN is read by tap 1 only.
        (
            "dL/dw: a NaN in x reaches only the taps that read it",
            lambda b: fastconv.conv2d_backward(np.ones((1, 1, 1, 1)), x_nan, np.ones((1, 1, 1, 3)), backend=b).weight,
            [[[[1.0, NAN, 1.0]]]],
        ),
        # dL/dx[0] = g[0] * w[0]: pixel 0 is read by tap 0 only (PyTorch: 1 too).
        (
            "dL/dx: a NaN weight reaches only the pixels its tap reads",
            lambda b: fastconv.conv2d_backward(np.ones((1, 1, 1, 3)), np.ones((1, 1, 1, 4)), w_nan, backend=b).input,
            [[[[1.0, NAN, NAN, NAN]]]],
        ),
        # Output rows 0 and 2 read only padding: 0 * NaN is NaN (PyTorch: NaN too).
        (
            "output: a NaN weight times zero padding is NaN",
            lambda b: fastconv.conv2d(
                np.ones((1, 2, 1, 2)), np.concatenate([w_nan, np.ones_like(w_nan)], 1), padding=1, backend=b
            ).ravel(),
            [NAN] * 9,
        ),
    ]


def nonfinite_params():
    for name, call, expected in nonfinite_cases():
        for isa in ISAS:
            yield pytest.param(call, expected, isa, id=f"{name.split(':')[0]}-{isa}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("call,expected,isa", list(nonfinite_params()))
def test_nan_reaches_only_what_it_touches(call, expected, isa):
    np.testing.assert_array_equal(call("numpy"), expected)  # the reference (and PyTorch) agree
    np.testing.assert_array_equal(with_isa(isa, lambda: call("cpp")), expected)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_in_the_input_propagate_to_the_outputs_that_read_them(backend):
    x = X.copy()
    x[0, 1, 3, 2], x[1, 2, 0, 0] = NAN, np.inf
    y = fastconv.conv2d(x, W, B, backend=backend, **KW)
    want = fastconv.conv2d(x, W, B, backend="numpy", **KW)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    assert np.isnan(y).any() and np.isinf(y).any() and np.isfinite(y).any()
    finite = np.isfinite(want)
    assert_close(y[finite], want[finite], "finite outputs")


# -- the C++ core on its own -------------------------------------------------------
#
# The public API refuses these geometries (MAX_INT, the padding limit) or
# normalises them (the stride of a single output); fastconv._core, called
# directly with them, once crashed the process, and must refuse them too. Each
# runs in a subprocess so that a crash fails one test, not the whole run.


def run_core(body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        """
        import numpy as np
        from fastconv import _core
        x = np.ones((1, 1, 6, 6), np.float32)
        w = np.ones((1, 1, 3, 3), np.float32)
        try:
        {body}
        except (ValueError, MemoryError) as exc:
            print("refused:", type(exc).__name__, exc)
        """
    ).format(body=textwrap.indent(textwrap.dedent(body), "    "))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


CORE_CRASHES = {
    # int64 overflow: (padded - span) fits, but the kernels' own sums wrap.
    "forward-padding-2**61-stride-2**62": "_core.forward(x, w, None, np.empty((1, 1, 2, 2), np.float32), "
    "(2**62, 2**62), (2**61,) * 4, (1, 1), 1)",
    # Sizes past 2**31 overflow 32-bit tap indices (SIGSEGV).
    "forward-padding-2**30-stride-2**31": "_core.forward(x, w, None, np.empty((1, 1, 2, 2), np.float32), "
    "(2**31, 2**31), (2**30,) * 4, (1, 1), 1)",
    "backward-data-padding-2**30-stride-2**31": "_core.backward_data(np.ones((1, 1, 2, 2), np.float32), w, "
    "np.empty_like(x), (2**31, 2**31), (2**30,) * 4, (1, 1), 1)",
    # One output column at stride 2**31 - 1: a buffer sized by the stride
    # (std::bad_alloc, then std::terminate).
    "forward-stride-2**31-1-bad-alloc": "_core.forward(np.ones((1, 1, 1, 2)), np.ones((1, 1, 1, 2)), None, "
    "np.empty((1, 1, 1, 1)), (1, 2**31 - 1), (0, 0, 0, 0), (1, 1), 1)",
    # A scratch buffer the size of the padded row cannot be allocated:
    # std::bad_alloc inside the kernels ends in std::terminate (SIGABRT), not MemoryError.
    "forward-padding-2**40-bad-alloc": "_core.forward(x, w, None, np.empty((1, 1, 4, 2), np.float32), "
    "(1, 2**40), (0, 0, 0, 2**40), (1, 1), 1)",
    "backward-data-padding-2**40-bad-alloc": "_core.backward_data(np.ones((1, 1, 4, 2), np.float32), w, "
    "np.empty_like(x), (1, 2**40), (0, 0, 0, 2**40), (1, 1), 1)",
    "backward-weights-padding-2**40-bad-alloc": "_core.backward_weights(np.ones((1, 1, 4, 2), np.float32), x, "
    "np.empty_like(w), (1, 2**40), (0, 0, 0, 2**40), (1, 1), 1)",
}


@pytest.mark.parametrize("body", CORE_CRASHES.values(), ids=CORE_CRASHES.keys())
def test_core_refuses_impossible_geometry_instead_of_crashing(body):
    result = run_core(body)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-300:]}"
    assert "refused:" in result.stdout
