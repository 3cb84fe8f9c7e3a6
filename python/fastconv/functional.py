"""Functional API: ``conv2d`` and ``conv2d_backward``, stateless and validating."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, _call_cache, _memory, _padding_modes, reference
from ._validation import (
    ConvGeometry,
    as_float_array,
    check_data_format,
    check_flag,
    check_padding_mode,
    plan_geometry,
)


class ConvGradients(NamedTuple):
    """Gradients of the loss with respect to each argument of ``conv2d``."""

    input: np.ndarray | None  # None when not asked for (need_input_grad=False)
    weight: np.ndarray
    bias: np.ndarray | None


def _batched(x: np.ndarray, name: str, data_format: str = "NCHW") -> tuple[np.ndarray, bool]:
    """(N, C, H, W) as is, (C, H, W) as a batch of one (or the NHWC forms);
    True if it was unbatched."""
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[np.newaxis], True
    forms = "(N, C, H, W) or (C, H, W)" if data_format == "NCHW" else "(N, H, W, C) or (H, W, C)"
    raise ValueError(f"{name} must have shape {forms}, got {x.ndim} dimensions: {x.shape}")


def to_nchw(a: np.ndarray, data_format: str) -> np.ndarray:
    """A 4-D array in `data_format` as an (N, C, H, W) view: never a copy (the
    kernels take the strides of channels-last data as they are)."""
    return a if data_format == "NCHW" else a.transpose(0, 3, 1, 2)


def from_nchw(a: np.ndarray, data_format: str) -> np.ndarray:
    """An (N, C, H, W) result in `data_format`, C-contiguous: a view where the
    storage already has that layout (the C++ path writes it so), else a copy."""
    out = a if data_format == "NCHW" else a.transpose(0, 2, 3, 1)
    return out if out.flags.c_contiguous else np.ascontiguousarray(out)


def nchw_shape(shape: tuple[int, ...], data_format: str) -> tuple[int, ...]:
    """A 4-D shape in `data_format` in (N, C, H, W) order."""
    return shape if data_format == "NCHW" else (shape[0], shape[3], shape[1], shape[2])


def _prepare(
    x: Any,
    weight: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    dtype: np.dtype | None,
    data_format: str = "NCHW",
):
    """Convert and check input and weight; the common dtype is float64 if either is.
    The input comes back as an (N, C, H, W) view whatever its layout."""
    x_arr = as_float_array(x, "input", dtype)
    w_arr = as_float_array(weight, "weight", dtype)
    if dtype is None and x_arr.dtype != w_arr.dtype:
        common = np.result_type(x_arr, w_arr)
        x_arr, w_arr = x_arr.astype(common), w_arr.astype(common)
    if w_arr.ndim != 4:
        raise ValueError(
            f"weight must have shape (filters, in_channels/groups, kh, kw), got {w_arr.ndim} dimensions: {w_arr.shape}"
        )
    x4, unbatched = _batched(x_arr, "input", data_format)
    x4 = to_nchw(x4, data_format)
    geom = plan_geometry(x4.shape, w_arr.shape, stride, padding, dilation, groups)
    return x4, w_arr, unbatched, geom


def _check_bias(bias: Any, filters: int, dtype: np.dtype) -> np.ndarray:
    b = as_float_array(bias, "bias", dtype)
    if b.shape != (filters,):
        raise ValueError(f"bias must have shape ({filters},) (one value per filter), got {b.shape}")
    return b


def apply_padding_mode(x: np.ndarray, geom: ConvGeometry, padding_mode: str) -> tuple[np.ndarray, ConvGeometry]:
    """For a padding_mode other than zeros: the input padded in that mode, and
    a geometry that pads nothing more (the output size is unchanged)."""
    if padding_mode == "zeros" or not any(geom.padding):
        return x, geom
    _padding_modes.check_fits(padding_mode, geom.padding, x.shape[2], x.shape[3])
    return _padding_modes.pad(x, geom.padding, padding_mode), geom._replace(padding=(0, 0, 0, 0))


def fold_padding_mode(
    grads: ConvGradients, geom: ConvGeometry, padding_mode: str, in_hw: tuple[int, int]
) -> ConvGradients:
    """Gradients of a padded-in-mode input folded back onto the input itself."""
    if padding_mode == "zeros" or not any(geom.padding) or grads.input is None:
        return grads
    return grads._replace(input=_padding_modes.fold_gradient(grads.input, geom.padding, padding_mode, *in_hw))


def _working_memory(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, numpy_backend: bool, results: int) -> int:
    """Bytes a pass needs besides its inputs that grow with it: its `results`
    elements, and the NumPy reference's padded input and result-sized
    temporaries, or the C++ kernels' packed weights (their per-thread buffers
    come on top: _check_memory)."""
    itemsize = x.dtype.itemsize
    if numpy_backend:
        top, bottom, left, right = geom.padding
        padded = x.shape[0] * x.shape[1] * (x.shape[2] + top + bottom) * (x.shape[3] + left + right)
        return (3 * results + 2 * padded) * itemsize
    return results * itemsize + _memory.packed_weights_bytes(itemsize, w.size)


def _check_memory(
    x: np.ndarray, w: np.ndarray, geom: ConvGeometry, numpy_backend: bool, results: int, what: str
) -> None:
    """MemoryError if the pass cannot fit in the machine's memory (_memory.check_fits)."""
    core = _backend.core
    threads = 0 if numpy_backend or core is None else core.max_threads()
    _memory.check_fits(_working_memory(x, w, geom, numpy_backend, results), what, threads)


def _gradient_count(x: np.ndarray, w: np.ndarray, need_input_grad: bool) -> int:
    """Elements of the gradients a backward pass returns, dL/db's counted always."""
    return (x.size if need_input_grad else 0) + w.size + w.shape[0]


def _runs_unchecked(x: np.ndarray, w: np.ndarray, geom: ConvGeometry, backend: str, results: int) -> bool:
    """Whether a call that needed no conversion may skip its checks when
    repeated: the C++ kernels run it, and it is too small for the memory check."""
    if _backend.resolve(backend) != "cpp":
        return False
    return _working_memory(x, w, geom, False, results) < _memory.CHECK_ABOVE


def forward_checked(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geom: ConvGeometry, backend: str, channels_last: bool = False
) -> np.ndarray:
    """The forward pass on checked (N, C, H, W) arrays or views; the result an
    (N, K, Ho, Wo) view of channels-last storage with `channels_last`."""
    n, k = x.shape[0], w.shape[0]
    numpy_backend = _backend.resolve(backend) == "numpy"
    _check_memory(x, w, geom, numpy_backend, n * k * geom.out_hw[0] * geom.out_hw[1], "this forward")
    if numpy_backend:
        return reference.conv2d(x, w, b, geom.stride, geom.padding, geom.dilation, geom.groups)
    return run_forward(x, w, b, geom, channels_last)


def run_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geom: ConvGeometry, channels_last: bool
) -> np.ndarray:
    """The C++ forward into a new result, on arrays already checked."""
    core = _backend.core
    assert core is not None
    n, k = x.shape[0], w.shape[0]
    if channels_last:
        y = np.empty((n, *geom.out_hw, k), dtype=x.dtype).transpose(0, 3, 1, 2)
    else:
        y = np.empty((n, k, *geom.out_hw), dtype=x.dtype)
    core.forward(x, w, b, y, geom.stride, geom.padding, geom.dilation, geom.groups)
    return y


def backward_checked(
    grad_y: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    geom: ConvGeometry,
    bias: bool,
    backend: str,
    need_input_grad: bool = True,
) -> ConvGradients:
    """The backward pass on checked, contiguous arrays (grad_y of the output's shape)."""
    numpy_backend = _backend.resolve(backend) == "numpy"
    _check_memory(x, w, geom, numpy_backend, _gradient_count(x, w, need_input_grad), "this backward")
    if numpy_backend:
        kernel = (w.shape[2], w.shape[3])
        args = (geom.stride, geom.padding, geom.dilation, geom.groups)
        return ConvGradients(
            reference.conv2d_grad_input(grad_y, w, x.shape[2:], *args) if need_input_grad else None,
            reference.conv2d_grad_weight(grad_y, x, kernel, *args),
            reference.conv2d_grad_bias(grad_y) if bias else None,
        )
    return run_backward(grad_y, x, w, geom, bias, need_input_grad)


def run_backward(
    grad_y: np.ndarray, x: np.ndarray, w: np.ndarray, geom: ConvGeometry, bias: bool, need_input_grad: bool
) -> ConvGradients:
    """The C++ backward into new gradients, on arrays already checked."""
    core = _backend.core
    assert core is not None
    grad_x = np.empty_like(x) if need_input_grad else None  # empty_like keeps x's (channels-last) layout
    grad_w = np.empty_like(w)
    grad_b = np.empty(w.shape[0], dtype=w.dtype) if bias else None
    core.backward(grad_y, x, w, grad_x, grad_w, grad_b, geom.stride, geom.padding, geom.dilation, geom.groups)
    return ConvGradients(grad_x, grad_w, grad_b)  # None above skips a gradient


def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: int | tuple[int, int] = 1,
    padding: str | int | tuple[int, ...] = "valid",
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    backend: str = "auto",
) -> np.ndarray:
    """2-D convolution (cross-correlation) of ``x`` with ``weight``, plus ``bias``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Floating-point input; float64 is kept, other floats become float32.
    weight : array_like, shape (K, C / groups, kh, kw)
        Filters in PyTorch's OIHW layout.
    bias : array_like, shape (K,), optional
    stride, dilation : int or (int, int)
    padding : "valid", "same", int, (h, w) or (top, bottom, left, right)
        "same" pads as TensorFlow/Keras do, at every stride: output size
        ceil(H / stride), the odd extra row/column at the bottom/right.
    groups : int
        Must divide C and K; groups == C is a depthwise convolution.
    padding_mode : "zeros", "reflect", "replicate" or "circular"
        What the padding holds, with PyTorch's meaning.
    data_format : "NCHW" or "NHWC"
        Layout of the input and the result (the weights stay OIHW); NHWC
        (channels last, Keras') data is read and written as it is.
    backend : "auto", "cpp" or "numpy"

    Returns
    -------
    numpy.ndarray of shape (N, K, Ho, Wo), or (K, Ho, Wo) for unbatched input
    ((N, Ho, Wo, K) or (Ho, Wo, K) in NHWC).
    """
    arrays = (x, weight) if bias is None else (x, weight, bias)
    key = _call_cache.signature(
        "conv2d", arrays, (stride, padding, dilation, groups, padding_mode, data_format, backend), ()
    )
    checked = _call_cache.get(key)
    if checked is not None:
        return run_forward(x, weight, bias, checked, False)  # type: ignore[arg-type]  # a key: plain arrays
    _backend.check_backend(backend)
    padding_mode = check_padding_mode(padding_mode)
    data_format = check_data_format(data_format)
    x4, w, unbatched, geom = _prepare(x, weight, stride, padding, dilation, groups, None, data_format)
    b = None if bias is None else _check_bias(bias, w.shape[0], w.dtype)
    xk, gk = apply_padding_mode(x4, geom, padding_mode)
    y = from_nchw(forward_checked(xk, w, b, gk, backend, data_format == "NHWC"), data_format)
    # With a key (plain arrays of one dtype), xk is x itself only where
    # nothing was converted: 4-D, NCHW, no padding mode at work. A repeat of
    # such a call needs no checks.
    if key is not None and xk is x:
        if _runs_unchecked(x, w, gk, backend, y.size):
            _call_cache.put(key, gk)
    return y[0] if unbatched else y


def conv2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: int | tuple[int, int] = 1,
    padding: str | int | tuple[int, ...] = "valid",
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool = True,
    *,
    need_input_grad: bool = True,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    backend: str = "auto",
) -> ConvGradients:
    """Gradients of a loss through ``conv2d(x, weight, bias, ...)``.

    ``grad_output`` is dL/dy, of the shape ``conv2d`` returned. Returns the
    named tuple ``(input, weight, bias)`` of dL/dx, dL/dweight and dL/dbias
    (``bias`` is None when ``bias=False``; ``input`` is None, and its cost
    skipped, with ``need_input_grad=False``, as for a network's first layer).
    """
    key = _call_cache.signature(
        "conv2d_backward",
        (grad_output, x, weight),
        (stride, padding, dilation, groups, padding_mode, data_format, backend),
        (bias, need_input_grad),
    )
    checked = _call_cache.get(key)
    if checked is not None:
        return run_backward(grad_output, x, weight, checked, bias, need_input_grad)  # type: ignore[arg-type]
    _backend.check_backend(backend)
    bias = check_flag(bias, "bias")
    need_input_grad = check_flag(need_input_grad, "need_input_grad")
    padding_mode = check_padding_mode(padding_mode)
    data_format = check_data_format(data_format)
    x4, w, unbatched, geom = _prepare(x, weight, stride, padding, dilation, groups, None, data_format)
    grad_y = as_float_array(grad_output, "grad_output", x4.dtype)
    n, k, (ho, wo) = x4.shape[0], w.shape[0], geom.out_hw
    expected = (n, k, ho, wo) if data_format == "NCHW" else (n, ho, wo, k)
    got = grad_y.shape if not unbatched else (1, *grad_y.shape)
    if got != expected:
        shown = expected[1:] if unbatched else expected
        raise ValueError(f"grad_output must have the output's shape {shown}, got {grad_y.shape}")
    xk, gk = apply_padding_mode(x4, geom, padding_mode)
    grad_y4 = to_nchw(grad_y.reshape(expected), data_format)
    grads = backward_checked(grad_y4, xk, w, gk, bias, backend, need_input_grad)
    if key is not None and xk is x:  # nothing converted, as in conv2d: a repeat needs no checks
        if _runs_unchecked(x, w, gk, backend, _gradient_count(x, w, need_input_grad)):
            _call_cache.put(key, gk)
    grads = fold_padding_mode(grads, geom, padding_mode, (x4.shape[2], x4.shape[3]))
    if grads.input is None:
        return grads
    grad_x = from_nchw(grads.input, data_format)
    if unbatched:
        grad_x = grad_x[0]
    # Built anew, not by _replace: that costs a tenth of a tiny call.
    return grads if grad_x is grads.input else ConvGradients(grad_x, grads.weight, grads.bias)
