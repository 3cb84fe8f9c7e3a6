"""The working memory of a call, checked against the machine's before
anything is allocated: a result that cannot fit raises MemoryError with the
sizes, where the system would otherwise overcommit it and kill the process
once the kernels touch it."""

from __future__ import annotations

import os

# Calls below this are not checked: reading the system's figure costs more
# than a small convolution.
CHECK_ABOVE = 256 * 2**20


def available_bytes() -> int | None:
    """Memory the machine can still give (Linux's MemAvailable), else its
    total RAM; None where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_fits(nbytes: int, what: str, threads: int = 0) -> None:
    """MemoryError if `nbytes` of working memory for `what`, plus the C++
    kernels' buffers for `threads` threads, exceeds what the machine has
    available. Only `nbytes`, which grows with the call, decides whether to
    check: the threads' buffers are bounded, and counting them, every tiny
    call on a machine of 32 threads would read the system's figure."""
    if nbytes < CHECK_ABOVE:
        return
    nbytes += threads * THREAD_BUFFER_BYTES
    available = available_bytes()
    if available is not None and nbytes > available:
        raise MemoryError(
            f"{what} needs {_gib(nbytes)} ({nbytes} bytes) of working memory, more than the "
            f"{_gib(available)} this machine has available"
        )


# The C++ kernels' windows, panels and partial sums: at most this per thread.
THREAD_BUFFER_BYTES = 8 * 2**20


def packed_weights_bytes(itemsize: int, weight_size: int) -> int:
    """The C++ kernels' packed weights: at most twice the weights (filter
    blocks rounded up)."""
    return 2 * weight_size * itemsize
