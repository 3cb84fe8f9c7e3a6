"""Index arithmetic past 2**31 elements: where a 32-bit index would wrap, the
results are still right.

Two ways there, each run in a child process, so that a wrapped index (a read
far outside the array: SIGSEGV) fails one test instead of ending the run, and
so that the child's own peak memory can be measured:

- strided views whose second image (or channel) starts more than 2**31
  elements after the first, through the private C++ core (the public API
  copies non-contiguous input). The views lie in one 8.6 GB allocation of which
  only the touched pages become resident: a few MB of real memory.
- a dense float32 input of more than 2**31 elements (8.7 GB) through the
  public API, checked on the output rows at both ends against the NumPy
  reference computed on just the input rows they read. Skipped without the
  memory for it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

import fastconv
from fastconv import reference

TESTS = os.path.dirname(os.path.abspath(__file__))
GIB = 1 << 30
BIG = 2**31


def run_in_child(check: str, timeout: float) -> dict:
    """Run this module's `check`() in a fresh interpreter; return what it reports."""
    code = f"import sys; sys.path.insert(0, {TESTS!r}); import test_big_inputs; test_big_inputs.{check}()"
    result = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{check} exited with {result.returncode}:\n{result.stdout}{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(**figures) -> None:
    """The child's last line: its figures and its peak resident memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({**figures, "peak_rss": peak}))


def assert_close(actual, expected, what):
    """float32 results against a float64 reference: within 1e-4 of the largest |value|."""
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


# -- strided views past 2**31 ---------------------------------------------------

# (C, K, kernel, stride, padding, groups): the in-place window path (no
# padding), the copied-window path, depthwise, 1x1 and a strided 5x5.
VIEW_CASES = [
    (4, 8, 3, 1, (0, 0, 0, 0), 1),
    (4, 8, 3, 1, (1, 1, 1, 1), 1),
    (8, 8, 3, 1, (1, 1, 1, 1), 8),
    (16, 32, 1, 1, (0, 0, 0, 0), 1),
    (3, 16, 5, 2, (2, 1, 2, 1), 1),
]
FAR = BIG + 11  # elements between the two images (or two channels) of a view


class FarViews:
    """4-D float32 views into one big buffer: two images (or channels) FAR
    elements apart, the rest dense in NCHW or NHWC order."""

    def __init__(self):
        self.buf = np.empty(FAR + (1 << 22), np.float32)  # address space; pages are touched only where written
        self.used = 0

    def make(self, shape, far_axis, channels_last, rng):
        n, c, h, w = shape
        if channels_last:
            strides = [0, 1, w * c, c]
        else:
            strides = [0, h * w, w, 1]
        strides[far_axis] = FAR
        if far_axis == 1:
            strides[0] = 2 * FAR  # one image only: this stride is never used
        block = c * h * w if far_axis == 0 else h * w * (c if channels_last else 1)
        start, self.used = self.used, self.used + block + 64
        assert self.used < 1 << 22
        view = np.lib.stride_tricks.as_strided(self.buf[start:], shape, [s * 4 for s in strides])
        view[...] = rng.standard_normal(shape)
        return view


def check_far_views() -> None:
    core = fastconv._backend.core
    rng = np.random.default_rng(0)
    views = FarViews()
    start = time.perf_counter()
    checked = 0
    for c, k, ks, s, pad, g in VIEW_CASES:
        for far_axis, channels_last in ((0, False), (0, True), (1, False)):
            if far_axis == 1:
                c, k, g = 2, 2, min(g, 2)  # two channels FAR apart: all that fits in the buffer
            h = w_ = 11
            ho = (h + pad[0] + pad[1] - ks) // s + 1
            wo = (w_ + pad[2] + pad[3] - ks) // s + 1
            n = 2 if far_axis == 0 else 1
            x = views.make((n, c, h, w_), far_axis, channels_last, rng)
            y = views.make((n, k, ho, wo), far_axis, channels_last, rng)
            gy = views.make((n, k, ho, wo), far_axis, channels_last, rng)
            gx = views.make((n, c, h, w_), far_axis, channels_last, rng)
            weight = rng.standard_normal((k, c // g, ks, ks)).astype(np.float32)
            bias = rng.standard_normal(k).astype(np.float32)
            gw, gb = np.empty_like(weight), np.empty_like(bias)
            geometry = ((s, s), pad, (1, 1), g)
            what = f"C={c} K={k} {ks}x{ks} stride {s} padding {pad} groups {g}, far axis {far_axis}" + (
                " NHWC" if channels_last else ""
            )

            core.forward(x, weight, bias, y, *geometry)
            core.backward(gy, x, weight, gx, gw, gb, *geometry)

            x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
            w64, b64 = weight.astype(np.float64), bias.astype(np.float64)
            assert_close(y, reference.conv2d(x64, w64, b64, (s, s), pad, (1, 1), g), what + ": y")
            assert_close(gx, reference.conv2d_grad_input(gy64, w64, (h, w_), (s, s), pad, (1, 1), g), what + ": dx")
            assert_close(gw, reference.conv2d_grad_weight(gy64, x64, (ks, ks), (s, s), pad, (1, 1), g), what + ": dw")
            assert_close(gb, reference.conv2d_grad_bias(gy64), what + ": db")
            checked += 1
    report(cases=checked, seconds=time.perf_counter() - start)


@pytest.mark.slow
def test_views_with_offsets_past_2_31_elements():
    figures = run_in_child("check_far_views", timeout=300)
    print(figures)  # shown with -s: cases, time, peak memory
    assert figures["cases"] == 3 * len(VIEW_CASES)
    # Only the touched pages of the 8.6 GB buffer are resident.
    assert figures["peak_rss"] < 1 * GIB, figures


# -- a dense input past 2**31 ---------------------------------------------------

# 2 x 65 x 4097 x 4097 = 2,182,103,170 elements, 34.6 M past 2**31: image 1's
# last three channels lie wholly past it, and every output row of image 1
# reads them. One 3x3 filter keeps the output and its gradient at 134 MB.
DENSE_SHAPE = (2, 65, 4097, 4097)
ROWS = 8  # output rows checked at each end
DENSE_NEEDS = 2 * 65 * 4097 * 4097 * 4 + 2 * GIB  # x, plus y, grad_y, slices and headroom


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def check_dense_input() -> None:
    n, c, h, w = DENSE_SHAPE
    assert n * c * h * w > BIG
    rng = np.random.default_rng(0)
    times = {}
    start = time.perf_counter()
    # Three random planes, each plane one of them plus its own offset: 7x
    # cheaper than random values everywhere. (Getting 8.7 GB from the system
    # still takes most of the fill's time.)
    pool = rng.random((3, h, w), dtype=np.float32)
    x = np.empty(DENSE_SHAPE, np.float32)
    for i in range(n):
        for j in range(c):
            np.add(pool[(i * c + j) % 3], np.float32((i * c + j) / 1000), out=x[i, j])
    del pool
    times["fill"] = time.perf_counter() - start
    weight = rng.standard_normal((1, c, 3, 3)).astype(np.float32)
    bias = np.array([0.25], np.float32)
    w64, b64 = weight.astype(np.float64), bias.astype(np.float64)
    r = ROWS
    # The input rows that output rows [0, r) of image 0 and [h - r, h) of
    # image 1 read, and the padding around them.
    top, bottom = x[0:1, :, : r + 1], x[1:2, :, h - r - 1 :]
    pad_top, pad_bottom = (1, 0, 1, 1), (0, 1, 1, 1)

    start = time.perf_counter()
    y = fastconv.conv2d(x, weight, bias, padding="same")
    times["forward"] = time.perf_counter() - start
    assert_close(y[0:1, :, :r], reference.conv2d(top.astype(np.float64), w64, b64, padding=pad_top), "y, first rows")
    assert_close(
        y[1:2, :, h - r :], reference.conv2d(bottom.astype(np.float64), w64, b64, padding=pad_bottom), "y, last rows"
    )
    del y

    # dL/dY nonzero only on those rows: dL/dW and dL/db come from the slices alone.
    gy = np.zeros((n, 1, h, w), np.float32)
    gy[0, :, :r] = rng.standard_normal((1, r, w))
    gy[1, :, h - r :] = rng.standard_normal((1, r, w))
    gy_top, gy_bottom = gy[0:1, :, :r].astype(np.float64), gy[1:2, :, h - r :].astype(np.float64)
    start = time.perf_counter()
    grads = fastconv.conv2d_backward(gy, x, weight, padding="same", need_input_grad=False)
    times["backward_weights"] = time.perf_counter() - start
    expected_gw = reference.conv2d_grad_weight(gy_top, top.astype(np.float64), (3, 3), padding=pad_top)
    expected_gw += reference.conv2d_grad_weight(gy_bottom, bottom.astype(np.float64), (3, 3), padding=pad_bottom)
    assert_close(grads.weight, expected_gw, "dW")
    assert_close(grads.bias, reference.conv2d_grad_bias(gy_top) + reference.conv2d_grad_bias(gy_bottom), "db")

    # dL/dX into x's own memory (the public call would allocate a second
    # 8.7 GB array): nonzero only next to those rows, so a value that still
    # holds the input (> 0 but for one in 2**24 of the first plane) was not written.
    start = time.perf_counter()
    fastconv._backend.core.backward_data(gy, weight, x, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    times["backward_data"] = time.perf_counter() - start
    assert_close(
        x[0:1, :, : r + 1], reference.conv2d_grad_input(gy_top, w64, (r + 1, w), padding=pad_top), "dX, first rows"
    )
    assert_close(
        x[1:2, :, h - r - 1 :],
        reference.conv2d_grad_input(gy_bottom, w64, (r + 1, w), padding=pad_bottom),
        "dX, last rows",
    )
    start = time.perf_counter()
    assert not x[0, :, r + 1 :].any() and not x[1, :, : h - r - 1].any(), "dX: values left unwritten"
    times["scan"] = time.perf_counter() - start
    report(elements=int(x.size), seconds=times)


@pytest.mark.slow
def test_dense_input_of_more_than_2_31_elements():
    available = mem_available()
    if available < DENSE_NEEDS:
        pytest.skip(f"needs {DENSE_NEEDS / GIB:.1f} GiB of available memory, {available / GIB:.1f} GiB is")
    figures = run_in_child("check_dense_input", timeout=600)
    print(figures)
    assert figures["elements"] > BIG
    assert figures["peak_rss"] < 12 * GIB, figures
