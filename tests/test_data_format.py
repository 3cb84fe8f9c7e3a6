"""Channels-last (NHWC) data: the same answers as NCHW, and no layout copy on the C++ path."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ISAS, assert_close, forced_isa

import fastconv
from fastconv._validation import as_float_input

GEOMETRIES = [
    pytest.param(dict(kernel=(3, 3), stride=1, padding="same", groups=1), id="3x3-same"),
    pytest.param(dict(kernel=(2, 3), stride=2, padding="valid", groups=2, dilation=(2, 1)), id="rect-s2-g2-d2"),
    pytest.param(dict(kernel=(1, 1), stride=1, padding="valid", groups=1), id="1x1"),
    pytest.param(dict(kernel=(1, 1), stride=2, padding="same", groups=1), id="1x1-s2"),
    pytest.param(dict(kernel=(3, 3), stride=2, padding=(0, 1, 2, 1), groups=4), id="depthwise-asym"),
    pytest.param(dict(kernel=(4, 4), stride=3, padding="same", groups=1), id="4x4-s3"),
    pytest.param(dict(kernel=(3, 3), stride=1, padding="same", groups=1, padding_mode="reflect"), id="reflect"),
]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend_isa", [("numpy", None)] + [("cpp", isa) for isa in ISAS], ids=lambda b: b[1] or b[0])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_nhwc_gives_the_nchw_answers(rng, dtype, backend_isa, geometry):
    backend, isa = backend_isa
    g = dict(geometry)
    kernel, groups = g.pop("kernel"), g["groups"]
    x = rng.standard_normal((3, 4, 11, 9)).astype(dtype)
    w = rng.standard_normal((8, 4 // groups, *kernel)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    with forced_isa(isa or fastconv._backend.core.isa()):
        y = fastconv.conv2d(x, w, b, backend=backend, **g)
        gy = rng.standard_normal(y.shape).astype(dtype)
        ref = fastconv.conv2d_backward(gy, x, w, backend=backend, **g)
        y_nhwc = fastconv.conv2d(to_nhwc(x), w, b, backend=backend, data_format="NHWC", **g)
        got = fastconv.conv2d_backward(to_nhwc(gy), to_nhwc(x), w, backend=backend, data_format="NHWC", **g)
    assert y_nhwc.flags.c_contiguous and y_nhwc.shape == (y.shape[0], *y.shape[2:], y.shape[1])
    assert_close(y_nhwc, to_nhwc(y), "output")
    assert_close(got.input, to_nhwc(ref.input), "dL/dX")
    assert_close(got.weight, ref.weight, "dL/dF")
    assert_close(got.bias, ref.bias, "dL/db")


def test_the_cpp_path_writes_channels_last_without_a_layout_copy(rng):
    x = to_nhwc(rng.standard_normal((2, 4, 9, 9)))
    w = rng.standard_normal((6, 4, 3, 3))
    y = fastconv.conv2d(x, w, padding="same", data_format="NHWC")
    # The result is the channels-last buffer the kernels wrote, not a transposed copy of it.
    assert y.base is not None and y.base.shape == (2, 9, 9, 6) and y.flags.c_contiguous
    grads = fastconv.conv2d_backward(np.ones_like(y), x, w, padding="same", data_format="NHWC")
    assert grads.input.base is not None and grads.input.flags.c_contiguous


def strided_views(rng, dtype):
    """Inputs that are views, not copies: (name, view, data_format)."""
    big = rng.standard_normal((4, 10, 30, 41)).astype(dtype)
    nhwc = rng.standard_normal((3, 22, 23, 9)).astype(dtype)
    return [
        ("slices", big[1:, 2:6, 3:25, 4:31], "NCHW"),
        ("column step", big[:3, 1:5, 2:20, 1::2], "NCHW"),
        ("channels-last slice", nhwc[:, 1:21, 2:22, 3:7], "NHWC"),
        ("broadcast batch", np.broadcast_to(big[:1, :4, :20, :17], (3, 4, 20, 17)), "NCHW"),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_strided_views_are_read_in_place_with_the_bits_of_a_copy(rng, dtype, geometry):
    # Slices, a column step, channels-last slices and a broadcast batch: the
    # kernels read each where it lies, on every instruction set, and give the
    # bits that its contiguous copy gives.
    g = dict(geometry)
    kernel, groups = g.pop("kernel"), g["groups"]
    w = rng.standard_normal((8, 4 // groups, *kernel)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    for name, view, data_format in strided_views(rng, dtype):
        assert as_float_input(view, "input") is view, name  # no copy
        copy = np.ascontiguousarray(view)
        gy = rng.standard_normal(fastconv.conv2d(copy, w, b, data_format=data_format, **g).shape).astype(dtype)
        gy_view = np.concatenate([gy, gy], axis=-1)[..., : gy.shape[-1]]  # dL/dy as a view too
        for isa in ISAS:
            with forced_isa(isa):
                want = (
                    fastconv.conv2d(copy, w, b, data_format=data_format, **g),
                    *fastconv.conv2d_backward(gy, copy, w, data_format=data_format, **g),
                )
                got = (
                    fastconv.conv2d(view, w, b, data_format=data_format, **g),
                    *fastconv.conv2d_backward(gy_view, view, w, data_format=data_format, **g),
                )
            for part, a, e in zip(("output", "dL/dX", "dL/dF", "dL/db"), got, want):
                assert a.tobytes() == e.tobytes(), f"{isa}, {name}: {part}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("width", [32, 34])
def test_one_channel_input_gradient_from_grad_y_views_has_the_bits_of_a_copy(rng, dtype, stride, width):
    # The plane scatter (dL/dX of a one-channel input with few filters; at
    # stride 1 with AVX2 only) reads grad_y rows in place where they are
    # whole vectors (32 columns), else copies them (34, a column step,
    # channels last): the same sums in the same order, so the same bits.
    x = rng.standard_normal((2, 1, 13, width)).astype(dtype)
    w = rng.standard_normal((5, 1, 3, 3)).astype(dtype)
    g = dict(stride=stride, padding="same")
    gy = rng.standard_normal(fastconv.conv2d(x, w, **g).shape).astype(dtype)
    column_step = np.repeat(gy, 2, axis=-1)[..., ::2]
    for isa in ISAS:
        with forced_isa(isa):
            want = fastconv.conv2d_backward(gy, x, w, **g).input
            from_view = fastconv.conv2d_backward(column_step, x, w, **g).input
            from_nhwc = fastconv.conv2d_backward(to_nhwc(gy), to_nhwc(x), w, data_format="NHWC", **g).input
        assert from_view.tobytes() == want.tobytes(), isa
        assert from_nhwc.tobytes() == to_nhwc(want).tobytes(), isa
        assert_close(want, fastconv.conv2d_backward(gy, x, w, backend="numpy", **g).input, f"{isa} vs numpy")


def test_views_that_cannot_be_read_in_place_are_copied(rng):
    x = rng.standard_normal((2, 3, 9, 9))
    flipped = x[:, :, ::-1]  # a negative stride
    swapped = x.astype(">f8")  # byte-swapped
    w = rng.standard_normal((4, 3, 3, 3))
    for arr in (flipped, swapped, x.astype(np.float16)):
        assert as_float_input(arr, "input") is not arr
        assert_close(fastconv.conv2d(arr, w), fastconv.conv2d(np.ascontiguousarray(arr, dtype=np.float64), w), "output")


def test_layer_in_nhwc(rng):
    layer = fastconv.Conv2D(6, 3, stride=2, padding="same", data_format="NHWC", dtype="float64", seed=0)
    twin = fastconv.Conv2D(6, 3, stride=2, padding="same", dtype="float64", seed=0)
    x = rng.standard_normal((2, 5, 7, 3))  # N, H, W, C
    y = layer.forward(x)
    assert y.shape == (2, 3, 4, 6) == layer.output_shape(x.shape)
    assert layer.in_channels == 3 and layer.padding_for(x.shape) == (1, 1, 1, 1)
    assert repr(layer).endswith("data_format=NHWC, dtype=float64)")
    twin_y = twin.forward(x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(y, twin_y.transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    grad_w, grad_x = layer.backward(g)
    twin_w, twin_x = twin.backward(g.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(grad_w, twin_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_x, twin_x.transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12)
    # unbatched (H, W, C)
    assert layer.forward(x[0]).shape == (3, 4, 6)


def test_bad_data_format_and_shapes():
    with pytest.raises(ValueError, match=r"data_format must be one of \('NCHW', 'NHWC'\), got 'NWHC'"):
        fastconv.Conv2D(2, 3, data_format="NWHC")
    with pytest.raises(ValueError, match=r"input must have shape \(N, H, W, C\) or \(H, W, C\)"):
        fastconv.conv2d(np.zeros((4, 4)), np.zeros((2, 1, 3, 3)), data_format="NHWC")
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(1, 2, 2, 2\)"):
        fastconv.conv2d_backward(
            np.zeros((1, 2, 2, 2, 1)), np.zeros((1, 4, 4, 1)), np.zeros((2, 1, 3, 3)), data_format="NHWC"
        )
