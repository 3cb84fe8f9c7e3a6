"""Which implementation runs a call, the C++ core or the NumPy reference,
and running it: each takes a checked call's ConvSpec (_spec) and executes it,
on (N, C, H, W) arrays or views already converted and checked.

A padding_mode other than zeros is applied here, for both: the input is
padded in that mode first (pad_input, as PyTorch's F.pad does), the kernels
pad nothing more (the spec's kernel_padding), and the input's gradient is
folded back onto the input.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import numpy as np

from . import _memory, _padding_modes, reference
from ._spec import ConvSpec
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


# -- running a spec ------------------------------------------------------------

Gradients = tuple[np.ndarray | None, np.ndarray, np.ndarray | None]  # dL/dx (or None), dL/dw, dL/db (or None)


def _check_memory(spec: ConvSpec, nbytes: int, what: str, numpy_backend: bool) -> None:
    """MemoryError if a pass of `nbytes` working memory cannot fit in the
    machine's memory (_memory.check_fits, with the C++ kernels' buffers)."""
    threads = 0 if numpy_backend or core is None else core.max_threads()
    k, c_per_group, kh, kw = spec.weight_shape
    taps = max(c_per_group, k // spec.groups) * kh * kw  # a filter's taps, forward or in dL/dx
    _memory.check_fits(nbytes, what, threads, _memory.packed_block_extra_bytes(taps))


def pad_input(spec: ConvSpec, x: np.ndarray) -> np.ndarray:
    """The (N, C, H, W) input as the kernels read it: padded in the spec's
    padding_mode first, where that pads, else `x` itself."""
    return _padding_modes.pad(x, spec.padding, spec.padding_mode) if spec.pads_data else x


def forward(spec: ConvSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, backend: str) -> np.ndarray:
    """The forward pass of `spec` on checked arrays, `x` from pad_input: the
    (N, K, Ho, Wo) result, a view of channels-last storage for NHWC."""
    numpy_backend = resolve(backend) == "numpy"
    _check_memory(spec, spec.forward_bytes(numpy_backend), "this forward", numpy_backend)
    if numpy_backend:
        return reference.conv2d(x, w, b, spec.stride, spec.kernel_padding, spec.dilation, spec.groups)
    return run_forward(spec, x, w, b)


def run_forward(spec: ConvSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The C++ forward into a new result, without checks: those were made
    (this is the call cache's path)."""
    assert core is not None
    n, k = x.shape[0], w.shape[0]
    if spec.data_format == "NHWC":
        y = np.empty((n, *spec.out_hw, k), dtype=x.dtype).transpose(0, 3, 1, 2)
    else:
        y = np.empty((n, k, *spec.out_hw), dtype=x.dtype)
    core.forward(x, w, b, y, spec.stride, spec.kernel_padding, spec.dilation, spec.groups)
    return y


def backward(
    spec: ConvSpec,
    grad_y: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    bias: bool,
    need_input_grad: bool,
    backend: str,
) -> Gradients:
    """The backward pass of `spec` on checked arrays, `x` from pad_input and
    `grad_y` (N, K, Ho, Wo): dL/dx ((N, C, H, W), folded back from the padded
    input's; None without need_input_grad), dL/dw and dL/db (None without bias)."""
    numpy_backend = resolve(backend) == "numpy"
    _check_memory(spec, spec.backward_bytes(numpy_backend, need_input_grad), "this backward", numpy_backend)
    if numpy_backend:
        args = (spec.stride, spec.kernel_padding, spec.dilation, spec.groups)
        grads: Gradients = (
            reference.conv2d_grad_input(grad_y, w, x.shape[2:], *args) if need_input_grad else None,
            reference.conv2d_grad_weight(grad_y, x, spec.weight_shape[2:], *args),
            reference.conv2d_grad_bias(grad_y) if bias else None,
        )
    else:
        grads = run_backward(spec, grad_y, x, w, bias, need_input_grad)
    if grads[0] is None or not spec.pads_data:
        return grads
    _, _, h, width = spec.input_shape
    return _padding_modes.fold_gradient(grads[0], spec.padding, spec.padding_mode, h, width), grads[1], grads[2]


def run_backward(
    spec: ConvSpec, grad_y: np.ndarray, x: np.ndarray, w: np.ndarray, bias: bool, need_input_grad: bool
) -> Gradients:
    """The C++ backward into new gradients (of the padded input, where the
    spec pads the data), without checks: the call cache's path."""
    assert core is not None
    grad_x = np.empty_like(x) if need_input_grad else None  # empty_like keeps x's (channels-last) layout
    grad_w = np.empty_like(w)
    grad_b = np.empty(w.shape[0], dtype=w.dtype) if bias else None
    core.backward(grad_y, x, w, grad_x, grad_w, grad_b, spec.stride, spec.kernel_padding, spec.dilation, spec.groups)
    return grad_x, grad_w, grad_b  # None above skips a gradient
