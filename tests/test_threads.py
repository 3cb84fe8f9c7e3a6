"""Thread control: fastconv's own functions, OMP_NUM_THREADS and threadpoolctl,
alone and beside PyTorch, with the same results at every count."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv

core = fastconv._backend.core


def test_set_and_get_num_threads_and_the_context_manager():
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        assert fastconv.get_num_threads() == 1
        with fastconv.threads(2):
            assert fastconv.get_num_threads() == 2
            assert core.build_info()["max_threads"] == 2
        assert fastconv.get_num_threads() == 1
    finally:
        fastconv.set_num_threads(before)


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_bad_thread_counts(bad, error):
    with pytest.raises(error, match="number of threads"):
        fastconv.set_num_threads(bad)
    with pytest.raises(error, match="number of threads"):
        with fastconv.threads(bad):
            pass


@pytest.mark.parametrize(
    "x_shape,w_shape",
    [((3, 16, 20, 20), (24, 16, 3, 3)), ((6, 1, 20, 20), (32, 1, 3, 3))],
    ids=["16-channels", "one-channel"],  # one channel: dL/dX as GEMM and col2im, dL/dF as im2col dots
)
def test_results_do_not_depend_on_the_thread_count(x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    outs = []
    for n in (1, 2):
        with fastconv.threads(n):
            y = fastconv.conv2d(x, w, padding="same")
            g = fastconv.conv2d_backward(y, x, w, padding="same")
            outs.append((y, g.input, g.weight, g.bias))
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_bias_gradient_does_not_depend_on_the_thread_count(data_format):
    # 2 x 40 x 40 x 40 = 128 K values of grad_y: enough for a team (dL/db
    # splits its filters among the threads from 64 K values).
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        gy = (rng.standard_normal((2, 40, 40, 40)) * 10.0 ** rng.integers(-3, 3, (2, 40, 40, 40))).astype(dtype)
        gy = gy if data_format == "NCHW" else np.ascontiguousarray(gy.transpose(0, 2, 3, 1))
        x = rng.standard_normal((2, 3, 40, 40) if data_format == "NCHW" else (2, 40, 40, 3)).astype(dtype)
        w = rng.standard_normal((40, 3, 1, 1)).astype(dtype)
        sums = []
        for n in (1, 2, 7):
            with fastconv.threads(n):
                sums.append(fastconv.conv2d_backward(gy, x, w, data_format=data_format, need_input_grad=False).bias)
        assert sums[0].tobytes() == sums[1].tobytes() == sums[2].tobytes()
        exact = gy.astype(np.float64).sum(axis=(0, 2, 3) if data_format == "NCHW" else (0, 1, 2))
        np.testing.assert_allclose(sums[0], exact.astype(dtype), rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_results_do_not_depend_on_which_thread_takes_which_units(dtype):
    # More threads than CPUs: some are descheduled mid-call, and the others
    # take units from the back of their runs (SharedUnits). Whoever computes
    # a unit, every output must come out bit for bit as on one thread.
    rng = np.random.default_rng(1)
    layers = [  # a 3x3 direct forward and dL/dx, a 1x1 GEMM
        (rng.standard_normal((4, 24, 30, 30)), rng.standard_normal((48, 24, 3, 3))),
        (rng.standard_normal((4, 96, 14, 14)), rng.standard_normal((96, 96, 1, 1))),
        # weights of 7 MiB in float32: units block by block, each thread
        # packing the blocks it runs, and again where it takes another's
        (rng.standard_normal((3, 910, 5, 5)), rng.standard_normal((224, 910, 3, 3))),
    ]
    for x, w in layers:
        x, w = x.astype(dtype), w.astype(dtype)
        with fastconv.threads(1):
            y = fastconv.conv2d(x, w, padding="same")
            gx = fastconv.conv2d_backward(y, x, w, padding="same").input
        with fastconv.threads(7):
            for _ in range(5):
                assert fastconv.conv2d(x, w, padding="same").tobytes() == y.tobytes()
                assert fastconv.conv2d_backward(y, x, w, padding="same").input.tobytes() == gx.tobytes()


def test_omp_num_threads_is_honoured():
    code = "import fastconv; print(fastconv.get_num_threads())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("torch_first", [False, True], ids=["fastconv-only", "after-torch"])
def test_threadpoolctl_limits_fastconv(torch_first):
    pytest.importorskip("threadpoolctl")
    if torch_first:
        pytest.importorskip("torch")
    code = (
        ("import torch\n" if torch_first else "")
        + "import fastconv\n"
        + "from threadpoolctl import threadpool_limits\n"
        + "with threadpool_limits(limits=1, user_api='openmp'):\n"
        + "    print(fastconv.get_num_threads())\n"
        + "print(fastconv.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    inside, after = out.stdout.split()
    assert inside == "1"
    assert int(after) == len(os.sched_getaffinity(0))  # OpenMP's default: every CPU this process may use
