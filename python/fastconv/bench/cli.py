"""The bench subcommand's command line: its options, the Config they resolve
to, and `run`, which turns a run that cannot go ahead into a message and an
exit status, and re-runs itself in a child process where --isa needs it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .. import _backend
from .agreement import TOLERANCE
from .config import BenchError, Config
from .libraries import REFERENCE_MAX_FLOPS
from .machine import cpu_count, loaded_core
from .runner import run_bench
from .suite import DETAIL_PASSES, PASSES, QUICK, SHAPE_HELP, SUITE, parse_shape
from .torch_isa import TORCH_ISA_VARS, restrict_torch, torch_isa_mismatch


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_dtypes(text: str) -> list[str]:
    dtypes = _csv(text)
    bad = [d for d in dtypes if d not in TOLERANCE]
    if bad or not dtypes:
        raise argparse.ArgumentTypeError(f"dtypes must be float32 and/or float64, got {text!r}")
    return list(dict.fromkeys(dtypes))


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(t) for t in _csv(text)]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError(f"threads must be positive integers separated by commas, got {text!r}")
    return list(dict.fromkeys(threads))


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench subcommand's options."""
    add = parser.add_argument
    add("--dtype", type=parse_dtypes, default=["float32", "float64"], help="float32,float64 (default both)")
    add("--threads", type=parse_threads, default=None, help=f"thread counts (default 1,{cpu_count()})")
    add("--shape", type=parse_shape, action="append", default=[], help=SHAPE_HELP)
    add("--only", type=_csv, default=None, help="run only these shapes (comma-separated: suite or --shape names)")
    add("--quick", action="store_true", help="fewer shapes and repeats: under a minute")
    add("--detail", action="store_true", help="also time dL/dX, dL/dF and dL/db on their own")
    add(
        "--reference",
        action="store_true",
        help=f"time the NumPy reference on every shape, not only below {REFERENCE_MAX_FLOPS / 1e6:.0f} MFLOP",
    )
    add(
        "--isa",
        default=None,
        help="instruction set for fastconv's kernels (see `python -m fastconv info`); with avx2 or generic, "
        "PyTorch is restricted to the same through "
        + ", ".join(TORCH_ISA_VARS)
        + " (the bench re-runs itself in a child process to set them before PyTorch loads)",
    )
    add("--warmup", type=count(0), default=None, help="untimed calls before timing (default 2, --quick 1)")
    add("--repeats", type=count(1), default=None, help="least timed calls (default 10, --quick 3)")
    add(
        "--rounds",
        type=count(1),
        default=None,
        help="rounds the timed calls are split into, libraries and thread counts taking turns (default 5, --quick 2)",
    )
    add(
        "--min-time",
        type=float,
        default=None,
        help="more repeats of fast calls until this many seconds (default 0.3, --quick 0.05)",
    )
    add(
        "--no-host-check",
        action="store_true",
        help="take every share of samples as it comes, without checking that the machine gives the run its cores",
    )
    add("--json", metavar="PATH", help="write every figure, the versions and the machine to PATH")
    add("--plot", metavar="PATH", help="write a PNG bar chart of the speed-ups over PyTorch (needs matplotlib)")


def make_config(args: argparse.Namespace) -> Config:
    """Defaults that depend on --quick, and the shape selection."""
    pool = {s.name: s for s in (*SUITE, *args.shape)}
    if args.only is not None:
        unknown = [name for name in args.only if name not in pool]
        if unknown:
            raise BenchError(f"--only: unknown shapes {unknown}; known: {', '.join(pool)}")
        names = args.only
    elif args.quick:
        names = [*QUICK, *(s.name for s in args.shape)]
    else:
        names = list(pool)
    return Config(
        shapes=tuple(pool[name] for name in dict.fromkeys(names)),
        dtypes=tuple(args.dtype),
        threads=tuple(args.threads or dict.fromkeys((1, cpu_count()))),
        passes=PASSES + (DETAIL_PASSES if args.detail else ()),
        reference_all=args.reference,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        repeats=args.repeats if args.repeats is not None else (3 if args.quick else 10),
        rounds=args.rounds if args.rounds is not None else (2 if args.quick else 5),
        min_time=args.min_time if args.min_time is not None else (0.05 if args.quick else 0.3),
        host_check=not args.no_host_check,
    )


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """The bench command: check, then time, then report. 0; 1 on a disagreement; 2 if it cannot run.

    argv: the command line after `python -m fastconv`, for the re-run in a
    child process that --isa may need (without it, no re-run)."""
    if _backend.core is None:
        print(f"fastconv bench: the C++ core is not built ({_backend.import_error})", file=sys.stderr)
        return 2
    try:
        cfg = make_config(args)
        if args.isa is not None and args.isa not in loaded_core().supported_isas():
            raise BenchError(f"--isa {args.isa!r}: this CPU supports {', '.join(loaded_core().supported_isas())}")
        if torch_isa_mismatch(args.isa):
            return restrict_torch(args.isa, argv)
        return run_bench(cfg, args.isa, args.json, args.plot)
    except BenchError as exc:
        print(f"fastconv bench: {exc}", file=sys.stderr)
        return 2
