"""Train a small CNN on scikit-learn's 8x8 digits, every gradient written by hand.
===============================================================================

    Conv2D(1 -> 16, 3x3, "same") -> ReLU -> Conv2D(16 -> 32, 3x3, stride 2, "same") -> ReLU
    -> flatten (32 x 4 x 4 = 512) -> dense (512 -> 10) -> softmax cross-entropy

fastconv does the convolutions, forward and backward; NumPy does the rest. The
optimiser is SGD with momentum. The data (1797 images) ship with scikit-learn,
so nothing is downloaded. About a second of training reaches ~97-98% test accuracy.

    python examples/train_digits.py [--epochs 15] [--seed 0] [--plot digits_training.png] [--threads 1] [--quiet]

Needs: fastconv, numpy, scikit-learn; optional: tqdm (progress bar), matplotlib (plot).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

import fastconv

DTYPE = np.float32  # the model also runs in float64 (the tests check its gradients so)


# -- the layers that fastconv does not provide --------------------------------


class ReLU:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        # dL/dx = dL/dy where x > 0, else 0.
        return grad * self.mask


class Dense:
    """y = x @ W + b, initialised like PyTorch's Linear: uniform in +-1/sqrt(fan_in)."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, dtype: DTypeLike = DTYPE) -> None:
        bound = 1.0 / np.sqrt(n_in)
        self.weight = rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype)
        self.bias = rng.uniform(-bound, bound, n_out).astype(dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.weight + self.bias

    def backward(self, grad: np.ndarray) -> np.ndarray:
        self.grad_weight = self.x.T @ grad  # dL/dW: each input times each output's gradient, summed over the batch
        self.grad_bias = grad.sum(axis=0)  # dL/db: the bias is added to every sample
        return grad @ self.weight.T  # dL/dx: handed back to the layer below


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # same softmax, no overflow in exp
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_probs[np.arange(n), labels].mean()
    # dL/dlogits = (softmax - one_hot) / n: the famous simple form of this pair.
    grad = np.exp(log_probs)
    grad[np.arange(n), labels] -= 1.0
    return float(loss), grad / n


# -- the model ----------------------------------------------------------------


class DigitsCNN:
    def __init__(self, seed: int, dtype: DTypeLike = DTYPE) -> None:
        rng = np.random.default_rng(seed)
        seeds = [int(s) for s in rng.integers(2**31, size=2)]
        self.conv1 = fastconv.Conv2D(16, 3, padding="same", in_channels=1, dtype=dtype, seed=seeds[0])
        self.relu1 = ReLU()
        self.conv2 = fastconv.Conv2D(32, 3, stride=2, padding="same", in_channels=16, dtype=dtype, seed=seeds[1])
        self.relu2 = ReLU()
        self.dense = Dense(32 * 4 * 4, 10, rng, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Images (N, 1, 8, 8) -> logits (N, 10)."""
        h = self.relu1.forward(self.conv1.forward(x))  # (N, 16, 8, 8)
        h = self.relu2.forward(self.conv2.forward(h))  # (N, 32, 4, 4)
        self.conv_shape = h.shape
        return self.dense.forward(h.reshape(len(h), -1))  # (N, 10)

    def backward(self, grad_logits: np.ndarray) -> None:
        """Backpropagate dL/dlogits; leaves every layer's parameter gradients on it."""
        grad = self.dense.backward(grad_logits).reshape(self.conv_shape)  # dL/d(relu2 output)
        grad = self.relu2.backward(grad)  # dL/d(conv2 output)
        # Conv2D.backward returns (dL/dF, dL/dX) and keeps dL/dF and dL/db on the layer.
        _, grad_h1 = self.conv2.backward(grad)
        assert grad_h1 is not None  # dL/dX is computed unless need_input_grad=False
        grad = self.relu1.backward(grad_h1)
        # Nothing learns the images: skip dL/dX (and its cost), keep conv1's dL/dF, dL/db.
        self.conv1.backward(grad, need_input_grad=False)

    def parameters(self) -> list[tuple[Any, str]]:
        """(layer, name) of every parameter; its gradient is ``layer.grad_<name>``."""
        return [(layer, name) for layer in (self.conv1, self.conv2, self.dense) for name in ("weight", "bias")]


class SGDMomentum:
    """PyTorch's SGD with momentum: v <- momentum * v + grad;  p <- p - lr * v."""

    def __init__(self, params: list[tuple[Any, str]], lr: float, momentum: float) -> None:
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.velocity = [np.zeros_like(getattr(layer, name)) for layer, name in params]

    def step(self) -> None:
        for (layer, name), v in zip(self.params, self.velocity):
            v *= self.momentum
            v += getattr(layer, f"grad_{name}")
            # Assign, not update in place: Conv2D's weight/bias setters check the new value.
            setattr(layer, name, getattr(layer, name) - self.lr * v)


# -- data, training, reporting -------------------------------------------------


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (N, 1, 8, 8) images scaled to [0, 1]; a stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(DTYPE)[:, np.newaxis]  # pixel values are 0..16
    return train_test_split(images, digits.target, test_size=0.25, stratify=digits.target, random_state=seed)


class Progress:
    """A tqdm bar over the epochs if tqdm is installed, else one printed line per epoch."""

    def __init__(self, epochs: int, quiet: bool) -> None:
        self.epochs = epochs
        self.quiet = quiet
        self.bar = None
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=epochs, unit="epoch")
            except ImportError:
                pass

    def update(self, epoch: int, loss: float, test_acc: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", test_acc=f"{test_acc:.1%}")
            self.bar.update()
        elif not self.quiet:
            print(f"epoch {epoch:3d}/{self.epochs}  loss {loss:.4f}  test accuracy {test_acc:.1%}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def accuracy(model: DigitsCNN, images: np.ndarray, labels: np.ndarray) -> float:
    return float((model.forward(images).argmax(axis=1) == labels).mean())


def train(
    epochs: int = 15,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    train_size: int | None = None,
    threads: int | None = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train from scratch; returns the history: per-epoch ``train_loss``,
    ``train_accuracy``, ``test_accuracy`` lists, and ``seconds`` in all.

    ``train_size`` keeps only the first that many training images (for quick runs).
    ``threads`` caps the OpenMP (fastconv) and BLAS (NumPy) threads; None leaves them be.
    """
    from threadpoolctl import threadpool_limits  # comes with scikit-learn

    x_train, x_test, y_train, y_test = load_data(seed)
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    model = DigitsCNN(seed)
    optimiser = SGDMomentum(model.parameters(), lr, momentum)
    rng = np.random.default_rng(seed)
    history: dict[str, Any] = {"train_loss": [], "train_accuracy": [], "test_accuracy": []}

    progress = Progress(epochs, quiet)
    start = time.perf_counter()
    # A batch of 32 8x8 images is far too little work to share out: on a small
    # or busy machine fastconv's OpenMP threads and NumPy's BLAS threads wait on
    # each other, and a run can take 20x longer. One thread is fast and steady.
    with threadpool_limits(limits=threads):
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(x_train))
            loss_sum, correct = 0.0, 0
            for i in range(0, len(order), batch_size):
                batch = order[i : i + batch_size]
                logits = model.forward(x_train[batch])
                loss, grad_logits = softmax_cross_entropy(logits, y_train[batch])
                model.backward(grad_logits)
                optimiser.step()
                loss_sum += loss * len(batch)
                correct += int((logits.argmax(axis=1) == y_train[batch]).sum())
            history["train_loss"].append(loss_sum / len(order))
            history["train_accuracy"].append(correct / len(order))
            history["test_accuracy"].append(accuracy(model, x_test, y_test))
            progress.update(epoch, history["train_loss"][-1], history["test_accuracy"][-1])
    progress.close()
    history["seconds"] = time.perf_counter() - start
    return history


def plot_history(history: dict[str, Any], path: str) -> bool:
    """Save loss and accuracy per epoch as a PNG; False (with a message) without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    epochs = range(1, len(history["train_loss"]) + 1)
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, history["train_loss"], marker="o")
    ax_loss.set(title="training loss (cross-entropy)", xlabel="epoch", yscale="log")
    ax_acc.plot(epochs, history["train_accuracy"], marker="o", label="train")
    ax_acc.plot(epochs, history["test_accuracy"], marker="o", label="test")
    lowest = min(0.8, *history["train_accuracy"], *history["test_accuracy"])
    ax_acc.set(title="accuracy", xlabel="epoch", ylim=(lowest - 0.02, 1.005))
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="digits_training.png", help="PNG file for the loss/accuracy plot")
    parser.add_argument("--threads", type=int, default=1, help="0: as many as fastconv and NumPy like")
    parser.add_argument("--quiet", action="store_true", help="no progress, only the result")
    args = parser.parse_args(argv)

    history = train(epochs=args.epochs, seed=args.seed, threads=args.threads or None, quiet=args.quiet)
    print(
        f"{args.epochs} epochs in {history['seconds']:.1f} s: final loss {history['train_loss'][-1]:.4f}, "
        f"test accuracy {history['test_accuracy'][-1]:.1%}"
    )
    if plot_history(history, args.plot):
        print(f"plot saved to {args.plot}")
    return 0


if __name__ == "__main__":
    # SystemExit only on failure: sphinx-gallery runs this file as __main__ in the docs build, where it
    # would end the build.
    status = main()
    if status:
        raise SystemExit(status)
