"""--plot: a PNG bar chart of the speed-ups over PyTorch (matplotlib)."""

from __future__ import annotations

from typing import Any

from .suite import PASSES


def write_plot(records: list[dict[str, Any]], path: str) -> str:
    """A PNG of the speed-ups over PyTorch: forward/backward bars per shape, a
    panel per dtype and thread count; the returned line says what happened."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "--plot: matplotlib is not installed (pip install matplotlib); no plot written"
    rows = [r for r in records if r["speedup_vs_torch"] and r["pass"] in PASSES]
    if not rows:
        return "--plot: no speed-ups to plot (PyTorch is not installed); no plot written"
    panels = list(dict.fromkeys((r["dtype"], r["threads"]) for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    fig = Figure(figsize=(max(6.0, 0.8 * len(shapes) + 2), 3.2 * len(panels)), layout="constrained")
    for ax, (dtype, threads) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        for offset, pass_name in ((-0.2, "forward"), (0.2, "backward")):
            values = {
                r["shape"]: r["speedup_vs_torch"]
                for r in rows
                if (r["dtype"], r["threads"], r["pass"]) == (dtype, threads, pass_name)
            }
            xs = [i + offset for i, s in enumerate(shapes) if s in values]
            speedups = [values[s] for s in shapes if s in values]
            # Bars grow from 1x, up when fastconv is faster, down when slower.
            bars = ax.bar(xs, [v - 1 for v in speedups], bottom=1.0, width=0.4, label=pass_name)
            ax.bar_label(bars, [f"{v:.2f}x" for v in speedups], fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xticks(range(len(shapes)), shapes, rotation=30, ha="right")
        ax.set_ylabel("speed-up over PyTorch")
        ax.set_title(f"{dtype}, {threads} thread{'s' * (threads > 1)}")
        ax.legend()
    fig.savefig(path, dpi=120)
    return f"plot written to {path}"
