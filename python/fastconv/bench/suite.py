"""The convolutions the bench times: Shape, the suite of layers, the passes,
and the --shape syntax."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from .._spec import ConvSpec, conv_spec

PASSES = ("forward", "backward")
DETAIL_PASSES = ("backward_data", "backward_weights", "backward_bias")


@dataclass(frozen=True)
class Shape:
    """One convolution: input N x C x H x W, K filters of kernel x kernel
    (or kernel = (height, width)), with that stride and dilation on both axes."""

    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: str = "same"
    groups: int = 1
    dilation: int = 1

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel

    @property
    def kernel_label(self) -> str:
        return "x".join(map(str, self.kernel_hw))

    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.c // self.groups, *self.kernel_hw)

    def geometry(self) -> ConvSpec:
        """Padding and output size, worked out (and checked) as fastconv does."""
        x_shape = (self.n, self.c, self.h, self.w)
        return conv_spec(
            x_shape,
            self.weight_shape(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            dtype=np.dtype(np.float64),
        )

    def flops(self, pass_name: str) -> int:
        """Multiply-adds x 2 of a pass; backward counts data + weights (bias adds are negligible)."""
        ho, wo = self.geometry().out_hw
        kh, kw = self.kernel_hw
        forward = 2 * self.n * self.k * (self.c // self.groups) * kh * kw * ho * wo
        return {
            "forward": forward,
            "backward": 2 * forward,
            "backward_data": forward,
            "backward_weights": forward,
            "backward_bias": self.n * self.k * ho * wo,
        }[pass_name]


SUITE = (
    Shape("seed", 10, 4, 7, 7, 8, 3, 2),
    Shape("lenet_c1", 64, 1, 28, 28, 6, 5, 1, "valid"),
    Shape("lenet_c2", 64, 6, 14, 14, 16, 5, 1, "valid"),
    Shape("cifar", 32, 32, 32, 32, 32, 3),
    Shape("resnet_3x3", 8, 64, 56, 56, 64, 3),
    Shape("resnet_s2", 8, 128, 28, 28, 256, 3, 2),
    Shape("pointwise", 8, 256, 14, 14, 256, 1),
    Shape("stem_7x7_s2", 4, 3, 224, 224, 64, 7, 2),
    Shape("deep_7x7", 16, 512, 7, 7, 512, 3),
    Shape("even_k4", 8, 16, 32, 32, 16, 4),
    Shape("depthwise", 8, 128, 28, 28, 128, 3, groups=128),
    Shape("single_image", 1, 64, 56, 56, 64, 3),
    # The kinds of layer issue 15 measures beside these: a wide VGG-like
    # layer, a rectangular kernel, dilation, one input channel with a large
    # batch, and a deep stride-2 layer.
    Shape("vgg_3x3", 2, 64, 112, 112, 128, 3),
    Shape("rect_1x7", 8, 64, 28, 28, 64, (1, 7)),
    Shape("dilated_3x3", 8, 64, 28, 28, 64, 3, dilation=2),
    Shape("one_channel", 256, 1, 28, 28, 32, 3),
    Shape("deep_s2", 8, 256, 14, 14, 512, 3, 2),
)
QUICK = ("seed", "lenet_c2", "even_k4", "depthwise", "pointwise", "resnet_3x3", "resnet_s2")

# The smallest call: what a call costs besides its arithmetic.
FIXED_COST_SHAPE = Shape("fixed_cost", 1, 1, 3, 3, 1, 3, 1, "valid")

SHAPE_HELP = (
    "add a shape: name=NAME,n=N,c=C,h=H[,w=W],k=FILTERS,kernel=SIZE|HxW[,stride=1][,padding=same|valid]"
    "[,groups=1][,dilation=1] (w defaults to h; kernel=1x7: 1 high, 7 wide); repeatable"
)


def parse_shape(text: str) -> Shape:
    """A --shape argument as a Shape, checked by fastconv's own geometry rules."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r} in {text!r}")
        fields[key.strip()] = value.strip()
    ints = ("n", "c", "h", "w", "k", "stride", "groups", "dilation")
    unknown = set(fields) - {"name", "padding", "kernel", *ints}
    missing = {"name", "n", "c", "h", "k", "kernel"} - set(fields)
    if unknown or missing:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    fields.setdefault("w", fields["h"])
    try:
        values = {key: int(fields[key]) for key in ints if key in fields}
        shape = Shape(
            name=fields["name"], kernel=parse_kernel(fields["kernel"]), padding=fields.get("padding", "same"), **values
        )
        shape.geometry()
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: {exc}") from exc
    return shape


def parse_kernel(text: str) -> int | tuple[int, int]:
    """ "3" (square) or "1x7" (height x width)."""
    if "x" not in text:
        return int(text)
    height, width = text.split("x", 1)
    return (int(height), int(width))
