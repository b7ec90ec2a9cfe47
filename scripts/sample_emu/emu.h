// host emulation of the CUDA constructs used by sample.cu: one block = 1024 pthreads
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <limits.h>
#include <algorithm>
#define KILN_CUDA_DEV_CUH
#define KILN_CUDA_CHECK_LAUNCH() return cudaGetLastError()
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
struct emu_dim { unsigned x, y, z; };
extern thread_local emu_dim emu_tid;
extern emu_dim emu_bid;
#define threadIdx emu_tid
#define blockIdx emu_bid
extern pthread_barrier_t emu_bar;
struct emu_warp { pthread_barrier_t bar; unsigned long long buf[32]; };
extern emu_warp emu_warps[32];
static inline void __syncthreads() { pthread_barrier_wait(&emu_bar); }
template <class T> static T emu_xchg(T v, int src) {
    emu_warp &w = emu_warps[threadIdx.x >> 5];
    int lane = threadIdx.x & 31;
    unsigned long long b = 0; memcpy(&b, &v, sizeof v);
    w.buf[lane] = b;
    pthread_barrier_wait(&w.bar);
    T r; unsigned long long o = w.buf[src]; memcpy(&r, &o, sizeof r);
    pthread_barrier_wait(&w.bar);
    return r;
}
template <class T> static T __shfl_up_sync(unsigned, T v, int o) {
    int lane = threadIdx.x & 31; return emu_xchg(v, lane >= o ? lane - o : lane);
}
template <class T> static T __shfl_xor_sync(unsigned, T v, int o) {
    int lane = threadIdx.x & 31; return emu_xchg(v, lane ^ o);
}
static unsigned __match_any_sync(unsigned, int v) {
    emu_warp &w = emu_warps[threadIdx.x >> 5];
    int lane = threadIdx.x & 31;
    w.buf[lane] = (unsigned long long)(long long)v;
    pthread_barrier_wait(&w.bar);
    unsigned m = 0;
    for (int j = 0; j < 32; j++) if (w.buf[j] == w.buf[lane]) m |= 1u << j;
    pthread_barrier_wait(&w.bar);
    return m;
}
static inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class T, class U> static T atomicAdd(T *p, U v) { return __atomic_fetch_add(p, (T)v, __ATOMIC_SEQ_CST); }
static int atomicMin(int *p, int v) { int o = __atomic_load_n(p, __ATOMIC_SEQ_CST); while (v < o && !__atomic_compare_exchange_n(p, &o, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)); return o; }
static int atomicMax(int *p, int v) { int o = __atomic_load_n(p, __ATOMIC_SEQ_CST); while (v > o && !__atomic_compare_exchange_n(p, &o, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)); return o; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __ull2double_rn(unsigned long long x) { return (double)x; }
static inline unsigned long long __double2ull_rn(double x) { return (unsigned long long)nearbyint(x); }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
using std::min;
