// dL/dweight vectorised over filters: for each output pixel, one vector of
// grad_y values (16 float32 filters with AVX-512, grad_y transposed per chunk
// of rows) is multiplied by the broadcast input value of each of NJ kernel
// taps, read from a zero-padded window of input rows as in the direct
// forward. NJ x NK accumulators stay in registers over a chunk of pixels.
// Each task owns a range of filters and of taps and walks every pixel in a
// fixed order, so the result does not depend on the thread count.
// Included by simd_kernels_impl.h inside the instruction set's namespace;
// FASTCONV_BW_NJ taps and up to FASTCONV_BW_NK filter vectors per micro-kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "implicit_gemm.h"
#include "input_window.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {


// acc[jj][f] += sum over `images` windows, `rows` output rows of each and
// `width` pixels of x[tap jj at (image, row, ow)] * gyt[((image * rows) + row)
// * width + ow][f], in that order; tap jj of image i, row r, pixel ow reads
// src[jj][i * image_step + r * row_step + ow * sw]. Several small images per
// call share the loads and stores of the accumulators.
template <class T, int NJ, int NK>
void direct_bw_micro(const T* const* __restrict src, int64_t sw, int64_t row_step, int64_t image_step,
                     const T* __restrict gyt, int64_t images, int64_t rows, int64_t width, T* __restrict acc_mem) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, F = NK * L;
    V acc[NJ][NK];
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) acc[jj][v] = load<V>(acc_mem + jj * F + v * L);
    const T* d_row = gyt;
    for (int64_t i = 0; i < images; ++i) {
        for (int64_t r = 0; r < rows; ++r, d_row += width * F) {
            const T* s[NJ];
#pragma GCC unroll 8
            for (int jj = 0; jj < NJ; ++jj) s[jj] = src[jj] + i * image_step + r * row_step;
            for (int64_t ow = 0; ow < width; ++ow) {
                V d[NK];
#pragma GCC unroll 4
                for (int v = 0; v < NK; ++v) d[v] = load<V>(d_row + ow * F + v * L);
#pragma GCC unroll 8
                for (int jj = 0; jj < NJ; ++jj) {
                    const T xv = s[jj][ow * sw];
#pragma GCC unroll 4
                    for (int v = 0; v < NK; ++v) acc[jj][v] += xv * d[v];
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) store(acc_mem + jj * F + v * L, acc[jj][v]);
}

template <class T>
using DirectBwMicro = void (*)(const T* const*, int64_t, int64_t, int64_t, const T*, int64_t, int64_t, int64_t, T*);

template <class T, int NK, int... J>
DirectBwMicro<T> pick_direct_bw(int taps, std::integer_sequence<int, J...>) {
    DirectBwMicro<T> table[] = {&direct_bw_micro<T, J + 1, NK>...};
    return table[taps - 1];
}

constexpr int64_t kMaxImagesPerCall = 8;

template <class T, int NK>
void direct_backward_weights_nk(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    constexpr int L = kLanes<T>, F = NK * L, NJ = FASTCONV_BW_NJ;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), rs = p.r * p.s, ntaps = cg * rs;
    const int64_t kblocks = (kg + F - 1) / F;
    // A task owns a range of filter blocks and a range of taps. Per window it
    // copies the input channels its taps read and transposes grad_y for its
    // filters: splitting the filters copies the input again, splitting the
    // taps transposes grad_y again. The split is the cheapest of those that
    // give every thread a task, an even share of them (3 tasks on 2 threads
    // left one thread idle for a third of the call: resnet_s2's dL/dF on 2
    // threads 1.53x as fast as on 1, now 1.9x), and keep the accumulators
    // within 512 KB. Each weight is still summed by one task in pixel order,
    // so the split changes no result.
    const double copy_x = p.in_place_planes() ? 0.0
                                              : static_cast<double>(p.n * cg) * static_cast<double>((p.h + p.pad_top + p.pad_bottom) * (p.w + p.pad_left + p.pad_right));
    const double transpose_gy = 2.0 * static_cast<double>(p.n * kg) * static_cast<double>(p.out_h * p.out_w);  // scalar, strided: dearer
    const int64_t threads = max_threads(), threads_per_group = (threads + p.groups - 1) / p.groups;
    int64_t kper = kblocks, jper = ntaps;
    double best = -1;
    for (int64_t fs = 1; fs <= kblocks; ++fs) {
        const int64_t kp = (kblocks + fs - 1) / fs;
        if (fs > 1 && kp == (kblocks + fs - 2) / (fs - 1)) continue;  // the same split as fs - 1
        const int64_t fsplits = (kblocks + kp - 1) / kp;
        for (int64_t ts = (threads_per_group + fsplits - 1) / fsplits; ; ++ts) {
            const int64_t jp = std::min(ntaps, ((ntaps + ts - 1) / ts + NJ - 1) / NJ * NJ);
            if (jp * kp * F * static_cast<int64_t>(sizeof(T)) > (int64_t(1) << 19) && jp > NJ) continue;
            const int64_t count = p.groups * fsplits * ((ntaps + jp - 1) / jp);  // tasks
            if (count % threads != 0 && count < 8 * threads && jp > NJ) continue;
            const double cost = static_cast<double>(fsplits) * copy_x + static_cast<double>((ntaps + jp - 1) / jp) * transpose_gy;
            if (best < 0 || cost < best) best = cost, kper = kp, jper = jp;
            break;
        }
    }
    const int64_t kranges = (kblocks + kper - 1) / kper, jranges = (ntaps + jper - 1) / jper;
    const int64_t tasks = p.groups * kranges * jranges;
    const int64_t max_rows = std::max<int64_t>(1, std::min<int64_t>(p.out_h, InputWindow::kRows));

    // The channels each range of taps reads, and their windows.
    struct TapRange {
        ConvShape shape;  // of the channels the range reads
        InputWindow window;
    };
    std::vector<TapRange> ranges;
    int64_t window_size = 1;
    for (int64_t jr = 0; jr < jranges; ++jr) {
        const int64_t j0 = jr * jper, jn = std::min(jper, ntaps - j0);
        ConvShape q = p;
        q.c = ((j0 + jn + rs - 1) / rs - j0 / rs) * p.groups;
        ranges.push_back(TapRange{q, InputWindow(q)});
        window_size = std::max(window_size, ranges.back().window.size());
    }

    // Small images (a window each) go several per micro-kernel call, so that
    // the accumulators' loads and stores are shared: as many as keep the
    // windows and a filter block of their grad_y within half the L2 cache.
    const int64_t image_bytes = (window_size + max_rows * p.out_w * F) * static_cast<int64_t>(sizeof(T));
    const int64_t images_per_call =
        std::max<int64_t>(1, std::min({cache_sizes().l2 / 2 / image_bytes, p.n, kMaxImagesPerCall}));
    PerThread<T> gyt_mem(images_per_call * max_rows * p.out_w * F), acc_mem(jper * kper * F),
        window_mem(images_per_call * window_size);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const gyt = gyt_mem.get();
        T* const acc = acc_mem.get();
        T* const window = window_mem.get();
        const T* src[NJ];
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t jr = t % jranges, kr = (t / jranges) % kranges, g = t / (jranges * kranges);
            const int64_t j0 = jr * jper, jn = std::min(jper, ntaps - j0);
            const int64_t kb0 = kr * kper, kbn = std::min(kper, kblocks - kb0);  // filter blocks kb0 + kb, kb < kbn
            const int64_t c0 = j0 / rs;  // the first channel these taps read
            const ConvShape& q = ranges[static_cast<size_t>(jr)].shape;
            const InputWindow& win = ranges[static_cast<size_t>(jr)].window;
            const int64_t first = j0 - c0 * rs;  // this task's first tap in the window's tap order
            const int64_t row_step = p.stride_h * win.pitch;  // window elements between output rows
            std::fill(acc, acc + kbn * jn * F, T(0));
            // Images whose window is the whole image go `batch` at a time, one
            // window after another: a micro-kernel call then runs over all of them.
            const int64_t batch = win.out_rows >= p.out_h ? images_per_call : 1;
            const int64_t image_step = win.in_place ? p.xs.n : win.size();
            for (int64_t n = 0; n < p.n; n += batch) {
                const int64_t nb = std::min(batch, p.n - n);
                const T* xc = x + n * p.xs.n + (g * cg + c0) * p.xs.c;
                for (int64_t oh0 = 0; oh0 < p.out_h; oh0 += win.out_rows) {
                    const int64_t oh1 = std::min(p.out_h, oh0 + win.out_rows);
                    const int64_t pix = (oh1 - oh0) * p.out_w;  // pixels per image
                    const T* base = nullptr;
                    for (int64_t b = 0; b < nb; ++b) {
                        const T* image = win.prepare(q, xc + b * p.xs.n, oh0, window + b * image_step);
                        if (b == 0) base = image;
                    }
                    // gyt[b * pix + (oh - oh0) * out_w + ow][f] = grad_y[n + b, g*kg + kb*F + f, oh, ow]
                    // for filter block kb, 0 past the group's filters: done just before
                    // the block's micro-kernel calls, so that the buffer holds one block.
                    // Every block up front took 176 KB per thread on deep_7x7 in float32
                    // (7 blocks of 8 images), not 25, and was no faster (Zen 3: deep_7x7,
                    // pointwise, resnet_s2 and cifar within 2 %, float32 and float64).
                    const auto transpose_block = [&](int64_t kb) {
                        const int64_t m0 = (kb0 + kb) * F;
                        for (int64_t b = 0; b < nb; ++b) {
                            T* dst = gyt + b * pix * F;
                            const int64_t nn = n + b;
                            if (p.y_dense() && m0 + F <= kg) {  // whole L x L tiles in registers, the last pixels one by one
                                const T* gy = grad_y + nn * p.ys.n + (g * kg + m0) * p.ys.c + oh0 * p.ys.h;
                                const int64_t tiled = pix / L * L;
                                for (int64_t f = 0; f < F; f += L) {
                                    for (int64_t i = 0; i < tiled; i += L)
                                        transpose_tile(gy + f * p.ys.c + i, p.ys.c, dst + i * F + f, F);
                                    for (int64_t ff = f; ff < f + L; ++ff)
                                        for (int64_t i = tiled; i < pix; ++i) dst[i * F + ff] = gy[ff * p.ys.c + i];
                                }
                                continue;
                            }
                            for (int64_t f = 0; f < F; ++f) {
                                const int64_t m = m0 + f;  // filter of the group
                                if (m < kg) {
                                    const T* gy = grad_y + nn * p.ys.n + (g * kg + m) * p.ys.c + oh0 * p.ys.h;
                                    if (p.y_dense()) {
                                        for (int64_t i = 0; i < pix; ++i) dst[i * F + f] = gy[i];
                                    } else {
                                        for (int64_t i = 0; i < pix; ++i)
                                            dst[i * F + f] = gy[(i / p.out_w) * p.ys.h + (i % p.out_w) * p.ys.w];
                                    }
                                } else {
                                    for (int64_t i = 0; i < pix; ++i) dst[i * F + f] = T(0);
                                }
                            }
                        }
                    };
                    // The input rows of the task's next window(s), fetched a share per
                    // micro-kernel call (per_call rows each, worked out once).
                    const bool last_rows = oh1 == p.out_h;
                    const int64_t next_n = last_rows ? n + nb : n, next_oh0 = last_rows ? 0 : oh1;
                    const int64_t next_nb = last_rows ? std::min(batch, p.n - next_n) : nb;
                    const int64_t image_rows = win.source_rows();
                    const int64_t fetch = next_n < p.n ? next_nb * image_rows : 0, calls = kbn * ((jn + NJ - 1) / NJ);
                    const int64_t per_call = (fetch + calls - 1) / calls;
                    const T* next_x = xc + (next_n - n) * p.xs.n;
                    int64_t fetched = 0;
                    for (int64_t kb = 0; kb < kbn; ++kb) {
                        transpose_block(kb);
                        for (int64_t j = 0; j < jn; j += NJ) {
                            for (const int64_t upto = std::min(fetch, fetched + per_call); fetched < upto;) {
                                const int64_t image = fetched / image_rows, row = fetched - image * image_rows;
                                const int64_t rows = std::min(upto - fetched, image_rows - row);
                                win.prefetch(q, next_x + image * p.xs.n, next_oh0, row, row + rows);
                                fetched += rows;
                            }
                            const int64_t nj = std::min<int64_t>(NJ, jn - j);
                            const DirectBwMicro<T> micro =
                                pick_direct_bw<T, NK>(static_cast<int>(nj), std::make_integer_sequence<int, NJ>{});
                            for (int64_t jj = 0; jj < nj; ++jj) src[jj] = base + win.offset[static_cast<size_t>(first + j + jj)];
                            T* acc_j = acc + (kb * jn + j) * F;
                            if (row_step == p.out_w) {  // rows follow each other in the window: one long row
                                micro(src, 1, 0, image_step, gyt, nb, 1, pix, acc_j);
                            } else {
                                micro(src, p.stride_w, row_step, image_step, gyt, nb, oh1 - oh0, p.out_w, acc_j);
                            }
                        }
                    }
                }
            }
            // grad_weight[filter][tap] from acc[kb][j][f]: L x L tiles transposed in
            // registers, the last taps and a partial block's filters one by one.
            for (int64_t kb = 0; kb < kbn; ++kb) {
                const int64_t nf = std::min<int64_t>(F, kg - (kb0 + kb) * F);
                T* const gw = grad_weight + (g * kg + (kb0 + kb) * F) * ntaps + j0;
                const T* const a = acc + kb * jn * F;
                int64_t j = 0;
                if (nf == F)
                    for (; j + L <= jn; j += L)
                        for (int64_t f = 0; f < F; f += L) transpose_tile(a + j * F + f, F, gw + f * ntaps + j, ntaps);
                for (int64_t f = 0; f < nf; ++f)
                    for (int64_t jj = j; jj < jn; ++jj) gw[f * ntaps + jj] = a[jj * F + f];
            }
        }
    });
}

template <class T>
void direct_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    const int64_t vectors = (p.k_per_group() + kLanes<T> - 1) / kLanes<T>;
    if (vectors <= 1) return direct_backward_weights_nk<T, 1>(p, grad_y, x, grad_weight);
    if (vectors == 2 || FASTCONV_BW_NK == 2) return direct_backward_weights_nk<T, 2>(p, grad_y, x, grad_weight);
    if (vectors == 3) return direct_backward_weights_nk<T, 3>(p, grad_y, x, grad_weight);
    direct_backward_weights_nk<T, FASTCONV_BW_NK>(p, grad_y, x, grad_weight);
}

}  // namespace fastconv::FASTCONV_ISA
