"""Kernel paths: every instruction set is selectable, and results do not depend
on the number of threads."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ISAS, forced_isa

import fastconv
from fastconv import _backend

core = _backend.core


def test_this_machine_runs_every_kernel_path():
    assert "generic" in ISAS
    assert core.isa() == ISAS[0], "the best instruction set is chosen by default"


def test_fastconv_isa_environment_variable_forces_a_path():
    for isa in ISAS:
        out = subprocess.run(
            [sys.executable, "-c", "from fastconv import _backend; print(_backend.core.isa())"],
            env={**os.environ, "FASTCONV_ISA": isa},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == isa
    bad = subprocess.run(
        [sys.executable, "-c", "import fastconv"],
        env={**os.environ, "FASTCONV_ISA": "sse9"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "FASTCONV_ISA='sse9'" in bad.stderr and "avx512" in bad.stderr


def test_set_isa_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown instruction set 'neon'"):
        core.set_isa("neon")


RUN_ALL_KERNELS = r"""
import sys, numpy as np, fastconv
from fastconv import _backend
_backend.core.set_isa(sys.argv[2])
rng = np.random.default_rng(0)
out = {}
for name, (n, c, h, k, ks, s, pad, g) in {
    "dense": (4, 24, 19, 40, 3, 1, "same", 1),
    "strided": (3, 16, 17, 20, 4, 2, "same", 2),
    "depthwise": (2, 8, 15, 8, 3, 1, "same", 8),
    "pointwise": (2, 32, 9, 48, 1, 1, "valid", 1),
    # one input channel, one group: dL/dF splits the group's filters among threads
    "one_channel": (16, 1, 20, 10, 3, 1, "same", 1),
}.items():
    for dtype in ("float32", "float64"):
        x = rng.standard_normal((n, c, h, h)).astype(dtype)
        w = rng.standard_normal((k, c // g, ks, ks)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        y = fastconv.conv2d(x, w, b, s, pad, 1, g)
        grads = fastconv.conv2d_backward(np.ones_like(y) + y, x, w, s, pad, 1, g)
        for part, arr in (("y", y), ("dx", grads.input), ("dw", grads.weight), ("db", grads.bias)):
            out[f"{name}-{dtype}-{part}"] = arr
np.savez(sys.argv[1], **out)
"""


@pytest.mark.parametrize("isa", ISAS)
def test_results_are_bit_identical_for_1_and_2_threads(tmp_path, isa):
    results = []
    for threads in (1, 2):
        path = tmp_path / f"{threads}.npz"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", RUN_ALL_KERNELS, str(path), isa], env=env, check=True)
        results.append(np.load(path))
    one, two = results
    assert one.files == two.files and len(one.files) == 40
    for key in one.files:
        assert one[key].tobytes() == two[key].tobytes(), f"{isa}: {key} differs between 1 and 2 threads"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_bias_gradient_is_the_same_sum_on_every_instruction_set(dtype, data_format):
    """dL/db is summed in double in one order (16 partial sums per filter,
    combined pairwise) on every ISA: the same bits from each, and within a
    rounding of the exact sum. 7 x 9 = 63 pixels: three full runs of 16 and a
    tail; values spread over 6 orders of magnitude so that the order shows."""
    rng = np.random.default_rng(3)
    shape = (3, 5, 9, 11) if data_format == "NCHW" else (3, 9, 11, 5)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    gy_shape = (3, 6, 7, 9) if data_format == "NCHW" else (3, 7, 9, 6)
    gy = (rng.standard_normal(gy_shape) * 10.0 ** rng.integers(-3, 3, gy_shape)).astype(dtype)
    sums = {}
    for isa in ISAS:
        with forced_isa(isa):
            sums[isa] = fastconv.conv2d_backward(gy, x, w, data_format=data_format).bias
    filter_axis = 1 if data_format == "NCHW" else 3
    exact = np.array([math.fsum(np.take(gy, k, axis=filter_axis).astype(np.float64).ravel()) for k in range(6)])
    for isa, got in sums.items():
        assert got.tobytes() == sums["generic"].tobytes(), f"{isa} and generic sum dL/db differently"
        np.testing.assert_allclose(got, exact.astype(dtype), rtol=np.finfo(dtype).eps * 4, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", ["one_channel", "depthwise"])
def test_bias_gradient_summed_beside_the_plane_kernels_is_the_same_sum(layer, dtype, data_format):
    """Layers whose filters each read one input channel sum dL/db as their
    dL/dW kernel reads each grad_y plane (NCHW), or in a pass of its own
    (NHWC): either way the bits of the bias pass alone, on every ISA and
    thread count. 20 x 21 = 420 pixels: 26 full runs of 16 and a tail; 40
    filters, enough for a team (two per channel in the depthwise layer)."""
    rng = np.random.default_rng(5)
    c, groups = (1, 1) if layer == "one_channel" else (20, 20)
    x = rng.standard_normal((3, c, 22, 23)).astype(dtype)
    w = rng.standard_normal((40, 1, 3, 3)).astype(dtype)
    gy = (rng.standard_normal((3, 40, 20, 21)) * 10.0 ** rng.integers(-3, 3, (3, 40, 20, 21))).astype(dtype)
    alone = np.empty(40, dtype)
    core.backward_bias(gy, alone)
    if data_format == "NHWC":
        x, gy = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, gy))
    for isa in ISAS:
        for threads in (1, 2, 3):
            with forced_isa(isa), fastconv.threads(threads):
                got = fastconv.conv2d_backward(gy, x, w, groups=groups, data_format=data_format).bias
            assert got.tobytes() == alone.tobytes(), f"{isa}, {threads} threads: dL/db differs from the bias pass alone"
