"""Argument checking and padding arithmetic, done once, here, for every backend.

Every error names the argument and the numbers involved, so that a user sees
what to change without reading the source.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

PADDING_STRINGS = ("valid", "same")
# Padding may add at most this many values to one image (C x padded H x
# padded W less C x H x W), or 3x the image's own values where that is more.
# Both backends materialise padded rows (the NumPy reference the whole padded
# input, the C++ kernels windows many times larger), so padding of thousands
# of pixels around a small input, useless in itself, would take gigabytes.
MAX_PADDING_VALUES = 2**22
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
        dtype = np.dtype(np.float64) if arr.dtype.itemsize >= 8 else np.dtype(np.float32)
    out = np.asarray(arr, dtype=dtype, order="C")  # native byte order; unlike ascontiguousarray, keeps 0-d as 0-d
    # A view of a buffer at an odd offset is contiguous but unaligned, which
    # the kernels cannot read: a copy is aligned.
    return out if out.flags.aligned else out.copy()


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow/Keras "same" padding along one axis, at any stride.

    out = ceil(size / stride); the total padding makes the last window end at
    the padded edge; the odd extra row/column goes to the bottom/right.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class ConvGeometry(NamedTuple):
    """Everything a kernel needs besides the arrays: normalised and checked.
    (A named tuple: cheap to make on every call.)"""

    stride: Pair
    dilation: Pair
    padding: Padding4  # top, bottom, left, right
    groups: int
    out_hw: Pair


def _plain(value: Any) -> bool:
    """An int, a str or a tuple of ints, by exact type: arguments that can key
    the geometry cache (True == 1 and hashes alike, but must still be refused)."""
    kind = type(value)
    return kind is int or kind is str or (kind is tuple and all(type(v) is int for v in value))


_geometry_cache: dict[tuple[Any, ...], ConvGeometry] = {}
_GEOMETRY_CACHE_SIZE = 256


def plan_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
) -> ConvGeometry:
    """Check that input (N, C, H, W) and weight (K, C/groups, kh, kw) fit the
    hyper-parameters, and work out the padding and the output size.

    Geometries already checked come from a small cache: a training loop asks
    for the same one on every call, and checking costs more than the
    convolution of a tiny input."""
    plain = _plain(stride) and _plain(padding) and _plain(dilation) and _plain(groups)
    key = (x_shape, w_shape, stride, padding, dilation, groups)
    cached = _geometry_cache.get(key) if plain else None  # one lookup: safe if another thread clears it
    if cached is not None:
        return cached
    geom = _plan_geometry(x_shape, w_shape, stride, padding, dilation, groups)
    if plain:
        if len(_geometry_cache) >= _GEOMETRY_CACHE_SIZE:
            _geometry_cache.clear()
        _geometry_cache[key] = geom
    return geom


def _plan_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
) -> ConvGeometry:
    stride_hw = int_pair(stride, "stride")
    dilation_hw = int_pair(dilation, "dilation")
    groups = positive_int(groups, "groups")
    spec = check_padding(padding)

    _, c, h, w = x_shape
    k, c_per_group, kh, kw = w_shape
    if h < 1 or w < 1:
        raise ValueError(f"input height and width must be >= 1, got {h}x{w}")
    if c < 1:
        raise ValueError(f"input must have at least one channel, got {c}")
    if min(k, c_per_group, kh, kw) < 1:
        raise ValueError(f"weight shape {tuple(w_shape)} has a zero dimension")
    if c % groups or k % groups:
        raise ValueError(f"groups={groups} must divide both the input channels ({c}) and the filters ({k})")
    if c_per_group * groups != c:
        raise ValueError(
            f"input has {c} channels but the weight expects {c_per_group * groups} "
            f"(weight.shape[1]={c_per_group} x groups={groups})"
        )

    if spec == "same":
        pads_h = same_padding(h, kh, stride_hw[0], dilation_hw[0])
        pads_w = same_padding(w, kw, stride_hw[1], dilation_hw[1])
    elif isinstance(spec, tuple):
        pads_h, pads_w = (spec[0], spec[1]), (spec[2], spec[3])
    else:  # "valid"
        pads_h = pads_w = (0, 0)

    padded_h, padded_w = h + pads_h[0] + pads_h[1], w + pads_w[0] + pads_w[1]
    added = c * (padded_h * padded_w - h * w)
    if added > MAX_PADDING_VALUES and added > 3 * c * h * w:
        amounts = (pads_h[0], pads_h[1], pads_w[0], pads_w[1])
        raise ValueError(
            f"padding {amounts} (top, bottom, left, right) would add {added} values to each {c}x{h}x{w} input "
            f"(padded to {c}x{padded_h}x{padded_w}); padding may add at most 3x the input's own values "
            f"or {MAX_PADDING_VALUES} (2**22), whichever is more"
        )

    out, strides, dilations = [], [], []
    for axis, size, kernel, st, dil, pads in (
        ("height", h, kh, stride_hw[0], dilation_hw[0], pads_h),
        ("width", w, kw, stride_hw[1], dilation_hw[1], pads_w),
    ):
        span = window_span(kernel, dil)
        padded = size + pads[0] + pads[1]
        if padded < span:
            raise ValueError(
                f"kernel {axis} {kernel} (dilation {dil}, span {span}) is larger than the padded input {axis} {padded}"
            )
        out.append((padded - span) // st + 1)
        # Where it changes no result, the kernels get the smallest stride and
        # dilation, not a huge one that they would size buffers by: along an
        # axis with one output the stride multiplies nothing (any stride past
        # padded - span gives one output), nor does the dilation of a 1-wide
        # kernel.
        strides.append(st if out[-1] > 1 else min(st, padded - span + 1))
        dilations.append(dil if kernel > 1 else 1)

    return ConvGeometry(
        stride=(strides[0], strides[1]),
        dilation=(dilations[0], dilations[1]),
        padding=(pads_h[0], pads_h[1], pads_w[0], pads_w[1]),
        groups=groups,
        out_hw=(out[0], out[1]),
    )


def window_span(kernel: int, dilation: int) -> int:
    """Input rows (or columns) one window of a `kernel`-wide, dilated filter covers."""
    return (kernel - 1) * dilation + 1


def first_output_from(row: int, stride: int, pad_before: int) -> int:
    """The first output whose window starts at input row `row` or later, along
    an axis padded by `pad_before` (output o starts at o * stride - pad_before)."""
    return -(-(row + pad_before) // stride)


def output_window(
    out_start: int, out_stop: int, size: int, kernel: int, stride: int, dilation: int, pad_before: int
) -> Padding4:
    """What outputs [out_start, out_stop) along an axis of `size` (padded by
    `pad_before` in front) read: (first input row, end row, padding before,
    padding after), with the rows clipped to the input and the rest of the
    windows' reach as the padding that a call on those rows alone needs."""
    first = out_start * stride - pad_before
    end = (out_stop - 1) * stride - pad_before + window_span(kernel, dilation)
    lo, hi = min(max(first, 0), size), max(min(end, size), 0)
    return lo, max(hi, lo), lo - first, end - max(hi, lo)


def fan_in(in_channels: int, groups: int, kernel: Pair) -> int:
    """Inputs that feed one output value: the scale of PyTorch's default init."""
    return in_channels // groups * math.prod(kernel)
