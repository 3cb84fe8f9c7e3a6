"""``Conv2D``: a stateful layer over the functional API, with weights and a
``backward`` that returns (dL/dF, dL/dX)."""

from __future__ import annotations

import math
import sys
from os import PathLike
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _backend, _weights_io
from ._spec import ConvSpec, conv_spec, input_nchw
from ._validation import (
    as_float_array,
    as_float_input,
    check_data_format,
    check_dtype,
    check_flag,
    check_padding,
    check_padding_mode,
    int_pair,
    non_negative_int,
    positive_int,
    shown,
)


def _fan_in(in_channels: int, groups: int, kernel: tuple[int, int]) -> int:
    """Inputs that feed one output value: the scale of PyTorch's default init."""
    return in_channels // groups * math.prod(kernel)


def _is_dask_array(x: Any) -> bool:
    """Whether `x` is a Dask array, without importing Dask (none exists unless it was imported)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(x, dask_array.Array)


class Conv2D:
    """A 2-D convolution layer with hand-written forward and backward passes.

    Parameters
    ----------
    filters : int
        Number of filters (output channels).
    kernel_size, stride : int or (int, int)
    padding : "valid", "same", int, (h, w) or (top, bottom, left, right)
        "same" follows TensorFlow/Keras at every stride: output size
        ceil(H / stride), the odd extra row/column padded at the bottom/right.
        An int pads all sides, (h, w) top/bottom and left/right, and the
        4-tuple each side on its own (which PyTorch's Conv2d cannot do).
    dilation : int or (int, int)
    groups : int
        Must divide ``in_channels`` and ``filters``.
    bias : bool
        Whether the layer adds a learnable bias.
    padding_mode : "zeros", "reflect", "replicate" or "circular"
        What the padding holds, with PyTorch's meaning (gradients included).
    data_format : "NCHW" or "NHWC"
        Layout of inputs, outputs and their gradients: channels first
        (PyTorch's) or channels last (Keras'). Weights stay OIHW.
    in_channels : int, optional
        If None, taken from the first input, when the weights are created.
    dtype : "float32" or "float64"
        Dtype of the weights and of every result; floating inputs are cast to it.
    backend : "auto", "cpp" or "numpy"
    seed : int, optional
        Seed for the default initialisation (PyTorch's: uniform in
        +-1/sqrt(fan_in) for weights and bias).

    Notes
    -----
    A layer is not safe to share between threads: ``forward`` keeps its input
    on the layer for the next ``backward`` (which stores ``grad_weight`` and
    ``grad_bias`` there too), so a ``forward`` on another thread in between
    makes ``backward`` use that thread's input. Use one layer per thread, or
    the stateless ``conv2d`` and ``conv2d_backward``, which may share weights.
    Calls on different threads do run at once: the C++ core releases the GIL.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> layer = fastconv.Conv2D(8, 3, stride=2, padding="same", seed=0)
    >>> y = layer.forward(np.ones((10, 4, 7, 7), dtype=np.float32))
    >>> y.shape
    (10, 8, 4, 4)
    >>> grad_weight, grad_input = layer.backward(np.ones_like(y))
    >>> grad_weight.shape, grad_input.shape
    ((8, 4, 3, 3), (10, 4, 7, 7))
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, ...] = "valid",
        *,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        data_format: str = "NCHW",
        in_channels: int | None = None,
        dtype: DTypeLike = "float32",
        backend: str = "auto",
        seed: int | None = None,
    ) -> None:
        self.filters = positive_int(filters, "filters")
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.stride = int_pair(stride, "stride")
        self.padding = check_padding(padding)
        self.padding_mode = check_padding_mode(padding_mode)
        self.data_format = check_data_format(data_format)
        self.dilation = int_pair(dilation, "dilation")
        self.groups = positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(f"groups={self.groups} must divide filters={self.filters}")
        self.dtype = check_dtype(dtype)
        self.backend = _backend.check_backend(backend)
        self.use_bias = check_flag(bias, "bias")
        self._rng = np.random.default_rng(seed)
        self.in_channels: int | None = None
        self._weight: np.ndarray | None = None
        self._bias: np.ndarray | None = None
        # For backward: the input as the kernels saw it (padded in padding_mode
        # if not zeros) and the call's spec.
        self._saved: tuple[np.ndarray, ConvSpec] | None = None
        self._saved_dask: Any = None  # the last forward's input, when that was a Dask array
        self.grad_weight: np.ndarray | None = None
        self.grad_bias: np.ndarray | None = None
        if in_channels is not None:
            self._create_weights(positive_int(in_channels, "in_channels"))

    # -- weights -----------------------------------------------------------------

    def _check_in_channels(self, in_channels: int) -> None:
        if in_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={in_channels}")

    def _create_weights(self, in_channels: int) -> None:
        self._check_in_channels(in_channels)
        self.in_channels = in_channels
        bound = 1.0 / math.sqrt(_fan_in(in_channels, self.groups, self.kernel_size))
        self._weight = self._rng.uniform(-bound, bound, self._weight_shape()).astype(self.dtype)
        if self.use_bias:
            self._bias = self._rng.uniform(-bound, bound, self.filters).astype(self.dtype)

    def _weight_shape(self) -> tuple[int, int, int, int]:
        assert self.in_channels is not None
        return (self.filters, self.in_channels // self.groups, *self.kernel_size)

    @property
    def weight(self) -> np.ndarray | None:
        """Filters, shape (filters, in_channels // groups, kh, kw); None until created."""
        return self._weight

    @weight.setter
    def weight(self, value: ArrayLike) -> None:
        w = as_float_array(value, "weight", self.dtype)
        if self.in_channels is None:
            if w.ndim != 4 or w.shape[0] != self.filters or w.shape[2:] != self.kernel_size or w.shape[1] < 1:
                raise ValueError(
                    f"weight must have shape ({self.filters}, in_channels // {self.groups}, "
                    f"{self.kernel_size[0]}, {self.kernel_size[1]}), got {w.shape}"
                )
            in_channels = w.shape[1] * self.groups
            self._check_in_channels(in_channels)
            self.in_channels = in_channels
            if self.use_bias and self._bias is None:
                bound = 1.0 / math.sqrt(_fan_in(in_channels, self.groups, self.kernel_size))
                self._bias = self._rng.uniform(-bound, bound, self.filters).astype(self.dtype)
        elif w.shape != self._weight_shape():
            raise ValueError(f"weight must have shape {self._weight_shape()}, got {w.shape}")
        self._weight = w.copy()  # the layer owns its weights

    @property
    def bias(self) -> np.ndarray | None:
        """Bias, shape (filters,); None without bias or before the weights exist."""
        return self._bias

    @bias.setter
    def bias(self, value: ArrayLike | None) -> None:
        if value is None:
            self.use_bias = False
            self._bias = None
            return
        b = as_float_array(value, "bias", self.dtype)
        if b.shape != (self.filters,):
            raise ValueError(f"bias must have shape ({self.filters},), got {b.shape}")
        self.use_bias = True
        self._bias = b.copy()

    # -- weights in and out ------------------------------------------------------

    def _require_weights(self) -> np.ndarray:
        if self._weight is None:
            raise RuntimeError("the layer has no weights yet: give in_channels or run forward() first")
        return self._weight

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the weights, as PyTorch names them: "weight" and, with a bias, "bias"."""
        state = {"weight": self._require_weights().copy()}
        if self._bias is not None:
            state["bias"] = self._bias.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the weights from a state_dict(); keys and shapes must match exactly."""
        expected = {"weight", "bias"} if self.use_bias else {"weight"}
        if not isinstance(state, dict) or set(state) != expected:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state must have the keys {sorted(expected)}, got {got}")
        self.weight = state["weight"]
        if self.use_bias:
            self.bias = state["bias"]

    def _config(self) -> dict[str, Any]:
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": padding,
            "padding_mode": self.padding_mode,
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self._bias is not None,
            "in_channels": self.in_channels,
            "dtype": self.dtype.name,
            "data_format": self.data_format,
        }

    def save(self, path: str | PathLike[str]) -> None:
        """Write the configuration and weights to an .npz file (no pickle inside)."""
        self._require_weights()
        _weights_io.save(path, self._config(), self.state_dict())

    @classmethod
    def load(cls, path: str | PathLike[str], *, backend: str = "auto") -> Conv2D:
        """The layer saved at `path`. A wrong or corrupt file raises ValueError."""
        config, arrays = _weights_io.load(path)
        try:
            for key in ("kernel_size", "stride", "dilation"):
                config[key] = tuple(config[key])
            if not isinstance(config["padding"], str):
                config["padding"] = tuple(config["padding"])
            layer = cls(**config, backend=backend)
            layer.load_state_dict(arrays)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: inconsistent layer file ({exc})") from exc
        return layer

    @classmethod
    def from_torch(cls, module: Any, *, backend: str = "auto") -> Conv2D:
        """A layer with the configuration and a copy of the weights of a torch.nn.Conv2d."""
        import torch

        if not isinstance(module, torch.nn.Conv2d):
            raise TypeError(f"expected a torch.nn.Conv2d, got {type(module).__name__}")
        dtypes = {torch.float32: "float32", torch.float64: "float64"}
        if module.weight.dtype not in dtypes:
            raise TypeError(f"weights must be float32 or float64, got {module.weight.dtype}")

        def pair(value: Any) -> tuple[int, int]:
            return int(value[0]), int(value[1])

        padding = module.padding if isinstance(module.padding, str) else pair(module.padding)
        layer = cls(
            module.out_channels,
            pair(module.kernel_size),
            pair(module.stride),
            padding,
            dilation=pair(module.dilation),
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            in_channels=module.in_channels,
            dtype=dtypes[module.weight.dtype],
            backend=backend,
        )
        state = {"weight": module.weight.detach().cpu().numpy()}
        if module.bias is not None:
            state["bias"] = module.bias.detach().cpu().numpy()
        layer.load_state_dict(state)
        return layer

    def to_torch(self) -> Any:
        """A torch.nn.Conv2d with this configuration and a copy of the weights.

        PyTorch's padding is symmetric and its "same" refuses stride > 1, so
        asymmetric padding (a 4-tuple, or "same" at stride > 1) has no
        equivalent there and raises ValueError.
        """
        import torch

        weight = self._require_weights()
        padding: Any = self.padding
        if padding == "same" and self.stride != (1, 1):
            raise ValueError('PyTorch\'s Conv2d has no "same" padding at stride > 1; pad with padding_for() and F.pad')
        if isinstance(padding, tuple):
            top, bottom, left, right = padding
            if top != bottom or left != right:
                raise ValueError(f"PyTorch's Conv2d pads symmetrically; padding {padding} is not")
            padding = (top, left)
        conv = torch.nn.Conv2d(
            weight.shape[1] * self.groups,
            self.filters,
            self.kernel_size,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            self._bias is not None,
            cast(Any, self.padding_mode),
            dtype=getattr(torch, self.dtype.name),
        )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            if self._bias is not None:
                assert conv.bias is not None
                conv.bias.copy_(torch.from_numpy(self._bias))
        return conv

    @classmethod
    def from_keras(
        cls,
        kernel: ArrayLike,
        bias: ArrayLike | None = None,
        *,
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        dilation_rate: int | tuple[int, int] = 1,
        groups: int = 1,
        dtype: DTypeLike = "float32",
        data_format: str = "NHWC",
        backend: str = "auto",
    ) -> Conv2D:
        """A layer from Keras Conv2D weights: `kernel` in Keras' HWIO layout
        (kh, kw, in_channels / groups, filters) and `bias` (filters,). Data is
        channels last, as in Keras, unless `data_format` says otherwise."""
        hwio = as_float_array(kernel, "kernel", check_dtype(dtype))
        if hwio.ndim != 4:
            raise ValueError(f"kernel must have shape (kh, kw, in_channels / groups, filters), got {hwio.shape}")
        layer = cls(
            hwio.shape[3],
            hwio.shape[:2],
            strides,
            padding,
            dilation=dilation_rate,
            groups=groups,
            bias=bias is not None,
            dtype=dtype,
            data_format=data_format,
            backend=backend,
        )
        layer.weight = hwio.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if bias is not None:
            layer.bias = bias
        return layer

    def keras_weights(self) -> list[np.ndarray]:
        """[kernel, bias] (bias only with one) in Keras' layout: kernel HWIO."""
        weights = [np.ascontiguousarray(self._require_weights().transpose(2, 3, 1, 0))]  # OIHW -> HWIO
        if self._bias is not None:
            weights.append(self._bias.copy())
        return weights

    # -- passes ------------------------------------------------------------------

    def _checked_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"input shape must be a tuple of ints, got {shown(input_shape)}")
        shape = tuple(non_negative_int(d, f"input shape[{i}]") for i, d in enumerate(input_shape))
        if len(shape) not in (3, 4):
            forms = "(N, C, H, W) or (C, H, W)" if self.data_format == "NCHW" else "(N, H, W, C) or (H, W, C)"
            raise ValueError(f"input shape must be {forms}, got {shape}")
        return shape

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``forward``'s result for an input of ``input_shape`` (both in data_format)."""
        return self._spec(self._checked_shape(input_shape)).output_shape

    def padding_for(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The (top, bottom, left, right) padding used for an input of ``input_shape``."""
        return self._spec(self._checked_shape(input_shape)).padding

    def _spec(self, x_shape: tuple[int, ...]) -> ConvSpec:
        """The spec of a forward on an input of `x_shape` (in data_format)."""
        channels = input_nchw(x_shape, self.data_format)[0][1]
        if self.in_channels is not None and channels != self.in_channels:
            raise ValueError(f"input has {channels} channels, but the layer expects {self.in_channels}")
        return conv_spec(
            x_shape,
            (self.filters, channels // self.groups, *self.kernel_size),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
            data_format=self.data_format,
            dtype=self.dtype,
        )

    def forward(self, x: ArrayLike) -> np.ndarray:
        """The layer's output for ``x`` of shape (N, C, H, W) or (C, H, W).

        Keeps a reference to the input for ``backward`` (no copy when ``x`` is
        already an array of the layer's dtype, a strided view included): do
        not change it in place in between.

        A Dask array gives a lazy Dask array, computed block by block by
        :func:`fastconv.dask.conv2d` (the weights stay NumPy arrays).
        """
        if _is_dask_array(x):
            return self._forward_dask(x)
        x_arr = as_float_input(x, "input", self.dtype)
        spec = self._spec(x_arr.shape)
        if self._weight is None:
            self._create_weights(spec.input_shape[1])
        assert self._weight is not None
        x_used = _backend.pad_input(spec, spec.to_nchw(x_arr))
        y = spec.from_nchw(_backend.forward(spec, x_used, self._weight, self._bias, self.backend))
        # Like PyTorch, keep a reference, not a copy: an input that is already
        # an array of the layer's dtype is never copied, so changing it in
        # place before backward() changes dL/dF.
        self._saved = (x_used, spec)
        self._saved_dask = None
        return y

    def _forward_dask(self, x: Any) -> Any:
        from . import dask as fastconv_dask  # imports Dask: only reached with a Dask array

        if x.dtype.kind != "f":
            raise TypeError(f"input must hold floating-point numbers (float32 or float64), got dtype {x.dtype}")
        x = x.astype(self.dtype) if x.dtype != self.dtype else x
        spec = self._spec(self._checked_shape(x.shape))
        if self._weight is None:
            self._create_weights(spec.input_shape[1])
        y = fastconv_dask.conv2d(
            x,
            self._weight,
            self._bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
            data_format=self.data_format,
            backend=self.backend,
        )
        self._saved, self._saved_dask = None, x
        return y

    __call__ = forward

    def backward(self, grad_output: ArrayLike, need_input_grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Gradients for dL/dO = ``grad_output`` (the shape ``forward`` returned).

        Returns ``(grad_weight, grad_input)`` = (dL/dF, dL/dX), and stores
        ``grad_weight`` and ``grad_bias`` (None without bias) on the layer.
        ``need_input_grad=False`` skips dL/dX and its cost (a first layer has
        no use for it); ``grad_input`` is then None.

        After a forward of a Dask array both (and the stored gradients) are
        lazy Dask arrays: compute them together, e.g. ``dask.compute(gw, gx)``.
        """
        need_input_grad = check_flag(need_input_grad, "need_input_grad")
        if self._saved_dask is not None and self._weight is not None:
            return self._backward_dask(grad_output, need_input_grad)
        if self._saved is None or self._weight is None:
            raise RuntimeError("backward() needs a forward() first: there is no saved input")
        x_used, spec = self._saved
        grad_y = as_float_input(grad_output, "grad_output", self.dtype)
        if grad_y.shape != spec.output_shape:
            raise ValueError(
                f"grad_output must have the shape of the last forward's output {spec.output_shape}, got {grad_y.shape}"
            )
        grad_x, grad_w, grad_b = _backend.backward(
            spec, spec.to_nchw(grad_y), x_used, self._weight, self._bias is not None, need_input_grad, self.backend
        )
        self.grad_weight = grad_w
        self.grad_bias = grad_b
        return grad_w, None if grad_x is None else spec.from_nchw(grad_x)

    def _backward_dask(self, grad_output: Any, need_input_grad: bool) -> tuple[Any, Any]:
        """backward() after a forward() of a Dask array: lazy Dask gradients
        (fastconv.dask.conv2d_backward; compute them together)."""
        from . import dask as fastconv_dask

        grads = fastconv_dask.conv2d_backward(
            grad_output,
            self._saved_dask,
            self._weight,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self._bias is not None,
            need_input_grad=need_input_grad,
            padding_mode=self.padding_mode,
            data_format=self.data_format,
            backend=self.backend,
        )
        self.grad_weight, self.grad_bias = grads.weight, grads.bias
        return grads.weight, grads.input

    def __repr__(self) -> str:
        parts = [
            str(self.in_channels),
            str(self.filters),
            f"kernel_size={self.kernel_size}",
            f"stride={self.stride}",
            f"padding={self.padding}",
        ]
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode}")
        if self.data_format != "NCHW":
            parts.append(f"data_format={self.data_format}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if not self.use_bias:
            parts.append("bias=False")
        if self.dtype != np.float32:
            parts.append(f"dtype={self.dtype}")
        return f"Conv2D({', '.join(parts)})"
