"""The NumPy reference: 2-D convolution and its gradients, written to be read.

This module is fastconv's test oracle and its ``backend="numpy"`` path. It
takes already-checked arguments (see ``fastconv.conv2d`` for the public,
validating API) with the padding given explicitly as (top, bottom, left,
right).

Notation, for one group (groups split the channels into independent
convolutions; everything below holds per group):

    x   input             (N, C, H, W)
    w   weights           (K, C, kh, kw)
    b   bias              (K,)
    y   output            (N, K, Ho, Wo)
    s   stride (sh, sw),  d  dilation (dh, dw),  xp  zero-padded x

Forward (cross-correlation, as in every deep-learning library):

    y[n, k, i, j] = b[k] + sum_{c, r, q} w[k, c, r, q] * xp[n, c, i*sh + r*dh, j*sw + q*dw]

For one kernel tap (r, q), the values xp[n, c, i*sh + r*dh, j*sw + q*dw] over
all (i, j) form a strided window of xp with the output's shape. So the whole
convolution is a sum over the kh*kw taps of a channel contraction of such
windows: no loop over pixels, only over taps.

Backward, given g = dL/dy of y's shape (the chain rule through the sum above):

    dL/db[k]             = sum_{n, i, j} g[n, k, i, j]
    dL/dw[k, c, r, q]    = sum_{n, i, j} g[n, k, i, j] * xp[n, c, i*sh + r*dh, j*sw + q*dw]
    dL/dxp[n, c, u, v]   = sum over (k, r, q, i, j) with u = i*sh + r*dh, v = j*sw + q*dw
                           of g[n, k, i, j] * w[k, c, r, q]

and dL/dx is dL/dxp with the padding cut off (padding is constant, so the
gradient flowing into it is dropped).
"""

from __future__ import annotations

import numpy as np

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]


def _windows(r: int, q: int, out_hw: Pair, stride: Pair, dilation: Pair) -> tuple[slice, slice]:
    """Slices of the padded input that tap (r, q) reads for every output pixel:
    rows r*dh, r*dh + sh, ..., (Ho - 1)*sh + r*dh (and the same for columns)."""
    top = r * dilation[0]
    left = q * dilation[1]
    rows = slice(top, top + (out_hw[0] - 1) * stride[0] + 1, stride[0])
    cols = slice(left, left + (out_hw[1] - 1) * stride[1] + 1, stride[1])
    return rows, cols


def output_size(in_hw: Pair, kernel: Pair, stride: Pair, padding: Padding4, dilation: Pair) -> Pair:
    """Ho = floor((H + top + bottom - (kh - 1)*dh - 1) / sh) + 1, and the same for Wo."""
    ho = (in_hw[0] + padding[0] + padding[1] - (kernel[0] - 1) * dilation[0] - 1) // stride[0] + 1
    wo = (in_hw[1] + padding[2] + padding[3] - (kernel[1] - 1) * dilation[1] - 1) // stride[1] + 1
    return ho, wo


def _pad(x: np.ndarray, padding: Padding4) -> np.ndarray:
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Pair = (1, 1),
    padding: Padding4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """y = conv(x, weight) + bias, shapes (N, C, H, W) -> (N, K, Ho, Wo)."""
    n, c, h, w = x.shape
    k, cg, kh, kw = weight.shape
    g = groups
    ho, wo = output_size((h, w), (kh, kw), stride, padding, dilation)
    xp = _pad(x, padding)
    # Split channels into groups: x -> (N, G, C/G, ...), w -> (G, K/G, C/G, kh, kw).
    xg = xp.reshape(n, g, cg, *xp.shape[2:])
    wg = weight.reshape(g, k // g, cg, kh, kw)
    y = np.zeros((n, g, k // g, ho, wo), dtype=x.dtype)
    for r in range(kh):
        for q in range(kw):
            rows, cols = _windows(r, q, (ho, wo), stride, dilation)
            window = xg[:, :, :, rows, cols]  # (N, G, C/G, Ho, Wo): xp[n, c, i*sh + r*dh, j*sw + q*dw]
            # y[n, k, i, j] += sum_c w[k, c, r, q] * window[n, c, i, j]
            y += np.einsum("ngchw,gkc->ngkhw", window, wg[:, :, :, r, q], optimize=True)
    y = y.reshape(n, k, ho, wo)
    if bias is not None:
        y += bias.reshape(1, k, 1, 1)  # y[n, k, i, j] += b[k]
    return y


def conv2d_grad_bias(grad_y: np.ndarray) -> np.ndarray:
    """dL/db[k] = sum_{n, i, j} g[n, k, i, j]."""
    return grad_y.sum(axis=(0, 2, 3))


def conv2d_grad_weight(
    grad_y: np.ndarray,
    x: np.ndarray,
    kernel: Pair,
    stride: Pair = (1, 1),
    padding: Padding4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """dL/dw[k, c, r, q] = sum_{n, i, j} g[n, k, i, j] * xp[n, c, i*sh + r*dh, j*sw + q*dw]."""
    n, c, _, _ = x.shape
    _, k, ho, wo = grad_y.shape
    g = groups
    cg = c // g
    xp = _pad(x, padding)
    xg = xp.reshape(n, g, cg, *xp.shape[2:])
    gg = grad_y.reshape(n, g, k // g, ho, wo)
    grad_w = np.empty((g, k // g, cg, *kernel), dtype=x.dtype)
    for r in range(kernel[0]):
        for q in range(kernel[1]):
            rows, cols = _windows(r, q, (ho, wo), stride, dilation)
            # The same window the forward pass multiplied by w[:, :, r, q],
            # now correlated with the output gradient over batch and pixels.
            grad_w[:, :, :, r, q] = np.einsum("ngkhw,ngchw->gkc", gg, xg[:, :, :, rows, cols], optimize=True)
    return grad_w.reshape(k, cg, *kernel)


def conv2d_grad_input(
    grad_y: np.ndarray,
    weight: np.ndarray,
    in_hw: Pair,
    stride: Pair = (1, 1),
    padding: Padding4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """dL/dx: each tap sends g[n, k, i, j] * w[k, c, r, q] back to the input
    pixel it read, (i*sh + r*dh, j*sw + q*dw) of the padded input."""
    n, k, ho, wo = grad_y.shape
    _, cg, kh, kw = weight.shape
    g = groups
    top, bottom, left, right = padding
    hp, wp = in_hw[0] + top + bottom, in_hw[1] + left + right
    grad_xp = np.zeros((n, g, cg, hp, wp), dtype=grad_y.dtype)
    gg = grad_y.reshape(n, g, k // g, ho, wo)
    wg = weight.reshape(g, k // g, cg, kh, kw)
    for r in range(kh):
        for q in range(kw):
            rows, cols = _windows(r, q, (ho, wo), stride, dilation)
            # dL/dxp[n, c, i*sh + r*dh, j*sw + q*dw] += sum_k g[n, k, i, j] * w[k, c, r, q]
            grad_xp[:, :, :, rows, cols] += np.einsum("ngkhw,gkc->ngchw", gg, wg[:, :, :, r, q], optimize=True)
    grad_xp = grad_xp.reshape(n, g * cg, hp, wp)
    # Cut the padding off: it is not an input, so its gradient is dropped.
    return np.ascontiguousarray(grad_xp[:, :, top : top + in_hw[0], left : left + in_hw[1]])
