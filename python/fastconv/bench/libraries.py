"""The three libraries, each as callables per pass on the same arrays:
fastconv's C++ core, PyTorch (the referee) and fastconv's NumPy reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import functional, reference
from .._spec import ConvSpec
from .config import Config
from .machine import loaded_core
from .suite import Shape

Outputs = tuple[Any, ...]  # arrays (or torch tensors) a pass returns
PassFns = dict[str, Callable[[], Outputs]]

REFERENCE_MAX_FLOPS = 100e6  # the NumPy reference is timed only below this forward FLOP count


def import_torch() -> Any:
    """PyTorch if installed (imported here, never by `import fastconv`), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass(frozen=True)
class Case:
    """One shape's arrays in one dtype: the same numbers go to every library."""

    shape: Shape
    geom: ConvSpec
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    grad_y: np.ndarray


def make_case(shape: Shape, dtype: str) -> Case:
    """Standard-normal input, weight, bias and output gradient, the same on every run."""
    rng = np.random.default_rng(0)
    geom = shape.geometry()
    return Case(
        shape,
        geom,
        rng.standard_normal((shape.n, shape.c, shape.h, shape.w)).astype(dtype),
        rng.standard_normal(shape.weight_shape()).astype(dtype),
        rng.standard_normal(shape.k).astype(dtype),
        rng.standard_normal((shape.n, shape.k, *geom.out_hw)).astype(dtype),
    )


def fastconv_passes(case: Case) -> PassFns:
    """The public API (what users call) for forward/backward; the C++ core
    directly, into preallocated outputs, for the backward parts."""
    s, g, core = case.shape, case.geom, loaded_core()
    api = (s.stride, s.padding, s.dilation, s.groups)
    geometry = (g.stride, g.padding, g.dilation, g.groups)
    grad_x, grad_w, grad_b = np.empty_like(case.x), np.empty_like(case.w), np.empty_like(case.b)

    def data() -> Outputs:
        core.backward_data(case.grad_y, case.w, grad_x, *geometry)
        return (grad_x,)

    def weights() -> Outputs:
        core.backward_weights(case.grad_y, case.x, grad_w, *geometry)
        return (grad_w,)

    def bias() -> Outputs:
        core.backward_bias(case.grad_y, grad_b)
        return (grad_b,)

    return {
        "forward": lambda: (functional.conv2d(case.x, case.w, case.b, *api, backend="cpp"),),
        "backward": lambda: tuple(functional.conv2d_backward(case.grad_y, case.x, case.w, *api, backend="cpp")),
        "backward_data": data,
        "backward_weights": weights,
        "backward_bias": bias,
    }


def torch_passes(case: Case, torch: Any) -> PassFns:
    """PyTorch with fastconv's padding: native padding when it is symmetric
    (the best a PyTorch user can do), else F.pad's asymmetric pads then
    padding 0. Backward is aten.convolution_backward, what autograd itself
    calls, on the input the forward saved: the forward is not in its time."""
    import torch.nn.functional as F

    top, bottom, left, right = case.geom.padding
    symmetric = top == bottom and left == right
    conv_pad = [top, left] if symmetric else [0, 0]
    s = case.shape
    x, w, b, grad_y = (torch.from_numpy(a) for a in (case.x, case.w, case.b, case.grad_y))

    def padded(t: Any) -> Any:
        return t if symmetric else F.pad(t, (left, right, top, bottom))

    saved_x = padded(x)

    def backward(mask: list[bool]) -> Callable[[], Outputs]:
        def run() -> Outputs:
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_y, saved_x, w, [s.k], [s.stride] * 2, conv_pad, [s.dilation] * 2, False, [0, 0], s.groups, mask
            )
            if mask[0] and not symmetric:  # the padding is not an input: drop its gradient
                gx = gx[:, :, top : top + s.h, left : left + s.w]
            return tuple(t for t, wanted in zip((gx, gw, gb), mask) if wanted)

        return run

    return {
        "forward": lambda: (F.conv2d(padded(x), w, b, s.stride, conv_pad, s.dilation, s.groups),),
        "backward": backward([True, True, True]),
        "backward_data": backward([True, False, False]),
        "backward_weights": backward([False, True, False]),
        # convolution_backward asked for dL/db alone computes dL/dF too (oneDNN
        # path); a PyTorch user wanting only dL/db would sum, as this does.
        "backward_bias": lambda: (grad_y.sum((0, 2, 3)),),
    }


def reference_passes(case: Case) -> PassFns:
    """fastconv's NumPy reference: the public API with backend="numpy", and its parts."""
    s, g = case.shape, case.geom
    api = (s.stride, s.padding, s.dilation, s.groups)
    geometry = (g.stride, g.padding, g.dilation, g.groups)
    return {
        "forward": lambda: (functional.conv2d(case.x, case.w, case.b, *api, backend="numpy"),),
        "backward": lambda: tuple(functional.conv2d_backward(case.grad_y, case.x, case.w, *api, backend="numpy")),
        "backward_data": lambda: (reference.conv2d_grad_input(case.grad_y, case.w, case.x.shape[2:], *geometry),),
        "backward_weights": lambda: (reference.conv2d_grad_weight(case.grad_y, case.x, s.kernel_hw, *geometry),),
        "backward_bias": lambda: (reference.conv2d_grad_bias(case.grad_y),),
    }


def library_names(shape: Shape, torch: Any, cfg: Config) -> list[str]:
    """The libraries that run a shape: the (slow) reference only on small ones unless --reference."""
    names = ["fastconv"]
    if torch is not None:
        names.append("torch")
    if cfg.reference_all or shape.flops("forward") <= REFERENCE_MAX_FLOPS:
        names.append("numpy")
    return names


def library_passes(case: Case, torch: Any, cfg: Config) -> dict[str, PassFns]:
    """Each library's callables for this case, built on the case's own arrays."""
    builders = {"fastconv": fastconv_passes, "torch": lambda c: torch_passes(c, torch), "numpy": reference_passes}
    return {name: builders[name](case) for name in library_names(case.shape, torch, cfg)}
