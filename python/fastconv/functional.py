"""Functional API: ``conv2d`` and ``conv2d_backward``, stateless and validating."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, _call_cache, _memory
from ._spec import ConvSpec, conv_spec
from ._validation import (
    as_float_array,
    as_float_input,
    check_bias,
    check_data_format,
    check_flag,
    check_padding_mode,
)


class ConvGradients(NamedTuple):
    """Gradients of the loss with respect to each argument of ``conv2d``."""

    input: np.ndarray | None  # None when not asked for (need_input_grad=False)
    weight: np.ndarray
    bias: np.ndarray | None


def _checked(
    x: Any,
    weight: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    padding_mode: str,
    data_format: str,
) -> tuple[np.ndarray, np.ndarray, ConvSpec]:
    """Input and weight converted (to float64 if either is, else float32),
    and the call's spec."""
    x_arr = as_float_input(x, "input")
    w_arr = as_float_array(weight, "weight")
    if x_arr.dtype != w_arr.dtype:
        common = np.result_type(x_arr, w_arr)
        x_arr, w_arr = x_arr.astype(common), w_arr.astype(common)
    spec = conv_spec(
        x_arr.shape,
        w_arr.shape,
        stride,
        padding,
        dilation,
        groups,
        padding_mode=padding_mode,
        data_format=data_format,
        dtype=w_arr.dtype,
    )
    return x_arr, w_arr, spec


def _runs_unchecked(nbytes: int, backend: str) -> bool:
    """Whether a call that needed no conversion may skip its checks when
    repeated (the call cache): the C++ kernels run it, and its `nbytes` of
    working memory are too few for the memory check."""
    return _backend.resolve(backend) == "cpp" and nbytes < _memory.CHECK_ABOVE


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
    spec = _call_cache.get(key)
    if spec is not None:
        return _backend.run_forward(spec, x, weight, bias)  # type: ignore[arg-type]  # a key: plain arrays
    _backend.check_backend(backend)
    padding_mode = check_padding_mode(padding_mode)
    data_format = check_data_format(data_format)
    x_arr, w, spec = _checked(x, weight, stride, padding, dilation, groups, padding_mode, data_format)
    b = None if bias is None else check_bias(bias, spec.filters, w.dtype)
    x4 = spec.to_nchw(x_arr)
    y = spec.from_nchw(_backend.forward(spec, _backend.pad_input(spec, x4), w, b, backend))
    # With a key (plain arrays of one dtype), x4 is x itself only where
    # nothing was converted: 4-D, NCHW. Without padding in the data either, a
    # repeat of such a call needs no checks.
    if key is not None and x4 is x and not spec.pads_data and _runs_unchecked(spec.forward_bytes(False), backend):
        _call_cache.put(key, spec)
    return y


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
    spec = _call_cache.get(key)
    if spec is not None:
        return ConvGradients(*_backend.run_backward(spec, grad_output, x, weight, bias, need_input_grad))  # type: ignore[arg-type]
    _backend.check_backend(backend)
    bias = check_flag(bias, "bias")
    need_input_grad = check_flag(need_input_grad, "need_input_grad")
    padding_mode = check_padding_mode(padding_mode)
    data_format = check_data_format(data_format)
    x_arr, w, spec = _checked(x, weight, stride, padding, dilation, groups, padding_mode, data_format)
    grad_y = as_float_input(grad_output, "grad_output", w.dtype)
    spec.check_grad_output(grad_y.shape)
    x4 = spec.to_nchw(x_arr)
    grad_x, grad_w, grad_b = _backend.backward(
        spec, spec.to_nchw(grad_y), _backend.pad_input(spec, x4), w, bias, need_input_grad, backend
    )
    if key is not None and x4 is x and not spec.pads_data:  # nothing converted, as in conv2d: a repeat needs no checks
        if _runs_unchecked(spec.backward_bytes(False, need_input_grad), backend):
            _call_cache.put(key, spec)
    return ConvGradients(None if grad_x is None else spec.from_nchw(grad_x), grad_w, grad_b)
