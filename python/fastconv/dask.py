"""``fastconv.dask``: the convolution, forward and backward, on Dask arrays.

The input is cut into blocks along the batch, height and width axes (the
channel axis, which the convolution sums over, is one chunk). Each block runs
the in-memory :func:`fastconv.conv2d` (or :func:`fastconv.conv2d_backward`)
on its own rows and columns plus the halo its last windows read from the
blocks below and to the right, with the padding of the whole array on the
sides that are the array's edges: backward once, on a copy of the block with
its halo; forward once on the block in place, with zeros for the halo, and
once on each strip of its last rows or columns with the halo, whose outputs
replace those the zeros gave. Nothing here schedules anything: the graph
is a Dask array's, computed by whatever scheduler is in use (threads, a single
thread, or a ``dask.distributed`` cluster).

How the blocks are cut, along height and along width alike:

* An output belongs to the block whose rows hold the start of its window, so
  each block's outputs are a whole number of output positions. With
  stride > 1 a chunk boundary must fall on a window start; one that does not
  is moved to the nearest that does (a minimal rechunk, of the rows between).
* A block reads ``halo = (kernel - 1) * dilation + 1 - stride`` rows past its
  own from the next block, which must hold them: a halo wider than the next
  chunk (unless that is the array's last) is a ``ValueError``.
* Rows where no window starts past the last output's are given to the block
  before: no block, and no output chunk, of zero rows is created.

The backward pass runs the same blocks: each block's dL/dX of its halo rows
is added to the block below (and right, and below-right) where they belong,
and the per-block dL/dW and dL/db are summed by a tree of tasks, eight parts
at a time in the blocks' order: the same bits on every run, whichever worker
computes what.

``import fastconv`` never imports Dask; ``import fastconv.dask`` does.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
from dask.array.core import PerformanceWarning
from dask.delayed import delayed
from dask.highlevelgraph import HighLevelGraph
from dask.utils import parse_bytes
from numpy.typing import DTypeLike

from . import _padding_modes
from ._spec import ConvSpec, conv_spec, first_output_from, output_window
from ._validation import (
    as_float_array,
    check_bias,
    check_data_format,
    check_dtype,
    check_flag,
    check_padding_mode,
    working_dtype,
)
from .functional import ConvGradients
from .functional import conv2d as _conv2d_in_memory
from .functional import conv2d_backward as _conv2d_backward_in_memory

__all__ = ["conv2d", "conv2d_backward", "plan"]

Window = tuple[int, int, int, int]  # first row, end row, padding before, padding after


class AxisPlan(NamedTuple):
    """How one spatial axis (height or width) is cut into blocks."""

    chunks: tuple[int, ...]  # the input's chunks along the axis (padded in padding_mode if not zeros)
    out_chunks: tuple[int, ...]  # the output's chunks: one per input chunk, none empty
    windows: tuple[Window, ...]  # per block: the rows it reads and its padding before and after
    halo: tuple[int, ...]  # per block: rows it reads from the next block (0 for the last)


class Plan(NamedTuple):
    """The blocks a call on a Dask array runs: see :func:`plan`."""

    spec: ConvSpec  # the convolution's, for the whole array as given (its kernel_padding: what the blocks' edges pad)
    height: AxisPlan
    width: AxisPlan
    batch_chunks: tuple[int, ...]

    @property
    def data_format(self) -> str:
        return self.spec.data_format


def _axes(data_format: str) -> tuple[int, int, int]:
    """(channel, height, width) axes of a 4-D array in `data_format`."""
    return (1, 2, 3) if data_format == "NCHW" else (3, 1, 2)


def _plan_axis(
    name: str,
    chunks: tuple[int, ...],
    size: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_before: int,
    out_size: int,
) -> AxisPlan:
    """Cut an axis of `size` rows in `chunks` into blocks whose edges fall on window starts."""
    # Interior chunk boundaries, each moved to the nearest window start (the
    # earlier of two equally near), kept only while rows and outputs both lie
    # on each side of it.
    starts, outs = [0], [0]
    edge = 0
    for c in chunks[:-1]:
        edge += c
        after = first_output_from(edge, stride, pad_before)  # the first window starting at edge or later
        before = after if after * stride - pad_before == edge else after - 1
        o = before if edge - (before * stride - pad_before) <= (after * stride - pad_before) - edge else after
        row = o * stride - pad_before
        if 0 < o < out_size and starts[-1] < row < size and o > outs[-1]:
            starts.append(row)
            outs.append(o)
    outs.append(out_size)
    # A block whose windows read only padding (padding wider than a stride,
    # far larger than the kernel) joins its neighbour.
    while True:
        windows = [
            output_window(outs[b], outs[b + 1], size, kernel, stride, dilation, pad_before) for b in range(len(starts))
        ]
        empty = [b for b, (lo, hi, _, _) in enumerate(windows) if hi <= lo]
        if not empty or len(starts) == 1:
            break
        drop = empty[0] if empty[0] > 0 else 1  # the first block keeps its start: merge the next one into it
        del starts[drop], outs[drop]
    bounds = [*starts, size]
    new_chunks = tuple(bounds[b + 1] - bounds[b] for b in range(len(starts)))
    halos = []
    for b, (lo, hi, _, _) in enumerate(windows):
        assert lo == starts[b] or b == 0, (lo, starts[b])
        need = max(hi - bounds[b + 1], 0)
        if need and need > new_chunks[b + 1]:  # (need is 0 for the last block: nothing lies past it)
            moved = (
                ""
                if new_chunks == tuple(chunks)
                else f" (moved from {tuple(chunks)} so that blocks start on the stride's window starts)"
            )
            raise ValueError(
                f"the kernel's halo along {name} is wider than a chunk: block {b} ({name} rows {bounds[b]}-{bounds[b + 1] - 1}) "
                f"reads {need} rows past its own, but the next chunk has {new_chunks[b + 1]} rows; {name} chunks "
                f"{new_chunks}{moved}. Rechunk the {name} axis to chunks of at least {need} rows"
                + (f" (multiples of the stride {stride})" if stride > 1 else "")
            )
        halos.append(need)
    out_chunks = tuple(outs[b + 1] - outs[b] for b in range(len(starts)))
    return AxisPlan(new_chunks, out_chunks, tuple(windows), tuple(halos))


def _as_dask_input(x: Any, name: str, dtype: np.dtype | None = None) -> da.Array:
    """`x` as a Dask array of float32 or float64 (float64 kept, other floats
    float32, as the in-memory API), with known chunk sizes."""
    arr = x if isinstance(x, da.Array) else da.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point numbers (float32 or float64), got dtype {arr.dtype}")
    if any(math.isnan(c) for axis in arr.chunks for c in axis):
        raise ValueError(f"{name} has unknown chunk sizes {arr.chunks}: call .compute_chunk_sizes() on it first")
    if dtype is None:
        dtype = working_dtype(arr.dtype)
    return arr if arr.dtype == dtype else arr.astype(dtype)


def plan(
    x_shape: tuple[int, ...],
    x_chunks: tuple[tuple[int, ...], ...],
    weight_shape: tuple[int, ...],
    stride: Any = 1,
    padding: Any = "valid",
    dilation: Any = 1,
    groups: Any = 1,
    *,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    dtype: DTypeLike = "float64",
) -> Plan:
    """The blocks a call on an input of `x_shape` in `x_chunks` runs (4-D, in
    `data_format`): their chunks, the output's, each block's window and halo,
    and the call's spec (`dtype` is the data's: it sizes only the spec's
    working memory). Raises the ValueError the call would for a plan that
    cannot work."""
    if len(x_shape) != 4:
        raise ValueError(f"x_shape must be 4-D, in data_format, got {tuple(x_shape)}")
    spec = conv_spec(
        tuple(x_shape),
        tuple(weight_shape),
        stride,
        padding,
        dilation,
        groups,
        padding_mode=padding_mode,
        data_format=data_format,
        dtype=check_dtype(dtype),
    )
    return _plan(spec, x_chunks)


def _plan(spec: ConvSpec, x_chunks: tuple[tuple[int, ...], ...]) -> Plan:
    """The blocks of `spec`'s call on a 4-D input in `x_chunks`."""
    _, h_ax, w_ax = _axes(spec.data_format)
    _, _, h, w = spec.input_shape
    kh, kw = spec.weight_shape[2:]
    # A padding mode's padding is part of the data: the first and last chunks
    # grow by it, and the blocks' edges pad only what the kernels pad.
    top, bottom, left, right = spec.padding if spec.pads_data else (0, 0, 0, 0)
    axes = []
    for name, ax, size, kernel, before, after, i in (
        ("height", h_ax, h, kh, top, bottom, 0),
        ("width", w_ax, w, kw, left, right, 1),
    ):
        chunks = list(x_chunks[ax])
        chunks[0] += before
        chunks[-1] += after
        pad_before = spec.kernel_padding[2 * i]
        axes.append(
            _plan_axis(
                name,
                tuple(chunks),
                size + before + after,
                kernel,
                spec.stride[i],
                spec.dilation[i],
                pad_before,
                spec.out_hw[i],
            )
        )
    return Plan(spec, axes[0], axes[1], tuple(x_chunks[0]))


# -- the graph: one task per block and stage -------------------------------------
#
# Each block's halo comes from its neighbours below, right and below-right. A
# task per block cuts the pieces of it that its neighbours above and left
# read (a few rows and columns: only these travel between workers, not whole
# chunks), and each block's task names its own chunk and its neighbours'
# pieces. The backward pass sends the gradient of those pieces back the same
# way. Task counts grow as the blocks do: a few per block, whatever the sizes.


def _index(block: tuple[int, ...], axis: int, step: int) -> tuple[int, ...]:
    return (*block[:axis], block[axis] + step, *block[axis + 1 :])


def _cut(a: np.ndarray, h_ax: int, w_ax: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    index: list[slice] = [slice(None)] * a.ndim
    index[h_ax], index[w_ax] = slice(*rows), slice(*cols)
    return a[tuple(index)]


def _pieces(block: np.ndarray, rows: int, cols: int, h_ax: int, w_ax: int) -> tuple[Any, Any, Any]:
    """What the blocks above, left and above-left read of `block`: its first
    `rows` rows, its first `cols` columns and their corner (None if none)."""
    n_rows, n_cols = block.shape[h_ax], block.shape[w_ax]
    top = _cut(block, h_ax, w_ax, (0, rows), (0, n_cols)) if rows else None
    left = _cut(block, h_ax, w_ax, (0, n_rows), (0, cols)) if cols else None
    corner = _cut(block, h_ax, w_ax, (0, rows), (0, cols)) if rows and cols else None
    return top, left, corner


def _assemble(
    own: np.ndarray,
    below: Any,
    right: Any,
    corner: Any,
    h_ax: int,
    w_ax: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> np.ndarray:
    """Rows [rows) and columns [cols) (block coordinates) of the block with
    the pieces of its neighbours below, right and below-right (each the
    (top, left, corner) of _pieces): one copy, or none when the block alone
    is what is read."""
    (r0, r1), (c0, c1) = rows, cols
    n_rows, n_cols = own.shape[h_ax], own.shape[w_ax]
    if r1 <= n_rows and c1 <= n_cols:
        return _cut(own, h_ax, w_ax, (r0, r1), (c0, c1))
    top = _cut(own, h_ax, w_ax, (r0, min(r1, n_rows)), (c0, min(c1, n_cols)))
    if c1 > n_cols:
        top = np.concatenate([top, _cut(right[1], h_ax, w_ax, (r0, min(r1, n_rows)), (0, c1 - n_cols))], axis=w_ax)
    if r1 <= n_rows:
        return top
    bottom = _cut(below[0], h_ax, w_ax, (0, r1 - n_rows), (c0, min(c1, n_cols)))
    if c1 > n_cols:
        bottom = np.concatenate([bottom, _cut(corner[2], h_ax, w_ax, (0, r1 - n_rows), (0, c1 - n_cols))], axis=w_ax)
    return np.concatenate([top, bottom], axis=h_ax)


def _block_window(
    p: Plan, block_id: tuple[int, ...]
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """The rows and columns (block coordinates) a block reads, and its padding."""
    _, h_ax, w_ax = _axes(p.data_format)
    i, j = block_id[h_ax], block_id[w_ax]
    (rlo, rhi, top, bottom), (clo, chi, left, right) = p.height.windows[i], p.width.windows[j]
    r0, c0 = sum(p.height.chunks[:i]), sum(p.width.chunks[:j])
    return (rlo - r0, rhi - r0), (clo - c0, chi - c0), (top, bottom, left, right)


def _halo_layer(x: da.Array, p: Plan, name: str) -> tuple[dict[Any, Any], dict[tuple[int, ...], Any]]:
    """Tasks cutting each block's pieces for its neighbours above and left,
    and for each block, the keys of its neighbours' pieces (below, right,
    below-right; None where it reads none) and of its own pieces (None if it
    has none).

    A block's task takes its own pieces too, unused, so that they are cut
    before it starts: a worker runs its ready tasks in dask.order's order,
    which can put a whole block that needs no halo (the last one, say) before
    cutting the pieces that the neighbours, on other workers, wait for. (On
    two workers that made the 2 x 2 blocks of benchmarks/dask_scaling.py's
    image take 1.5-2x as long. A layer's priority annotation would say this
    more plainly, but the array optimiser's low-level fusion drops it.)"""
    _, h_ax, w_ax = _axes(p.data_format)
    graph: dict[Any, Any] = {}
    for block in np.ndindex(*x.numblocks):
        i, j = block[h_ax], block[w_ax]
        rows = p.height.halo[i - 1] if i > 0 else 0
        cols = p.width.halo[j - 1] if j > 0 else 0
        if rows or cols:
            graph[(name, *block)] = (partial(_pieces, rows=rows, cols=cols, h_ax=h_ax, w_ax=w_ax), (x.name, *block))
    neighbours: dict[tuple[int, ...], Any] = {}
    for block in np.ndindex(*x.numblocks):
        keys = []
        for step in ((1, 0), (0, 1), (1, 1)):
            other = _index(_index(block, h_ax, step[0]), w_ax, step[1])
            keys.append((name, *other) if (name, *other) in graph else None)
        keys.append((name, *block) if (name, *block) in graph else None)
        neighbours[block] = keys
    return graph, neighbours


def _array(graph: dict[Any, Any], name: str, dependencies: list[Any], chunks: Any, dtype: np.dtype) -> da.Array:
    hlg = HighLevelGraph.from_collections(name, graph, dependencies=dependencies)
    return da.Array(hlg, name, chunks, meta=np.empty((0,) * len(chunks), dtype))


def _forward_block(
    own: np.ndarray,
    below: Any,
    right: Any,
    corner: Any,
    _own_pieces: Any,
    weight: np.ndarray,
    bias: np.ndarray | None,
    *,
    plan: Plan,
    block_id: tuple[int, ...],
    backend: str,
) -> np.ndarray:
    """The block's outputs. Without a halo, one call on the block. With one,
    the block is not copied with its halo (a copy of the whole chunk): the
    call runs on the block alone with zeros for the halo, and the outputs
    whose windows reach the halo, a few rows and columns, are computed again
    from a strip of the block's last rows (columns) and the halo, and written
    over. Each output is still one call's sum over every value it reads."""
    _, h_ax, w_ax = _axes(plan.data_format)
    (r0, r1), (c0, c1), (top, bottom, left, right_pad) = _block_window(plan, block_id)
    n_rows, n_cols = own.shape[h_ax], own.shape[w_ax]
    kg = plan.spec
    kh, kw = kg.weight_shape[2:]
    (sh, sw), (dh, dw) = kg.stride, kg.dilation

    def run(tile: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
        return _conv2d_in_memory(
            tile, weight, bias, kg.stride, pads, kg.dilation, kg.groups, data_format=plan.data_format, backend=backend
        )

    halo_rows, halo_cols = max(r1 - n_rows, 0), max(c1 - n_cols, 0)
    if not (halo_rows or halo_cols):
        return run(_cut(own, h_ax, w_ax, (r0, r1), (c0, c1)), (top, bottom, left, right_pad))
    own_rows, own_cols = (r0, r1 - halo_rows), (c0, c1 - halo_cols)
    out = run(
        _cut(own, h_ax, w_ax, own_rows, own_cols),
        (top, bottom + halo_rows, left, right_pad + halo_cols),
    )
    if halo_cols:  # the last columns' outputs, from the block's rows (zeros for the halo rows, as above)
        # the first output whose window reaches the halo: it starts (kw - 1) * dw before it or later
        o = max(first_output_from(own_cols[1] - c0 - (kw - 1) * dw, sw, left), 0)
        start = o * sw - left  # tile column of the first window's start (< 0: inside the padding)
        strip = _assemble(own, below, right, corner, h_ax, w_ax, own_rows, (c0 + max(start, 0), c1))
        fix = run(strip, (top, bottom + halo_rows, max(-start, 0), right_pad))
        _cut(out, h_ax, w_ax, (0, out.shape[h_ax]), (o, out.shape[w_ax]))[...] = fix
    if halo_rows:  # the last rows' outputs, from the block's last rows and the halo, corner included
        o = max(first_output_from(own_rows[1] - r0 - (kh - 1) * dh, sh, top), 0)
        start = o * sh - top
        strip = _assemble(own, below, right, corner, h_ax, w_ax, (r0 + max(start, 0), r1), (c0, c1))
        fix = run(strip, (max(-start, 0), bottom, left, right_pad))
        _cut(out, h_ax, w_ax, (o, out.shape[h_ax]), (0, out.shape[w_ax]))[...] = fix
    return out


def _backward_block(
    own: np.ndarray,
    below: Any,
    right: Any,
    corner: Any,
    _own_pieces: Any,
    grad: np.ndarray,
    weight: np.ndarray,
    *,
    plan: Plan,
    block_id: tuple[int, ...],
    bias: bool,
    need_input_grad: bool,
    backend: str,
) -> tuple[Any, np.ndarray, Any]:
    """The block's (dL/dX over its own rows and columns and the halo past
    them, zeros where no window reads; dL/dW; dL/db)."""
    _, h_ax, w_ax = _axes(plan.data_format)
    rows, cols, pads = _block_window(plan, block_id)
    tile = _assemble(own, below, right, corner, h_ax, w_ax, rows, cols)
    kg = plan.spec
    g = _conv2d_backward_in_memory(
        grad,
        tile,
        weight,
        kg.stride,
        pads,
        kg.dilation,
        kg.groups,
        bias,
        need_input_grad=need_input_grad,
        data_format=plan.data_format,
        backend=backend,
    )
    grad_x = g.input
    if grad_x is not None:
        i, j = block_id[h_ax], block_id[w_ax]
        want = list(grad_x.shape)
        want[h_ax] = plan.height.chunks[i] + plan.height.halo[i]
        want[w_ax] = plan.width.chunks[j] + plan.width.halo[j]
        if tuple(want) != grad_x.shape or rows[0] or cols[0]:
            # Rows or columns past the last window (a stride wider than the
            # kernel) get no gradient: zeros.
            full = np.zeros(want, grad_x.dtype)
            _cut(full, h_ax, w_ax, rows, cols)[...] = grad_x
            grad_x = full
    return grad_x, g.weight, g.bias


def _grad_pieces(part: tuple[Any, ...], rows: int, cols: int, h_ax: int, w_ax: int) -> tuple[Any, Any, Any]:
    """A block's dL/dX of the rows below it, the columns right of it and their
    corner: what it adds to its neighbours below, right and below-right."""
    grad_x = part[0]
    n_rows, n_cols = grad_x.shape[h_ax] - rows, grad_x.shape[w_ax] - cols
    bottom = _cut(grad_x, h_ax, w_ax, (n_rows, n_rows + rows), (0, n_cols)) if rows else None
    right = _cut(grad_x, h_ax, w_ax, (0, n_rows), (n_cols, n_cols + cols)) if cols else None
    corner = _cut(grad_x, h_ax, w_ax, (n_rows, n_rows + rows), (n_cols, n_cols + cols)) if rows and cols else None
    return bottom, right, corner


def _gather_grad(
    part: tuple[Any, ...], above: Any, left: Any, diag: Any, *, rows: int, cols: int, h_ax: int, w_ax: int
) -> np.ndarray:
    """A block's dL/dX: its own rows and columns of its gradient plus what its
    neighbours above, left and above-left read of it."""
    grad_x = part[0]
    own = _cut(grad_x, h_ax, w_ax, (0, grad_x.shape[h_ax] - rows), (0, grad_x.shape[w_ax] - cols))
    added = [piece for piece in (above and above[0], left and left[1], diag and diag[2]) if piece is not None]
    if not added:
        return own if own.flags.c_contiguous else np.ascontiguousarray(own)
    out = np.array(own, order="C")
    for piece in added:
        _cut(out, h_ax, w_ax, (0, piece.shape[h_ax]), (0, piece.shape[w_ax]))[...] += piece
    return out


def _weight_part(part: tuple[Any, ...]) -> tuple[Any, ...]:
    """A block's (None, dL/dW, dL/db), without its dL/dX."""
    return None, part[1], part[2]


def _sum_parts(parts: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """(None, dL/dW, dL/db) summed over `parts` (each such a triple), in their
    order: the fixed order of a tree reduction."""
    weight = np.array(parts[0][1], copy=True)
    bias = None if parts[0][2] is None else np.array(parts[0][2], copy=True)
    for part in parts[1:]:
        weight += part[1]
        if bias is not None:
            bias += part[2]
    return None, weight, bias


SPLIT_EVERY = 8  # parts summed by one task of the weight gradient's tree


# -- preparing the arrays ------------------------------------------------------


class _Prepared(NamedTuple):
    x: da.Array  # 4-D, padded in padding_mode, cut as the plan says
    weight: np.ndarray
    plan: Plan
    unbatched: bool
    x_chunks: tuple[tuple[int, ...], ...]  # the 4-D input's chunks as given


def _prepare(
    x: Any, weight: Any, stride: Any, padding: Any, dilation: Any, groups: Any, padding_mode: str, data_format: str
) -> _Prepared:
    data_format = check_data_format(data_format)
    padding_mode = check_padding_mode(padding_mode)
    w = as_float_array(weight, "weight")
    xd = _as_dask_input(x, "input")
    if xd.dtype != w.dtype:
        common = np.result_type(xd.dtype, w.dtype)
        xd, w = xd.astype(common), w.astype(common)
    spec = conv_spec(
        xd.shape,
        w.shape,
        stride,
        padding,
        dilation,
        groups,
        padding_mode=padding_mode,
        data_format=data_format,
        dtype=w.dtype,
    )
    x4 = xd[None] if spec.unbatched else xd
    c_ax, h_ax, w_ax = _axes(spec.data_format)
    given_chunks = x4.chunks
    if x4.numblocks[c_ax] > 1:
        block = x4.dtype.itemsize * x4.shape[c_ax] * max(x4.chunks[0]) * max(x4.chunks[h_ax]) * max(x4.chunks[w_ax])
        limit = parse_bytes(dask.config.get("array.chunk-size"))
        if block > limit:
            warnings.warn(
                f"fastconv.dask: the channel axis ({x4.shape[c_ax]} channels in {x4.numblocks[c_ax]} chunks) is summed "
                f"over, so it is rechunked to one chunk, making blocks of up to {block / 2**20:.0f} MiB "
                f"(more than array.chunk-size, {limit / 2**20:.0f} MiB): chunk the batch or spatial axes smaller",
                PerformanceWarning,
                stacklevel=3,
            )
        x4 = x4.rechunk({c_ax: -1})
    p = _plan(spec, x4.chunks)
    if spec.pads_data:
        # The padding mode's padding, added as the in-memory call adds it (np.pad, which Dask implements).
        x4 = _padding_modes.pad(x4, spec.padding, spec.padding_mode, (h_ax, w_ax))
    target = list(x4.chunks)
    target[h_ax], target[w_ax] = p.height.chunks, p.width.chunks
    if tuple(target) != x4.chunks:
        x4 = x4.rechunk(tuple(target))
    return _Prepared(x4, w, p, spec.unbatched, given_chunks)


def _out_chunks(p: Plan, filters: int) -> tuple[tuple[int, ...], ...]:
    if p.data_format == "NCHW":
        return (p.batch_chunks, (filters,), p.height.out_chunks, p.width.out_chunks)
    return (p.batch_chunks, p.height.out_chunks, p.width.out_chunks, (filters,))


# A weight or bias whose copies in every block's task come to at most this
# many bytes goes into the tasks themselves; a larger one is one graph key,
# sent to each worker once. A key is a task of its own, and a transfer to every
# other worker, before the first block can start: 5-10 ms on a LocalCluster,
# more than the copies cost.
EMBED_BYTES = 1 << 20


def _operand(a: np.ndarray | None, tasks: int) -> tuple[Any, list[Any]]:
    """(what the tasks take for `a`, the graph dependencies that adds)."""
    if a is None:
        return None, []
    if a.nbytes * tasks <= EMBED_BYTES:
        return a, []
    key = delayed(a, pure=True)
    return key.key, [key]


# -- the passes ------------------------------------------------------------------


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: str | int | tuple[int, ...] = "valid",
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    data_format: str = "NCHW",
    backend: str = "auto",
) -> da.Array:
    """:func:`fastconv.conv2d` on a Dask array: a lazy Dask array of the result.

    ``x`` is a ``dask.array.Array`` (or anything ``dask.array.asarray``
    takes) of shape (N, C, H, W) or (C, H, W) ((N, H, W, C) or (H, W, C) in
    NHWC), chunked along any of the batch, height and width axes; the channel
    axis is rechunked to one chunk. ``weight`` and ``bias`` are NumPy arrays:
    inside each block's task when small (up to ``EMBED_BYTES`` over all the
    tasks), else one copy each in the graph, however many blocks read it.
    Every other argument means what it does in :func:`fastconv.conv2d`.

    The result's batch chunks are the input's; its height and width chunks
    are one per input chunk (after any move of a boundary onto a window start
    at stride > 1), its channel axis one chunk.
    """
    prep = _prepare(x, weight, stride, padding, dilation, groups, padding_mode, data_format)
    p, w, xp = prep.plan, prep.weight, prep.x
    b = None if bias is None else check_bias(bias, p.spec.filters, w.dtype)
    token = dask.base.tokenize(xp.name, w, b, p, backend)
    weight_arg, weight_deps = _operand(w, xp.npartitions)
    bias_arg, bias_deps = _operand(b, xp.npartitions)
    halo_name, name = f"fastconv-halo-{token}", f"fastconv-conv2d-{token}"
    graph, neighbours = _halo_layer(xp, p, halo_name)
    for block in np.ndindex(*xp.numblocks):
        task = partial(_forward_block, plan=p, block_id=block, backend=backend)
        graph[(name, *block)] = (
            task,
            (xp.name, *block),
            *neighbours[block],
            weight_arg,
            bias_arg,
        )
    deps = [xp, *weight_deps, *bias_deps]
    y = _array(graph, name, deps, _out_chunks(p, w.shape[0]), w.dtype)
    return y[0] if prep.unbatched else y


def conv2d_backward(
    grad_output: Any,
    x: Any,
    weight: Any,
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
    """:func:`fastconv.conv2d_backward` on Dask arrays: lazy gradients.

    Returns ``ConvGradients(input, weight, bias)``: ``input`` a Dask array
    chunked like ``x`` (None with ``need_input_grad=False``), ``weight`` and
    ``bias`` (None with ``bias=False``) Dask arrays of one chunk, each the sum
    of every block's gradient by a tree reduction in a fixed order (the
    blocks' order, eight at a time): the same bits on every run.

    Each block runs the in-memory backward once for all three gradients:
    compute them together (``dask.compute(*grads)``, or ``persist``), else
    each ``compute`` runs the blocks again.
    """
    bias = check_flag(bias, "bias")
    need_input_grad = check_flag(need_input_grad, "need_input_grad")
    prep = _prepare(x, weight, stride, padding, dilation, groups, padding_mode, data_format)
    p, w, xp = prep.plan, prep.weight, prep.x
    c_ax, h_ax, w_ax = _axes(p.data_format)
    k = w.shape[0]
    gy = _as_dask_input(grad_output, "grad_output", w.dtype)
    p.spec.check_grad_output(gy.shape)
    if prep.unbatched:
        gy = gy[None]
    gy = gy.rechunk(_out_chunks(p, k))

    token = dask.base.tokenize(xp.name, gy.name, w, p, bias, need_input_grad, backend)
    blocks = list(np.ndindex(*xp.numblocks))
    weight_arg, weight_deps = _operand(w, len(blocks))
    halo_name, parts_name = f"fastconv-halo-{token}", f"fastconv-backward-{token}"
    graph, neighbours = _halo_layer(xp, p, halo_name)
    for block in blocks:
        task = partial(
            _backward_block, plan=p, block_id=block, bias=bias, need_input_grad=need_input_grad, backend=backend
        )
        graph[(parts_name, *block)] = (task, (xp.name, *block), *neighbours[block], (gy.name, *block), weight_arg)

    # dL/dW and dL/db: the blocks' parts summed SPLIT_EVERY at a time, in the
    # blocks' order, then those sums alike, to one.
    sum_name, small_name = f"fastconv-sum-{token}", f"fastconv-weight-part-{token}"
    if need_input_grad:
        # dL/dW and dL/db apart from the block's dL/dX, where it lies: only they travel to be summed.
        for block in blocks:
            graph[(small_name, *block)] = (_weight_part, (parts_name, *block))
        level = [(small_name, *block) for block in blocks]
    else:
        level = [(parts_name, *block) for block in blocks]
    depth = 0
    while len(level) > 1 or depth == 0:
        groups_ = [level[g : g + SPLIT_EVERY] for g in range(0, len(level), SPLIT_EVERY)]
        for g, keys in enumerate(groups_):
            graph[(sum_name, depth, g)] = (_sum_parts, list(keys))
        level = [(sum_name, depth, g) for g in range(len(groups_))]
        depth += 1
    total = level[0]
    gw_name, gb_name = f"fastconv-grad-weight-{token}", f"fastconv-grad-bias-{token}"
    graph[(gw_name, 0, 0, 0, 0)] = (_take_weight, total)
    deps = [xp, gy, *weight_deps]
    grad_w = _array(graph, gw_name, deps, tuple((n,) for n in w.shape), w.dtype)
    grad_b = None
    if bias:
        grad_b = _array({(gb_name, 0): (_take_bias, total)}, gb_name, [grad_w], ((k,),), w.dtype)
    grad_x = None
    if need_input_grad:
        grad_x = _input_gradient(grad_w, parts_name, prep, token)
        if prep.unbatched:
            grad_x = grad_x[0]
    return ConvGradients(grad_x, grad_w, grad_b)  # type: ignore[arg-type]


def _take_weight(total: tuple[Any, ...]) -> np.ndarray:
    return total[1]


def _take_bias(total: tuple[Any, ...]) -> np.ndarray:
    return total[2]


def _input_gradient(graph_of: da.Array, parts_name: str, prep: _Prepared, token: str) -> da.Array:
    """dL/dX from the blocks' gradients of what they read (the tasks
    `parts_name` in the graph of `graph_of`): each block's halo rows and
    columns added to the blocks they came from, the padding mode's padding
    folded back, chunked like the input."""
    p, xp = prep.plan, prep.x
    _, h_ax, w_ax = _axes(p.data_format)
    pieces_name, name = f"fastconv-grad-halo-{token}", f"fastconv-grad-input-{token}"
    graph: dict[Any, Any] = {}
    blocks = list(np.ndindex(*xp.numblocks))
    for block in blocks:
        rows, cols = p.height.halo[block[h_ax]], p.width.halo[block[w_ax]]
        if rows or cols:
            graph[(pieces_name, *block)] = (
                partial(_grad_pieces, rows=rows, cols=cols, h_ax=h_ax, w_ax=w_ax),
                (parts_name, *block),
            )
    for block in blocks:
        sources = []
        for step in ((-1, 0), (0, -1), (-1, -1)):
            other = (pieces_name, *_index(_index(block, h_ax, step[0]), w_ax, step[1]))
            sources.append(other if other in graph else None)
        rows, cols = p.height.halo[block[h_ax]], p.width.halo[block[w_ax]]
        task = partial(_gather_grad, rows=rows, cols=cols, h_ax=h_ax, w_ax=w_ax)
        graph[(name, *block)] = (task, (parts_name, *block), *sources)
    gx = _array(graph, name, [graph_of], xp.chunks, xp.dtype)
    if p.spec.pads_data:
        top, bottom, left, right = p.spec.padding
        gx = _fold(gx, h_ax, top, bottom, p.spec.padding_mode)
        gx = _fold(gx, w_ax, left, right, p.spec.padding_mode)
    return gx.rechunk(prep.x_chunks)


def _fold(g: da.Array, axis: int, before: int, after: int, mode: str) -> da.Array:
    """The gradient of an input padded by (before, after) along `axis` in
    `mode`, folded back onto the input: each padded row's gradient added to
    the row it copied (PyTorch's meaning of the modes, as np.pad's
    reflect, edge and wrap)."""
    if not (before or after):
        return g
    n = g.shape[axis] - before - after

    def take(a: da.Array, start: int, stop: int) -> da.Array:
        index: list[slice] = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return a[tuple(index)]

    core = take(g, before, before + n)
    top, bottom = take(g, 0, before), take(g, before + n, before + n + after)
    if mode == "reflect":  # padded row before - i copies row i (i = 1..before), and below alike
        pieces = [(da.flip(top, axis), 1), (da.flip(bottom, axis), n - 1 - after)]
    elif mode == "replicate":  # every padded row copies the edge row
        pieces = [(top.sum(axis=axis, keepdims=True), 0), (bottom.sum(axis=axis, keepdims=True), n - 1)]
    else:  # circular: the rows above copy the last rows, those below the first
        pieces = [(top, n - before), (bottom, 0)]
    for piece, at in pieces:
        if piece.shape[axis] == 0 or (before if piece is pieces[0][0] else after) == 0:
            continue
        stop = at + piece.shape[axis]
        core = da.concatenate([take(core, 0, at), take(core, at, stop) + piece, take(core, stop, n)], axis=axis)
    return core
