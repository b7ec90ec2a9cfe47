/* rmsnorm.cu: residual add fused with RMSNorm (and the final norm over the rows that need
 * logits). One block per output row. Arithmetic as the CPU (HF LlamaRMSNorm in f32):
 * inv = 1 / sqrtf(mean + eps), out = w * (v * inv); only the sum's order differs.
 *
 * Fast path (D % 4 == 0, D <= 32768): the block has RMS_THREADS(D) threads (a function of D
 * only, so the sum's order never depends on the batch: I6), each holding up to RMS_VEC float4 of
 * the row in registers: x and delta are read once with 16-byte loads, summed, then scaled and
 * written. At batch 1 this kernel is pure latency (one row, 81 launches per Devstral step), so
 * the row is spread over many threads (D = 5120: 640 threads, 2 float4 each).
 * Fallback (other D): 256 threads, the row read twice. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "util/fp8.h"

#define RMS_VEC 8

static int rms_threads(int D) {
    int n4 = D / 4, t = (n4 + 1) / 2;                     /* ~2 float4 per thread */
    if (t < (n4 + RMS_VEC - 1) / RMS_VEC) t = (n4 + RMS_VEC - 1) / RMS_VEC;
    t = (t + 31) / 32 * 32;
    return t < 32 ? 32 : t > 1024 ? 1024 : t;
}

static __device__ __forceinline__ void st4(kiln_dtype adt, void *out, int64_t i, float4 v) {
    if (adt == KILN_DT_F32) {
        *(float4 *)((float *)out + i) = v;
    } else if (adt == KILN_DT_BF16) {
        __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
        uint2 u;
        u.x = *(const uint32_t *)&a;
        u.y = *(const uint32_t *)&b;
        *(uint2 *)((__nv_bfloat16 *)out + i) = u;
    } else {
        __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
        uint2 u;
        u.x = *(const uint32_t *)&a;
        u.y = *(const uint32_t *)&b;
        *(uint2 *)((__half *)out + i) = u;
    }
}

/* Q: what the kernel writes beside out:
 *   RMS_FP8: the row's FP8 activation codes too (issue 17, W8A8): xq[r] = e4m3(out / s), s = the
 *     dynamic scale of max |out| (the bf16-rounded values, as kiln_cuda_fp8_quant_x reads them;
 *     stat 0) or in_scale (stat 1), sa[r] = s: the same bytes as kiln_cuda_fp8_quant_x on out,
 *     without its launch and its second read of the row (adt bf16 only). dsa / dsw (may be NULL):
 *     delta is cuBLASLt FP8's unscaled sums, taken as delta[src][i] * (dsa[src] * dsw[i]), the
 *     bits kiln_cuda_fp8_scale_rows would have written;
 *   RMS_I8: the row's int8 GEMV blocks (issue 16): xq [T][D] int8, sa = xd [T][D / 32], xs
 *     [T][D / 16], kiln_q8_block on the adt-rounded values of out (kiln_cuda_quantize_x's bits),
 *     a block on 8 consecutive lanes (D % 32 == 0: a group is all in the row or all past it).
 * NV: float4 a thread the launch needs (2, 4 or RMS_VEC; the loops' bound, the same bits: the
 * elements past it were zeros). Up to 4 the norm weight w is loaded before the block sum (one
 * dependent round trip fewer: at batch 1 the kernel is latency); with 8 those registers would
 * pass 64 a thread, which 1024-thread blocks need (__launch_bounds__ keeps every variant within). */
#define RMS_PLAIN 0
#define RMS_FP8 1
#define RMS_I8 2
template <int Q, int NV>
static __global__ void __launch_bounds__(1024) add_rmsnorm_vec_kernel(float *x, const float *delta, const int32_t *rows, int write_back,
                                              const float *w, void *out, kiln_dtype adt, int D, float eps,
                                              void *xq, float *sa, float *xs, int stat, float in_scale,
                                              const float *dsa, const float *dsw) {
    __shared__ float red[32];
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: everything here reads or writes the step's activations */
    constexpr bool WPRE = NV <= 4;
    int r = blockIdx.x;
    int64_t src = rows ? (int64_t)rows[r] : (int64_t)r;
    float4 *xr = (float4 *)(x + src * D);
    const float4 *dr = delta ? (const float4 *)(delta + src * D) : NULL;
    const float4 *w4 = (const float4 *)w;
    int n4 = D / 4;
    float4 v[NV], g[WPRE ? NV : 1];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int i = threadIdx.x + k * blockDim.x;
        v[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < n4) {
            float4 a = xr[i];
            if (WPRE) g[k] = w4[i];
            if (dr) {
                float4 b = dr[i];
                if (Q == RMS_FP8 && dsa) {
                    float4 c = ((const float4 *)dsw)[i];
                    float s = dsa[src];
                    /* __fmul_rn: not contracted into an FMA with the add below */
                    b.x = __fmul_rn(b.x, __fmul_rn(s, c.x));
                    b.y = __fmul_rn(b.y, __fmul_rn(s, c.y));
                    b.z = __fmul_rn(b.z, __fmul_rn(s, c.z));
                    b.w = __fmul_rn(b.w, __fmul_rn(s, c.w));
                }
                a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
            }
            v[k] = a;
        }
    }
#pragma unroll
    for (int k = 0; k < NV; k++) ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    float mean = kiln_block_sum(ss, red) / (float)D;
    float inv = 1.0f / sqrtf(mean + eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            if (write_back) xr[i] = v[k];
            float4 gk = WPRE ? g[WPRE ? k : 0] : w4[i], o;
            o.x = gk.x * (v[k].x * inv);
            o.y = gk.y * (v[k].y * inv);
            o.z = gk.z * (v[k].z * inv);
            o.w = gk.w * (v[k].w * inv);
            st4(adt, out, (int64_t)r * D + 4 * (int64_t)i, o);
            if (Q != RMS_PLAIN) v[k] = o;
        }
    }
    if (Q == RMS_I8) { /* the blocks of the values just stored (v[k] past the row: zeros, not stored) */
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int i = threadIdx.x + k * blockDim.x;
            float e[4] = {kiln_round_to(adt, v[k].x), kiln_round_to(adt, v[k].y), kiln_round_to(adt, v[k].z),
                          kiln_round_to(adt, v[k].w)};
            kiln_q8_block<4>(e, i < n4, (int8_t *)xq, sa, xs, (int64_t)r * D + 4 * (int64_t)i);
        }
        return;
    }
    if (Q != RMS_FP8) return;
    /* the codes of the bf16 values just stored: v[k] becomes them as f32 */
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            v[k].x = __bfloat162float(__float2bfloat16_rn(v[k].x));
            v[k].y = __bfloat162float(__float2bfloat16_rn(v[k].y));
            v[k].z = __bfloat162float(__float2bfloat16_rn(v[k].z));
            v[k].w = __bfloat162float(__float2bfloat16_rn(v[k].w));
            m = fmaxf(m, fmaxf(fmaxf(fabsf(v[k].x), fabsf(v[k].y)), fmaxf(fabsf(v[k].z), fabsf(v[k].w))));
        }
    }
    float s = stat ? in_scale : kiln_fp8_act_scale(kiln_block_max(m, red));
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            uint32_t c = kiln_e4m3x2(__fdiv_rn(v[k].x, s), __fdiv_rn(v[k].y, s)) |
                         kiln_e4m3x2(__fdiv_rn(v[k].z, s), __fdiv_rn(v[k].w, s)) << 16;
            *(uint32_t *)((uint8_t *)xq + (int64_t)r * D + 4 * (int64_t)i) = c;
        }
    }
    if (threadIdx.x == 0) sa[r] = s;
}

static __global__ void add_rmsnorm_kernel(float *x, const float *delta, const int32_t *rows, int write_back,
                                          const float *w, void *out, kiln_dtype adt, int D, float eps) {
    __shared__ float red[32];
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: everything here reads or writes the step's activations */
    int r = blockIdx.x;
    int64_t src = rows ? (int64_t)rows[r] : (int64_t)r;
    float *xr = x + src * D;
    const float *dr = delta ? delta + src * D : NULL;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i];
        if (dr) v += dr[i];
        ss += v * v;
    }
    float mean = kiln_block_sum(ss, red) / (float)D;
    float inv = 1.0f / sqrtf(mean + eps);
    /* each thread reads back only the elements it wrote: no barrier needed for write_back */
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i];
        if (dr) v += dr[i];
        if (write_back) xr[i] = v;
        kiln_st(adt, out, (int64_t)r * D + i, w[i] * (v * inv));
    }
}

/* the vector kernel of mode Q with the fewest float4 a thread that cover D / 4 with rms_threads(D) */
template <int Q>
static cudaError_t rms_vec_launch(int pdl, int T, int D, cudaStream_t st, float *x, const float *delta,
                                  const int32_t *rows, int write_back, const float *w, void *out, kiln_dtype adt,
                                  float eps, void *xq, float *sa, float *xs, int stat, float in_scale,
                                  const float *dsa, const float *dsw) {
    int nt = rms_threads(D), nv = (D / 4 + nt - 1) / nt;
    auto k = nv <= 2 ? add_rmsnorm_vec_kernel<Q, 2> : nv <= 4 ? add_rmsnorm_vec_kernel<Q, 4>
                                                             : add_rmsnorm_vec_kernel<Q, RMS_VEC>;
    return kiln_launch(kiln_pdl_at(pdl, T), k, dim3(T), dim3(nt), 0, st, x, delta, rows, write_back, w, out,
                       adt, D, eps, xq, sa, xs, stat, in_scale, dsa, dsw);
}

extern "C" cudaError_t kiln_cuda_add_rmsnorm(float *x, const float *delta, const int32_t *rows, int write_back,
                                             const float *w, void *out, kiln_dtype adt, int T, int D, float eps,
                                             int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (rows && write_back) return cudaErrorInvalidValue;
    if (D % 4 == 0 && D / 4 <= 1024 * RMS_VEC)
        rms_vec_launch<RMS_PLAIN>(pdl, T, D, st, x, delta, rows, write_back, w, out, adt, eps, NULL, NULL, NULL, 0,
                                  0.0f, NULL, NULL);
    else
        kiln_launch(kiln_pdl_at(pdl, T),
                add_rmsnorm_kernel, dim3(T), dim3(256), 0, st, x, delta, rows, write_back, w,
                    out, adt, D, eps);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_add_rmsnorm_q8(float *x, const float *delta, const int32_t *rows, int write_back,
                                                const float *w, void *out, int T, int D, float eps, uint8_t *xq,
                                                float *sa, int stat, float in_scale, const float *dsa,
                                                const float *dsw, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if ((rows && write_back) || D % 4 || D / 4 > 1024 * RMS_VEC || !xq || !sa || ((uintptr_t)xq & 3) ||
        (stat && !(in_scale > 0.0f)) || (!dsa != !dsw) || (dsa && !delta) || ((uintptr_t)dsw & 15))
        return cudaErrorInvalidValue;
    rms_vec_launch<RMS_FP8>(pdl, T, D, st, x, delta, rows, write_back, w, out, KILN_DT_BF16, eps, xq, sa, NULL, stat,
                            in_scale, dsa, dsw);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_add_rmsnorm_i8(float *x, const float *delta, const int32_t *rows, int write_back,
                                                const float *w, void *out, kiln_dtype adt, int T, int D, float eps,
                                                int8_t *xq, float *xd, float *xs, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if ((rows && write_back) || D < 32 || D % 32 || D / 4 > 1024 * RMS_VEC || !xq || !xd || !xs ||
        ((uintptr_t)xq & 3) || (adt != KILN_DT_BF16 && adt != KILN_DT_F16 && adt != KILN_DT_F32))
        return cudaErrorInvalidValue;
    rms_vec_launch<RMS_I8>(pdl, T, D, st, x, delta, rows, write_back, w, out, adt, eps, xq, xd, xs, 0, 0.0f, NULL,
                           NULL);
    KILN_CUDA_CHECK_LAUNCH();
}
