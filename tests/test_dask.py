"""fastconv.dask: the convolution on Dask arrays agrees with the in-memory call,
forward and backward, on Dask's synchronous and threaded schedulers and on a
real dask.distributed LocalCluster (worker processes), and survives a worker
killed mid-computation."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

import fastconv  # noqa: E402
import fastconv.dask as fcd  # noqa: E402

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


@contextlib.contextmanager
def environ_kept():
    """Starting worker processes sets OMP_NUM_THREADS=1 (and MKL's, OpenBLAS')
    in this process's environment too, where later tests' subprocesses would
    inherit it: put the environment back."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, 1 GiB each, no dashboard: started once for the module."""
    with (
        environ_kept(),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture(params=["synchronous", "threads"])
def compute(request):
    """compute(*collections) on one of Dask's local schedulers."""
    return lambda *objs: dask.compute(*objs, scheduler=request.param)


def close(got, expected, what):
    tol = TOL[np.dtype(expected.dtype)]
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    assert got.dtype == expected.dtype, (what, got.dtype, expected.dtype)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    err = float(np.abs(got - expected).max(initial=0.0))
    assert err <= tol * scale, f"{what}: error {err:.3g} > {tol} x scale {scale:.3g}"


# (id, input shape, input chunks, filters, kernel, keyword arguments, dtype)
CASES = [
    ("batch-chunks", (6, 3, 12, 11), (2, 3, 12, 11), 4, (3, 3), dict(padding="same"), np.float64),
    ("spatial-uneven", (2, 3, 23, 19), (1, 3, 7, 6), 4, (3, 3), dict(), np.float64),
    ("stride2-same", (2, 3, 23, 19), (2, 3, 7, 6), 5, (3, 3), dict(stride=2, padding="same"), np.float64),
    ("stride3-valid", (2, 3, 25, 22), (2, 3, 8, 7), 4, (5, 5), dict(stride=3), np.float64),
    ("stride3-same", (2, 3, 25, 22), (2, 3, 8, 7), 4, (4, 4), dict(stride=3, padding="same"), np.float64),
    ("asymmetric", (2, 3, 23, 19), (2, 3, 9, 8), 4, (3, 4), dict(stride=(2, 1), padding=(1, 2, 0, 3)), np.float64),
    ("dilation", (2, 3, 23, 19), (2, 3, 9, 8), 4, (3, 3), dict(dilation=2, padding="same"), np.float64),
    ("groups", (2, 6, 20, 17), (2, 6, 7, 6), 9, (3, 3), dict(groups=3, padding=1), np.float64),
    ("depthwise", (2, 4, 20, 17), (2, 4, 7, 6), 8, (3, 3), dict(groups=4, padding="same", stride=2), np.float64),
    (
        "reflect",
        (2, 3, 23, 19),
        (2, 3, 7, 6),
        4,
        (5, 5),
        dict(padding="same", padding_mode="reflect", stride=2),
        np.float64,
    ),
    (
        "replicate",
        (2, 3, 23, 19),
        (2, 3, 7, 6),
        4,
        (3, 3),
        dict(padding=(2, 1, 3, 0), padding_mode="replicate"),
        np.float64,
    ),
    ("circular", (2, 3, 23, 19), (2, 3, 7, 6), 4, (3, 5), dict(padding="same", padding_mode="circular"), np.float64),
    ("nhwc", (2, 23, 19, 3), (1, 7, 6, 3), 4, (3, 3), dict(stride=2, padding="same", data_format="NHWC"), np.float64),
    (
        "nhwc-channel-chunks-reflect",
        (2, 23, 19, 4),
        (2, 8, 7, 2),
        4,
        (3, 3),
        dict(padding="same", padding_mode="reflect", data_format="NHWC"),
        np.float64,
    ),
    ("unbatched", (3, 23, 19), (3, 7, 6), 4, (3, 3), dict(padding="same"), np.float64),
    ("unbatched-nhwc", (23, 19, 3), (7, 6, 3), 4, (3, 3), dict(padding=1, stride=2, data_format="NHWC"), np.float64),
    ("float32", (2, 3, 23, 19), (1, 3, 7, 6), 4, (3, 3), dict(stride=2, padding="same"), np.float32),
    (
        "float32-nhwc-dilated",
        (2, 23, 19, 3),
        (1, 9, 8, 3),
        4,
        (3, 3),
        dict(dilation=(2, 1), padding="same", data_format="NHWC"),
        np.float32,
    ),
    ("empty-batch", (0, 3, 23, 19), (1, 3, 7, 6), 4, (3, 3), dict(padding="same"), np.float64),
    ("thin-last-chunk", (1, 1, 30, 30), (1, 1, (14, 14, 2), 30), 2, (7, 7), dict(padding=(0, 9, 0, 0)), np.float64),
    ("kernel-1x1-stride3", (2, 3, 23, 19), (2, 3, 7, 6), 4, (1, 1), dict(stride=3, padding=5), np.float64),
]


def make(case, seed=0):
    _, shape, chunks, filters, kernel, kwargs, dtype = case
    rng = np.random.default_rng(seed)
    fmt = kwargs.get("data_format", "NCHW")
    channels = shape[-3] if fmt == "NCHW" else shape[-1]
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((filters, channels // kwargs.get("groups", 1), *kernel)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    return x, da.from_array(x, chunks=chunks), w, b


# On the cluster, a few of them in fewer blocks (each task costs milliseconds there).
CLUSTER_CASES = [
    ("spatial-uneven", (2, 3, 23, 19), (1, 3, 12, 10), 4, (3, 3), dict(), np.float64),
    (
        "stride2-same-reflect",
        (2, 3, 23, 19),
        (2, 3, 12, 10),
        5,
        (3, 3),
        dict(stride=2, padding="same", padding_mode="reflect"),
        np.float64,
    ),
    (
        "stride3-nhwc-groups",
        (2, 25, 22, 6),
        (1, 13, 11, 6),
        6,
        (4, 4),
        dict(stride=3, padding="same", groups=3, data_format="NHWC"),
        np.float64,
    ),
    (
        "float32-dilated-circular",
        (2, 3, 23, 19),
        (2, 3, 12, 10),
        4,
        (3, 3),
        dict(dilation=2, padding="same", padding_mode="circular"),
        np.float32,
    ),
]


def check_case(case, compute):
    x, xd, w, b, kwargs = *make(case), case[5]
    y = fastconv.conv2d(x, w, b, **kwargs)
    yd = fcd.conv2d(xd, w, b, **kwargs)
    assert isinstance(yd, da.Array) and yd.shape == y.shape and yd.dtype == y.dtype
    assert all(0 not in c for c in yd.chunks[1:]), yd.chunks  # no output chunk of zero rows
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    expected = fastconv.conv2d_backward(gy, x, w, **kwargs)
    grads = fcd.conv2d_backward(da.from_array(gy, chunks=5), xd, w, **kwargs)
    assert grads.input.chunks == xd.chunks  # chunked like the input
    got_y, got_x, got_w, got_b = compute(yd, *grads)
    close(got_y, y, "output")
    close(got_x, expected.input, "dL/dX")
    close(got_w, expected.weight, "dL/dW")
    close(got_b, expected.bias, "dL/db")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_backward_match_the_in_memory_call(case, compute):
    check_case(case, compute)


@pytest.mark.parametrize("case", CLUSTER_CASES, ids=[c[0] for c in CLUSTER_CASES])
def test_forward_and_backward_match_the_in_memory_call_on_a_cluster(case, client):
    check_case(case, lambda *objs: tuple(client.compute(list(objs), sync=True)))


def test_forward_is_bitwise_equal_for_batch_chunks_and_within_ulps_for_spatial_ones(rng):
    x = rng.standard_normal((3, 5, 26, 27))
    w = rng.standard_normal((7, 5, 3, 3))
    wg = rng.standard_normal((10, 1, 3, 3))
    # Batch chunks only: every block is a call on whole images, bitwise equal, for any groups.
    for weight, kwargs in ((w, dict(padding="same")), (wg, dict(groups=5))):
        expected = fastconv.conv2d(x, weight, **kwargs)
        got = fcd.conv2d(da.from_array(x, chunks=(1, 5, 26, 27)), weight, **kwargs).compute(scheduler="synchronous")
        assert np.array_equal(got, expected), kwargs
    # Spatial chunks: a pixel's sum can round differently in a narrower
    # tile (the kernels block rows by the tile's width), by a few units in
    # the last place of the output's scale, never more.
    for kwargs in (dict(padding="same"), dict(stride=2, padding="same", padding_mode="reflect"), dict(dilation=2)):
        expected = fastconv.conv2d(x, w, **kwargs)
        got = fcd.conv2d(da.from_array(x, chunks=(2, 5, 7, 10)), w, **kwargs).compute(scheduler="synchronous")
        scale = float(np.abs(expected).max())
        assert float(np.abs(got - expected).max()) <= 8 * np.finfo(np.float64).eps * scale, kwargs


def test_gradients_repeat_bit_for_bit(client, rng):
    x = rng.standard_normal((2, 3, 30, 30))
    w = rng.standard_normal((4, 3, 3, 3))
    xd = da.from_array(x, chunks=(1, 3, 16, 16))
    gy = da.ones((2, 4, 30, 30), chunks=(1, 4, 16, 16))
    grads = fcd.conv2d_backward(gy, xd, w, padding="same")
    runs = [client.compute(list(grads), sync=True) for _ in range(3)]
    runs.append(list(dask.compute(*grads, scheduler="synchronous")))
    with fastconv.threads(1):  # a threaded run whose blocks use one OpenMP thread each, as the workers do
        runs.append(list(dask.compute(*grads, scheduler="synchronous")))
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert np.array_equal(got, first)


def test_each_block_runs_the_core_once_on_itself_and_once_per_halo_strip(monkeypatch, rng):
    calls: dict[str, list[tuple[tuple[int, ...], bool]]] = {"forward": [], "backward": []}
    forward, backward = fcd._conv2d_in_memory, fcd._conv2d_backward_in_memory
    x_np = rng.standard_normal((2, 3, 20, 20))

    def record(name, fn, tile_at):
        def wrapped(*args, **kwargs):
            tile = args[tile_at]
            calls[name].append((tile.shape[2:], not tile.flags.owndata))  # a view: the block's own memory
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(fcd, "_conv2d_in_memory", record("forward", forward, 0))
    monkeypatch.setattr(fcd, "_conv2d_backward_in_memory", record("backward", backward, 1))
    x = da.from_array(x_np, chunks=(1, 3, 7, 7))  # 2 x 3 x 3 blocks of 7, 7 and 6 rows and columns
    w = rng.standard_normal((4, 3, 3, 3))
    y = fcd.conv2d(x, w, padding="same")
    close(y.compute(scheduler="synchronous"), fastconv.conv2d(x_np, w, padding="same"), "output")
    # Forward: each block once on itself, read in place (no copy), then the
    # blocks with a halo below (right) once on a strip of their last 2 rows
    # (columns) and the halo's 2: 6 + 6 strips an image.
    whole = [shape for shape, in_place in calls["forward"] if in_place]
    strips = [shape for shape, in_place in calls["forward"] if not in_place]
    assert sorted(whole) == sorted([(a, b) for a in (7, 7, 6) for b in (7, 7, 6)] * 2)
    assert len(strips) == 24 and all(min(shape) == 4 for shape in strips), strips
    # Backward: each block once, on the block with its halo.
    dask.compute(*fcd.conv2d_backward(da.ones_like(y), x, w, padding="same"), scheduler="synchronous")
    assert sorted(shape for shape, _ in calls["backward"]) == sorted([(a, b) for a in (9, 9, 6) for b in (9, 9, 6)] * 2)


def test_stride_moves_chunk_edges_onto_window_starts_and_keeps_the_chunks(rng):
    # "same" at stride 2, kernel 3, H = 23: padding (1, 1), windows start on
    # odd rows; edges 7 and 21 are window starts, 14 moves to 13.
    x = rng.standard_normal((1, 2, 23, 23))
    w = rng.standard_normal((3, 2, 3, 3))
    xd = da.from_array(x, chunks=(1, 2, 7, 7))
    p = fcd.plan(xd.shape, xd.chunks, w.shape, stride=2, padding="same")
    assert p.height.chunks == (7, 6, 8, 2)
    assert p.height.out_chunks == (4, 3, 4, 1)
    y = fcd.conv2d(xd, w, stride=2, padding="same")
    assert y.chunks[2] == (4, 3, 4, 1)
    close(y.compute(scheduler="synchronous"), fastconv.conv2d(x, w, stride=2, padding="same"), "output")
    # Already aligned: no rechunk at all.
    p = fcd.plan((1, 2, 24, 24), ((1,), (2,), (8, 8, 8), (8, 8, 8)), w.shape, stride=2)
    assert p.height.chunks == (8, 8, 8) and p.height.out_chunks == (4, 4, 3)


def test_rows_that_start_no_window_join_the_chunk_before(rng):
    # valid, kernel 5: the last windows start at row 18, so a last chunk of
    # rows 20-22 holds no window start: no output chunk of zero rows.
    x = rng.standard_normal((1, 1, 23, 23))
    w = rng.standard_normal((1, 1, 5, 5))
    xd = da.from_array(x, chunks=(1, 1, 10, 10))
    y = fcd.conv2d(xd, w)
    assert y.chunks[2] == (10, 9) and y.chunks[3] == (10, 9)
    close(y.compute(scheduler="synchronous"), fastconv.conv2d(x, w), "output")
    g = fcd.conv2d_backward(da.ones_like(y), xd, w)
    assert g.input.chunks == xd.chunks
    close(g.input.compute(scheduler="synchronous"), fastconv.conv2d_backward(np.ones(y.shape), x, w).input, "dL/dX")


def test_graph_size_grows_linearly_with_the_blocks(rng):
    w = rng.standard_normal((2, 2, 3, 3))

    def tasks(blocks_per_side):
        x = da.zeros((1, 2, 240, 240), chunks=(1, 2, 240 // blocks_per_side - 1, 240 // blocks_per_side - 1))
        grads = fcd.conv2d_backward(da.zeros((1, 2, 120, 120)), x, w, stride=2, padding="same")
        y = fcd.conv2d(x, w, stride=2, padding="same")
        return len(dict(y.__dask_graph__())), len(dict(grads.input.__dask_graph__()))

    small, large = tasks(4), tasks(16)
    for s, lg in zip(small, large):
        assert lg <= 16 * s * 1.2, (small, large)  # 16x the blocks, about 16x the tasks


def test_channel_axis_becomes_one_chunk_with_a_warning_when_large(rng):
    x = rng.standard_normal((2, 8, 16, 16))
    w = rng.standard_normal((4, 8, 3, 3))
    xd = da.from_array(x, chunks=(1, 2, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # small blocks: no warning
        y = fcd.conv2d(xd, w, padding=1)
    close(y.compute(scheduler="synchronous"), fastconv.conv2d(x, w, padding=1), "output")
    with dask.config.set({"array.chunk-size": "1KiB"}):
        with pytest.warns(dask.array.core.PerformanceWarning, match="8 channels in 4 chunks"):
            fcd.conv2d(xd, w, padding=1)


def test_impossible_plans_raise_value_errors_naming_the_sizes(rng):
    w7 = rng.standard_normal((1, 1, 7, 7))
    x = da.zeros((1, 1, 30, 30), chunks=(1, 1, (10, 2, 18), 30))
    with pytest.raises(ValueError, match=r"reads 6 rows past its own, but the next chunk has 2 rows"):
        fcd.conv2d(x, w7)
    with pytest.raises(ValueError, match=r"reads 6 rows past its own"):
        fcd.conv2d_backward(da.zeros((1, 1, 24, 24)), x, w7)
    # A last chunk thinner than the halo is fine: it holds no window start
    # (it joins the chunk before), or the rows past it are padding.
    p = fcd.plan((1, 1, 30, 30), ((1,), (1,), (14, 14, 2), (30,)), w7.shape, padding="same")
    assert p.height.chunks == (14, 16)
    p = fcd.plan((1, 1, 30, 30), ((1,), (1,), (14, 14, 2), (30,)), (1, 1, 7, 7), padding=(0, 9, 0, 0))
    assert p.height.chunks == (14, 14, 2) and p.height.halo == (6, 2, 0) and p.height.out_chunks == (14, 14, 5)
    with pytest.raises(ValueError, match=r"kernel height 7 .* larger than the padded input height 4"):
        fcd.conv2d(da.zeros((1, 1, 4, 30), chunks=2), w7)
    with pytest.raises(TypeError, match="floating-point"):
        fcd.conv2d(da.zeros((1, 1, 8, 8), dtype=int), w7)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        xd = da.zeros((1, 1, 8, 8))
        fcd.conv2d(xd[xd[:, 0, 0, 0] > 0], w7)
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(1, 1, 24, 24\)"):
        fcd.conv2d_backward(da.zeros((1, 1, 30, 30)), da.zeros((1, 1, 30, 30)), w7)


def test_need_input_grad_false_and_no_bias(rng):
    x = rng.standard_normal((2, 3, 17, 17))
    w = rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 15, 15))
    g = fcd.conv2d_backward(gy, da.from_array(x, chunks=(1, 3, 6, 6)), w, bias=False, need_input_grad=False)
    assert g.input is None and g.bias is None
    close(g.weight.compute(scheduler="synchronous"), fastconv.conv2d_backward(gy, x, w).weight, "dL/dW")


def test_a_large_weight_is_one_graph_key_sent_once(client, rng):
    w = rng.standard_normal((64, 32, 5, 5))  # 400 KiB
    x = rng.standard_normal((2, 32, 40, 40))
    xd = da.from_array(x, chunks=(1, 32, 10, 10))  # 32 blocks
    y = fcd.conv2d(xd, w, padding="same")
    grads = fcd.conv2d_backward(da.ones_like(y), xd, w, padding="same")
    for collection in (y, grads.weight):
        graph = dict(collection.__dask_graph__())
        holding = [k for k, v in graph.items() if len(cloudpickle.dumps(v)) >= w.nbytes]
        assert len(holding) == 1, holding  # the weight's own key, not a copy per block
        assert len(graph) > 32
    close(client.compute(y, sync=True), fastconv.conv2d(x, w, padding="same"), "output")


def test_a_small_weight_and_bias_travel_inside_the_tasks(rng):
    # No key of their own: each block's task can start as soon as its data is there.
    w, b = rng.standard_normal((8, 4, 3, 3)), rng.standard_normal(8)  # 2.4 KiB for each of 16 blocks
    x = rng.standard_normal((2, 4, 24, 24))
    xd = da.from_array(x, chunks=(1, 4, 6, 12))
    y = fcd.conv2d(xd, w, b, padding="same")
    grads = fcd.conv2d_backward(da.ones_like(y), xd, w, padding="same")
    for collection in (y, grads.weight):
        graph = dict(collection.__dask_graph__())
        values = {k: getattr(v, "value", v) for k, v in graph.items()}  # a key's data, if it is data
        own_keys = [k for k, v in values.items() if isinstance(v, np.ndarray) and v.shape in (w.shape, b.shape)]
        assert not own_keys
    close(y.compute(scheduler="synchronous"), fastconv.conv2d(x, w, b, padding="same"), "output")


def test_a_block_cuts_its_neighbours_pieces_before_its_own_task(rng):
    # Its own pieces (what the blocks above and left read of it) are a
    # dependency of its task, so a worker never computes a whole block while
    # its neighbours wait for them.
    x = da.from_array(rng.standard_normal((1, 2, 16, 16)), chunks=(1, 2, 8, 8))
    w = rng.standard_normal((2, 2, 3, 3))
    for collection, task in (
        (fcd.conv2d(x, w, padding="same"), "fastconv-conv2d"),
        (fcd.conv2d_backward(da.ones((1, 2, 16, 16), chunks=8), x, w, padding="same").weight, "fastconv-backward"),
    ):
        dependencies = collection.__dask_graph__().get_all_dependencies()
        blocks = [k for k in dependencies if isinstance(k, tuple) and k[0].startswith(task)]
        assert len(blocks) == 4
        for key in blocks:
            pieces = {d for d in dependencies[key] if d[0].startswith("fastconv-halo")}
            own = (key[0].replace(task, "fastconv-halo"), *key[1:])
            i, j = key[3], key[4]
            assert (own in pieces) == (i > 0 or j > 0), key  # the top-left block gives no pieces
            # below, right and below-right where they are, and its own
            assert len(pieces) == (i == 0) + (j == 0) + (i == 0 and j == 0) + (i > 0 or j > 0), (key, pieces)


def test_layer_forward_and_backward_take_dask_arrays(rng):
    x = rng.standard_normal((4, 3, 20, 18))
    for kwargs in (dict(stride=2, padding="same", padding_mode="reflect"), dict(data_format="NHWC", padding=1)):
        eager = fastconv.Conv2D(5, 3, dtype="float64", seed=1, **kwargs)
        lazy = fastconv.Conv2D(5, 3, dtype="float64", seed=1, **kwargs)
        xin = x if kwargs.get("data_format") != "NHWC" else x.transpose(0, 2, 3, 1).copy()
        y = eager.forward(xin)
        yd = lazy.forward(da.from_array(xin, chunks=(2, 7, 7, 3) if xin.shape[-1] == 3 else (2, 3, 7, 7)))
        assert isinstance(yd, da.Array) and isinstance(lazy.weight, np.ndarray)
        gy = rng.standard_normal(y.shape)
        gw, gx = eager.backward(gy)
        gwd, gxd = lazy.backward(gy)
        assert isinstance(gwd, da.Array) and isinstance(gxd, da.Array)
        got_y, got_w, got_x, got_b = dask.compute(yd, gwd, gxd, lazy.grad_bias, scheduler="synchronous")
        close(got_y, y, "output")
        close(got_w, gw, "dL/dW")
        close(got_x, gx, "dL/dX")
        close(got_b, eager.grad_bias, "dL/db")
        eager.forward(xin)  # a NumPy forward after a Dask one: backward is NumPy again
        lazy.forward(xin)
        assert isinstance(lazy.backward(gy)[0], np.ndarray)


def test_a_data_parallel_training_step_equals_the_full_batch_step(rng):
    # docs/dask.md's loop: per-chunk gradients, tree-summed, give the full batch's step.
    images = rng.standard_normal((64, 3, 12, 12)).astype(np.float32)
    lazy = fastconv.Conv2D(8, 3, padding="same", in_channels=3, seed=0)
    eager = fastconv.Conv2D(8, 3, padding="same", in_channels=3, seed=0)
    for start in (0, 32):
        x = images[start : start + 32]
        y = lazy.forward(da.from_array(x, chunks=(8, 3, 12, 12)))
        grad_w, _ = lazy.backward(2 * y / y.size, need_input_grad=False)
        grad_w, grad_b = dask.compute(grad_w, lazy.grad_bias, scheduler="synchronous")
        lazy.weight, lazy.bias = lazy.weight - 0.1 * grad_w, lazy.bias - 0.1 * grad_b
        y = eager.forward(x)
        gw, _ = eager.backward(2 * y / y.size, need_input_grad=False)
        eager.weight, eager.bias = eager.weight - 0.1 * gw, eager.bias - 0.1 * eager.grad_bias
    close(lazy.weight, eager.weight, "weight after two steps")
    close(lazy.bias, eager.bias, "bias after two steps")


def test_fastconv_in_a_worker_uses_the_threads_dask_gives(client):
    # The nanny sets OMP_NUM_THREADS=1 in each worker: one thread per task.
    threads = da.zeros((4,), chunks=1).map_blocks(lambda b: np.full(b.shape, fastconv.get_num_threads()), dtype=int)
    assert client.compute(threads, sync=True).tolist() == [1, 1, 1, 1]


# A user's script: fastconv imported at the top, then a cluster. Worker
# processes are spawned, so each imports the script's main module again --
# and with it fastconv and OpenMP -- before a Nanny's `env` is applied. It
# runs a default cluster first, as a script may, which leaves
# OMP_NUM_THREADS=1 in its environment: the nanny takes that over Dask's config.
ONE_WORKER_SCRIPT = """
import os
import sys

import dask
import distributed
import fastconv


def worker_threads(**cluster):
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="1GiB",
                                 dashboard_address=None, **cluster) as cluster,
        distributed.Client(cluster) as client,
    ):
        return client.submit(fastconv.get_num_threads, pure=False).result()


if __name__ == "__main__":
    print(worker_threads())
    recipe = sys.argv[1]
    if recipe == "environ":  # docs/dask.md's recipe
        os.environ["OMP_NUM_THREADS"] = "2"
        print(worker_threads())
    elif recipe == "config":
        with dask.config.set({"distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": 2}):
            print(worker_threads())
    else:
        print(worker_threads(env={"OMP_NUM_THREADS": "2"}))
"""


@pytest.mark.parametrize(("recipe", "threads"), [("environ", "2"), ("config", "1"), ("env", "1")])
def test_one_worker_with_all_the_cores(tmp_path, recipe, threads):
    # docs/dask.md's recipe for one single-threaded worker whose OpenMP team
    # has every core, run from a script that imports fastconv at the top and
    # has started a cluster before; and the two that do not work there.
    script = tmp_path / "one_worker.py"
    script.write_text(ONE_WORKER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "DASK_"))}
    out = subprocess.run(
        [sys.executable, str(script), recipe], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", threads]


def _block_data(block_id):
    return np.random.default_rng(block_id).standard_normal((1, 4, 32, 32))


def _slow_block(block_id=None):
    time.sleep(0.15)
    return _block_data(block_id)


def _tasks_in_memory(dask_scheduler):
    return sum(ts.state == "memory" for ts in dask_scheduler.tasks.values())


def test_a_worker_killed_mid_computation_loses_nothing(client):
    blocks = (4, 1, 2, 2)
    x = da.map_blocks(
        _slow_block,
        chunks=tuple((n,) * b for n, b in zip((1, 4, 32, 32), blocks)),
        dtype=float,
        meta=np.empty((0, 0, 0, 0)),
    )
    expected_x = np.block([[[[_block_data((n, 0, i, j)) for j in range(2)] for i in range(2)]] for n in range(4)])
    w = np.random.default_rng(0).standard_normal((6, 4, 5, 5))
    y = fcd.conv2d(x, w, padding="same")
    future = client.compute(y)
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(_tasks_in_memory) < 4:  # some blocks made, most not
        assert time.monotonic() < deadline, "the computation never started"
        time.sleep(0.02)
    victim = sorted(pids)[0]
    assert not future.done()
    os.kill(pids[victim], signal.SIGKILL)
    got = future.result(timeout=120)
    close(got, fastconv.conv2d(expected_x, w, padding="same"), "output")
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.scheduler_info()["workers"]


def test_import_fastconv_does_not_import_dask():
    code = "import sys, fastconv; assert 'dask' not in sys.modules, 'dask imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
