"""How many threads the C++ kernels use.

The kernels run on OpenMP and read its thread count at every call, so
OMP_NUM_THREADS, threadpoolctl's ``threadpool_limits`` and the functions here
all take effect at once. The count belongs to the calling Python thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import _backend
from ._validation import positive_int


def get_num_threads() -> int:
    """Threads the kernels use for calls from this thread (1 without OpenMP)."""
    return _backend.core.max_threads() if _backend.core is not None else 1


def set_num_threads(n: int) -> None:
    """Use `n` threads (>= 1) for calls from this thread from now on."""
    n = positive_int(n, "number of threads")
    if _backend.core is not None:
        _backend.core.set_num_threads(n)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """``with fastconv.threads(n):`` -- `n` threads inside the block, the previous count after."""
    n = positive_int(n, "number of threads")
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)
