"""The Winograd kernels (csrc/winograd_*), which 3x3 layers at stride 1 with
48 or more channels and filters per group take: F(2x2, 3x3) forward and in
dL/dx (a stride-1 forward of grad_y), F(3x3, 2x2) for dL/dweight. Against the
NumPy reference, on every instruction set, with the geometry's edges (odd
sizes, asymmetric padding, groups, channels-last), thread counts and NaN/Inf.

Every shape here meets the path's conditions: 3x3, stride 1, at least 48
channels and filters per group, output rows of 14 or more pixels (7 tiles; 28
for dL/dweight with AVX-512), transformed weights of at most 4 MiB. Dilated
layers take it phase by phase, each phase an undilated layer."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ISAS, assert_close, forced_isa

import fastconv

SIMD_ISAS = [isa for isa in ISAS if isa != "generic"]
DTYPES = [np.float32, np.float64]

# (x shape, filters, padding, groups, data format)
CASES = [
    pytest.param((2, 64, 6, 28), 64, "same", 1, "NCHW", id="same"),
    pytest.param((1, 48, 7, 31), 50, "same", 1, "NCHW", id="odd-sizes-partial-filter-block"),
    pytest.param((2, 64, 9, 32), 48, "valid", 1, "NCHW", id="valid"),
    pytest.param((1, 96, 5, 29), 96, (2, 0, 1, 3), 2, "NCHW", id="asymmetric-groups"),
    pytest.param((1, 64, 4, 30), 64, (0, 3, 3, 0), 1, "NCHW", id="one-sided"),
    # dL/dweight takes two filter blocks a call with AVX-512: 3 blocks of float32, 5 of float64
    pytest.param((1, 50, 5, 28), 80, "same", 1, "NCHW", id="odd-filter-blocks"),
    pytest.param((2, 6, 30, 64), 64, "same", 1, "NHWC", id="channels-last"),
    pytest.param((1, 48, 3, 200), 48, "same", 1, "NCHW", id="rows-in-several-runs"),
    # dL/dweight splits the filters to bound its transformed grad_y per row of tiles
    pytest.param((1, 48, 2, 1500), 48, "same", 1, "NCHW", id="wide-rows"),
    # 7 tiles a row, the fewest the forward takes with AVX-512 (dL/dweight goes directly there)
    pytest.param((2, 64, 5, 14), 64, "same", 1, "NCHW", id="narrow-rows"),
]

# Dilated layers go phase by phase (csrc/dilation_phases.h), each phase an
# undilated layer of every d-th row and column: (x shape, padding, dilation,
# data format); every phase has rows of at least 7 tiles.
DILATED = [
    pytest.param((2, 64, 9, 30), "same", 2, "NCHW", id="same-2"),
    pytest.param((1, 64, 7, 47), "valid", 3, "NCHW", id="valid-3"),
    pytest.param((1, 64, 8, 31), (3, 0, 1, 2), 2, "NCHW", id="asymmetric-2"),
    pytest.param((1, 64, 6, 30), "same", (2, 1), "NCHW", id="rows-only"),
    pytest.param((2, 8, 28, 64), "same", 2, "NHWC", id="channels-last"),
]


def layer(rng, dtype, x_shape, filters, groups, data_format):
    x = rng.standard_normal(x_shape).astype(dtype)
    channels = x_shape[1] if data_format == "NCHW" else x_shape[3]
    weight = rng.standard_normal((filters, channels // groups, 3, 3)).astype(dtype)
    bias = rng.standard_normal(filters).astype(dtype)
    return x, weight, bias


def assert_matches_reference(rng, x, weight, bias, isa, **kwargs):
    """The forward, dL/dx and dL/dweight of the C++ core on `isa` against the NumPy reference."""
    want = fastconv.conv2d(x, weight, bias, backend="numpy", **kwargs)
    grad_y = rng.standard_normal(want.shape).astype(x.dtype)
    want_grads = fastconv.conv2d_backward(grad_y, x, weight, backend="numpy", **kwargs)
    with forced_isa(isa):
        got = fastconv.conv2d(x, weight, bias, backend="cpp", **kwargs)
        got_grads = fastconv.conv2d_backward(grad_y, x, weight, backend="cpp", **kwargs)
    assert_close(got, want, "forward")
    assert_close(got_grads.input, want_grads.input, "dL/dx")
    assert_close(got_grads.weight, want_grads.weight, "dL/dweight")


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "filters", "padding", "groups", "data_format"), CASES)
def test_forward_and_gradients_match_the_reference(x_shape, filters, padding, groups, data_format, dtype, isa):
    rng = np.random.default_rng(sum(x_shape) * filters)
    x, weight, bias = layer(rng, dtype, x_shape, filters, groups, data_format)
    assert_matches_reference(rng, x, weight, bias, isa, padding=padding, groups=groups, data_format=data_format)


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "padding", "dilation", "data_format"), DILATED)
def test_dilated_layers_match_the_reference(x_shape, padding, dilation, data_format, dtype, isa):
    rng = np.random.default_rng(sum(x_shape))
    x, weight, bias = layer(rng, dtype, x_shape, 64, 1, data_format)
    assert_matches_reference(rng, x, weight, bias, isa, padding=padding, dilation=dilation, data_format=data_format)


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_float_error_stays_near_the_direct_sums(dtype, isa):
    # The transforms' coefficients are 0, +-1 and +-1/2: the error against a
    # float64 (or exact) sum grows by a small factor, not with the channels.
    rng = np.random.default_rng(7)
    x, weight, bias = layer(rng, dtype, (2, 128, 8, 56), 64, 1, "NCHW")
    exact = fastconv.conv2d(
        x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64), padding="same", backend="numpy"
    )
    grad_y = rng.standard_normal(exact.shape).astype(dtype)
    exact_dw = fastconv.conv2d_backward(
        grad_y.astype(np.float64), x.astype(np.float64), weight.astype(np.float64), padding="same", backend="numpy"
    ).weight
    with forced_isa(isa):
        got = fastconv.conv2d(x, weight, bias, padding="same", backend="cpp")
        got_dw = fastconv.conv2d_backward(grad_y, x, weight, padding="same", backend="cpp").weight
    for g, e in ((got, exact), (got_dw, exact_dw)):
        relative = np.abs(g - e).max() / np.abs(e).max()
        assert relative < (2e-6 if dtype == np.float32 else 1e-14), relative


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_results_do_not_depend_on_the_thread_count(dilation, isa):
    rng = np.random.default_rng(3)
    x, weight, bias = layer(rng, np.float32, (3, 64, 10, 30), 64, 1, "NCHW")
    grad_y = rng.standard_normal((3, 64, 10, 30)).astype(np.float32)
    kwargs = dict(padding="same", dilation=dilation, backend="cpp")
    before = fastconv.get_num_threads()
    results = []
    try:
        with forced_isa(isa):
            for threads in (1, 2, 3):
                fastconv.set_num_threads(threads)
                grads = fastconv.conv2d_backward(grad_y, x, weight, **kwargs)
                results.append((fastconv.conv2d(x, weight, bias, **kwargs), grads.input, grads.weight))
    finally:
        fastconv.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("planted", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_reach_only_the_outputs_that_read_them(planted, dilation, isa):
    # The transforms would spread a NaN or Inf over whole tiles (and Inf - Inf
    # makes NaN): such a call is computed again directly.
    rng = np.random.default_rng(11)
    x, weight, bias = layer(rng, np.float64, (1, 64, 6, 30), 64, 1, "NCHW")
    x[0, 5, 2, 7] = planted
    kwargs = dict(padding="same", dilation=dilation)
    want = fastconv.conv2d(x, weight, bias, backend="numpy", **kwargs)
    grad_y = rng.standard_normal(want.shape)
    grad_y[0, 9, 3, 11] = planted
    want_grads = fastconv.conv2d_backward(grad_y, x, weight, backend="numpy", **kwargs)
    with forced_isa(isa):
        got = fastconv.conv2d(x, weight, bias, backend="cpp", **kwargs)
        got_grads = fastconv.conv2d_backward(grad_y, x, weight, backend="cpp", **kwargs)
    pairs = (
        (got, want, "forward"),
        (got_grads.input, want_grads.input, "dL/dx"),
        (got_grads.weight, want_grads.weight, "dL/dweight"),
    )
    for g, w, what in pairs:
        assert np.isnan(w).any() or np.isinf(w).any()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=what)
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w), err_msg=what)
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w), err_msg=what)
        finite = np.isfinite(w)
        assert_close(g[finite], w[finite], what)
