"""Command line: ``python -m fastconv demo | bench | info``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import Conv2D, __version__, _backend, bench
from .bench.machine import cpu_facts, format_caches, format_fma, runtime_info


def _median_ms(fn: Callable[[], object], repeats: int = 20) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| relative to the largest |b| (the result's scale)."""
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a - b), initial=0.0))


def demo(dtype: str) -> int:
    """The task's example: input 10x4x7x7, 8 filters 3x3, stride 2, "same"."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4, 7, 7)).astype(dtype)
    layers = {}
    for backend in ("cpp", "numpy"):
        if backend == "cpp" and _backend.core is None:
            print("C++ core: not available; skipping")
            continue
        layers[backend] = Conv2D(8, 3, stride=2, padding="same", in_channels=4, dtype=dtype, backend=backend, seed=0)

    print(f"fastconv {__version__}: Conv2D(8 filters, 3x3, stride 2, padding='same') on input {x.shape}, {dtype}")
    results: dict[str, tuple[np.ndarray, ...]] = {}
    for name, layer in layers.items():
        y = layer.forward(x)
        grad_y = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        grad_w, grad_x = layer.backward(grad_y)
        assert grad_x is not None and layer.grad_bias is not None
        results[name] = (y, grad_w, grad_x, layer.grad_bias)
        fwd = _median_ms(lambda: layer.forward(x))
        bwd = _median_ms(lambda: layer.backward(grad_y))
        print(
            f"  {name:6s} output {y.shape}  dL/dF {grad_w.shape}  dL/dX {grad_x.shape}  "
            f"forward {fwd:.3f} ms  backward {bwd:.3f} ms"
        )

    labels = ("output", "dL/dF", "dL/dX", "dL/db")
    ref = results["numpy"]
    if "cpp" in results:
        diffs = ", ".join(f"{lab} {_max_rel_diff(a, b):.1e}" for lab, a, b in zip(labels, results["cpp"], ref))
        print(f"  C++ vs NumPy reference, largest difference relative to scale: {diffs}")

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("  PyTorch not installed: no comparison with it")
        return 0
    layer = layers["numpy"]
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight, requires_grad=True)
    bt = torch.tensor(layer.bias, requires_grad=True)
    # For this shape TF-style "same" is symmetric: one row/column on each side.
    yt = F.conv2d(xt, wt, bt, stride=2, padding=1)
    yt.backward(torch.tensor(np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(dtype)))
    assert wt.grad is not None and xt.grad is not None and bt.grad is not None
    torch_results = (yt.detach().numpy(), wt.grad.numpy(), xt.grad.numpy(), bt.grad.numpy())
    for name, res in results.items():
        diffs = ", ".join(f"{lab} {_max_rel_diff(a, b):.1e}" for lab, a, b in zip(labels, res, torch_results))
        print(f"  {name:6s} vs PyTorch {torch.__version__} (padding=1), largest difference relative to scale: {diffs}")
    return 0


def print_cpu_facts(facts: dict[str, Any]) -> None:
    """The microarchitecture facts the kernels use, measured, never looked up by the CPU's name."""
    print(f"vector registers: {facts['vector_registers']} of {facts['vector_bits']} bit ({facts['isa']})")
    print(f"caches: {format_caches(facts)}")
    if facts["fma_per_cycle"] is None:
        print(f"FMA: {format_fma(facts)}")
        return
    print(
        f"FMA: {format_fma(facts)} (measured: float32 FMA peak {facts['fma_peak_gflops']:.1f} GFLOP/s"
        f" on one thread, at a clock of {facts['clock_ghz']:.2f} GHz timed with a chain of integer adds)"
    )


def info() -> int:
    """What a bug report or a benchmark needs to know about this installation."""
    i = runtime_info()
    v = i["versions"]
    print(f"fastconv {v['fastconv']}, numpy {v['numpy']}, Python {v['python']}, CPU {i['cpu_model']}")
    if "build" not in i:
        print(f"C++ core: not available ({_backend.import_error}); the NumPy reference runs instead")
        return 1
    build = i["build"]
    print(f"instruction set: {i['isa']} (this CPU supports: {', '.join(i['supported_isas'])})")
    print_cpu_facts(cpu_facts())
    if build["openmp"] is None:
        print("OpenMP: not compiled in; the kernels run on one thread")
    elif i["openmp_libraries"] is None:
        print(
            f"OpenMP: version {build['openmp']}, {build['max_threads']} threads"
            " (install threadpoolctl to name the runtime library)"
        )
    else:
        libs = ", ".join(f"{lib['prefix']} ({lib['filepath']})" for lib in i["openmp_libraries"]) or "none found"
        print(f"OpenMP: version {build['openmp']}, {build['max_threads']} threads; runtime: {libs}")
    print(f"build: {build['compiler']}, flags {build['flags']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="the task's example through both backends, checked against PyTorch")
    p_demo.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p_bench = sub.add_parser(
        "bench",
        help="time fastconv against PyTorch and the NumPy reference",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(p_bench)
    sub.add_parser("info", help="versions, instruction sets, vector width, caches, FMA ports, OpenMP and build flags")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.dtype)
    if args.command == "bench":
        return bench.run(args, argv)
    return info()


if __name__ == "__main__":
    sys.exit(main())
