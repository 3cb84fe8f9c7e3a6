"""Whether the machine lets the run measure: the single-thread FMA peak, the
check around every share of samples that the run gets its cores, an in-cache
convolution timed at each check, and how much CPU other processes took during
the run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .machine import cpu_count, loaded_core

PEAK_RUNS, PEAK_ITERATIONS = 50, 500_000  # 50 runs of 1-2 ms: about 0.1 s per dtype
BUSY_PERCENT = 5.0  # other processes' share of the CPUs above which the run warns that it was disturbed


def measure_peak(float64: bool) -> float:
    """Single-thread FMA peak in GFLOP/s with the FMA loop of the active
    instruction set (the one the kernels run): the best of many short runs,
    since a run that another process or the hypervisor takes time from only
    ever reads low, and the shorter the run the likelier one goes whole. On
    this project's loaded 2-core VM three runs of 20 M iterations read 40-55
    GFLOP/s where fifty of 0.5 M read 101-104, and a low peak shows kernels
    above 100 % of it."""
    return max(loaded_core().peak_gflops(float64=float64, iterations=PEAK_ITERATIONS) for _ in range(PEAK_RUNS))


class CacheProbe:
    """A small convolution whose data stay in the core's caches (1 x 32 x 32 x
    32 float32, 32 filters of 3x3: about 0.2 ms on one Zen 4 core), timed at
    every 1-thread host check against its best time: the check fails where it
    takes over SLOW times that.

    The check's FMA loop runs in registers, and on a cloud VM another tenant
    can slow everything that touches the caches while that loop keeps its
    speed: on this project's Zen 4 VM (2026-12-07) this convolution took
    0.19-0.41 ms from one second to the next, a cifar forward 5.8-11.9 ms,
    the FMA loop 98-100 % of its peak throughout (a kernel looping in L1
    mostly so, 80-94 % at times). An `--isa avx2` run with the probe only
    reporting (slow at half the checks) read cifar's forward at 74 % of the
    peak; one with it failing checks, 88 %. Not at 2-thread checks: there a
    0.1 ms call read slow at most checks, the FMA check passing (the other
    vCPU's share, which that check judges)."""

    SLOW = 1.25  # a check's probe is slow above SLOW times the best
    FIRST_CALLS = 10  # the first check's calls, for a first best

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((1, 32, 32, 32)).astype(np.float32)
        self.w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
        self.y = np.empty_like(self.x)
        self.core = loaded_core()
        self.times: list[float] = []  # each check's time: the best of its calls

    def call(self) -> float:
        start = time.perf_counter()
        self.core.forward(self.x, self.w, None, self.y, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        return time.perf_counter() - start

    def fast(self) -> bool:
        """Times the probe (the bench has set fastconv to 1 thread): whether it
        ran within SLOW times the best so far. Two calls, so that one
        interrupt alone does not fail a check."""
        t = min(self.call() for _ in range(self.FIRST_CALLS if not self.times else 2))
        self.times.append(t)
        return t <= self.SLOW * min(self.times)

    def summary(self) -> dict[str, float]:
        """Checks, best and median ms, and the share of checks slow against the
        run's best (empty without checks)."""
        if not self.times:
            return {}
        best = min(self.times)
        return {
            "slow_above": self.SLOW,
            "checks": len(self.times),
            "best_ms": best * 1e3,
            "median_ms": float(np.median(self.times)) * 1e3,
            "slow_share": sum(t > self.SLOW * best for t in self.times) / len(self.times),
        }


class HostCheck:
    """Whether the machine gives the run the cores it asks for, checked around
    every share of samples.

    A virtual machine's CPUs are threads of a host that other tenants share,
    and for milliseconds to minutes at a time two of them may get one core's
    worth of work done between them: the 2-core machine this was written on
    then ran a 2-thread FMA loop at 20-50 % of twice its 1-thread peak, and
    both libraries' 2-thread calls at half speed, their 1-thread calls
    untouched. Samples taken then measure the host, not the code. So before
    each share of samples the bench waits until `threads` threads of FMAs
    together reach SHARE of `threads` times the 1-thread peak (and, on one
    thread, the in-cache probe runs within CacheProbe.SLOW of its best), and
    right after it checks again; a share that fails the second check is taken
    again, up to RETRIES times. Every library's shares are checked alike, and
    the JSON counts the waits and the shares taken again (or kept after the
    last try)."""

    SHARE = 0.8
    ITERATIONS = 400_000  # one check: about 2 ms of FMAs per thread at 115 GFLOP/s
    RETRIES = 3
    WAIT_LIMIT_S = 60.0  # in all, per run: past it, the run stops waiting
    SETTLE_PROBE_S = 0.005
    SETTLE_LIMIT_S = 0.5  # per share

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.core = loaded_core()
        self.peak = measure_peak(float64=False) if enabled else 0.0  # the 1-thread reference
        self.checks = 0
        self.waited_s = 0.0
        self.settled_s = 0.0
        self.probe = CacheProbe() if enabled else None
        self.retaken: dict[str, int] = {}  # shares taken again, by library
        self.kept_short: dict[str, int] = {}  # shares kept after the last try, by library

    def gives(self, threads: int) -> bool:
        """Whether `threads` threads of FMAs run now at SHARE of as many cores
        as there are CPUs for them (no more than this process may use), and on
        one thread whether the in-cache probe runs near its best. The probe
        runs only after the FMAs passed, so that its slow share counts the
        caches disturbed, not the core taken away."""
        self.checks += 1
        got = self.core.peak_gflops(iterations=self.ITERATIONS, threads=threads)
        if got < self.SHARE * min(threads, cpu_count()) * self.peak:
            return False
        return self.probe.fast() if self.probe is not None and threads == 1 else True

    def wait_for(self, threads: int) -> None:
        """Returns once a check passes, or when the run's waiting is used up;
        waited_s counts the time from the first failed check on."""
        if self.gives(threads):
            return
        start = time.perf_counter()
        while self.waited_s + time.perf_counter() - start < self.WAIT_LIMIT_S:
            time.sleep(0.05)
            if self.gives(threads):
                break
        self.waited_s += time.perf_counter() - start

    def settle(self) -> None:
        """Returns once no thread of this process uses a CPU (or after
        SETTLE_LIMIT_S). A BLAS or OpenMP runtime keeps its idle threads
        spinning for a while after its last call, and where the run has as
        many threads as cores, a spinning thread takes a core from whatever is
        timed next: after one NumPy matmul, OpenBLAS's spun for 0.1 s, during
        which fastconv's 2-thread calls took 4 ms instead of 1 every 8 ms."""
        start = time.perf_counter()
        while time.perf_counter() - start < self.SETTLE_LIMIT_S:
            cpu = time.process_time()  # every thread's CPU time
            time.sleep(self.SETTLE_PROBE_S)
            if time.process_time() - cpu < 0.2 * self.SETTLE_PROBE_S:
                break
        self.settled_s += time.perf_counter() - start

    def take(self, threads: int, lib: str, take_share: Callable[[], list[float]]) -> list[float]:
        """take_share()'s samples of library `lib`, taken once the process's
        other threads have settled, while the machine gives the run `threads` cores."""
        if not self.enabled:
            return take_share()
        self.settle()
        for attempt in range(self.RETRIES + 1):
            self.wait_for(threads)
            samples = take_share()
            if self.gives(threads):
                return samples
            if attempt < self.RETRIES:
                self.retaken[lib] = self.retaken.get(lib, 0) + 1
        self.kept_short[lib] = self.kept_short.get(lib, 0) + 1
        return samples

    def summary(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "required_share_of_peak": self.SHARE,
            "peak_gflops_1_thread": self.peak,
            "checks": self.checks,
            "seconds_waited": self.waited_s,
            "seconds_settling": self.settled_s,
            "shares_taken_again": self.retaken,
            "shares_kept_after_last_try": self.kept_short,
            "cache_probe": self.probe.summary() if self.probe is not None else {},
        }


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have run since boot (Linux /proc/stat), idle and I/O wait excluded."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How much CPU other processes used while we ran: their time slices stall
    our threads (an OpenMP barrier waits for the slowest), so figures taken on a
    shared machine are noisy, multi-thread ones above all."""

    def __init__(self) -> None:
        self.machine, self.own, self.wall = _machine_busy_seconds(), self._own(), time.perf_counter()

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def percent(self) -> float | None:
        """Other processes' CPU time as % of all the CPUs' time since __init__."""
        machine = _machine_busy_seconds()
        if machine is None or self.machine is None:
            return None
        others = (machine - self.machine) - (self._own() - self.own)
        return max(0.0, 100 * others / ((time.perf_counter() - self.wall) * (os.cpu_count() or 1)))
