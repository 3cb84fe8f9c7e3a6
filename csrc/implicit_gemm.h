// Implicit-GEMM convolution with register-blocked micro-kernels, written once
// with GCC/Clang vector extensions and compiled per instruction set.
//
// The translation unit that includes this header defines, before including it:
//   FASTCONV_ISA            the namespace (avx2, avx512)
//   FASTCONV_VECTOR_BYTES   32 or 64
//   FASTCONV_MR             rows (output channels) per micro-kernel
// and compiles with the matching -m flags.
//
// The 1x1 forward and strided backward-data fallbacks are "gather" GEMMs:
//   dst[m, pixel] = sum_j A[m, j] * src[channel(j), row(pixel) + dr(j), col(pixel) + dc(j)]
// with zero outside the source. A tile of output pixels (flattened over batch,
// rows and columns, so small images still fill a tile) is packed once into a
// contiguous panel B[j][pixel], then every block of MR output channels runs the
// micro-kernel over it with MR x NV vector accumulators held in registers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "conv_shape.h"
#include "cpu_facts.h"
#include "parallel.h"

#include <immintrin.h>

namespace fastconv::FASTCONV_ISA {

typedef float vfloat __attribute__((vector_size(FASTCONV_VECTOR_BYTES)));
typedef double vdouble __attribute__((vector_size(FASTCONV_VECTOR_BYTES)));

template <class T>
struct Simd;
template <>
struct Simd<float> {
    using vec = vfloat;
};
template <>
struct Simd<double> {
    using vec = vdouble;
};

template <class T>
constexpr int kLanes = FASTCONV_VECTOR_BYTES / static_cast<int>(sizeof(T));
// Vector registers: 32 with AVX-512, 16 with AVX2.
constexpr int kVectorRegisters = FASTCONV_VECTOR_BYTES == 64 ? 32 : 16;
constexpr int kVectorsPerTile = FASTCONV_NV;  // vectors of pixels per micro-kernel row
template <class T>
constexpr int kTile = kLanes<T> * kVectorsPerTile;  // pixels per tile

// Input rows to ask the cache for, a share at a time, while a kernel works:
// rows [first, end) of `per_channel` rows per channel, row k being row
// ih = ih0 + k % per_channel of channel k / per_channel, at x + channel *
// channel_stride + ih * row_stride, `bytes` long; rows outside [0, h) (the
// padding) are skipped. Empty (x null, end 0) where there is nothing to fetch.
struct RowFetch {
    const char* x = nullptr;
    int64_t channel_stride = 0, row_stride = 0, bytes = 0;  // in bytes
    int64_t per_channel = 1, ih0 = 0, h = 0, first = 0, end = 0;

    // Row k is row r = k % per_channel of channel c = k / per_channel: a
    // cursor moves on without dividing.
    struct Cursor {
        int64_t k = 0, c = 0, r = 0;
    };
    Cursor at(int64_t k) const { return Cursor{k, k / per_channel, k % per_channel}; }
    // Fetches the rows from the cursor to row `to`, and moves it there: each
    // cache line they touch once, a channel's rows as one run where they
    // follow each other (dense planes). Fetched row by row, a short row (28
    // values of a one-channel layer's grad_y) took three prefetches, two of
    // them for one line: that layer's dL/dx 11.0 -> 10.2 us per image with
    // this (Zen 5, float32, grad_y in cache). Without any fetch it took 8.7
    // us in cache but 16.6 from memory.
    template <bool kToL2 = false>
    void fetch_to(Cursor& at, int64_t to) const {
        while (at.k < to) {
            const int64_t n = std::min(to - at.k, per_channel - at.r);  // rows of this channel
            const int64_t lo = std::max<int64_t>(ih0 + at.r, 0), hi = std::min(ih0 + at.r + n, h);
            const char* channel = x + at.c * channel_stride;
            if (row_stride == bytes) {
                if (lo < hi) lines<kToL2>(channel + lo * row_stride, (hi - lo) * bytes);
            } else {
                for (int64_t ih = lo; ih < hi; ++ih) lines<kToL2>(channel + ih * row_stride, bytes);
            }
            at.k += n, at.r += n;
            if (at.r == per_channel) at.r = 0, ++at.c;
        }
    }
    // Every 64-byte cache line of [p, p + len), len > 0, into L1 (or, with
    // kToL2, into L2 only).
    template <bool kToL2 = false>
    static void lines(const char* p, int64_t len) {
        const uintptr_t last = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(len - 1);
        for (uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63); a <= last; a += 64)
            line<kToL2>(reinterpret_cast<const char*>(a));
    }
    // Rows [from, to), into L1 (or, with kToL2, into L2 only).
    template <bool kToL2 = false>
    void fetch(int64_t from, int64_t to) const {
        if (from >= to || !x) return;
        Cursor cursor = at(from);
        fetch_to<kToL2>(cursor, to);
    }
    // GCC deletes a loop of nothing but __builtin_prefetch as free of side effects.
    template <bool kToL2 = false>
    static void line(const char* p) {
#if defined(__x86_64__) || defined(__i386__)
        if constexpr (kToL2) asm volatile("prefetcht1 %0" : : "m"(*p));
        else asm volatile("prefetcht0 %0" : : "m"(*p));
#else
        __builtin_prefetch(p, 0, kToL2 ? 2 : 3);
#endif
    }
};

template <class V, class T>
inline V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}
template <class V, class T>
inline void store(T* p, const V& v) {
    std::memcpy(p, &v, sizeof(V));
}
// Every lane x, in one broadcast: x - 0 is x for every x (-0 too), so GCC
// drops the subtraction, where V{} + x cost an add first (-0 + 0 is +0).
template <class V, class T>
inline V splat(T x) {
    return x - V{};
}

// A mask of vector lanes: first_lanes, lanes [0, n), 0 <= n <= L; and
// lanes_between, lanes [lo, hi), 0 <= lo <= hi <= L.
#if FASTCONV_VECTOR_BYTES == 64
using LaneMask = unsigned;
template <class T>
inline LaneMask first_lanes(int64_t n) {
    return (1u << n) - 1u;
}
template <class T>
inline LaneMask lanes_between(int64_t lo, int64_t hi) {
    return first_lanes<T>(hi) & ~first_lanes<T>(lo);
}
#else
using LaneMask = __m256i;
template <class T>
inline LaneMask first_lanes(int64_t n) {
    if constexpr (sizeof(T) == 4)
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    else return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
template <class T>
inline LaneMask lanes_between(int64_t lo, int64_t hi) {
    return _mm256_andnot_si256(first_lanes<T>(lo), first_lanes<T>(hi));
}
#endif

// The values at p of the lanes in `mask`, the other lanes zero: a masked
// load, which reads nothing of the other lanes (no fault past the end of an
// array; p may point before the values it needs, as long as it stays within
// their allocation).
template <class V, class T>
inline V load_masked(const T* p, LaneMask mask) {
#if FASTCONV_VECTOR_BYTES == 64
    if constexpr (sizeof(T) == 4) return (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(mask), p);
    else return (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>(mask), p);
#else
    if constexpr (sizeof(T) == 4) return (V)_mm256_maskload_ps(p, mask);
    else return (V)_mm256_maskload_pd(p, mask);
#endif
}

// The first n values at p, 0 < n < L, the other lanes zero; nothing past p
// + n is read: a masked load. With AVX2, where the vector would cross into
// the next 4 KiB page, halves, pairs and single values put together in
// registers instead: vmaskmovps does not touch the lanes it leaves out on a
// real CPU, but QEMU 7.2's emulation, which the AVX2-only CI job runs on,
// reads them all, and faulted at the end of an array whose next page was
// unmapped. (Always in parts, the float32 depthwise backward, whose plane
// copies end every row with a tail, ran 7 % slower on Zen 4; copied one by
// one into a vector of zeros in memory, a stalled load each, 1.45x.)
#if FASTCONV_VECTOR_BYTES == 32
inline __m128 load_first_4(const float* p, int64_t n) {  // 0 <= n <= 4 floats
    if (n == 4) return _mm_loadu_ps(p);
    if (n == 0) return _mm_setzero_ps();
    if (n == 1) return _mm_load_ss(p);
    // Two floats as one 64-bit load (_mm_loadl_epi64 reads through an unaligned
    // type; _mm_load_sd dereferences a double*, undefined at a float's alignment).
    const __m128 pair = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return n == 2 ? pair : _mm_movelh_ps(pair, _mm_load_ss(p + 2));
}
inline __m128d load_first_2(const double* p, int64_t n) {  // 0 <= n <= 2 doubles
    return n == 2 ? _mm_loadu_pd(p) : n == 1 ? _mm_load_sd(p) : _mm_setzero_pd();
}
#endif
template <class V, class T>
inline V load_first(const T* p, int64_t n) {
#if FASTCONV_VECTOR_BYTES == 64
    return load_masked<V>(p, first_lanes<T>(n));
#else
    constexpr uintptr_t kPage = 4096;  // the smallest x86-64 page: a vector inside one reads mapped memory only
    if ((reinterpret_cast<uintptr_t>(p) & (kPage - 1)) <= kPage - sizeof(V)) return load_masked<V>(p, first_lanes<T>(n));
    if constexpr (sizeof(T) == 4) {
        const __m128 lo = load_first_4(p, std::min<int64_t>(n, 4)), hi = load_first_4(p + 4, std::max<int64_t>(n - 4, 0));
        return (V)_mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
    } else {
        const __m128d lo = load_first_2(p, std::min<int64_t>(n, 2)), hi = load_first_2(p + 2, std::max<int64_t>(n - 2, 0));
        return (V)_mm256_insertf128_pd(_mm256_castpd128_pd256(lo), hi, 1);
    }
#endif
}

// Stores the first n values of v at p, 0 < n < L, leaving the memory past
// p + n untouched. AVX-512: a masked store. AVX2: halves, pairs and a single
// value, as n says; its masked store (vmaskmovps) took a half of the time of
// the depthwise forward's output rows of 28 float32 (3 vectors and 4 values)
// on Zen 4, where AMD cores run it slowly.
template <class V, class T>
inline void store_first(T* p, const V& v, int64_t n) {
#if FASTCONV_VECTOR_BYTES == 64
    if constexpr (sizeof(T) == 4) _mm512_mask_storeu_ps(p, static_cast<__mmask16>(first_lanes<T>(n)), (__m512)v);
    else _mm512_mask_storeu_pd(p, static_cast<__mmask8>(first_lanes<T>(n)), (__m512d)v);
#else
    if constexpr (sizeof(T) == 4) {
        __m128 part = _mm256_castps256_ps128((__m256)v);
        if (n >= 4) _mm_storeu_ps(p, part), part = _mm256_extractf128_ps((__m256)v, 1), p += 4, n -= 4;
        if (n >= 2) _mm_storel_pi(reinterpret_cast<__m64*>(p), part), part = _mm_movehl_ps(part, part), p += 2, n -= 2;
        if (n >= 1) _mm_store_ss(p, part);
    } else {
        __m128d part = _mm256_castpd256_pd128((__m256d)v);
        if (n >= 2) _mm_storeu_pd(p, part), part = _mm256_extractf128_pd((__m256d)v, 1), p += 2, n -= 2;
        if (n >= 1) _mm_store_sd(p, part);
    }
#endif
}

// acc += a * b, one FMA into acc's own register (the bits of GCC's contracted
// acc += a * b). Where one vector meets several sums, GCC otherwise took the
// form that overwrites the vector with a sum, and rotated the sums among
// registers with a move each per step: moves that share Intel's second
// 512-bit FMA port (llvm-mca, skylake-avx512).
template <class V>
inline void fma_in_place(V& acc, const V a, const V b) {
    if constexpr (sizeof(a[0]) == 4) {
        asm("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    } else {
        asm("vfmadd231pd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    }
}

// fma_in_place on an element of an array of sums, through a copy: GCC kept
// the whole array on the stack where the asm's operand was the element
// itself (rows_shared_micro: 22 to 42 stack operands in its loop).
template <class V>
inline void fma_into(V& acc, const V a, const V b) {
    V sum = acc;
    fma_in_place(sum, a, b);
    acc = sum;
}

// The vector at base + M * index bytes (M 1, 2, 4 or 8), in x86's scaled-index
// addressing: GCC otherwise works out M * index into a register of its own,
// one per distinct M and base, beyond the registers a kernel has. The asm
// declares no memory read (a memory operand made GCC form every address
// again: 46 % on skylake-avx512), so GCC could move it past a store to what
// it reads: use it only in a kernel called through a function pointer (the
// RowsShared tables), whose caller's stores all come before the call.
// D: a constant displacement in bytes, in the instruction rather than in a
// register of its own. M 0: base + D, no index (a load GCC cannot repeat
// in place of keeping its value in a register).
template <class V, int M, int D = 0>
inline V load_scaled(const char* base, int64_t index) {
    static_assert(M == 0 || M == 1 || M == 2 || M == 4 || M == 8);
    V v;
    if constexpr (M == 0) asm("vmovups %c2(%1), %0" : "=v"(v) : "r"(base), "i"(D) : );
    else if constexpr (D == 0) asm("vmovups (%1,%2,%c3), %0" : "=v"(v) : "r"(base), "r"(index), "i"(M) : );
    else asm("vmovups %c4(%1,%2,%c3), %0" : "=v"(v) : "r"(base), "r"(index), "i"(M), "i"(D) : );
    return v;
}

// acc += w * the vector at base + M * index + D bytes (M 0: base + D), the
// load folded into the FMA, for a kernel that uses each vector it loads
// once: separate 512-bit loads count two micro-ops each, one on an FMA port,
// in llvm-mca's Skylake-server model. The caveat of load_scaled holds.
template <class T, int M, int D, class V>
inline void fma_scaled(V& acc, const V w, const char* base, int64_t index) {
    static_assert(M == 0 || M == 1 || M == 2 || M == 4 || M == 8);
    if constexpr (std::is_same_v<T, float>) {
        if constexpr (M == 0) asm("vfmadd231ps %c3(%2), %1, %0" : "+v"(acc) : "v"(w), "r"(base), "i"(D));
        else asm("vfmadd231ps %c5(%2,%3,%c4), %1, %0" : "+v"(acc) : "v"(w), "r"(base), "r"(index), "i"(M), "i"(D));
    } else {
        if constexpr (M == 0) asm("vfmadd231pd %c3(%2), %1, %0" : "+v"(acc) : "v"(w), "r"(base), "i"(D));
        else asm("vfmadd231pd %c5(%2,%3,%c4), %1, %0" : "+v"(acc) : "v"(w), "r"(base), "r"(index), "i"(M), "i"(D));
    }
}

// out[i * ldo + j] = in[j * ldi + i], i, j < L = kLanes<T>: an L x L tile
// transposed in registers by log2(L) rounds of two-vector shuffles, where
// round H swaps the off-diagonal H x H blocks of each 2H x 2H block.
// Scalar where the compiler has no __builtin_shufflevector (before GCC 12).
constexpr int transpose_lane(int lanes, int h, bool high, int k) {
    const int base = k / (2 * h) * 2 * h + (high ? h : 0), r = k % (2 * h);
    return r < h ? base + r : lanes + base + r - h;  // from a, else from b
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define FASTCONV_HAS_SHUFFLEVECTOR 1
#endif
#endif

#ifdef FASTCONV_HAS_SHUFFLEVECTOR
template <class V, int L, int H, std::size_t... K>
inline void transpose_round(V (&r)[L], std::index_sequence<K...> lanes) {
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) {
        if (i & H) continue;
        const V a = r[i], b = r[i + H];
        r[i] = __builtin_shufflevector(a, b, transpose_lane(L, H, false, static_cast<int>(K))...);
        r[i + H] = __builtin_shufflevector(a, b, transpose_lane(L, H, true, static_cast<int>(K))...);
    }
    if constexpr (H > 1) transpose_round<V, L, H / 2>(r, lanes);
}
#endif

// kAdd: out[i * ldo + j] = in[j * ldi + i] + add[i], a value added to each
// output row (a filter's bias).
template <class T, bool kAdd = false>
inline void transpose_tile(const T* __restrict in, int64_t ldi, T* __restrict out, int64_t ldo,
                           const T* __restrict add = nullptr) {
    constexpr int L = kLanes<T>;
#ifdef FASTCONV_HAS_SHUFFLEVECTOR
    using V = typename Simd<T>::vec;
    V r[L];
    // Unrolled, or GCC keeps r on the stack for AVX2's 8 x 8 floats and
    // copies it out 16 bytes at a time (this function: 3.9 % of an AVX2
    // cifar forward's time, 2.8 % unrolled; Zen 4).
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) r[i] = load<V>(in + i * ldi);
    transpose_round<V, L, L / 2>(r, std::make_index_sequence<L>{});
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) {
        if constexpr (kAdd) store(out + i * ldo, r[i] + add[i]);
        else store(out + i * ldo, r[i]);
    }
#else
    for (int i = 0; i < L; ++i)
        for (int j = 0; j < L; ++j) {
            if constexpr (kAdd) out[i * ldo + j] = in[j * ldi + i] + add[i];
            else out[i * ldo + j] = in[j * ldi + i];
        }
#endif
}

// The forward's weights, [groups * filters per group][taps]: weight_of(g, m,
// j) for the kernels, and whole rows for those that pack them transposed.
template <class T>
struct WeightRows {
    const T* weight;
    int64_t kg, ntaps;
    T operator()(int64_t g, int64_t m, int64_t j) const { return weight[(g * kg + m) * ntaps + j]; }
    const T* row(int64_t g, int64_t m) const { return weight + (g * kg + m) * ntaps; }
};

// The weights of the stride-1 forward convolution that computes one phase of
// dL/dx (backward_data_by_phase): its filter c of group g is the layer's
// input channel g * cg + c, its tap j = (kk, t) the layer's filter
// g * kg + kk at the phase's t-th tap, which sits at offset source[t] (kr *
// S + ks, the kernel flipped) in each R x S kernel of `weight`.
template <class T>
struct PhaseWeights {
    const T* weight;  // the layer's [K][C / groups][R][S]
    int64_t kg, cg, kernel_taps, per_filter;  // kernel_taps = R * S; per_filter: the phase's taps
    const int64_t* source;                    // [per_filter]
    T operator()(int64_t g, int64_t c, int64_t j) const {
        const int64_t kk = j / per_filter, t = j - kk * per_filter;
        return weight[((g * kg + kk) * cg + c) * kernel_taps + source[t]];
    }
};

// One reduction index j: where its source value sits relative to a pixel.
struct Tap {
    int64_t channel;  // element offset of the source channel plane
    int64_t dr, dc;   // row and column offsets added to the pixel's source position
};

// Pixels (n, u, v) of a grid; source position (u * su + dr, v * sv + dc).
struct SourceGrid {
    int64_t rows, cols;       // grid size per image (U, V)
    int64_t su, sv;           // source step per grid step
    int64_t batch_stride;     // elements between images in the source
    int64_t height, width;    // source plane size
    int64_t row_stride, col_stride;  // elements between source rows, columns
};

// A run of consecutive grid columns inside one grid row of one image.
struct Segment {
    int64_t n, u, v0, len, offset;  // offset: position inside the tile
};

// The order in which the tiles of a gather GEMM take the grid's pixels. The
// first `head` pixels of every image come first, image after image; then
// the rest of each image, image after image. With head a whole number of
// tiles, every tile of the heads lies inside one image (and can be read in
// place), and the short rests of all images share the last tiles, instead
// of a tile straddling two images after every image.
struct PixelOrder {
    int64_t batch, per_image, head;
    // Image and position in it of the q-th pixel, and how many pixels from
    // there on are consecutive in the image and in this order.
    void locate(int64_t q, int64_t& n, int64_t& pos, int64_t& run) const {
        if (q < batch * head) {
            n = q / head;
            pos = q % head;
            run = head - pos;
            return;
        }
        const int64_t r = q - batch * head, rest = per_image - head;
        n = r / rest;
        pos = head + r % rest;
        run = per_image - pos;
    }
};

// Cuts the pixels [q0, q0 + count) of that order into row segments.
inline int split_segments(const SourceGrid& grid, const PixelOrder& order, int64_t q0, int64_t count,
                          Segment* out) {
    int used = 0;
    int64_t q = q0, offset = 0;
    while (offset < count) {
        int64_t n, pos, run;
        order.locate(q, n, pos, run);
        const int64_t u = pos / grid.cols, v0 = pos % grid.cols;
        const int64_t len = std::min({grid.cols - v0, run, count - offset});
        out[used++] = Segment{n, u, v0, len, offset};
        q += len;
        offset += len;
    }
    return used;
}

// dst[0, len) = src[0, len). Packing copies many short runs (an image row of
// a small layer): the tail is one masked load but an unmasked store (masked
// stores are slow on some CPUs), so up to a vector of zeros lands past
// dst + len. Callers write their panels in increasing order and keep
// kCopySlack elements of room at the end, so that spill is always either
// overwritten later or unused.
template <class T>
constexpr int64_t kCopySlack = kLanes<T>;

template <class T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int64_t len) {
    using V = typename Simd<T>::vec;
    constexpr int64_t L = kLanes<T>;
    int64_t i = 0;
    for (; i + L <= len; i += L) store(dst + i, load<V>(src + i));
    if (i < len) store(dst + i, load_first<V>(src + i, len - i));
}

// panel[j * width + i] = source value of tap j for the tile's pixel i; zeros in
// the padding and in the unused tail [filled, width).
template <class T>
void pack_panel(const T* src, const SourceGrid& grid, const Tap* taps, int64_t ntaps, const Segment* segs,
                int nsegs, int64_t filled, int64_t width, T* panel) {
    for (int64_t j = 0; j < ntaps; ++j) {
        const Tap t = taps[j];
        T* row_out = panel + j * width;
        for (int si = 0; si < nsegs; ++si) {
            const Segment& s = segs[si];
            T* dst = row_out + s.offset;
            const int64_t r = s.u * grid.su + t.dr;
            if (r < 0 || r >= grid.height) {
                std::fill(dst, dst + s.len, T(0));
                continue;
            }
            const int64_t c0 = s.v0 * grid.sv + t.dc;
            int64_t lo, hi;
            valid_range(c0, grid.sv, s.len, grid.width, lo, hi);
            const T* line = src + s.n * grid.batch_stride + t.channel + r * grid.row_stride + c0 * grid.col_stride;
            const int64_t step = grid.sv * grid.col_stride;
            std::fill(dst, dst + lo, T(0));
            if (step == 1) {
                copy_run(dst + lo, line + lo, hi - lo);
            } else {
                for (int64_t i = lo; i < hi; ++i) dst[i] = line[i * step];
            }
            std::fill(dst + hi, dst + s.len, T(0));
        }
        std::fill(row_out + filled, row_out + width, T(0));
    }
}

// pack_panel where tap j is the whole source plane j (a 1x1 layer at stride
// 1, no padding): segment by segment, each plane's run in turn, so that the
// reads go a plane apart, a stride the hardware fetches ahead. Tap by tap, a
// pointwise layer's tiles of each image's last pixels (8 x 256 x 14 x 14:
// 32 pixels of 8 images, 8 K values) took 2.3 % of its AVX2 forward, the
// reads of 2 K cold lines one after another.
template <class T>
void pack_planes(const T* src, const SourceGrid& grid, int64_t ntaps, int64_t plane, const Segment* segs, int nsegs,
                 int64_t filled, int64_t width, T* panel) {
    constexpr int64_t L = kLanes<T>;
    for (int si = 0; si < nsegs; ++si) {
        const Segment& s = segs[si];
        const T* from = src + s.n * grid.batch_stride + s.u * grid.width + s.v0;
        // copy_run's spill lands on the row's later segments, written after
        // this one, or past `filled`, zeroed last; never on the next row.
        if (s.offset + (s.len + L - 1) / L * L <= width) {
            for (int64_t j = 0; j < ntaps; ++j) copy_run(panel + j * width + s.offset, from + j * plane, s.len);
        } else {
            for (int64_t j = 0; j < ntaps; ++j) std::copy(from + j * plane, from + j * plane + s.len, panel + j * width + s.offset);
        }
    }
    if (filled < width)
        for (int64_t j = 0; j < ntaps; ++j) std::fill(panel + j * width + filled, panel + (j + 1) * width, T(0));
}

// The micro-kernel of every GEMM-shaped kernel here: c[i * ldc + pixel] =
// init[i] (0 without init) + the sum over the taps t of a[j * MR + i] *
// b_t[pixel], for MR rows and NV vectors of pixels held in registers. Either
// every tap j = t in order, B row t at base + t * step (a packed panel, or
// input planes read in place: nothing to look up, so the loop's integer work
// is two pointer bumps), or the listed taps j = live[t] with B rows at base +
// offset[j] (rows of a padded window, taps that only read padding left out).
template <int MR, int NV, class T, class V>
__attribute__((always_inline)) inline void row_tap(V (&acc)[MR][NV], const T* __restrict b, const T* __restrict a) {
    constexpr int L = kLanes<T>;
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = load<V>(b + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
        const T av = a[i];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
    }
}

// B rows are a plane or a panel row apart, a stride the hardware does not
// fetch ahead into L1: the caller asks for the row of the tap kRowsAhead on.
constexpr int64_t kRowsAhead = 8;

template <class T, int NV>
__attribute__((always_inline)) inline void prefetch_row(const T* row) {
    constexpr int64_t kRowBytes = NV * kLanes<T> * static_cast<int64_t>(sizeof(T));
    const char* bytes = reinterpret_cast<const char*>(row);
#pragma GCC unroll 8
    for (int64_t o = 0; o < kRowBytes; o += 64) __builtin_prefetch(bytes + o);
    __builtin_prefetch(bytes + kRowBytes - 1);  // the row's last line, where it is not aligned
}

template <class T, int MR, int NV>
void row_micro(const T* __restrict base, int64_t step, const int64_t* __restrict offset, const int32_t* __restrict live,
               int64_t ntaps, const T* __restrict a, T* __restrict c, int64_t ldc, const T* __restrict init) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = init ? V{} + init[i] : V{};
    if (!live) {
        const T* b = base;
        for (int64_t t = 0; t < ntaps; ++t, b += step, a += MR) {
            if (t + kRowsAhead < ntaps) prefetch_row<T, NV>(b + kRowsAhead * step);
            row_tap<MR, NV>(acc, b, a);
        }
    } else {
        for (int64_t t = 0; t < ntaps; ++t) {
            const int32_t j = live[t];
            if (t + kRowsAhead < ntaps) prefetch_row<T, NV>(base + offset[live[t + kRowsAhead]]);
            row_tap<MR, NV>(acc, base + offset[j], a + static_cast<int64_t>(j) * MR);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) store(c + i * ldc + v * L, acc[i][v]);
}

template <class T>
using RowMicro = void (*)(const T*, int64_t, const int64_t*, const int32_t*, int64_t, const T*, T*, int64_t, const T*);

template <class T, int NV, int... R>
RowMicro<T> pick_row_micro(int rows, std::integer_sequence<int, R...>) {
    RowMicro<T> table[] = {&row_micro<T, R + 1, NV>...};
    return table[rows - 1];
}

// The micro-kernel for `rows` (1..FASTCONV_MR) rows and NV vectors of pixels.
template <class T, int NV>
RowMicro<T> micro_for_rows(int rows) {
    return pick_row_micro<T, NV>(rows, std::make_integer_sequence<int, FASTCONV_MR>{});
}

// The same for nv (1..kVectorsPerTile) vectors chosen at run time.
template <class T>
RowMicro<T> micro_for_rows(int rows, int nv) {
    if (nv == 1) return micro_for_rows<T, 1>(rows);
    if constexpr (kVectorsPerTile > 2)
        if (nv == 2) return micro_for_rows<T, 2>(rows);
    return micro_for_rows<T, kVectorsPerTile>(rows);
}

// row_micro for NR output rows at once of a kernel R rows tall, at row
// stride and dilation 1: c[(i * NR + r) * ldc + pixel] = init[i] (0 without
// init) + the sum over every tap j of a[j * MR + i] * base[offset[j] + r *
// row_step + pixel]. The output rows' taps of one kernel column read NR + R
// - 1 rows, so each row vector is loaded once and serves every kernel row
// that reaches it, instead of once per (tap, output row). Taps j = (channel
// * R + kr) * S + ks; offset[j] - kr * row_step is the same for every kr.
// `fetch` (may be null): rows fetched a share per channel, as the kernel goes.
template <class T, int MR, int NR, int NV, int R>
void rows_shared_micro(const T* __restrict base, int64_t row_step, const int64_t* __restrict offset, int64_t channels,
                       int64_t S, const T* __restrict a, const T* __restrict init, T* __restrict c, int64_t ldc,
                       const RowFetch* fetch) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    // Several filters: kernel rows outermost, the NR output rows' input rows
    // held in registers (one loaded per kernel row after the first), each
    // weight broadcast once into a register for its NR x NV FMAs. Holding the
    // R x MR weights of a kernel column instead outgrew AVX2's 16 registers
    // (GCC kept sums on the stack, about 55 % of the FMA peak on Zen 5; then
    // each weight broadcast again for every input row, 36 broadcasts per 36
    // FMAs: llvm-mca 75 % on znver3/4, 84 % on skylake-avx512, where the
    // broadcasts count as shuffles or loads) and left AVX-512's 3-filter,
    // 3-vector instance one register short (a spill; 88.5 % on both models).
    // Now 99.9 % on every model for AVX2, 93.1 % on skylake-avx512 for
    // AVX-512; on Zen 4, AVX2 dL/dx of 3 channels with 5x5 and 7x7 kernels
    // took 0.84-0.90 of the time. One filter keeps the order below: its 12
    // rows would not fit.
    constexpr bool kRowsHeld = MR * R > NR * NV;
    // Otherwise, where registers are left over, each row vector is pinned in
    // one (an empty asm) and each FMA goes into its sum's own register: GCC
    // loaded a row again for each FMA or folded it into them, and rotated
    // the sums with moves (AVX-512, one filter of 8 rows x 2 vectors:
    // llvm-mca 81.3 % on skylake-avx512, 96.0 % pinned; on Zen 4 the
    // one-channel and depthwise forwards took 0.85-0.88 of the time). AVX2's
    // one filter of 12 rows fills all 16 registers: pinning put sums on the stack.
    constexpr bool kPinned = MR * NR * NV + MR * R + NV < kVectorRegisters;
    V acc[MR][NR][NV];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][r][v] = init ? V{} + init[i] : V{};
    // About (end - first) / channels rows per channel: one division per call.
    RowFetch::Cursor cursor;
    int64_t step = 0;
    if (fetch && fetch->x && fetch->first < fetch->end) {
        cursor = fetch->at(fetch->first);
        step = (fetch->end - fetch->first + channels - 1) / channels;
    }
    // Input row ir of a tap at row_base[ir] + offset: one address register
    // per row, no address arithmetic in the loop; but 14 rows (one filter's
    // 12) outnumber the free registers. With AVX-512 those are read from four
    // anchor rows, 0, 3, 4 and 9, as anchor + m * row_step with m in {0, 1,
    // 2, 4, 8}: the scaled index of x86's addressing, four additions a tap.
    // GCC otherwise kept the 14 row offsets in integer, vector and stack
    // slots, moved them back each tap, and the moves took Intel's FMA ports
    // (llvm-mca skylake-avx512: 76.8-78.2 % of the FMA peak, 92.3 %
    // anchored; in L1 on Zen 4 76-83 -> 88-92 %). AVX2's anchors spilled
    // (68 % against 88 % on Zen 4): it keeps the plain form.
    constexpr bool kRowPointers = NR + R - 1 <= 10;
    // Only the instance measured: one vector of 12 rows of a 3-row kernel. The
    // depthwise plane's two vectors of 8 rows of a 4-, 5- or 7-row kernel
    // (11-14 rows) keep the plain form: anchored, Zen 4 ran them within noise
    // of it (1.5 % slower to 3 % faster; float64 7x7 up to 5 % slower).
    constexpr bool kAnchors = FASTCONV_VECTOR_BYTES == 64 && NV == 1 && NR + R - 1 == 14;
    const T* row_base[NR + R - 1];
#pragma GCC unroll 16
    for (int ir = 0; ir < NR + R - 1; ++ir) row_base[ir] = base + ir * row_step;
    const int64_t row_bytes = row_step * static_cast<int64_t>(sizeof(T));
    // Vector v of input row ir of the tap at offset `tap` (ir a constant once
    // the loop over rows is unrolled).
    const auto row_vector = [&](int ir, int64_t tap, int v) -> V {
        if constexpr (kRowPointers) return load<V>(row_base[ir] + tap + v * L);
        else if constexpr (kAnchors) {
            // The anchor at or above row ir, 0, 1, 2, 4 or 8 rows up.
            constexpr int anchor_of[14] = {0, 0, 0, 3, 0, 3, 4, 3, 0, 9, 9, 9, 4, 9};
            const int a = anchor_of[ir], m = ir - a;
            const char* at = reinterpret_cast<const char*>(row_base[a] + tap + v * L);
            switch (m) {
                case 1: return load_scaled<V, 1>(at, row_bytes);
                case 2: return load_scaled<V, 2>(at, row_bytes);
                case 4: return load_scaled<V, 4>(at, row_bytes);
                case 8: return load_scaled<V, 8>(at, row_bytes);
                default: return load<V>(reinterpret_cast<const T*>(at));
            }
        } else return load<V>(base + ir * row_step + tap + v * L);
    };
    for (int64_t ch = 0; ch < channels; ++ch) {
        if (step) fetch->fetch_to(cursor, std::min(fetch->end, cursor.k + step));
        for (int64_t ks = 0; ks < S; ++ks) {
            const int64_t j0 = ch * R * S + ks;  // tap (ch, kr = 0, ks)
            if constexpr (kRowsHeld) {
                V row[NR][NV];  // input row ir in row[ir % NR]
#pragma GCC unroll 8
                for (int kr = 0; kr < R; ++kr) {
#pragma GCC unroll 8
                    for (int r = 0; r < NR; ++r) {
                        if (kr > 0 && r < NR - 1) continue;  // row kr + r is held
#pragma GCC unroll 4
                        for (int v = 0; v < NV; ++v) row[(kr + r) % NR][v] = load<V>(row_base[kr + r] + offset[j0] + v * L);
                    }
#pragma GCC unroll 4
                    for (int i = 0; i < MR; ++i) {
                        const V w = splat<V>(a[(j0 + kr * S) * MR + i]);
#pragma GCC unroll 8
                        for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
                            for (int v = 0; v < NV; ++v) fma_into(acc[i][r][v], w, row[(kr + r) % NR][v]);
                    }
                }
                continue;
            }
#pragma GCC unroll 16
            for (int ir = 0; ir < NR + R - 1; ++ir) {
                V bv[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) {
                    bv[v] = row_vector(ir, offset[j0], v);
                    if constexpr (kPinned) asm("" : "+v"(bv[v]));
                }
#pragma GCC unroll 8
                for (int kr = 0; kr < R; ++kr) {
                    const int r = ir - kr;  // the output row that kernel row kr reads row ir for
                    if (r < 0 || r >= NR) continue;
#pragma GCC unroll 4
                    for (int i = 0; i < MR; ++i) {
                        const V w = splat<V>(a[(j0 + kr * S) * MR + i]);
#pragma GCC unroll 4
                        for (int v = 0; v < NV; ++v) {
                            if constexpr (kPinned) fma_into(acc[i][r][v], w, bv[v]);
                            else acc[i][r][v] += w * bv[v];
                        }
                    }
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) store(c + (i * NR + r) * ldc + v * L, acc[i][r][v]);
}

template <class T>
using RowsShared = void (*)(const T*, int64_t, const int64_t*, int64_t, int64_t, const T*, const T*, T*, int64_t,
                            const RowFetch*);

// The rows_shared_micro for a kernel r rows tall: 3, 4, 5 or 7 (3x3, 5x5 and
// 7x7 layers and their stride-2 backward phases); null for other heights.
template <class T, int MR, int NR, int NV>
RowsShared<T> rows_shared_for_height(int64_t r) {
    switch (r) {
        case 3: return &rows_shared_micro<T, MR, NR, NV, 3>;
        case 4: return &rows_shared_micro<T, MR, NR, NV, 4>;
        case 5: return &rows_shared_micro<T, MR, NR, NV, 5>;
        case 7: return &rows_shared_micro<T, MR, NR, NV, 7>;
        default: return nullptr;
    }
}

// Ranges of weight blocks that each thread packs for itself, when it first
// meets a task of the range, rather than the call packing a copy of all the
// weights: as few ranges as keep one within kBytes, all about the same size
// (16 blocks of 0.6 MiB: 4 ranges of 4, not 5 + 5 + 5 + 1).
struct PackRanges {
    static constexpr int64_t kBytes = int64_t(3) << 20;
    int64_t blocks = 1, count = 1, per_range = 1;  // blocks; ranges, and blocks per range (the last may have fewer)
    PackRanges(int64_t blocks_, int64_t block_bytes) : blocks(blocks_) {
        const int64_t most = std::clamp<int64_t>(kBytes / block_bytes, 1, blocks);
        count = (blocks + most - 1) / most;
        per_range = (blocks + count - 1) / count;
    }

    // The work of such a kernel is one unit per group, range, item (a window
    // or a pixel tile: `items` per group) and block of the range, in that
    // order. Blocks are equal work, so threads that take equal runs of units
    // are balanced even where the last range has fewer blocks (whole (range,
    // item) tasks were not: 32 blocks in 7 ranges left one of 2 threads a
    // fifth more work), and each thread still meets a range in one run.
    struct Unit {
        int64_t group, range;  // range: counted over all groups
        int64_t item;
        int64_t block, first, end;  // the unit's block, and its range's [first, end)
    };
    int64_t units(int64_t groups, int64_t items) const { return groups * blocks * items; }
    // The end of the units of u's item in u's range: its run of blocks.
    int64_t item_end(int64_t u, int64_t items) const {
        const Unit at = unit(u, items);
        return u + (at.end - at.block);
    }
    Unit unit(int64_t u, int64_t items) const {
        const int64_t g = u / (blocks * items), ug = u % (blocks * items);
        const int64_t r = std::min(ug / (items * per_range), count - 1);
        const int64_t first = r * per_range, size = std::min(per_range, blocks - first);
        const int64_t rest = ug - items * first;
        return Unit{g, g * count + r, rest / size, first + rest % size, first, first + size};
    }
};

// Where the result of output channel m, grid pixel (n, u, v) goes:
// dst[n * batch_stride + m * channel_stride + (u * du + r0) * width + v * dv + c0].
struct Destination {
    int64_t batch_stride, channel_stride, width;
    int64_t du, dv, r0, c0;
};

// How many pixel tiles a gather GEMM's unit takes. A block's weights are
// read once per unit: with one tile per unit, all the weights of a range
// stream through the core for every tile, which is free while they stay in
// L2 but not where they overflow it (float64 pointwise, 256 x 256 filters:
// 512 KiB, read from L3 for every 8 pixels, 70 % of the FMA peak). Then a
// unit takes a few tiles whose B rows stay in L2 while each block's weights
// run over all of them from L1.
constexpr int64_t kMaxTileGroup = 8;
inline int64_t tile_group(int64_t range_bytes, int64_t tile_bytes, int64_t tiles) {
    const int64_t l2 = cache_sizes().l2;
    if (range_bytes <= l2 / 2 || tiles <= 1) return 1;  // no tiles: an empty batch
    return std::clamp<int64_t>(l2 / 4 / std::max<int64_t>(tile_bytes, 1), 1, std::min(kMaxTileGroup, tiles));
}

// One gather GEMM per group, all groups and pixel tiles in one parallel loop.
// A(g, m, j) gives the weight of output channel m for tap j in group g.
template <class T, class WeightOf>
void gather_gemm(int64_t groups, int64_t m_per_group, const std::vector<Tap>& taps, const SourceGrid& grid,
                 int64_t batch, const T* src, int64_t src_group_stride, T* dst, const Destination& out,
                 int64_t dst_group_stride, const T* bias, WeightOf weight_of) {
    constexpr int W = kTile<T>;
    const int64_t ntaps = static_cast<int64_t>(taps.size());
    const int64_t mr = FASTCONV_MR;
    const int64_t blocks = (m_per_group + mr - 1) / mr;

    // The work goes in units of one row block for one group of pixel tiles
    // (tile_group), range by range (PackRanges::Unit); each thread takes an
    // even run of them and packs the weights of a range -- panel[j][i] per
    // block, for the block's rows i -- when it enters it, so at most once per
    // range. More ranges would pack strided tiles more often.
    const int64_t block_values = mr * std::max<int64_t>(ntaps, 1);
    const PackRanges pack(blocks, block_values * static_cast<int64_t>(sizeof(T)));

    const int64_t pixels = batch * grid.rows * grid.cols;
    const int64_t tiles = (pixels + W - 1) / W;
    const int64_t tg = tile_group(pack.per_range * block_values * static_cast<int64_t>(sizeof(T)),
                                  ntaps * W * static_cast<int64_t>(sizeof(T)), tiles);
    const int64_t items = (tiles + tg - 1) / tg;
    const RowMicro<T> full = micro_for_rows<T, kVectorsPerTile>(static_cast<int>(std::min(mr, m_per_group)));
    const RowMicro<T> tail = micro_for_rows<T, kVectorsPerTile>(static_cast<int>(m_per_group - (blocks - 1) * mr));
    // Where the taps are whole source planes read as they are (a 1x1 kernel,
    // stride 1, no padding), a tile inside one image is read in place: tap j's
    // row is the source plane j from the tile's first pixel, nothing packed.
    const int64_t per_image = grid.rows * grid.cols, plane = grid.height * grid.width;
    bool in_place = grid.su == 1 && grid.sv == 1 && grid.rows == grid.height && grid.cols == grid.width &&
                    grid.row_stride == grid.width && grid.col_stride == 1;
    for (int64_t j = 0; j < ntaps && in_place; ++j)
        in_place = taps[static_cast<size_t>(j)].channel == j * plane && taps[static_cast<size_t>(j)].dr == 0 &&
                   taps[static_cast<size_t>(j)].dc == 0;
    // Read in place, each image's whole tiles come first, its rest later.
    const PixelOrder order{batch, per_image, in_place ? per_image / W * W : per_image};
    PerThread<T> panel_mem(tg * ntaps * W + kCopySlack<T>), result_mem(mr * W), a_mem(pack.per_range * block_values);
    // A thread done early takes units from the back of another's run when
    // all the weights are one range, which it has packed already.
    SharedUnits shared(pack.units(groups, items), pack.count == 1,
                       SharedUnits::units_per_take(2.0 * static_cast<double>(mr * tg * W * ntaps)));
    // The tiles of the unit's group: their pixels and where B's rows are.
    struct TileAt {
        Segment segs[W];
        int nsegs = 0;
        int64_t filled = 0;
        const T* b = nullptr;
        int64_t b_step = W;  // B row j at b + j * b_step: a panel row, or a plane in place
    };
    parallel_region(worth_parallel(2.0 * static_cast<double>(groups * m_per_group * ntaps) * static_cast<double>(pixels)), [&] {
        T* const panel = panel_mem.get();
        T* const result = result_mem.get();
        T* const a_packed = a_mem.get();
        int64_t packed_range = -1;  // the (group, range of blocks) in a_packed
        int64_t item_of = -1;       // the (group, group of tiles) that `at_tile` and panel hold
        TileAt at_tile[kMaxTileGroup];
        int64_t ntiles = 0;
        shared.start();
        for (;;) {
            const auto [u, u_end] = shared.next([&](int64_t v) { return pack.item_end(v, items); });
            if (u == u_end) break;
            const PackRanges::Unit at = pack.unit(u, items);
            const int64_t g = at.group, blk0 = at.first;
            if (at.range != packed_range) {
                for (int64_t blk = at.first; blk < at.end; ++blk) {
                    const int64_t m0 = blk * mr, rows = std::min(mr, m_per_group - m0);
                    T* a = a_packed + (blk - blk0) * block_values;
                    for (int64_t j = 0; j < ntaps; ++j)
                        for (int64_t i = 0; i < rows; ++i) a[j * rows + i] = weight_of(g, m0 + i, j);
                }
                packed_range = at.range;
            }
            if (item_of != g * items + at.item) {  // tiles are packed again only for another group of tiles
                ntiles = std::min(tg, tiles - at.item * tg);
                for (int64_t t = 0; t < ntiles; ++t) {
                    TileAt& ti = at_tile[t];
                    const int64_t q0 = (at.item * tg + t) * W;
                    ti.filled = std::min<int64_t>(W, pixels - q0);
                    ti.nsegs = split_segments(grid, order, q0, ti.filled, ti.segs);
                    ti.b = panel + t * ntaps * W;
                    ti.b_step = W;
                    if (in_place && q0 + W <= batch * order.head) {
                        ti.b = src + g * src_group_stride + ti.segs[0].n * grid.batch_stride + q0 % order.head;
                        ti.b_step = plane;
                    } else if (in_place) {
                        pack_planes(src + g * src_group_stride, grid, ntaps, plane, ti.segs, ti.nsegs, ti.filled, W,
                                    panel + t * ntaps * W);
                    } else {
                        pack_panel(src + g * src_group_stride, grid, taps.data(), ntaps, ti.segs, ti.nsegs, ti.filled,
                                   W, panel + t * ntaps * W);
                    }
                }
                item_of = g * items + at.item;
            }
            for (int64_t blk = at.block; blk < at.block + (u_end - u); ++blk) {
                const int64_t m0 = blk * mr, rows = std::min(mr, m_per_group - m0);
                const T* a = a_packed + (blk - blk0) * block_values;
                const T* init = bias ? bias + g * m_per_group + m0 : nullptr;
                const RowMicro<T> micro = blk + 1 < blocks ? full : tail;
                for (int64_t t = 0; t < ntiles; ++t) {
                    const TileAt& ti = at_tile[t];
                    const Segment* segs = ti.segs;
                    const int nsegs = ti.nsegs;
                    // A full tile whose outputs are one dense run (one image, rows
                    // adjacent in the destination) is written there directly.
                    const bool whole = ti.filled == W && segs[0].n == segs[nsegs - 1].n && out.dv == 1 &&
                                       (nsegs == 1 || (out.du == 1 && out.width == grid.cols));
                    if (whole) {
                        T* const direct = dst + g * dst_group_stride + segs[0].n * out.batch_stride +
                                          (segs[0].u * out.du + out.r0) * out.width + segs[0].v0 + out.c0;
                        micro(ti.b, ti.b_step, nullptr, nullptr, ntaps, a, direct + m0 * out.channel_stride,
                              out.channel_stride, init);
                        continue;
                    }
                    micro(ti.b, ti.b_step, nullptr, nullptr, ntaps, a, result, W, init);
                    for (int64_t i = 0; i < rows; ++i) {
                        const T* res = result + i * W;
                        T* base = dst + g * dst_group_stride + (m0 + i) * out.channel_stride;
                        for (int si = 0; si < nsegs; ++si) {
                            const Segment& s = segs[si];
                            T* o = base + s.n * out.batch_stride + (s.u * out.du + out.r0) * out.width +
                                   s.v0 * out.dv + out.c0;
                            const T* r = res + s.offset;
                            if (out.dv == 1) {
                                for (int64_t k = 0; k < s.len; ++k) o[k] = r[k];
                            } else {
                                for (int64_t k = 0; k < s.len; ++k) o[k * out.dv] = r[k];
                            }
                        }
                    }
                }
            }
        }
    });
}

}  // namespace fastconv::FASTCONV_ISA
