"""Central finite differences of L = sum(y * g) check both gradients in float64,
independently of PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv

CASES = [
    dict(stride=2, padding="same", dilation=1, groups=1, kernel=(3, 3)),
    dict(stride=(1, 2), padding="valid", dilation=(2, 1), groups=2, kernel=(2, 3)),
    dict(stride=3, padding="same", dilation=2, groups=4, kernel=(4, 4)),
]


def numeric_gradient(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        orig = a[i]
        a[i] = orig + eps
        plus = f()
        a[i] = orig - eps
        minus = f()
        a[i] = orig
        grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"s{c['stride']}-{c['padding']}-d{c['dilation']}-g{c['groups']}")
def test_gradients_match_finite_differences(backend, case):
    rng = np.random.default_rng(7)
    case = dict(case)
    kernel = case.pop("kernel")
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // case["groups"], *kernel))
    b = rng.standard_normal(4)
    y = fastconv.conv2d(x, w, b, backend=backend, **case)
    g = rng.standard_normal(y.shape)

    def loss() -> float:
        return float(np.sum(fastconv.conv2d(x, w, b, backend=backend, **case) * g))

    grads = fastconv.conv2d_backward(g, x, w, bias=True, backend=backend, **case)
    np.testing.assert_allclose(grads.input, numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.weight, numeric_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.bias, numeric_gradient(loss, b), rtol=1e-6, atol=1e-7)
