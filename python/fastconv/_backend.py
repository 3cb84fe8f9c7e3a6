"""Which implementation runs a call: the C++ core, or the NumPy reference."""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from ._validation import shown

BACKENDS = ("auto", "cpp", "numpy")

core: ModuleType | None
try:
    from . import _core as core

    import_error: ImportError | None = None
except ImportError as _exc:  # a source checkout without a build, or a broken install
    core = None
    import_error = _exc


def _apply_isa_from_environment() -> None:
    """FASTCONV_ISA=avx512|avx2|generic forces one kernel path (for testing
    and comparisons); unset, the best one this CPU runs is used."""
    name = os.environ.get("FASTCONV_ISA")
    if core is None or not name:
        return
    try:
        core.set_isa(name)
    except ValueError as exc:
        raise ValueError(
            f"FASTCONV_ISA={name!r} cannot be used: {exc}; this CPU runs {core.supported_isas()}"
        ) from None


_apply_isa_from_environment()

_warned = False


def check_backend(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {shown(backend)}")
    return backend


def resolve(backend: str) -> str:
    """ "cpp" or "numpy" for a (checked) backend name."""
    global _warned
    check_backend(backend)
    if backend == "numpy":
        return "numpy"
    if core is not None:
        return "cpp"
    if backend == "cpp":
        raise ImportError(f"fastconv's C++ extension could not be imported: {import_error}")
    if not _warned:
        warnings.warn(
            f"fastconv's C++ extension could not be imported ({import_error}); "
            "falling back to the slower NumPy reference",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned = True
    return "numpy"
