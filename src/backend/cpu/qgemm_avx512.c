/* qgemm_avx512.c: the W x A8 kernels (qgemm.h) with AVX-512 VNNI: two 32-element blocks per
 * 512-bit step (lanes 0-7 block 2k, lanes 8-15 block 2k + 1), vpdpbusd for the int32 lanes,
 * a tile of up to 4 activation rows x 4 weight rows sharing the unpacking and the loads.
 * Compiled with the AVX-512 flags plus -mavx512vnni; used only where CPUID reports it.
 *
 * Per output (r, c), f32 order: lane l of one 16-lane accumulator takes, step by step,
 *   acc = fma((float)isum_l, dw * dx (lane's block), acc)
 * (an odd last block: its upper half is zeros), then v = acc + (sum over 16-float chunks of
 * the blocks: fma(mw, sdx, m)), then _mm512_reduce_add_ps(v). Only (r, c, n) decide it. */
#include <immintrin.h>
#include <string.h>
#include "backend/cpu/qgemm.h"

#define INL static inline __attribute__((always_inline))
enum { T_Q8_0, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1 };

INL float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* one block -> 32 bytes (element i at byte i): unsigned u, or signed s for Q8_0 */
INL __m256i unpack1(int T, const uint8_t *b) {
    if (T == T_Q8_0) return _mm256_loadu_si256((const __m256i *)(const void *)(b + 2));
    const int qo = T == T_Q4_0 ? 2 : T == T_Q4_1 ? 4 : T == T_Q5_0 ? 6 : 8;
    __m128i qs = _mm_loadu_si128((const __m128i *)(const void *)(b + qo));
    __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(15));
    if (T == T_Q5_0 || T == T_Q5_1) { /* bit j of qh -> bit 4 of byte j */
        int32_t qh;
        memcpy(&qh, b + (T == T_Q5_0 ? 2 : 4), 4);
        const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                             3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
        __m256i h = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(qh), idx), bit);
        u = _mm256_or_si256(u, _mm256_and_si256(_mm256_cmpeq_epi8(h, bit), _mm256_set1_epi8(16)));
    }
    return u;
}

/* blocks b0 and (two) b0 + bb -> 64 bytes and the lanes' scales; !two: upper half zero */
INL __m512i unpack2(int T, const uint8_t *b0, int bb, int two, __m512 *dw) {
    __m256i lo = unpack1(T, b0);
    __m256 d0 = _mm256_set1_ps(h2f(b0));
    if (!two) {
        *dw = _mm512_castps256_ps512(d0);
        *dw = _mm512_insertf32x8(*dw, _mm256_setzero_ps(), 1);
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_setzero_si256(), 1);
    }
    *dw = _mm512_insertf32x8(_mm512_castps256_ps512(d0), _mm256_set1_ps(h2f(b0 + bb)), 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), unpack1(T, b0 + bb), 1);
}

INL void step(int T, int NR, const __m512i *u, const __m512i *s, const __m512 *dw, const int8_t *q0, size_t ldq,
              const float *d0, size_t ldd, __m512 acc[4][4]) {
#pragma GCC unroll 4
    for (int i = 0; i < NR; i++) {
        __m512i x = _mm512_loadu_si512((const void *)(q0 + (size_t)i * ldq));
        __m512 dx = _mm512_loadu_ps(d0 + (size_t)i * ldd);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i xs = x;
            if (T == T_Q8_0) xs = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(s[c]), _mm512_setzero_si512(), x);
            __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u[c], xs));
            acc[i][c] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw[c], dx), acc[i][c]);
        }
    }
}

/* rows r .. r + NR - 1 x the 4 weight rows w[0..3] (repeats past nc: results dropped) */
INL void tile(int T, int NR, int bb, const uint8_t *const *w, const kiln_q8act *a, int r, const float *const *mw,
              int has_m, float *y, size_t ldy, int nc) {
    __m512 acc[4][4];
    const int nb = a->n / 32;
#pragma GCC unroll 4
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) acc[i][c] = _mm512_setzero_ps();
    const int8_t *q0 = a->q + (size_t)r * a->nq;
    const float *d0 = a->dxe + (size_t)r * (a->nq / 4);
    const size_t ldq = (size_t)a->nq, ldd = (size_t)a->nq / 4;
    __m512i u[4], s[4];
    __m512 dw[4];
    int k = 0;
    for (; k + 2 <= nb; k += 2) {
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            u[c] = unpack2(T, w[c] + (size_t)k * bb, bb, 1, &dw[c]);
            if (T == T_Q8_0) {
                s[c] = u[c];
                u[c] = _mm512_abs_epi8(s[c]);
            }
        }
        step(T, NR, u, s, dw, q0 + 32 * k, ldq, d0 + 8 * k, ldd, acc);
    }
    if (k < nb) { /* odd last block: lanes 8-15 zero (the activation rows are zero padded) */
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            u[c] = unpack2(T, w[c] + (size_t)k * bb, bb, 0, &dw[c]);
            if (T == T_Q8_0) {
                s[c] = u[c];
                u[c] = _mm512_abs_epi8(s[c]);
            }
        }
        step(T, NR, u, s, dw, q0 + 32 * k, ldq, d0 + 8 * k, ldd, acc);
    }
#pragma GCC unroll 4
    for (int i = 0; i < NR; i++) {
        const float *sdx = a->sdx + (size_t)(r + i) * a->nbp;
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512 v = acc[i][c];
            if (has_m) {
                __m512 m = _mm512_setzero_ps();
                for (int j = 0; j < a->nbp; j += 16)
                    m = _mm512_fmadd_ps(_mm512_loadu_ps(mw[c] + j), _mm512_loadu_ps(sdx + j), m);
                v = _mm512_add_ps(v, m);
            }
            if (c < nc) y[(size_t)i * ldy + c] = _mm512_reduce_add_ps(v);
        }
    }
}

INL void qgemm_body(int T, kiln_dtype dt, int bb, const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0,
                    int r1, float *y, size_t ldy, void *scratch) {
    float *mwb = scratch;
    int has_m = kiln_qgemm_offsets(dt, w, ldw, nc, a->n, a->nbp, mwb);
    const uint8_t *wc[4];
    const float *mw[4];
    for (int c = 0; c < 4; c++) {
        int cc = c < nc ? c : nc - 1;
        wc[c] = w + (size_t)cc * ldw;
        mw[c] = mwb + (size_t)cc * a->nbp;
    }
    for (int r = r0; r < r1; r += 4) {
        float *yt = y + (size_t)(r - r0) * ldy;
        switch (r1 - r < 4 ? r1 - r : 4) {
        case 1: tile(T, 1, bb, wc, a, r, mw, has_m, yt, ldy, nc); break;
        case 2: tile(T, 2, bb, wc, a, r, mw, has_m, yt, ldy, nc); break;
        case 3: tile(T, 3, bb, wc, a, r, mw, has_m, yt, ldy, nc); break;
        default: tile(T, 4, bb, wc, a, r, mw, has_m, yt, ldy, nc); break;
        }
    }
}

#define DEF_QG(name, T, dt, bb)                                                                 \
    static void name(const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1, float *y, \
                     size_t ldy, void *scratch) {                                                \
        qgemm_body(T, dt, bb, w, ldw, nc, a, r0, r1, y, ldy, scratch);                           \
    }
DEF_QG(qg_q8_0, T_Q8_0, KILN_DT_Q8_0, 34)
DEF_QG(qg_q4_0, T_Q4_0, KILN_DT_Q4_0, 18)
DEF_QG(qg_q4_1, T_Q4_1, KILN_DT_Q4_1, 20)
DEF_QG(qg_q5_0, T_Q5_0, KILN_DT_Q5_0, 22)
DEF_QG(qg_q5_1, T_Q5_1, KILN_DT_Q5_1, 24)

kiln_qgemm_fn kiln_qgemm_avx512(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return qg_q8_0;
    case KILN_DT_Q4_0: return qg_q4_0;
    case KILN_DT_Q4_1: return qg_q4_1;
    case KILN_DT_Q5_0: return qg_q5_0;
    case KILN_DT_Q5_1: return qg_q5_1;
    default: return NULL;
    }
}
