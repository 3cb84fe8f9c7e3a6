"""Bad input gives a clear ValueError/TypeError naming the problem, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _backend

X = np.zeros((2, 4, 8, 8), dtype=np.float32)
W = np.zeros((6, 4, 3, 3), dtype=np.float32)


@pytest.mark.parametrize("name", ["filters", "kernel_size", "stride", "dilation", "groups"])
@pytest.mark.parametrize(
    "value,error,message",
    [
        (0, ValueError, "must be >= 1, got 0"),
        (-2, ValueError, "must be >= 1, got -2"),
        (1.5, TypeError, "must be a positive integer, got 1.5 of type float"),
        ("3", TypeError, "must be a positive integer, got '3' of type str"),
        (True, TypeError, "must be a positive integer, got True of type bool"),
        (None, TypeError, "must be a positive integer, got None"),
    ],
)
def test_hyper_parameters_must_be_positive_integers(name, value, error, message):
    kwargs = dict(filters=4, kernel_size=3)
    kwargs[name] = value
    with pytest.raises(error, match=f"{name}.*{message}" if name in ("filters", "groups") else message):
        fastconv.Conv2D(**kwargs)


@pytest.mark.parametrize("name", ["stride", "dilation"])
def test_functional_hyper_parameters_are_checked(name):
    with pytest.raises(ValueError, match=f"{name}.*must be >= 1, got 0"):
        fastconv.conv2d(X, W, **{name: 0})
    with pytest.raises(ValueError, match=rf"{name} must be an int or an \(h, w\) pair, got 3 values"):
        fastconv.conv2d(X, W, **{name: (1, 1, 1)})
    with pytest.raises(ValueError, match=rf"{name}\[1\] must be >= 1, got 0"):
        fastconv.conv2d(X, W, **{name: (1, 0)})


def test_pair_arguments_check_each_item():
    with pytest.raises(ValueError, match=r"kernel_size\[0\] must be >= 1, got 0"):
        fastconv.Conv2D(4, (0, 3))


PADDING_FORMS = r'padding must be "valid", "same", an int, \(h, w\) or \(top, bottom, left, right\)'


@pytest.mark.parametrize("padding", ["full", "SAME ", ""])
def test_unknown_padding_string(padding):
    with pytest.raises(ValueError, match=f"{PADDING_FORMS}, got {padding!r}"):
        fastconv.Conv2D(4, 3, padding=padding)
    with pytest.raises(ValueError, match="padding must be"):
        fastconv.conv2d(X, W, padding=padding)


@pytest.mark.parametrize(
    "padding,error,message",
    [
        (1.5, TypeError, f"{PADDING_FORMS}, got 1.5 of type float"),
        (True, TypeError, f"{PADDING_FORMS}, got True of type bool"),
        (-1, ValueError, "padding must be >= 0, got -1"),
        ((1, 2, 3), ValueError, r"got 3 values: \(1, 2, 3\)"),
        ((1, -2), ValueError, "padding w must be >= 0, got -2"),
        ((0, 1, 2, "3"), TypeError, "padding right must be a non-negative integer, got '3'"),
    ],
)
def test_bad_explicit_padding(padding, error, message):
    with pytest.raises(error, match=message):
        fastconv.conv2d(X, W, padding=padding)
    with pytest.raises(error, match=message):
        fastconv.Conv2D(4, 3, padding=padding)


@pytest.mark.parametrize("mode", ["zero", "mirror", None, "REFLECT"])
def test_unknown_padding_mode(mode):
    with pytest.raises(
        ValueError, match=r"padding_mode must be one of \('zeros', 'reflect', 'replicate', 'circular'\)"
    ):
        fastconv.Conv2D(4, 3, padding_mode=mode)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        fastconv.conv2d(X, W, padding=1, padding_mode=mode)


def test_padding_mode_limits_follow_pytorch():
    x = np.zeros((1, 4, 3, 5), np.float32)
    with pytest.raises(ValueError, match="reflect padding must be smaller than the input: top 3 >= 3"):
        fastconv.conv2d(x, W, padding=(3, 0), padding_mode="reflect")
    with pytest.raises(ValueError, match="circular padding must not exceed the input: left 6 > 5"):
        fastconv.conv2d(x, W, padding=(0, 0, 6, 0), padding_mode="circular")
    assert fastconv.conv2d(x, W, padding=(9, 9), padding_mode="replicate").shape == (1, 6, 19, 21)


def test_wrong_ndim():
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, H, W\) or \(C, H, W\), got 2 dimensions"):
        fastconv.conv2d(np.zeros((8, 8), np.float32), W)
    with pytest.raises(ValueError, match="got 5 dimensions"):
        fastconv.Conv2D(4, 3).forward(np.zeros((1, 2, 4, 8, 8), np.float32))
    with pytest.raises(
        ValueError, match=r"weight must have shape \(filters, in_channels/groups, kh, kw\), got 3 dimensions"
    ):
        fastconv.conv2d(X, np.zeros((6, 4, 3)))
    with pytest.raises(ValueError, match="got 0 dimensions"):
        fastconv.conv2d(np.float32(1.0), W)


def test_channels_must_match_the_weights():
    with pytest.raises(
        ValueError, match=r"input has 4 channels but the weight expects 3 \(weight.shape\[1\]=3 x groups=1\)"
    ):
        fastconv.conv2d(X, np.zeros((6, 3, 3, 3), np.float32))
    layer = fastconv.Conv2D(6, 3, in_channels=3)
    with pytest.raises(ValueError, match="input has 4 channels, but the layer expects 3"):
        layer.forward(X)


def test_groups_must_divide_channels_and_filters():
    with pytest.raises(ValueError, match=r"groups=3 must divide both the input channels \(4\) and the filters \(6\)"):
        fastconv.conv2d(X, np.zeros((6, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="groups=4 must divide filters=6"):
        fastconv.Conv2D(6, 3, groups=4)
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        fastconv.Conv2D(6, 3, groups=2, in_channels=3)
    with pytest.raises(ValueError, match=r"groups=4 must divide both the input channels \(6\)"):
        fastconv.Conv2D(4, 3, groups=4).forward(np.zeros((1, 6, 5, 5)))


def test_kernel_larger_than_padded_input():
    with pytest.raises(
        ValueError, match=r"kernel height 3 \(dilation 1, span 3\) is larger than the padded input height 2"
    ):
        fastconv.conv2d(np.zeros((1, 4, 2, 8)), W)
    with pytest.raises(
        ValueError, match=r"kernel width 3 \(dilation 4, span 9\) is larger than the padded input width 8"
    ):
        fastconv.conv2d(X, W, dilation=(1, 4))
    layer = fastconv.Conv2D(2, 5, in_channels=1)
    with pytest.raises(ValueError, match="span 5"):
        layer.output_shape((1, 1, 4, 9))
    # "same" pads enough for any kernel
    assert fastconv.Conv2D(2, 5, padding="same", in_channels=1).output_shape((1, 1, 1, 1)) == (1, 2, 1, 1)


def test_empty_spatial_or_channel_dimensions():
    with pytest.raises(ValueError, match="input height and width must be >= 1, got 0x8"):
        fastconv.conv2d(np.zeros((1, 4, 0, 8)), W)
    with pytest.raises(ValueError, match="at least one channel, got 0"):
        fastconv.Conv2D(2, 1).forward(np.zeros((1, 0, 3, 3)))


@pytest.mark.parametrize(
    "bad,kind",
    [
        (np.zeros((2, 4, 8, 8), dtype=np.complex128), "complex128"),
        (np.zeros((2, 4, 8, 8), dtype=np.int32), "int32"),
        (np.zeros((2, 4, 8, 8), dtype=bool), "bool"),
        (np.zeros((2, 4, 8, 8), dtype=object), "object"),
        (np.full((2, 4, 8, 8), "a"), "<U1"),
    ],
)
def test_unsupported_input_dtypes(bad, kind):
    with pytest.raises(TypeError, match=f"input must hold floating-point numbers.*got dtype {kind}"):
        fastconv.conv2d(bad, W)
    with pytest.raises(TypeError, match=f"got dtype {kind}"):
        fastconv.Conv2D(6, 3).forward(bad)
    with pytest.raises(TypeError, match=f"weight must hold floating-point numbers.*{kind}"):
        fastconv.conv2d(X, np.zeros((6, 4, 3, 3), dtype=bad.dtype) if kind != "<U1" else np.full((6, 4, 3, 3), "a"))


def test_inputs_that_cannot_become_arrays():
    class Hostile:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("no conversion for you")

    with pytest.raises(TypeError, match="input could not be converted to a NumPy array: no conversion for you"):
        fastconv.conv2d(Hostile(), W)
    with pytest.raises(TypeError, match="input could not be converted to a NumPy array: .*inhomogeneous"):
        fastconv.conv2d([[[[1.0, 2.0]], [[1.0]]]], W)  # ragged


@pytest.mark.parametrize("dtype", ["int32", "complex64", "float16", np.uint8, "not-a-dtype"])
def test_unsupported_layer_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fastconv.Conv2D(4, 3, dtype=dtype)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'cpp', 'numpy'\), got 'cuda'"):
        fastconv.Conv2D(4, 3, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fastconv.conv2d(X, W, backend="gpu")


def test_bias_shape():
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\) \(one value per filter\), got \(4,\)"):
        fastconv.conv2d(X, W, np.zeros(4, np.float32))


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward\\(\\) needs a forward\\(\\) first"):
        fastconv.Conv2D(4, 3, in_channels=2).backward(np.zeros((1, 4, 2, 2)))


def test_gradient_shape_must_match_the_last_forward():
    layer = fastconv.Conv2D(6, 3, stride=2, padding="same")
    layer.forward(X)
    with pytest.raises(
        ValueError,
        match=r"grad_output must have the shape of the last forward's output \(2, 6, 4, 4\), got \(2, 6, 8, 8\)",
    ):
        layer.backward(np.zeros((2, 6, 8, 8)))
    with pytest.raises(TypeError, match="grad_output must hold floating-point numbers"):
        layer.backward(np.zeros((2, 6, 4, 4), dtype=np.int64))
    with pytest.raises(
        ValueError, match=r"grad_output must have the output's shape \(2, 6, 6, 6\), got \(2, 6, 5, 5\)"
    ):
        fastconv.conv2d_backward(np.zeros((2, 6, 5, 5)), X, W)


def test_private_core_refuses_inconsistent_arrays_instead_of_crashing():
    core = _backend.core
    x = np.zeros((1, 2, 5, 5))
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="output size does not match"):
        core.forward(x, w, None, np.zeros((1, 3, 4, 4)), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(TypeError, match="expected a native float64 array, got float32"):
        core.forward(x, w.astype(np.float32), None, np.zeros((1, 3, 3, 3)), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="weight: expected a C-contiguous array"):
        core.forward(x, np.asfortranarray(w), None, np.zeros((1, 3, 3, 3)), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="x: strides must be non-negative multiples of the item size"):
        core.forward(x[:, :, ::-1], w, None, np.zeros((1, 3, 3, 3)), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    out = np.zeros((1, 3, 3, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        core.forward(x, w, None, out, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="groups"):
        core.forward(x, w, None, np.zeros((1, 3, 3, 3)), (1, 1), (0, 0, 0, 0), (1, 1), 0)
    with pytest.raises(ValueError, match="expected 4-dimensional arrays, got 2 dimensions"):
        core.backward_data(np.zeros((3, 3)), w, np.zeros((1, 2, 5, 5)), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="bias: expected 1 dimensions, got 2"):
        core.forward(x, w, np.zeros((3, 1)), np.zeros((1, 3, 3, 3)), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    geometry = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    gy = np.zeros((1, 3, 3, 3))
    with pytest.raises(ValueError, match="grad_x: expected the shape of x"):
        core.backward(gy, x, w, np.zeros((1, 2, 5, 4)), np.zeros_like(w), None, *geometry)
    with pytest.raises(ValueError, match="grad_weight: expected the shape of weight"):
        core.backward(gy, x, w, None, np.zeros((3, 2, 3, 2)), None, *geometry)
    with pytest.raises(ValueError, match=r"grad_bias: expected shape \(filters,\)"):
        core.backward(gy, x, w, None, np.zeros_like(w), np.zeros(2), *geometry)
    with pytest.raises(TypeError, match="grad_x: expected a native float64 array, got float32"):
        core.backward(gy, x, w, np.zeros((1, 2, 5, 5), np.float32), np.zeros_like(w), None, *geometry)


def test_checked_geometry_cache_never_lets_a_bool_pass_for_an_int():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    for _ in range(2):  # the second call finds the geometry cached
        assert fastconv.conv2d(x, w, stride=1, groups=1, dilation=(1, 1)).shape == (1, 3, 3, 3)
    for bad in ({"stride": True}, {"groups": True}, {"dilation": (True, 1)}, {"padding": (False, 0)}):
        with pytest.raises(TypeError, match="integer"):
            fastconv.conv2d(x, w, **bad)
