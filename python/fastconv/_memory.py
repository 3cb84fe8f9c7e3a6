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


def check_fits(nbytes: int, what: str, threads: int = 0, per_thread: int = 0) -> None:
    """MemoryError if `nbytes` of working memory for `what`, plus the C++
    kernels' buffers for `threads` threads, exceeds what the machine has
    available. Only `nbytes`, which grows with the call, decides whether to
    check: the threads' buffers are bounded, and counting them, every tiny
    call on a machine of 32 threads would read the system's figure."""
    if nbytes < CHECK_ABOVE:
        return
    nbytes += threads * (THREAD_BUFFER_BYTES + per_thread)
    available = available_bytes()
    if available is not None and nbytes > available:
        raise MemoryError(
            f"{what} needs {_gib(nbytes)} ({nbytes} bytes) of working memory, more than the "
            f"{_gib(available)} this machine has available"
        )


# The C++ kernels' windows, panels, partial sums and packed weights of up to
# a range (PACK_RANGE_BYTES, csrc/implicit_gemm.h's PackRanges::kBytes): at
# most this per thread.
THREAD_BUFFER_BYTES = 8 * 2**20
PACK_RANGE_BYTES = 3 * 2**20


def packed_block_extra_bytes(taps_per_filter: int) -> int:
    """What a thread's own packed block of filters needs past a range, where
    a group's weights go block by block (direct kernels, weights over a
    range): a block is at most 48 float32 or 24 float64 filters, 192 bytes a
    tap, so past 3 MiB only from 16384 taps a filter (0.87 MiB for 512
    channels of 3x3; 27 MiB for 16384 channels of 3x3)."""
    return max(0, 192 * taps_per_filter - PACK_RANGE_BYTES)


def packed_weights_bytes(itemsize: int, weight_size: int) -> int:
    """The C++ kernels' packed weights: at most twice the weights (filter
    blocks rounded up)."""
    return 2 * weight_size * itemsize
