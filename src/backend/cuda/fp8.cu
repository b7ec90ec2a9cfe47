/* fp8.cu: FP8 E4M3 weights on the GPU (issue 17): the activation quantization, the tensor-core
 * product for 1..64 rows, and the dequantization for cuBLASLt. The math is docs/fp8.md's (the
 * CPU backend's, src/backend/cpu/matmul.c); a kernel differs from it only by the order of its f32
 * sums.
 *
 *   W  [N][K] e4m3 codes (row-major, K % 16 == 0, 16-byte aligned rows)
 *   sw per-row scales [N] (TENSOR and CHANNEL: a per-tensor scale is repeated over its rows, so
 *      q|k|v with three scales is one matrix), or [N][G] (BLOCK, 128-column groups, the
 *      checkpoint's [N / block_out][G] tiles repeated over each tile's rows)
 *   x  [T][K]: W8A8: e4m3 codes (kiln_cuda_fp8_quant_x) with scales sa [T][G] (G = 1 unless
 *      BLOCK); weight-only (W8A16): bf16
 *   y  [T][ldy] f32:  y[t][n] = (sum_k xa[t][k] w[n][k]) (sa[t] sw[n])            TENSOR, CHANNEL
 *                     y[t][n] = sum_g (sum_{k in g} xa w) (sa[t][g] sw[n][g])       BLOCK
 *      (xa: the decoded activation codes, or the bf16 x; sa = 1 weight-only)
 *
 * The product (fp8_mma_kernel): a CTA of KW = 4 or 8 warps owns 16 weight rows (the MMA's m) and all T rows
 * of x (NT n-tiles of 8 tokens, the MMA's n); the warps split K in 64-column chunks (warp w: units
 * w, w + KW, .. of U chunks; BLOCK: a unit is one 128-column group) and add their partial sums in
 * warp order through shared memory at the end. W8A8 runs mma.sync m16n8k32 e4m3 (sm_89+: the
 * product of two e4m3 values is exact, the sum f32); weight-only runs m16n8k16 bf16 on the codes
 * converted to bf16 in registers (exact: every e4m3 value is a bf16 value), on any sm_80+ card.
 * Each lane (g = lane / 4, t4 = lane % 4) loads 16 contiguous bytes [64 c + 16 t4, +16) of weight
 * rows g and g + 8 and the same columns of token g of each n-tile: the MMA's logical k are mapped
 * onto those physical columns (the sum is the same in any order of k), so every load is a plain
 * 16-byte load and a row's 64 bytes of a chunk are one 64-byte run. Weights stream once
 * (L1::no_allocate, L2 evict-first); x (at most 64 x 32768 bytes) is read through L1 by every CTA.
 * Why not cuBLASLt here: at decode sizes (1..16 rows) its FP8 kernels are tiles of 64+ rows
 * (measured in the perf notes); this kernel reads each weight byte once at any T <= 64. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "util/fp8.h"
#include <cuda_fp16.h>

#define F8_QX_THREADS 128

/* ---- activation quantization ------------------------------------------------------------------ */

/* the largest m over the CTA's NT threads (red: NT / 32 floats of shared memory; every thread
 * gets it; a barrier inside: call from every thread) */
template <int NT>
static __device__ __forceinline__ float f8_block_max(float m, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
    __syncthreads();
    m = red[0];
#pragma unroll
    for (int i = 1; i < NT / 32; i++) m = fmaxf(m, red[i]);
    return m;
}

/* One CTA per (group g, row t): s = static ? in_scale : kiln_fp8_act_scale(max |x| over the
 * group); xq = e4m3(x / s) (IEEE division, round to nearest even, saturating), as the CPU's
 * kiln_fp8_act_q. */
static __global__ void __launch_bounds__(F8_QX_THREADS)
fp8_quant_x_kernel(uint8_t *__restrict__ xq, float *__restrict__ sa, const void *__restrict__ x, kiln_dtype xdt, int K,
                   int gs, int G, int stat, float in_scale) {
    __shared__ float red[F8_QX_THREADS / 32];
    const int g = blockIdx.x, t = blockIdx.y;
    const int k0 = g * gs, k1 = min(K, k0 + gs);
    const int64_t row = (int64_t)t * K;
    float s = in_scale;
    if (!stat) {
        float m = 0.0f;
        for (int k = k0 + (int)threadIdx.x; k < k1; k += F8_QX_THREADS) m = fmaxf(m, fabsf(kiln_ld(xdt, x, row + k)));
        s = kiln_fp8_act_scale(f8_block_max<F8_QX_THREADS>(m, red));
    }
    for (int k = k0 + (int)threadIdx.x; k < k1; k += F8_QX_THREADS)
        xq[row + k] = kiln_f32_to_e4m3(__fdiv_rn(kiln_ld(xdt, x, row + k), s));
    if (threadIdx.x == 0) sa[(int64_t)t * G + g] = s;
}

/* the e4m3 codes of 8 bf16 values v (in order) divided by s: x / s an IEEE division, the CPU's
 * activation codes (util/fp8.h kiln_fp8_act_q) */
static __device__ __forceinline__ uint2 f8_codes8(uint4 v, float s) {
    uint32_t u[4] = {v.x, v.y, v.z, v.w}, c[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 4; i++)
        c[i >> 1] |= kiln_e4m3x2(__fdiv_rn(__uint_as_float(u[i] << 16), s),
                                 __fdiv_rn(__uint_as_float(u[i] & 0xffff0000u), s))
                     << (16 * (i & 1));
    return make_uint2(c[0], c[1]);
}

/* fp8_quant_x_kernel's codes and scales for bf16 x, 8 elements (16 bytes) a thread and load: one CTA of F8_QXR threads a row
 * (gs == K), or 16 threads a 128-column group and 16 groups a CTA (gs == 128). K % 8 == 0. */
#define F8_QXR 512
template <bool ROW>
static __global__ void __launch_bounds__(ROW ? F8_QXR : 256)
fp8_quant_x16_kernel(uint8_t *__restrict__ xq, float *__restrict__ sa, const uint16_t *__restrict__ x, int K, int G,
                     int stat, float in_scale) {
    __shared__ float red[F8_QXR / 32];
    const int t = ROW ? blockIdx.x : blockIdx.y;
    const int g = ROW ? 0 : (int)blockIdx.x * 16 + (int)(threadIdx.x >> 4);
    const int k0 = ROW ? 0 : g * 128, k1 = ROW ? K : min(K, k0 + 128);
    const int step = ROW ? F8_QXR * 8 : 16 * 8, first = ROW ? (int)threadIdx.x * 8 : (int)(threadIdx.x & 15) * 8;
    const int64_t row = (int64_t)t * K;
    float s = in_scale;
    if (!stat) {
        float m = 0.0f;
        for (int k = k0 + first; k < k1 && (ROW || g < G); k += step) {
            uint4 v = *(const uint4 *)(x + row + k);
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
                m = fmaxf(m, fmaxf(fabsf(__uint_as_float(u[i] << 16)), fabsf(__uint_as_float(u[i] & 0xffff0000u))));
        }
        if (ROW) {
            m = f8_block_max<F8_QXR>(m, red);
        } else { /* the group's 16 lanes */
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        }
        s = kiln_fp8_act_scale(m);
    }
    if (!ROW && g >= G) return;
    for (int k = k0 + first; k < k1; k += step) {
        *(uint2 *)(xq + row + k) = f8_codes8(*(const uint4 *)(x + row + k), s);
    }
    if ((ROW && threadIdx.x == 0) || (!ROW && (threadIdx.x & 15) == 0)) sa[(int64_t)t * G + g] = s;
}

extern "C" cudaError_t kiln_cuda_fp8_quant_x(uint8_t *xq, float *sa, const void *x, kiln_dtype xdt, int T, int K,
                                             int gs, int stat, float in_scale, cudaStream_t st) {
    if ((xdt != KILN_DT_BF16 && xdt != KILN_DT_F16 && xdt != KILN_DT_F32) || T < 1 || K < 1 || gs < 1 || !xq || !sa ||
        !x || (stat && !(in_scale > 0.0f)))
        return cudaErrorInvalidValue;
    int G = (K + gs - 1) / gs;
    int vec = xdt == KILN_DT_BF16 && K % 8 == 0 && !((uintptr_t)x & 15) && !((uintptr_t)xq & 7);
    if (vec && gs == K)
        fp8_quant_x16_kernel<true><<<(unsigned)T, F8_QXR, 0, st>>>(xq, sa, (const uint16_t *)x, K, 1, stat, in_scale);
    else if (vec && gs == 128)
        fp8_quant_x16_kernel<false><<<dim3((unsigned)((G + 15) / 16), (unsigned)T), 256, 0, st>>>(
            xq, sa, (const uint16_t *)x, K, G, stat, in_scale);
    else
        fp8_quant_x_kernel<<<dim3((unsigned)G, (unsigned)T), F8_QX_THREADS, 0, st>>>(xq, sa, x, xdt, K, gs, G, stat,
                                                                                     in_scale);
    KILN_CUDA_CHECK_LAUNCH();
}

/* xq[t][k] = e4m3(x / s), s = kiln_fp8_act_scale(max_p pmax[t][p]) (P partial maxima of |x| over
 * row t, written by the kernel that produced x), sa[t] = s; x bf16, 8 values a thread, grid
 * (ceil(K / 1024), T). Every warp reduces the P partials itself, a lane's share each then
 * shuffles (the maximum is exact in any order): no barrier, no pass over the row, no chain of P
 * dependent loads a thread (that chain made the kernel 40 us at 512 rows x 32768, H100). Same
 * bytes as fp8_quant_x16_kernel<true>. */
static __global__ void __launch_bounds__(128)
fp8_quant_pmax_kernel(uint8_t *__restrict__ xq, float *__restrict__ sa, const uint16_t *__restrict__ x,
                      const float *__restrict__ pmax, int P, int K) {
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: x and pmax are the step's */
    const int t = blockIdx.y, k = 8 * ((int)blockIdx.x * 128 + (int)threadIdx.x);
    float m = 0.0f;
    for (int p = (int)threadIdx.x & 31; p < P; p += 32) m = fmaxf(m, pmax[(int64_t)t * P + p]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float s = kiln_fp8_act_scale(m);
    if (blockIdx.x == 0 && threadIdx.x == 0) sa[t] = s;
    if (k >= K) return;
    const int64_t row = (int64_t)t * K;
    *(uint2 *)(xq + row + k) = f8_codes8(*(const uint4 *)(x + row + k), s);
}

extern "C" cudaError_t kiln_cuda_fp8_quant_pmax(uint8_t *xq, float *sa, const void *x, const float *pmax, int P, int T,
                                                int K, int pdl, cudaStream_t st) {
    if (T < 1 || K < 8 || K % 8 || P < 1 || !xq || !sa || !x || !pmax || ((uintptr_t)x & 15) || ((uintptr_t)xq & 7))
        return cudaErrorInvalidValue;
    kiln_launch(kiln_pdl_at(pdl, T), fp8_quant_pmax_kernel, dim3((unsigned)((K + 1023) / 1024), (unsigned)T), dim3(128), 0, st,
                xq, sa, (const uint16_t *)x, pmax, P, K);
    KILN_CUDA_CHECK_LAUNCH();
}

/* kiln_e4m3x2 against util/fp8.h's kiln_f32_to_e4m3 over every f32 bit pattern but NaN: bad[0]
 * counts the differing values, bad[1] the lowest such pattern (0xffffffff: none) */
static __global__ void e4m3_check_kernel(unsigned long long *bad) {
    const uint64_t n = 1ull << 32, step = (uint64_t)gridDim.x * blockDim.x * 2;
    unsigned long long nb = 0, first = 0xffffffffull;
    for (uint64_t i = 2 * ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += step) {
        float a = __uint_as_float((uint32_t)i), b = __uint_as_float((uint32_t)i + 1);
        uint32_t hw = kiln_e4m3x2(a, b), sw = (uint32_t)kiln_f32_to_e4m3(a) | (uint32_t)kiln_f32_to_e4m3(b) << 8;
        int na = ((uint32_t)i & 0x7fffffffu) > 0x7f800000u, nb2 = (((uint32_t)i + 1) & 0x7fffffffu) > 0x7f800000u;
        if (!na && (hw & 0xffu) != (sw & 0xffu)) { nb++; first = first < i ? first : i; }
        if (!nb2 && (hw >> 8) != (sw >> 8)) { nb++; first = first < i + 1 ? first : i + 1; }
    }
    if (nb) {
        atomicAdd(&bad[0], nb);
        atomicMin(&bad[1], first);
    }
}

extern "C" cudaError_t kiln_cuda_e4m3_check(unsigned long long *bad, cudaStream_t st) {
    unsigned long long init[2] = {0, 0xffffffffull};
    cudaError_t e = cudaMemcpyAsync(bad, init, sizeof init, cudaMemcpyHostToDevice, st);
    if (e != cudaSuccess) return e;
    e4m3_check_kernel<<<4096, 256, 0, st>>>(bad);
    KILN_CUDA_CHECK_LAUNCH();
}

/* ---- the product ------------------------------------------------------------------------------- */

/* d += a b: m16n8k32 e4m3 x e4m3 -> f32 (sm_89+; the host never launches the W8A8 kernel below
 * that: kiln_cuda_fp8_mma refuses it) */
static __device__ __forceinline__ void f8_mma_e4m3(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                   uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)d; (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
    __trap();
#endif
}

/* d += a b: m16n8k16 bf16 -> f32 */
static __device__ __forceinline__ void f8_mma_bf16(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                   uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}


/* A8: W8A8 (x e4m3 codes), else weight-only (x bf16). NT: n-tiles of 8 tokens (T <= 8 NT). U:
 * 64-column chunks per unit. BLK: BLOCK scales, a unit is one group of 64 U columns (U = 2).
 * P: K parts (1, 2, 4; P > 1 only with NT = 1, !BLK, T <= 8 / P, K % (64 P) == 0). With P parts a
 * CTA owns R = 16 / P weight rows, not 16: MMA row m is weight row m % R over the columns of part
 * m / R, MMA column n is token n % (8 / P) over part n / (8 / P), so every (row, part) meets its
 * part of x, and the output (row r, token t) is the sum over parts p of D[p R + r][p (8 / P) + t]
 * (the other products are discarded). At a few tokens the MMA's unused columns cost nothing,
 * and the P-fold grid balances the SMs on the 5120- and 6144-row matrices (320 / 384 CTAs of 16
 * rows leave 2 on some SMs and 3 on others). */
template <bool A8, int NT, int U, bool BLK, int KW, int P>
static __global__ void __launch_bounds__(KW * 32)
fp8_mma_kernel(float *__restrict__ y, int ldy, const uint8_t *__restrict__ w, const float *__restrict__ sw,
               const void *__restrict__ xv, const float *__restrict__ sa, int T, int N, int K, int G) {
    static_assert(P == 1 || (NT == 1 && !BLK), "K parts with one n-tile and per-row scales only");
    constexpr int R = 16 / P, TP = 8 / P;
    __shared__ float red[KW][NT * 4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int n0 = (int)blockIdx.x * R;
    const int Kp = K / P;          /* columns of a part */
    const int C = (Kp + 63) / 64; /* chunks of a part */
    const uint8_t *wr0 = w + (int64_t)min(n0 + g % R, N - 1) * K + (int64_t)(g / R) * Kp;
    const uint8_t *wr1 = w + (int64_t)min(n0 + (g + 8) % R, N - 1) * K + (int64_t)((g + 8) / R) * Kp;
    const int xoff = P == 1 ? 0 : (g / TP) * Kp; /* the part of this lane's MMA column */
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    float acc[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[i][e] = 0.0f;

    for (int base = warp * U; base < C; base += KW * U) {
        uint4 wa[U], wb[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int k = (base + u) * 64 + 16 * t4, ok = k + 16 <= Kp;
            wa[u] = kiln_ld_stream16((const uint4 *)(wr0 + k), ok, pol);
            wb[u] = kiln_ld_stream16((const uint4 *)(wr1 + k), ok, pol);
        }
        /* each chunk's (BLOCK: each group's) MMA sums start from zero and are added to the f32
         * accumulators on the CUDA cores: the FP8 MMA's own accumulation keeps fewer bits than
         * f32 (DeepSeek-V3 report, sec. 3.3.2: promote every 128 columns) */
        float part[NT][4];
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (!BLK || u == 0) {
#pragma unroll
                for (int i = 0; i < NT; i++)
#pragma unroll
                    for (int e = 0; e < 4; e++) part[i][e] = 0.0f;
            }
            int k = (base + u) * 64 + 16 * t4, ok = k + 16 <= Kp;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                int tok = P == 1 ? 8 * i + g : g % TP, okt = ok && tok < T;
                if (A8) {
                    const uint8_t *x8 = (const uint8_t *)xv + xoff;
                    uint4 b = kiln_ld_nc16((const uint4 *)(x8 + (int64_t)min(tok, T - 1) * K + k), okt);
                    f8_mma_e4m3(part[i], wa[u].x, wb[u].x, wa[u].y, wb[u].y, b.x, b.y);
                    f8_mma_e4m3(part[i], wa[u].z, wb[u].z, wa[u].w, wb[u].w, b.z, b.w);
                } else {
                    const uint16_t *x16 = (const uint16_t *)xv + xoff + (int64_t)min(tok, T - 1) * K + k;
                    uint4 b0 = kiln_ld_nc16((const uint4 *)x16, okt), b1 = kiln_ld_nc16((const uint4 *)(x16 + 8), okt);
                    uint32_t bw[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
                    uint32_t aw[4] = {wa[u].x, wa[u].y, wa[u].z, wa[u].w}, bw8[4] = {wb[u].x, wb[u].y, wb[u].z, wb[u].w};
#pragma unroll
                    for (int m = 0; m < 4; m++) /* columns 4m .. 4m + 3 of the lane's 16 */
                        f8_mma_bf16(part[i], kiln_f8x2_to_bf16x2(aw[m]), kiln_f8x2_to_bf16x2(bw8[m]),
                                    kiln_f8x2_to_bf16x2(aw[m] >> 16), kiln_f8x2_to_bf16x2(bw8[m] >> 16), bw[2 * m],
                                    bw[2 * m + 1]);
                }
            }
            if (!BLK) {
#pragma unroll
                for (int i = 0; i < NT; i++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[i][e] += part[i][e];
            }
        }
        if (BLK) { /* group base / U: its sums times sa[t][g] sw[n][g] */
            int gi = base / U;
#pragma unroll
            for (int i = 0; i < NT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int tok = min(8 * i + 2 * t4 + (e & 1), T - 1), n = min(n0 + g + 8 * (e >> 1), N - 1);
                    float s = (A8 ? sa[(int64_t)tok * G + gi] : 1.0f) * sw[(int64_t)n * G + gi];
                    acc[i][e] = fmaf(part[i][e], s, acc[i][e]);
                }
        }
    }
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) red[warp][i * 4 + e][lane] = acc[i][e];
    __syncthreads();
    if constexpr (P > 1) { /* output (r, t): parts in order, each part's warps in order */
        for (int q = threadIdx.x; q < R * TP; q += KW * 32) {
            int r = q / TP, t = q % TP, n = n0 + r;
            if (t >= T || n >= N) continue;
            float v = 0.0f;
#pragma unroll
            for (int p = 0; p < P; p++) {
                int m = p * R + r, c = p * TP + t, f = (m >= 8) * 2 + (c & 1), l = (m & 7) * 4 + (c >> 1);
                float vp = red[0][f][l];
#pragma unroll
                for (int ww = 1; ww < KW; ww++) vp += red[ww][f][l];
                v += vp;
            }
            y[(int64_t)t * ldy + n] = v * ((A8 ? sa[t] : 1.0f) * sw[n]);
        }
    } else {
        for (int q = threadIdx.x; q < NT * 4 * 32; q += KW * 32) {
            int l = q & 31, f = q >> 5, e = f & 3, i = f >> 2;
            int tok = 8 * i + 2 * (l & 3) + (e & 1), n = n0 + (l >> 2) + 8 * (e >> 1);
            float v = red[0][f][l];
#pragma unroll
            for (int ww = 1; ww < KW; ww++) v += red[ww][f][l];
            if (tok < T && n < N) {
                if (!BLK) v *= (A8 ? sa[tok] : 1.0f) * sw[n];
                y[(int64_t)tok * ldy + n] = v;
            }
        }
    }
}

template <bool A8, int NT, bool BLK, int P>
static void f8_launch(float *y, int ldy, const uint8_t *w, const float *sw, const void *x, const float *sa, int T,
                      int N, int K, int G, int kw, cudaStream_t st) {
    /* chunks per unit: 2 for BLOCK (one 128-column group); else as many as registers allow */
    constexpr int U = BLK ? 2 : (A8 ? (NT <= 2 ? 4 : 2) : (NT <= 2 ? 2 : 1));
    unsigned grid = (unsigned)((N + 16 / P - 1) / (16 / P));
    if (kw == 4) fp8_mma_kernel<A8, NT, U, BLK, 4, P><<<grid, 4 * 32, 0, st>>>(y, ldy, w, sw, x, sa, T, N, K, G);
    else fp8_mma_kernel<A8, NT, U, BLK, 8, P><<<grid, 8 * 32, 0, st>>>(y, ldy, w, sw, x, sa, T, N, K, G);
}

template <bool A8, bool BLK>
static void f8_launch_t(float *y, int ldy, const uint8_t *w, const float *sw, const void *x, const float *sa, int T,
                        int N, int K, int G, int kw, int parts, cudaStream_t st) {
    if (!BLK && parts == 4) f8_launch<A8, 1, false, 4>(y, ldy, w, sw, x, sa, T, N, K, G, kw, st);
    else if (!BLK && parts == 2) f8_launch<A8, 1, false, 2>(y, ldy, w, sw, x, sa, T, N, K, G, kw, st);
    else if (T <= 8) f8_launch<A8, 1, BLK, 1>(y, ldy, w, sw, x, sa, T, N, K, G, kw, st);
    else if (T <= 16) f8_launch<A8, 2, BLK, 1>(y, ldy, w, sw, x, sa, T, N, K, G, kw, st);
    else if (T <= 32) f8_launch<A8, 4, BLK, 1>(y, ldy, w, sw, x, sa, T, N, K, G, kw, st);
    else f8_launch<A8, 8, BLK, 1>(y, ldy, w, sw, x, sa, T, N, K, G, kw, st);
}

/* warps a CTA (splitting K): at one row, 4 while 8 would leave fewer than ~3 CTAs an SM (more,
 * smaller CTAs balance the SMs better on the 5120- and 6144-row matrices), else 8; from two rows
 * always 8 (H200, Devstral shapes, weights past L2, us a call at T = 2 / 4 / 8, 8 warps against
 * 4: qkv 11.0 / 11.1 / 11.0 against 12.0 / 12.6 / 12.9, o 8.3 / 8.5 / 8.7 against 9.4 / 9.7 /
 * 10.1, down 49.3 / 48.0 / 47.1 against 51.7 / 54.1 / 56.3; at T = 1 down 50.4 against 48.0) */
static int f8_pick_warps(int ctas, int T, int n_sm) {
    int sm = n_sm > 0 ? n_sm : 132;
    return ctas < 3 * sm && T == 1 ? 4 : 8;
}

/* K parts that take T rows of a K-column matrix: 1, 2 (T <= 4) or 4 (T <= 2) */
static int f8_parts_ok(int parts, int T, int K, int blk) {
    return parts == 1 || ((parts == 2 || parts == 4) && !blk && T <= 8 / parts && K % (64 * parts) == 0);
}

/* the parts auto (H200, Devstral shapes, T = 1 and 2, us a call; docs/perf-notes.md): 4 parts of
 * CTAs of 4 warps on the widest matrices (gate|up 80.9-81.5 against 86.8-87.2 in one part), one
 * part elsewhere (qkv, o, down within +-1 us of one part at any parts and warps) */
static int f8_pick_parts(int T, int N, int K, int blk, int n_sm) {
    int sm = n_sm > 0 ? n_sm : 132;
    return N / 16 >= 8 * sm && f8_parts_ok(4, T, K, blk) ? 4 : 1;
}

extern "C" cudaError_t kiln_cuda_fp8_mma(float *y, int ldy, const uint8_t *w, const float *sw, int G, const void *x,
                                         const float *sa, int a8, int T, int N, int K, int warps, int parts, int n_sm,
                                         int has_fp8_mma, cudaStream_t st) {
    if (T < 1 || T > KILN_FP8_MMA_MAX_ROWS || N < 1 || K < 16 || K % 16 || ldy < N || G < 1 ||
        (G > 1 && G != (K + 127) / 128) || !y || !w || !sw || !x || (a8 && !sa) || (a8 && !has_fp8_mma) ||
        (warps != 0 && warps != 4 && warps != 8) || ((uintptr_t)w & 15) || ((uintptr_t)x & 15) || ((uintptr_t)y & 3))
        return cudaErrorInvalidValue;
    int blk = G > 1; /* one group (K <= 128) is the per-row math */
    if (parts && !f8_parts_ok(parts, T, K, blk)) return cudaErrorInvalidValue;
    int p = parts ? parts : f8_pick_parts(T, N, K, blk, n_sm);
    int kw = warps ? warps : p == 4 ? 4 : f8_pick_warps((N + 15) / 16, T, n_sm);
    if (a8) {
        if (blk) f8_launch_t<true, true>(y, ldy, w, sw, x, sa, T, N, K, G, kw, p, st);
        else f8_launch_t<true, false>(y, ldy, w, sw, x, sa, T, N, K, G, kw, p, st);
    } else {
        if (blk) f8_launch_t<false, true>(y, ldy, w, sw, x, sa, T, N, K, G, kw, p, st);
        else f8_launch_t<false, false>(y, ldy, w, sw, x, sa, T, N, K, G, kw, p, st);
    }
    KILN_CUDA_CHECK_LAUNCH();
}

/* y[t][n] *= sa[t] sw[n] in place (cuBLASLt FP8's unscaled sums: docs/fp8.md's (sum) (s_a s_w)) */
static __global__ void fp8_scale_rows_kernel(float *__restrict__ y, int ldy, const float *__restrict__ sa,
                                             const float *__restrict__ sw, int N, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / N;
        int c = (int)(i - t * N);
        y[t * ldy + c] *= sa[t] * sw[c];
    }
}

/* the same, 4 columns a thread, row t = blockIdx.y (N % 4 == 0, ldy % 4 == 0, y and sw 16-byte
 * aligned): no 64-bit division an element (3.2 us a call at 16 rows before, H200) */
static __global__ void fp8_scale_rows4_kernel(float *__restrict__ y, int ldy, const float *__restrict__ sa,
                                              const float *__restrict__ sw, int N) {
    const int t = blockIdx.y, c = 4 * ((int)blockIdx.x * 256 + (int)threadIdx.x);
    if (c >= N) return;
    float4 *p = (float4 *)(y + (int64_t)t * ldy + c), v = *p, w = *(const float4 *)(sw + c);
    const float s = sa[t];
    v.x *= s * w.x; v.y *= s * w.y; v.z *= s * w.z; v.w *= s * w.w;
    *p = v;
}

extern "C" cudaError_t kiln_cuda_fp8_scale_rows(float *y, int ldy, const float *sa, const float *sw, int T, int N,
                                                cudaStream_t st) {
    if (T < 1 || N < 1 || ldy < N || !y || !sa || !sw) return cudaErrorInvalidValue;
    if (N % 4 == 0 && ldy % 4 == 0 && !((uintptr_t)y & 15) && !((uintptr_t)sw & 15) && T < 65536) {
        fp8_scale_rows4_kernel<<<dim3((unsigned)((N / 4 + 255) / 256), (unsigned)T), 256, 0, st>>>(y, ldy, sa, sw, N);
        KILN_CUDA_CHECK_LAUNCH();
    }
    int64_t n = (int64_t)T * N, blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    fp8_scale_rows_kernel<<<(unsigned)blocks, 256, 0, st>>>(y, ldy, sa, sw, N, n);
    KILN_CUDA_CHECK_LAUNCH();
}

/* ---- dequantization (cuBLASLt on bf16 / f16 for what the product above does not take) ---------- */

static __global__ void fp8_dequant_kernel(uint16_t *__restrict__ out, int bf, const uint8_t *__restrict__ w,
                                          const float *__restrict__ sw, int N, int K, int G) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n = i / K;
    if (n >= N) return;
    int k = (int)(i - n * K);
    float v = kiln_e4m3_to_f32(w[i]) * (G > 1 ? sw[n * G + k / 128] : sw[n]);
    out[i] = bf ? kiln_f32_to_bf16_bits(v) : __half_as_ushort(__float2half_rn(v));
}

extern "C" cudaError_t kiln_cuda_fp8_dequant(void *out, kiln_dtype odt, const uint8_t *w, const float *sw, int G,
                                             int N, int K, cudaStream_t st) {
    if ((odt != KILN_DT_BF16 && odt != KILN_DT_F16) || N < 1 || K < 1 || G < 1 || (G > 1 && G != (K + 127) / 128) ||
        !out || !w || !sw)
        return cudaErrorInvalidValue;
    int64_t n = (int64_t)N * K;
    fp8_dequant_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>((uint16_t *)out, odt == KILN_DT_BF16, w, sw, N, K,
                                                                     G);
    KILN_CUDA_CHECK_LAUNCH();
}
