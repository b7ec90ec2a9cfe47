/* attention.cu: causal GQA attention over the paged bf16 KV pool for a ragged batch.
 *
 * A straightforward kernel (part 1: correct, not fast). One block of ATT_WARPS warps per
 * (row t, query head h); KV head = h / (H / KV). Warp w walks positions j = w, w + ATT_WARPS, ...
 * up to pos[t]; lane l owns dims l, l + 32, ... (hd <= 256). For each position the warp computes
 * the score (q . k_j) * 1/sqrt(hd) with a shuffle sum, then updates its online softmax
 * (running max m, sum l, accumulator acc) in f32. At the end the warps' states are merged in
 * warp order through shared memory. The partition and every reduction order depend only on
 * pos[t] and hd, never on the batch (I6). K_j and V_j are read through the sequence's block
 * table: block = table[j / bs], offset j % bs. */
#include <math.h>
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

#define ATT_WARPS 4
#define ATT_MAX_HD 256
#define ATT_PER_LANE (ATT_MAX_HD / 32)

static __global__ void __launch_bounds__(ATT_WARPS * 32)
attention_kernel(void *out, kiln_dtype adt, const float *q, int q_stride, const uint16_t *pool, const int32_t *pos,
                 const int32_t *row_seq, const int32_t *block_table, int max_blocks, int H, int KV, int hd, int bs,
                 float scale) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_HD];
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int kvh = h / (H / KV);
    int p = pos[t];
    const int32_t *bt = block_table + (int64_t)row_seq[t] * max_blocks;
    const float *qr = q + (int64_t)t * q_stride + (int64_t)h * hd;
    int64_t head_tile = (int64_t)bs * hd;       /* one head of one block */
    int64_t kv_stride = (int64_t)KV * head_tile; /* K -> V of the same block */

    float qv[ATT_PER_LANE], acc[ATT_PER_LANE];
#pragma unroll
    for (int k = 0; k < ATT_PER_LANE; k++) {
        int d = lane + 32 * k;
        qv[k] = d < hd ? qr[d] : 0.0f;
        acc[k] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = warp; j <= p; j += ATT_WARPS) {
        int64_t blk = bt[j / bs];
        const uint16_t *kp = pool + (blk * 2 * KV + kvh) * head_tile + (int64_t)(j % bs) * hd;
        const uint16_t *vp = kp + kv_stride;
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < ATT_PER_LANE; k++) {
            int d = lane + 32 * k;
            if (d < hd) s += qv[k] * kiln_bf16_bits_to_f32(kp[d]);
        }
        s = kiln_warp_sum(s) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn); /* m = -inf the first time: 0 */
        float pj = expf(s - mn);
        l = l * corr + pj;
#pragma unroll
        for (int k = 0; k < ATT_PER_LANE; k++) {
            int d = lane + 32 * k;
            if (d < hd) acc[k] = acc[k] * corr + pj * kiln_bf16_bits_to_f32(vp[d]);
        }
        m = mn;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int k = 0; k < ATT_PER_LANE; k++) {
        int d = lane + 32 * k;
        if (d < hd) s_acc[warp][d] = acc[k];
    }
    __syncthreads();
    /* merge in warp order; a warp that saw no position has m = -inf, l = 0 and weighs 0 */
    float M = s_m[0];
    for (int w = 1; w < ATT_WARPS; w++) M = fmaxf(M, s_m[w]);
    float L = 0.0f, wgt[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        wgt[w] = s_l[w] > 0.0f ? expf(s_m[w] - M) : 0.0f;
        L += s_l[w] * wgt[w];
    }
    float invL = 1.0f / L;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) o += s_acc[w][d] * wgt[w];
        kiln_st(adt, out, (int64_t)t * H * hd + (int64_t)h * hd + d, o * invL);
    }
}

extern "C" cudaError_t kiln_cuda_attention(void *out, kiln_dtype adt, const float *q, int q_stride,
                                           const uint16_t *pool_layer, const int32_t *pos, const int32_t *row_seq,
                                           const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                                           int block_size, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (hd <= 0 || hd > ATT_MAX_HD || KV <= 0 || H % KV || H > 65535) return cudaErrorInvalidValue;
    dim3 grid((unsigned)T, (unsigned)H);
    float scale = 1.0f / sqrtf((float)hd);
    attention_kernel<<<grid, ATT_WARPS * 32, 0, st>>>(out, adt, q, q_stride, pool_layer, pos, row_seq, block_table,
                                                       max_blocks, H, KV, hd, block_size, scale);
    KILN_CUDA_CHECK_LAUNCH();
}
