"""NaN, Inf and denormals: PyTorch as the referee for where non-finite values
go, and the flush-to-zero mode that keeps denormals from slowing the kernels."""

import os
import time

import numpy as np
import pytest
from helpers import ISAS, forced_isa, torch_conv

import fastconv

torch = pytest.importorskip("torch")

NAN, INF = float("nan"), float("inf")

# (x shape, weight shape, stride, padding, dilation, groups)
GEOMETRIES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, "same", 1, 1),
    ((2, 4, 8, 7), (6, 2, 3, 2), 2, "same", 1, 2),
    ((1, 4, 9, 9), (4, 1, 3, 3), 1, (1, 2, 0, 1), 2, 4),  # depthwise, asymmetric padding
    ((2, 1, 6, 6), (3, 1, 3, 3), 1, "valid", 1, 1),  # one input channel: the plane kernels
    ((2, 5, 5, 5), (3, 5, 1, 1), 1, 1, 1, 1),  # 1x1 with padding
]


def plant(a, rng, values):
    a = a.copy()
    flat = a.reshape(-1)
    for v in values:
        flat[rng.integers(flat.size)] = v
    return a


def masks(arrays):
    return [(np.isnan(a), np.isposinf(a), np.isneginf(a)) for a in arrays]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_nan_and_inf_reach_exactly_the_values_pytorchs_reach(geometry, where, isa):
    xs, ws, stride, padding, dilation, groups = geometry
    rng = np.random.default_rng(hash((where, xs)) % 2**32)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    y_shape = fastconv.conv2d(x, w, b, stride, padding, dilation, groups).shape
    gy = rng.standard_normal(y_shape)
    planted = [NAN, INF, -INF]
    if where == "input":
        x = plant(x, rng, planted)
    elif where == "weight":
        w = plant(w, rng, planted)
    else:
        gy = plant(gy, rng, planted)
    geom = fastconv._spec.conv_spec(x.shape, w.shape, stride, padding, dilation, groups, dtype=x.dtype)
    want = torch_conv(x, w, b, gy, geom.stride, geom.padding, geom.dilation, groups)
    with forced_isa(isa):
        y = fastconv.conv2d(x, w, b, stride, padding, dilation, groups, backend="cpp")
        grads = fastconv.conv2d_backward(gy, x, w, stride, padding, dilation, groups, backend="cpp")
    got = (y, grads.input, grads.weight, grads.bias)
    for name, g, t in zip(("output", "dL/dx", "dL/dw", "dL/db"), masks(got), masks(want)):
        for kind, a, e in zip(("NaN", "+Inf", "-Inf"), g, t):
            np.testing.assert_array_equal(a, e, err_msg=f"{name}: {kind} placement differs from PyTorch")
    assert not all(np.isfinite(a).all() for a in got), "nothing non-finite reached the results"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("position", [0, 66, -1])
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_one_nonfinite_weight_anywhere_sends_the_call_to_the_nonfinite_kernels(value, position, dtype):
    # The check that routes a call finds a single NaN, +Inf or -Inf at the
    # first, a middle or the last of an odd number of weights (the vector
    # loop's tail), none of them a kernel's centre: missed, the fast kernels
    # skip the padding's taps and leave
    # finite the outputs where PyTorch's 0 * Inf gives NaN.
    rng = np.random.default_rng(position % 7)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 5, 6, 6)).astype(dtype)
    w.reshape(-1)[position] = value
    want_y, want_gx, _, _ = torch_conv(x, w, None, gy, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    for isa in ISAS:
        with forced_isa(isa):
            y = fastconv.conv2d(x, w, padding="same", backend="cpp")
            gx = fastconv.conv2d_backward(gy, x, w, padding="same", backend="cpp").input
        for name, got, want in (("output", y, want_y), ("dL/dx", gx, want_gx)):
            for kind, g, e in zip(("NaN", "+Inf", "-Inf"), *masks([got, want])):
                np.testing.assert_array_equal(g, e, err_msg=f"{isa} {name}: {kind} placement differs from PyTorch")
        assert np.isnan(y).sum() > np.isnan(x).sum(), f"{isa}: the padding's 0 * {value} made no NaN"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("where", ["first", "before_half", "half", "last"])
def test_the_team_scan_of_many_weights_finds_one_nonfinite_weight(where, threads):
    # From 2**20 weights on, the threads scan a share each: a NaN at either
    # side of the two threads' boundary, or at an end, still routes the call.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 905, 3, 3)).astype(np.float32)
    w = rng.standard_normal((131, 905, 3, 3)).astype(np.float32)  # 1,066,995 weights: an odd count
    assert w.size >= 2**20
    position = {"first": 0, "before_half": w.size // 2 - 1, "half": w.size // 2, "last": w.size - 1}[where]
    w.reshape(-1)[position] = NAN
    want_y = torch_conv(x, w, None, np.zeros((1, 131, 3, 3), np.float32), (1, 1), (1, 1, 1, 1), (1, 1), 1)[0]
    with fastconv.threads(threads):
        y = fastconv.conv2d(x, w, padding="same", backend="cpp")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want_y), err_msg="NaN placement differs from PyTorch")
    filter_hit = position // (905 * 9)
    assert np.isnan(y[0, filter_hit]).all(), "the padding's 0 * NaN made no NaN: the scan missed the weight"
    assert np.isfinite(np.delete(y, filter_hit, axis=1)).all()


# Under AddressSanitizer the timed call is instrumented code, not the kernels
# that ship: its speed says nothing about the flush.
@pytest.mark.skipif(os.environ.get("FASTCONV_SANITIZED") == "1", reason="speed under AddressSanitizer")
def test_denormal_inputs_run_at_full_speed():
    # Denormal operands cost some CPUs ~100 cycles each; the kernels flush them
    # to zero during the call (FTZ/DAZ).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 24, 24)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    tiny = np.float32(1e-39)  # below float32's smallest normal, 1.2e-38
    assert 0 < tiny < np.finfo(np.float32).tiny

    def best(xv, wv):
        fastconv.conv2d(xv, wv, padding="same")
        times = []
        for _ in range(7):
            t = time.perf_counter()
            fastconv.conv2d(xv, wv, padding="same")
            times.append(time.perf_counter() - t)
        return min(times)

    with fastconv.threads(1):
        normal = best(x, w)
        denormal = best(x * tiny, w * np.float32(0.5))
    assert denormal < 2 * normal, f"denormal input: {denormal * 1e3:.2f} ms vs {normal * 1e3:.2f} ms"


def test_the_callers_floating_point_mode_is_restored_after_a_call():
    # Flushed inside the kernels only: NumPy, after the call, still makes denormals.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    tiny = np.float32(1e-39)
    fastconv.conv2d(x * tiny, w, padding="same")
    with fastconv.threads(2):
        fastconv.conv2d_backward(np.ones((2, 8, 12, 12), np.float32), x * tiny, w, padding="same")
    assert np.float32(1e-38) * np.float32(0.01) != 0, "the caller's floating-point mode was not restored"


def test_denormal_products_are_flushed_to_zero_in_every_kernel_path():
    # 1e-20 * 1e-20 = 1e-40 is a float32 denormal: flushed, the output is exactly 0.
    x = np.full((1, 2, 5, 5), 1e-20, np.float32)
    w = np.full((3, 2, 3, 3), 1e-20, np.float32)
    for isa in ISAS:
        with forced_isa(isa):
            y = fastconv.conv2d(x, w, padding="same", backend="cpp")
        assert np.all(y == 0), f"{isa}: denormal products were not flushed"
    assert np.all(fastconv.conv2d(x, w, padding="same", backend="numpy") > 0)  # NumPy keeps them
