"""The settings every library runs under, set and restored around a block:
the thread count (verified), PyTorch's full fp32 precision, and fastconv's
instruction set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .config import BenchError
from .machine import loaded_core


@contextlib.contextmanager
def thread_limit(n: int, torch: Any) -> Iterator[None]:
    """fastconv's OpenMP, NumPy's BLAS and PyTorch all on n threads, verified.

    threadpoolctl reaches every OpenMP runtime in the process (fastconv's and
    PyTorch's libgomp may be two copies) and the BLAS under NumPy; without it
    only the thread count the process started with (OMP_NUM_THREADS) can be
    used, and NumPy's BLAS keeps its own.
    """
    core = loaded_core()
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is None and core.build_info()["max_threads"] != n:
        raise BenchError(
            f"running on {n} thread(s) needs threadpoolctl (pip install threadpoolctl), "
            f"or start with OMP_NUM_THREADS={n} and --threads {n}"
        )
    old_torch = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n) if threadpool_limits else contextlib.nullcontext():
        try:
            if torch is not None:
                torch.set_num_threads(n)
            got = core.build_info()["max_threads"]
            got_torch = torch.get_num_threads() if torch is not None else n
            if (got, got_torch) != (n, n):
                raise BenchError(f"asked for {n} threads, got fastconv {got}, PyTorch {got_torch}")
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old_torch)


@contextlib.contextmanager
def torch_full_precision(torch: Any) -> Iterator[None]:
    """IEEE fp32 in PyTorch's oneDNN convolutions and matmuls (no TF32/bf16 shortcuts)."""
    if torch is None:
        yield
        return
    conv = getattr(getattr(torch.backends, "mkldnn", None), "conv", None)
    old_conv = getattr(conv, "fp32_precision", None)
    old_matmul = torch.get_float32_matmul_precision()
    try:
        if conv is not None and old_conv is not None:
            conv.fp32_precision = "ieee"
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        if conv is not None and old_conv is not None:
            conv.fp32_precision = old_conv
        torch.set_float32_matmul_precision(old_matmul)


@contextlib.contextmanager
def using_isa(name: str | None) -> Iterator[None]:
    """fastconv's kernels on the chosen instruction set, restored afterwards."""
    core = loaded_core()
    old = core.isa()
    if name is not None:
        if name not in core.supported_isas():
            raise BenchError(f"--isa {name!r}: this CPU supports {', '.join(core.supported_isas())}")
        core.set_isa(name)
    try:
        yield
    finally:
        core.set_isa(old)
