"""Arrays that end where the next memory page is unmapped: no kernel reads past
the last value of an input. Row copies and dots end with a partial vector;
a full-vector load there would fault here. (.ci/avx2_only runs this file under
QEMU 7.2, whose emulated AVX2 masked load reads every lane and faulted at
such an end where a real CPU's does not: the kernels load such tails in
parts.)"""

import ctypes
import mmap
import sys

import numpy as np
import pytest
from helpers import ISAS, assert_close, forced_isa

import fastconv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mmap and munmap through libc")

PAGE = mmap.PAGESIZE


class PageEndArrays:
    """Arrays placed so that their last byte is the last of a page whose next
    page is unmapped."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        self.libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.maps = []

    def copy_of(self, a):
        pages = (a.nbytes + PAGE - 1) // PAGE + 1
        base = self.libc.mmap(
            None, pages * PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0
        )
        assert base not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        assert self.libc.munmap(base + (pages - 1) * PAGE, PAGE) == 0  # the guard page
        self.maps.append((base, (pages - 1) * PAGE))
        end = base + (pages - 1) * PAGE
        buf = (ctypes.c_char * a.nbytes).from_address(end - a.nbytes)
        out = np.frombuffer(buf, dtype=a.dtype).reshape(a.shape)
        out[...] = a
        return out

    def release(self):
        for base, size in self.maps:
            self.libc.munmap(base, size)


# (x shape, weight shape, stride, padding, groups): rows whose length is no
# whole number of vectors, so that the last row of each array ends mid-vector.
CASES = [
    ((2, 8, 10, 28), (8, 1, 3, 3), 1, "same", 8),  # depthwise: plane copies of x
    ((3, 1, 12, 21), (6, 1, 5, 5), 1, "valid", 1),  # one channel: grad_y rows copied for the dots
    ((4, 1, 9, 13), (16, 1, 3, 3), 1, "same", 1),  # one channel, 16 filters: dots over grad_y in place
    ((2, 1, 13, 19), (5, 1, 3, 3), 2, "same", 1),  # the plane scatter's grad_y rows
    ((2, 6, 11, 11), (16, 6, 5, 5), 1, "valid", 1),  # GEMM and col2im
    ((2, 4, 9, 15), (6, 4, 3, 3), 1, (0, 2, 1, 0), 1),  # a padded window copied from x
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_inputs_that_end_at_an_unmapped_page(case, dtype):
    xs, ws, stride, padding, groups = case
    rng = np.random.default_rng(len(xs) + ws[0])
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    y_shape = fastconv.conv2d(x, w, None, stride, padding, 1, groups, backend="numpy").shape
    gy = rng.standard_normal(y_shape).astype(dtype)
    want_y = fastconv.conv2d(x, w, None, stride, padding, 1, groups, backend="numpy")
    want = fastconv.conv2d_backward(gy, x, w, stride, padding, 1, groups, backend="numpy")
    arrays = PageEndArrays()
    try:
        px, pw, pgy = arrays.copy_of(x), arrays.copy_of(w), arrays.copy_of(gy)
        for isa in ISAS:
            with forced_isa(isa):
                y = fastconv.conv2d(px, pw, None, stride, padding, 1, groups, backend="cpp")
                got = fastconv.conv2d_backward(pgy, px, pw, stride, padding, 1, groups, backend="cpp")
            assert_close(y, want_y, f"{isa} forward")
            assert_close(got.input, want.input, f"{isa} dL/dx")
            assert_close(got.weight, want.weight, f"{isa} dL/dw")
    finally:
        arrays.release()
