"""Property-based: for random geometries (shapes, strides, dilations, groups,
every padding form and mode, both data formats and dtypes, batches of 0 to 3,
unbatched input), the C++ core on every instruction set gives the NumPy
reference's output and all three gradients, through the functional API and
through Conv2D.

500 examples in the normal run (a deterministic set: see conftest.py),
5,000 more in the slow run; each test asserts that it ran that many."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from helpers import ISAS, assert_close, forced_isa

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastconv

NORMAL_EXAMPLES = 500
SLOW_EXAMPLES = 5_000
MODES = ["zeros", "reflect", "replicate", "circular"]


@dataclass
class Case:
    dtype: Any
    data_format: str
    n: int
    c: int
    k: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: Any
    dilation: Any
    groups: int
    padding: Any
    padding_mode: str
    bias: bool
    batched: bool
    need_input_grad: bool
    layout: str
    api: str
    seed: int


def pair(lo: int, hi: int):
    """An int, or an (h, w) pair, as the API takes them."""
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def as_pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@st.composite
def cases(draw) -> Case:
    groups = draw(st.integers(1, 3))
    c, k = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride, dilation = draw(pair(1, 3)), draw(pair(1, 3))
    form = draw(st.sampled_from(["valid", "same", "int", "pair", "quad"]))
    amount = st.integers(0, 3)
    padding = {
        "valid": "valid",
        "same": "same",
        "int": draw(amount),
        "pair": (draw(amount), draw(amount)),
        "quad": (draw(amount), draw(amount), draw(amount), draw(amount)),
    }[form]
    mode = draw(st.sampled_from(MODES))
    pads = (
        {"valid": (0, 0, 0, 0), "same": None}.get(form)
        if isinstance(padding, str)
        else (fastconv._validation.check_padding(padding))
    )
    # Smallest input that the dilated kernel fits and that the padding mode
    # allows (reflect pads less than the size, circular at most the size).
    sizes = []
    for axis, (pad_lo, pad_hi) in enumerate([(0, 1), (2, 3)]):
        span = (kernel[axis] - 1) * as_pair(dilation)[axis] + 1
        if pads is None:  # "same" pads at most span - 1 in all: below the size once size >= span
            low = span if mode in ("reflect", "circular") else 1
        else:
            low = max(1, span - pads[pad_lo] - pads[pad_hi])
            if mode == "reflect":
                low = max(low, pads[pad_lo] + 1, pads[pad_hi] + 1)
            elif mode == "circular":
                low = max(low, pads[pad_lo], pads[pad_hi])
        sizes.append(draw(st.integers(low, low + 6)))
    batched = draw(st.booleans())
    return Case(
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        data_format=draw(st.sampled_from(["NCHW", "NHWC"])),
        n=draw(st.integers(0, 3)) if batched else 1,
        c=c,
        k=k,
        h=sizes[0],
        w=sizes[1],
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        groups=groups,
        padding=padding,
        padding_mode=mode,
        bias=draw(st.booleans()),
        batched=batched,
        need_input_grad=draw(st.booleans()),
        layout=draw(st.sampled_from(["contiguous", "fortran", "negative-strides"])),
        api=draw(st.sampled_from(["functional", "layer"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def expected_out_hw(case: Case) -> tuple[int, int]:
    """Output size from the definitions, independently of fastconv's code."""
    out = []
    for axis, size in enumerate((case.h, case.w)):
        s, d, kk = as_pair(case.stride)[axis], as_pair(case.dilation)[axis], case.kernel[axis]
        if case.padding == "same":
            out.append(math.ceil(size / s))
            continue
        pads = (0, 0, 0, 0) if case.padding == "valid" else fastconv._validation.check_padding(case.padding)
        padded = size + pads[2 * axis] + pads[2 * axis + 1]
        out.append((padded - (kk - 1) * d - 1) // s + 1)
    return out[0], out[1]


def arrays(case: Case):
    """x, weight, bias, grad_output in the case's layout (NCHW or NHWC, maybe unbatched)."""
    rng = np.random.default_rng(case.seed)
    ho, wo = expected_out_hw(case)
    x = rng.standard_normal((case.n, case.c, case.h, case.w)).astype(case.dtype)
    weight = rng.standard_normal((case.k, case.c // case.groups, *case.kernel)).astype(case.dtype)
    bias = rng.standard_normal(case.k).astype(case.dtype) if case.bias else None
    grad_y = rng.standard_normal((case.n, case.k, ho, wo)).astype(case.dtype)
    if case.data_format == "NHWC":
        x, grad_y = x.transpose(0, 2, 3, 1).copy(), grad_y.transpose(0, 2, 3, 1).copy()
    if not case.batched:
        x, grad_y = x[0], grad_y[0]
    return x, weight, bias, grad_y


def relayout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout (the API must not care)."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "negative-strides":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    return a


def run(case: Case, backend: str, x, weight, bias, grad_y):
    """(output, dL/dx, dL/dw, dL/db) through the case's API."""
    geometry = dict(
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        padding_mode=case.padding_mode,
        data_format=case.data_format,
    )
    if case.api == "functional":
        y = fastconv.conv2d(x, weight, bias, backend=backend, **geometry)
        grads = fastconv.conv2d_backward(
            grad_y, x, weight, bias=case.bias, need_input_grad=case.need_input_grad, backend=backend, **geometry
        )
        return y, grads.input, grads.weight, grads.bias
    layer = fastconv.Conv2D(
        case.k, case.kernel, bias=case.bias, in_channels=case.c, dtype=case.dtype, backend=backend, **geometry
    )
    layer.weight = weight
    if bias is not None:
        layer.bias = bias
    y = layer.forward(x)
    grad_w, grad_x = layer.backward(grad_y, case.need_input_grad)
    return y, grad_x, grad_w, layer.grad_bias


def check_case(case: Case) -> None:
    x, weight, bias, grad_y = arrays(case)
    want = run(case, "numpy", x, weight, bias, grad_y)
    ho, wo = expected_out_hw(case)
    nchw = (case.k, ho, wo) if case.data_format == "NCHW" else (ho, wo, case.k)
    assert want[0].shape == ((case.n, *nchw) if case.batched else nchw)
    assert (want[1] is None) == (not case.need_input_grad) and (want[3] is None) == (not case.bias)
    x, grad_y = relayout(x, case.layout), relayout(grad_y, case.layout)
    for isa in ISAS:  # every kernel path this CPU can run
        with forced_isa(isa):
            got = run(case, "cpp", x, weight, bias, grad_y)
        for name, a, e in zip(("output", "dL/dX", "dL/dW", "dL/db"), got, want):
            if e is None:
                assert a is None, f"{isa}: {name} should be None"
            else:
                assert_close(a, e, f"{isa}: {name}")


def run_examples(count: int) -> int:
    """Check `count` random cases; returns how many hypothesis actually ran."""
    ran = []

    @settings(max_examples=count)
    @given(case=cases())
    def check(case: Case) -> None:
        check_case(case)
        ran.append(case)

    check()
    return len(ran)


def test_cpp_matches_the_reference_on_500_random_geometries():
    assert run_examples(NORMAL_EXAMPLES) >= NORMAL_EXAMPLES


@pytest.mark.slow
def test_cpp_matches_the_reference_on_5000_random_geometries():
    assert run_examples(SLOW_EXAMPLES) >= SLOW_EXAMPLES
