// How the kernels run in parallel: the OpenMP region, per-thread workspace
// allocated before it, and the floating-point mode every thread computes in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define FASTCONV_HAS_MXCSR 1
#endif

namespace fastconv {

inline int64_t max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Bytes of RAM in the machine (no limit where the system cannot tell); asked
// once, since sysconf makes a system call.
inline size_t physical_memory() {
    static const size_t bytes = [] {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) return static_cast<size_t>(pages) * static_cast<size_t>(page);
#endif
        return static_cast<size_t>(-1);
    }();
    return bytes;
}

inline int64_t thread_num() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// This thread's run [begin, end) of `count` items split evenly over the
// team, as schedule(static) would, for loops that must see their whole run.
inline std::pair<int64_t, int64_t> thread_share(int64_t count) {
#ifdef _OPENMP
    const int64_t threads = omp_get_num_threads(), i = omp_get_thread_num();
#else
    const int64_t threads = 1, i = 0;
#endif
    return {count * i / threads, count * (i + 1) / threads};
}

// Waits for every thread of the team (nothing outside a parallel region).
inline void team_barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// Units of work shared out as thread_share does, but taken a few at a time:
// each thread takes runs of its own from the front, and a thread done with
// its own takes single units from the back of another's, so that a thread
// the machine slows (another tenant on its core, interrupts) does not hold up
// the call. Which thread computes a unit never changes what the unit
// computes. Each thread of the region calls start() once, then next(); or,
// to share out the units in pieces, start(first, end) for each piece, all
// threads the same pieces in the same order, with a barrier between pieces.
class SharedUnits {
  public:
    // A thread takes at most `most` units of its own at a time: about 2^21
    // flops of them (units_per_take), so that the units a thread has taken
    // but not done, which no thief can take, are little work.
    SharedUnits(int64_t count, bool steal, int64_t most)
        : count_(count), most_(std::max<int64_t>(most, 1)), steal_(steal), runs_(static_cast<size_t>(max_threads())) {}
    static int64_t units_per_take(double unit_flops) {
        return static_cast<int64_t>(std::clamp(double(1 << 21) / std::max(unit_flops, 1.0), 1.0, 1e9));
    }

    void start() { start(0, count_); }
    // Units [first, end) only.
    void start(int64_t first, int64_t end) {
        const auto [begin, stop] = thread_share(end - first);
        Run& mine = runs_[static_cast<size_t>(thread_num())];
        mine.front = first + begin, mine.back = first + stop;
        team_barrier();
    }

    // This thread's next units [first, end): its own from the front, up to
    // run_end(first) and `most` of them at most, else one from another
    // thread's back; empty when none is left.
    template <class RunEnd>
    std::pair<int64_t, int64_t> next(RunEnd run_end) {
        const size_t me = static_cast<size_t>(thread_num());
        {
            Run& mine = runs_[me];
            const std::lock_guard<std::mutex> lock(mine.mutex);
            if (mine.front < mine.back) {
                const int64_t first = mine.front;
                mine.front = std::min({mine.back, run_end(first), first + most_});
                return {first, mine.front};
            }
        }
        if (steal_) {
            for (size_t i = 1; i < runs_.size(); ++i) {
                Run& other = runs_[(me + i) % runs_.size()];
                const std::lock_guard<std::mutex> lock(other.mutex);
                if (other.front < other.back) {
                    --other.back;
                    return {other.back, other.back + 1};
                }
            }
        }
        return {0, 0};
    }

  private:
    struct alignas(64) Run {
        std::mutex mutex;
        int64_t front = 0, back = 0;
    };
    int64_t count_, most_;
    bool steal_;
    std::vector<Run> runs_;
};

// Flush-to-zero and denormals-are-zero while it lives, then the thread's own
// mode back: denormal operands cost some CPUs a hundred cycles each, and a
// convolution of tiny values would crawl. The caller's state is untouched.
class FlushDenormals {
  public:
    FlushDenormals() {
#ifdef FASTCONV_HAS_MXCSR
        saved_ = _mm_getcsr();
        _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
#endif
    }
    ~FlushDenormals() {
#ifdef FASTCONV_HAS_MXCSR
        _mm_setcsr(saved_);
#endif
    }
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;

  private:
    unsigned saved_ = 0;
};

// Whether `flops` of work is worth an OpenMP team. Below about a million,
// starting and joining the threads costs more than they save (and on a busy
// machine one unscheduled team member stalls the rest), so the call runs on
// the calling thread. Results do not change: every output is computed by one
// task in a fixed order either way.
inline bool worth_parallel(double flops) { return flops >= double(1 << 20); }

// Runs body() on an OpenMP team when `parallel`, else directly on the calling
// thread, where its `omp for` loops run whole. (A region with a false `if`
// clause still builds a team of one, and libgomp's closing barrier makes a
// futex syscall: more than a tiny convolution costs.) A caller that is itself
// in an OpenMP team gets a team of one, so its team never splits our loops.
// body() must not throw: workspace comes from PerThread, allocated before.
template <class Body>
void parallel_region(bool parallel, Body&& body) {
#ifdef _OPENMP
    if (parallel || omp_in_parallel()) {
#pragma omp parallel num_threads(parallel ? omp_get_max_threads() : 1)
        {
            const FlushDenormals flush;  // each team thread has its own mode
            body();
        }
        return;
    }
#else
    (void)parallel;
#endif
    const FlushDenormals flush;
    body();
}

// Blocks come from malloc, 64 bytes more than asked, and start at the first
// 64-byte boundary past the malloc'd address, which is kept in the 8 bytes
// before it. glibc's aligned_alloc splits off and frees the part before the
// boundary, and with a call's dozens of small work arrays its free lists
// took consolidating on every call (seed's float64 dL/dx, Zen 4: 13.9 ->
// 12.1 us this way).
struct AlignedFree {
    void operator()(void* p) const {
        if (p) std::free(static_cast<void**>(p)[-1]);
    }
};
template <class T>
using AlignedArray = std::unique_ptr<T, AlignedFree>;

// `count` elements, 64-byte aligned (at least one); std::bad_alloc where the
// size overflows or is more than the machine's memory, which would only be
// overcommitted, then kill the process when touched.
template <class T>
AlignedArray<T> aligned_array(size_t count) {
    const size_t bytes = (std::max<size_t>(count, 1) * sizeof(T) + 63) / 64 * 64;
    if (bytes / sizeof(T) < count || bytes > physical_memory()) throw std::bad_alloc();
    void* const block = std::malloc(bytes + 64);
    if (!block) throw std::bad_alloc();
    void** const start = reinterpret_cast<void**>((reinterpret_cast<uintptr_t>(block) + 64) & ~uintptr_t(63));
    start[-1] = block;
    return AlignedArray<T>(reinterpret_cast<T*>(start));
}

// `count` elements of workspace for each thread of a parallel_region,
// 64-byte aligned, allocated up front by the calling thread: an allocation
// that fails throws there (a MemoryError in Python), never inside the region,
// where an exception would end the process. get() is the calling thread's
// part: it asks OpenMP which thread this is, so a region looks it up once.
template <class T>
class PerThread {
  public:
    explicit PerThread(int64_t count)
        : per_(((std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(T)) + 63) / 64) * 64 /
               static_cast<int64_t>(sizeof(T))) {
        const auto threads = static_cast<size_t>(max_threads());
        if (static_cast<size_t>(per_) > static_cast<size_t>(-1) / sizeof(T) / threads) throw std::bad_alloc();
        data_ = aligned_array<T>(threads * static_cast<size_t>(per_));
    }
    T* get() const { return data_.get() + thread_num() * per_; }

  private:
    int64_t per_;
    AlignedArray<T> data_;
};

}  // namespace fastconv
