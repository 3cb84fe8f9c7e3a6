"""The run's progress: one status line on stderr, and how a step names its case."""

from __future__ import annotations

import sys

from .suite import Shape


class Progress:
    """One status line on stderr, rewritten in place with \\r; silent when
    stderr is not a terminal, where the \\r lines would only pile up in a log."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.width = total, 0, 0
        self.shown = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.shown:
            line = f"[{self.done:>4}/{self.total}] {label}"
            sys.stderr.write("\r" + line.ljust(self.width))
            sys.stderr.flush()
            self.width = len(line)

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def step_label(dtype: str, threads: int, shape: Shape, *rest: str) -> str:
    """E.g. "float32 2 threads resnet_3x3 forward fastconv"."""
    return " ".join((dtype, f"{threads} thread{'s' * (threads > 1)}", shape.name, *rest))
