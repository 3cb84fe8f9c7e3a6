"""Timing one case: warm-up (with the peak extra memory of the last warm-up
call), as many samples as fill the minimum time, taken in rounds in which the
libraries and thread counts take turns, summarized as median and quartiles."""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .config import Config
from .host import HostCheck
from .libraries import Case, Outputs, PassFns
from .progress import Progress, step_label
from .settings import thread_limit

MAX_SAMPLES = 1000

MEMORY_NOTE = (
    "peak_rss_extra_mib: growth of the process's peak resident memory (VmHWM, reset through "
    "/proc/self/clear_refs after malloc_trim) during the last warm-up call, over the resident "
    "memory just before it; includes the outputs and any workspace, C++ and Python alike; "
    "null where the peak cannot be reset (not Linux)"
)


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), else they stay resident and
    hide the next call's allocations from the RSS peak."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def measured_call(fn: Callable[[], Outputs]) -> tuple[float | None, float]:
    """Run fn once: (its peak extra resident memory in MiB, or None; seconds)."""
    _release_free_heap()
    before = _proc_status_kib("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = _proc_status_kib("VmHWM")
    if not reset or before is None or peak is None:
        return None, seconds
    return max(peak - before, 0) / 1024, seconds


def planned_samples(cfg: Config, estimate: float | None) -> int:
    """cfg.repeats, or more for fast calls: as many as fill cfg.min_time seconds."""
    if estimate is None:
        return cfg.repeats
    return max(cfg.repeats, min(MAX_SAMPLES, math.ceil(cfg.min_time / max(estimate, 1e-9))))


def timed_calls(fn: Callable[[], Outputs], count: int) -> list[float]:
    """Seconds of each of count calls."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summarize(seconds: Sequence[float], memory: float | None) -> dict[str, Any]:
    """Median, quartiles and extremes in ms."""
    times = np.asarray(seconds)
    q1, median, q3 = np.percentile(times, [25, 50, 75]) * 1e3
    return {
        "median_ms": float(median),
        "q1_ms": float(q1),
        "q3_ms": float(q3),
        "min_ms": float(times.min() * 1e3),
        "max_ms": float(times.max() * 1e3),
        "spread_pct": float((q3 - q1) / median * 100),
        "samples": len(times),
        "peak_rss_extra_mib": memory,
    }


def warm_up(fn: Callable[[], Outputs], cfg: Config) -> tuple[float | None, float | None]:
    """cfg.warmup untimed calls: the last one's (peak extra memory, seconds), or Nones without any."""
    memory, estimate = None, None
    for _ in range(cfg.warmup):
        memory, estimate = measured_call(fn)
    return memory, estimate


def time_interleaved(
    case: Case, libs: dict[str, PassFns], cfg: Config, torch: Any, progress: Progress, host: HostCheck
) -> dict[tuple[int, str, str], dict[str, Any]]:
    """Timings of every (thread count, library, pass) of one case, keyed so.

    The samples are taken in cfg.rounds rounds; each round visits every
    thread count and library in turn, in reverse order every other round, and
    takes its share of each one's samples after one warm-up call (the other
    library's threads may still be spinning). A slow spell of a shared machine
    then falls on both libraries and both thread counts alike, instead of on
    whichever happened to run during it: the speed-ups and the thread scaling
    compare like with like. The first round does the full warm-up, measures
    the memory and sets how many samples each callable gets. Every share goes
    through the host check (HostCheck.take).
    """
    times: dict[tuple[int, str, str], list[float]] = {}
    memory: dict[tuple[int, str, str], float | None] = {}
    planned: dict[tuple[int, str, str], int] = {}
    for rnd in range(cfg.rounds):
        forward_order = rnd % 2 == 0
        for threads in cfg.threads if forward_order else cfg.threads[::-1]:
            with thread_limit(threads, torch):
                for lib in list(libs) if forward_order else list(libs)[::-1]:
                    for pass_name in cfg.passes:
                        progress.step("timing " + step_label(case.x.dtype.name, threads, case.shape, pass_name, lib))
                        key, fn = (threads, lib, pass_name), libs[lib][pass_name]
                        if rnd == 0:
                            memory[key], estimate = warm_up(fn, cfg)
                            planned[key], times[key] = planned_samples(cfg, estimate), []
                        share = planned[key] // cfg.rounds + (rnd < planned[key] % cfg.rounds)
                        if share == 0:
                            continue

                        def take_share(fn: Callable[[], Any] = fn, share: int = share, rnd: int = rnd) -> list[float]:
                            if rnd > 0 and cfg.warmup > 0:
                                fn()
                            return timed_calls(fn, share)

                        times[key] += host.take(threads, lib, take_share)
    return {key: summarize(times[key], memory[key]) for key in times}
