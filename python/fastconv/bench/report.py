"""The report as text: the header's PyTorch line, a table per dtype and
thread count, the fixed cost, the target summary, the host check, and the
disagreements that stop a run."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .suite import FIXED_COST_SHAPE, PASSES

COLUMNS = (
    ("shape", 14),
    ("pass", 16),
    ("fastconv ms ±IQR", 16),
    ("GFLOP/s", 8),
    ("%peak", 6),
    ("torch ms ±IQR", 16),
    ("numpy ms ±IQR", 16),
    ("vs torch", 8),
    ("vs 1 thread", 11),
)


def format_torch_isa(report: dict[str, Any]) -> str:
    env = report["env"]
    if all(value is None for value in env.values()):
        caps = "unrestricted (" + ", ".join(env) + " unset)"
    else:
        caps = "restricted by " + " ".join(f"{k}={v if v is not None else '(unset)'}" for k, v in env.items())
    aten = report["aten_cpu_capability"]
    return caps + (f"; ATen CPU capability {aten}" if aten else "")


def _row(cells: Sequence[str]) -> str:
    """Names left-aligned, figures right-aligned, in COLUMNS' widths."""
    widths = [w for _, w in COLUMNS]
    return " ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _ms(timing: dict[str, Any] | None) -> str:
    if timing is None:
        return "-"
    spread = timing["spread_pct"]
    return f"{timing['median_ms']:.3f} " + (f"±{spread:3.0f}%" if spread < 999.5 else "±>999%")


def format_tables(records: list[dict[str, Any]], geomeans: list[dict[str, Any]], isa: str) -> str:
    """One table per dtype and thread count, then the geometric-mean speed-ups."""
    out = []
    for dtype, threads in dict.fromkeys((r["dtype"], r["threads"]) for r in records):
        rows = [r for r in records if (r["dtype"], r["threads"]) == (dtype, threads)]
        out += [
            f"\n{dtype}, {threads} thread{'s' * (threads > 1)}, ISA {isa}; peak {rows[0]['peak_gflops']:.1f} GFLOP/s"
            " (measured FMA peak x threads); ms: median ± interquartile range",
            _row([name for name, _ in COLUMNS]),
        ]
        for r in rows:
            t, fc = r["timings"], r["timings"]["fastconv"]
            speedup = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else "-"
            scaling = f"{r['speedup_vs_1_thread']:.2f}x" if r["speedup_vs_1_thread"] else "-"
            out.append(
                _row(
                    [
                        r["shape"],
                        r["pass"],
                        _ms(fc),
                        f"{fc['gflops']:.2f}",
                        f"{fc['pct_peak']:.1f}%" if fc["pct_peak"] is not None else "-",
                        _ms(t.get("torch")),
                        _ms(t.get("numpy")),
                        speedup,
                        scaling,
                    ]
                )
            )
        for g in geomeans:
            if (g["dtype"], g["threads"]) == (dtype, threads):
                out.append(_row(["geomean", g["pass"], "", "", "", "", "", f"{g['speedup_vs_torch']:.2f}x", ""]))
    return "\n".join(out)


def format_fixed_cost(costs: dict[str, dict[str, float]]) -> str:
    s = FIXED_COST_SHAPE
    parts = [f"{lib} forward {c['forward']:.1f} us, backward {c['backward']:.1f} us" for lib, c in costs.items()]
    return (
        f"\nfixed cost per call ({s.n}x{s.c}x{s.h}x{s.w} input, {s.k} filter of {s.kernel_label}, float32,"
        f" 1 thread, median of samples spread over the run): " + "; ".join(parts)
    )


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary's figures, each with its target in brackets."""
    out = ["\nsummary: the figures issue 15's targets are judged on (targets in brackets)"]
    for g in summary["speedups"]:
        t, parts = g["targets"], []
        for p, value in g["geomean"].items():
            parts.append(f"geomean {p} {value:.2f}x [>= {t['geomean']}x {_mark(value >= t['geomean'])}]")
        for p, low in g["lowest"].items():
            parts.append(
                f"lowest {p} {low['speedup']:.2f}x {low['shape']}"
                f" [>= {t['lowest']}x {_mark(low['speedup'] >= t['lowest'])}]"
            )
        out.append(f"  {g['dtype']}, {g['threads']} thread{'s' * (g['threads'] > 1)} vs torch: " + "; ".join(parts))
    target = summary["target_pct_peak"]
    layers = []
    for shape, pct in summary["pct_peak_float32_1_thread"].items():
        if all(v is not None for v in pct.values()):
            figures = " / ".join(f"{pct[p]:.1f}" for p in PASSES if p in pct)
            layers.append(f"{shape} {figures} {_mark(all(pct[p] >= target[p] for p in pct))}")
    if layers:
        out.append(
            f"  float32, 1 thread, % of FMA peak forward / backward [>= {target['forward']:.0f}% /"
            f" >= {target['backward']:.0f}%]: " + ", ".join(layers)
        )
    fixed = (summary["fixed_cost_us"] or {}).get("fastconv")
    if fixed:
        limit = summary["target_fixed_cost_us"]
        out.append(
            f"  fixed cost: fastconv forward {fixed['forward']:.1f} us, backward {fixed['backward']:.1f} us"
            f" [< {limit:.0f} us {_mark(max(fixed.values()) < limit)}]"
        )
    return "\n".join(out)


def format_host_check(host: dict[str, Any]) -> str:
    if not host["enabled"]:
        return "\nhost check: off (--no-host-check)"

    def by_lib(counts: dict[str, int]) -> str:
        return ", ".join(f"{lib} {n}" for lib, n in counts.items()) or "none"

    return (
        f"\nhost check: {host['checks']} checks that the threads get {100 * host['required_share_of_peak']:.0f}%"
        f" of their cores' FMA peak; waited {host['seconds_waited']:.1f} s for it and"
        f" {host['seconds_settling']:.1f} s for spinning threads to settle; shares of samples taken"
        f" again: {by_lib(host['shares_taken_again'])}; kept after the last try:"
        f" {by_lib(host['shares_kept_after_last_try'])}" + format_cache_probe(host.get("cache_probe", {}))
    )


def format_cache_probe(probe: dict[str, float]) -> str:
    """The in-cache probe's line (host.CacheProbe): how often it ran slow."""
    if not probe:
        return ""
    return (
        f"\nin-cache probe (a 1 x 32 x 32 x 32 convolution, 1 thread): over {probe['slow_above']:g}x its best time at"
        f" {100 * probe['slow_share']:.0f}% of {probe['checks']:.0f} checks (best {probe['best_ms']:.3f} ms,"
        f" median {probe['median_ms']:.3f})"
    )


def cache_disturbed(host: dict[str, Any], share: float = 0.25) -> bool:
    """Whether the in-cache probe ran slow at more than `share` of its checks."""
    return host.get("cache_probe", {}).get("slow_share", 0.0) > share


def print_disagreements(rows: list[dict[str, Any]]) -> None:
    """Loudly, on stderr: a wrong result makes every timing meaningless."""
    bad = [r for r in rows if not r["ok"]]
    print(f"\n!!! AGREEMENT CHECK FAILED: {len(bad)} output(s) differ; nothing was timed !!!", file=sys.stderr)
    for r in bad:
        print(
            f"!!! {r['shape']} {r['dtype']} {r['threads']} thread(s) {r['pass']} {r['output']}:"
            f" fastconv vs {r['against']}"
            f" differs by {r['max_rel_diff']:.2e} of scale (tolerance {r['tolerance']:.0e})",
            file=sys.stderr,
        )
