"""Issue 15's targets ("Targets"), and the summary of the figures they are
judged on: speed-ups over PyTorch, the big layers' % of peak, the fixed cost."""

from __future__ import annotations

from typing import Any

import numpy as np

from .suite import PASSES
from .torch_isa import TORCH_ISA_ENV

BIG_LAYERS = ("resnet_3x3", "deep_7x7", "pointwise", "cifar", "vgg_3x3")  # float32, 1 thread, % of peak
TARGET_PCT_PEAK = {"forward": 85.0, "backward": 80.0}
TARGET_FIXED_COST_US = 10.0


def speedup_targets(dtype: str, torch_isa: dict[str, Any]) -> dict[str, float]:
    """The geomean and lowest-shape speed-ups issue 15 asks for: float64 2.0x
    and 1.0x; float32 1.2x and 0.9x, or 1.1x and 0.85x against PyTorch
    restricted to AVX2 (--isa avx2)."""
    if dtype == "float64":
        return {"geomean": 2.0, "lowest": 1.0}
    env = torch_isa["env"]
    if all(env.get(k) == v for k, v in TORCH_ISA_ENV["avx2"].items()):
        return {"geomean": 1.1, "lowest": 0.85}
    return {"geomean": 1.2, "lowest": 0.9}


def target_summary(
    records: list[dict[str, Any]], fixed_cost: dict[str, dict[str, float]] | None, torch_isa: dict[str, Any]
) -> dict[str, Any]:
    """The figures issue 15's targets are judged on: per dtype and thread
    count, the geomean and the lowest speed-up over PyTorch forward and
    backward; the big float32 layers' % of peak on 1 thread; the fixed cost."""
    groups = []
    for dtype, threads in dict.fromkeys((r["dtype"], r["threads"]) for r in records):
        group: dict[str, Any] = {
            "dtype": dtype,
            "threads": threads,
            "geomean": {},
            "lowest": {},
            "targets": speedup_targets(dtype, torch_isa),
        }
        for p in PASSES:
            rows = [
                r
                for r in records
                if (r["dtype"], r["threads"], r["pass"]) == (dtype, threads, p) and r["speedup_vs_torch"]
            ]
            if rows:
                lowest = min(rows, key=lambda r: r["speedup_vs_torch"])
                group["geomean"][p] = float(np.exp(np.mean([np.log(r["speedup_vs_torch"]) for r in rows])))
                group["lowest"][p] = {"shape": lowest["shape"], "speedup": lowest["speedup_vs_torch"]}
        if group["geomean"]:
            groups.append(group)
    pct_peak: dict[str, dict[str, float | None]] = {}
    for r in records:
        if (r["dtype"], r["threads"]) == ("float32", 1) and r["shape"] in BIG_LAYERS and r["pass"] in PASSES:
            pct_peak.setdefault(r["shape"], {})[r["pass"]] = r["timings"]["fastconv"]["pct_peak"]
    return {
        "speedups": groups,
        "pct_peak_float32_1_thread": pct_peak,
        "target_pct_peak": TARGET_PCT_PEAK,
        "fixed_cost_us": fixed_cost,
        "target_fixed_cost_us": TARGET_FIXED_COST_US,
        "targets_from": "issue 15, section Targets",
    }
