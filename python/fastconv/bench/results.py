"""The timed results: every case of the run timed into one record per thread
count, dtype, shape and pass, with its GFLOP/s, % of peak and speed-ups over
PyTorch and over one thread."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from .config import Config
from .fixed_cost import FixedCost
from .host import HostCheck
from .libraries import library_passes, make_case
from .progress import Progress
from .suite import Shape
from .timing import time_interleaved


def time_all(cfg: Config, torch: Any, progress: Progress, host: HostCheck, fixed: FixedCost) -> list[dict[str, Any]]:
    """One record per thread count, dtype, shape and pass: every library's
    timing. Before each case, a share of the fixed-cost samples. Shares of
    the peak come later (add_peak_shares), once the peak is known."""
    records = []
    for dtype in cfg.dtypes:
        for shape in cfg.shapes:
            fixed.take_share()
            case = make_case(shape, dtype)
            timings = time_interleaved(case, library_passes(case, torch, cfg), cfg, torch, progress, host)
            for threads in cfg.threads:
                for p in cfg.passes:
                    by_lib = {lib: t for (n, lib, q), t in timings.items() if (n, q) == (threads, p)}
                    records.append(make_record(shape, dtype, threads, p, by_lib))
    add_thread_scaling(records)
    # Tables by thread count, then dtype, as the run is configured.
    order = {(t, d): i for i, (t, d) in enumerate((t, d) for t in cfg.threads for d in cfg.dtypes)}
    return sorted(records, key=lambda r: order[r["threads"], r["dtype"]])


def add_thread_scaling(records: list[dict[str, Any]]) -> None:
    """fastconv's speed-up over its own 1-thread median, on records of more
    threads when the run has 1-thread records of the same case."""
    one = {(r["shape"], r["dtype"], r["pass"]): r for r in records if r["threads"] == 1}
    for r in records:
        base = one.get((r["shape"], r["dtype"], r["pass"]))
        r["speedup_vs_1_thread"] = (
            base["timings"]["fastconv"]["median_ms"] / r["timings"]["fastconv"]["median_ms"]
            if base is not None and r["threads"] > 1
            else None
        )


def make_record(
    shape: Shape, dtype: str, threads: int, pass_name: str, timings: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Timings plus GFLOP/s and the speed-up over PyTorch."""
    flops = shape.flops(pass_name)
    for timing in timings.values():
        timing["gflops"] = flops / (timing["median_ms"] * 1e6)
    torch_ms = timings.get("torch", {}).get("median_ms")
    return {
        "shape": shape.name,
        "dims": asdict(shape),
        "dtype": dtype,
        "threads": threads,
        "pass": pass_name,
        "flops": flops,
        "timings": timings,
        "speedup_vs_torch": torch_ms / timings["fastconv"]["median_ms"] if torch_ms else None,
    }


def add_peak_shares(records: list[dict[str, Any]], peak_per_thread: dict[str, float]) -> None:
    """Each record's peak (the dtype's 1-thread peak times its threads) and
    every library's % of it; none where no peak was measured (a CPU with
    neither AVX2 nor AVX-512 has no vector FMA loop)."""
    for r in records:
        peak = peak_per_thread[r["dtype"]] * r["threads"]
        r["peak_gflops"] = peak
        for timing in r["timings"].values():
            timing["pct_peak"] = 100 * timing["gflops"] / peak if peak > 0 else None


def geomean_speedups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Geometric mean over shapes of the speed-up over PyTorch, per dtype, threads and pass."""
    groups: dict[tuple[str, int, str], list[float]] = {}
    for r in records:
        if r["speedup_vs_torch"]:
            groups.setdefault((r["dtype"], r["threads"], r["pass"]), []).append(r["speedup_vs_torch"])
    return [
        {"dtype": d, "threads": t, "pass": p, "shapes": len(v), "speedup_vs_torch": float(np.exp(np.mean(np.log(v))))}
        for (d, t, p), v in groups.items()
    ]
