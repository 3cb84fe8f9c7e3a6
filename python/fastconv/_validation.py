"""Argument checking, one argument at a time, for every API and backend (the
checks that need several arguments together, and the padding arithmetic, are
_spec's conv_spec).

Every error names the argument and the numbers involved, so that a user sees
what to change without reading the source.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

PADDING_STRINGS = ("valid", "same")
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]  # top, bottom, left, right


# The largest size, stride, dilation, padding amount or count accepted. The
# kernels index with 64-bit integers, but sizes past 2**31 (or sums of them
# past 2**63) overflow inside them; no real layer comes near this.
MAX_INT = 2**31 - 1


def shown(value: Any) -> str:
    """repr(value) for an error message: short, and safe from a repr that raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


def _int_at_least(value: Any, name: str, minimum: int, kind: str) -> int:
    """`value` as an int in [minimum, MAX_INT], or a TypeError/ValueError naming `name`."""
    if type(value) is int and minimum <= value <= MAX_INT:  # the common case, without the slow ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a {kind} integer, got {shown(value)} of type {type(value).__name__}")
    try:
        v = operator.index(value)
    except Exception as exc:  # an Integral whose __index__ fails
        raise TypeError(f"{name} must be a {kind} integer, got {shown(value)} of type {type(value).__name__}") from exc
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > MAX_INT:
        raise ValueError(f"{name} must be <= {MAX_INT} (2**31 - 1), got {v}")
    return v


def check_flag(value: Any, name: str) -> bool:
    """A yes/no argument: True or False (a NumPy bool too), nothing merely truthy,
    so that an array passed by mistake (a bias for the `bias` flag) is caught."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {shown(value)} of type {type(value).__name__}")


def positive_int(value: Any, name: str) -> int:
    """`value` as an int >= 1, or a TypeError/ValueError naming `name`."""
    return _int_at_least(value, name, 1, "positive")


def int_pair(value: Any, name: str) -> Pair:
    """An int or an (h, w) pair of ints >= 1, as a pair."""
    if type(value) is int and 1 <= value <= MAX_INT:  # the common case first: this runs on every call
        return value, value
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {len(value)} values: {shown(value)}")
        return positive_int(value[0], f"{name}[0]"), positive_int(value[1], f"{name}[1]")
    v = positive_int(value, name)
    return v, v


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DATA_FORMATS = ("NCHW", "NHWC")


def check_data_format(data_format: Any) -> str:
    """ "NCHW" (channels first, PyTorch's) or "NHWC" (channels last, Keras')."""
    if not isinstance(data_format, str) or data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {shown(data_format)}")
    return "NCHW" if data_format == "NCHW" else "NHWC"


def non_negative_int(value: Any, name: str) -> int:
    """`value` as an int in [0, MAX_INT], or a TypeError/ValueError naming `name`."""
    return _int_at_least(value, name, 0, "non-negative")


def check_padding(padding: Any) -> str | Padding4:
    """The padding: "valid" or "same" (lower-cased), or explicit amounts as
    (top, bottom, left, right) from an int (all sides), an (h, w) pair (top and
    bottom, left and right) or a 4-tuple, which PyTorch's Conv2d cannot take."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in PADDING_STRINGS:
            raise ValueError(
                f'padding must be "valid", "same", an int, (h, w) or (top, bottom, left, right), got {shown(padding)}'
            )
        return mode
    if isinstance(padding, (tuple, list)):
        names = {2: ("h", "w"), 4: ("top", "bottom", "left", "right")}.get(len(padding))
        if names is None:
            raise ValueError(
                f"padding must be an int, (h, w) or (top, bottom, left, right), got {len(padding)} values: {shown(padding)}"
            )
        amounts = tuple(non_negative_int(v, f"padding {n}") for v, n in zip(padding, names))
        return (amounts[0], amounts[0], amounts[1], amounts[1]) if len(amounts) == 2 else amounts  # type: ignore[return-value]
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = non_negative_int(padding, "padding")
        return (p, p, p, p)
    raise TypeError(
        f'padding must be "valid", "same", an int, (h, w) or (top, bottom, left, right), '
        f"got {shown(padding)} of type {type(padding).__name__}"
    )


def check_padding_mode(mode: Any) -> str:
    """How padding is filled, with PyTorch's meaning: "zeros", "reflect", "replicate" or "circular"."""
    if not isinstance(mode, str) or mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {shown(mode)}")
    return mode


def check_dtype(dtype: DTypeLike, name: str = "dtype") -> np.dtype:
    """float32 or float64, or a TypeError that says what was given. None is
    refused: NumPy reads it as float64, where a layer's default is float32."""
    if dtype is None:
        raise TypeError(f"{name} must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except Exception as exc:  # TypeError for most, anything from a hostile object
        raise TypeError(f"{name} must be float32 or float64, got {shown(dtype)}") from exc
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def as_float_array(value: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """`value` as a C-contiguous, aligned, native-byte-order float array, copied
    only when it must be.

    Only floating-point input is accepted (integers, booleans, complex numbers,
    objects and strings are refused, and so is a masked array with masked
    values, whose meaning a convolution cannot keep). With `dtype` None,
    float64 stays float64 and any other float becomes float32.
    """
    if (
        type(value) is np.ndarray
        and value.flags.c_contiguous
        and value.flags.aligned
        and (value.dtype == dtype if dtype is not None else value.dtype in SUPPORTED_DTYPES)
    ):
        return value  # the common case, checked cheaply: this runs on every call
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        raise ValueError(
            f"{name} is a masked array with {np.count_nonzero(np.ma.getmaskarray(value))} masked values: "
            "fill them first (e.g. with .filled(0))"
        )
    try:
        arr = np.asarray(value)
    except MemoryError:
        raise
    except Exception as exc:  # anything else that array conversion can raise
        raise TypeError(f"{name} could not be converted to a NumPy array: {exc}") from exc
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point numbers (float32 or float64), got dtype {arr.dtype}")
    if dtype is None:
        dtype = working_dtype(arr.dtype)
    out = np.asarray(arr, dtype=dtype, order="C")  # native byte order; unlike ascontiguousarray, keeps 0-d as 0-d
    # A view of a buffer at an odd offset is contiguous but unaligned, which
    # the kernels cannot read: a copy is aligned.
    return out if out.flags.aligned else out.copy()


def as_float_input(value: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """An input or dL/dy: as as_float_array, but a strided view already of
    the right dtype is kept as it is -- a slice, a Dask block cut from a NumPy
    array, channels-last data -- since the kernels read any layout by its
    strides, and a copy would cost a pass over memory and the memory itself.
    Views with negative strides, unaligned or byte-swapped data, and anything
    of another dtype are copied as before."""
    if (
        type(value) is np.ndarray
        and value.flags.aligned
        and (value.dtype == dtype if dtype is not None else value.dtype in SUPPORTED_DTYPES)  # native byte order
        and all(s >= 0 and s % value.itemsize == 0 for s in value.strides)
    ):
        return value
    return as_float_array(value, name, dtype)


def working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a floating-point input is computed in: float64 stays
    float64, any other float becomes float32."""
    return np.dtype(np.float64) if dtype.itemsize >= 8 else np.dtype(np.float32)


def check_bias(bias: Any, filters: int, dtype: np.dtype) -> np.ndarray:
    """The bias of a call: one value per filter, in the call's dtype."""
    b = as_float_array(bias, "bias", dtype)
    if b.shape != (filters,):
        raise ValueError(f"bias must have shape ({filters},) (one value per filter), got {b.shape}")
    return b
