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
 * Measured (H100, FP8, trace at b1): the products 0.45 ms a step faster, but RMSNorm, RoPE and
 * SwiGLU beside the prefetch's queued requests 0.5 ms slower; so the backend takes it at 4..8
 * rows only, where the step gained 0.13-0.26 ms (cuda_backend_internal.h L2PF_MIN_ROWS).
 *
 * mode 1: cp.async.bulk.prefetch.L2 (sm_90: the TMA unit fetches a chunk per instruction);
 *         below sm_90 it runs as mode 2.
 * mode 2: prefetch.global.L2, one instruction per 128-byte line.
 * mode 3: prefetch.global.L2::evict_last, per line (kept ahead of the streaming products' lines).
 *
 * (A read-through kernel on 8-32 CTAs, bounding the bytes in flight, was measured: the side branch
 * then ran longer than the step, 9.09 -> 9.5-15 ms at b1 on the H100.) */
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

extern "C" cudaError_t kiln_cuda_l2_prefetch(const void *p, int64_t bytes, int mode, int n_sm, cudaStream_t st) {
    bytes &= ~(int64_t)15;
    if (!p || bytes <= 0) return cudaSuccess;
    int64_t unit = mode == 1 ? L2PF_CHUNK : L2PF_LINE * 8; /* per-line modes: ~8 lines a thread */
    int64_t threads = (bytes + unit - 1) / unit;
    int64_t blocks = (threads + L2PF_THREADS - 1) / L2PF_THREADS;
    /* at most half the SMs' worth of CTAs: the branch runs beside the step's own kernels */
    int64_t cap = n_sm > 1 ? n_sm / 2 : 1;
    if (blocks > cap) blocks = cap;
    l2_prefetch_kernel<<<(unsigned)blocks, L2PF_THREADS, 0, st>>>((const unsigned char *)p, bytes, mode);
    return cudaGetLastError();
}
