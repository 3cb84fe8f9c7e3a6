"""dL/dX for an output gradient of ones and weights of ones: how many
(output pixel, kernel tap) pairs read each input pixel. Computed with
fastconv.conv2d_backward."""

import matplotlib.pyplot as plt
import numpy as np

import fastconv

CASES = [  # (title, kernel, stride, padding)
    ('3x3, stride 1, "same"', 3, 1, "same"),
    ('3x3, stride 2, "same"', 3, 2, "same"),
    ('2x2, stride 2, "valid"', 2, 2, "valid"),
    ('3x3, stride 3, "valid"', 3, 3, "valid"),
]
x = np.zeros((1, 1, 7, 7))

fig, axes = plt.subplots(1, len(CASES), figsize=(10, 3), layout="constrained")
for ax, (title, k, stride, padding) in zip(axes, CASES):
    w = np.ones((1, 1, k, k))
    y = fastconv.conv2d(x, w, stride=stride, padding=padding)
    counts = fastconv.conv2d_backward(np.ones_like(y), x, w, stride=stride, padding=padding).input[0, 0]
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=9)
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8, color="white" if value > 5 else "black")
    ax.set_title(f"{title}\noutput {y.shape[2]}x{y.shape[3]}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
