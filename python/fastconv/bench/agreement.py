"""The agreement check that gates the timing: fastconv's outputs against
every other library's, pass by pass, within a tolerance per dtype."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import Config
from .libraries import Case, PassFns, library_passes, make_case
from .progress import Progress, step_label
from .settings import thread_limit

OUTPUT_NAMES = {
    "forward": ("output",),
    "backward": ("dL/dX", "dL/dF", "dL/db"),
    "backward_data": ("dL/dX",),
    "backward_weights": ("dL/dF",),
    "backward_bias": ("dL/db",),
}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}  # max |difference| relative to the result's scale


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| relative to the largest |b| (the result's scale)."""
    diff = float(np.max(np.abs(a - b), initial=0.0))
    scale = float(np.max(np.abs(b), initial=0.0))
    return diff / scale if scale else diff


def check_case(
    case: Case, libs: dict[str, PassFns], passes: Sequence[str], dtype: str, threads: int
) -> list[dict[str, Any]]:
    """fastconv's outputs against every other library's, pass by pass."""
    rows = []
    for pass_name in passes:
        ours = [np.asarray(a) for a in libs["fastconv"][pass_name]()]
        for other, fns in libs.items():
            if other == "fastconv":
                continue
            theirs = [np.asarray(a) for a in fns[pass_name]()]
            for output, a, b in zip(OUTPUT_NAMES[pass_name], ours, theirs, strict=True):
                diff = max_rel_diff(a, b) if a.shape == b.shape else math.inf
                rows.append(
                    {
                        "shape": case.shape.name,
                        "dtype": dtype,
                        "threads": threads,
                        "pass": pass_name,
                        "output": output,
                        "against": other,
                        "max_rel_diff": diff,
                        "tolerance": TOLERANCE[dtype],
                        "ok": diff <= TOLERANCE[dtype],
                    }
                )
    return rows


def check_all(cfg: Config, torch: Any, progress: Progress) -> list[dict[str, Any]]:
    """The agreement rows of every shape, dtype and thread count."""
    rows = []
    for threads in cfg.threads:
        with thread_limit(threads, torch):
            for dtype in cfg.dtypes:
                for shape in cfg.shapes:
                    progress.step("checking " + step_label(dtype, threads, shape))
                    case = make_case(shape, dtype)
                    rows += check_case(case, library_passes(case, torch, cfg), cfg.passes, dtype, threads)
    return rows
