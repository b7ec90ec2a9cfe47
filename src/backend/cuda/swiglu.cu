/* swiglu.cu: out[t][i] = silu(gate) * up with gate = gu[t][i], up = gu[t][n + i] (the fused
 * gate|up GEMM output), written in the down projection's input dtype. silu(g) = g / (1 + e^-g),
 * as the CPU (expf, IEEE division). */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

static __global__ void swiglu_kernel(void *out, kiln_dtype adt, const float *gu, int T, int n) {
    int64_t total = (int64_t)T * n;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = k / n, i = k % n;
        float g = gu[t * 2 * n + i], u = gu[t * 2 * n + n + i];
        kiln_st(adt, out, k, g / (1.0f + expf(-g)) * u);
    }
}

extern "C" cudaError_t kiln_cuda_swiglu(void *out, kiln_dtype adt, const float *gu, int T, int n, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    int64_t total = (int64_t)T * n;
    int64_t blocks = (total + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    swiglu_kernel<<<(unsigned)blocks, 256, 0, st>>>(out, adt, gu, T, n);
    KILN_CUDA_CHECK_LAUNCH();
}
