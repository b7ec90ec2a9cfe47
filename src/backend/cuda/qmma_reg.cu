/* qmma_reg.cu: y[t][n] = sum_k x[t][k] W[n][k] for 1..64 rows of x on tensor cores (mma.sync
 * m16n8k16, bf16 in, f32 accumulators), the GGUF weights dequantized in registers, straight from
 * their blocks in global memory: no shared-memory tiles, no second pass. For the types of the
 * Devstral GGUFs people run (Q4_K and Q6_K, Q4_K_M's mix; Q8_0), K a multiple of 256.
 *
 * Why: qlinear.cu's GEMV (dp4a) costs ~4 instructions a weight per activation row and its
 * shared-memory qmma ~7 a weight (a unit decoded per thread, stored, synced, reloaded): both are
 * instruction-bound far below the memory floor (H200: Q4_K gate|up at 16 rows 957 GB/s). Here the
 * decoding of a weight costs ~1.5 instructions whatever the row count (Q4_K / Q6_K: a byte permute
 * builds two bf16 values 128 + code at once, one exact bf16x2 subtraction, one bf16x2 FMA with the
 * unit's scale and offset) and the MMA covers 16 activation rows; with addresses, scales and moves
 * the loop is ~4 PTX instructions a weight, and the kernel reaches 1.3-1.8 TB/s on the Devstral
 * shapes (perf notes, third session of 2026-12-03: not yet the memory floor).
 *
 * Layout: a warp owns NT n-tiles of 8 weight rows and every 4th 256-element group of K (warp w:
 * groups w, w + 4, ...; a CTA of 4 warps covers 8 NT rows and all of K; the warps' partial sums
 * are added in warp order in shared memory at the end). In a group, lane (g = lane / 4,
 * t4 = lane % 4) takes weight row g of each n-tile and the 64 contiguous elements
 * [64 t4, 64 t4 + 64) of the group: the sum over k is the same in any order of k, so the MMA's
 * logical k of step s (0..15) are mapped to the lane's physical elements 4 s .. 4 s + 3 (B
 * fragment b0 = elements 4s, 4s + 1, b1 = 4s + 2, 4s + 3; A fragment likewise from x). Each
 * lane's weight bytes are then contiguous: Q4_K qs[32 t4 .. 32 t4 + 32) (16-byte loads) holds
 * sub-blocks 2 t4 (low nibbles) and 2 t4 + 1 (high); Q6_K ql[32 t4 ..] (sub-blocks
 * 4 (t4 / 2) + t4 % 2 and that + 2, so its x columns are not contiguous: qr_xoff) and
 * qh[32 (t4 / 2) ..]; Q8_0 blocks 2 t4 and 2 t4 + 1 of the group.
 *
 * Values: Q8_0 weights are bf16(d q), the bits of kiln_cuda_qdequant; Q4_K's are
 * bf16(bf16(d sc) q + bf16(-dmin m)) and Q6_K's bf16(bf16(d sc) (q - 32)): the unit's scale and
 * offset rounded to bf16 (a relative 2^-9 on the unit's scale, 3% of a quantization step on the
 * offset at worst: far under the 4- and 6-bit rounding itself). The order of every sum depends on
 * K and the CTA shape only, not on T: a row has the same bits in any batch of one launch shape. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/qdecode.cuh"
#include <cuda_bf16.h>

/* d += a b, m16n8k16 bf16 (not volatile: the compiler may interleave it with the decoding) */
static __device__ __forceinline__ void qr_mma(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                              uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t qr_bf2_bits(__nv_bfloat162 v) { return *reinterpret_cast<uint32_t *>(&v); }
static __device__ __forceinline__ __nv_bfloat162 qr_bits_bf2(uint32_t v) {
    return *reinterpret_cast<__nv_bfloat162 *>(&v);
}

#define QR_WARPS 4
/* raw 32-bit words a lane takes for one n-tile row and group */
#define QR_NRAW(dt) ((dt) == KILN_DT_Q4_K ? 12 : (dt) == KILN_DT_Q6_K ? 24 : 17)
/* the widest n-tile count a type runs at (more raw words would spill) */
#define QR_NTMAX(dt) ((dt) == KILN_DT_Q4_K ? 4 : 2)
#define QR_BB(dt) ((dt) == KILN_DT_Q4_K ? 144 : (dt) == KILN_DT_Q6_K ? 210 : 272) /* bytes of a group of a row */

/* the lane's raw words of one row's group (blk: the group's first byte; through L1: a lane's 32
 * bytes of a 144-byte Q4_K block straddle 32-byte sectors whose other halves the lane's second
 * load or its neighbour's reads; with L1::no_allocate those went to L2 twice) */
template <int DT>
static __device__ __forceinline__ void qr_load(uint32_t *r, const uint8_t *blk, int t4) {
    if (DT == KILN_DT_Q4_K) { /* d, dmin, scales[12] | qs[32 t4 .. +32): 16-byte aligned */
        uint4 h = __ldg((const uint4 *)blk), q0 = __ldg((const uint4 *)(blk + 16 + 32 * t4)),
              q1 = __ldg((const uint4 *)(blk + 32 + 32 * t4));
        r[0] = h.x, r[1] = h.y, r[2] = h.z, r[3] = h.w;
        r[4] = q0.x, r[5] = q0.y, r[6] = q0.z, r[7] = q0.w;
        r[8] = q1.x, r[9] = q1.y, r[10] = q1.z, r[11] = q1.w;
    } else if (DT == KILN_DT_Q6_K) { /* 2-byte aligned: aligned words, realigned at decode */
        const uint32_t *ql = (const uint32_t *)((uintptr_t)(blk + 32 * t4) & ~(uintptr_t)3);
        const uint32_t *qh = (const uint32_t *)((uintptr_t)(blk + 128 + 32 * (t4 >> 1)) & ~(uintptr_t)3);
        const uint32_t *sc = (const uint32_t *)((uintptr_t)(blk + 192) & ~(uintptr_t)3);
#pragma unroll
        for (int i = 0; i < 9; i++) r[i] = __ldg(ql + i);
#pragma unroll
        for (int i = 0; i < 9; i++) r[9 + i] = __ldg(qh + i);
#pragma unroll
        for (int i = 0; i < 6; i++) r[18 + i] = __ldg(sc + i);
    } else { /* Q8_0: blocks 2 t4, 2 t4 + 1 of the group (68 bytes, 4-byte aligned: rows of 8k blocks) */
        const uint32_t *p = (const uint32_t *)(blk + 68 * t4);
#pragma unroll
        for (int i = 0; i < 17; i++) r[i] = __ldg(p + i);
    }
}

/* per-group scale data of a lane (bf16x2 pairs): Q4_K {a, mn} of sub-blocks 2 t4, 2 t4 + 1;
 * Q6_K a of its 4 16-element groups; Q8_0 d of its 2 blocks (f32 bits) */
template <int DT, bool AL = false>
static __device__ __forceinline__ void qr_prep(const uint32_t *r, int t4, const uint8_t *b, uint32_t *p) {
    if (DT == KILN_DT_Q4_K) {
        float d = kiln_q_h2f(r[0]), dmin = kiln_q_h2f(r[0] >> 16);
        int lo = t4 < 2;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int j = 2 * t4 + h;
            uint32_t b0 = kiln_q_byte3(r + 1, lo ? j : j + 4), b1 = kiln_q_byte3(r + 1, lo ? j + 4 : j - 4),
                     b2 = kiln_q_byte3(r + 1, j);
            int sc = lo ? (int)(b0 & 63) : (int)((b0 & 15) | ((b1 >> 6) << 4));
            int mn = lo ? (int)(b1 & 63) : (int)((b0 >> 4) | ((b2 >> 6) << 4));
            p[2 * h] = qr_bf2_bits(__float2bfloat162_rn(__fmul_rn(d, (float)sc)));
            p[2 * h + 1] = qr_bf2_bits(__float2bfloat162_rn(-__fmul_rn(dmin, (float)mn)));
        }
    } else if (DT == KILN_DT_Q6_K) {
        /* scales[16] at byte 192, d at 208; the words start at (b + 192) & ~3 */
        unsigned sh = (unsigned)((uintptr_t)(b + 192) & 3) * 8u;
        uint32_t w[5];
#pragma unroll
        for (int i = 0; i < 5; i++) w[i] = AL ? r[18 + i] : __funnelshift_r(r[18 + i], r[19 + i], sh);
        float d = kiln_q_h2f(w[4]);
        /* lane t4: h = t4 / 2, units k = t4 % 2 (low nibbles) and k + 2 (high); scale index
         * 8h + 2k + e / 16 */
        int base = 8 * (t4 >> 1) + 2 * (t4 & 1);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int si = base + (i >> 1) * 4 + (i & 1);
            int8_t s = (int8_t)kiln_q_byte4(w, si);
            p[i] = qr_bf2_bits(__float2bfloat162_rn(__fmul_rn(d, (float)s)));
        }
    } else {
        p[0] = __float_as_uint(kiln_q_h2f(r[0]));
        p[1] = __float_as_uint(kiln_q_h2f(r[8] >> 16));
    }
}

/* step s (0..15) of the lane's 64 elements: b0 = elements 4s, 4s + 1, b1 = 4s + 2, 4s + 3 */
template <int DT, int S, bool AL = false>
static __device__ __forceinline__ void qr_step(const uint32_t *r, const uint32_t *p, int t4, const uint8_t *b, uint32_t *b0,
                                               uint32_t *b1) {
    if (DT == KILN_DT_Q4_K) {
        uint32_t nib = (S < 8 ? r[4 + S] : r[4 + S - 8] >> 4) & 0x0f0f0f0fu;
        __nv_bfloat162 v0 = qr_bits_bf2(__byte_perm(nib, 0x43434343u, 0x4140)), /* 128 + code, exact */
            v1 = qr_bits_bf2(__byte_perm(nib, 0x43434343u, 0x4342));
        const __nv_bfloat162 c128 = qr_bits_bf2(0x43004300u);
        __nv_bfloat162 a = qr_bits_bf2(p[S < 8 ? 0 : 2]), m = qr_bits_bf2(p[S < 8 ? 1 : 3]);
        *b0 = qr_bf2_bits(__hfma2(__hsub2(v0, c128), a, m));
        *b1 = qr_bf2_bits(__hfma2(__hsub2(v1, c128), a, m));
    } else if (DT == KILN_DT_Q6_K) {
        unsigned shl = (unsigned)((uintptr_t)(b + 32 * t4) & 3) * 8u;
        unsigned shh = (unsigned)((uintptr_t)(b + 128 + 32 * (t4 >> 1)) & 3) * 8u;
        const int i = S & 7;
        uint32_t ql = AL ? r[i] : __funnelshift_r(r[i], r[i + 1], shl),
                 qh = AL ? r[9 + i] : __funnelshift_r(r[9 + i], r[10 + i], shh);
        unsigned hs = 2u * (unsigned)(t4 & 1) + (S < 8 ? 0u : 4u);
        uint32_t c = ((S < 8 ? ql : ql >> 4) & 0x0f0f0f0fu) | (((qh >> hs) & 0x03030303u) << 4);
        __nv_bfloat162 v0 = qr_bits_bf2(__byte_perm(c, 0x43434343u, 0x4140)),
            v1 = qr_bits_bf2(__byte_perm(c, 0x43434343u, 0x4342));
        const __nv_bfloat162 c160 = qr_bits_bf2(0x43204320u); /* 128 + 32 */
        __nv_bfloat162 a = qr_bits_bf2(p[(S < 8 ? 0 : 2) + ((S >> 2) & 1)]);
        *b0 = qr_bf2_bits(__hmul2(__hsub2(v0, c160), a));
        *b1 = qr_bf2_bits(__hmul2(__hsub2(v1, c160), a));
    } else { /* Q8_0: block 2 t4 codes at bytes 2..33 of the 68, block 2 t4 + 1 at 36..67 */
        uint32_t c = S < 8 ? __funnelshift_r(r[S], r[S + 1], 16) : r[9 + S - 8];
        float d = __uint_as_float(p[S < 8 ? 0 : 1]);
        float f0 = __fmul_rn(d, (float)(int8_t)(c & 0xff)), f1 = __fmul_rn(d, (float)(int8_t)((c >> 8) & 0xff)),
              f2 = __fmul_rn(d, (float)(int8_t)((c >> 16) & 0xff)), f3 = __fmul_rn(d, (float)(int8_t)(c >> 24));
        *b0 = qr_bf2_bits(__floats2bfloat162_rn(f0, f1));
        *b1 = qr_bf2_bits(__floats2bfloat162_rn(f2, f3));
    }
}

/* one step of the MMA for every n-tile and m-tile; xa[m][h]: words of x rows 16m + g + 8h */
template <int DT, int MT, int NT, int S, bool AL = false>
static __device__ __forceinline__ void qr_mma_step(float (*acc)[NT][4], const uint32_t (*r)[QR_NRAW(DT)],
                                                   const uint32_t (*p)[4], const uint2 (*xa)[2], int t4,
                                                   const uint8_t *const *blk) {
#pragma unroll
    for (int i = 0; i < NT; i++) {
        uint32_t b0, b1;
        qr_step<DT, S, AL>(r[i], p[i], t4, blk[i], &b0, &b1);
#pragma unroll
        for (int m = 0; m < MT; m++) qr_mma(acc[m][i], xa[m][0].x, xa[m][1].x, xa[m][0].y, xa[m][1].y, b0, b1);
    }
}

/* element offset in the group of the lane's physical elements 8j .. 8j + 7 (steps 2j, 2j + 1):
 * Q4_K / Q8_0 own [64 t4, 64 t4 + 64); Q6_K sub-blocks 4h + k and 4h + k + 2 (h = t4 / 2,
 * k = t4 % 2: the low and high nibbles of its ql bytes) */
template <int DT>
static __device__ __forceinline__ int qr_xoff(int t4, int j) {
    if (DT == KILN_DT_Q6_K) return 32 * (4 * (t4 >> 1) + (t4 & 1) + (j < 4 ? 0 : 2)) + 8 * (j & 3);
    return 64 * t4 + 8 * j;
}

/* steps 2 j and 2 j + 1 of a group: xv[m][h] the 16 bytes of x (8 elements, qr_xoff) of row
 * 16 m + 8 h + g; words .x, .y feed step 2 j, .z, .w step 2 j + 1 (qr_group, qx_group) */
template <int DT, int MT, int NT, bool AL = false>
static __device__ __forceinline__ void qr_step_pair(float (*acc)[NT][4], const uint32_t (*r)[QR_NRAW(DT)],
                                                    const uint32_t (*p)[4], const uint4 (*xv)[2], int j, int t4,
                                                    const uint8_t *const *blk) {
    uint2 xa[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) xa[m][h] = make_uint2(xv[m][h].x, xv[m][h].y);
#define QR_STEP(S) qr_mma_step<DT, MT, NT, S, AL>(acc, r, p, xa, t4, blk)
    switch (j) { /* S must be a constant: registers, not local memory */
    case 0: QR_STEP(0); break;
    case 1: QR_STEP(2); break;
    case 2: QR_STEP(4); break;
    case 3: QR_STEP(6); break;
    case 4: QR_STEP(8); break;
    case 5: QR_STEP(10); break;
    case 6: QR_STEP(12); break;
    default: QR_STEP(14); break;
    }
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) xa[m][h] = make_uint2(xv[m][h].z, xv[m][h].w);
    switch (j) {
    case 0: QR_STEP(1); break;
    case 1: QR_STEP(3); break;
    case 2: QR_STEP(5); break;
    case 3: QR_STEP(7); break;
    case 4: QR_STEP(9); break;
    case 5: QR_STEP(11); break;
    case 6: QR_STEP(13); break;
    default: QR_STEP(15); break;
    }
#undef QR_STEP
}

/* the group's whole product: 16 steps; x loaded 16 bytes (two steps) at a time */
template <int DT, int MT, int NT>
static __device__ __forceinline__ void qr_group(float (*acc)[NT][4], const uint32_t (*r)[QR_NRAW(DT)],
                                                const uint8_t *const *blk, int G, int t4, int g,
                                                const uint16_t *__restrict__ x, int T, int K) {
    uint32_t p[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) qr_prep<DT>(r[i], t4, blk[i], p[i]);
    const int64_t k0 = (int64_t)G * 256;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        uint4 xv[MT][2];
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int t = 16 * m + 8 * h + g;
                xv[m][h] = t < T ? __ldg((const uint4 *)(x + (int64_t)t * K + k0 + qr_xoff<DT>(t4, j)))
                                 : make_uint4(0, 0, 0, 0);
            }
        qr_step_pair<DT, MT, NT>(acc, r, p, xv, j, t4, blk);
    }
}

template <int DT, int MT, int NT, int MINB>
static __global__ void __launch_bounds__(QR_WARPS * 32, MINB)
qmma_reg_kernel(float *__restrict__ y, int ldy, const uint16_t *__restrict__ x, const uint8_t *__restrict__ w,
                int64_t row_bytes, int T, int N, int K) {
    __shared__ float red[QR_WARPS][MT * NT * 4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int n0 = blockIdx.x * 8 * NT, NG = K / 256;
    const uint8_t *rows[NT];
#pragma unroll
    for (int i = 0; i < NT; i++) rows[i] = w + (int64_t)min(n0 + 8 * i + g, N - 1) * row_bytes; /* >= N: not stored */
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[m][i][e] = 0.0f;
    /* warp w multiplies groups w, w + 4, ...; two in flight: the next one's words load while this
     * one is multiplied (a 4-deep cp.async ring through shared memory measured slower: 212 against
     * 141 us for Q4_K gate|up at 16 rows, H200) */
    uint32_t ra[NT][QR_NRAW(DT)], rb[NT][QR_NRAW(DT)];
    const uint8_t *ba[NT], *bb[NT];
    int G = warp;
    if (G < NG)
#pragma unroll
        for (int i = 0; i < NT; i++) qr_load<DT>(ra[i], ba[i] = rows[i] + (int64_t)G * QR_BB(DT), t4);
    for (; G < NG; G += 2 * QR_WARPS) {
        int G1 = G + QR_WARPS;
        if (G1 < NG)
#pragma unroll
            for (int i = 0; i < NT; i++) qr_load<DT>(rb[i], bb[i] = rows[i] + (int64_t)G1 * QR_BB(DT), t4);
        qr_group<DT, MT, NT>(acc, ra, ba, G, t4, g, x, T, K);
        if (G1 >= NG) break;
        if (G1 + QR_WARPS < NG)
#pragma unroll
            for (int i = 0; i < NT; i++) qr_load<DT>(ra[i], ba[i] = rows[i] + (int64_t)(G1 + QR_WARPS) * QR_BB(DT), t4);
        qr_group<DT, MT, NT>(acc, rb, bb, G1, t4, g, x, T, K);
    }
    /* warp partials, added in warp order: acc[m][i][e] is (row 16m + g + 8(e / 2), column
     * 8i + 2 t4 + e % 2) */
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) red[warp][(m * NT + i) * 4 + e][lane] = acc[m][i][e];
    __syncthreads();
    for (int q = threadIdx.x; q < MT * NT * 4 * 32; q += QR_WARPS * 32) {
        int l = q & 31, f = q >> 5, e = f & 3, i = (f >> 2) % NT, m = (f >> 2) / NT;
        int t = 16 * m + (l >> 2) + 8 * (e >> 1), n = n0 + 8 * i + 2 * (l & 3) + (e & 1);
        float v = red[0][f][l];
#pragma unroll
        for (int ww = 1; ww < QR_WARPS; ww++) v += red[ww][f][l];
        if (t < T && n < N) y[(int64_t)t * ldy + n] = v;
    }
}

/* ---- qmma_x: 1..64 rows, x through shared memory, warps split N, split-K over CTAs ----
 *
 * Why (H100, Q4_K_M dummy, batch 16, CUPTI trace, twentieth session): qmma_reg_kernel above
 * spent 17.4 ms a step where its kernels at one row take ~7: a warp of it reads its x fragments
 * from global memory inside the loop (every CTA reads all of x: for down, 320 CTAs x 1 MB from
 * L2, each load a dependent L2 round trip), and the long-K shapes (down: N 5120, K 32768) have
 * 320 CTAs each walking 128 groups in sequence. Here a CTA of QX_WARPS warps owns
 * QX_WARPS x NT x 8 weight rows (warp w: n-tiles w NT .. w NT + NT - 1) and the groups
 * [G0, G1) of one of S parts of K; the group's x slice ([16 MT rows][256] bf16, MT x 8 KB, in
 * fragment order: m-tile m, slot (2 j + h, lane) holds the 16 bytes qr_group loads at step pair j, half h) comes
 * through a QX_STAGES-deep cp.async ring shared by the warps; the weights are decoded in
 * registers as above (qr_load / qr_prep / qr_step, the same values), two groups in flight.
 * S > 1: each part writes its sums to work [S][64][N] and the last CTA of an n-block (a counter
 * per n-block, reset by it) adds the S parts in order 0..S-1. NT and S are functions of (dtype, N,
 * K, n_sm, MT) only, so a row has the same bits for every T of one class (MT 1: 1..16, 2:
 * 17..32, 4: 33..64). A trace showed the old kernel at 17..64 rows no better (batch 32 below
 * batch 16 on the H100, the twentieth session). */
#define QX_WARPS 8
#define QX_STAGES 3
#define QX_MAX_ROWS 64 /* 16 MT, MT 1, 2 or 4 */

static __device__ __forceinline__ void qx_cp16(void *dst, const void *src, int bytes) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}

/* the lane t4 and step pair j whose 8 x elements are chunk c (elements 8 c .. 8 c + 7) of a
 * group: the inverse of qr_xoff */
template <int DT>
static __device__ __forceinline__ void qx_chunk_slot(int c, int *t4, int *j) {
    if (DT == KILN_DT_Q6_K) { /* sub-block sb = 4 (t4 / 2) + t4 % 2 + 2 (j / 4), j % 4 = c % 4 */
        int sb = c >> 2, rem = sb & 3;
        *t4 = 2 * (sb >> 2) + (rem & 1);
        *j = 4 * (rem >> 1) + (c & 3);
    } else {
        *t4 = c >> 3;
        *j = c & 7;
    }
}

/* stage <- group G's x slice, MT x 512 slots: m-tile m, slot f = 2 j + h, lane l: row
 * 16 m + 8 h + l / 4, columns 256 G + qr_xoff(l % 4, j) .. + 8 (rows >= T zero-filled; HALF,
 * T <= 8: rows 8..15 neither copied nor read, zeros in registers), stored at lane l ^ j.
 * sw (the default): a warp copies one row's 512 contiguous bytes (32 chunks), so its 32
 * cp.async touch 4 lines instead of 32 (the old order below takes a slot a thread, the lanes of
 * a row 128 bytes apart: 32 lines a copy instruction, ~30 % of the L1's wavefronts at 16 rows by
 * count); the XOR spreads a row's chunks, which land in the slots of 4 lanes of each of 8 j,
 * over the 8 16-byte bank groups (4 wavefronts a copy), and keeps each 8-lane phase of a read
 * one contiguous 128 bytes. !sw (variant bit QX_V_XOLD): the old order, same layout. */
template <int DT, int MT, bool HALF>
static __device__ __forceinline__ void qx_fill(uint4 (*xs)[16][32], const uint16_t *__restrict__ x, int G, int T,
                                               int K, int sw) {
    if (sw) {
#pragma unroll
        for (int r = 0; r < 2 * MT; r++) {
            int q = threadIdx.x + r * QX_WARPS * 32;
            int m = q >> 9, tr = (q >> 5) & 15, c = q & 31, t = 16 * m + tr, t4, j;
            if (HALF && tr >= 8) continue; /* rows 8..15: never read (warp-uniform) */
            qx_chunk_slot<DT>(c, &t4, &j);
            int f = 2 * j + (tr >> 3), l = 4 * (tr & 7) + t4;
            const uint16_t *src = x + (int64_t)(t < T ? t : 0) * K + (int64_t)G * 256 + 8 * c;
            qx_cp16(&xs[m][f][l ^ j], src, t < T ? 16 : 0);
        }
        return;
    }
#pragma unroll
    for (int r = 0; r < 2 * MT; r++) {
        int q = threadIdx.x + r * QX_WARPS * 32;
        int m = q >> 9, f = (q >> 5) & 15, l = q & 31, j = f >> 1, h = f & 1, t = 16 * m + 8 * h + (l >> 2);
        if (HALF && h) continue; /* rows 8..15: never read (h = warp % 2: warp-uniform) */
        const uint16_t *src = x + (int64_t)(t < T ? t : 0) * K + (int64_t)G * 256 + qr_xoff<DT>(l & 3, j);
        qx_cp16(&xs[m][f][l ^ j], src, t < T ? 16 : 0);
    }
}

/* HALF (T <= 8, MT 1): x rows 8..15 are zero registers, not shared-memory reads: the x reads (8
 * KB a group and warp, ~4x the weights' bytes, which the L1 serves as well: ncu) halve */
template <int DT, int MT, int NT, bool AL, bool HALF>
static __device__ __forceinline__ void qx_group(float (*acc)[NT][4], const uint32_t (*r)[QR_NRAW(DT)],
                                                const uint8_t *const *blk, const uint4 (*xs)[16][32], int t4,
                                                int lane) {
    uint32_t p[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) qr_prep<DT, AL>(r[i], t4, blk[i], p[i]);
#pragma unroll
    for (int j = 0; j < 8; j++) {
        uint4 xv[MT][2];
        const int lj = lane ^ j; /* qx_fill's layout */
#pragma unroll
        for (int m = 0; m < MT; m++) {
            xv[m][0] = xs[m][2 * j][lj];
            xv[m][1] = HALF ? make_uint4(0, 0, 0, 0) : xs[m][2 * j + 1][lj];
        }
        qr_step_pair<DT, MT, NT, AL>(acc, r, p, xv, j, t4, blk);
    }
}

/* one group: wait for its x stage (all threads' copies: the barrier), refill the stage the
 * previous group used with group G + QX_STAGES - 1, multiply */
template <int DT, int MT, int NT, bool AL, bool HALF>
static __device__ __forceinline__ void qx_step(float (*acc)[NT][4], const uint32_t (*r)[QR_NRAW(DT)],
                                               const uint8_t *const *blk, uint4 (*xs)[16][32],
                                               const uint16_t *__restrict__ x, int G, int G0, int G1, int T, int K,
                                               int t4, int lane, int sw) {
    kiln_cp_wait<QX_STAGES - 2>();
    __syncthreads();
    int Gn = G + QX_STAGES - 1;
    if (Gn < G1) qx_fill<DT, MT, HALF>(xs + ((Gn - G0) % QX_STAGES) * MT, x, Gn, T, K, sw);
    kiln_cp_commit();
    qx_group<DT, MT, NT, AL, HALF>(acc, r, blk, xs + ((G - G0) % QX_STAGES) * MT, t4, lane);
}

/* the rows' group G into L2 ahead of its register loads (variant bits QX_V_PF: a measurement of
 * whether more bytes in flight than the two register groups pay): lane t4 asks for the line of
 * its quarter of the row's group; a row's groups are contiguous, so a line a quarter misses is
 * the next group's first */
template <int DT, int NT>
static __device__ __forceinline__ void qx_prefetch(const uint8_t *const *rows, int G, int t4) {
#pragma unroll
    for (int i = 0; i < NT; i++)
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(rows[i] + (int64_t)G * QR_BB(DT) + t4 * (QR_BB(DT) / 4)));
}

/* Q6_K and Q8_0 in 16-byte loads (AL): their lanes' bytes are not 16-byte aligned (a Q6_K group
 * of a row is 210 bytes, 2-byte aligned; Q8_0's lane t4 starts at byte 68 t4), and qr_load's
 * 4-byte loads (24 / 17 a row and group) made the kernel L1-bound (ncu, H100, 16 rows, down:
 * L1/TEX throughput 93-96 %, 76-83 % of the sectors requested in excess, DRAM 29-35 %). Here a
 * lane loads the 16-byte chunks around its bytes (qx_load_raw: Q6_K ql 3, qh 3, scales 2; Q8_0
 * 5; at most 15 bytes past a block, inside the 16 bytes of padding every quantized matrix carries)
 * and qx_realign shifts them into qr_load's words at a 4-byte-aligned start, so that the decode
 * (qr_prep / qr_step with AL) needs no shifts. The words, and so every product, are the same. */
#define QX_NRAW(dt) ((dt) == KILN_DT_Q6_K ? 32 : 20)
template <int DT>
static __device__ __forceinline__ void qx_load_raw(uint32_t *R, const uint8_t *blk, int t4) {
    const uint4 *src[3];
    int n[3];
    if (DT == KILN_DT_Q6_K) {
        src[0] = (const uint4 *)((uintptr_t)(blk + 32 * t4) & ~(uintptr_t)15), n[0] = 3;
        src[1] = (const uint4 *)((uintptr_t)(blk + 128 + 32 * (t4 >> 1)) & ~(uintptr_t)15), n[1] = 3;
        src[2] = (const uint4 *)((uintptr_t)(blk + 192) & ~(uintptr_t)15), n[2] = 2;
    } else {
        src[0] = (const uint4 *)((uintptr_t)(blk + 68 * t4) & ~(uintptr_t)15), n[0] = 5;
        src[1] = src[2] = src[0], n[1] = n[2] = 0;
    }
    int o = 0;
#pragma unroll
    for (int q = 0; q < 3; q++)
#pragma unroll
        for (int k = 0; k < 5; k++)
            if (k < n[q]) {
                uint4 v = __ldg(src[q] + k);
                R[o] = v.x, R[o + 1] = v.y, R[o + 2] = v.z, R[o + 3] = v.w;
                o += 4;
            }
}

/* r (qr_load's words, aligned: Q6_K ql r[0..7], qh r[9..16], scales and d r[18..22]; Q8_0
 * r[0..16]) <- the raw chunks of the group at blk */
template <int DT>
static __device__ __forceinline__ void qx_realign(uint32_t *r, const uint32_t *R, const uint8_t *blk, int t4) {
    if (DT == KILN_DT_Q6_K) { /* ql, qh and the scales start at the same offset mod 16 */
        unsigned a = (unsigned)((uintptr_t)blk & 15);
        kiln_q_shift<8>(r, R, a);
        kiln_q_shift<8>(r + 9, R + 12, a);
        uint32_t Ws[9];
#pragma unroll
        for (int i = 0; i < 8; i++) Ws[i] = R[24 + i];
        Ws[8] = 0u; /* only byte 18 on of the scales' words, never used */
        kiln_q_shift<5>(r + 18, Ws, a);
    } else { /* 4-byte aligned */
        int wo = (int)(((uintptr_t)(blk + 68 * t4) & 15) >> 2);
        uint32_t C[19];
#pragma unroll
        for (int i = 0; i < 19; i++) C[i] = (wo & 1) ? R[i + 1] : R[i];
#pragma unroll
        for (int i = 0; i < 17; i++) r[i] = (wo & 2) ? C[i + 2] : C[i];
    }
}

/* dynamic shared memory: QX_STAGES x MT x 8 KB (the x slices) */
template <int DT, int MT, int NT, int MINB, bool HALF>
static __global__ void __launch_bounds__(QX_WARPS * 32, MINB)
qmma_x_kernel(float *__restrict__ y, int ldy, const uint16_t *__restrict__ x, const uint8_t *__restrict__ w,
              int64_t row_bytes, int T, int N, int K, float *__restrict__ work, unsigned *__restrict__ cnt, int pf,
              int sw) {
    extern __shared__ uint4 qx_dyn[];
    uint4 (*xs)[16][32] = (uint4 (*)[16][32])qx_dyn; /* [QX_STAGES * MT][16][32] */
    __shared__ unsigned last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int n0 = (blockIdx.x * QX_WARPS + warp) * 8 * NT, NG = K / 256, S = gridDim.y, s = blockIdx.y;
    const int G0 = (int)((int64_t)s * NG / S), G1 = (int)((int64_t)(s + 1) * NG / S);
    const uint8_t *rows[NT];
#pragma unroll
    for (int i = 0; i < NT; i++) rows[i] = w + (int64_t)min(n0 + 8 * i + g, N - 1) * row_bytes;
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[m][i][e] = 0.0f;
#pragma unroll
    for (int q = 0; q < QX_STAGES - 1; q++) {
        if (G0 + q < G1) qx_fill<DT, MT, HALF>(xs + q * MT, x, G0 + q, T, K, sw);
        kiln_cp_commit();
    }
    for (int q = 2; q < pf && G0 + q < G1; q++) qx_prefetch<DT, NT>(rows, G0 + q, t4);
    if (DT != KILN_DT_Q4_K) { /* 16-byte loads: the group's raw chunks one group ahead */
        uint32_t R[NT][QX_NRAW(DT)], cur[NT][QR_NRAW(DT)];
        const uint8_t *bc[NT];
#pragma unroll
        for (int i = 0; i < NT; i++) qx_load_raw<DT>(R[i], rows[i] + (int64_t)G0 * QR_BB(DT), t4);
        for (int G = G0; G < G1; G++) {
            if (pf && G + pf < G1) qx_prefetch<DT, NT>(rows, G + pf, t4);
#pragma unroll
            for (int i = 0; i < NT; i++) qx_realign<DT>(cur[i], R[i], bc[i] = rows[i] + (int64_t)G * QR_BB(DT), t4);
            if (G + 1 < G1)
#pragma unroll
                for (int i = 0; i < NT; i++) qx_load_raw<DT>(R[i], rows[i] + (int64_t)(G + 1) * QR_BB(DT), t4);
            qx_step<DT, MT, NT, true, HALF>(acc, cur, bc, xs, x, G, G0, G1, T, K, t4, lane, sw);
        }
    } else {
        uint32_t ra[NT][QR_NRAW(DT)], rb[NT][QR_NRAW(DT)];
        const uint8_t *ba[NT], *bb[NT];
#pragma unroll
        for (int i = 0; i < NT; i++) qr_load<DT>(ra[i], ba[i] = rows[i] + (int64_t)G0 * QR_BB(DT), t4);
        for (int G = G0; G < G1; G += 2) {
            if (pf && G + pf < G1) qx_prefetch<DT, NT>(rows, G + pf, t4);
            if (pf && G + 1 + pf < G1) qx_prefetch<DT, NT>(rows, G + 1 + pf, t4);
            if (G + 1 < G1)
#pragma unroll
                for (int i = 0; i < NT; i++) qr_load<DT>(rb[i], bb[i] = rows[i] + (int64_t)(G + 1) * QR_BB(DT), t4);
            qx_step<DT, MT, NT, false, HALF>(acc, ra, ba, xs, x, G, G0, G1, T, K, t4, lane, sw);
            if (G + 1 >= G1) break;
            if (G + 2 < G1)
#pragma unroll
                for (int i = 0; i < NT; i++) qr_load<DT>(ra[i], ba[i] = rows[i] + (int64_t)(G + 2) * QR_BB(DT), t4);
            qx_step<DT, MT, NT, false, HALF>(acc, rb, bb, xs, x, G + 1, G0, G1, T, K, t4, lane, sw);
        }
    }
    kiln_cp_wait<0>();
    /* acc[m][i][e]: row 16 m + g + 8 (e / 2), column n0 + 8 i + 2 t4 + e % 2. S > 1: the part's
     * sums go to work, and the last CTA of the n-block adds the S parts in order 0..S-1 */
    if (S > 1) {
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int i = 0; i < NT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int t = 16 * m + g + 8 * (e >> 1), n = n0 + 8 * i + 2 * t4 + (e & 1);
                    if (t < T && n < N) work[((int64_t)s * QX_MAX_ROWS + t) * N + n] = acc[m][i][e];
                }
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(&cnt[blockIdx.x], 1u) == (unsigned)S - 1u;
        __syncthreads();
        if (!last) return;
        __threadfence();
    }
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int t = 16 * m + g + 8 * (e >> 1), n = n0 + 8 * i + 2 * t4 + (e & 1);
                if (t >= T || n >= N) continue;
                float v = acc[m][i][e];
                if (S > 1) {
                    v = 0.0f;
                    for (int q = 0; q < S; q++) v += __ldcg(&work[((int64_t)q * QX_MAX_ROWS + t) * N + n]);
                }
                y[(int64_t)t * ldy + n] = v;
            }
    if (S > 1 && threadIdx.x == 0) cnt[blockIdx.x] = 0u;
}

/* The launch shape for (dtype, N, K) on n_sm SMs (H200, Devstral shapes, T 4 / 16, us, test_cuda_qlinear's
 * bench, twentieth session): Q6_K / Q8_0 with registers capped for 2 CTAs an SM (Q6_K 137 -> 128,
 * no spills) and 1 n-tile a warp (2 would spill): Q6_K down 163.4 -> 149.9 at 16 rows, gate|up
 * 199.7 -> 187.0, LM head 393.6 -> 368.3, Q8_0 LM head at 4 rows 455 -> 399; Q4_K uncapped (89 / 126
 * registers fit 2 CTAs an SM anyway) with 2 n-tiles a warp on wide matrices (gate|up 102.8 against
 * 104.4 capped, 118-120 split in 2 parts). S: none where the n-blocks already fill the SMs, else
 * ~4 CTAs an SM, each part at least 4 groups (Q4_K qkv 26.3 -> 23.5 at 16 rows, 22.1 -> 18.6 at 4;
 * 2 CTAs an SM was the first version). Q4_K also takes 2 n-tiles on narrower matrices where the
 * halved grid keeps >= 1.75 CTAs an SM (twenty-first session, H100, 16 rows: down 86.8 -> 75.0,
 * qkv 24.7 -> 22.6; not o, whose 160 CTAs went 19.1 -> 20.7; the engine with 2 n-tiles on every
 * Q4_K shape, same call, two rounds: Q4_K_M b4 11.30 -> 11.02 ms, b8 11.75 -> 11.45, b16 12.71
 * -> 12.51). variant (measurements; the backend passes kiln_cuda_options.qreg_variant, 0): bit
 * QX_V_MINB2 flips the register cap, bit QX_V_WIDE takes the first version's ~2 CTAs an SM,
 * QX_V_PF an L2 prefetch of the weights ahead of the register loads (slower at every shape and
 * distance: down 86.8 -> 88.9-90.7 us, LM head 195 -> 209-233), QX_V_NT2 2 n-tiles everywhere,
 * QX_V_XOLD the x stages' old fill order (qx_fill). */
#define QX_V_MINB2 1
#define QX_V_WIDE 2
#define QX_V_PF(v) (((v) >> 2) & 3) /* L2 prefetch 0: none, 1 / 2 / 3: 3 / 4 / 6 groups ahead */
#define QX_V_NT2 16                 /* 2 n-tiles a warp wherever the registers allow (1..16 rows) */
#define QX_V_XOLD 32                /* x stages filled in the old order (a slot a thread), qx_fill's !sw */
static int qx_parts(int nb, int NG, int sm, int variant) {
    int want = variant & QX_V_WIDE ? 2 * sm : nb >= sm ? nb : 4 * sm;
    int S = (want + nb - 1) / nb, cap = NG / 4;
    if (S > cap) S = cap;
    if (S > 16) S = 16;
    return S < 1 ? 1 : S;
}

static void qx_shape(kiln_dtype dt, int T, int N, int K, int n_sm, int variant, int *nt, int *minb2, int *parts) {
    int sm = n_sm > 0 ? n_sm : 132, NG = K / 256;
    *minb2 = (T <= 16 ? dt != KILN_DT_Q4_K : dt != KILN_DT_Q6_K) != !!(variant & QX_V_MINB2);
    *nt = 1;
    if (!*minb2 && T <= 16) { /* 2 n-tiles where the halved grid still fills ~2 CTAs an SM */
        int nb2 = (N + QX_WARPS * 16 - 1) / (QX_WARPS * 16);
        if (N >= 16384 || (variant & QX_V_NT2) || 4 * nb2 * qx_parts(nb2, NG, sm, variant) >= 7 * sm) *nt = 2;
    }
    int nb = (N + QX_WARPS * 8 * *nt - 1) / (QX_WARPS * 8 * *nt);
    *parts = qx_parts(nb, NG, sm, variant);
}

extern "C" void kiln_cuda_qmma_reg_work(int n_sm, size_t *floats, size_t *counters) {
    /* S > 1 only where nb < 2 n_sm; S nb <= 4 n_sm + nb <= 6 n_sm, rows N <= nb x 128 */
    int sm = n_sm > 0 ? n_sm : 132;
    *counters = (size_t)4 * sm;
    *floats = (size_t)QX_MAX_ROWS * (size_t)(6 * sm) * QX_WARPS * 8 * 2;
}

template <int DT, int MT, int NT, int MINB, bool HALF>
static cudaError_t qx_launch_k(dim3 grid, float *y, int ldy, const uint16_t *x, const uint8_t *w, int T, int N, int K,
                               const kiln_cuda_qreg_work *wk, int pf, int sw, cudaStream_t st) {
    int smem = QX_STAGES * MT * 8192;
    if (smem >= 48 * 1024) { /* beside the kernel's static bytes: over the default 48 KB */
        cudaError_t e = cudaFuncSetAttribute(qmma_x_kernel<DT, MT, NT, MINB, HALF>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess) return e;
    }
    qmma_x_kernel<DT, MT, NT, MINB, HALF><<<grid, QX_WARPS * 32, smem, st>>>(
        y, ldy, x, w, kiln_q_row_bytes((kiln_dtype)DT, K), T, N, K, wk->part, wk->cnt, pf, sw);
    return cudaSuccess;
}

template <int DT, int MT, bool HALF>
static cudaError_t qx_launch_mt(dim3 grid, int nt, int minb2, float *y, int ldy, const uint16_t *x,
                                const uint8_t *w, int T, int N, int K, const kiln_cuda_qreg_work *wk, int pf,
                                int sw, cudaStream_t st) {
    if (minb2) return qx_launch_k<DT, MT, 1, 2, HALF>(grid, y, ldy, x, w, T, N, K, wk, pf, sw, st);
    if (MT == 1 && nt == 2) return qx_launch_k<DT, 1, 2, 1, HALF>(grid, y, ldy, x, w, T, N, K, wk, pf, sw, st);
    return qx_launch_k<DT, MT, 1, 1, HALF>(grid, y, ldy, x, w, T, N, K, wk, pf, sw, st);
}

template <int DT>
static cudaError_t qx_launch(float *y, int ldy, const uint16_t *x, const uint8_t *w, int T, int N, int K, int n_sm,
                             int variant, const kiln_cuda_qreg_work *wk, cudaStream_t st) {
    int nt, S, minb2;
    qx_shape((kiln_dtype)DT, T, N, K, n_sm, variant, &nt, &minb2, &S);
    int nb = (N + QX_WARPS * 8 * nt - 1) / (QX_WARPS * 8 * nt);
    if (S > 1 && ((size_t)nb > wk->counters || (size_t)S * QX_MAX_ROWS * N > wk->floats)) S = 1;
    dim3 grid((unsigned)nb, (unsigned)S);
    const int pf_ahead[4] = {0, 3, 4, 6}, pf = pf_ahead[QX_V_PF(variant)], sw = !(variant & QX_V_XOLD);
    if (T <= 8) return qx_launch_mt<DT, 1, true>(grid, nt, minb2, y, ldy, x, w, T, N, K, wk, pf, sw, st);
    if (T <= 16) return qx_launch_mt<DT, 1, false>(grid, nt, minb2, y, ldy, x, w, T, N, K, wk, pf, sw, st);
    if (T <= 32) return qx_launch_mt<DT, 2, false>(grid, nt, minb2, y, ldy, x, w, T, N, K, wk, pf, sw, st);
    return qx_launch_mt<DT, 4, false>(grid, nt, minb2, y, ldy, x, w, T, N, K, wk, pf, sw, st);
}

template <int DT, int MT, int NT>
static cudaError_t qr_launch_k(float *y, int ldy, const uint16_t *x, const uint8_t *w, int64_t rb, int T, int N, int K,
                               int variant, cudaStream_t st) {
    unsigned grid = (unsigned)((N + 8 * NT - 1) / (8 * NT));
    if (variant == 1) /* registers capped for 4 CTAs an SM (an experiment: occupancy against spills) */
        qmma_reg_kernel<DT, MT, NT, 4><<<grid, QR_WARPS * 32, 0, st>>>(y, ldy, x, w, rb, T, N, K);
    else
        qmma_reg_kernel<DT, MT, NT, 1><<<grid, QR_WARPS * 32, 0, st>>>(y, ldy, x, w, rb, T, N, K);
    return cudaSuccess;
}

template <int DT, int MT>
static cudaError_t qr_launch_nt(float *y, int ldy, const uint16_t *x, const uint8_t *w, int64_t rb, int T, int N, int K,
                                int nt, int variant, cudaStream_t st) {
    if (nt == 1) return qr_launch_k<DT, MT, 1>(y, ldy, x, w, rb, T, N, K, variant, st);
    if (nt == 2) return qr_launch_k<DT, MT, 2>(y, ldy, x, w, rb, T, N, K, variant, st);
    return qr_launch_k<DT, MT, (MT == 4 ? 2 : QR_NTMAX(DT))>(y, ldy, x, w, rb, T, N, K, variant, st);
}

template <int DT>
static cudaError_t qr_launch(float *y, int ldy, const uint16_t *x, const uint8_t *w, int T, int N, int K, int nt,
                             int variant, cudaStream_t st) {
    int64_t rb = kiln_q_row_bytes((kiln_dtype)DT, K);
    if (nt > QR_NTMAX(DT)) nt = QR_NTMAX(DT);
    if (T > 32 && nt > 2) nt = 2; /* 4 m-tiles: 2 n-tiles at most */
    if (T <= 16) return qr_launch_nt<DT, 1>(y, ldy, x, w, rb, T, N, K, nt, variant, st);
    if (T <= 32) return qr_launch_nt<DT, 2>(y, ldy, x, w, rb, T, N, K, nt, variant, st);
    return qr_launch_nt<DT, 4>(y, ldy, x, w, rb, T, N, K, nt, variant, st);
}

extern "C" int kiln_cuda_qmma_reg_supports(kiln_dtype wdt, int K) {
    return (wdt == KILN_DT_Q4_K || wdt == KILN_DT_Q6_K || wdt == KILN_DT_Q8_0) && K >= 256 && K % 256 == 0;
}

/* n-tiles per warp: 1 while that leaves fewer than ~4 CTAs an SM, else 2, 4 for the widest */
static int qr_pick_nt(int N, int n_sm) {
    int sm = n_sm > 0 ? n_sm : 132;
    if (N / 32 >= sm * 8) return 4;
    if (N / 16 >= sm * 2) return 2;
    return 1;
}

extern "C" cudaError_t kiln_cuda_qmma_reg(float *y, int ldy, const void *x, kiln_dtype xdt, const void *w,
                                          kiln_dtype wdt, int T, int N, int K, int nt, int variant, int n_sm,
                                          const kiln_cuda_qreg_work *wk, cudaStream_t st) {
    if (!kiln_cuda_qmma_reg_supports(wdt, K) || xdt != KILN_DT_BF16 || T < 1 || T > KILN_QMMA_MAX_ROWS || N < 1 ||
        ldy < N || !y || !x || !w || ((uintptr_t)x & 15) || ((uintptr_t)w & 15) || ((uintptr_t)y & 3) ||
        (nt != 0 && nt != 1 && nt != 2 && nt != 4) || variant < 0 || variant > KILN_QREG_VARIANT_MAX ||
        (variant > 1 && !(wk && nt == 0)))
        return cudaErrorInvalidValue;
    const uint16_t *xb = (const uint16_t *)x;
    const uint8_t *wb = (const uint8_t *)w;
    cudaError_t e;
    if (wk && nt == 0 && T <= QX_MAX_ROWS) {
        switch (wdt) {
        case KILN_DT_Q4_K: e = qx_launch<KILN_DT_Q4_K>(y, ldy, xb, wb, T, N, K, n_sm, variant, wk, st); break;
        case KILN_DT_Q6_K: e = qx_launch<KILN_DT_Q6_K>(y, ldy, xb, wb, T, N, K, n_sm, variant, wk, st); break;
        default: e = qx_launch<KILN_DT_Q8_0>(y, ldy, xb, wb, T, N, K, n_sm, variant, wk, st); break;
        }
        if (e != cudaSuccess) return e;
        KILN_CUDA_CHECK_LAUNCH();
    }
    if (!nt) nt = qr_pick_nt(N, n_sm);
    switch (wdt) {
    case KILN_DT_Q4_K: e = qr_launch<KILN_DT_Q4_K>(y, ldy, xb, wb, T, N, K, nt, variant, st); break;
    case KILN_DT_Q6_K: e = qr_launch<KILN_DT_Q6_K>(y, ldy, xb, wb, T, N, K, nt, variant, st); break;
    default: e = qr_launch<KILN_DT_Q8_0>(y, ldy, xb, wb, T, N, K, nt, variant, st); break;
    }
    if (e != cudaSuccess) return e;
    KILN_CUDA_CHECK_LAUNCH();
}
