/* rope_kv.cu: RoPE on q and k fused with writing K and V into the paged bf16 pool.
 *
 * Grid (row t, head group). Thread (head, pair i < hd/2):
 * inv_freq = 1 / theta^(2i/hd) (or the model's table: kiln_cuda_rope_kv_tab), angle = pos * inv_freq,
 * cos and sin (times the YaRN mscale), and the rotation itself in double, rounded once to f32, exactly as kiln_cpu_rope (HALF: pairs (i, i + hd/2);
 * INTERLEAVED: pairs (2i, 2i + 1)). The rotated K (f32, then rounded to bf16) and V go to slot
 * slots[t] of the pool: [block][k|v][KV][block_size][hd] inside the layer. An FP8 pool
 * (kiln_cuda_rope_kv_ex, kv->f8) holds e4m3(value / k_scale or v_scale) instead (docs/fp8.md). */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "util/fp8.h"

static __device__ __forceinline__ int64_t pool_index(int64_t blk, int kv, int h, int off, int d, int KV, int bs,
                                                     int hd) {
    return ((blk * 2 + kv) * KV + h) * (int64_t)bs * hd + (int64_t)off * hd + d;
}

/* grid (T, head groups + 1): block y < n_groups rotates heads y * hpb .. of q|k (H + KV heads),
 * thread = (head in the group, frequency pair i); the last y copies V. Each thread computes its
 * own angle (double pow / sincos), so the ~40 heads of a row run in parallel instead of a loop. */
/* the pool element of value v: bf16 bits, or (F8) the e4m3 code of v / scale (an IEEE division,
 * the CPU's kv_write) */
template <bool F8>
static __device__ __forceinline__ void kv_put(void *pool, int64_t i, float v, float scale) {
    if (F8) ((uint8_t *)pool)[i] = kiln_f32_to_e4m3(__fdiv_rn(v, scale));
    else ((uint16_t *)pool)[i] = kiln_f32_to_bf16_bits(v);
}

/* The rotation's factors of pair i at position p: (cos(a) mscale, sin(a) mscale), a = p inv_freq[i]
 * (theta's 1 / theta^(2i/hd) without a table), in double as the CPU's kiln_cpu_rope_angles_inv. */
static __device__ __forceinline__ double2 rope_factors(int32_t p, int i, int hd, double theta, const double *inv_freq,
                                                       double mscale) {
    double inv = inv_freq ? inv_freq[i] : 1.0 / pow(theta, (double)(2 * i) / (double)hd);
    double a = (double)p * inv;
    return make_double2(__dmul_rn(cos(a), mscale), __dmul_rn(sin(a), mscale));
}

/* cs [T][hd / 2]: the factors of every row and pair, once a step for all layers (the same RoPE in
 * every layer): each layer's kernel then loads 16 bytes instead of a double pow, cos and sin a
 * thread (1 x 512 prefill, H100: 29 us a layer, mostly that math) */
static __global__ void rope_cs_kernel(double2 *cs, const int32_t *pos, int T, int hd, double theta,
                                      const double *inv_freq, double mscale) {
    int half = hd / 2;
    int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (int64_t)T * half) return;
    int t = (int)(k / half), i = (int)(k % half);
    cs[k] = rope_factors(pos[t], i, hd, theta, inv_freq, mscale);
}

template <bool F8>
static __global__ void rope_kv_kernel(float *qkv, const int32_t *pos, const int64_t *slots, void *pool, int H,
                                      int KV, int hd, int bs, double theta, const double *inv_freq, double mscale,
                                      int interleaved, int hpb, float k_scale, float v_scale, const float *ysa,
                                      const float *ysw, const double2 *cs_tab) {
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: everything here reads or writes the step's activations */
    int t = blockIdx.x;
    int half = hd / 2;
    int64_t stride = (int64_t)(H + 2 * KV) * hd;
    float *row = qkv + t * stride;
    int64_t slot = slots[t];
    int64_t blk = slot / bs;
    int off = (int)(slot % bs);
    int n_groups = (H + KV + hpb - 1) / hpb;
    if ((int)blockIdx.y == n_groups) { /* V: straight copy into the pool */
        const float *vrow = row + (int64_t)(H + KV) * hd;
        for (int k = threadIdx.x; k < KV * hd; k += blockDim.x) {
            int h = k / hd, d = k % hd;
            float val = vrow[k];
            if (ysa) val = __fmul_rn(val, __fmul_rn(ysa[t], ysw[(int64_t)(H + KV) * hd + k]));
            kv_put<F8>(pool, pool_index(blk, 1, h, off, d, KV, bs, hd), val, v_scale);
        }
        return;
    }
    int i = threadIdx.x % half, h = blockIdx.y * hpb + threadIdx.x / half;
    if (threadIdx.x >= hpb * half || h >= H + KV) return;
    /* times mscale as the CPU's kiln_cpu_rope_angles_inv (exact when mscale is 1) */
    double2 f = cs_tab ? cs_tab[(int64_t)t * half + i] : rope_factors(pos[t], i, hd, theta, inv_freq, mscale);
    double cs = f.x, sn = f.y;
    int i0 = interleaved ? 2 * i : i;
    int i1 = interleaved ? 2 * i + 1 : i + half;
    float *v = row + (int64_t)h * hd;
    float y0 = v[i0], y1 = v[i1];
    if (ysa) { /* cuBLASLt FP8's sums: y (sa[t] sw[c]), the bits of kiln_cuda_fp8_scale_rows */
        const float s = ysa[t], *sw = ysw + (int64_t)h * hd;
        y0 = __fmul_rn(y0, __fmul_rn(s, sw[i0]));
        y1 = __fmul_rn(y1, __fmul_rn(s, sw[i1]));
    }
    double x0 = y0, x1 = y1;
    /* explicit roundings: no FMA contraction, the CPU's arithmetic */
    float r0 = (float)__dsub_rn(__dmul_rn(x0, cs), __dmul_rn(x1, sn));
    float r1 = (float)__dadd_rn(__dmul_rn(x1, cs), __dmul_rn(x0, sn));
    v[i0] = r0;
    v[i1] = r1;
    if (h >= H) { /* a K head: into the pool */
        int kh = h - H;
        kv_put<F8>(pool, pool_index(blk, 0, kh, off, i0, KV, bs, hd), r0, k_scale);
        kv_put<F8>(pool, pool_index(blk, 0, kh, off, i1, KV, bs, hd), r1, k_scale);
    }
}

extern "C" cudaError_t kiln_cuda_rope_kv(float *qkv, const int32_t *pos, const int64_t *slots, uint16_t *pool_layer,
                                         int T, int H, int KV, int hd, int block_size, double theta, int interleaved,
                                         int pdl, cudaStream_t st) {
    kiln_cuda_kv kv = {pool_layer, 0, 1.0f, 1.0f, 0};
    return kiln_cuda_rope_kv_ex(qkv, pos, slots, &kv, T, H, KV, hd, block_size, theta, interleaved, pdl, st);
}

extern "C" cudaError_t kiln_cuda_rope_kv_ex(float *qkv, const int32_t *pos, const int64_t *slots, const kiln_cuda_kv *kv,
                                            int T, int H, int KV, int hd, int block_size, double theta,
                                            int interleaved, int pdl, cudaStream_t st) {
    return kiln_cuda_rope_kv_tab(qkv, pos, slots, kv, T, H, KV, hd, block_size, theta, NULL, 1.0, interleaved, NULL, NULL,
                                 pdl, st);
}

static cudaError_t rope_kv_launch(float *qkv, const int32_t *pos, const int64_t *slots, const kiln_cuda_kv *kv, int T,
                                  int H, int KV, int hd, int block_size, double theta, const double *inv_freq,
                                  double mscale, int interleaved, const float *ysa, const float *ysw,
                                  const double *cs_tab, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (hd <= 0 || hd % 2 || hd / 2 > 256 || T > 2147483647 || !kv || !(kv->k_scale > 0.0f) || !(kv->v_scale > 0.0f) ||
        !(mscale > 0.0) || (!ysa != !ysw) || ((uintptr_t)cs_tab & 15))
        return cudaErrorInvalidValue;
    int half = hd / 2, hpb = 256 / half; /* heads per block: 256 threads of (head, pair) */
    if (hpb < 1) hpb = 1;
    int threads = hpb * half;
    if (threads < 32) threads = 32;
    int n_groups = (H + KV + hpb - 1) / hpb;
    dim3 grid((unsigned)T, (unsigned)(n_groups + 1));
    if (kv->f8)
        kiln_launch(kiln_pdl_at(pdl, T), rope_kv_kernel<true>, grid, dim3(threads), 0, st, qkv, pos, slots,
                    kv->pool, H, KV, hd, block_size, theta, inv_freq, mscale, interleaved, hpb, kv->k_scale,
                    kv->v_scale, ysa, ysw, (const double2 *)cs_tab);
    else
        kiln_launch(kiln_pdl_at(pdl, T), rope_kv_kernel<false>, grid, dim3(threads), 0, st, qkv, pos, slots,
                    kv->pool, H, KV, hd, block_size, theta, inv_freq, mscale, interleaved, hpb, kv->k_scale,
                    kv->v_scale, ysa, ysw, (const double2 *)cs_tab);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_rope_kv_tab(float *qkv, const int32_t *pos, const int64_t *slots,
                                             const kiln_cuda_kv *kv, int T, int H, int KV, int hd, int block_size,
                                             double theta, const double *inv_freq, double mscale, int interleaved,
                                             const float *ysa, const float *ysw, int pdl, cudaStream_t st) {
    return rope_kv_launch(qkv, pos, slots, kv, T, H, KV, hd, block_size, theta, inv_freq, mscale, interleaved, ysa, ysw,
                          NULL, pdl, st);
}

extern "C" cudaError_t kiln_cuda_rope_cs(double *cs, const int32_t *pos, int T, int hd, double theta,
                                         const double *inv_freq, double mscale, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (!cs || hd <= 0 || hd % 2 || ((uintptr_t)cs & 15) || !(mscale > 0.0)) return cudaErrorInvalidValue;
    int64_t n = (int64_t)T * (hd / 2);
    rope_cs_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>((double2 *)cs, pos, T, hd, theta, inv_freq, mscale);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_rope_kv_cs(float *qkv, const int32_t *pos, const int64_t *slots, const kiln_cuda_kv *kv,
                                            int T, int H, int KV, int hd, int block_size, const double *cs,
                                            int interleaved, const float *ysa, const float *ysw, int pdl,
                                            cudaStream_t st) {
    if (!cs) return cudaErrorInvalidValue;
    return rope_kv_launch(qkv, pos, slots, kv, T, H, KV, hd, block_size, 0.0, NULL, 1.0, interleaved, ysa, ysw, cs, pdl,
                          st);
}

/* Qwen2's biases and Qwen3's per-head norms (kiln_cuda_qk_prep). Grid (T), 256 threads: first
 * every element of the row gets its bias; then one thread per q / k head sums its squares in the
 * CPU's order (16 partial sums over i mod 16, a halving tree: ops.c sum_squares) and leaves
 * 1 / sqrtf(mean + eps) in shared memory; then every element of the q and k heads is
 * w[d] * (x * inv), the CPU's rounding. The serial sum is hd (<= 256) multiply-adds per head:
 * small next to the QKV GEMM that precedes it. */
static __global__ void qk_prep_kernel(float *qkv, const float *bias, const float *q_norm, const float *k_norm, int H,
                                      int KV, int hd, float eps) {
    extern __shared__ float s_inv[]; /* [H + KV] */
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: qkv is the step's */
    int64_t stride = (int64_t)(H + 2 * KV) * hd;
    float *row = qkv + (int64_t)blockIdx.x * stride;
    if (bias)
        for (int64_t k = threadIdx.x; k < stride; k += blockDim.x) row[k] += bias[k];
    if (!q_norm) return;
    __syncthreads();
    for (int h = threadIdx.x; h < H + KV; h += blockDim.x) {
        const float *x = row + (int64_t)h * hd;
        float s[16];
#pragma unroll
        for (int j = 0; j < 16; j++) s[j] = 0.0f;
        int i = 0;
        for (; i + 16 <= hd; i += 16)
#pragma unroll
            for (int j = 0; j < 16; j++) s[j] = __fadd_rn(s[j], __fmul_rn(x[i + j], x[i + j]));
        for (; i < hd; i++) s[i & 15] = __fadd_rn(s[i & 15], __fmul_rn(x[i], x[i]));
#pragma unroll
        for (int w = 8; w >= 1; w >>= 1)
#pragma unroll
            for (int j = 0; j < w; j++) s[j] = __fadd_rn(s[j], s[j + w]);
        float mean = __fdiv_rn(s[0], (float)hd);
        s_inv[h] = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    }
    __syncthreads();
    for (int k = threadIdx.x; k < (H + KV) * hd; k += blockDim.x) {
        int h = k / hd, d = k % hd;
        const float *w = h < H ? q_norm : k_norm;
        row[k] = __fmul_rn(w[d], __fmul_rn(row[k], s_inv[h]));
    }
}

extern "C" cudaError_t kiln_cuda_qk_prep(float *qkv, const float *bias, const float *q_norm, const float *k_norm, int T,
                                         int H, int KV, int hd, float eps, int pdl, cudaStream_t st) {
    if (T <= 0 || (!bias && !q_norm)) return cudaSuccess;
    if (H <= 0 || KV <= 0 || hd <= 0 || !q_norm != !k_norm || (size_t)(H + KV) * sizeof(float) > 32768)
        return cudaErrorInvalidValue;
    kiln_launch(kiln_pdl_at(pdl, T), qk_prep_kernel, dim3((unsigned)T), dim3(256),
                (size_t)(H + KV) * sizeof(float), st, qkv, bias, q_norm, k_norm, H, KV, hd, eps);
    KILN_CUDA_CHECK_LAUNCH();
}
