"""Padding filled by reflection, replication or wrapping (PyTorch's
padding_mode), and its gradient.

The convolution itself always pads with zeros; for another mode the input is
padded here first (as PyTorch's F.pad does) and the kernel then pads nothing.
Backward folds the padded input's gradient back: each padded position passes
its gradient to the input position it copied.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import Padding4

# PyTorch's names -> NumPy's np.pad modes.
NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_fits(mode: str, padding: Padding4, height: int, width: int) -> None:
    """PyTorch's limits: reflect pads less than the size, circular at most the size."""
    for amount, size, side in zip(padding, (height, height, width, width), ("top", "bottom", "left", "right")):
        if mode == "reflect" and amount >= size:
            raise ValueError(f"reflect padding must be smaller than the input: {side} {amount} >= {size}")
        if mode == "circular" and amount > size:
            raise ValueError(f"circular padding must not exceed the input: {side} {amount} > {size}")


def pad(x: Any, padding: Padding4, mode: str, axes: tuple[int, int] = (2, 3)) -> Any:
    """x padded by (top, bottom, left, right) in `mode` along its height and
    width `axes` (those of (N, C, H, W) by default), C-contiguous. A Dask
    array is padded lazily, as np.pad dispatches to Dask's."""
    widths = [(0, 0)] * x.ndim
    widths[axes[0]], widths[axes[1]] = (padding[0], padding[1]), (padding[2], padding[3])
    return np.pad(x, widths, mode=NUMPY_MODE[mode])  # type: ignore[call-overload]


def _sources(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each padded position along an axis, the input position it copies."""
    return np.pad(np.arange(size), (before, after), mode=NUMPY_MODE[mode])  # type: ignore[call-overload]


def fold_gradient(grad_padded: np.ndarray, padding: Padding4, mode: str, height: int, width: int) -> np.ndarray:
    """dL/dx from dL/d(padded x): the sum over the padded positions copying each input position."""
    top, bottom, left, right = padding
    n, c = grad_padded.shape[:2]
    rows = np.zeros((n, c, height, grad_padded.shape[3]), dtype=grad_padded.dtype)
    along_h: Any = (slice(None), slice(None), _sources(height, top, bottom, mode))
    np.add.at(rows, along_h, grad_padded)
    out = np.zeros((n, c, height, width), dtype=grad_padded.dtype)
    along_w: Any = (slice(None), slice(None), slice(None), _sources(width, left, right, mode))
    np.add.at(out, along_w, rows)
    return out
