"""What one bench run does (Config, resolved from the command line by
cli.make_config), and the error of a run that cannot go ahead as asked."""

from __future__ import annotations

from dataclasses import dataclass

from .suite import Shape


class BenchError(Exception):
    """A run that cannot go ahead as asked (shapes, threads, ISA): a message, not a traceback."""


@dataclass(frozen=True)
class Config:
    """What one bench run does, resolved from the command line."""

    shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...]
    threads: tuple[int, ...]
    passes: tuple[str, ...]
    reference_all: bool
    warmup: int
    repeats: int
    rounds: int
    min_time: float
    host_check: bool = True
