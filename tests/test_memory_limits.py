"""A call whose working memory cannot fit raises MemoryError with the sizes,
before anything is allocated."""

import numpy as np
import pytest

import fastconv
from fastconv import _memory

BACKENDS = ["cpp", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_result_larger_than_the_machine_is_refused_before_allocating(backend):
    # 1 TiB of output from a 4 MiB input and 1 MiB of weights (1x1, 2**18
    # filters); the NumPy reference counts its temporaries too (3 TiB).
    x = np.zeros((1, 1, 1024, 1024), np.float32)
    w = np.zeros((2**18, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError, match=r"this forward needs (1024|3072)\.\d\d GiB \(\d+ bytes\) of working memory"):
        fastconv.conv2d(x, w, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_check_uses_what_the_machine_has_available(backend, monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: 200 * 2**20)
    allocated = []
    monkeypatch.setattr(np, "empty", lambda *a, **k: allocated.append(a))  # nothing may be allocated
    # Forward: 280 MB of output.
    with pytest.raises(MemoryError, match=r"this forward needs .* more than the 0\.20 GiB this machine has available"):
        fastconv.conv2d(np.zeros((1, 1, 100, 100), np.float32), np.zeros((7000, 1, 1, 1), np.float32), backend=backend)
    # Backward: dL/dx of a 280 MB input (np.zeros maps its pages lazily).
    x = np.zeros((1, 7000, 100, 100), np.float32)
    gy = np.zeros((1, 1, 100, 100), np.float32)
    with pytest.raises(MemoryError, match="this backward needs"):
        fastconv.conv2d_backward(gy, x, np.zeros((1, 7000, 1, 1), np.float32), backend=backend)
    assert allocated == []


def test_small_calls_skip_the_check(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: pytest.fail("read the system's memory for a tiny call"))
    assert fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3))).shape == (1, 2, 2, 2)


def test_small_calls_skip_the_check_whatever_the_thread_count(monkeypatch):
    # The kernels' per-thread buffers (8 MiB each) alone would pass the check's
    # threshold on 32 threads: they never start the check, nor stop a call
    # from skipping its checks when repeated.
    core = fastconv._backend.core
    if core is None:
        pytest.skip("the C++ core is not built")
    monkeypatch.setattr(core, "max_threads", lambda: 4096)
    monkeypatch.setattr(_memory, "available_bytes", lambda: pytest.fail("read the system's memory for a tiny call"))
    monkeypatch.setattr(fastconv._call_cache, "_checked", {})
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    y = fastconv.conv2d(x, w)
    fastconv.conv2d_backward(np.ones_like(y), x, w)
    assert len(fastconv._call_cache._checked) == 2


@pytest.mark.parametrize(
    "x_shape,w_shape,available_mib,needs",
    [
        # 280 MB of output and 64 x 8 MiB of thread buffers against 700 MiB.
        ((1, 1, 100, 100), (7000, 1, 1, 1), 700, r"0\.76"),
        # 16384 channels of 3x3: the direct kernels' blocks of filters take
        # 192 bytes a tap, 27 MiB, and each thread packs its own (weights over
        # a range go block by block): 64 x (8 + 24) MiB on top of 0.33 GiB of
        # packed weights, against 1.5 GiB.
        ((1, 16384, 3, 3), (300, 16384, 3, 3), 1536, r"2\.33"),
    ],
    ids=["buffers", "packed-blocks"],
)
def test_the_threads_buffers_count_once_the_check_runs(monkeypatch, x_shape, w_shape, available_mib, needs):
    core = fastconv._backend.core
    if core is None:
        pytest.skip("the C++ core is not built")
    monkeypatch.setattr(core, "max_threads", lambda: 64)
    monkeypatch.setattr(_memory, "available_bytes", lambda: available_mib * 2**20)
    with pytest.raises(MemoryError, match=rf"this forward needs {needs} GiB"):
        fastconv.conv2d(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32))
