"""Forward and every gradient on a grid of geometries: the NumPy reference
against PyTorch, and the C++ core against the reference (and PyTorch)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import ISAS, assert_close, forced_isa, torch_conv

import fastconv
from fastconv._spec import conv_spec

torch = pytest.importorskip("torch")

KERNELS = [(1, 1), (3, 3), (4, 4), (2, 5)]  # pointwise, odd, even, rectangular
GRID = [
    pytest.param(s, d, g, k, p, id=f"s{s}-d{d}-g{g}-k{k[0]}x{k[1]}-{p}")
    for s, d, g, k, p in itertools.product((1, 2, 3), (1, 2), (1, 2, 4), KERNELS, ("valid", "same"))
]
DTYPES = [np.float32, np.float64]


def run_case(rng, dtype, n, c, h, w, filters, kernel, stride, dilation, groups, padding, bias=True):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((filters, c // groups, *kernel)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype) if bias else None
    geom = conv_spec(x.shape, weight.shape, stride, padding, dilation, groups, dtype=x.dtype)
    grad_y = rng.standard_normal((n, filters, *geom.out_hw)).astype(dtype)
    expected = torch_conv(x, weight, b, grad_y, stride, geom.padding, dilation, groups)

    def run(backend):
        y = fastconv.conv2d(x, weight, b, stride, padding, dilation, groups, backend=backend)
        grads = fastconv.conv2d_backward(
            grad_y, x, weight, stride, padding, dilation, groups, bias=bias, backend=backend
        )
        return y, grads.input, grads.weight, grads.bias

    results = {"numpy": run("numpy")}
    for isa in ISAS:  # every kernel path this CPU can run
        with forced_isa(isa):
            results[f"cpp-{isa}"] = run("cpp")

    names = ("output", "dL/dX", "dL/dF", "dL/db")
    for backend, got in results.items():
        for name, a, e, r in zip(names, got, expected, results["numpy"]):
            if e is None:
                assert a is None
                continue
            assert_close(a, e, f"{backend} vs torch: {name}")
            assert_close(a, r, f"{backend} vs numpy reference: {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("stride,dilation,groups,kernel,padding", GRID)
def test_grid(rng, dtype, stride, dilation, groups, kernel, padding):
    run_case(rng, dtype, 3, 4, 11, 10, 8, kernel, stride, dilation, groups, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n", [0, 1, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_batch_sizes_and_single_channel(rng, dtype, n, padding):
    run_case(rng, dtype, n, 1, 9, 7, 3, (3, 2), (2, 1), 1, 1, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_without_bias(rng, dtype):
    run_case(rng, dtype, 2, 6, 8, 8, 4, (3, 3), 2, 1, 2, "same", bias=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_larger_layer(rng, dtype):
    # Wide enough that the C++ tiles split rows into several column blocks.
    run_case(rng, dtype, 2, 48, 20, 150, 24, (3, 3), 1, 1, 1, "same")


@pytest.mark.parametrize(
    "stride,groups", [(1, 1), (1, 2), (2, 1)], ids=["1x1-in-place", "1x1-groups", "1x1-stride-2-packed"]
)
def test_pointwise_layer_whose_weights_overflow_l2(rng, stride, groups):
    # 1x1 layers run a gather GEMM; float64 weights of 384 x 384 (1.1 MiB a
    # group of 1) overflow half of an L2 up to 2 MiB, so each unit takes
    # several pixel tiles: 2 images of 13 x 11 pixels leave whole tiles read
    # in place, a rest packed into the shared last tiles, and a group of
    # tiles cut short at the end.
    run_case(rng, np.float64, 2, 384, 13, 11, 384, (1, 1), stride, 1, groups, "same")


def test_task_example_matches_torch_padding_1(rng):
    """The exercise: input 10x4x7x7, 8 filters 3x3, stride 2, "same" -> 10x8x4x4,
    which for this shape is PyTorch's symmetric padding=1."""
    import torch.nn.functional as F

    x = rng.standard_normal((10, 4, 7, 7))
    layer = fastconv.Conv2D(8, 3, stride=2, padding="same", dtype="float64", seed=3)
    y = layer.forward(x)
    assert y.shape == (10, 8, 4, 4)
    grad_y = rng.standard_normal(y.shape)
    grad_w, grad_x = layer.backward(grad_y)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.weight, requires_grad=True)
    bt = torch.tensor(layer.bias, requires_grad=True)
    yt = F.conv2d(xt, wt, bt, stride=2, padding=1)
    yt.backward(torch.tensor(grad_y))
    assert_close(y, yt.detach().numpy(), "output")
    assert_close(grad_w, wt.grad.numpy(), "dL/dF")
    assert_close(grad_x, xt.grad.numpy(), "dL/dX")
    assert_close(layer.grad_bias, bt.grad.numpy(), "dL/db")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("c,filters,groups", [(6, 2, 2), (4, 1, 1), (3, 6, 3), (1, 6, 1)])
@pytest.mark.parametrize("stride", [1, 2])
def test_few_filters_or_channels_per_group(rng, dtype, c, filters, groups, stride):
    # One filter per group, one channel per group with several filters: the
    # kernels pick special paths for these.
    run_case(rng, dtype, 2, c, 10, 9, filters, (3, 3), stride, 1, groups, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("width", [1, 2, 6, 7, 13, 25])
@pytest.mark.parametrize(
    "kernel,stride,dilation,padding",
    [
        ((3, 3), 1, 1, "same"),
        ((3, 3), 1, 1, 2),
        ((5, 5), 1, 2, "same"),
        ((3, 3), 2, 1, "same"),
        ((7, 7), 2, 1, 3),
        ((1, 7), 1, 1, "same"),
        ((7, 7), 1, 1, "same"),
        ((3, 3), 1, 2, "same"),
        ((1, 5), 2, 1, "same"),
        ((1, 7), 1, 1, (0, 0, 4, 2)),
        ((1, 7), 1, 1, (1, 0, 2, 5)),
    ],
    ids=[
        "3x3",
        "3x3-pad2",
        "5x5-dil2",
        "3x3-s2",
        "7x7-s2-pad3",
        "1x7",
        "7x7",
        "3x3-dil2",
        "1x5-s2",
        "1x7-pad4-2",
        "1x7-pad2-5",
    ],
)
def test_padded_columns_of_pixel_blocks(rng, dtype, width, kernel, stride, dilation, padding):
    # Enough filters for the filter-vectorised direct kernels, whose pixel
    # blocks leave out the taps that read padding at up to three of a row's
    # first or last pixels (then read the input in place), and drop taps
    # that read nothing but padding. Four padded pixels at one end (pad4)
    # are more than they leave out: those windows are copied with zeros.
    run_case(rng, dtype, 2, 5, 6, width, 20, kernel, stride, dilation, 1, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("filters", [1, 2, 3])
@pytest.mark.parametrize("kernel", [(3, 3), (4, 2), (5, 5), (7, 3), (7, 7)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("width", [17, 7])
def test_few_filters_sharing_window_rows(rng, dtype, filters, kernel, padding, width):
    # One to three filters (and three input channels, so dL/dX has three
    # "filters" too): the pixel-vectorised kernel that loads each window row
    # once for every kernel row, two to four output rows per call (twelve for
    # one filter on one vector of pixels: 17 columns in float64, 7 in float32),
    # in windows of up to 16 rows: 37-row images take several windows and
    # leave rows over; both widths leave a partial vector.
    run_case(rng, dtype, 2, 3, 37, width, filters, kernel, 1, 1, 1, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("filters", [1, 2, 3])
@pytest.mark.parametrize(
    "kernel,dilation", [((2, 3), 1), ((6, 2), 1), ((1, 7), 1), ((3, 3), 2)], ids=["2x3", "6x2", "1x7", "3x3-dil2"]
)
@pytest.mark.parametrize("width", [7, 14, 17, 40])
def test_few_filters_rows_at_once_without_shared_rows(rng, dtype, filters, kernel, dilation, width):
    # One to three filters (and three input channels for dL/dX) where no
    # shared-rows kernel fits (kernel heights 1, 2, 6; dilation 2): the
    # pixel-vectorised kernel of 12 sums per call (12, 6 or 4 rows of one
    # filter, 6 or 4 of two or three), taps kernel row by kernel row. 37 rows
    # leave rows over after windows of 12 or 16; the widths take 1 vector
    # (7), 2 (14 with AVX2, 17 with AVX-512) and 3 (40 with AVX-512).
    run_case(rng, dtype, 2, 3, 37, width, filters, kernel, 1, dilation, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("channels,groups", [(1, 1), (3, 3)], ids=["one-channel", "depthwise"])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (7, 7), (5, 2)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("width", [9, 40])
@pytest.mark.parametrize("height", [21, 23])
def test_plane_kernels_sharing_plane_rows(rng, dtype, channels, groups, kernel, padding, width, height):
    # One input channel per filter: the plane kernel that loads each padded
    # plane row once for all the kernel rows that read it, eight (AVX-512) or
    # four (AVX2) output rows per call, then its half-height instance (four or
    # two rows) once where as many rows are left, then rows one by one: 21
    # and 23 rows ("same"; 2-6 fewer "valid") leave every kind of remainder.
    run_case(rng, dtype, 2, channels, height, width, 2 * channels, kernel, 1, 1, groups, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kernel", [(3, 3), (4, 2), (1, 5)])
@pytest.mark.parametrize("stride,dilation", [(2, 1), (1, 2), ((2, 1), 1), ((1, 2), 1)])
@pytest.mark.parametrize("height", [31, 17])
def test_plane_rows_without_shared_rows(rng, dtype, kernel, stride, dilation, height):
    # Depthwise at a stride or dilation, or with kernels the shared-rows
    # kernel has no instance for (4 or 1 rows tall): plane_tile, eight
    # (AVX-512) or six (AVX2) output rows a call, then four or three, then
    # one by one; 31 and 17 input rows give 7 to 31 output rows here, which
    # leave every kind of remainder.
    run_case(rng, dtype, 2, 4, height, 21, 8, kernel, stride, dilation, 4, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 7), (4, 2), (1, 1)])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 2), (2, 1), ((2, 1), 1), ((2, 3), 1), (2, 2)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("h,w", [(9, 15), (28, 28), (13, 40)])
def test_few_channel_input_gradient_as_gemm_and_col2im(rng, dtype, channels, kernel, stride, dilation, padding, h, w):
    # One to three input channels, 4 or more images, 16 or more filters and at
    # least half as many as channels x taps (a quarter at a stride, where the
    # col2im adds every stride-th value of a row): dL/dX is a GEMM
    # over the filters that reads each grad_y plane in place, 48 pixels a call
    # (AVX-512 float32; float64 24, AVX2 16 and 8), whose last call of a plane
    # reads a zero-padded copy of the plane's tail where the pixels do not
    # divide (most of these output sizes), then a col2im of every (channel,
    # tap) column, edges clipped.
    filters = max(16, (channels * kernel[0] * kernel[1] + 1) // 2)
    run_case(rng, dtype, 4, channels, h, w, filters, kernel, stride, dilation, 1, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_few_channel_input_gradient_in_chunks_of_pixels(rng, dtype):
    # Columns of 2 channels x 9 taps take 72 (float32) or 144 bytes
    # (float64) a pixel, so the 256 KiB column buffer holds 3600 or 1800
    # (AVX2 3632 and 1816) of the 9900: the GEMM and the col2im go chunk by
    # chunk, chunks end inside rows of 330, and taps of a chunk's pixels add
    # into dL/dX rows that the next chunk adds to as well.
    run_case(rng, dtype, 4, 2, 30, 330, 16, (3, 3), 1, 1, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_few_channel_input_gradient_with_planes_crowding_the_l1(rng, dtype):
    # 32 x 32 grad_y planes lie 4 KiB (float32) or 8 KiB apart, all in one
    # set of the L1: with AVX2 (27 rows: 5 blocks of the micro-kernel) each
    # call's 32 rows are read from a packed copy instead, zero-padded where
    # the last call of a plane reads past it (here none do: 1024 pixels).
    run_case(rng, dtype, 4, 3, 64, 64, 32, (3, 3), 2, 1, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,filters", [((3, 3), 16), ((3, 3), 35), ((1, 1), 17), ((1, 7), 16), ((5, 5), 32)])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 2), (2, 1), ((2, 3), 1), ((1, 2), (2, 1))])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("h,w", [(9, 15), (20, 24)])
def test_one_channel_weight_gradient_as_im2col_dots(rng, dtype, kernel, filters, stride, dilation, padding, h, w):
    # One input channel, 16 or more filters (32 beyond 9 taps): with AVX-512
    # (float32, and 1x1 kernels in float64) dL/dF is dots of each grad_y
    # plane, read in place, with an im2col of the image's plane, 3 filters x
    # 9 taps a call: 35 and 17 filters leave a block of fewer, 25 taps go in
    # groups (9 + 8 + 8), and the output sizes leave a partial last vector
    # (masked grad_y loads). The other cases take the plane dots, reading
    # grad_y in place as well: several filters a call (plane_dots_filters),
    # or the 3x3 (and AVX-512 5x5) kernel sharing each input row's loads.
    run_case(rng, dtype, 3, 1, h, w, filters, kernel, stride, dilation, 1, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("h,w,filters,kernel", [(30, 330, 16, (3, 3)), (40, 40, 32, (7, 7))], ids=["3x3", "7x7"])
def test_one_channel_weight_gradient_in_chunks_of_pixels(rng, dtype, h, w, filters, kernel):
    # The dots go chunk by chunk, each chunk's columns built anew: 3x3 over
    # 30 x 330 in chunks of 1024 pixels (the most), which end inside rows of
    # 330; 7x7 (49 taps) in chunks that keep its columns within 128 KiB, 656
    # pixels in float32 or 328 in float64 (AVX2 664 and 332), of 1600.
    run_case(rng, dtype, 2, 1, h, w, filters, kernel, 1, 1, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("channels,groups", [(1, 1), (4, 4)], ids=["one-channel", "depthwise"])
@pytest.mark.parametrize(
    "kernel,stride,dilation",
    [
        ((3, 3), 2, 1),
        ((5, 5), 2, 1),
        ((3, 3), 3, 1),
        ((4, 2), (1, 2), 1),
        ((3, 3), (1, 2), 1),
        ((3, 3), (2, 1), 1),
        ((3, 3), 2, 2),
        ((5, 5), (1, 2), 1),
        ((3, 3), 1, (1, 2)),
    ],
    ids=["3x3-s2", "5x5-s2", "3x3-s3", "4x2-s1x2", "3x3-s1x2", "3x3-s2x1", "3x3-s2-dil2", "5x5-s1x2", "3x3-dil1x2"],
)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("width", [9, 33, 40])
def test_strided_plane_kernels_on_column_phases(rng, dtype, channels, groups, kernel, stride, dilation, padding, width):
    # One input channel per filter with a column stride: the plane kernels
    # split the padded plane's columns by phase (column mod stride), so that
    # the taps of consecutive outputs read consecutive values (3x3 at row
    # stride 1: the shared-row kernels too); odd sizes leave phases of unequal
    # length, and rows left over. At stride 2 a phase is copied a vector at a
    # time: 9 columns give phases shorter than a vector, 33 one vector and a
    # block overlapping it (17 values) or exactly one (16; two in float64),
    # 40 a block overlapping the one before (20).
    run_case(rng, dtype, 2, channels, 19, width, 2 * channels, kernel, stride, dilation, groups, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("filters", [1, 5, 20])
@pytest.mark.parametrize(
    "kernel,stride,dilation",
    [
        ((3, 3), 2, 1),
        ((5, 5), 2, 1),
        ((7, 7), 2, 1),
        ((2, 5), (1, 2), 1),
        ((3, 3), 2, 2),
        ((3, 3), 1, 1),
        ((4, 1), 3, 1),
    ],
    ids=["3x3-s2", "5x5-s2", "7x7-s2", "2x5-s1x2", "3x3-s2-dil2", "3x3-s1", "4x1-s3"],
)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("width", [9, 36, 70, 150])
def test_one_channel_input_gradient_scattered_filters_at_once(
    rng, dtype, filters, kernel, stride, dilation, padding, width
):
    # dL/dX of a one-channel input with too few images or filters for the
    # GEMM and col2im: plane_scatter sums every filter for up to 4 (AVX-512)
    # or 3 (AVX2) kernel rows and 1-4 vectors of columns per call (7 rows
    # go as 4 + 3 or 3 + 2 + 2; 5 as 3 + 2), one filter alone, an odd count
    # in pairs and one left (under 8 sums a call), or an even count. The
    # widths give 1 to 10 vectors of output columns, whole (copied rows) or
    # not; at stride 1 only the AVX2 kernels scatter (AVX-512 goes by phase).
    run_case(rng, dtype, 2, 1, 11, width, filters, kernel, stride, dilation, 1, padding)


def test_strided_depthwise_layer_whose_input_gradient_outgrows_half_the_l3(rng):
    # dL/dX of a strided depthwise layer goes by phase (a plane forward per
    # phase) while dL/dX fits in half the L3 cache, else through the plane
    # scatter: this one is past that size on this machine (8 MiB taken as
    # the L3 where the OS reports none: kFallbackL3 in csrc/cpu_facts.h), so
    # the scatter is checked too.
    from fastconv import _core

    l3 = _core.cpu_facts("generic", iterations=1)["l3_bytes"] or 8 * 2**20
    side = int((l3 / 2 / (8 * 4)) ** 0.5) + 8  # 8 float32 planes past l3 / 2
    run_case(rng, np.float32, 1, 8, side, side, 8, (3, 3), 2, 1, 8, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("stride", [1, 2])
def test_3x3_layer_whose_weights_take_uneven_packing_ranges(rng, dtype, stride):
    # 224 filters of 910 x 3 x 3 taps: blocks of filters of 1 MiB, more than
    # a range of 3 MiB, so the filter-vectorised forward (and dL/dX) takes
    # its units block by block, each thread packing the blocks it runs, and
    # a unit takes all three images (windows) at once.
    run_case(rng, dtype, 3, 910, 5, 5, 224, (3, 3), stride, 1, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "n,c,hw,filters,kernel,stride,groups",
    [
        (5, 420, 7, 200, (3, 3), 1, 1),  # 5 windows in groups of 2 + 2 + 1 on 2 threads
        (5, 420, 14, 200, (3, 3), 2, 1),  # stride 2: dL/dX by phase too
        (2, 420, 20, 200, (3, 3), 1, 1),  # 3 windows of rows an image
        (2, 150, 18, 200, (5, 5), 1, 1),  # 5x5 "same": windows copied, not read in place
        (3, 840, 7, 400, (3, 3), 1, 2),  # two groups, each past a range
        (0, 420, 7, 200, (3, 3), 1, 1),  # an empty batch: no windows
        (0, 1536, 5, 1536, (1, 1), 1, 1),  # nor pixel tiles for the 1x1 GEMM (9 MiB of weights)
    ],
    ids=["7x7", "14x14-s2", "rows", "copied", "groups", "empty-batch", "empty-batch-1x1"],
)
def test_weights_past_a_range_in_window_groups(rng, dtype, n, c, hw, filters, kernel, stride, groups):
    # Weights of a group over 3 MiB: block-major
    # units, each thread packing the block it runs, a unit taking a group
    # of windows -- several images, or blocks of output rows of one -- whose
    # sums go on chunk by chunk of input channels; filter counts that leave
    # the last block part-filled.
    run_case(rng, dtype, n, c, hw, hw, filters, kernel, stride, 1, groups, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("stride", [1, 2])
def test_1x1_layer_whose_weights_take_several_packing_ranges(rng, dtype, stride):
    # 1536 x 1536 weights (9 MiB in float32, 18 MiB in float64): the 1x1 GEMM
    # packs them per thread in ranges of at most 3 MiB, so each thread meets
    # several; at stride 2 its pixel tiles are packed too, once per range.
    run_case(rng, dtype, 2, 1536, 5, 5, 1536, (1, 1), stride, 1, 1, "valid")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("width", [7, 9, 14])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)], ids=["s1", "s2", "d2"])
def test_deep_narrow_layer_in_tap_chunks_with_three_filter_vectors(rng, dtype, width, stride, dilation):
    # 64 input channels of 3 x 3 taps: the filter-vectorised forward (and
    # dL/dX by phase) runs the taps in chunks of whole channels whose weights
    # fit half of L1, carrying the sums over in a buffer; 40 filters on 7-,
    # 9- or 14-wide rows fill more accumulators with blocks of three filter
    # vectors (4 pixels x 3 vectors with AVX2; 9 x 3 with AVX-512, but two
    # vectors of 14 pixels on the 14-wide rows) than of two.
    run_case(rng, dtype, 2, 64, 9, width, 40, (3, 3), stride, dilation, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("filters", [32, 40, 44, 64, 80])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_last_filter_block_computing_only_its_vectors(rng, dtype, filters, stride, padding):
    # 7-wide rows take blocks of three filter vectors (48 float32 filters
    # with AVX-512, 24 float64 or AVX2 float32, 12 AVX2 float64); the last
    # block computes only the vectors its filters fill: 80 = 48 + 32 and 64 =
    # 48 + 16 leave it 2 and 1 of 3 with AVX-512 float32, 40 and 32 with 24
    # a block, 44 and 40 with 12. Stride 3 computes all three (no kernels
    # built for it). "same" rows are blocks at both edges (the runs that skip
    # an edge pixel), "valid" rows not.
    width = 7 * stride + (2 if padding == "valid" else 0)  # 7 outputs a row
    run_case(rng, dtype, 2, 24, 7, width, filters, (3, 3), stride, 1, 1, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("stride", [1, 2])
def test_wide_rows_copied_into_padded_windows(rng, dtype, stride):
    # Input rows of 1024 values or more, from 8 channels on: the
    # filter-vectorised forward (and dL/dX by phase at stride 1) copies the
    # windows, padded or not, into a buffer instead of reading the input in place
    # (InputWindow::kWideRow), over 1034-wide rows here (74 pixel blocks of 14
    # with AVX-512), at 1, 2 and 3 windows of rows; and reads them in place
    # again where one output row's window would pass 2**20 values (44000
    # wide: 8 x 3 x 44002).
    for h in (3, 9, 17):
        run_case(rng, dtype, 1, 8, h, 1034, 20, (3, 3), stride, 1, 1, "same")
    run_case(rng, dtype, 1, 8, 9, 1034, 20, (3, 3), stride, 1, 1, "valid")  # unpadded: copied too
    run_case(rng, dtype, 1, 8, 3, 44000, 4, (3, 3), stride, 1, 1, "same")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("width", [7, 17, 32, 1030])
@pytest.mark.parametrize(
    "kernel,stride,dilation,padding",
    [
        ((3, 3), 1, 1, "same"),
        ((3, 3), 2, 1, "same"),
        ((1, 3), 1, 1, (0, 1)),
        ((3, 3), 1, 1, 2),
        ((3, 3), 1, 2, "same"),
        ((3, 3), 1, 1, "valid"),
    ],
    ids=["3x3", "3x3-s2", "1x3", "3x3-pad2", "3x3-dil2", "3x3-valid"],
)
def test_padded_input_read_in_place_reads_only_the_image(rng, dtype, width, kernel, stride, dilation, padding):
    # Where every tap reads padding for at most the first or the last pixel of
    # a pixel block, the filter-vectorised forward reads the input in place
    # and leaves those pixels out rather than copying the input into a padded
    # window. The input here is a view whose rows and planes are surrounded
    # by NaN: one read of a padded position would put a NaN in the output.
    # Where more pixels read padding (pad 2, dilation 2), or on rows of 1024
    # values and more (width 1030: InputWindow::kWideRow), the window is a
    # copy, which must read only the image too.
    n, c, h, filters = 2, 8, 5, 40
    buf = np.full((n, c, h + 2, width + 3), np.nan, dtype=dtype)
    x = buf[:, :, 1:-1, 1:-2]
    x[...] = rng.standard_normal(x.shape)
    weight = rng.standard_normal((filters, c, *kernel)).astype(dtype)
    bias = rng.standard_normal(filters).astype(dtype)
    geom = conv_spec(x.shape, weight.shape, stride, padding, dilation, 1, dtype=x.dtype)
    expected = fastconv.conv2d(np.ascontiguousarray(x), weight, bias, stride, padding, dilation, backend="numpy")
    core = fastconv._backend.core
    for isa in ISAS:
        with forced_isa(isa):
            y = np.empty((n, filters, *geom.out_hw), dtype=dtype)
            core.forward(x, weight, bias, y, geom.stride, geom.kernel_padding, geom.dilation, 1)
            assert_close(y, expected, f"cpp-{isa}: output of a NaN-bordered view")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("channels", [6, 12])
@pytest.mark.parametrize("kernel", [(5, 5), (3, 3), (4, 2), (2, 5)])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("h,w", [(14, 14), (9, 23), (12, 33)])
def test_valid_layer_input_gradient_gathered_from_columns(rng, dtype, channels, kernel, dilation, h, w):
    # Up to 12 input channels, 16 or more filters, 4 or more images and
    # "valid" padding at stride 1 (the by-phase forward would pad grad_y by
    # the kernel's span): dL/dX is the GEMM above, then each dL/dX row gathers
    # its (channel, tap) columns in registers, lanes past the columns' rows
    # masked off, where a row is at most 8 vectors wide (33 wide in float64
    # with AVX2 is 9: by phase), two rows at a time up to 4 vectors (14 and 9
    # rows: even and odd remainders), else one (33 wide: AVX-512 float64 and
    # AVX2 float32).
    run_case(rng, dtype, 4, channels, h, w, 16, kernel, 1, dilation, 1, "valid")
