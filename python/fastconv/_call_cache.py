"""Calls already checked: a repeat of one goes straight to the kernels.

A training loop or a benchmark makes the same call over and over, and checking
its arguments costs more than the convolution of a tiny input (a few
microseconds). A call's ConvSpec is remembered once the call has passed every
check, if nothing in it needed converting. A later call with the same
signature skips the checks and runs that spec. The signature is made of:

- the arrays: exact NumPy arrays, C-contiguous, aligned and writeable (the one
  flag `carray` says all three), of one dtype; their shapes and the dtype go
  into the signature;
- the other arguments, each an int, a str, a tuple of ints or a bool flag, by
  exact type. Equal is not enough, since True == 1.0 == 1 and all three hash
  alike, but only 1 is a valid stride.

Anything else (lists, NumPy integers, strided, read-only or mixed-dtype
arrays) is checked on every call, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._spec import ConvSpec

SIZE = 256  # signatures kept; a loop uses a few, and the cache is cleared when full

_ndarray = np.ndarray
_checked: dict[tuple[Any, ...], ConvSpec] = {}


def signature(
    tag: str, arrays: tuple[Any, ...], options: tuple[Any, ...], flags: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    """The key of a call to the function named `tag`, or None if it has none
    (it is then checked every time). `options` must be ints, strs or tuples of
    ints, `flags` True or False. Written out in full: this runs on every call."""
    dtype = arrays[0].dtype if type(arrays[0]) is _ndarray else None
    for a in arrays:
        if type(a) is not _ndarray or a.dtype != dtype or not a.flags.carray:  # C-contiguous, aligned, writeable
            return None
    for value in options:
        kind = type(value)
        if kind is not int and kind is not str and not (kind is tuple and all(type(v) is int for v in value)):
            return None
    for flag in flags:
        if flag is not True and flag is not False:
            return None
    return (tag, tuple(a.shape for a in arrays), dtype, options, flags)


def get(key: tuple[Any, ...] | None) -> ConvSpec | None:
    """The spec stored for `key` when its call was checked, or None."""
    return None if key is None else _checked.get(key)


def put(key: tuple[Any, ...], spec: ConvSpec) -> None:
    """Remember the spec of a call whose checks passed."""
    if len(_checked) >= SIZE:
        _checked.clear()
    _checked[key] = spec
