// The CPU emulation library: the fiber scheduler behind cuda_emulation.h, the kernel
// sources of ../*.cu compiled for the host, and C entry points called from Python
// (attention_scratch/backends/cuda/emulator.py) through ctypes. See cuda_emulation.h.
#include "cuda_emulation.h"

#include <csetjmp>
#include <memory>

#include "../flash_bwd.cu"
#include "../flash_fwd.cu"
#include "../flash_fwd_mma.cu"
#include "../flash_fwd_wmma.cu"

namespace emu {
dim3 thread_idx, block_idx, block_dim, grid_dim;
unsigned char* smem = nullptr;

namespace {
constexpr size_t kStack = 256 * 1024;
constexpr size_t kGuard = 4096;
constexpr unsigned char kCanary = 0xA5;

// A fiber starts through makecontext/swapcontext; afterwards switches use _setjmp/_longjmp,
// which, unlike swapcontext, make no system call to save the signal mask.
struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;
    char* stack = nullptr;
    bool started = false;
    bool done = false;
    bool waiting = false;
    const unsigned* wait_gen = nullptr;  // while waiting: the barrier generation it waits to change
    unsigned wait_seen = 0;
    bool blocked() const { return waiting && *wait_gen == wait_seen; }
};

ucontext_t scheduler;
jmp_buf scheduler_jb;
std::vector<Fiber> fibers;
std::vector<std::unique_ptr<char[]>> stacks;  // kept between blocks and launches: never zeroed
int current = 0;
int nthreads = 0;
const std::function<void()>* body = nullptr;
long long events = 0;  // barrier releases and finished fibers: progress, for deadlock detection

int block_arrived = 0;
unsigned block_gen = 0;
std::vector<int> warp_arrived;
std::vector<unsigned> warp_gen;
std::vector<unsigned char> exchange_slots;  // (warps, 32, 8 bytes)
std::vector<unsigned> mma_slots;            // (warps, 32, 6 registers): A and B fragments
std::vector<const void*> ldmatrix_slots;    // (warps, 32): the row address each lane gives

struct AsyncCopy {
    void* dst;
    const void* src;
    bool valid;
};
struct AsyncQueue {
    std::vector<AsyncCopy> open;                  // issued since the last commit
    std::vector<std::vector<AsyncCopy>> groups;   // committed, oldest first
};
std::vector<AsyncQueue> async_queues;       // (threads,)
bool misaligned = false;                    // an ldmatrix row or cp.async address off 16 bytes

void check_aligned16(const void* p, const char* what) {
    if (((uintptr_t)p & 15) == 0) return;
    if (!misaligned) std::fprintf(stderr, "emulation: %s address %p is not 16-byte aligned\n", what, p);
    misaligned = true;
}

void yield() {
    if (!_setjmp(fibers[current].jb)) _longjmp(scheduler_jb, 1);
}

void wait_until_changed(const unsigned* gen, unsigned seen) {
    fibers[current].waiting = true;
    fibers[current].wait_gen = gen;
    fibers[current].wait_seen = seen;
    while (*gen == seen) yield();
    fibers[current].waiting = false;
}

void entry() {
    (*body)();
    fibers[current].done = true;
    ++events;
    _longjmp(scheduler_jb, 1);
}

void resume(int t) {
    if (_setjmp(scheduler_jb)) return;  // the fiber yielded or finished
    Fiber& f = fibers[t];
    if (!f.started) {
        f.started = true;
        swapcontext(&scheduler, &f.ctx);
    } else {
        _longjmp(f.jb, 1);
    }
}
}  // namespace

void sync_block() {
    const unsigned seen = block_gen;
    if (++block_arrived == nthreads) {
        block_arrived = 0;
        ++block_gen;
        ++events;
        return;
    }
    wait_until_changed(&block_gen, seen);
}

void sync_warp() {
    const int w = (int)threadIdx.x / 32;
    const int size = std::min(32, nthreads - w * 32);
    const unsigned seen = warp_gen[w];
    if (++warp_arrived[w] == size) {
        warp_arrived[w] = 0;
        ++warp_gen[w];
        ++events;
        return;
    }
    wait_until_changed(&warp_gen[w], seen);
}

void exchange(const void* value, void* result, int size, int src_lane) {
    const int w = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    std::memcpy(&exchange_slots[(w * 32 + lane) * 8], value, size);
    sync_warp();
    std::memcpy(result, &exchange_slots[(w * 32 + src_lane) * 8], size);
    sync_warp();
}

// One mma.m16n8k16 (row.col, float accumulators) for the calling lane's warp. Every lane
// posts its A and B registers; after a warp barrier each lane rebuilds the entries it
// needs from the fragment layout of the PTX ISA (mma_sm80.cuh) and adds its four
// entries of A B to d; a second barrier keeps the slots until every lane has read them.
void mma_m16n8k16(bool bfloat16, float* d, const unsigned* a, const unsigned* b) {
    const int w = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    unsigned* slots = &mma_slots[w * 32 * 6];
    std::memcpy(slots + lane * 6, a, 16);
    std::memcpy(slots + lane * 6 + 4, b, 8);
    sync_warp();
    auto value = [&](unsigned reg, int high) {
        const uint16_t bits = (uint16_t)(high ? reg >> 16 : reg & 0xffffu);
        return bfloat16 ? __bfloat162float(__nv_bfloat16{bits}) : __half2float(__half{bits});
    };
    auto A = [&](int row, int col) {  // a[0]: (g, 2t..) a[1]: (g+8, 2t..) a[2]: (g, 2t+8..) a[3]: (g+8, 2t+8..)
        const int owner = (row % 8) * 4 + (col % 8) / 2, reg = (row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0);
        return value(slots[owner * 6 + reg], col & 1);
    };
    auto B = [&](int row, int col) {  // b[0]: (2t.., g)  b[1]: (2t+8.., g)
        const int owner = col * 4 + (row % 8) / 2, reg = row >= 8 ? 1 : 0;
        return value(slots[owner * 6 + 4 + reg], row & 1);
    };
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {  // d[0..1]: (g, 2t..2t+1)  d[2..3]: (g+8, 2t..2t+1)
        const int row = g + (r >= 2 ? 8 : 0), col = 2 * t + (r & 1);
        float acc = 0.0f;
        for (int kk = 0; kk < 16; ++kk) acc += A(row, kk) * B(kk, col);
        d[r] += acc;
    }
    sync_warp();
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the rows of matrix i;
// lane (g, t) receives entries (g, 2t), (g, 2t+1) of each matrix, or (2t, g), (2t+1, g) transposed.
void ldmatrix_x4(bool trans, unsigned* r, const void* row) {
    const int w = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const void** slots = &ldmatrix_slots[w * 32];
    check_aligned16(row, "ldmatrix row");
    slots[lane] = row;
    sync_warp();
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        uint16_t pair[2];
        for (int h = 0; h < 2; ++h) {
            const int mrow = trans ? 2 * t + h : g, mcol = trans ? g : 2 * t + h;
            std::memcpy(&pair[h], static_cast<const unsigned char*>(slots[8 * i + mrow]) + 2 * mcol, 2);
        }
        r[i] = (unsigned)pair[0] | ((unsigned)pair[1] << 16);
    }
    sync_warp();
}

// A real copy lands at some moment between issue and wait. The emulation covers both ends:
// the destination turns to garbage at issue (a tile still being read is lost, as when a barrier
// is missing before the prefetch) and receives the data only at the wait (a read before it
// finds garbage, as when the wait is missing).
void cp_async16(void* dst, const void* src, bool valid) {
    check_aligned16(dst, "cp.async shared");
    if (valid) check_aligned16(src, "cp.async global");
    std::memset(dst, 0x7f, 16);
    async_queues[threadIdx.x].open.push_back({dst, src, valid});
}

void cp_async_commit() {
    AsyncQueue& q = async_queues[threadIdx.x];
    q.groups.push_back(std::move(q.open));
    q.open.clear();
}

void cp_async_wait(int newest_in_flight) {
    AsyncQueue& q = async_queues[threadIdx.x];
    while ((int)q.groups.size() > newest_in_flight) {
        for (const AsyncCopy& c : q.groups.front()) {
            if (c.valid) std::memcpy(c.dst, c.src, 16);
            else std::memset(c.dst, 0, 16);
        }
        q.groups.erase(q.groups.begin());
    }
}

int launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& kernel) {
    if (block.y != 1 || block.z != 1 || block.x == 0 || block.x > 1024) return 3;
    misaligned = false;
    std::vector<unsigned char> shared(smem_bytes + kGuard);
    grid_dim = grid;
    block_dim = block;
    body = &kernel;
    nthreads = (int)block.x;
    const int nwarps = (nthreads + 31) / 32;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                block_idx.x = bx; block_idx.y = by; block_idx.z = bz;
                std::memset(shared.data(), 0x7f, smem_bytes);  // garbage: large floats, not zero
                std::memset(shared.data() + smem_bytes, kCanary, kGuard);
                smem = shared.data();
                block_arrived = 0;
                warp_arrived.assign(nwarps, 0);
                warp_gen.assign(nwarps, 0);
                exchange_slots.assign(nwarps * 32 * 8, 0);
                mma_slots.assign(nwarps * 32 * 6, 0);
                ldmatrix_slots.assign(nwarps * 32, nullptr);
                async_queues.assign(nthreads, AsyncQueue());
                fibers.assign(nthreads, Fiber());
                while ((int)stacks.size() < nthreads) stacks.emplace_back(new char[kStack]);
                for (int t = 0; t < nthreads; ++t) {
                    Fiber& f = fibers[t];
                    f.stack = stacks[t].get();
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack;
                    f.ctx.uc_stack.ss_size = kStack;
                    f.ctx.uc_link = &scheduler;
                    makecontext(&f.ctx, entry, 0);
                }
                // Warp by warp: each warp runs as far as it can (until every lane waits at a
                // __syncthreads or has finished) before the next starts, so one warp gets a whole
                // phase ahead of the others; a barrier missing between two phases that share
                // memory then shows up as a wrong result.
                int remaining = nthreads;
                while (remaining > 0) {
                    const long long before = events;
                    for (int w = 0; w < nwarps; ++w) {
                        for (bool moved = true; moved;) {
                            moved = false;
                            for (int t = w * 32; t < std::min(nthreads, w * 32 + 32); ++t) {
                                if (fibers[t].done || fibers[t].blocked()) continue;
                                current = t;
                                thread_idx.x = t; thread_idx.y = 0; thread_idx.z = 0;
                                resume(t);
                                moved = true;
                            }
                        }
                    }
                    remaining = 0;
                    for (const Fiber& f : fibers) remaining += !f.done;
                    if (remaining > 0 && events == before) {
                        std::fprintf(stderr, "emulation: deadlock in block (%u,%u,%u): threads wait at "
                                     "barriers that not every thread reaches\n", bx, by, bz);
                        return 1;
                    }
                }
                for (size_t g = 0; g < kGuard; ++g)
                    if (shared[smem_bytes + g] != kCanary) {
                        std::fprintf(stderr, "emulation: block (%u,%u,%u) wrote past its %zu bytes "
                                     "of shared memory\n", bx, by, bz, smem_bytes);
                        return 2;
                    }
            }
    fibers.clear();
    return misaligned ? 4 : 0;
}
}  // namespace emu

// ---- C entry points. dtype: 0 double, 1 float, 2 half, 3 bfloat16. ----
namespace {
template <typename F> int dispatch_type(int dtype, F&& f) {
    switch (dtype) {
        case 0: return f(double());
        case 1: return f(float());
        case 2: return f(__half());
        case 3: return f(__nv_bfloat16());
    }
    return 10;
}

template <typename F> int dispatch_dim(int D, F&& f) {
    switch (D) {
        case 32: return f(std::integral_constant<int, 32>());
        case 64: return f(std::integral_constant<int, 64>());
        case 128: return f(std::integral_constant<int, 128>());
        case 256: return f(std::integral_constant<int, 256>());
    }
    return 11;
}

// Every dtype and head-dim bucket: f(T(), D as a type).
template <typename F> int dispatch_all(int dtype, int D, F&& f) {
    return dispatch_type(dtype, [&](auto tv) { return dispatch_dim(D, [&](auto dc) { return f(tv, dc); }); });
}

// The tensor-core kernels: 16-bit types and head dims up to 128 only; f(T(), D as a type).
template <typename F> int dispatch_tensor_core(int dtype, int D, F&& f) {
    if (D > 128) return 11;
    return dispatch_type(dtype, [&](auto tv) {
        using T = decltype(tv);
        if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
            return dispatch_dim(D, [&](auto dc) {
                if constexpr (decltype(dc)::value <= 128) return f(tv, dc);
                else return 11;
            });
        } else {
            return 10;
        }
    });
}
}  // namespace

extern "C" {
int emu_fwd_scalar(int dtype, int D, unsigned gx, unsigned gy, unsigned threads, size_t smem,
                   const void* q, const void* k, const void* v, void* out, void* lse, int G, int L,
                   int S, int E, int Ev, double scale, int lo, int hi, int bq, int bk, int bh0) {
    return dispatch_all(dtype, D, [&](auto tv, auto dc) {
        using T = decltype(tv);
        using A = typename AccOf<T>::type;
        constexpr int DD = decltype(dc)::value;
        return emu::launch({gx, gy, 1}, {threads, 1, 1}, smem, [&] {
            flash_fwd_scalar<T, DD>((const T*)q, (const T*)k, (const T*)v, (T*)out, (A*)lse, G, L, S, E,
                                    Ev, scale, lo, hi, bq, bk, bh0);
        });
    });
}

// emu_fwd_mma and emu_fwd_wmma: the two tensor-core forward kernels share one signature.
#define FLASH_TENSOR_CORE_ENTRY(name)                                                            \
    int emu_fwd_##name(int dtype, int D, unsigned gx, unsigned gy, unsigned threads, size_t smem, \
                       const void* q, const void* k, const void* v, void* out, void* lse, int G,  \
                       int L, int S, int E, int Ev, double scale, int lo, int hi, int bh0) {     \
        return dispatch_tensor_core(dtype, D, [&](auto tv, auto dc) {                            \
            using T = decltype(tv);                                                              \
            constexpr int DD = decltype(dc)::value;                                              \
            return emu::launch({gx, gy, 1}, {threads, 1, 1}, smem, [&] {                         \
                flash_fwd_##name<T, DD>((const T*)q, (const T*)k, (const T*)v, (T*)out,          \
                                        (float*)lse, G, L, S, E, Ev, scale, lo, hi, bh0);        \
            });                                                                                  \
        });                                                                                      \
    }
FLASH_TENSOR_CORE_ENTRY(mma)
FLASH_TENSOR_CORE_ENTRY(wmma)

int emu_bwd_preprocess(int dtype, unsigned gx, unsigned threads, const void* grad_out,
                       const void* out, const void* lse, void* big_d, void* lse2, long long rows,
                       int Ev) {
    return dispatch_type(dtype, [&](auto tv) {
        using T = decltype(tv);
        using A = typename AccOf<T>::type;
        return emu::launch({gx, 1, 1}, {threads, 1, 1}, 0, [&] {
            flash_bwd_preprocess<T>((const T*)grad_out, (const T*)out, (const A*)lse, (A*)big_d,
                                    (A*)lse2, rows, Ev);
        });
    });
}

int emu_bwd_dkdv(int dtype, int D, unsigned gx, unsigned gy, unsigned threads, size_t smem,
                 const void* q, const void* k, const void* v, const void* grad_out,
                 const void* lse2, const void* big_d, void* dq_acc, void* dk, void* dv, int G,
                 int L, int S, int E, int Ev, double scale, int lo, int hi, int bq, int bk,
                 int bh0) {
    return dispatch_all(dtype, D, [&](auto tv, auto dc) {
        using T = decltype(tv);
        using A = typename AccOf<T>::type;
        constexpr int DD = decltype(dc)::value;
        return emu::launch({gx, gy, 1}, {threads, 1, 1}, smem, [&] {
            flash_bwd_dkdv<T, DD>((const T*)q, (const T*)k, (const T*)v, (const T*)grad_out,
                                  (const A*)lse2, (const A*)big_d, (A*)dq_acc, (T*)dk, (T*)dv, G, L, S, E,
                                  Ev, scale, lo, hi, bq, bk, bh0);
        });
    });
}
}
