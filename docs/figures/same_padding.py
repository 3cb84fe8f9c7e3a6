"""Where "same" padding puts its rows: an input of 8 rows and a 3-row kernel
at strides 1 to 4, the padding asked of fastconv itself (Conv2D.padding_for)."""

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

import fastconv

H, K = 8, 3
STRIDES = (1, 2, 3, 4)

fig, axes = plt.subplots(1, len(STRIDES), figsize=(9, 4), sharey=True, layout="constrained")
for ax, stride in zip(axes, STRIDES):
    top, bottom, _, _ = fastconv.Conv2D(1, (K, 1), stride=(stride, 1), padding="same", in_channels=1).padding_for(
        (1, 1, H, 1)
    )
    rows = top + H + bottom
    out = -(-H // stride)  # ceil(H / stride)
    for r in range(rows):  # row r of the padded input spans y in [-r - 1, -r]
        padding = r < top or r >= top + H
        ax.add_patch(Rectangle((0, -r - 1), 1, 1, facecolor="#f4a582" if padding else "#d1e5f0", edgecolor="0.3"))
        ax.text(0.5, -r - 0.5, "pad" if padding else f"x{r - top}", ha="center", va="center", fontsize=8)
    for i in range(out):  # output row i reads padded rows i*stride .. i*stride + K - 1
        first = i * stride
        x = 1.4 + 0.45 * i
        ax.plot([x, x], [-first - K + 0.1, -first - 0.1], color="#2166ac", lw=2.5)
        ax.text(x, -first - K - 0.1, f"y{i}", ha="center", va="top", fontsize=7, color="#2166ac")
    ax.set_title(f"stride {stride}\npadding top {top}, bottom {bottom}", fontsize=9)
    ax.set_xlim(-0.2, 1.6 + 0.45 * H)
    ax.set_ylim(-H - 2.8, 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
fig.suptitle(f'"same", {H} input rows, kernel {K}: ceil({H} / stride) output rows, each a bar over the rows it reads')
