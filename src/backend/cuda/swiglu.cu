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

/* The same in 16-byte pieces: 8 gate and 8 up values of row t = blockIdx.y per thread (16-bit
 * gu; f32 gu as two 16-byte loads each), no 64-bit division per element. The scalar kernel
 * above reached ~1 TB/s on the decode batches of 64-128 rows (H200, Devstral: 11.2 / 25.0 us for
 * 12 / 24 MB); this one is for n % 8 == 0, 16-byte aligned rows and T < 65536. Same bits. */
static __device__ __forceinline__ void sw_unpack8(float *v, const void *p, kiln_dtype dt) {
    if (dt == KILN_DT_F32) {
        float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        return;
    }
    uint4 r = *(const uint4 *)p;
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (dt == KILN_DT_F16) {
            v[2 * i] = __half2float(__ushort_as_half((unsigned short)(w[i] & 0xffffu)));
            v[2 * i + 1] = __half2float(__ushort_as_half((unsigned short)(w[i] >> 16)));
        } else {
            v[2 * i] = __uint_as_float(w[i] << 16);
            v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
}

/* M: what the kernel writes beside out:
 *   SW_PMAX (bf16 out only): pmax[t][blockIdx.x] = max |out| over the block's values (bf16-rounded),
 *     the partial maxima from which kiln_cuda_fp8_quant_pmax finishes the down projection's W8A8
 *     input without a pass that reduces the whole row (issue 17);
 *   SW_I8: the down projection's int8 GEMV blocks (issue 16): xq [T][n], xd [T][n / 32], xs
 *     [T][n / 16], kiln_q8_block on the adt-rounded values of out (kiln_cuda_quantize_x's bits),
 *     a block on 4 consecutive lanes (n % 32 == 0: a group is all in the row or all past it). */
#define SW_PLAIN 0
#define SW_PMAX 1
#define SW_I8 2
template <int M>
static __global__ void __launch_bounds__(128)
swiglu_vec_kernel(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int n, float *pmax, const float *gsa,
                  const float *gsw, int8_t *xq, float *xd, float *xs) {
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: everything here reads or writes the step's activations */
    const int i = 8 * (blockIdx.x * blockDim.x + threadIdx.x), t = blockIdx.y;
    if (M == SW_PMAX) {
        __shared__ float red[32];
        float m = 0.0f;
        if (i < n) {
            const unsigned char *row = (const unsigned char *)gu + (size_t)t * 2 * n * (gdt == KILN_DT_F32 ? 4 : 2);
            const size_t gs = gdt == KILN_DT_F32 ? 4 : 2;
            float g[8], u[8];
            sw_unpack8(g, row + (size_t)i * gs, gdt);
            sw_unpack8(u, row + ((size_t)n + i) * gs, gdt);
            if (gsa) { /* cuBLASLt FP8's sums: y (sa[t] sw[c]) as kiln_cuda_fp8_scale_rows */
                float s = gsa[t], cg[8], cu[8];
                sw_unpack8(cg, gsw + i, KILN_DT_F32);
                sw_unpack8(cu, gsw + n + i, KILN_DT_F32);
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    g[j] = __fmul_rn(g[j], __fmul_rn(s, cg[j])); /* never contracted into an FMA */
                    u[j] = __fmul_rn(u[j], __fmul_rn(s, cu[j]));
                }
            }
            uint32_t w[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                __nv_bfloat16 a = __float2bfloat16_rn(kiln_silu_mul(g[2 * j], u[2 * j]));
                __nv_bfloat16 b = __float2bfloat16_rn(kiln_silu_mul(g[2 * j + 1], u[2 * j + 1]));
                m = fmaxf(m, fmaxf(fabsf(__bfloat162float(a)), fabsf(__bfloat162float(b))));
                w[j] = (uint32_t)__bfloat16_as_ushort(a) | (uint32_t)__bfloat16_as_ushort(b) << 16;
            }
            *(uint4 *)((unsigned char *)out + ((size_t)t * n + i) * 2) = make_uint4(w[0], w[1], w[2], w[3]);
        }
        m = kiln_block_max(m, red);
        if (threadIdx.x == 0) pmax[(size_t)t * gridDim.x + blockIdx.x] = m;
        return;
    }
    const bool ok = i < n;
    if (M == SW_PLAIN && !ok) return; /* SW_I8: every lane takes part in kiln_q8_block's shuffles */
    float r[8];
    if (ok) {
        const size_t gs = gdt == KILN_DT_F32 ? 4 : 2, as = adt == KILN_DT_F32 ? 4 : 2;
        const unsigned char *row = (const unsigned char *)gu + (size_t)t * 2 * n * gs;
        float g[8], u[8];
        sw_unpack8(g, row + (size_t)i * gs, gdt);
        sw_unpack8(u, row + ((size_t)n + i) * gs, gdt);
#pragma unroll
        for (int j = 0; j < 8; j++) r[j] = kiln_silu_mul(g[j], u[j]);
        unsigned char *o = (unsigned char *)out + ((size_t)t * n + i) * as;
        if (adt == KILN_DT_F32) {
            ((float4 *)o)[0] = make_float4(r[0], r[1], r[2], r[3]);
            ((float4 *)o)[1] = make_float4(r[4], r[5], r[6], r[7]);
        } else {
            uint32_t w[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t lo, hi;
                if (adt == KILN_DT_F16) {
                    lo = __half_as_ushort(__float2half_rn(r[2 * j]));
                    hi = __half_as_ushort(__float2half_rn(r[2 * j + 1]));
                } else {
                    lo = __bfloat16_as_ushort(__float2bfloat16_rn(r[2 * j]));
                    hi = __bfloat16_as_ushort(__float2bfloat16_rn(r[2 * j + 1]));
                }
                w[j] = lo | (hi << 16);
            }
            *(uint4 *)o = make_uint4(w[0], w[1], w[2], w[3]);
        }
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) r[j] = 0.0f;
    }
    if (M == SW_I8) {
#pragma unroll
        for (int j = 0; j < 8; j++) r[j] = kiln_round_to(adt, r[j]);
        kiln_q8_block<8>(r, ok, xq, xd, xs, (int64_t)t * n + i);
    }
}

extern "C" cudaError_t kiln_cuda_swiglu_in(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int T, int n,
                                           int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (n % 8 == 0 && T < 65536 && !((uintptr_t)gu & 15) && !((uintptr_t)out & 15)) {
        unsigned bx = (unsigned)((n / 8 + 127) / 128);
        kiln_launch(kiln_pdl_at(pdl, T), swiglu_vec_kernel<SW_PLAIN>, dim3(bx, (unsigned)T), dim3(128), 0,
                    st, out, adt, gu, gdt, n, (float *)NULL, (const float *)NULL, (const float *)NULL, (int8_t *)NULL,
                    (float *)NULL, (float *)NULL);
        KILN_CUDA_CHECK_LAUNCH();
    }
    int64_t total = (int64_t)T * n;
    int64_t blocks = (total + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    kiln_launch(kiln_pdl_at(pdl, T),
                swiglu_kernel, dim3((unsigned)blocks), dim3(256), 0, st, out, adt, gu, gdt, T, n);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_swiglu(void *out, kiln_dtype adt, const float *gu, int T, int n, int pdl, cudaStream_t st) {
    return kiln_cuda_swiglu_in(out, adt, gu, KILN_DT_F32, T, n, pdl, st);
}

extern "C" int kiln_cuda_swiglu_pmax_parts(int n) { return (n / 8 + 127) / 128; }

extern "C" cudaError_t kiln_cuda_swiglu_pmax(void *out, const void *gu, kiln_dtype gdt, int T, int n, float *pmax,
                                             const float *gsa, const float *gsw, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (n % 8 || T >= 65536 || ((uintptr_t)gu & 15) || ((uintptr_t)out & 15) || !pmax ||
        (gdt != KILN_DT_F32 && gdt != KILN_DT_BF16 && gdt != KILN_DT_F16) || (!gsa != !gsw) ||
        ((uintptr_t)gsw & 15))
        return cudaErrorInvalidValue;
    kiln_launch(kiln_pdl_at(pdl, T), swiglu_vec_kernel<SW_PMAX>,
                dim3((unsigned)kiln_cuda_swiglu_pmax_parts(n), (unsigned)T), dim3(128), 0, st, out, KILN_DT_BF16, gu,
                gdt, n, pmax, gsa, gsw, (int8_t *)NULL, (float *)NULL, (float *)NULL);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_swiglu_i8(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int T, int n,
                                           int8_t *xq, float *xd, float *xs, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (n < 32 || n % 32 || T >= 65536 || ((uintptr_t)gu & 15) || ((uintptr_t)out & 15) || !xq || !xd || !xs ||
        ((uintptr_t)xq & 7) || (adt != KILN_DT_F32 && adt != KILN_DT_BF16 && adt != KILN_DT_F16) ||
        (gdt != KILN_DT_F32 && gdt != KILN_DT_BF16 && gdt != KILN_DT_F16))
        return cudaErrorInvalidValue;
    unsigned bx = (unsigned)((n / 8 + 127) / 128);
    kiln_launch(kiln_pdl_at(pdl, T), swiglu_vec_kernel<SW_I8>, dim3(bx, (unsigned)T), dim3(128), 0, st, out,
                adt, gu, gdt, n, (float *)NULL, (const float *)NULL, (const float *)NULL, xq, xd, xs);
    KILN_CUDA_CHECK_LAUNCH();
}
