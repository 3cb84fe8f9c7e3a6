"""examples/train_digits.py: a short run learns, and the plot and the command line work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_training_learns(example):
    history = example.train(epochs=3, seed=0, train_size=600, quiet=True)
    assert len(history["train_loss"]) == len(history["test_accuracy"]) == 3
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["test_accuracy"][-1] > 0.8  # chance is 0.1
    assert history["train_accuracy"][-1] > history["train_accuracy"][0]


def test_backward_matches_finite_differences(example):
    """The model's hand-written backward, in float64, along one random direction per layer."""
    rng = np.random.default_rng(0)
    model = example.DigitsCNN(seed=0, dtype=np.float64)
    x = rng.random((4, 1, 8, 8))
    labels = np.array([0, 3, 5, 9])

    def loss_of() -> float:
        return example.softmax_cross_entropy(model.forward(x), labels)[0]

    model.backward(example.softmax_cross_entropy(model.forward(x), labels)[1])
    for layer, name in model.parameters():
        value = getattr(layer, name).copy()
        direction = rng.standard_normal(value.shape)
        analytic = float((getattr(layer, f"grad_{name}") * direction).sum())
        eps = 1e-6
        setattr(layer, name, value + eps * direction)
        plus = loss_of()
        setattr(layer, name, value - eps * direction)
        minus = loss_of()
        setattr(layer, name, value)
        assert (plus - minus) / (2 * eps) == pytest.approx(analytic, rel=1e-5, abs=1e-8), (
            f"{type(layer).__name__}.{name}"
        )


def test_command_line_and_plot(example, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    assert example.main(["--epochs", "1", "--seed", "1", "--quiet", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "1 epochs" in out and "test accuracy" in out and str(plot) in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
