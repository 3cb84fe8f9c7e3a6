"""Many Python threads calling fastconv at once: bit-for-bit the serial
results, no deadlock with OpenMP teams on every thread, the GIL released
while the C++ core works, and what sharing one Conv2D between threads does.

(test_threads.py covers the OpenMP thread count of one call.)
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

import fastconv

PY_THREADS = 8
STEPS = 10_000  # forward + backward pairs, over all threads together
JOIN_TIMEOUT_S = 120  # a thread still alive after this is a hang, not slowness

# Configurations given one to each thread, so that every layout and padding
# path runs beside the others; all take 4 input channels.
CONFIGS = [
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=3, padding="same", data_format="NHWC"),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(1, 0, 2, 1), padding_mode="circular"),
    dict(kernel_size=2, stride=2, dtype="float64"),
    dict(kernel_size=3, dilation=2, padding="same", padding_mode="replicate"),
    dict(kernel_size=3, groups=4, padding="same"),
    dict(kernel_size=1, bias=False, dtype="float64", data_format="NHWC"),
]


@pytest.fixture
def frequent_switches():
    """Switch between Python threads every 10 us instead of every 5 ms, so
    that the threads interleave inside the Python layer, not only between calls."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def run_threads(targets) -> None:
    """Start one thread per callable at once, join each within the timeout,
    and re-raise the first error a thread raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrapped(target):
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            target()
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {JOIN_TIMEOUT_S} s (a deadlock?): {hung}"
    if errors:
        raise errors[0]


def inputs(rng, shape_nchw, dtype, data_format, count=3):
    shape = shape_nchw if data_format == "NCHW" else (shape_nchw[0], *shape_nchw[2:], shape_nchw[1])
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


def assert_interleaved(trace, steps):
    """The threads' steps, in the order they started, really alternate: the
    threads ran at the same time, not one after another."""
    assert len(trace) == steps
    switches = sum(a != b for a, b in zip(trace, trace[1:]))
    assert switches >= 50, f"only {switches} switches between threads in {steps} steps"


def assert_same(got, expected, what):
    for g, e in zip(got, expected):
        if e is None:
            assert g is None, what
        else:
            assert g.dtype == e.dtype and np.array_equal(g, e), f"{what}: differs from the serial result"


def layer_cases(rng, shape=(2, 4, 9, 9)):
    """A layer per configuration, its inputs and grad_outputs, and its serial results."""
    cases = []
    for seed, config in enumerate(CONFIGS):
        layer = fastconv.Conv2D(6 if config.get("groups") != 4 else 8, in_channels=4, seed=seed, **config)
        dtype, data_format = layer.dtype, layer.data_format
        xs = inputs(rng, shape, dtype, data_format)
        gys = [rng.standard_normal(layer.output_shape(x.shape)).astype(dtype) for x in xs]
        expected = []
        for x, gy in zip(xs, gys):
            y = layer.forward(x)
            gw, gx = layer.backward(gy)
            expected.append((y, gw, gx, layer.grad_bias))
        cases.append((layer, xs, gys, expected))
    return cases


def layer_worker(case, steps, num_threads, trace):
    layer, xs, gys, expected = case

    def work():
        with fastconv.threads(num_threads):
            for i in range(steps):
                trace.append(id(work))
                j = i % len(xs)
                y = layer.forward(xs[j])
                gw, gx = layer.backward(gys[j])
                assert_same((y, gw, gx, layer.grad_bias), expected[j], f"{layer!r}, step {i}")

    return work


@pytest.mark.usefixtures("frequent_switches")
def test_one_layer_per_thread_gives_the_serial_results(rng):
    # One OpenMP thread per call: 8 Python threads on 2 cores are enough.
    cases = layer_cases(rng)
    trace: list[int] = []
    run_threads([layer_worker(case, STEPS // PY_THREADS, 1, trace) for case in cases])
    assert_interleaved(trace, STEPS)


def functional_cases(rng, shape=(2, 4, 9, 9)):
    """Per configuration: the arguments of conv2d and conv2d_backward, their
    inputs and grad_outputs, and the serial results; the weights are shared."""
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    cases = []
    for config in CONFIGS:
        kwargs = dict(
            stride=config.get("stride", 1),
            padding=config.get("padding", "valid"),
            dilation=config.get("dilation", 1),
            padding_mode=config.get("padding_mode", "zeros"),
            data_format=config.get("data_format", "NCHW"),
        )
        xs = inputs(rng, shape, np.float32, kwargs["data_format"])
        expected, gys = [], []
        for x in xs:
            y = fastconv.conv2d(x, weight, bias, **kwargs)
            gy = rng.standard_normal(y.shape).astype(np.float32)
            gys.append(gy)
            expected.append((y, *fastconv.conv2d_backward(gy, x, weight, **kwargs)))
        cases.append((kwargs, xs, gys, expected))
    return weight, bias, cases


def functional_worker(weight, bias, case, steps, num_threads, trace):
    kwargs, xs, gys, expected = case

    def work():
        with fastconv.threads(num_threads):
            for i in range(steps):
                trace.append(id(work))
                j = i % len(xs)
                y = fastconv.conv2d(xs[j], weight, bias, **kwargs)
                grads = fastconv.conv2d_backward(gys[j], xs[j], weight, **kwargs)
                assert_same((y, *grads), expected[j], f"conv2d {kwargs}, step {i}")

    return work


@pytest.mark.usefixtures("frequent_switches")
def test_functional_api_on_shared_weights_gives_the_serial_results(rng):
    weight, bias, cases = functional_cases(rng)
    weight_before, bias_before = weight.copy(), bias.copy()
    trace: list[int] = []
    run_threads([functional_worker(weight, bias, case, STEPS // PY_THREADS, 1, trace) for case in cases])
    assert_interleaved(trace, STEPS)
    assert np.array_equal(weight, weight_before) and np.array_equal(bias, bias_before), "shared weights changed"


def test_openmp_teams_on_every_python_thread_do_not_deadlock(rng):
    # Inputs large enough (over 2**20 FLOPs) that each call starts an OpenMP
    # team, on every Python thread at once: 8 teams of the default size (at
    # least 2) on 2 cores. Fewer steps: the point is the teams, not the count.
    teams = max(2, fastconv.get_num_threads())
    layers = layer_cases(rng, shape=(2, 4, 40, 40))
    weight, bias, funcs = functional_cases(rng, shape=(2, 4, 40, 40))
    trace: list[int] = []
    workers = [layer_worker(case, 20, teams, trace) for case in layers[:4]]
    workers += [functional_worker(weight, bias, case, 20, teams, trace) for case in funcs[:4]]
    run_threads(workers)
    assert len(trace) == 8 * 20


# -- the GIL -------------------------------------------------------------------

TICK_S = 0.001


def ticks_during(call) -> tuple[int, float]:
    """How many times a ticker thread, sleeping TICK_S between ticks, ticked
    while `call` ran on this thread, and how long the call took."""
    count = 0
    stop = threading.Event()

    def tick():
        nonlocal count
        while not stop.is_set():
            count += 1
            time.sleep(TICK_S)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    time.sleep(0.05)  # let it get going
    before, start = count, time.perf_counter()
    call()
    after, elapsed = count, time.perf_counter() - start
    stop.set()
    ticker.join(JOIN_TIMEOUT_S)
    return after - before, elapsed


@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_the_core_releases_the_gil_during_a_long_call(rng, pass_):
    # float64, 128 -> 128 channels, 5x5: about 0.3 s forward on one core.
    x = rng.standard_normal((4, 128, 64, 64))
    w = rng.standard_normal((128, 128, 5, 5))
    gy = rng.standard_normal((4, 128, 64, 64))
    if pass_ == "forward":

        def call():
            fastconv.conv2d(x, w, padding="same")
    else:

        def call():
            fastconv.conv2d_backward(gy, x, w, padding="same")

    with fastconv.threads(1):  # leave the other core to the ticker
        ticks, elapsed = ticks_during(call)
    possible = elapsed / TICK_S
    assert elapsed > 0.05, f"the call took only {elapsed:.3f} s: too short to show anything"
    assert ticks >= max(20, 0.2 * possible), f"{ticks} ticks in {elapsed:.3f} s: was the GIL held?"


def test_the_ticker_stops_during_a_call_that_holds_the_gil():
    # The contrast that makes the test above mean something: sum() over a
    # range runs in C without ever letting the ticker in.
    ticks, elapsed = ticks_during(lambda: sum(range(20_000_000)))
    assert elapsed > 0.05
    # A few ticks can land at the call's edges (more of them under a
    # sanitizer, where the call takes seconds, or on a loaded machine: once 4
    # in 0.38 s): at most 5, or 1% of the possible; a released GIL gives
    # hundreds (the test above asks for 20 % of the possible).
    assert ticks <= max(5, 0.01 * elapsed / TICK_S), f"{ticks} ticks in {elapsed:.3f} s while the GIL was held"


# -- one layer shared between threads ------------------------------------------


def test_a_layer_shared_between_threads_uses_the_last_forward_of_any_thread(rng):
    # Conv2D keeps the last forward's input for backward (layer._saved): a
    # forward() on another thread in between replaces it, so backward() returns
    # the gradient for that thread's input. This is why the class docstring
    # says: one layer per thread, or the stateless functional API.
    assert "not safe to share between threads" in " ".join(fastconv.Conv2D.__doc__.split())
    layer = fastconv.Conv2D(3, 3, in_channels=2, seed=0)
    x_a, x_b = rng.standard_normal((2, 2, 2, 7, 7)).astype(np.float32)
    gy = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    expected = {}
    for name, x in (("a", x_a), ("b", x_b)):
        layer.forward(x)
        expected[name] = layer.backward(gy)

    a_forwarded, b_forwarded = threading.Event(), threading.Event()
    got = {}

    def thread_a():
        layer.forward(x_a)
        a_forwarded.set()
        assert b_forwarded.wait(JOIN_TIMEOUT_S)
        got["a"] = layer.backward(gy)

    def thread_b():
        assert a_forwarded.wait(JOIN_TIMEOUT_S)
        layer.forward(x_b)
        b_forwarded.set()

    run_threads([thread_a, thread_b])
    grad_weight = got["a"][0]
    assert not np.array_equal(grad_weight, expected["a"][0])  # not the gradient for A's own input...
    assert np.array_equal(grad_weight, expected["b"][0])  # ...but the one for B's


def test_a_layer_shared_between_threads_can_refuse_a_backward(rng):
    # With different batch sizes the mix-up is caught instead: thread A's
    # grad_output no longer has the shape of the last forward's output.
    layer = fastconv.Conv2D(3, 3, in_channels=2, seed=0)
    a_forwarded, b_forwarded = threading.Event(), threading.Event()
    errors = []

    def thread_a():
        y = layer.forward(rng.standard_normal((2, 2, 7, 7)))
        a_forwarded.set()
        assert b_forwarded.wait(JOIN_TIMEOUT_S)
        with pytest.raises(ValueError, match="shape of the last forward's output") as info:
            layer.backward(np.ones_like(y))
        errors.append(info.value)

    def thread_b():
        assert a_forwarded.wait(JOIN_TIMEOUT_S)
        layer.forward(np.ones((5, 2, 7, 7), np.float32))
        b_forwarded.set()

    run_threads([thread_a, thread_b])
    assert len(errors) == 1
