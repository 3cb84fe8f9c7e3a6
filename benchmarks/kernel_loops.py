#!/usr/bin/env python3
"""Time fastconv's hot micro-kernels one by one on this CPU, against its measured FMA peak.

    python benchmarks/kernel_loops.py                    # build (once, about a minute), run, print
    python benchmarks/kernel_loops.py --seconds 1 --json loops.json

benchmarks/mca_kernels.py predicts each hot micro-kernel's FMA throughput with llvm-mca's
models of CPUs one may not have; this measures it on the CPU one has. The C++ program in
benchmarks/kernel_loops/ includes the extension's own kernel sources (csrc/kernels_<isa>.cpp),
built by CMake with their flags (the option FASTCONV_KERNEL_LOOPS of CMakeLists.txt, into
build/kernel_loops/), and calls the template instance mca_kernels.py models for each kernel
over and over, through a function pointer as the layers do, on operands of a few KiB that stay
in the L1 data cache. The figure is the best batch's vector FMAs per second over the FMA peak
that fastconv's own peak loop measures in the same run, for the same instruction set and type:
the kernel's own throughput, without the caches, packing and writes around it in a layer.
Every instruction set this CPU runs is measured (on an AVX-512 CPU, the AVX2 kernels too).

A measuring tool: no figure is asserted, and the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fastconv.bench.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "kernel_loops"


@dataclasses.dataclass(frozen=True)
class Loop:
    isa: str
    kernel: str
    type: str
    instance: str
    fma_per_call: float  # vector FMAs
    seconds_per_call: float
    peak_gflops: float  # the same ISA's and type's measured FMA peak

    @property
    def gflops(self) -> float:
        vector_bits = 512 if self.isa == "avx512" else 256
        lanes = vector_bits // (32 if self.type == "float" else 64)
        return 2 * lanes * self.fma_per_call / self.seconds_per_call / 1e9

    @property
    def percent_of_peak(self) -> float:
        return 100 * self.gflops / self.peak_gflops


def parse_output(text: str) -> list[Loop]:
    """The program's tab-separated lines (benchmarks/kernel_loops/main.cpp) as Loops."""
    peaks: dict[tuple[str, str], float] = {}
    loops = []
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == "peak":
            peaks[(fields[1], fields[2])] = float(fields[3])
        elif fields[0] == "loop":
            isa, kernel, type_, instance, fmas, seconds = fields[1:7]
            loops.append(Loop(isa, kernel, type_, instance, float(fmas), float(seconds), peaks[(isa, type_)]))
    return loops


def cmake_command() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        sys.exit("kernel_loops.py needs cmake on PATH (pip install cmake)")
    return cmake


def build(build_dir: Path) -> Path:
    """Configure and build the kernel_loops target; CMake rebuilds only what changed."""
    import pybind11  # the project's CMakeLists.txt finds it, as the wheel build does

    cmake = cmake_command()
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
         "-DFASTCONV_KERNEL_LOOPS=ON", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
         f"-DPython_EXECUTABLE={sys.executable}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run(
        [cmake, "--build", str(build_dir), "--target", "kernel_loops"], check=True, stdout=subprocess.DEVNULL
    )
    return build_dir / "kernel_loops"


def table(loops: list[Loop], threshold: float) -> str:
    rows = [f"{'kernel':15s} {'isa':6s} {'T':6s} {'instance':44s} {'GFLOP/s':>8s} {'% of peak':>10s}"]
    for lp in loops:
        mark = " <" if lp.percent_of_peak < threshold else ""
        rows.append(
            f"{lp.kernel:15s} {lp.isa:6s} {lp.type:6s} {lp.instance:44s} {lp.gflops:8.1f} {lp.percent_of_peak:9.1f}%{mark}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.3, help="seconds of batches per kernel (default 0.3)")
    ap.add_argument("--threshold", type=float, default=90.0, help="mark rows below this %% of peak with <")
    ap.add_argument("--build-dir", type=Path, default=BUILD, help=f"CMake build directory (default {BUILD})")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    exe = build(args.build_dir)
    # One thread: the loops are single-threaded, and an idle OpenMP team must not spin beside them.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(exe), str(args.seconds)], check=True, capture_output=True, text=True, env=env).stdout
    loops = parse_output(out)
    peaks = sorted({(lp.isa, lp.type, lp.peak_gflops) for lp in loops})
    print(f"kernel loops on {cpu_model()}, 1 thread; operands in L1; best batch of {args.seconds} s per kernel")
    print("measured FMA peak: " + ", ".join(f"{isa} {t} {g:.1f} GFLOP/s" for isa, t, g in peaks))
    print(table(loops, args.threshold))
    if args.json:
        records = [
            {**dataclasses.asdict(lp), "gflops": lp.gflops, "percent_of_peak": lp.percent_of_peak} for lp in loops
        ]
        args.json.write_text(
            json.dumps({"cpu": cpu_model(), "seconds": args.seconds, "loops": records}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
