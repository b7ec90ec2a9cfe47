/* qdecode.cuh: GGUF block types on the device, one 32-element unit at a time (format/quant.h has
 * the layouts). A row of K elements is K / 32 units; unit u covers elements [32u, 32u + 32):
 * a whole block of the 32-element types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), a sub-block of the
 * 256-element K-quants (Q4_K / Q5_K: unit s of a block is sub-block s; Q6_K: half s / 4,
 * quarter s % 4, two 16-element scale groups).
 *
 * A decoded unit is 32 unsigned codes (byte j of c[i] is element 4i + j) and, per 16-element
 * half h, a scale a[h], an integer offset `off` and an additive mn such that the weight is
 *   w = a[h] * (float)(code - off) + mn
 * with the operations (and their f32 roundings) of the CPU's scalar dequantization
 * (format/quant.c): Q4_0 d (q - 8); Q4_1 d q + m; Q5_0 d (q - 16); Q5_1 d q + m; Q8_0 d q
 * (codes signed: q itself, off 0); Q4_K / Q5_K (d sc) q - (dmin mn); Q6_K (d sc) (q - 32).
 * kiln_q_dequant_unit() writes those values exactly (bit-equal to the CPU's); the GEMV sums
 * a * sum(code x) + (mn - a off) * sum(x) per half instead, which is the same sum in another
 * order (f32, errors of the order of a few ulps of sum |w x|).
 *
 * Loads: the K-quant blocks (144 / 176 bytes) and Q4_1 / Q5_1 (20 / 24) are 4-byte aligned
 * within a row of whole blocks; Q8_0 (34), Q4_0 (18), Q5_0 (22) and Q6_K (210) blocks only
 * 2-byte aligned: those are read as aligned 32-bit words realigned with a funnel shift, which
 * may read up to 4 bytes past the last block (the backend pads every weight buffer by 16). */
#ifndef KILN_CUDA_QDECODE_CUH
#define KILN_CUDA_QDECODE_CUH
#include <cuda_fp16.h>
#include <stdint.h>
#include "format/dtype.h"

typedef struct kiln_qunit {
    uint32_t c[8];  /* 32 codes, element 4i + j in byte j of c[i] */
    float a[2];     /* scale of elements 0..15 and 16..31 */
    float mn;       /* added after the product (Q4_1 / Q5_1 m, K-quants -dmin mn); 0 otherwise */
    int off;        /* subtracted from the code before the product */
    int has_mn;     /* mn is part of the type (else no addition: -0.0 stays -0.0, as on the CPU) */
    int sgn;        /* the codes are int8 (Q8_0's q, off 0), else unsigned */
} kiln_qunit;

static __device__ __forceinline__ float kiln_q_h2f(uint32_t bits16) {
    return __half2float(__ushort_as_half((unsigned short)(bits16 & 0xffffu)));
}

/* out[i] (i < NO) = the 4 bytes at byte a + 4 i of W (a 0..15, even; W holds NO + 4 words): two
 * selects a word by a's word bits, then a funnel shift by its half-word bit; no indexed registers
 * (a runtime index into a register array would put it in local memory) */
template <int NO>
static __device__ __forceinline__ void kiln_q_shift(uint32_t *out, const uint32_t *W, unsigned a) {
    const unsigned wo = a >> 2, sh = (a & 3u) * 8u;
    uint32_t C[NO + 3], D[NO + 1];
#pragma unroll
    for (int i = 0; i < NO + 3; i++) C[i] = (wo & 1u) ? W[i + 1] : W[i];
#pragma unroll
    for (int i = 0; i < NO + 1; i++) D[i] = (wo & 2u) ? C[i + 2] : C[i];
#pragma unroll
    for (int i = 0; i < NO; i++) out[i] = __funnelshift_r(D[i], D[i + 1], sh);
}

/* N 32-bit words of the bytes at p (2-byte aligned), of which the first NB are needed (the rest
 * of the last word may hold anything). 16-byte loads of the aligned chunks that hold those bytes
 * (a chunk is loaded only if it holds one: at most 15 bytes past them, inside the 16 bytes of
 * padding every quantized matrix carries), shifted into place in registers. Why: the earlier
 * 4-byte loads (N + 1 a call) made the kernels L1-bound (ncu, H100, Q6_K / Q8_0 products at 16
 * rows: L1/TEX throughput 93-96 %, 76-83 % of the sectors requested in excess) */
template <int N, int NB>
static __device__ __forceinline__ void kiln_q_words2(const uint8_t *p, uint32_t *w) {
    constexpr int NC = (NB + 14 + 15) / 16, NW = 4 * NC > N + 4 ? 4 * NC : N + 4;
    const uint4 *c = (const uint4 *)((uintptr_t)p & ~(uintptr_t)15);
    const unsigned a = (unsigned)((uintptr_t)p & 15);
    uint32_t W[NW];
#pragma unroll
    for (int k = 0; k < NC; k++) {
        uint4 v = k == 0 || 16u * (unsigned)k < a + (unsigned)NB ? __ldg(c + k) : make_uint4(0, 0, 0, 0);
        W[4 * k] = v.x, W[4 * k + 1] = v.y, W[4 * k + 2] = v.z, W[4 * k + 3] = v.w;
    }
#pragma unroll
    for (int i = 4 * NC; i < NW; i++) W[i] = 0u;
    kiln_q_shift<N>(w, W, a);
}
/* the same N words in N + 1 4-byte loads (the bytes past the first NB as they are) */
template <int N>
static __device__ __forceinline__ void kiln_q_words2_4(const uint8_t *p, uint32_t *w) {
    const uint32_t *a = (const uint32_t *)((uintptr_t)p & ~(uintptr_t)3);
    unsigned sh = (unsigned)((uintptr_t)p & 3) * 8u;
    uint32_t r[N + 1];
#pragma unroll
    for (int i = 0; i <= N; i++) r[i] = __ldg(a + i);
#pragma unroll
    for (int i = 0; i < N; i++) w[i] = __funnelshift_r(r[i], r[i + 1], sh);
}
/* 4N 32-bit words at p (16-byte aligned), in 16-byte loads */
template <int N>
static __device__ __forceinline__ void kiln_q_words16(const uint8_t *p, uint32_t *w) {
#pragma unroll
    for (int i = 0; i < N; i++) {
        uint4 v = __ldg((const uint4 *)p + i);
        w[4 * i] = v.x;
        w[4 * i + 1] = v.y;
        w[4 * i + 2] = v.z;
        w[4 * i + 3] = v.w;
    }
}
/* n 32-bit words at p (4-byte aligned) */
template <int N>
static __device__ __forceinline__ void kiln_q_words4(const uint8_t *p, uint32_t *w) {
#pragma unroll
    for (int i = 0; i < N; i++) w[i] = __ldg((const uint32_t *)p + i);
}

/* byte k of 3 / 4 words held in registers (selects, not a local-memory array index) */
static __device__ __forceinline__ uint32_t kiln_q_byte3(const uint32_t *w, int k) {
    uint32_t v = k < 4 ? w[0] : k < 8 ? w[1] : w[2];
    return (v >> (8 * (k & 3))) & 0xffu;
}
static __device__ __forceinline__ uint32_t kiln_q_byte4(const uint32_t *w, int k) {
    uint32_t v = k < 4 ? w[0] : k < 8 ? w[1] : k < 12 ? w[2] : w[3];
    return (v >> (8 * (k & 3))) & 0xffu;
}

/* bit 4 of each byte from 4 bits of x (bit b -> byte b) */
static __device__ __forceinline__ uint32_t kiln_q_spread4(uint32_t x) {
    return ((x & 15u) * 0x00204081u & 0x01010101u) << 4;
}

/* the 16 nibble bytes qs[16] (4 words) of a 32-element block: elements 0..15 low, 16..31 high */
static __device__ __forceinline__ void kiln_q_nibbles32(const uint32_t *qs, uint32_t *c) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        c[i] = qs[i] & 0x0f0f0f0fu;
        c[4 + i] = (qs[i] >> 4) & 0x0f0f0f0fu;
    }
}

/* Q4_K / Q5_K: a and mn of sub-block s from the super-block's first 16 bytes h (d, dmin,
 * scales[12]); branch-free (s differs across the lanes of a warp): s < 4: sc = S[s] & 63,
 * mn = S[s + 4] & 63; else sc = (S[s + 4] & 15) | (S[s - 4] >> 6) << 4,
 * mn = (S[s + 4] >> 4) | (S[s] >> 6) << 4 */
static __device__ __forceinline__ void kiln_qk_scales(const uint32_t *h, int s, kiln_qunit *q) {
    int lo = s < 4;
    uint32_t b0 = kiln_q_byte3(h + 1, lo ? s : s + 4), b1 = kiln_q_byte3(h + 1, lo ? s + 4 : s - 4),
             b2 = kiln_q_byte3(h + 1, s);
    int sc = lo ? (int)(b0 & 63) : (int)((b0 & 15) | ((b1 >> 6) << 4));
    int mn = lo ? (int)(b1 & 63) : (int)((b0 >> 4) | ((b2 >> 6) << 4));
    float d = kiln_q_h2f(h[0]), dmin = kiln_q_h2f(h[0] >> 16);
    q->a[0] = q->a[1] = __fmul_rn(d, (float)sc);
    q->mn = -__fmul_rn(dmin, (float)mn);
}

/* unit u of a row (row: the row's first byte). W16: the 2-byte-aligned types' bytes in 16-byte
 * loads (kiln_q_words2), else in 4-byte loads (kiln_q_words2_4): the int8 GEMV keeps the 4-byte
 * loads above one row, where its dp4a work per weight grows and the realignment's selects cost more
 * than the L1 saves (H100, twenty-second session, Q8_0 at 4 rows: gate|up 175.5 -> 192.8 us, LM head
 * 325.9 -> 383.8; at one row down 69.5 -> 64.3) */
template <int DT, bool W16 = true>
static __device__ __forceinline__ void kiln_q_unit(const uint8_t *row, int u, kiln_qunit *q) {
    q->mn = 0.0f;
    q->off = 0;
    q->sgn = DT == KILN_DT_Q8_0;
    q->has_mn = DT == KILN_DT_Q4_1 || DT == KILN_DT_Q5_1 || DT == KILN_DT_Q4_K || DT == KILN_DT_Q5_K;
    if (DT == KILN_DT_Q8_0) {
        uint32_t w[9]; /* d at byte 0, q[32] at 2 */
        W16 ? kiln_q_words2<9, 34>(row + (int64_t)u * 34, w) : kiln_q_words2_4<9>(row + (int64_t)u * 34, w);
        float d = kiln_q_h2f(w[0]);
#pragma unroll
        for (int i = 0; i < 8; i++) q->c[i] = __funnelshift_r(w[i], w[i + 1], 16);
        q->a[0] = q->a[1] = d;
    } else if (DT == KILN_DT_Q4_0) {
        uint32_t w[5]; /* d, qs[16] at 2 */
        W16 ? kiln_q_words2<5, 18>(row + (int64_t)u * 18, w) : kiln_q_words2_4<5>(row + (int64_t)u * 18, w);
        uint32_t qs[4];
#pragma unroll
        for (int i = 0; i < 4; i++) qs[i] = __funnelshift_r(w[i], w[i + 1], 16);
        kiln_q_nibbles32(qs, q->c);
        q->a[0] = q->a[1] = kiln_q_h2f(w[0]);
        q->off = 8;
    } else if (DT == KILN_DT_Q4_1) {
        uint32_t w[5]; /* d, m, qs[16] at 4 */
        kiln_q_words4<5>(row + (int64_t)u * 20, w);
        kiln_q_nibbles32(w + 1, q->c);
        q->a[0] = q->a[1] = kiln_q_h2f(w[0]);
        q->mn = kiln_q_h2f(w[0] >> 16);
    } else if (DT == KILN_DT_Q5_0) {
        uint32_t w[6]; /* d, qh[4] at 2, qs[16] at 6 */
        W16 ? kiln_q_words2<6, 22>(row + (int64_t)u * 22, w) : kiln_q_words2_4<6>(row + (int64_t)u * 22, w);
        uint32_t qh = __funnelshift_r(w[0], w[1], 16), qs[4];
#pragma unroll
        for (int i = 0; i < 4; i++) qs[i] = __funnelshift_r(w[1 + i], w[2 + i], 16);
        kiln_q_nibbles32(qs, q->c);
#pragma unroll
        for (int i = 0; i < 8; i++) q->c[i] |= kiln_q_spread4(qh >> (4 * i));
        q->a[0] = q->a[1] = kiln_q_h2f(w[0]);
        q->off = 16;
    } else if (DT == KILN_DT_Q5_1) {
        uint32_t w[6]; /* d, m, qh[4] at 4, qs[16] at 8 */
        kiln_q_words4<6>(row + (int64_t)u * 24, w);
        kiln_q_nibbles32(w + 2, q->c);
#pragma unroll
        for (int i = 0; i < 8; i++) q->c[i] |= kiln_q_spread4(w[1] >> (4 * i));
        q->a[0] = q->a[1] = kiln_q_h2f(w[0]);
        q->mn = kiln_q_h2f(w[0] >> 16);
    } else if (DT == KILN_DT_Q4_K || DT == KILN_DT_Q5_K) {
        const int BB = DT == KILN_DT_Q4_K ? 144 : 176, QS = DT == KILN_DT_Q4_K ? 16 : 48;
        const uint8_t *b = row + (int64_t)(u >> 3) * BB;
        int s = u & 7, c = s >> 1, hi = s & 1;
        uint32_t h[4]; /* d, dmin, scales[12]: blocks are 16-byte aligned (144, 176) */
        kiln_q_words16<1>(b, h);
        uint32_t w[8];
        kiln_q_words16<2>(b + QS + 32 * c, w);
#pragma unroll
        for (int i = 0; i < 8; i++) q->c[i] = (hi ? w[i] >> 4 : w[i]) & 0x0f0f0f0fu;
        if (DT == KILN_DT_Q5_K) {
            uint32_t qh[8];
            kiln_q_words16<2>(b + 16, qh);
#pragma unroll
            for (int i = 0; i < 8; i++) q->c[i] |= ((qh[i] >> s) & 0x01010101u) << 4;
        }
        kiln_qk_scales(h, s, q);
    } else { /* Q6_K: ql[128], qh[64], int8 scales[16], d at 208 */
        const uint8_t *b = row + (int64_t)(u >> 3) * 210;
        int s = u & 7, h = s >> 2, k = s & 3;
        uint32_t ql[8], qh[8], sw[5];
        kiln_q_words2<8, 32>(b + 64 * h + 32 * (k & 1), ql);
        kiln_q_words2<8, 32>(b + 128 + 32 * h, qh);
        kiln_q_words2<5, 18>(b + 192, sw); /* scales[16] then d */
#pragma unroll
        for (int i = 0; i < 8; i++)
            q->c[i] = ((k >= 2 ? ql[i] >> 4 : ql[i]) & 0x0f0f0f0fu) | (((qh[i] >> (2 * k)) & 0x03030303u) << 4);
        float d = kiln_q_h2f(sw[4]);
        int si = 8 * h + 2 * k;
        int8_t s0 = (int8_t)kiln_q_byte4(sw, si), s1 = (int8_t)kiln_q_byte4(sw, si + 1);
        q->a[0] = __fmul_rn(d, (float)s0);
        q->a[1] = __fmul_rn(d, (float)s1);
        q->off = 32;
    }
}

/* Q6_K units 8 sb + 4 h + k0 and 8 sb + 4 h + k0 + 2 (k0 = 0, 1) of a row: kiln_q_unit's two
 * decodes from one load of what they share (the same 32 ql bytes, low and high nibbles, the same
 * 32 qh bytes, the scale words): 24 loads for the pair instead of 48 */
static __device__ __forceinline__ void kiln_q6_pair(const uint8_t *row, int sb, int h, int k0, kiln_qunit *q0,
                                                    kiln_qunit *q1) {
    const uint8_t *b = row + (int64_t)sb * 210;
    uint32_t ql[8], qh[8], sw[5];
    kiln_q_words2<8, 32>(b + 64 * h + 32 * k0, ql);
    kiln_q_words2<8, 32>(b + 128 + 32 * h, qh);
    kiln_q_words2<5, 18>(b + 192, sw); /* scales[16] then d */
#pragma unroll
    for (int i = 0; i < 8; i++) {
        q0->c[i] = (ql[i] & 0x0f0f0f0fu) | (((qh[i] >> (2 * k0)) & 0x03030303u) << 4);
        q1->c[i] = ((ql[i] >> 4) & 0x0f0f0f0fu) | (((qh[i] >> (2 * k0 + 4)) & 0x03030303u) << 4);
    }
    const float d = kiln_q_h2f(sw[4]);
    const int si = 8 * h + 2 * k0; /* unit k0: scales si, si + 1; unit k0 + 2: si + 4, si + 5 */
    q0->a[0] = __fmul_rn(d, (float)(int8_t)kiln_q_byte4(sw, si));
    q0->a[1] = __fmul_rn(d, (float)(int8_t)kiln_q_byte4(sw, si + 1));
    q1->a[0] = __fmul_rn(d, (float)(int8_t)kiln_q_byte4(sw, si + 4));
    q1->a[1] = __fmul_rn(d, (float)(int8_t)kiln_q_byte4(sw, si + 5));
    q0->mn = q1->mn = 0.0f;
    q0->off = q1->off = 32;
    q0->has_mn = q1->has_mn = 0;
    q0->sgn = q1->sgn = 0;
}

/* Q4_K units 8 sb + 2 c and 8 sb + 2 c + 1 of a row: kiln_q_unit's two decodes from one load of
 * what they share (the header, the same 32 qs bytes: low and high nibbles) */
static __device__ __forceinline__ void kiln_q4k_pair(const uint8_t *row, int sb, int c, kiln_qunit *q0,
                                                     kiln_qunit *q1) {
    const uint8_t *b = row + (int64_t)sb * 144;
    uint32_t h[4], w[8];
    kiln_q_words16<1>(b, h);
    kiln_q_words16<2>(b + 16 + 32 * c, w);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        q0->c[i] = w[i] & 0x0f0f0f0fu;
        q1->c[i] = (w[i] >> 4) & 0x0f0f0f0fu;
    }
    kiln_qk_scales(h, 2 * c, q0);
    kiln_qk_scales(h, 2 * c + 1, q1);
    q0->off = q1->off = 0;
    q0->has_mn = q1->has_mn = 1;
    q0->sgn = q1->sgn = 0;
}

/* the 32 weights of a decoded unit, exactly as the CPU's dequantization computes them */
static __device__ __forceinline__ void kiln_q_dequant_unit(const kiln_qunit *q, float *y) {
#pragma unroll
    for (int j = 0; j < 32; j++) {
        int b = (int)((q->c[j >> 2] >> (8 * (j & 3))) & 0xff);
        float v = (float)(q->sgn ? (int)(int8_t)b : b - q->off);
        float p = __fmul_rn(q->a[j >> 4], v);
        y[j] = q->has_mn ? __fadd_rn(p, q->mn) : p;
    }
}

/* element 0..31 / 32-element unit runtime dispatch over the supported types */
#define KILN_Q_DISPATCH(dt, F, ...)                                                                                     \
    switch (dt) {                                                                                                       \
    case KILN_DT_Q8_0: F<KILN_DT_Q8_0>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q4_0: F<KILN_DT_Q4_0>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q4_1: F<KILN_DT_Q4_1>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q5_0: F<KILN_DT_Q5_0>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q5_1: F<KILN_DT_Q5_1>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q4_K: F<KILN_DT_Q4_K>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q5_K: F<KILN_DT_Q5_K>(__VA_ARGS__); break;                                                              \
    case KILN_DT_Q6_K: F<KILN_DT_Q6_K>(__VA_ARGS__); break;                                                              \
    default: return cudaErrorInvalidValue;                                                                              \
    }

static inline int kiln_q_supported(kiln_dtype dt) {
    return dt == KILN_DT_Q8_0 || dt == KILN_DT_Q4_0 || dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_0 ||
           dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K || dt == KILN_DT_Q6_K;
}

/* block elements / bytes (dtype.c's table, here as inline code: .cu files do not link the C
 * format layer's functions, whose header has no C++ linkage guard) */
static inline __host__ __device__ int kiln_q_block_elems(kiln_dtype dt) {
    return dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K || dt == KILN_DT_Q6_K ? 256 : 32;
}
static inline __host__ __device__ int kiln_q_block_bytes(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return 34;
    case KILN_DT_Q4_0: return 18;
    case KILN_DT_Q4_1: return 20;
    case KILN_DT_Q5_0: return 22;
    case KILN_DT_Q5_1: return 24;
    case KILN_DT_Q4_K: return 144;
    case KILN_DT_Q5_K: return 176;
    case KILN_DT_Q6_K: return 210;
    default: return 0;
    }
}
static inline int64_t kiln_q_row_bytes(kiln_dtype dt, int64_t n) {
    return n / kiln_q_block_elems(dt) * kiln_q_block_bytes(dt);
}

#endif
