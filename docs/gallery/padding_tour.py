"""
A tour of padding and layouts
=============================

What each padding rule and padding mode does to an image, shown with
fastconv itself, and the same convolution in channels-first and
channels-last layout.
"""

# %%
# Output sizes
# ------------
# ``"valid"`` adds no padding; ``"same"`` gives ``ceil(H / stride)`` output
# rows at every stride, padding as little as it needs, the odd extra row at
# the bottom. ``Conv2D.padding_for`` tells the (top, bottom, left, right)
# amounts for an input shape.
import matplotlib.pyplot as plt
import numpy as np

import fastconv

shape = (1, 1, 8, 8)  # one 8x8 image, a 3x3 kernel
for stride in (1, 2, 3):
    for padding in ("valid", "same"):
        layer = fastconv.Conv2D(1, 3, stride=stride, padding=padding, in_channels=1)
        print(f"stride {stride} {padding:>5}: out {layer.output_shape(shape)[2:]}, padding {layer.padding_for(shape)}")

# %%
# Padding modes
# -------------
# A 1x1 filter of weight 1 copies its input, so with padding its output *is*
# the padded image: here a 5x5 ramp padded by 2 on every side in each mode.
# The frame shows where the original image lies.
image = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
identity = np.ones((1, 1, 1, 1))

fig, axes = plt.subplots(1, 4, figsize=(10, 3), layout="constrained")
for ax, mode in zip(axes, ("zeros", "reflect", "replicate", "circular")):
    padded = fastconv.conv2d(image, identity, padding=2, padding_mode=mode)[0, 0]
    ax.imshow(padded, cmap="viridis", vmin=0, vmax=24)
    ax.add_patch(plt.Rectangle((1.5, 1.5), 5, 5, fill=False, edgecolor="white", lw=2))
    ax.set_title(mode)
    ax.set_xticks([])
    ax.set_yticks([])

# %%
# Per-side padding
# ----------------
# ``(top, bottom, left, right)`` pads each side on its own, which PyTorch's
# ``Conv2d`` cannot express; the output grows by exactly those amounts.
padded = fastconv.conv2d(image, identity, padding=(0, 3, 1, 0))[0, 0]
print(padded.shape)
print(padded)

# %%
# Channels first and channels last
# --------------------------------
# ``data_format="NHWC"`` takes and returns channels-last arrays (the weights
# stay OIHW); the numbers are the same as in NCHW, gradients included.
rng = np.random.default_rng(0)
x_nchw = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

y_nchw = fastconv.conv2d(x_nchw, weight, stride=2, padding="same")
y_nhwc = fastconv.conv2d(x_nhwc, weight, stride=2, padding="same", data_format="NHWC")
print("NCHW output", y_nchw.shape, "NHWC output", y_nhwc.shape)
print("largest difference:", np.abs(y_nhwc.transpose(0, 3, 1, 2) - y_nchw).max())

grads = fastconv.conv2d_backward(np.ones_like(y_nhwc), x_nhwc, weight, stride=2, padding="same", data_format="NHWC")
print("dL/dX in NHWC:", grads.input.shape)
