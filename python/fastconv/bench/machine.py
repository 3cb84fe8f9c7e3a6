"""The machine the bench runs on, as the bench's header, its JSON and
``python -m fastconv info`` state it: the C++ core, the CPUs this process may
use, the CPU's model and facts, the OpenMP runtimes and the versions."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from .. import __version__, _backend


def loaded_core() -> Any:
    """The C++ core: `run` refuses to start without it."""
    assert _backend.core is not None
    return _backend.core


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow), else os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    """/proc/cpuinfo's "model name" (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def openmp_libraries() -> list[dict[str, Any]] | None:
    """The OpenMP runtimes loaded in this process (threadpoolctl), or None without it."""
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]
    except ImportError:
        return None
    return [
        {key: i.get(key) for key in ("prefix", "filepath", "version", "num_threads")}
        for i in threadpool_info()
        if i["user_api"] == "openmp"
    ]


def cpu_facts(isa: str | None = None) -> dict[str, Any]:
    """What the kernels use of this CPU with `isa` (default: the active one):
    vector width and registers, cache sizes, and the measured clock, FMA peak
    and vector FMAs per cycle (None where the ISA has no vector FMA)."""
    return dict(loaded_core().cpu_facts(isa))


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n / 1024:g} KiB"


def format_fma(facts: dict[str, Any]) -> str:
    """E.g. "2.0 FMA/cycle at 256 bit: 2 FMA ports"."""
    if facts["fma_per_cycle"] is None:
        return f"no vector FMA with {facts['isa']}"
    ports = facts["fma_ports"]
    return f"{facts['fma_per_cycle']:.1f} FMA/cycle at {facts['vector_bits']} bit: {ports} FMA port{'s' * (ports != 1)}"


def format_caches(facts: dict[str, Any]) -> str:
    l3 = f"L3 {_size(facts['l3_bytes'])} shared" if facts["l3_bytes"] else "L3 not reported by the OS"
    text = f"L1d {_size(facts['l1d_bytes'])}, L2 {_size(facts['l2_bytes'])} per core, {l3}"
    if not facts["caches_reported"]:
        text += " (L1d and L2 not reported by the OS: the sizes the kernels assume then)"
    return text


def format_cpu_facts(facts: dict[str, Any]) -> str:
    """One line for the bench's header."""
    return (
        f"{facts['vector_bits']}-bit vectors, {facts['vector_registers']} registers, {format_fma(facts)};"
        f" {format_caches(facts)}"
    )


def runtime_info() -> dict[str, Any]:
    """Versions, instruction sets, OpenMP and build of this fastconv (no PyTorch import);
    without the C++ core, no instruction sets or build (`python -m fastconv info` says so)."""
    core = _backend.core
    info: dict[str, Any] = {
        "versions": {"fastconv": __version__, "numpy": np.__version__, "python": platform.python_version()},
        "cpu_model": cpu_model(),
    }
    if core is not None:
        info.update(isa=core.isa(), supported_isas=list(core.supported_isas()), build=dict(core.build_info()))
    info["openmp_libraries"] = openmp_libraries()
    return info
