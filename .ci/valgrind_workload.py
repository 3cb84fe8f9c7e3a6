"""The workload .ci/valgrind runs under memcheck: forward and every gradient of
the C++ core on small shapes that reach each kernel path (dense, strided,
grouped, depthwise, 1x1, dilated, rectangular, padding wider than the kernel,
channels-last views, wide rows and several column blocks, an empty batch,
dL/dX by GEMM and col2im and by the plane scatter, one-channel dL/dF by
filters sharing the plane), in float32 and float64, on every instruction set
the CPU reports, checked against the NumPy reference. Small on purpose:
memcheck runs it some 50x slower than natively. (Under valgrind 3.19, which
cannot run AVX-512, the CPU reports no avx512: the kernels that run are avx2
and generic.)"""

from __future__ import annotations

import sys
import time

import numpy as np

import fastconv
from fastconv import _backend

core = _backend.core
assert core is not None, f"the C++ core did not import: {_backend._import_error}"

# name: (n, c, h, w, filters, kernel, stride, padding, dilation, groups, data_format)
CASES = {
    "dense-3x3-same": (2, 8, 9, 11, 16, (3, 3), 1, "same", 1, 1, "NCHW"),
    "stride2-same": (2, 6, 13, 10, 8, (3, 3), 2, "same", 1, 1, "NCHW"),
    "stride2-valid-4x4": (1, 4, 12, 12, 6, (4, 4), 2, "valid", 1, 1, "NCHW"),
    "groups2": (2, 8, 9, 9, 8, (3, 3), 1, "same", 1, 2, "NCHW"),
    "depthwise": (2, 8, 10, 10, 8, (3, 3), 1, "same", 1, 8, "NCHW"),
    "depthwise-x2-stride2-5x5": (1, 6, 11, 11, 12, (5, 5), 2, "same", 1, 6, "NCHW"),
    "pointwise-1x1": (2, 16, 7, 9, 24, (1, 1), 1, "valid", 1, 1, "NCHW"),
    "pointwise-1x1-stride2": (1, 8, 8, 8, 8, (1, 1), 2, "valid", 1, 1, "NCHW"),
    "dilated": (1, 4, 12, 12, 6, (3, 3), 1, "same", 2, 1, "NCHW"),
    "rectangular-stride1x2": (2, 3, 10, 9, 5, (2, 5), (1, 2), "same", 1, 1, "NCHW"),
    "kernel-wider-than-input": (1, 2, 3, 3, 2, (5, 5), 1, "same", 1, 1, "NCHW"),
    "nhwc": (2, 6, 9, 8, 10, (3, 3), 1, "same", 1, 1, "NHWC"),
    "nhwc-stride2-groups3": (1, 6, 9, 9, 6, (3, 3), 2, "same", 1, 3, "NHWC"),
    "padding-wider-than-kernel": (1, 3, 6, 7, 4, (3, 3), 2, 4, 1, 1, "NCHW"),
    "wide-rows": (1, 8, 5, 150, 8, (3, 3), 1, "same", 1, 1, "NCHW"),
    "larger-layer": (1, 32, 12, 70, 24, (3, 3), 1, "same", 1, 1, "NCHW"),
    "empty-batch": (0, 4, 7, 7, 8, (3, 3), 2, "same", 1, 1, "NCHW"),
    # dL/dX as a GEMM and a col2im: gathered into rows (stride 1), added in place (stride 2).
    "one-channel-gemm-col2im": (4, 1, 9, 12, 16, (3, 3), 1, "same", 1, 1, "NCHW"),
    "six-channel-valid-gemm-col2im": (4, 6, 10, 9, 16, (5, 5), 1, "valid", 1, 1, "NCHW"),
    "three-channel-stride2-gemm-col2im": (4, 3, 11, 10, 16, (3, 3), 2, "same", 1, 1, "NCHW"),
    # dL/dX of a one-channel input by the plane scatter: grad_y rows copied (17 columns), read
    # in place (16), channels last; 7 kernel rows in parts, an odd count of filters.
    "one-channel-scatter-stride2": (2, 1, 13, 34, 5, (7, 7), 2, "same", 1, 1, "NCHW"),
    "one-channel-scatter-in-place": (2, 1, 9, 32, 6, (3, 3), 2, "same", 1, 1, "NCHW"),
    "one-channel-scatter-nhwc": (2, 1, 9, 20, 3, (3, 3), 1, "same", 1, 1, "NHWC"),
    # dL/dF of a one-channel input, filters sharing the plane: 5 filters as 2 + 2 + 1 (AVX2),
    # 25 taps as 5 x 5 (the scatter cases above take it too, at a stride and with 7x7).
    "one-channel-filter-dots-5x5": (2, 1, 12, 13, 5, (5, 5), 1, "valid", 1, 1, "NCHW"),
}
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


def run(backend, x, w, b, gy, stride, padding, dilation, groups, data_format):
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, groups, data_format=data_format, backend=backend)
    grads = fastconv.conv2d_backward(
        gy, x, w, stride, padding, dilation, groups, data_format=data_format, backend=backend
    )
    return y, grads.input, grads.weight, grads.bias


def main() -> int:
    isas = core.supported_isas()
    print(f"instruction sets: {isas}", flush=True)
    rng = np.random.default_rng(0)
    start, calls = time.perf_counter(), 0
    for isa in isas:
        core.set_isa(isa)
        for dtype in (np.float32, np.float64):
            for name, (n, c, h, wd, k, kernel, stride, padding, dilation, groups, fmt) in CASES.items():
                shape = (n, c, h, wd) if fmt == "NCHW" else (n, h, wd, c)
                x = rng.standard_normal(shape).astype(dtype)
                w = rng.standard_normal((k, c // groups, *kernel)).astype(dtype)
                b = rng.standard_normal(k).astype(dtype)
                y_shape = fastconv.conv2d(
                    x, w, b, stride, padding, dilation, groups, data_format=fmt, backend="numpy"
                ).shape
                gy = rng.standard_normal(y_shape).astype(dtype)
                args = (x, w, b, gy, stride, padding, dilation, groups, fmt)
                got, want = run("cpp", *args), run("numpy", *args)
                calls += 1
                for part, a, e in zip(("y", "dx", "dw", "db"), got, want):
                    scale = max(float(np.max(np.abs(e), initial=0.0)), 1.0)
                    err = float(np.max(np.abs(a - e), initial=0.0)) / scale
                    if not err <= TOLERANCE[dtype]:
                        print(f"MISMATCH {isa} {np.dtype(dtype).name} {name} {part}: {err:.3g}", flush=True)
                        return 1
            print(f"{isa} {np.dtype(dtype).name}: {len(CASES)} cases ok", flush=True)
    print(f"{calls} forward+backward calls in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
