/* l2_prefetch.cu: bring the first bytes of a weight matrix into L2 ahead of the product that
 * reads them.
 *
 * Why: at decode batch 1..16 the kernels between two products (RMSNorm, RoPE + the KV write,
 * attention and its combine, SwiGLU, the FP8 / int8 quantizers) are latency-bound: ~1.2 ms of
 * the H100's 7.67 ms FP8 batch-1 step (the fifteenth session's trace), while HBM idles. Launched
 * on a side branch of the decode graph as such a window opens (cuda_linear.c kiln_cuda_l2pf), a
 * prefetch moves part of the next product's weight bytes into that idle time; the product then
 * finds them in L2. The same idea as vLLM-Ascend's weight-prefetch stream beside RMSNorm /
 * SwiGLU, and CUTLASS's Hopper GEMM that prefetches its weights while it waits under PDL.
 * It is only a hint: nothing but the product reads the lines, and no result depends on it.
 *
 * mode 1: cp.async.bulk.prefetch.L2 (sm_90: the TMA unit fetches a chunk per instruction);
 *         below sm_90 it runs as mode 2.
 * mode 2: prefetch.global.L2, one instruction per 128-byte line.
 * mode 3: prefetch.global.L2::evict_last, per line (kept ahead of the streaming products' lines).
 * mode 4: read through: each thread loads 8 x 16 bytes a turn (L1 not allocated) and waits for
 *         them, so the bytes in flight, and with them the queueing the step's own small kernels
 *         meet, are bounded by the CTAs (ctas x 512 threads x 128 bytes); modes 1-3 put the whole
 *         range in the memory system's queues at once. */
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/cuda_ops.h"

#define L2PF_CHUNK 4096 /* bytes a bulk prefetch asks for */
#define L2PF_LINE 128
#define L2PF_THREADS 128

/* p: 16-byte aligned (a weight buffer or segment), bytes: a multiple of 16 */
static __global__ void l2_prefetch_kernel(const unsigned char *p, int64_t bytes, int mode) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n = (int64_t)gridDim.x * blockDim.x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (mode == 1) {
        for (int64_t o = i * L2PF_CHUNK; o < bytes; o += n * L2PF_CHUNK) {
            int64_t left = bytes - o;
            uint32_t sz = (uint32_t)(left < L2PF_CHUNK ? left : L2PF_CHUNK);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p + o), "r"(sz) : "memory");
        }
        return;
    }
#endif
    if (mode == 3) {
        for (int64_t o = i * L2PF_LINE; o < bytes; o += n * L2PF_LINE)
            asm volatile("prefetch.global.L2::evict_last [%0];\n" ::"l"(p + o));
        return;
    }
    for (int64_t o = i * L2PF_LINE; o < bytes; o += n * L2PF_LINE)
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p + o));
}

#define L2PF_READ_THREADS 512
#define L2PF_READ_UNROLL 8
static __global__ void l2_read_kernel(const uint4 *p, int64_t n16, unsigned *sink) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n = (int64_t)gridDim.x * blockDim.x;
    unsigned acc = 0;
    for (int64_t b = i; b < n16; b += n * L2PF_READ_UNROLL) {
        uint4 v[L2PF_READ_UNROLL];
#pragma unroll
        for (int u = 0; u < L2PF_READ_UNROLL; u++) {
            int64_t k = b + (int64_t)u * n;
            v[u] = make_uint4(0, 0, 0, 0);
            if (k < n16)
                asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                             : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w)
                             : "l"(p + k));
        }
#pragma unroll
        for (int u = 0; u < L2PF_READ_UNROLL; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x9e3779b9u && sink) *sink = acc; /* keeps the loads; sink may be NULL */
}

extern "C" cudaError_t kiln_cuda_l2_prefetch(const void *p, int64_t bytes, int mode, int n_sm, int ctas, cudaStream_t st) {
    bytes &= ~(int64_t)15;
    if (!p || bytes <= 0) return cudaSuccess;
    if (mode == 4) {
        int64_t n16 = bytes / 16, need = (n16 + L2PF_READ_THREADS - 1) / L2PF_READ_THREADS;
        int64_t g = ctas > 0 ? ctas : 16;
        if (g > need) g = need;
        l2_read_kernel<<<(unsigned)g, L2PF_READ_THREADS, 0, st>>>((const uint4 *)p, n16, NULL);
        return cudaGetLastError();
    }
    int64_t unit = mode == 1 ? L2PF_CHUNK : L2PF_LINE * 8; /* per-line modes: ~8 lines a thread */
    int64_t threads = (bytes + unit - 1) / unit;
    int64_t blocks = (threads + L2PF_THREADS - 1) / L2PF_THREADS;
    /* at most half the SMs' worth of CTAs: the branch runs beside the step's own kernels */
    int64_t cap = ctas > 0 ? ctas : n_sm > 1 ? n_sm / 2 : 1;
    if (blocks > cap) blocks = cap;
    l2_prefetch_kernel<<<(unsigned)blocks, L2PF_THREADS, 0, st>>>((const unsigned char *)p, bytes, mode);
    return cudaGetLastError();
}
