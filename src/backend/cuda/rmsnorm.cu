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

/* Q: the row's FP8 activation codes too (issue 17, W8A8): xq[r] = e4m3(out / s), s = the dynamic
 * scale of max |out| (the bf16-rounded values, as kiln_cuda_fp8_quant_x reads them; stat 0) or
 * in_scale (stat 1), sa[r] = s: the same bytes as kiln_cuda_fp8_quant_x on out, without its
 * launch and its second read of the row (adt bf16 only). dsa / dsw (Q only, may be NULL): delta is
 * cuBLASLt FP8's unscaled sums, taken as delta[src][i] * (dsa[src] * dsw[i]), the bits
 * kiln_cuda_fp8_scale_rows would have written. */
template <bool Q>
static __global__ void add_rmsnorm_vec_kernel(float *x, const float *delta, const int32_t *rows, int write_back,
                                              const float *w, void *out, kiln_dtype adt, int D, float eps,
                                              uint8_t *xq, float *sa, int stat, float in_scale, const float *dsa,
                                              const float *dsw) {
    __shared__ float red[32];
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: everything here reads or writes the step's activations */
    int r = blockIdx.x;
    int64_t src = rows ? (int64_t)rows[r] : (int64_t)r;
    float4 *xr = (float4 *)(x + src * D);
    const float4 *dr = delta ? (const float4 *)(delta + src * D) : NULL;
    const float4 *w4 = (const float4 *)w;
    int n4 = D / 4;
    float4 v[RMS_VEC];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < RMS_VEC; k++) {
        int i = threadIdx.x + k * blockDim.x;
        v[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < n4) {
            float4 a = xr[i];
            if (dr) {
                float4 b = dr[i];
                if (Q && dsa) {
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
    for (int k = 0; k < RMS_VEC; k++) ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    float mean = kiln_block_sum(ss, red) / (float)D;
    float inv = 1.0f / sqrtf(mean + eps);
#pragma unroll
    for (int k = 0; k < RMS_VEC; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            if (write_back) xr[i] = v[k];
            float4 g = w4[i], o;
            o.x = g.x * (v[k].x * inv);
            o.y = g.y * (v[k].y * inv);
            o.z = g.z * (v[k].z * inv);
            o.w = g.w * (v[k].w * inv);
            st4(adt, out, (int64_t)r * D + 4 * (int64_t)i, o);
            if (Q) v[k] = o;
        }
    }
    if (!Q) return;
    /* the codes of the bf16 values just stored: v[k] becomes them as f32 */
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < RMS_VEC; k++) {
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
    for (int k = 0; k < RMS_VEC; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            uint32_t c = (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(v[k].x, s)) |
                         (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(v[k].y, s)) << 8 |
                         (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(v[k].z, s)) << 16 |
                         (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(v[k].w, s)) << 24;
            *(uint32_t *)(xq + (int64_t)r * D + 4 * (int64_t)i) = c;
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

extern "C" cudaError_t kiln_cuda_add_rmsnorm(float *x, const float *delta, const int32_t *rows, int write_back,
                                             const float *w, void *out, kiln_dtype adt, int T, int D, float eps,
                                             int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (rows && write_back) return cudaErrorInvalidValue;
    if (D % 4 == 0 && D / 4 <= 1024 * RMS_VEC)
        kiln_launch(pdl && T >= KILN_PDL_MIN_ROWS,
                add_rmsnorm_vec_kernel<false>, dim3(T), dim3(rms_threads(D)), 0, st, x, delta, rows, write_back, w, out,
                    adt, D, eps, (uint8_t *)NULL, (float *)NULL, 0, 0.0f, (const float *)NULL, (const float *)NULL);
    else
        kiln_launch(pdl && T >= KILN_PDL_MIN_ROWS,
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
    kiln_launch(pdl && T >= KILN_PDL_MIN_ROWS, add_rmsnorm_vec_kernel<true>, dim3(T), dim3(rms_threads(D)), 0, st, x,
                delta, rows, write_back, w, out, KILN_DT_BF16, D, eps, xq, sa, stat, in_scale, dsa, dsw);
    KILN_CUDA_CHECK_LAUNCH();
}
