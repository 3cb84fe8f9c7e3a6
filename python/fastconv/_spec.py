"""A call described once: :class:`ConvSpec`, built from the arguments by :func:`conv_spec`.

Every way in (``conv2d`` and ``conv2d_backward``, the ``Conv2D`` layer, the
call cache, ``fastconv.torch`` through the functional API, ``fastconv.dask``)
builds one ConvSpec from a call's shapes and arguments and passes it on; the
backends (``_backend``: the C++ core and the NumPy reference) only execute it.
It holds the checked geometry (shapes, stride, dilation, groups, per-side
padding, output size), what fills the padding, the data's layout, whether the
input came without a batch axis, the dtype, and gives the working memory a
pass needs.

The padding and output arithmetic lives here and nowhere else: the Dask path
cuts its blocks with the helpers at the end of this module.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _memory, _padding_modes
from ._validation import (
    Padding4,
    Pair,
    check_data_format,
    check_padding,
    check_padding_mode,
    int_pair,
    positive_int,
)

# Padding may add at most this many values to one image (C x padded H x
# padded W less C x H x W), or 3x the image's own values where that is more.
# Both backends materialise padded rows (the NumPy reference the whole padded
# input, the C++ kernels windows many times larger), so padding of thousands
# of pixels around a small input, useless in itself, would take gigabytes.
MAX_PADDING_VALUES = 2**22

NO_PADDING: Padding4 = (0, 0, 0, 0)


class ConvSpec(NamedTuple):
    """One convolution call, checked: what every API builds and every backend
    executes. (A named tuple: cheap to make, immutable, hashable.)"""

    input_shape: tuple[int, int, int, int]  # (N, C, H, W), whatever the layout; N = 1 for an unbatched input
    weight_shape: tuple[int, int, int, int]  # (K, C / groups, kh, kw)
    # Stride and dilation as the kernels take them: where one changes no
    # result, the smallest (see _build).
    stride: Pair
    dilation: Pair
    padding: Padding4  # top, bottom, left, right: the call's, whatever fills it
    groups: int
    out_hw: Pair
    padding_mode: str  # "zeros", "reflect", "replicate" or "circular"
    # What the kernels pad with zeros: `padding`, or none where another
    # padding_mode puts the padding into the data first (pads_data: see
    # _backend.pad_input).
    kernel_padding: Padding4
    pads_data: bool
    data_format: str  # "NCHW" or "NHWC": the layout of the input, the output and their gradients
    unbatched: bool  # the input had no batch axis: (C, H, W) or (H, W, C)
    dtype: np.dtype

    @property
    def filters(self) -> int:
        return self.weight_shape[0]

    @property
    def kernel_input_shape(self) -> tuple[int, int, int, int]:
        """The (N, C, H, W) the kernels read: the input, padded in padding_mode if that pads."""
        n, c, h, w = self.input_shape
        if not self.pads_data:
            return self.input_shape
        top, bottom, left, right = self.padding
        return (n, c, h + top + bottom, w + left + right)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The result's shape as returned: in data_format, without the batch axis for an unbatched input."""
        n, k, (ho, wo) = self.input_shape[0], self.weight_shape[0], self.out_hw
        out = (k, ho, wo) if self.data_format == "NCHW" else (ho, wo, k)
        return out if self.unbatched else (n, *out)

    def check_grad_output(self, shape: tuple[int, ...]) -> None:
        """ValueError unless dL/dy's `shape` is the output's."""
        if shape != self.output_shape:
            raise ValueError(f"grad_output must have the output's shape {self.output_shape}, got {shape}")

    # -- layout ------------------------------------------------------------------

    def to_nchw(self, a: np.ndarray) -> np.ndarray:
        """The input, or dL/dy, as the caller gave it (data_format, batch axis
        or none) as the (N, C, H, W) view the backends take: never a copy (the
        kernels read channels-last data in place, by its strides)."""
        if self.unbatched:
            a = a[np.newaxis]
        return a if self.data_format == "NCHW" else a.transpose(0, 3, 1, 2)

    def from_nchw(self, a: np.ndarray) -> np.ndarray:
        """An (N, C, H, W) result as the caller gets it: in data_format,
        C-contiguous (a view where the storage already has that layout, as the
        C++ path writes it, else a copy), without the batch axis for an
        unbatched input."""
        out = a if self.data_format == "NCHW" else a.transpose(0, 2, 3, 1)
        if not out.flags.c_contiguous:
            out = np.ascontiguousarray(out)
        return out[0] if self.unbatched else out

    # -- working memory ----------------------------------------------------------

    def forward_bytes(self, numpy_backend: bool) -> int:
        """Working memory of the forward pass (see _working_bytes)."""
        ho, wo = self.out_hw
        return self._working_bytes(numpy_backend, self.input_shape[0] * self.weight_shape[0] * ho * wo)

    def backward_bytes(self, numpy_backend: bool, need_input_grad: bool) -> int:
        """Working memory of the backward pass, dL/db's counted always (see _working_bytes)."""
        k, c_per_group, kh, kw = self.weight_shape
        grad_input = math.prod(self.kernel_input_shape) if need_input_grad else 0
        return self._working_bytes(numpy_backend, grad_input + k * c_per_group * kh * kw + k)

    def _working_bytes(self, numpy_backend: bool, results: int) -> int:
        """Bytes a pass needs besides its inputs that grow with it: its
        `results` elements, and the NumPy reference's padded input and
        result-sized temporaries, or the C++ kernels' packed weights (their
        per-thread buffers come on top: _memory.check_fits)."""
        itemsize = self.dtype.itemsize
        if numpy_backend:
            n, c, h, w = self.input_shape
            top, bottom, left, right = self.padding
            padded = n * c * (h + top + bottom) * (w + left + right)
            return (3 * results + 2 * padded) * itemsize
        k, c_per_group, kh, kw = self.weight_shape
        return results * itemsize + _memory.packed_weights_bytes(itemsize, k * c_per_group * kh * kw)


def input_nchw(x_shape: tuple[int, ...], data_format: str) -> tuple[tuple[int, int, int, int], bool]:
    """An input's shape in `data_format`, with a batch axis or without, as
    (N, C, H, W) (N = 1 without), and whether it had none."""
    if len(x_shape) == 4:
        shape, unbatched = x_shape, False
    elif len(x_shape) == 3:
        shape, unbatched = (1, *x_shape), True
    else:
        forms = "(N, C, H, W) or (C, H, W)" if data_format == "NCHW" else "(N, H, W, C) or (H, W, C)"
        raise ValueError(f"input must have shape {forms}, got {len(x_shape)} dimensions: {x_shape}")
    n, a, b, c = shape
    return ((n, a, b, c) if data_format == "NCHW" else (n, c, a, b)), unbatched


def _plain(value: Any) -> bool:
    """An int, a str or a tuple of ints, by exact type: arguments that can key
    the cache (True == 1 and hashes alike, but must still be refused)."""
    kind = type(value)
    return kind is int or kind is str or (kind is tuple and all(type(v) is int for v in value))


_SIMPLE = (int, str)

_cache: dict[tuple[Any, ...], ConvSpec] = {}
CACHE_SIZE = 256


def conv_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any = 1,
    padding: Any = "valid",
    dilation: Any = 1,
    groups: Any = 1,
    *,
    padding_mode: Any = "zeros",
    data_format: Any = "NCHW",
    dtype: np.dtype,
) -> ConvSpec:
    """The ConvSpec of a call on an input of `x_shape` (in `data_format`,
    (C, H, W)-like without a batch axis) with a weight of `w_shape` (K, C /
    groups, kh, kw), in `dtype`: every argument checked, and the padding and
    output size worked out. Raises the TypeError or ValueError that names what
    to change.

    Specs already built come from a small cache: a training loop asks for the
    same one on every call, and checking costs more than the convolution of a
    tiny input."""
    plain = (  # an int or a str tested first, inline: this runs on every call the call cache does not serve
        (type(stride) in _SIMPLE or _plain(stride))
        and (type(padding) in _SIMPLE or _plain(padding))
        and (type(dilation) in _SIMPLE or _plain(dilation))
        and (type(groups) in _SIMPLE or _plain(groups))
        and type(padding_mode) is str
        and type(data_format) is str
    )
    key = (x_shape, w_shape, stride, padding, dilation, groups, padding_mode, data_format, dtype)
    cached = _cache.get(key) if plain else None  # one lookup: safe if another thread clears it
    if cached is not None:
        return cached
    spec = _build(x_shape, w_shape, stride, padding, dilation, groups, padding_mode, data_format, dtype)
    if plain:
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[key] = spec
    return spec


def _build(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    padding_mode: Any,
    data_format: Any,
    dtype: np.dtype,
) -> ConvSpec:
    data_format = check_data_format(data_format)
    padding_mode = check_padding_mode(padding_mode)
    if len(w_shape) != 4:
        raise ValueError(
            f"weight must have shape (filters, in_channels/groups, kh, kw), got {len(w_shape)} dimensions: {w_shape}"
        )
    (n, c, h, w), unbatched = input_nchw(x_shape, data_format)
    stride_hw = int_pair(stride, "stride")
    dilation_hw = int_pair(dilation, "dilation")
    groups = positive_int(groups, "groups")
    asked = check_padding(padding)

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

    if asked == "same":
        pads_h = same_padding(h, kh, stride_hw[0], dilation_hw[0])
        pads_w = same_padding(w, kw, stride_hw[1], dilation_hw[1])
    elif isinstance(asked, tuple):
        pads_h, pads_w = (asked[0], asked[1]), (asked[2], asked[3])
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

    padding4 = (pads_h[0], pads_h[1], pads_w[0], pads_w[1])
    pads_data = padding_mode != "zeros" and any(padding4)
    if pads_data:
        _padding_modes.check_fits(padding_mode, padding4, h, w)
    return ConvSpec(
        input_shape=(n, c, h, w),
        weight_shape=(k, c_per_group, kh, kw),
        stride=(strides[0], strides[1]),
        dilation=(dilations[0], dilations[1]),
        padding=padding4,
        groups=groups,
        out_hw=(out[0], out[1]),
        padding_mode=padding_mode,
        kernel_padding=NO_PADDING if pads_data else padding4,
        pads_data=pads_data,
        data_format=data_format,
        unbatched=unbatched,
        dtype=dtype,
    )


# -- the arithmetic of windows, along one axis -------------------------------------


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow/Keras "same" padding along one axis, at any stride.

    out = ceil(size / stride); the total padding makes the last window end at
    the padded edge; the odd extra row/column goes to the bottom/right.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


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
