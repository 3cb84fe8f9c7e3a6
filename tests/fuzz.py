"""A fuzzer for the public API (used by test_fuzz.py).

Each round draws a small, well-formed convolution (a `Case`), computes the
NumPy reference's answer on it once, then makes several calls from it --
conv2d, conv2d_backward, Conv2D(...).forward, Conv2D.backward, on the C++ or
NumPy backend -- each with its arguments mutated from the hostile values in
hostile.py:

- "same meaning" mutations present the same numbers differently (awkward
  memory layouts, NumPy integers and strings, an int for a pair...): the call
  must give the reference's answer;
- "invalid" mutations make one or two arguments wrong (a bool stride, 2**70,
  int data, a 5-d input, a shape that does not fit, a masked value...): the
  call must raise ValueError or TypeError (or MemoryError).

Every call ends in one of: a checked result, an allowed exception, or a
failure, which is recorded: a result for invalid input, an exception for
valid input, a wrong or non-finite answer, any other exception type, or an
error message that comes from inside the C++ core (the Python layer let
something through that the kernels caught).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from helpers import ISAS, TOLERANCE, forced_isa
from hostile import LAYOUTS, NOT_FLOAT, NOT_INT, OUT_OF_RANGE, IntIndexRaises

import fastconv

ALLOWED = (ValueError, TypeError, MemoryError)
# Messages that only the C++ core or pybind11 write: the Python layer should
# have refused the call first, with a message that names the user's argument.
CORE_MESSAGES = (
    "fastconv internal",
    "incompatible function arguments",
    "expected a native",
    "expected an aligned",
    "expected a C-contiguous",
    "strides must be non-negative",
    "output array is read-only",
    "expected 4-dimensional arrays",
    "expected shape (filters,)",
    "do not match",
)
APIS = ("conv2d", "conv2d_backward", "Conv2D.forward", "Conv2D.backward")
MODES = ("zeros", "reflect", "replicate", "circular")
BIG = 2**31 - 1  # the largest accepted stride or dilation


@dataclasses.dataclass
class Case:
    """A well-formed call: Python ints and tuples, plain float arrays."""

    n: int
    c: int
    k: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    padding: Any  # "valid", "same", int, (h, w) or a 4-tuple
    padding_mode: str
    data_format: str
    dtype: Any
    bias: bool
    batched: bool
    need_input_grad: bool
    nonfinite: bool  # NaN and Inf planted in the input
    x: np.ndarray = dataclasses.field(repr=False, default=None)
    weight: np.ndarray = dataclasses.field(repr=False, default=None)
    bias_array: np.ndarray | None = dataclasses.field(repr=False, default=None)
    grad_y: np.ndarray = dataclasses.field(repr=False, default=None)
    expected: dict = dataclasses.field(repr=False, default=None)

    def geometry(self) -> dict:
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
            data_format=self.data_format,
        )


def _explicit_pads(padding) -> tuple[int, int, int, int] | None:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return None
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def _out_size(size: int, kernel: int, stride: int, dilation: int, pads) -> int:
    if pads is None:
        return -(-size // stride)
    return (size + pads[0] + pads[1] - (kernel - 1) * dilation - 1) // stride + 1


def draw_case(r: random.Random) -> Case:
    """A small convolution that is valid by construction (as in test_properties.py)."""
    groups = r.choice((1, 1, 1, 2, 3))
    c, k = groups * r.randint(1, 2), groups * r.randint(1, 3)
    kernel = (r.randint(1, 3), r.randint(1, 3))
    stride = [r.randint(1, 3), r.randint(1, 3)]
    dilation = [r.randint(1, 2), r.randint(1, 2)]
    for axis in range(2):  # now and then the largest stride or dilation there is
        if r.random() < 0.04:
            stride[axis] = r.choice((1000, BIG))
        if kernel[axis] == 1 and r.random() < 0.04:
            dilation[axis] = r.choice((1000, BIG))
    a = lambda: r.randint(0, 2)  # noqa: E731
    padding = r.choice(("valid", "same", a(), (a(), a()), (a(), a(), a(), a())))
    mode = r.choice(MODES) if r.random() < 0.4 else "zeros"
    pads = _explicit_pads(padding)
    sizes = []
    for axis in range(2):
        span = (kernel[axis] - 1) * dilation[axis] + 1
        if pads is None:
            low = span if mode in ("reflect", "circular") else 1
        else:
            lo, hi = pads[2 * axis], pads[2 * axis + 1]
            low = max(1, span - lo - hi)
            if mode == "reflect":
                low = max(low, lo + 1, hi + 1)
            elif mode == "circular":
                low = max(low, lo, hi)
        sizes.append(r.randint(low, low + 4))
    batched = r.random() < 0.85
    return Case(
        n=(0 if r.random() < 0.12 else r.randint(1, 2)) if batched else 1,
        c=c,
        k=k,
        h=sizes[0],
        w=sizes[1],
        kernel=kernel,
        stride=tuple(stride),
        dilation=tuple(dilation),
        groups=groups,
        padding=padding,
        padding_mode=mode,
        data_format=r.choice(("NCHW", "NHWC")),
        dtype=r.choice((np.float32, np.float64)),
        bias=r.random() < 0.7,
        batched=batched,
        need_input_grad=r.random() < 0.7,
        nonfinite=r.random() < 0.08,
    )


def build(case: Case, r: random.Random) -> None:
    """The case's arrays, in its layout, and the reference's answers."""
    rng = np.random.default_rng(r.getrandbits(32))
    pads = _explicit_pads(case.padding)
    ho = _out_size(case.h, case.kernel[0], case.stride[0], case.dilation[0], None if pads is None else pads[:2])
    wo = _out_size(case.w, case.kernel[1], case.stride[1], case.dilation[1], None if pads is None else pads[2:])
    x = rng.standard_normal((case.n, case.c, case.h, case.w)).astype(case.dtype)
    if case.nonfinite and x.size:
        x.flat[rng.integers(x.size, size=2)] = (np.nan, np.inf)
    w = rng.standard_normal((case.k, case.c // case.groups, *case.kernel)).astype(case.dtype)
    gy = rng.standard_normal((case.n, case.k, ho, wo)).astype(case.dtype)
    if case.data_format == "NHWC":
        x, gy = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(gy.transpose(0, 2, 3, 1))
    if not case.batched:
        x, gy = x[0], gy[0]
    case.x, case.weight, case.grad_y = x, w, gy
    case.bias_array = rng.standard_normal(case.k).astype(case.dtype) if case.bias else None
    y = fastconv.conv2d(x, w, case.bias_array, backend="numpy", **case.geometry())
    grads = fastconv.conv2d_backward(gy, x, w, bias=True, backend="numpy", **case.geometry())
    assert y.shape == gy.shape, f"reference output {y.shape} != {gy.shape} for {case}"
    case.expected = dict(y=y, grad_x=grads.input, grad_w=grads.weight, grad_b=grads.bias)


# -- mutations -------------------------------------------------------------------


def same_int(v: int, r: random.Random) -> Any:
    return r.choice((np.int64(v), np.int32(v), np.uint16(v) if v < 2**16 else np.uint32(v), IntIndexRaises(v), v))


def same_pair(v: tuple[int, int], r: random.Random) -> Any:
    roll = r.random()
    if roll < 0.3 and v[0] == v[1]:
        return same_int(v[0], r)
    if roll < 0.6:
        return [same_int(v[0], r), same_int(v[1], r)]
    return (same_int(v[0], r), v[1])


def same_padding(p: Any, r: random.Random) -> Any:
    if isinstance(p, str):
        return r.choice((p.upper(), p.capitalize(), np.str_(p))) if p != "valid" or r.random() < 0.5 else (0, 0)
    pads = _explicit_pads(p)
    forms = [tuple(same_int(v, r) for v in pads), list(pads)]
    if pads[0] == pads[1] and pads[2] == pads[3]:
        forms.append((same_int(pads[0], r), pads[2]))
        if pads[0] == pads[2]:
            forms.append(same_int(pads[0], r))
    return r.choice(forms)


def same_array(a: np.ndarray, r: random.Random) -> Any:
    # A list holds Python floats (float64) and loses the shape of an empty array.
    as_list = a.dtype == np.float64 and 0 < a.size <= 300
    names = [name for name in LAYOUTS if name != "list" or as_list]
    return LAYOUTS[r.choice(names)](a)


def bad_int(r: random.Random) -> Any:
    return r.choice(NOT_INT + OUT_OF_RANGE)


def bad_pair(v: tuple[int, int], r: random.Random) -> Any:
    return r.choice(((v[0],), (v[0], v[1], 1), [], (v[0], bad_int(r)), [bad_int(r), v[1]], bad_int(r)))


def bad_padding(r: random.Random) -> Any:
    return r.choice(
        (
            -1,
            2**31,
            2**70,
            2**22,
            (2**22, 0),
            (0, 0, 0, 2**30),
            (1, 2, 3),
            (1, 1, 1, 1, 1),
            (1, -1),
            (0, 1, 2, "3"),
            (0, True),
            "full",
            "",
            " same",
            b"same",
            None,
            1.5,
            True,
            np.array([1, 1]),
            {"h": 1},
            [1, None],
        )
    )


def bad_array(role: str, a: np.ndarray, case: Case, r: random.Random) -> Any:
    """`a` made invalid for its role: non-float, wrong ndim, zero size, masked, wrong shape."""
    kinds = ["not-float", "ndim", "masked"]
    if role in ("x", "weight"):
        kinds.append("zero")
    if role in ("weight", "grad_output", "bias"):
        kinds.append("shape")  # (a weight with one more filter is valid for conv2d: C/groups changes instead)
    kind = r.choice(kinds)
    if kind == "not-float" or a.size == 0 and kind == "masked":
        names = [n for n in NOT_FLOAT if not (role == "bias" and n == "None")]
        return NOT_FLOAT[r.choice(names)](a)
    if kind == "masked":
        mask = np.zeros(a.shape, bool)
        mask.flat[r.randrange(a.size)] = True
        return np.ma.masked_array(a, mask=mask)
    if kind == "ndim":
        allowed = {"x": (3, 4), "weight": (4,), "bias": (1,), "grad_output": (a.ndim,)}[role]
        ndim = r.choice([d for d in (0, 1, 2, 3, 4, 5, 6) if d not in allowed])
        if ndim == 0:
            return np.asarray(a.flat[0] if a.size else 1.0, dtype=a.dtype)
        shape = (a.shape + (1, 1, 1, 1, 1, 1))[:ndim] if ndim > a.ndim else a.shape[a.ndim - ndim :]
        return np.resize(a, shape)
    if kind == "zero":  # any axis but the batch
        axes = [i for i in range(a.ndim) if role == "weight" or not (case.batched and i == 0)]
        shape = list(a.shape)
        shape[r.choice(axes)] = 0
        return np.zeros(shape, a.dtype)
    # "shape": one axis one longer (the batch too: grad_output must match the input)
    shape = list(a.shape)
    axis = r.randrange(a.ndim) if role != "weight" else 1
    shape[axis] += 1
    return np.resize(a, shape)


BAD_STRINGS = (None, "", "NCHW ", "nhwc", "zero", "CPP", "cuda", b"cpp", ["NCHW"], np.array(["NHWC"]), 0, object())
BAD_FLAGS = (None, 0, 1, 1.0, "yes", "", [], np.zeros(2), np.float64(1.0))


@dataclasses.dataclass
class Call:
    api: str
    backend: str
    args: dict
    invalid: list  # what was made invalid (empty: the call must succeed)
    mutated: list  # what was presented differently (same meaning)


def make_call(case: Case, api: str, r: random.Random) -> Call:
    backend = r.choice(("cpp", "cpp", "numpy"))
    args: dict = dict(
        x=case.x,
        weight=case.weight,
        bias=case.bias_array,
        grad_output=case.grad_y,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        padding_mode=case.padding_mode,
        data_format=case.data_format,
        backend=backend,
        bias_flag=case.bias,
        need_input_grad=case.need_input_grad,
        filters=case.k,
        kernel_size=case.kernel,
        in_channels=case.c,
        dtype=np.dtype(case.dtype).name,
    )
    used = {
        "conv2d": [
            "x",
            "weight",
            "bias",
            "stride",
            "padding",
            "dilation",
            "groups",
            "padding_mode",
            "data_format",
            "backend",
        ],
        "conv2d_backward": [
            "grad_output",
            "x",
            "weight",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias_flag",
            "need_input_grad",
            "padding_mode",
            "data_format",
            "backend",
        ],
        "Conv2D.forward": [
            "filters",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias_flag",
            "padding_mode",
            "data_format",
            "in_channels",
            "dtype",
            "backend",
            "weight",
            "bias",
            "x",
        ],
        "Conv2D.backward": ["grad_output", "need_input_grad"],
    }[api]
    mutated, invalid = [], []
    for key in r.sample(used, r.randint(0, min(3, len(used)))):
        value = args[key]
        if key in ("x", "weight", "grad_output") or key == "bias" and value is not None:
            args[key] = same_array(value, r)
        elif key in ("stride", "dilation", "kernel_size"):
            args[key] = same_pair(value, r)
        elif key == "padding":
            args[key] = same_padding(value, r)
        elif key in ("groups", "filters"):
            args[key] = same_int(value, r)
        elif key == "in_channels":
            args[key] = r.choice((None, same_int(value, r)))
        elif key in ("padding_mode", "data_format"):
            args[key] = np.str_(value)
        elif key == "backend":
            args[key] = r.choice(("auto", np.str_(value))) if value == "cpp" else np.str_(value)
        elif key in ("bias_flag", "need_input_grad"):
            args[key] = np.bool_(value)
        elif key == "dtype":
            args[key] = r.choice((np.dtype(value), getattr(np, value), "f4" if value == "float32" else "f8"))
        else:
            continue
        mutated.append(key)
    if r.random() < 0.5:
        for key in r.sample(used, min(r.randint(1, 2), len(used))):
            if key in ("x", "weight", "grad_output", "bias"):
                clean = dict(x=case.x, weight=case.weight, grad_output=case.grad_y, bias=case.bias_array)[key]
                if clean is None:
                    continue  # no bias to spoil
                args[key] = bad_array(key, clean, case, r)
            elif key in ("stride", "kernel_size"):
                args[key] = bad_pair(case.stride if key == "stride" else case.kernel, r)
            elif key == "dilation":
                if case.kernel[0] > 1 and case.padding != "same" and r.random() < 0.3:
                    args[key] = (10**6, 1)  # an integer, but the kernel no longer fits ("same" would pad it)
                else:
                    args[key] = bad_pair(case.dilation, r)
            elif key == "padding":
                args[key] = bad_padding(r)
            elif key == "groups":
                args[key] = r.choice((bad_int(r), case.c + 1))
            elif key == "filters":
                args[key] = r.choice((bad_int(r), case.k + 1))
            elif key == "in_channels":
                args[key] = r.choice((bad_int(r), case.c + 1))
                if args[key] is None:  # None is fine here: taken from the input
                    args[key] = case.c + 1
            elif key in ("padding_mode", "data_format", "backend"):
                args[key] = r.choice(BAD_STRINGS)
            elif key in ("bias_flag", "need_input_grad"):
                args[key] = r.choice(BAD_FLAGS)
            elif key == "dtype":
                args[key] = r.choice(("int32", "float16", "complex64", None, object(), ">f4"))
            invalid.append(key)
    return Call(api, backend, args, invalid, mutated)


# -- running a call and judging it -------------------------------------------------


def invoke(call: Call, case: Case) -> dict:
    """Make the call; its results by name."""
    a = call.args
    geometry = {k: a[k] for k in ("stride", "padding", "dilation", "groups", "padding_mode", "data_format", "backend")}
    if call.api == "conv2d":
        return dict(y=fastconv.conv2d(a["x"], a["weight"], a["bias"], **geometry))
    if call.api == "conv2d_backward":
        g = fastconv.conv2d_backward(
            a["grad_output"], a["x"], a["weight"], bias=a["bias_flag"], need_input_grad=a["need_input_grad"], **geometry
        )
        return dict(grad_x=g.input, grad_w=g.weight, grad_b=g.bias)
    if call.api == "Conv2D.forward":
        layer = fastconv.Conv2D(
            a["filters"],
            a["kernel_size"],
            a["stride"],
            a["padding"],
            dilation=a["dilation"],
            groups=a["groups"],
            bias=a["bias_flag"],
            padding_mode=a["padding_mode"],
            data_format=a["data_format"],
            in_channels=a["in_channels"],
            dtype=a["dtype"],
            backend=a["backend"],
        )
        layer.weight = a["weight"]
        if a["bias"] is not None:
            layer.bias = a["bias"]
        return dict(y=layer.forward(a["x"]))
    layer = fastconv.Conv2D(
        case.k,
        case.kernel,
        case.stride,
        case.padding,
        dilation=case.dilation,
        groups=case.groups,
        bias=case.bias,
        padding_mode=case.padding_mode,
        data_format=case.data_format,
        dtype=case.dtype,
        backend=call.backend,
    )
    layer.weight = case.weight
    if case.bias:
        layer.bias = case.bias_array
    layer.forward(case.x)
    grad_w, grad_x = layer.backward(a["grad_output"], a["need_input_grad"])
    return dict(grad_x=grad_x, grad_w=grad_w, grad_b=layer.grad_bias)


def compare(name: str, got: Any, want: np.ndarray, finite: bool) -> tuple[str, str] | None:
    """Why `got` is not `want` -- ("fail", why), or ("nan-placement", why) for
    NaN/Inf elsewhere than the reference's with the finite values right (a
    known C++ deviation: see test_nan_reaches_only_what_it_touches) -- or None."""
    if type(got) is not np.ndarray:
        return "fail", f"{name}: a {type(got).__name__}, not an ndarray"
    if got.shape != want.shape or got.dtype != want.dtype:
        return "fail", f"{name}: {got.shape} {got.dtype}, expected {want.shape} {want.dtype}"
    if finite and not np.isfinite(got).all():
        return "fail", f"{name}: non-finite values from finite input"
    both = np.isfinite(want) & np.isfinite(got)
    if both.any():
        # assert_close's rule: |got - want| <= tol * (scale + |want|), elementwise
        tol = TOLERANCE[want.dtype]
        scale = max(float(np.abs(want[both]).max()), np.finfo(want.dtype).tiny)
        err = np.abs(got[both].astype(np.float64) - want[both])
        if not (err <= tol * (scale + np.abs(want[both]))).all():
            return "fail", f"{name}: off by {err.max():.3g} (scale {scale:.3g})"
    if not (
        np.array_equal(np.isnan(got), np.isnan(want))
        and np.array_equal(np.isposinf(got), np.isposinf(want))
        and np.array_equal(np.isneginf(got), np.isneginf(want))
    ):
        return "nan-placement", f"{name}: NaN/Inf in other places than the reference's"
    return None


def expected_results(call: Call, case: Case) -> dict:
    e = case.expected
    if call.api in ("conv2d", "Conv2D.forward"):
        return dict(y=e["y"])
    need = bool(call.args["need_input_grad"])
    bias = bool(call.args["bias_flag"]) if call.api == "conv2d_backward" else case.bias
    return dict(grad_x=e["grad_x"] if need else None, grad_w=e["grad_w"], grad_b=e["grad_b"] if bias else None)


def judge(call: Call, case: Case) -> tuple[str, str | None]:
    """(outcome, failure description or None) of making `call`."""
    try:
        results = invoke(call, case)
    except ALLOWED as exc:
        outcome = type(exc).__name__
        message = str(exc)
        if any(fragment in message for fragment in CORE_MESSAGES) or not message:
            return outcome, f"unclear {outcome} from inside the core: {message[:200]}"
        if not call.invalid and outcome != "MemoryError":
            return outcome, f"valid call refused: {outcome}: {message[:200]}"
        if not call.invalid:
            return outcome, f"MemoryError for a small call: {message[:200]}"
        return outcome, None
    except Exception as exc:  # anything else is a bug
        return type(exc).__name__, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    if call.invalid:
        return "returned", f"invalid {call.invalid} accepted"
    outcome = "returned"
    for name, want in expected_results(call, case).items():
        got = results[name]
        if want is None:
            if got is not None:
                return outcome, f"{name}: expected None"
            continue
        why = compare(name, got, want, finite=not case.nonfinite)
        if why and (why[0] == "fail" or call.backend != "cpp"):
            return outcome, why[1]
        if why:
            outcome = "returned, NaN placement differs (known C++ issue)"
    return outcome, None


def fuzz_case(r: random.Random, calls_per_case: int = 8) -> tuple[collections.Counter, list]:
    """One drawn case and `calls_per_case` fuzzed calls from it, all chosen by
    `r`: (outcomes by API and kind, failures)."""
    outcomes: collections.Counter = collections.Counter()
    failures: list = []
    case = draw_case(r)
    build(case, r)
    fastconv._backend.core.set_isa(r.choice(ISAS))
    for _ in range(calls_per_case):
        call = make_call(case, r.choice(APIS), r)
        outcome, failure = judge(call, case)
        outcomes[outcome] += 1
        outcomes[(call.api, outcome)] += 1
        if failure:
            outcomes["FAILURE"] += 1
            failures.append(
                dict(
                    failure=failure,
                    api=call.api,
                    backend=call.backend,
                    invalid=call.invalid,
                    mutated=call.mutated,
                    case=repr(case),
                    args={k: _short(v) for k, v in call.args.items()},
                )
            )
    return outcomes, failures


@contextlib.contextmanager
def fuzzing() -> Iterator[None]:
    """The state fuzz_case runs in: warnings and floating-point errors
    silenced (NaN is planted in inputs), the ISA restored after."""
    with forced_isa(ISAS[0]), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def fuzz(calls: int, seed: int = 0, calls_per_case: int = 8) -> dict:
    """Make at least `calls` fuzzed API calls; a summary of what happened."""
    r = random.Random(seed)
    outcomes: collections.Counter = collections.Counter()
    failures: list = []
    cases = 0
    start = time.perf_counter()
    with fuzzing():
        while cases * calls_per_case < calls:
            case_outcomes, case_failures = fuzz_case(r, calls_per_case)
            cases += 1
            outcomes.update(case_outcomes)
            failures.extend(case_failures[: max(0, 50 - len(failures))])
    return summarize(outcomes, failures, cases, seed, time.perf_counter() - start)


def summarize(outcomes: collections.Counter, failures: list, cases: int, seed: Any, seconds: float) -> dict:
    """The JSON summary: calls made, outcomes by kind and by API, the first failures."""
    kinds = {k: v for k, v in outcomes.items() if isinstance(k, str)}
    per_api: dict = {api: {} for api in APIS}
    for key, count in outcomes.items():
        if isinstance(key, tuple):
            per_api[key[0]][key[1]] = count
    made = sum(v for k, v in kinds.items() if k != "FAILURE")
    return dict(
        calls=made,
        cases=cases,
        seed=seed,
        seconds=round(seconds, 1),
        outcomes=kinds,
        per_api=per_api,
        failures=failures,
    )


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{type(value).__name__}{value.shape} {value.dtype} C={value.flags.c_contiguous} aligned={value.flags.aligned}"
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:80]
