"""A tour of fastconv's public API, fully annotated: `mypy --strict` checks it
in the test suite, so the package's types stay usable from typed code."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import fastconv


def main() -> None:
    rng = np.random.default_rng(0)
    x: npt.NDArray[np.float32] = rng.standard_normal((10, 4, 7, 7)).astype(np.float32)

    layer = fastconv.Conv2D(8, 3, stride=2, padding="same", seed=0)
    y: np.ndarray = layer.forward(x)
    grad_weight, grad_input = layer.backward(np.ones_like(y))
    assert grad_input is not None
    print(layer, y.shape, grad_weight.shape, grad_input.shape)

    weight = layer.weight
    assert weight is not None
    grads: fastconv.ConvGradients = fastconv.conv2d_backward(
        np.ones_like(y), x, weight, stride=2, padding="same", need_input_grad=False
    )
    print(grads.weight.shape, grads.input)

    explicit = fastconv.Conv2D(4, (3, 2), padding=(0, 1, 1, 0), padding_mode="reflect", in_channels=4)
    pads: tuple[int, int, int, int] = explicit.padding_for(x.shape)
    state: dict[str, np.ndarray] = explicit.state_dict()
    explicit.load_state_dict(state)
    print(pads, fastconv.conv2d(x, state["weight"], padding=(0, 1, 1, 0)).shape)

    with fastconv.threads(1):
        threads: int = fastconv.get_num_threads()
    print(threads)


if __name__ == "__main__":
    main()
