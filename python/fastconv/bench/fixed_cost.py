"""What a call costs besides its arithmetic: the smallest convolution's
forward and backward, sampled in shares spread over the whole run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import Config
from .libraries import fastconv_passes, make_case, torch_passes
from .settings import thread_limit
from .suite import FIXED_COST_SHAPE
from .timing import planned_samples, timed_calls, warm_up


class FixedCost:
    """Microseconds of forward and backward (dL/dX + dL/dF + dL/db) on
    FIXED_COST_SHAPE, float32, one thread, for each library but the reference.

    A call this small takes a few microseconds, which a slow spell of a shared
    host (seconds long, slowing the caches or the CPU) can nearly double, so
    the samples are taken in shares spread over the whole run: one share
    before every timed case (take_share), the libraries taking turns. The
    figure is the median of all of them."""

    def __init__(self, torch: Any, cfg: Config, shares: int) -> None:
        case = make_case(FIXED_COST_SHAPE, "float32")
        self.torch = torch
        self.libs = {"fastconv": fastconv_passes(case)}
        if torch is not None:
            self.libs["torch"] = torch_passes(case, torch)
        self.times: dict[tuple[str, str], list[float]] = {}
        self.share: dict[tuple[str, str], int] = {}
        with thread_limit(1, torch):
            for lib, fns in self.libs.items():
                for p in ("forward", "backward"):
                    _, estimate = warm_up(fns[p], cfg)
                    self.times[lib, p] = []
                    self.share[lib, p] = math.ceil(planned_samples(cfg, estimate) / max(shares, 1))
        self.turn = 0

    def take_share(self) -> None:
        libs = list(self.libs) if self.turn % 2 == 0 else list(self.libs)[::-1]
        self.turn += 1
        with thread_limit(1, self.torch):
            for lib in libs:
                for p in ("forward", "backward"):
                    fn = self.libs[lib][p]
                    fn()  # after another library's calls
                    self.times[lib, p] += timed_calls(fn, self.share[lib, p])

    def result(self) -> dict[str, dict[str, float]]:
        if not any(self.times.values()):
            self.take_share()
        return {
            lib: {p: float(np.median(self.times[lib, p])) * 1e6 for p in ("forward", "backward")} for lib in self.libs
        }
