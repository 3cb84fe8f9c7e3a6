"""The cache of checked calls: a repeat skips the checks, never changes a
result, and never lets through an argument that the checks refuse."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import fastconv
from fastconv import _call_cache, _memory, reference

pytestmark = pytest.mark.skipif(fastconv._backend.core is None, reason="the cache serves the C++ core only")

CASES = [  # (x shape, weight shape, stride, padding, dilation, groups)
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, "same", 1, 1),
    ((1, 4, 9, 9), (6, 2, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 2),
    ((3, 8, 5, 5), (8, 1, 3, 3), 2, "valid", 1, 8),
    ((2, 16, 6, 6), (8, 16, 1, 1), 1, 0, 1, 1),
]


@pytest.fixture(autouse=True)
def empty_cache():
    _call_cache._checked.clear()
    yield
    _call_cache._checked.clear()


def arrays(x_shape, w_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    return x, w, rng.standard_normal(w_shape[0]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_a_repeated_call_is_served_from_the_cache_with_the_same_results(case, dtype):
    x_shape, w_shape, stride, padding, dilation, groups = case
    x, w, b = arrays(x_shape, w_shape, dtype)
    hyper = (stride, padding, dilation, groups)
    y = fastconv.conv2d(x, w, b, *hyper)
    assert len(_call_cache._checked) == 1  # the first call, checked, was remembered
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    grads = fastconv.conv2d_backward(gy, x, w, *hyper)
    assert len(_call_cache._checked) == 2
    assert_close(y, fastconv.conv2d(x, w, b, *hyper, backend="numpy"), "forward")

    # New arrays of the same shapes: the cached signature, fresh values.
    x2, w2, b2 = arrays(x_shape, w_shape, dtype, seed=5)
    gy2 = np.random.default_rng(6).standard_normal(y.shape).astype(dtype)
    cached_y = fastconv.conv2d(x2, w2, b2, *hyper)
    cached = fastconv.conv2d_backward(gy2, x2, w2, *hyper)
    assert len(_call_cache._checked) == 2  # no new signature
    _call_cache._checked.clear()  # the same calls, checked again
    np.testing.assert_array_equal(cached_y, fastconv.conv2d(x2, w2, b2, *hyper))
    for got, want in zip(cached, fastconv.conv2d_backward(gy2, x2, w2, *hyper)):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(cached_y, y)  # the cache keeps no result
    np.testing.assert_array_equal(grads.weight, fastconv.conv2d_backward(gy, x, w, *hyper).weight)


def test_flags_and_missing_bias_are_part_of_the_signature():
    x, w, b = arrays((2, 3, 6, 6), (4, 3, 3, 3), np.float32)
    assert fastconv.conv2d(x, w, b).shape == (2, 4, 4, 4)
    y = fastconv.conv2d(x, w)  # no bias: another signature
    np.testing.assert_array_equal(y, fastconv.conv2d(x, w, np.zeros(4, np.float32)))
    gy = np.ones_like(y)
    for _ in range(2):  # the second round from the cache
        assert fastconv.conv2d_backward(gy, x, w, bias=False).bias is None
        assert fastconv.conv2d_backward(gy, x, w, need_input_grad=False).input is None
        full = fastconv.conv2d_backward(gy, x, w)
        assert full.input.shape == x.shape and full.bias.shape == (4,)
    assert len(_call_cache._checked) == 5


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ({"stride": True}, TypeError, "stride must be a positive integer"),
        ({"stride": 1.0}, TypeError, "stride must be a positive integer"),
        ({"stride": (1.0, 1)}, TypeError, r"stride\[0\] must be a positive integer"),
        ({"dilation": (True, 1)}, TypeError, r"dilation\[0\] must be a positive integer"),
        ({"groups": 1.0}, TypeError, "groups must be a positive integer"),
        ({"padding": (False, 0)}, TypeError, "padding h must be a non-negative integer"),
        ({"padding": 0.0}, TypeError, "padding must be"),
    ],
)
def test_a_cached_signature_never_lets_an_equal_but_invalid_argument_through(bad, error, message):
    x, w, b = arrays((1, 2, 5, 5), (3, 2, 3, 3), np.float64)
    good = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    # padding=0 and (0, 0) are equal to the bad values above, as 1 is to True.
    y = fastconv.conv2d(x, w, b, **good)
    fastconv.conv2d_backward(np.ones_like(y), x, w, **good)
    for p in ("padding",):
        fastconv.conv2d(x, w, b, **{**good, p: (0, 0)})
        fastconv.conv2d_backward(np.ones_like(y), x, w, **{**good, p: (0, 0)})
    with pytest.raises(error, match=message):
        fastconv.conv2d(x, w, b, **{**good, **bad})
    with pytest.raises(error, match=message):
        fastconv.conv2d_backward(np.ones_like(y), x, w, **{**good, **bad})


def test_a_cached_signature_still_checks_flags_and_arrays():
    x, w, _ = arrays((1, 2, 5, 5), (3, 2, 3, 3), np.float32)
    gy = np.ones((1, 3, 3, 3), np.float32)
    fastconv.conv2d(x, w)
    fastconv.conv2d_backward(gy, x, w)
    with pytest.raises(TypeError, match="bias must be True or False, got 1"):
        fastconv.conv2d_backward(gy, x, w, bias=1)
    with pytest.raises(TypeError, match="need_input_grad must be True or False, got 1"):
        fastconv.conv2d_backward(gy, x, w, need_input_grad=1)
    masked = np.ma.masked_array(x, mask=np.zeros(x.shape, bool))
    masked.mask[0, 0, 0, 0] = True
    with pytest.raises(ValueError, match="masked array with 1 masked values"):
        fastconv.conv2d(masked, w)
    # Arrays the checks convert: the same results as plain copies, never an error from the core.
    want = fastconv.conv2d(x, w)
    fortran = np.asfortranarray(x)
    read_only = x.copy()
    read_only.flags.writeable = False
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float32, offset=1).reshape(x.shape)
    assert not unaligned.flags.aligned
    for other in (fortran, read_only, unaligned, x[:, :, ::1]):
        np.testing.assert_array_equal(fastconv.conv2d(other, w), want)
    half = x.astype(np.float16)
    np.testing.assert_array_equal(fastconv.conv2d(half, w), fastconv.conv2d(half.astype(np.float32), w))
    # Arrays all of another dtype, of the cached shapes: converted, or refused.
    all_half = fastconv.conv2d(half, w.astype(np.float16))
    assert all_half.dtype == np.float32
    np.testing.assert_array_equal(
        all_half, fastconv.conv2d(half.astype(np.float32), w.astype(np.float16).astype(np.float32))
    )
    grads = fastconv.conv2d_backward(gy.astype(np.float16), half, w.astype(np.float16))
    assert grads.weight.dtype == np.float32
    with pytest.raises(TypeError, match="input must hold floating-point numbers"):
        fastconv.conv2d(x.astype(np.int32), w.astype(np.int32))
    want_w = fastconv.conv2d_backward(gy, x, w).weight
    for other in (fortran, read_only, unaligned):
        np.testing.assert_array_equal(fastconv.conv2d_backward(gy, other, w).weight, want_w)
    # Mixed dtypes are promoted to float64, as on a first call.
    assert fastconv.conv2d(x, w.astype(np.float64)).dtype == np.float64
    assert fastconv.conv2d_backward(gy, x.astype(np.float64), w).weight.dtype == np.float64


def test_calls_that_convert_or_run_the_reference_are_not_cached(monkeypatch):
    x, w, _ = arrays((1, 2, 5, 5), (3, 2, 3, 3), np.float64)
    gy = np.ones((1, 3, 5, 5))
    fastconv.conv2d(x[0], w, padding="same")  # unbatched
    fastconv.conv2d(x.transpose(0, 2, 3, 1).copy(), w, padding="same", data_format="NHWC")
    fastconv.conv2d(x, w, padding="same", padding_mode="reflect")
    fastconv.conv2d_backward(gy, x, w, padding="same", padding_mode="circular")
    fastconv.conv2d(x, w, padding="same", backend="numpy")
    fastconv.conv2d_backward(gy, x, w, padding="same", backend="numpy")
    assert not _call_cache._checked
    # The reference still runs on a repeat of a call that names it.
    calls = []
    monkeypatch.setattr(reference, "conv2d", lambda *a, **k: calls.append(1) or np.zeros((1, 3, 5, 5)))
    fastconv.conv2d(x, w, padding="same", backend="numpy")
    assert calls == [1]


def test_calls_big_enough_for_the_memory_check_are_checked_every_time(monkeypatch):
    monkeypatch.setattr(_memory, "CHECK_ABOVE", 0)
    checked = []
    monkeypatch.setattr(_memory, "available_bytes", lambda: checked.append(1) or 2**40)
    x, w, _ = arrays((1, 2, 5, 5), (3, 2, 3, 3), np.float32)
    for _ in range(3):
        y = fastconv.conv2d(x, w)
        fastconv.conv2d_backward(np.ones_like(y), x, w)
    assert len(checked) == 6 and not _call_cache._checked


def test_the_cache_stays_bounded():
    w = np.ones((1, 1, 1, 1), np.float32)
    for width in range(1, _call_cache.SIZE + 20):
        fastconv.conv2d(np.ones((1, 1, 1, width), np.float32), w)
        assert len(_call_cache._checked) <= _call_cache.SIZE
