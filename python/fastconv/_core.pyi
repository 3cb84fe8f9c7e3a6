# Type stubs for the C++ extension (csrc/bindings.cpp). Private: use the
# functions of fastconv and fastconv.Conv2D instead.
from collections.abc import Sequence
from typing import Any, SupportsIndex, SupportsInt

import numpy as np

_Int = SupportsInt | SupportsIndex

def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: object,
    out: np.ndarray,
    stride: Sequence[_Int],
    padding: Sequence[_Int],
    dilation: Sequence[_Int],
    groups: _Int,
) -> None: ...
def backward_data(
    grad_y: np.ndarray,
    weight: np.ndarray,
    grad_x: np.ndarray,
    stride: Sequence[_Int],
    padding: Sequence[_Int],
    dilation: Sequence[_Int],
    groups: _Int,
) -> None: ...
def backward_weights(
    grad_y: np.ndarray,
    x: np.ndarray,
    grad_weight: np.ndarray,
    stride: Sequence[_Int],
    padding: Sequence[_Int],
    dilation: Sequence[_Int],
    groups: _Int,
) -> None: ...
def backward(
    grad_y: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    grad_x: np.ndarray | None,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray | None,
    stride: Sequence[_Int],
    padding: Sequence[_Int],
    dilation: Sequence[_Int],
    groups: _Int,
) -> None: ...
def backward_bias(grad_y: np.ndarray, grad_bias: np.ndarray) -> None: ...
def build_info() -> dict[str, Any]: ...
def isa() -> str: ...
def set_isa(name: str) -> None: ...
def supported_isas() -> list[str]: ...
def max_threads() -> int: ...
def set_num_threads(n: _Int) -> None: ...
def peak_gflops(
    float64: bool = False, iterations: _Int = 20000000, threads: _Int = 1, isa: str | None = None
) -> float: ...
def cpu_facts(isa: str | None = None, iterations: _Int = 20000000) -> dict[str, Any]: ...
