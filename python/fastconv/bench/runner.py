"""One bench run, in order: measure the peak, check every output, and only
then time, summarize, write the JSON and print the report."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any

from .. import __version__
from .agreement import check_all
from .config import Config
from .fixed_cost import FixedCost
from .host import BUSY_PERCENT, HostCheck, OtherLoad, measure_peak
from .libraries import import_torch, library_names
from .machine import cpu_facts, format_cpu_facts, loaded_core, openmp_libraries, runtime_info
from .plot import write_plot
from .progress import Progress
from .report import (
    cache_disturbed,
    format_fixed_cost,
    format_host_check,
    format_summary,
    format_tables,
    format_torch_isa,
    print_disagreements,
)
from .results import add_peak_shares, geomean_speedups, time_all
from .settings import torch_full_precision, using_isa
from .targets import target_summary
from .timing import MEMORY_NOTE
from .torch_isa import torch_isa_report


def run_bench(cfg: Config, isa: str | None, json_path: str | None, plot_path: str | None) -> int:
    """Measure the peak, check every output, and only then time and report."""
    started, other_load = time.perf_counter(), OtherLoad()
    torch = import_torch()
    report: dict[str, Any] = runtime_info()
    report["versions"]["torch"] = torch.__version__ if torch is not None else None
    report.update(threads=list(cfg.threads), dtypes=list(cfg.dtypes), config=asdict(cfg), memory_note=MEMORY_NOTE)
    with using_isa(isa), torch_full_precision(torch):
        # The peak of the ISA the kernels run, not the CPU's widest.
        peak_before = {d: measure_peak(d == "float64") for d in cfg.dtypes}
        report.update(
            isa=loaded_core().isa(),
            cpu_facts=cpu_facts(),
            torch_isa=torch_isa_report(torch),
        )
        n_timed = sum(len(library_names(s, torch, cfg)) for s in cfg.shapes)
        progress = Progress(
            len(cfg.threads) * len(cfg.dtypes) * (len(cfg.shapes) + cfg.rounds * n_timed * len(cfg.passes))
        )
        try:
            report["agreement"] = check_all(cfg, torch, progress)
            ok = all(r["ok"] for r in report["agreement"])
            host = HostCheck(cfg.host_check)
            fixed = FixedCost(torch, cfg, shares=len(cfg.dtypes) * len(cfg.shapes)) if ok else None
            report["results"] = time_all(cfg, torch, progress, host, fixed) if fixed else []
            report["host_check"] = host.summary()
            report["fixed_cost_us"] = fixed.result() if fixed else None
        finally:
            progress.close()
        # Measured again after the timing: another process taking the core only
        # ever makes the loop read low, so the highest reading -- before, after,
        # and the host check's own float32 one -- is the peak. One low reading
        # had put every share 9 % high (94.5 GFLOP/s against 103.6, busy Zen 3).
        peak_after = {d: measure_peak(d == "float64") for d in cfg.dtypes}
        peak = {d: max(peak_before[d], peak_after[d]) for d in cfg.dtypes}
        if "float32" in peak:
            peak["float32"] = max(peak["float32"], host.peak)  # 0 without the host check
        report.update(peak_gflops_per_thread=peak, peak_readings={"before": peak_before, "after": peak_after})
        add_peak_shares(report["results"], peak)
    report["geomean"] = geomean_speedups(report["results"])
    report["summary"] = target_summary(report["results"], report["fixed_cost_us"], report["torch_isa"])
    report["openmp_libraries"] = openmp_libraries()  # now with PyTorch's runtime too, if it brought one
    report["elapsed_s"] = time.perf_counter() - started
    report["other_processes_cpu_pct"] = other_load.percent()
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    if not ok:
        print_disagreements(report["agreement"])
        return 1
    print(
        f"fastconv {__version__} vs PyTorch {report['versions']['torch'] or '(not installed)'} vs NumPy reference"
        f" on {report['cpu_model']}; outputs agree ({len(report['agreement'])} comparisons)"
    )
    print(
        f"fastconv ISA {report['isa']} ({format_cpu_facts(report['cpu_facts'])})"
        + (f"; PyTorch {format_torch_isa(report['torch_isa'])}" if torch is not None else "")
    )
    print(format_tables(report["results"], report["geomean"], report["isa"]))
    print(format_fixed_cost(report["fixed_cost_us"]))
    print(format_summary(report["summary"]))
    print(format_host_check(report["host_check"]))
    if plot_path:
        print(write_plot(report["results"], plot_path))
    if cache_disturbed(report["host_check"]):
        print(
            "warning: the in-cache probe ran slow at more than a quarter of the"
            " host checks: another tenant was slowing the caches, and shares kept after the last"
            " try or the waiting limit read low (the % of peak above all): rerun on a quiet machine",
            file=sys.stderr,
        )
    busy = report["other_processes_cpu_pct"]
    if busy is not None and busy > BUSY_PERCENT:
        print(
            f"warning: other processes used {busy:.0f}% of the CPUs during this run; its timings"
            " (above all on several threads) are disturbed: rerun on a quiet machine",
            file=sys.stderr,
        )
    print(f"\nfinished in {report['elapsed_s']:.1f} s")
    return 0
