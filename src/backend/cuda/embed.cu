/* embed.cu: embedding gather, x[t][:] = f32(emb[ids[t]][:]) (exact conversion from f32, f16
 * or bf16). Grid: one block per row, threads stride over D. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

static __global__ void embed_kernel(float *x, const void *emb, kiln_dtype edt, const int32_t *ids, int D) {
    int t = blockIdx.x;
    int64_t base = (int64_t)ids[t] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) x[(int64_t)t * D + i] = kiln_ld(edt, emb, base + i);
}

extern "C" cudaError_t kiln_cuda_embed(float *x, const void *emb, kiln_dtype edt, const int32_t *ids, int T,
                                       int D, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    embed_kernel<<<T, 256, 0, st>>>(x, emb, edt, ids, D);
    KILN_CUDA_CHECK_LAUNCH();
}
