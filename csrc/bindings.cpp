// fastconv._core: turns NumPy arrays into raw pointers and a ConvShape, and
// calls the kernels with the GIL released. User input is validated in
// Python; the checks here only guard the kernels' contract (dtype, layout,
// shapes that agree), so a misuse of this private module cannot crash.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "cpu_facts.h"
#include "isa.h"
#include "kernels.h"
#include "peak_flops.h"
#ifdef FASTCONV_SANITIZER_CANARY
#include "sanitizer_canary.h"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using fastconv::ConvShape;

namespace {

using Pair = std::array<int64_t, 2>;
using Quad = std::array<int64_t, 4>;

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

// Element strides of a 4-D array that may be a strided view (channels-last
// data seen as NCHW); byte strides must be non-negative item multiples.
fastconv::Strides strides_of(const py::array& a, const char* name) {
    int64_t s[4];
    for (int i = 0; i < 4; ++i) {
        const auto bytes = static_cast<int64_t>(a.strides(i));
        if (bytes < 0 || bytes % a.itemsize() != 0)
            value_error(std::string(name) + ": strides must be non-negative multiples of the item size");
        s[i] = bytes / a.itemsize();
    }
    return fastconv::Strides{s[0], s[1], s[2], s[3]};
}

// Tensors (x, y and their gradients) may be strided views; weight and bias
// must be C-contiguous.
template <class T>
void check_array(const py::array& a, const char* name, bool writeable, py::ssize_t ndim, bool strided = false) {
    if (a.dtype().num() != py::dtype::of<T>().num() || a.dtype().byteorder() == '>')
        type_error(std::string(name) + ": expected a native " + std::string(py::str(py::dtype::of<T>())) +
                   " array, got " + std::string(py::str(a.dtype())));
    if (a.ndim() != ndim)
        value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                    std::to_string(a.ndim()));
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) value_error(std::string(name) + ": expected an aligned array");
    if (!strided && !(a.flags() & py::array::c_style)) value_error(std::string(name) + ": expected a C-contiguous array");
    if (writeable && !a.writeable()) value_error(std::string(name) + ": output array is read-only");
}

template <class T>
const T* in_ptr(const py::array& a, const char* name, py::ssize_t ndim = 4, bool strided = false) {
    check_array<T>(a, name, false, ndim, strided);
    return static_cast<const T*>(a.data());
}

template <class T>
T* out_ptr(py::array& a, const char* name, py::ssize_t ndim = 4, bool strided = false) {
    check_array<T>(a, name, true, ndim, strided);
    return static_cast<T*>(a.mutable_data());
}

// Shape from input (N, C, H, W), weight (K, C/groups, R, S) and output
// (N, K, out_h, out_w) dimensions plus the hyper-parameters; checked.
ConvShape make_shape(const py::array& x, const py::array& w, const py::array& y, Pair stride,
                     Quad padding, Pair dilation, int64_t groups) {
    for (const py::array* a : {&x, &w, &y})
        if (a->ndim() != 4) value_error("expected 4-dimensional arrays, got " + std::to_string(a->ndim()) + " dimensions");
    ConvShape p;
    p.n = x.shape(0), p.c = x.shape(1), p.h = x.shape(2), p.w = x.shape(3);
    p.k = w.shape(0), p.r = w.shape(2), p.s = w.shape(3);
    p.groups = groups;
    p.stride_h = stride[0], p.stride_w = stride[1];
    p.dil_h = dilation[0], p.dil_w = dilation[1];
    p.pad_top = padding[0], p.pad_bottom = padding[1], p.pad_left = padding[2], p.pad_right = padding[3];
    p.out_h = y.shape(2), p.out_w = y.shape(3);
    p.xs = strides_of(x, "x"), p.ys = strides_of(y, "y");
    p.check();
    if (groups < 1 || w.shape(1) * groups != p.c) value_error("weight channels do not match input channels / groups");
    if (y.shape(0) != p.n || y.shape(1) != p.k) value_error("output batch or channels do not match");
    return p;
}

bool is_float32(const py::array& a) { return a.dtype().num() == py::dtype::of<float>().num(); }

template <class T>
void forward_t(const py::array& x, const py::array& w, const py::object& bias, py::array& y, const ConvShape& p) {
    const T* b = nullptr;
    if (!bias.is_none()) {
        py::array bias_arr = bias.cast<py::array>();
        b = in_ptr<T>(bias_arr, "bias", 1);
        if (bias_arr.shape(0) != p.k) value_error("bias: expected shape (filters,)");
    }
    const T* xp = in_ptr<T>(x, "x", 4, true);
    const T* wp = in_ptr<T>(w, "weight");
    T* yp = out_ptr<T>(y, "out", 4, true);
    py::gil_scoped_release release;
    fastconv::conv_forward<T>(p, xp, wp, b, yp);
}

void forward(const py::array& x, const py::array& w, const py::object& bias, py::array out, Pair stride,
             Quad padding, Pair dilation, int64_t groups) {
    const ConvShape p = make_shape(x, w, out, stride, padding, dilation, groups);
    if (is_float32(x)) forward_t<float>(x, w, bias, out, p);
    else forward_t<double>(x, w, bias, out, p);
}

void backward_data(const py::array& grad_y, const py::array& w, py::array grad_x, Pair stride, Quad padding,
                   Pair dilation, int64_t groups) {
    const ConvShape p = make_shape(grad_x, w, grad_y, stride, padding, dilation, groups);
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* gy = in_ptr<T>(grad_y, "grad_y", 4, true);
        const T* wp = in_ptr<T>(w, "weight");
        T* gx = out_ptr<T>(grad_x, "grad_x", 4, true);
        py::gil_scoped_release release;
        fastconv::conv_backward_data<T>(p, gy, wp, gx);
    };
    if (is_float32(grad_y)) run(float{});
    else run(double{});
}

void backward_weights(const py::array& grad_y, const py::array& x, py::array grad_w, Pair stride, Quad padding,
                      Pair dilation, int64_t groups) {
    const ConvShape p = make_shape(x, grad_w, grad_y, stride, padding, dilation, groups);
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* gy = in_ptr<T>(grad_y, "grad_y", 4, true);
        const T* xp = in_ptr<T>(x, "x", 4, true);
        T* gw = out_ptr<T>(grad_w, "grad_weight");
        py::gil_scoped_release release;
        fastconv::conv_backward_weights<T>(p, gy, xp, gw, nullptr);
    };
    if (is_float32(grad_y)) run(float{});
    else run(double{});
}

// The whole backward pass in one call (one argument check, one GIL release):
// grad_x and grad_b are skipped when None.
void backward(const py::array& grad_y, const py::array& x, const py::array& w, const py::object& grad_x,
              py::array grad_w, const py::object& grad_b, Pair stride, Quad padding, Pair dilation, int64_t groups) {
    const ConvShape p = make_shape(x, w, grad_y, stride, padding, dilation, groups);
    py::array gx_arr = grad_x.is_none() ? py::array() : grad_x.cast<py::array>();
    py::array gb_arr = grad_b.is_none() ? py::array() : grad_b.cast<py::array>();
    ConvShape p_data = p;  // dL/dx's own strides: its layout need not be x's
    if (!grad_x.is_none()) {
        if (gx_arr.ndim() != 4) value_error("grad_x: expected 4 dimensions");
        for (int i = 0; i < 4; ++i)
            if (gx_arr.shape(i) != x.shape(i)) value_error("grad_x: expected the shape of x");
        p_data.xs = strides_of(gx_arr, "grad_x");
    }
    for (int i = 0; i < 4; ++i)
        if (grad_w.ndim() != 4 || grad_w.shape(i) != w.shape(i)) value_error("grad_weight: expected the shape of weight");
    if (!grad_b.is_none() && (gb_arr.ndim() != 1 || gb_arr.shape(0) != p.k))
        value_error("grad_bias: expected shape (filters,)");
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* gy = in_ptr<T>(grad_y, "grad_y", 4, true);
        const T* xp = in_ptr<T>(x, "x", 4, true);
        const T* wp = in_ptr<T>(w, "weight");
        T* gx = grad_x.is_none() ? nullptr : out_ptr<T>(gx_arr, "grad_x", 4, true);
        T* gw = out_ptr<T>(grad_w, "grad_weight");
        T* gb = grad_b.is_none() ? nullptr : out_ptr<T>(gb_arr, "grad_bias", 1);
        py::gil_scoped_release release;
        if (gx) fastconv::conv_backward_data<T>(p_data, gy, wp, gx);
        fastconv::conv_backward_weights<T>(p, gy, xp, gw, gb);
    };
    if (is_float32(grad_y)) run(float{});
    else run(double{});
}

void backward_bias(const py::array& grad_y, py::array grad_b) {
    if (grad_y.ndim() != 4) value_error("grad_y: expected 4 dimensions");
    if (grad_b.ndim() != 1 || grad_b.shape(0) != grad_y.shape(1)) value_error("grad_bias: expected shape (filters,)");
    ConvShape p;
    p.n = grad_y.shape(0), p.k = grad_y.shape(1), p.out_h = grad_y.shape(2), p.out_w = grad_y.shape(3);
    p.ys = strides_of(grad_y, "grad_y");
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* gy = in_ptr<T>(grad_y, "grad_y", 4, true);
        T* gb = out_ptr<T>(grad_b, "grad_bias", 1);
        py::gil_scoped_release release;
        fastconv::conv_backward_bias<T>(p, gy, gb);
    };
    if (is_float32(grad_y)) run(float{});
    else run(double{});
}

py::dict build_info() {
    py::dict info;
#ifdef _OPENMP
    info["openmp"] = py::int_(_OPENMP);
    info["max_threads"] = omp_get_max_threads();
#else
    info["openmp"] = py::none();
    info["max_threads"] = 1;
#endif
#if defined(__clang__)
    info["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = "gcc " __VERSION__;
#else
    info["compiler"] = "unknown";
#endif
    info["flags"] = FASTCONV_BUILD_FLAGS;
    return info;
}

fastconv::Isa parse_isa(const std::string& name) {
    for (auto isa : {fastconv::Isa::generic, fastconv::Isa::avx2, fastconv::Isa::avx512})
        if (name == fastconv::isa_name(isa)) return isa;
    value_error("unknown instruction set '" + name + "': expected 'avx512', 'avx2' or 'generic'");
}

std::vector<std::string> supported_isas() {
    std::vector<std::string> names;
    for (auto isa : {fastconv::Isa::avx512, fastconv::Isa::avx2, fastconv::Isa::generic})
        if (fastconv::cpu_supports(isa)) names.emplace_back(fastconv::isa_name(isa));
    return names;
}

// The named instruction set, which this CPU must run; None: the active one.
fastconv::Isa isa_or_active(const std::optional<std::string>& name) {
    if (!name) return fastconv::active_isa();
    const fastconv::Isa isa = parse_isa(*name);
    if (!fastconv::cpu_supports(isa)) value_error("this CPU cannot run instruction set '" + *name + "'");
    return isa;
}

py::dict cpu_facts(const std::optional<std::string>& isa_name, int64_t iterations) {
    if (iterations < 1) value_error("iterations must be >= 1, got " + std::to_string(iterations));
    const fastconv::Isa isa = isa_or_active(isa_name);
    const fastconv::CacheSizes& caches = fastconv::cache_sizes();
    fastconv::FmaRate rate;
    {
        py::gil_scoped_release release;
        rate = fastconv::measure_fma_rate(isa, iterations, 3);
    }
    py::dict facts;
    facts["isa"] = fastconv::isa_name(isa);
    facts["vector_bits"] = fastconv::vector_bits(isa);
    facts["vector_registers"] = fastconv::vector_registers(isa);
    facts["l1d_bytes"] = caches.l1d;
    facts["l2_bytes"] = caches.l2;
    facts["l3_bytes"] = caches.l3;
    facts["caches_reported"] = caches.reported;
    const bool measured = rate.peak_gflops > 0 && rate.clock_ghz > 0;
    facts["clock_ghz"] = measured ? py::object(py::float_(rate.clock_ghz)) : py::none();
    facts["fma_peak_gflops"] = measured ? py::object(py::float_(rate.peak_gflops)) : py::none();
    facts["fma_per_cycle"] = measured ? py::object(py::float_(rate.fma_per_cycle)) : py::none();
    // The FMA units at this width that so many FMAs per cycle imply.
    facts["fma_ports"] = measured ? py::object(py::int_(std::max(1L, std::lround(rate.fma_per_cycle)))) : py::none();
    return facts;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastconv's C++ convolution kernels (private: use fastconv.conv2d / Conv2D)";
    const auto geometry = std::make_tuple(py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"));
    m.def("forward", &forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
          std::get<0>(geometry), std::get<1>(geometry), std::get<2>(geometry), std::get<3>(geometry),
          "out = conv2d(x, weight) + bias, written into `out` (padding = top, bottom, left, right)");
    m.def("backward_data", &backward_data, py::arg("grad_y"), py::arg("weight"), py::arg("grad_x"),
          std::get<0>(geometry), std::get<1>(geometry), std::get<2>(geometry), std::get<3>(geometry),
          "grad_x = dL/dx, written into `grad_x`");
    m.def("backward_weights", &backward_weights, py::arg("grad_y"), py::arg("x"), py::arg("grad_weight"),
          std::get<0>(geometry), std::get<1>(geometry), std::get<2>(geometry), std::get<3>(geometry),
          "grad_weight = dL/dweight, written into `grad_weight`");
    m.def("backward", &backward, py::arg("grad_y"), py::arg("x"), py::arg("weight"), py::arg("grad_x"),
          py::arg("grad_weight"), py::arg("grad_bias"), std::get<0>(geometry), std::get<1>(geometry),
          std::get<2>(geometry), std::get<3>(geometry),
          "dL/dx, dL/dweight and dL/dbias into grad_x, grad_weight and grad_bias (grad_x, grad_bias: None skips)");
    m.def("backward_bias", &backward_bias, py::arg("grad_y"), py::arg("grad_bias"),
          "grad_bias = grad_y summed over batch and pixels");
    m.def("build_info", &build_info, "compiler, flags and OpenMP of this build");
    m.def(
        "max_threads",
        [] {
#ifdef _OPENMP
            return omp_get_max_threads();
#else
            return 1;
#endif
        },
        "threads the kernels use on the calling thread (OpenMP's nthreads-var: OMP_NUM_THREADS, "
        "omp_set_num_threads, threadpoolctl)");
    m.def(
        "set_num_threads",
        [](int n) {
            if (n < 1) value_error("number of threads must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
            omp_set_num_threads(n);
#endif
        },
        py::arg("n"), "threads the kernels use from now on (omp_set_num_threads)");
    m.def("isa", [] { return std::string(fastconv::isa_name(fastconv::active_isa())); },
          "the instruction set the kernels use now");
    m.def("set_isa", [](const std::string& name) { fastconv::set_active_isa(parse_isa(name)); }, py::arg("name"),
          "use the kernels built for this instruction set ('avx512', 'avx2' or 'generic')");
    m.def("supported_isas", &supported_isas, "instruction sets this CPU can run, best first");
    m.def(
        "peak_gflops",
        [](bool float64, int64_t iterations, int threads, const std::optional<std::string>& isa) {
            if (iterations < 1) value_error("iterations must be >= 1, got " + std::to_string(iterations));
            if (threads < 1 || threads > 4096)
                value_error("number of threads must be in 1..4096, got " + std::to_string(threads));
            const fastconv::Isa chosen = isa_or_active(isa);
            py::gil_scoped_release release;
            return fastconv::measure_peak_gflops_together(chosen, float64, iterations, threads);
        },
        py::arg("float64") = false, py::arg("iterations") = 20000000, py::arg("threads") = 1,
        py::arg("isa") = py::none(),
        "measured FMA peak in GFLOP/s of `threads` threads running at once (over the time they take "
        "together), with the FMA loop of instruction set `isa` (default: the one the kernels use now); "
        "0 for 'generic'");
    m.def("cpu_facts", &cpu_facts, py::arg("isa") = py::none(), py::arg("iterations") = 20000000,
          "what the kernels use of this CPU with instruction set `isa` (default: the one they use now): "
          "vector width and registers, cache sizes per core, and the measured clock, float32 FMA peak and "
          "vector FMAs per cycle (None for 'generic')");
#ifdef FASTCONV_SANITIZER_CANARY
    m.def("_canary", &fastconv::sanitizer_canary, py::arg("kind"),
          "a deliberate 'address' or 'undefined' bug (sanitizer CI build only)");
#endif
}
