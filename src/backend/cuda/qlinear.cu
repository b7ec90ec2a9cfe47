/* qlinear.cu: GGUF-quantized weights kept quantized on the device (qdecode.cuh decodes them):
 *
 *   kiln_cuda_qgemv     y[t][n] = sum_k x[t][k] W[n][k] for T <= KILN_QGEMV_MAX_ROWS rows
 *                       (decode): W [N][K] blocks of wdt, x [T][K] bf16 or f16, y f32 with row
 *                       stride ldy (a column slice of a wider output: the q | k | v segments of
 *                       a QKV projection whose parts have different types);
 *   kiln_cuda_qdequant  W -> out [N][K] (bf16, f16 or f32) for the tensor-core GEMM of larger
 *                       batches (prefill): dequantized into a scratch matrix, then cuBLASLt;
 *   kiln_cuda_qembed    embedding rows of a quantized table, f32.
 *
 * GEMV work split: a CTA of 8 warps; a warp owns R (1 or 2) consecutive output rows and the whole
 * of K; lane l takes the 32-element units l, l + 32, ... in ascending order, two per iteration
 * (the loads of both issued before either is used). Per unit and half h (16 elements) it sums
 * s = sum code_j x_j and sx = sum x_j in f32 (codes are exact small integers: a byte permute
 * and one subtraction, no int -> float conversion instruction), then
 *   acc += a_h s + (mn - a_h off) sx                 (qdecode.cuh: w = a_h (code - off) + mn)
 * and the warp ends with a xor butterfly. The order depends on K only: row t has the same bits
 * for any T, R or grid. Against the CPU (which dequantizes each weight, then sums w x) the
 * result differs by f32 rounding only. The weight bytes are read once per step (~4.5 bits a
 * weight for Q4_K): at one row the kernel needs about 3 instructions a weight, which the H200
 * issues in about the time its HBM needs for the bytes. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/qdecode.cuh"

#define QG_WARPS 8

/* 8 x values of a 16-byte chunk as f32 */
template <bool BF>
static __device__ __forceinline__ void qg_unpack8(uint4 v, float *f) {
    uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (BF) {
            f[2 * i] = __uint_as_float(u[i] << 16);
            f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        } else {
            float2 g = __half22float2(*reinterpret_cast<const __half2 *>(&u[i]));
            f[2 * i] = g.x;
            f[2 * i + 1] = g.y;
        }
    }
}

/* acc[r][t] += the unit's contribution of rows r < R for x rows t < TP (t >= T skipped). Per
 * half h: 8 codes at a time as f32 (shared by the T rows), then s[r][t] and sx[t]. */
template <int TP, int R, bool BF>
static __device__ __forceinline__ void qg_unit(float (*acc)[TP], const kiln_qunit *q, const uint4 *x, int64_t x_stride,
                                               int T) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float s[R][TP], sx[TP];
#pragma unroll
        for (int t = 0; t < TP; t++) {
            sx[t] = 0.0f;
#pragma unroll
            for (int r = 0; r < R; r++) s[r][t] = 0.0f;
        }
#pragma unroll
        for (int c = 2 * h; c < 2 * h + 2; c++) { /* 8 elements per 16-byte chunk of x */
            float cf[R][8];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int j = 0; j < 8; j++) cf[r][j] = kiln_q_code(&q[r], 8 * c + j);
#pragma unroll
            for (int t = 0; t < TP; t++) {
                if (t < T) {
                    float xf[8];
                    qg_unpack8<BF>(kiln_ld_nc16(x + t * x_stride + c, 1), xf);
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        sx[t] += xf[j];
#pragma unroll
                        for (int r = 0; r < R; r++) s[r][t] = fmaf(cf[r][j], xf[j], s[r][t]);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            float a = q[r].a[h], b = fmaf(-a, (float)q[r].off, q[r].has_mn ? q[r].mn : 0.0f);
#pragma unroll
            for (int t = 0; t < TP; t++) acc[r][t] = fmaf(b, sx[t], fmaf(a, s[r][t], acc[r][t]));
        }
    }
}

template <int DT, int TP, int R, bool BF>
static __global__ void __launch_bounds__(QG_WARPS * 32, 2)
qgemv_kernel(float *__restrict__ y, int ldy, const uint4 *__restrict__ x, const uint8_t *__restrict__ w,
             int64_t row_bytes, int T, int N, int U) {
    const int lane = threadIdx.x & 31;
    const int n0 = (int)(blockIdx.x * QG_WARPS + (threadIdx.x >> 5)) * R;
    if (n0 >= N) return; /* whole warp */
    const uint8_t *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = w + (int64_t)min(n0 + r, N - 1) * row_bytes; /* rows >= N: read, not stored */
    const int64_t xs = (int64_t)U * 4; /* uint4 chunks per x row: 32 elements = 4 chunks per unit */
    float acc[R][TP];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TP; t++) acc[r][t] = 0.0f;
    int u = lane;
    for (; u + 32 < U; u += 64) { /* two units: both decoded (loads in flight) before use */
        kiln_qunit qa[R], qb[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            kiln_q_unit<DT>(wr[r], u, &qa[r]);
            kiln_q_unit<DT>(wr[r], u + 32, &qb[r]);
        }
        qg_unit<TP, R, BF>(acc, qa, x + (int64_t)u * 4, xs, T);
        qg_unit<TP, R, BF>(acc, qb, x + (int64_t)(u + 32) * 4, xs, T);
    }
    if (u < U) {
        kiln_qunit qa[R];
#pragma unroll
        for (int r = 0; r < R; r++) kiln_q_unit<DT>(wr[r], u, &qa[r]);
        qg_unit<TP, R, BF>(acc, qa, x + (int64_t)u * 4, xs, T);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TP; t++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], o);
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TP; t++)
            if (lane == ((r * TP + t) & 31) && t < T && n0 + r < N) y[(int64_t)t * ldy + n0 + r] = acc[r][t];
}

template <int DT, int TP, bool BF>
static void qg_launch_r(float *y, int ldy, const void *x, const void *w, int64_t rb, int T, int N, int U, int R,
                        cudaStream_t st) {
    int rows_per_cta = QG_WARPS * R;
    unsigned grid = (unsigned)(((int64_t)N + rows_per_cta - 1) / rows_per_cta);
    if (R == 1)
        qgemv_kernel<DT, TP, 1, BF><<<grid, QG_WARPS * 32, 0, st>>>(y, ldy, (const uint4 *)x, (const uint8_t *)w, rb, T,
                                                                    N, U);
    else
        qgemv_kernel<DT, TP, 2, BF><<<grid, QG_WARPS * 32, 0, st>>>(y, ldy, (const uint4 *)x, (const uint8_t *)w, rb, T,
                                                                    N, U);
}

template <int DT>
static void qg_launch(float *y, int ldy, const void *x, bool bf, const void *w, int T, int N, int K, int R,
                      cudaStream_t st) {
    int64_t rb = kiln_q_row_bytes((kiln_dtype)DT, K);
    int U = K / 32;
    if (bf) {
        if (T == 1) qg_launch_r<DT, 1, true>(y, ldy, x, w, rb, T, N, U, R, st);
        else if (T == 2) qg_launch_r<DT, 2, true>(y, ldy, x, w, rb, T, N, U, R, st);
        else if (T <= 4) qg_launch_r<DT, 4, true>(y, ldy, x, w, rb, T, N, U, R, st);
        else qg_launch_r<DT, 8, true>(y, ldy, x, w, rb, T, N, U, R, st);
    } else {
        if (T == 1) qg_launch_r<DT, 1, false>(y, ldy, x, w, rb, T, N, U, R, st);
        else if (T == 2) qg_launch_r<DT, 2, false>(y, ldy, x, w, rb, T, N, U, R, st);
        else if (T <= 4) qg_launch_r<DT, 4, false>(y, ldy, x, w, rb, T, N, U, R, st);
        else qg_launch_r<DT, 8, false>(y, ldy, x, w, rb, T, N, U, R, st);
    }
}

/* K must be whole blocks of wdt (and of 32 elements); w's row starts aligned as the type needs
 * (2 bytes; 4 for Q4_1 / Q5_1 / K-quants whose blocks are multiples of 4; the K-quants need 16
 * for ...: the whole matrix 16-byte aligned is always enough), and 16 readable bytes after the
 * last block. rows_per_warp: 0 (chosen by N and n_sm), 1 or 2. */
extern "C" cudaError_t kiln_cuda_qgemv_ex(float *y, int ldy, const void *x, kiln_dtype xdt, const void *w,
                                          kiln_dtype wdt, int T, int N, int K, int rows_per_warp, int n_sm,
                                          cudaStream_t st) {
    if (!kiln_q_supported(wdt) || (xdt != KILN_DT_BF16 && xdt != KILN_DT_F16) || T < 1 || T > KILN_QGEMV_MAX_ROWS ||
        N < 1 || K < 32 || K % kiln_q_block_elems(wdt) != 0 || K % 32 != 0 || ldy < N || !y || !x || !w ||
        ((uintptr_t)x & 15) || ((uintptr_t)w & 15) || ((uintptr_t)y & 3) ||
        (rows_per_warp != 0 && rows_per_warp != 1 && rows_per_warp != 2))
        return cudaErrorInvalidValue;
    int R = rows_per_warp;
    if (!R) R = (N + 1) / 2 >= (n_sm > 0 ? n_sm : 132) * 16 ? 2 : 1; /* 2 rows a warp while >= 16 warps per SM */
    bool bf = xdt == KILN_DT_BF16;
    KILN_Q_DISPATCH(wdt, qg_launch, y, ldy, x, bf, w, T, N, K, R, st);
    KILN_CUDA_CHECK_LAUNCH();
}

/* ---- dequantization -------------------------------------------------------------------- */

template <int DT>
static __global__ void qdequant_kernel(void *out, kiln_dtype odt, const uint8_t *w, int64_t row_bytes, int N, int U) {
    int64_t total = (int64_t)N * U;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / U;
        int u = (int)(i - n * U);
        kiln_qunit q;
        kiln_q_unit<DT>(w + n * row_bytes, u, &q);
        float v[32];
        kiln_q_dequant_unit(&q, v);
        int64_t o = n * (int64_t)U * 32 + (int64_t)u * 32;
        if (odt == KILN_DT_F32) {
            float4 *p = (float4 *)((float *)out + o);
#pragma unroll
            for (int j = 0; j < 8; j++) p[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
        } else {
            uint32_t h[16];
#pragma unroll
            for (int j = 0; j < 16; j++) {
                if (odt == KILN_DT_BF16) {
                    __nv_bfloat162 b = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
                    h[j] = *reinterpret_cast<uint32_t *>(&b);
                } else {
                    __half2 b = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
                    h[j] = *reinterpret_cast<uint32_t *>(&b);
                }
            }
            uint4 *p = (uint4 *)((uint16_t *)out + o);
#pragma unroll
            for (int j = 0; j < 4; j++) p[j] = make_uint4(h[4 * j], h[4 * j + 1], h[4 * j + 2], h[4 * j + 3]);
        }
    }
}

template <int DT>
static void qd_launch(void *out, kiln_dtype odt, const void *w, int N, int K, cudaStream_t st) {
    int U = K / 32;
    int64_t total = (int64_t)N * U, blocks = (total + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    qdequant_kernel<DT><<<(unsigned)blocks, 256, 0, st>>>(out, odt, (const uint8_t *)w,
                                                          kiln_q_row_bytes((kiln_dtype)DT, K), N, U);
}

extern "C" cudaError_t kiln_cuda_qdequant(void *out, kiln_dtype odt, const void *w, kiln_dtype wdt, int N, int K,
                                          cudaStream_t st) {
    if (!kiln_q_supported(wdt) || (odt != KILN_DT_BF16 && odt != KILN_DT_F16 && odt != KILN_DT_F32) || N < 1 ||
        K < 32 || K % kiln_q_block_elems(wdt) != 0 || K % 32 != 0 || !out || !w || ((uintptr_t)out & 15) ||
        ((uintptr_t)w & 15))
        return cudaErrorInvalidValue;
    KILN_Q_DISPATCH(wdt, qd_launch, out, odt, w, N, K, st);
    KILN_CUDA_CHECK_LAUNCH();
}

/* ---- embedding rows -------------------------------------------------------------------- */

template <int DT>
static __global__ void qembed_kernel(float *x, const uint8_t *emb, int64_t row_bytes, const int32_t *ids,
                                     const int32_t *prev_row, const int32_t *prev_tok, int D) {
    int t = blockIdx.x;
    int pr = prev_row ? prev_row[t] : -1;
    int64_t id = pr >= 0 ? prev_tok[pr] : ids[t];
    for (int u = threadIdx.x; u < D / 32; u += blockDim.x) {
        kiln_qunit q;
        kiln_q_unit<DT>(emb + id * row_bytes, u, &q);
        float v[32];
        kiln_q_dequant_unit(&q, v);
#pragma unroll
        for (int j = 0; j < 32; j++) x[(int64_t)t * D + 32 * u + j] = v[j];
    }
}

template <int DT>
static void qe_launch(float *x, const void *emb, const int32_t *ids, const int32_t *prev_row, const int32_t *prev_tok,
                      int T, int D, cudaStream_t st) {
    qembed_kernel<DT><<<T, 128, 0, st>>>(x, (const uint8_t *)emb, kiln_q_row_bytes((kiln_dtype)DT, D),
                                         ids, prev_row, prev_tok, D);
}

extern "C" cudaError_t kiln_cuda_qembed(float *x, const void *emb, kiln_dtype edt, const int32_t *ids,
                                        const int32_t *prev_row, const int32_t *prev_tok, int T, int D,
                                        cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (!kiln_q_supported(edt) || D % kiln_q_block_elems(edt) != 0 || D % 32 != 0 || (prev_row && !prev_tok) ||
        ((uintptr_t)emb & 15))
        return cudaErrorInvalidValue;
    KILN_Q_DISPATCH(edt, qe_launch, x, emb, ids, prev_row, prev_tok, T, D, st);
    KILN_CUDA_CHECK_LAUNCH();
}
