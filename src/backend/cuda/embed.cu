/* embed.cu: embedding gather, x[t][:] = f32(emb[ids[t]][:]) (exact conversion from f32, f16
 * or bf16; a GGUF-quantized table goes to kiln_cuda_qembed, qlinear.cu). Grid: one block per row,
 * threads stride over D.
 * Overlapped scheduling: with prev_row, row t with prev_row[t] >= 0 takes the token the previous
 * step drew for its logits row prev_row[t] (prev_tok, still on the device) instead of ids[t]. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/qdecode.cuh"

static __global__ void embed_kernel(float *x, const void *emb, kiln_dtype edt, const int32_t *ids,
                                    const int32_t *prev_row, const int32_t *prev_tok, int D) {
    int t = blockIdx.x;
    int pr = prev_row ? prev_row[t] : -1;
    int64_t base = (int64_t)(pr >= 0 ? prev_tok[pr] : ids[t]) * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) x[(int64_t)t * D + i] = kiln_ld(edt, emb, base + i);
}

extern "C" cudaError_t kiln_cuda_embed(float *x, const void *emb, kiln_dtype edt, const int32_t *ids,
                                       const int32_t *prev_row, const int32_t *prev_tok, int T, int D, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (prev_row && !prev_tok) return cudaErrorInvalidValue;
    if (kiln_q_supported(edt)) return kiln_cuda_qembed(x, emb, edt, ids, prev_row, prev_tok, T, D, st);
    if (edt != KILN_DT_F32 && edt != KILN_DT_F16 && edt != KILN_DT_BF16) return cudaErrorInvalidValue;
    embed_kernel<<<T, 256, 0, st>>>(x, emb, edt, ids, prev_row, prev_tok, D);
    KILN_CUDA_CHECK_LAUNCH();
}
