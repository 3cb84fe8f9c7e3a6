"""A PyTorch bridge: fastconv's kernels as an autograd ``Function`` and an ``nn.Module``.

``import fastconv`` never imports PyTorch; only ``import fastconv.torch`` does.

>>> import torch, fastconv.torch
>>> conv = fastconv.torch.Conv2d(4, 8, 3, stride=2, padding="same")
>>> conv(torch.randn(10, 4, 7, 7)).shape
torch.Size([10, 8, 4, 4])

Tensors on another device are copied to the CPU, where fastconv runs, and the
results are copied back. ``padding`` takes what ``torch.nn.Conv2d`` takes
("valid", "same", an int, an (h, w) pair) and more: "same" at any stride, with
TensorFlow's rule (the odd extra row/column at the bottom/right), and
asymmetric (top, bottom, left, right) amounts. Double backward is not supported.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from ._validation import Padding4, check_padding, check_padding_mode, int_pair, positive_int
from .functional import conv2d as _np_conv2d
from .functional import conv2d_backward as _np_conv2d_backward

__all__ = ["Conv2d", "Conv2dFunction", "conv2d"]

PaddingArg = str | int | tuple[int, ...]
_SUPPORTED = (torch.float32, torch.float64)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous CPU NumPy view of ``t`` (copied only if it must be)."""
    return t.detach().cpu().contiguous().numpy()


def _to_tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``a`` as a tensor on ``like``'s device (no copy on the CPU)."""
    return torch.from_numpy(a).to(like.device)


def _check_dtypes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    # fastconv would promote mixed dtypes; PyTorch refuses them, and so do we,
    # so that every gradient comes back in its own tensor's dtype.
    if x.dtype not in _SUPPORTED:
        raise TypeError(f"input must be float32 or float64, got {x.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but input has {x.dtype}: they must match")


class Conv2dFunction(torch.autograd.Function):
    """``fastconv.conv2d`` with ``fastconv.conv2d_backward`` as its derivative.

    ``Conv2dFunction.apply(x, weight, bias, stride, padding, dilation, groups[, padding_mode])``;
    ``bias`` may be None. Only the gradients autograd asks for are returned.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int | tuple[int, int],
        padding: PaddingArg,
        dilation: int | tuple[int, int],
        groups: int,
        padding_mode: str = "zeros",
    ) -> torch.Tensor:
        _check_dtypes(x, weight, bias)
        b = None if bias is None else _to_numpy(bias)
        y = _np_conv2d(_to_numpy(x), _to_numpy(weight), b, stride, padding, dilation, groups, padding_mode=padding_mode)
        # save_for_backward (rather than NumPy copies) lets autograd catch in-place changes.
        ctx.save_for_backward(x, weight)
        ctx.conv_args = (stride, padding, dilation, groups, padding_mode)  # type: ignore[attr-defined]
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return _to_tensor(y, x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # The NumPy gradients carry no graph: once_differentiable makes a second
        # backward through them fail, rather than silently give zeros.
        return once_differentiable(_gradients)(ctx, grad_output)


def _gradients(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Conv2dFunction's backward: the gradients autograd asked for, None for the rest."""
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    stride, padding, dilation, groups, padding_mode = ctx.conv_args
    # dL/dx and dL/db cost nothing unless asked for; dL/dw is always computed.
    grads = _np_conv2d_backward(
        _to_numpy(grad_output),
        _to_numpy(x),
        _to_numpy(weight),
        stride,
        padding,
        dilation,
        groups,
        bias=ctx.has_bias and need_b,
        need_input_grad=need_x,
        padding_mode=padding_mode,
    )
    grad_x = None if grads.input is None else _to_tensor(grads.input, x)
    grad_w = _to_tensor(grads.weight, weight) if need_w else None
    grad_b = None if grads.bias is None else _to_tensor(grads.bias, weight)
    return grad_x, grad_w, grad_b, None, None, None, None, None


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = "valid",
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Like ``torch.nn.functional.conv2d`` (plus ``padding_mode``), computed and
    differentiated by fastconv."""
    y: torch.Tensor = Conv2dFunction.apply(  # type: ignore[no-untyped-call]
        x, weight, bias, stride, padding, dilation, groups, padding_mode
    )
    return y


class Conv2d(torch.nn.Module):
    """A drop-in for ``torch.nn.Conv2d`` that runs on fastconv's kernels.

    Same arguments (``padding`` also takes "same" at any stride and
    (top, bottom, left, right); ``padding_mode`` is one of PyTorch's four),
    same parameters ``weight`` (out, in/groups, kh, kw) and ``bias``, same
    default initialisation and the same state_dict keys, so weights move
    between the two with ``load_state_dict``. ``dtype``: torch.float32 or
    torch.float64 (default: torch's default dtype).
    """

    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: PaddingArg = "valid",
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.stride = int_pair(stride, "stride")
        self.padding: str | Padding4 = check_padding(padding)
        self.dilation = int_pair(dilation, "dilation")
        self.groups = positive_int(groups, "groups")
        self.padding_mode = check_padding_mode(padding_mode)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and out_channels={self.out_channels}"
            )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _SUPPORTED:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        # Create weight, then bias, then initialise: nn.Conv2d's order, so that
        # under the same torch.manual_seed both draw identical values.
        self.weight = torch.nn.Parameter(torch.empty(shape, dtype=dtype))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(self.out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation: both uniform in +-1/sqrt(fan_in)."""
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()  # in/groups * kh * kw
            bound = 1 / math.sqrt(fan_in)
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.padding_mode
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s
