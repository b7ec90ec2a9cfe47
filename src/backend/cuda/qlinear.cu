/* qlinear.cu: GGUF-quantized weights kept quantized on the device (qdecode.cuh decodes them):
 *
 *   kiln_cuda_quantize_x  activations x [T][K] (bf16 / f16 / f32) -> int8 blocks of 32 with a
 *                         scale (d = amax / 127) and the sums of each 16-element half (GGML's
 *                         q8_1 idea): the GEMV's input (in a decode step mostly written by
 *                         the kernel before, RMSNorm, SwiGLU or attention's combine, with the
 *                         same arithmetic: cuda_dev.cuh kiln_q8_block);
 *   kiln_cuda_qgemv_q8    y[t][n] = sum_k x[t][k] W[n][k] for T <= KILN_QGEMV_MAX_ROWS rows
 *                         (decode), in launches of up to 8 rows (the weights are read once per
 *                         launch): W [N][K] blocks of wdt; y f32 with row stride ldy (a column
 *                         slice of a wider output: the q | k | v segments of a QKV projection
 *                         whose parts have different types);
 *   kiln_cuda_qdequant    W -> out [N][K] (bf16, f16 or f32) for the tensor-core GEMM of larger
 *                         batches (prefill): dequantized into a scratch matrix, then cuBLASLt;
 *   kiln_cuda_qembed      embedding rows of a quantized table, f32.
 *
 * GEMV work split: a CTA of 8 warps; a warp owns R (1 or 2) consecutive output rows and the
 * whole of K; lane l takes the 32-element units l, l + 32, ... in ascending order, two per
 * iteration (the loads of both issued before either is used); the K-quants: lane l takes the
 * unit pairs l, l + 32, ... that share their bytes (Q4_K units 2p, 2p + 1: kiln_q4k_pair; Q6_K
 * units 4j + k, 4j + k + 2, k < 2: kiln_q6_pair), decoded from one set of loads. Q5_K keeps single
 * units: paired, batch 1 gained (Devstral Q5_K_M 119.7 -> 125.7 tok/s, H100) but batch 2 lost
 * (184.0 -> 175.5), and the pairing's order must not depend on T (a row's bits never do). Per unit, row and half h the
 * integer S = sum code_j q_j comes from 4 dp4a (exact), and
 *   acc += a_h d S + (mn - a_h off) s_h             (qdecode.cuh: w = a_h (code - off) + mn)
 * then a xor butterfly over the lanes. The order depends on K only: row t has the same bits for
 * any T, R, chunking or grid. Against the CPU (f32 weights times f32 x) the result differs by the
 * activations' int8 rounding (|x - d q| <= d / 2 per element) and f32 rounding; a first version
 * with f32 activations needed ~13 instructions a weight and reached 1.0-1.5 TB/s on Q4_K (H200,
 * Devstral shapes, T = 1): compute-bound. dp4a does four multiply-adds in one instruction. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/qdecode.cuh"

#define QG_WARPS 8

/* ---- activations as int8 blocks ---------------------------------------------------------- */

/* One warp per 32-element block of one row (kiln_q8_block, one element a lane). */
static __global__ void quantize_x_kernel(int8_t *xq, float *xd, float *xs, const void *x, kiln_dtype xdt, int T, int K) {
    int64_t blk = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (blk >= (int64_t)T * (K / 32)) return; /* whole warp */
    int64_t i = blk * 32 + (threadIdx.x & 31);
    float v = kiln_ld(xdt, x, i);
    kiln_q8_block<1>(&v, true, xq, xd, xs, i);
}

extern "C" cudaError_t kiln_cuda_quantize_x(int8_t *xq, float *xd, float *xs, const void *x, kiln_dtype xdt, int T, int K,
                                            cudaStream_t st) {
    if (T < 1 || K < 32 || K % 32 || !xq || !xd || !xs || !x ||
        (xdt != KILN_DT_BF16 && xdt != KILN_DT_F16 && xdt != KILN_DT_F32) || ((uintptr_t)xq & 15))
        return cudaErrorInvalidValue;
    int64_t warps = (int64_t)T * (K / 32);
    quantize_x_kernel<<<(unsigned)((warps + 7) / 8), 256, 0, st>>>(xq, xd, xs, x, xdt, T, K);
    KILN_CUDA_CHECK_LAUNCH();
}

/* ---- the GEMV ------------------------------------------------------------------------------ */

/* acc[r][t] += the unit's contribution of rows r < R for x rows t < TP (t >= T skipped):
 * per half h, S = dp4a(codes, q) over 4 words (exact integer), then
 *   acc += a_h d S + (mn - a_h off) s_h        (w = a_h (code - off) + mn; x ~ d q, s_h = d sum q) */
template <int TP, int R>
static __device__ __forceinline__ void qg_unit(float (*acc)[TP], const kiln_qunit *q, const int8_t *xq, const float *xd,
                                               const float *xs, int u, int K, int T) {
#pragma unroll
    for (int t = 0; t < TP; t++) {
        if (t < T) {
            const uint4 *xp = (const uint4 *)(xq + (int64_t)t * K + 32 * u);
            uint4 v0 = kiln_ld_nc16(xp, 1), v1 = kiln_ld_nc16(xp + 1, 1);
            int xw[8] = {(int)v0.x, (int)v0.y, (int)v0.z, (int)v0.w, (int)v1.x, (int)v1.y, (int)v1.z, (int)v1.w};
            int64_t bi = (int64_t)t * (K / 32) + u;
            float d = __ldg(xd + bi), s0 = __ldg(xs + 2 * bi), s1 = __ldg(xs + 2 * bi + 1);
#pragma unroll
            for (int r = 0; r < R; r++) {
                int S0 = 0, S1 = 0;
#pragma unroll
                for (int i = 0; i < 4; i++) { /* codes as int8: Q8_0's are, the others are < 64 */
                    S0 = __dp4a((int)q[r].c[i], xw[i], S0);
                    S1 = __dp4a((int)q[r].c[4 + i], xw[4 + i], S1);
                }
                float mn = q[r].has_mn ? q[r].mn : 0.0f, a0 = q[r].a[0], a1 = q[r].a[1];
                float v = acc[r][t];
                v = fmaf(a0 * d, (float)S0, v);
                v = fmaf(a1 * d, (float)S1, v);
                v = fmaf(fmaf(-a0, (float)q[r].off, mn), s0, v);
                v = fmaf(fmaf(-a1, (float)q[r].off, mn), s1, v);
                acc[r][t] = v;
            }
        }
    }
}

template <int DT, int TP, int R>
static __global__ void __launch_bounds__(QG_WARPS * 32, (DT == KILN_DT_Q6_K || DT == KILN_DT_Q8_0) && TP == 1 ? 3 : 2)
qgemv_kernel(float *__restrict__ y, int ldy, const int8_t *__restrict__ xq, const float *__restrict__ xd,
             const float *__restrict__ xs, const uint8_t *__restrict__ w, int64_t row_bytes, int T, int N, int K) {
    const int lane = threadIdx.x & 31, U = K / 32;
    const int n0 = (int)(blockIdx.x * QG_WARPS + (threadIdx.x >> 5)) * R;
    if (n0 >= N) return; /* whole warp */
    const uint8_t *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = w + (int64_t)min(n0 + r, N - 1) * row_bytes; /* rows >= N: read, not stored */
    float acc[R][TP];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TP; t++) acc[r][t] = 0.0f;
    if constexpr (DT == KILN_DT_Q6_K) { /* pairs of units sharing their ql / qh bytes (U % 8 == 0) */
        for (int p = lane; p < U / 2; p += 32) { /* pair p = units 8 (p / 4) + 4 h + k0, + 2 */
            const int sb = p >> 2, h = (p >> 1) & 1, k0 = p & 1, u0 = 8 * sb + 4 * h + k0;
            kiln_qunit qa[R], qb[R];
#pragma unroll
            for (int r = 0; r < R; r++) kiln_q6_pair(wr[r], sb, h, k0, &qa[r], &qb[r]);
            qg_unit<TP, R>(acc, qa, xq, xd, xs, u0, K, T);
            qg_unit<TP, R>(acc, qb, xq, xd, xs, u0 + 2, K, T);
        }
    } else if constexpr (DT == KILN_DT_Q4_K) { /* pairs sharing their qs bytes */
        for (int p = lane; p < U / 2; p += 32) { /* pair p = units 2p, 2p + 1 */
            kiln_qunit qa[R], qb[R];
#pragma unroll
            for (int r = 0; r < R; r++) kiln_q4k_pair(wr[r], p >> 2, p & 3, &qa[r], &qb[r]);
            qg_unit<TP, R>(acc, qa, xq, xd, xs, 2 * p, K, T);
            qg_unit<TP, R>(acc, qb, xq, xd, xs, 2 * p + 1, K, T);
        }
    } else {
        int u = lane;
        for (; u + 32 < U; u += 64) { /* two units: both decoded (loads in flight) before use */
            kiln_qunit qa[R], qb[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                kiln_q_unit<DT, TP == 1>(wr[r], u, &qa[r]);
                kiln_q_unit<DT, TP == 1>(wr[r], u + 32, &qb[r]);
            }
            qg_unit<TP, R>(acc, qa, xq, xd, xs, u, K, T);
            qg_unit<TP, R>(acc, qb, xq, xd, xs, u + 32, K, T);
        }
        if (u < U) {
            kiln_qunit qa[R];
#pragma unroll
            for (int r = 0; r < R; r++) kiln_q_unit<DT, TP == 1>(wr[r], u, &qa[r]);
            qg_unit<TP, R>(acc, qa, xq, xd, xs, u, K, T);
        }
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

template <int DT, int TP>
static void qg_launch_r(float *y, int ldy, const int8_t *xq, const float *xd, const float *xs, const void *w, int64_t rb,
                        int T, int N, int K, int R, cudaStream_t st) {
    int rows_per_cta = QG_WARPS * R;
    unsigned grid = (unsigned)(((int64_t)N + rows_per_cta - 1) / rows_per_cta);
    const uint8_t *wb = (const uint8_t *)w;
    if (R == 1) qgemv_kernel<DT, TP, 1><<<grid, QG_WARPS * 32, 0, st>>>(y, ldy, xq, xd, xs, wb, rb, T, N, K);
    else qgemv_kernel<DT, TP, 2><<<grid, QG_WARPS * 32, 0, st>>>(y, ldy, xq, xd, xs, wb, rb, T, N, K);
}

/* T rows in chunks of up to 8 (each chunk one launch: the weights are read once per chunk) */
template <int DT>
static void qg_launch(float *y, int ldy, const int8_t *xq, const float *xd, const float *xs, const void *w, int T, int N,
                      int K, int R, cudaStream_t st) {
    int64_t rb = kiln_q_row_bytes((kiln_dtype)DT, K);
    for (int t0 = 0; t0 < T; t0 += 8) {
        int n = T - t0 < 8 ? T - t0 : 8;
        float *yc = y + (int64_t)t0 * ldy;
        const int8_t *q = xq + (int64_t)t0 * K;
        const float *d = xd + (int64_t)t0 * (K / 32), *s = xs + (int64_t)t0 * (K / 16);
        if (n == 1) qg_launch_r<DT, 1>(yc, ldy, q, d, s, w, rb, n, N, K, R, st);
        else if (n == 2) qg_launch_r<DT, 2>(yc, ldy, q, d, s, w, rb, n, N, K, R, st);
        else if (n <= 4) qg_launch_r<DT, 4>(yc, ldy, q, d, s, w, rb, n, N, K, R, st);
        else qg_launch_r<DT, 8>(yc, ldy, q, d, s, w, rb, n, N, K, R, st);
    }
}

/* rows per warp: 2 while that leaves >= 16 warps per SM, else 1 (4 spills registers in the
 * 8-row variants: ptxas, sm_90) */
static int qg_pick_rows(int N, int n_sm) {
    int sm = n_sm > 0 ? n_sm : 132;
    return N / 2 >= sm * 16 ? 2 : 1;
}

extern "C" cudaError_t kiln_cuda_qgemv_q8(float *y, int ldy, const int8_t *xq, const float *xd, const float *xs,
                                          const void *w, kiln_dtype wdt, int T, int N, int K, int rows_per_warp,
                                          int n_sm, cudaStream_t st) {
    if (!kiln_q_supported(wdt) || T < 1 || T > KILN_QGEMV_MAX_ROWS || N < 1 || K < 32 ||
        K % kiln_q_block_elems(wdt) != 0 || K % 32 != 0 || ldy < N || !y || !xq || !xd || !xs || !w ||
        ((uintptr_t)xq & 15) || ((uintptr_t)w & 15) || ((uintptr_t)y & 3) ||
        (rows_per_warp != 0 && rows_per_warp != 1 && rows_per_warp != 2))
        return cudaErrorInvalidValue;
    int R = rows_per_warp ? rows_per_warp : qg_pick_rows(N, n_sm);
    KILN_Q_DISPATCH(wdt, qg_launch, y, ldy, xq, xd, xs, w, T, N, K, R, st);
    KILN_CUDA_CHECK_LAUNCH();
}

/* ---- tensor cores for 9..64 rows ------------------------------------------------------------ */

/* y[t][n] = sum_k x[t][k] W[n][k] for T <= 64 rows on mma.sync m16n8k16 (bf16 in, f32 out), the
 * weights dequantized into shared memory tile by tile (kiln_q_dequant_unit: the CPU's f32 value,
 * rounded to bf16 as a bf16 model's weights are):
 *   CTA (128 threads): 32 weight rows [n0, n0 + 32) x all T rows; K in chunks of 128 (4 units);
 *   per chunk thread i dequantizes unit (row i / 4, unit i % 4) into Ws [32][128 + 8] and loads
 *   16-byte pieces of x into Xs [16 MT][128 + 8] (rows >= T and columns >= K zero); warp w
 *   multiplies the chunk's k16 steps 2w and 2w + 1 (MT m-tiles x 4 n-tiles, 16 MT f32
 *   accumulators a thread); the next chunk's weight units and x pieces are loaded into registers
 *   before the multiply (in flight while it runs).
 *   End: the 4 warps' partial sums meet in shared memory and are added in warp order.
 * The order of every sum depends on K only, not on T: a row has the same bits in any batch. */
#define QM_ROWS 32
#define QM_KC 128
#define QM_LD (QM_KC + 8) /* bf16 elements per smem row: +16 bytes keeps ldmatrix conflict-free */

template <int DT, int MT>
static __global__ void __launch_bounds__(128)
qmma_kernel(float *__restrict__ y, int ldy, const uint16_t *__restrict__ x, const uint8_t *__restrict__ w,
            int64_t row_bytes, int T, int N, int K) {
    extern __shared__ __align__(16) unsigned char qm_smem[];
    uint16_t *Ws = (uint16_t *)qm_smem;                  /* [32][QM_LD] */
    uint16_t *Xs = Ws + QM_ROWS * QM_LD;                 /* [16 MT][QM_LD] */
    float *red = (float *)qm_smem;                       /* [4][16 MT][32] after the K loop */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n0 = blockIdx.x * QM_ROWS, U = K / 32, nch = (K + QM_KC - 1) / QM_KC;
    const int wr = tid >> 2, wu = tid & 3;
    const uint8_t *wrow = w + (int64_t)min(n0 + wr, N - 1) * row_bytes;
    /* x pieces: 16 MT rows x 16 pieces of 8 elements; thread takes pieces tid, tid + 128, ... */
    const int NXP = (16 * MT * 16) / 128;
    float acc[MT][4][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[m][j][e] = 0.0f;
    kiln_qunit q;
    uint4 xv[NXP];
    auto load_chunk = [&](int c) {
        int u = c * 4 + wu;
        if (u < U) kiln_q_unit<DT>(wrow, u, &q);
#pragma unroll
        for (int i = 0; i < NXP; i++) {
            int p = tid + 128 * i, r = p >> 4, k = c * QM_KC + (p & 15) * 8;
            xv[i] = r < T && k < K ? __ldg((const uint4 *)(x + (int64_t)r * K + k)) : make_uint4(0, 0, 0, 0);
        }
    };
    load_chunk(0);
    const uint32_t sW = (uint32_t)__cvta_generic_to_shared(Ws), sX = (uint32_t)__cvta_generic_to_shared(Xs);
    for (int c = 0; c < nch; c++) {
        { /* the registers of chunk c into shared memory */
            uint32_t hb[16];
            if (c * 4 + wu < U) {
                float v[32];
                kiln_q_dequant_unit(&q, v);
#pragma unroll
                for (int j = 0; j < 16; j++) {
                    __nv_bfloat162 b = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
                    hb[j] = *reinterpret_cast<uint32_t *>(&b);
                }
            } else {
#pragma unroll
                for (int j = 0; j < 16; j++) hb[j] = 0;
            }
            uint4 *d = (uint4 *)(Ws + wr * QM_LD + wu * 32);
#pragma unroll
            for (int j = 0; j < 4; j++) d[j] = make_uint4(hb[4 * j], hb[4 * j + 1], hb[4 * j + 2], hb[4 * j + 3]);
#pragma unroll
            for (int i = 0; i < NXP; i++) {
                int p = tid + 128 * i;
                *(uint4 *)(Xs + (p >> 4) * QM_LD + (p & 15) * 8) = xv[i];
            }
        }
        __syncthreads();
        if (c + 1 < nch) load_chunk(c + 1);
#pragma unroll
        for (int ks = 2 * warp; ks < 2 * warp + 2; ks++) {
            uint32_t b[2][4]; /* n-tiles 0-1 and 2-3: {b0, b1} of each */
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int nr = 16 * h + (lane & 7) + ((lane >> 4) << 3), kk = ks * 16 + ((lane >> 3) & 1) * 8;
                kiln_ldsm_x4(b[h], sW + (uint32_t)(nr * QM_LD + kk) * 2);
            }
#pragma unroll
            for (int m = 0; m < MT; m++) {
                uint32_t a[4];
                int mr = 16 * m + (lane & 15), kk = ks * 16 + (lane >> 4) * 8;
                kiln_ldsm_x4(a, sX + (uint32_t)(mr * QM_LD + kk) * 2);
#pragma unroll
                for (int j = 0; j < 4; j++) kiln_mma16816<true>(acc[m][j], a, b[j >> 1][2 * (j & 1)], b[j >> 1][2 * (j & 1) + 1]);
            }
        }
        __syncthreads();
    }
    /* warp partials: acc[m][j] = {(row g, col 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)} of
     * m-tile m, n-tile j (g = lane / 4, t = lane % 4) */
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int r = 16 * m + g + 8 * (e >> 1), col = 8 * j + 2 * t4 + (e & 1);
                red[(warp * 16 * MT + r) * QM_ROWS + col] = acc[m][j][e];
            }
    __syncthreads();
    for (int i = tid; i < 16 * MT * QM_ROWS; i += 128) {
        int r = i / QM_ROWS, col = i % QM_ROWS;
        float v = red[i];
#pragma unroll
        for (int ww = 1; ww < 4; ww++) v += red[ww * 16 * MT * QM_ROWS + i];
        if (r < T && n0 + col < N) y[(int64_t)r * ldy + n0 + col] = v;
    }
}

template <int DT>
static cudaError_t qm_launch(float *y, int ldy, const void *x, const void *w, int T, int N, int K, cudaStream_t st) {
    int64_t rb = kiln_q_row_bytes((kiln_dtype)DT, K);
    unsigned grid = (unsigned)((N + QM_ROWS - 1) / QM_ROWS);
    const uint16_t *xb = (const uint16_t *)x;
    const uint8_t *wb = (const uint8_t *)w;
    int MT = T <= 16 ? 1 : T <= 32 ? 2 : 4;
    size_t tiles = (size_t)(QM_ROWS + 16 * MT) * QM_LD * 2, red = (size_t)4 * 16 * MT * QM_ROWS * 4;
    size_t smem = tiles > red ? tiles : red;
    if (MT == 1) qmma_kernel<DT, 1><<<grid, 128, smem, st>>>(y, ldy, xb, wb, rb, T, N, K);
    else if (MT == 2) qmma_kernel<DT, 2><<<grid, 128, smem, st>>>(y, ldy, xb, wb, rb, T, N, K);
    else qmma_kernel<DT, 4><<<grid, 128, smem, st>>>(y, ldy, xb, wb, rb, T, N, K);
    return cudaSuccess;
}

extern "C" cudaError_t kiln_cuda_qmma(float *y, int ldy, const void *x, kiln_dtype xdt, const void *w, kiln_dtype wdt,
                                      int T, int N, int K, cudaStream_t st) {
    if (!kiln_q_supported(wdt) || xdt != KILN_DT_BF16 || T < 1 || T > KILN_QMMA_MAX_ROWS || N < 1 || K < 32 ||
        K % kiln_q_block_elems(wdt) != 0 || K % 32 != 0 || ldy < N || !y || !x || !w || ((uintptr_t)x & 15) ||
        ((uintptr_t)w & 15) || ((uintptr_t)y & 3))
        return cudaErrorInvalidValue;
    cudaError_t e = cudaSuccess;
    switch (wdt) {
    case KILN_DT_Q8_0: e = qm_launch<KILN_DT_Q8_0>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q4_0: e = qm_launch<KILN_DT_Q4_0>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q4_1: e = qm_launch<KILN_DT_Q4_1>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q5_0: e = qm_launch<KILN_DT_Q5_0>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q5_1: e = qm_launch<KILN_DT_Q5_1>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q4_K: e = qm_launch<KILN_DT_Q4_K>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q5_K: e = qm_launch<KILN_DT_Q5_K>(y, ldy, x, w, T, N, K, st); break;
    case KILN_DT_Q6_K: e = qm_launch<KILN_DT_Q6_K>(y, ldy, x, w, T, N, K, st); break;
    default: return cudaErrorInvalidValue;
    }
    if (e != cudaSuccess) return e;
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
