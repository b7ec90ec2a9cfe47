/* swiglu.cu: out[t][i] = silu(gate) * up with gate = gu[t][i], up = gu[t][n + i] (the fused
 * gate|up GEMM output: f32 from the GEMV path, bf16/f16 from cuBLASLt at larger batches, which
 * halves the bytes of the largest activation), written in the down projection's input dtype. silu(g) = g / (1 + e^-g),
 * as the CPU (expf, IEEE division). */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

static __global__ void swiglu_kernel(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int T, int n) {
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: everything here reads or writes the step's activations */
    int64_t total = (int64_t)T * n;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = k / n, i = k % n;
        float g = kiln_ld(gdt, gu, t * 2 * n + i), u = kiln_ld(gdt, gu, t * 2 * n + n + i);
        kiln_st(adt, out, k, kiln_silu_mul(g, u));
    }
}

extern "C" cudaError_t kiln_cuda_swiglu_in(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int T, int n,
                                           int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    int64_t total = (int64_t)T * n;
    int64_t blocks = (total + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    kiln_launch(pdl && T >= KILN_PDL_MIN_ROWS,
                swiglu_kernel, dim3((unsigned)blocks), dim3(256), 0, st, out, adt, gu, gdt, T, n);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_swiglu(void *out, kiln_dtype adt, const float *gu, int T, int n, int pdl, cudaStream_t st) {
    return kiln_cuda_swiglu_in(out, adt, gu, KILN_DT_F32, T, n, pdl, st);
}
