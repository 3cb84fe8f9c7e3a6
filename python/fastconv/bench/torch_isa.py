"""PyTorch restricted to the instruction set fastconv runs with --isa: the
environment variables that do it, the re-run in a child process that sets
them before PyTorch loads, and what this process's PyTorch was restricted to."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .config import BenchError

# What restricts PyTorch to the instruction set fastconv runs with --isa:
# oneDNN (convolutions), MKL (float64 GEMM) and ATen's own vector code. They
# are read when PyTorch loads, so they must be in the environment before it is
# imported. fastconv's generic code is baseline x86-64, so PyTorch gets its
# lowest settings. No entry (avx512, the widest): PyTorch as it comes.
TORCH_ISA_ENV: dict[str, dict[str, str]] = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "generic": {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"},
}
TORCH_ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
CHILD_MARK = "FASTCONV_BENCH_CHILD"  # set in the re-run's environment, so that it never re-runs again


def torch_isa_env(isa: str | None) -> dict[str, str]:
    """The environment that restricts PyTorch to `isa` (empty: no restriction)."""
    return TORCH_ISA_ENV.get(isa, {}) if isa is not None else {}


def torch_isa_mismatch(isa: str | None) -> dict[str, str | None]:
    """The variables of torch_isa_env(isa) that this process's environment lacks, with their values here."""
    return {key: os.environ.get(key) for key, value in torch_isa_env(isa).items() if os.environ.get(key) != value}


def restrict_torch(isa: str, argv: Sequence[str] | None) -> int:
    """A re-run in a child process whose environment restricts PyTorch to
    `isa`; an error where that cannot work."""
    found = ", ".join(f"{k} unset" if v is None else f"{k}={v}" for k, v in torch_isa_mismatch(isa).items())
    wanted = " ".join(f"{k}={v}" for k, v in torch_isa_env(isa).items())
    if "torch" in sys.modules:
        raise BenchError(
            f"--isa {isa}: PyTorch must load with {wanted}, but it is imported already in this process,"
            f" where {found}; run the bench in a fresh process (python -m fastconv bench ...)"
        )
    if os.environ.get(CHILD_MARK) or argv is None:
        raise BenchError(
            f"--isa {isa}: PyTorch must load with {wanted}, but here {found};"
            f" set them before starting Python, or run python -m fastconv bench"
        )
    return rerun_with_torch_isa(isa, argv)


def rerun_with_torch_isa(isa: str, argv: Sequence[str]) -> int:
    """The same command in a child process (this interpreter) whose
    environment restricts PyTorch to `isa`; its exit status."""
    wanted = torch_isa_env(isa)
    settings = " ".join(f"{k}={v}" for k, v in wanted.items())
    print(
        f"fastconv bench: re-running in a child process with {settings}, so that PyTorch loads restricted to {isa}",
        file=sys.stderr,
        flush=True,
    )
    env = {**os.environ, **wanted, CHILD_MARK: "1"}
    return subprocess.run([sys.executable, "-m", "fastconv", *argv], env=env, check=False).returncode


def torch_isa_report(torch: Any) -> dict[str, Any]:
    """How PyTorch was restricted in this process: the variables as set
    (None: unset) and the vector code ATen says it dispatches to."""
    capability = None
    if torch is not None:
        get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        capability = get() if get is not None else None
    return {"env": {key: os.environ.get(key) for key in TORCH_ISA_VARS}, "aten_cpu_capability": capability}
