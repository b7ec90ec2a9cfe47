/* quant_dot_avx512.c: AVX-512 quantized dot kernels (16 f32 lanes); the kernels themselves are
 * in quant_dot_simd.inc, shared with the AVX2 file. Compiled with -mavx512f/bw/vl/dq -mfma. */
#include <immintrin.h>
#include <string.h>
#include "backend/cpu/quant_impl.h"

typedef __m512 VF;
typedef __m512i VI;
#define L 16
#define FN(name) name##_avx512
#define VZERO() _mm512_setzero_ps()
#define VSET1(f) _mm512_set1_ps(f)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VFMSUB(a, b, c) _mm512_fmsub_ps(a, b, c)
#define VCVT(i) _mm512_cvtepi32_ps(i)
#define VREDUCE(v) _mm512_reduce_add_ps(v)
#define ILOAD_U8(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ILOAD_I8(p) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ISET1(k) _mm512_set1_epi32(k)
#define IAND(a, b) _mm512_and_si512(a, b)
#define IOR(a, b) _mm512_or_si512(a, b)
#define ISUB(a, b) _mm512_sub_epi32(a, b)
#define ISRLI(a, k) _mm512_srli_epi32(a, k)
#define ISLLI(a, k) _mm512_slli_epi32(a, k)
#define ISRLV(a, b) _mm512_srlv_epi32(a, b)
#define IIOTA() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define VPERM16(idx, tab) _mm512_permutexvar_ps(idx, tab)
/* dm = (f32) {d, m, 0 ...} from the block's two leading f16 */
#define VDM16(b, dm)                                                                          \
    do {                                                                                      \
        int32_t u_;                                                                           \
        memcpy(&u_, (b), 4);                                                                  \
        (dm) = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(u_)));                   \
    } while (0)
#define VIOTA16() _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define IBITS(v, s, mask) _mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(s)), _mm512_set1_epi32(mask))

#define QNR 6 /* 24 accumulators of the 32 zmm registers */
#define QNR2 8 /* 32-element block types: two passes of 16 accumulators (dot32w; 12 rows spill) */

/* out[r * ldo] = _mm512_reduce_add_ps(S[r]) for r < nr (1..6), all at once: GCC's reduce pairs
 * lane l with l+8, then l+4, l+2, l+1; the same pairs here, in transposing shuffles (one
 * tree for all rows instead of one per row), so the same bits. */
static inline __attribute__((always_inline)) void reduce_rows(const __m512 *S, int nr, float *out, size_t ldo) {
    const __m512 z = _mm512_setzero_ps();
    __m512 P[4], R[2];
    for (int m = 0; m < 3; m++) { /* rows 2m, 2m+1: [A0 A1 B0 B1] + [A2 A3 B2 B3] = l + l+8 */
        __m512 a = 2 * m < nr ? S[2 * m] : z, b = 2 * m + 1 < nr ? S[2 * m + 1] : z; /* no read past nr */
        P[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    P[3] = z;
    for (int m = 0; m < 2; m++) /* l + l+4; chunk c of R[m] = row 4m + c */
        R[m] = _mm512_add_ps(_mm512_shuffle_f32x4(P[2 * m], P[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(P[2 * m], P[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* l + l+2: chunk c = [row c: r0 r1, row 4+c: r0 r1] */
    __m512 T = _mm512_add_ps(_mm512_shuffle_ps(R[0], R[1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(R[0], R[1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* r0 + r1: lane 4c = row c, lane 4c + 1 = row 4 + c */
    __m512 F = _mm512_add_ps(_mm512_shuffle_ps(T, T, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(T, T, _MM_SHUFFLE(3, 1, 3, 1)));
    float f[16];
    _mm512_storeu_ps(f, F);
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = f[r < 4 ? 4 * r : 4 * (r - 4) + 1];
}
#define VREDUCE_ROWS(S, nr, out, ldo) reduce_rows(S, nr, out, ldo)
#include "backend/cpu/quant_dot_simd.inc"

/* ---- prefill: weights dequantized once per step, an f32 register tile over many rows ------
 *
 * deq: nw weight rows of a 32-element block type -> f32 [nw][n], each vector exactly the one
 * dot32 computes in registers (blk32), so the products below use the same weight values.
 * tile: out[r * ldo + k] = W[k] . x[r] for k < nw, r < nx (nw <= 4 and nx <= 6, or nw <= 6 and
 * nx <= 4): per (k, r) pair,
 * 4 accumulators, vector j (16 lanes) of the row into accumulator j % 4 by one fma, in j order;
 * then (a0 + a1) + (a2 + a3) and the reduction of reduce_rows / _mm512_reduce_add_ps. That is
 * dot32's arithmetic per element for nr = 1 .. 6 (its vector j also feeds accumulator
 * (k * VPB + v) % A = j % 4, the tail's two vectors a0 and a1), so the bits are the same;
 * test_cpu_batch checks it. */
static void deq_rows(int T, int bb, const void *w, size_t ldw, int nw, int n, float *out) {
    for (int k = 0; k < nw; k++) {
        const uint8_t *b = (const uint8_t *)w + (size_t)k * ldw;
        float *o = out + (size_t)k * n;
        for (int i = 0; i < n / 32; i++) {
            VF v[VPB];
            blk32_avx512(T, b + (size_t)i * bb, v);
            _mm512_storeu_ps(o + 32 * i, v[0]);
            _mm512_storeu_ps(o + 32 * i + 16, v[1]);
        }
    }
}
/* perm (n a multiple of 64): "phase-major" rows: vector j stored at (j % 4) * n / 4 + 16 * (j / 4),
 * so that each accumulator phase reads one contiguous quarter of the row. */
static void deq_rows_perm(int T, int bb, const void *w, size_t ldw, int nw, int n, float *out) {
    for (int k = 0; k < nw; k++) {
        const uint8_t *b = (const uint8_t *)w + (size_t)k * ldw;
        float *o = out + (size_t)k * n;
        for (int i = 0; i < n / 32; i++) {
            VF v[VPB];
            blk32_avx512(T, b + (size_t)i * bb, v);
            int j0 = 2 * i, j1 = 2 * i + 1;
            _mm512_storeu_ps(o + (size_t)(j0 % 4) * (n / 4) + 16 * (j0 / 4), v[0]);
            _mm512_storeu_ps(o + (size_t)(j1 % 4) * (n / 4) + 16 * (j1 / 4), v[1]);
        }
    }
}
#define DEQ(name, T, bb)                                                                      \
    static void name(const void *w, size_t ldw, int nw, int n, int perm, float *out) {        \
        if (perm) deq_rows_perm(T, bb, w, ldw, nw, n, out);                                   \
        else deq_rows(T, bb, w, ldw, nw, n, out);                                             \
    }
DEQ(deq_q8_0, T_Q8_0, 34)
DEQ(deq_q4_0, T_Q4_0, 18)
DEQ(deq_q4_1, T_Q4_1, 20)
DEQ(deq_q5_0, T_Q5_0, 22)
DEQ(deq_q5_1, T_Q5_1, 24)

/* Phase a only (the chains j = a, a + 4 ...), for rows too long for x's group to stay in L1
 * while the weight rows stream: the caller runs phases 0..3 in order over many tiles, each
 * touching a quarter of the data. pm: w and x are phase-major (see deq_rows_perm: phase a's
 * vectors are one contiguous quarter of the row; with the natural layout a phase touches a
 * quarter of the L1 sets only, which long rows overflow). buf ([2][nw][nx] vectors, per tile) carries t01 = a0 + a1 and
 * a2 between the calls; phase 3 finishes t01 + (a2 + a3) (= dot32's order). */
INL void tile_phase_body(const float *w, int nw, const float *x, size_t ldx, int nx, int n, int pm, int a,
                         __m512 *buf, float *out, size_t ldo) {
    __m512 acc[6][6];
    const int nv = n / 16;
#pragma GCC unroll 6
    for (int k = 0; k < nw; k++)
#pragma GCC unroll 6
        for (int r = 0; r < nx; r++) acc[k][r] = _mm512_setzero_ps();
    /* vector j = a + 4i of a row: phase-major at a n/4 + 16 i, natural at 16 a + 64 i */
    const size_t step = pm ? 16 : 64;
    w += pm ? (size_t)a * (n / 4) : (size_t)16 * a;
    x += pm ? (size_t)a * (n / 4) : (size_t)16 * a;
    const int cnt = pm ? nv / 4 : (nv - a + 3) / 4;
    for (int i = 0; i < cnt; i++) {
        __m512 wv[6];
#pragma GCC unroll 6
        for (int k = 0; k < nw; k++) wv[k] = _mm512_loadu_ps(w + (size_t)k * n + step * i);
#pragma GCC unroll 6
        for (int r = 0; r < nx; r++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)r * ldx + step * i);
#pragma GCC unroll 6
            for (int k = 0; k < nw; k++) acc[k][r] = _mm512_fmadd_ps(wv[k], xv, acc[k][r]);
        }
    }
    __m512 *t01 = buf, *t2 = buf + nw * nx;
    if (a == 0) {
#pragma GCC unroll 36
        for (int i = 0; i < nw * nx; i++) t01[i] = acc[i / nx][i % nx];
    } else if (a == 1) {
#pragma GCC unroll 36
        for (int i = 0; i < nw * nx; i++) t01[i] = _mm512_add_ps(t01[i], acc[i / nx][i % nx]);
    } else if (a == 2) {
#pragma GCC unroll 36
        for (int i = 0; i < nw * nx; i++) t2[i] = acc[i / nx][i % nx];
    } else {
#pragma GCC unroll 6
        for (int k = 0; k < nw; k++) {
            __m512 S[6];
#pragma GCC unroll 6
            for (int r = 0; r < nx; r++) S[r] = _mm512_add_ps(t01[k * nx + r], _mm512_add_ps(t2[k * nx + r], acc[k][r]));
            reduce_rows(S, nx, out + k, ldo);
        }
    }
}

/* The whole tile: the four accumulator phases one after the other (accumulator a of every
 * (k, r) pair is the fma chain over the vectors j = a, a + 4 ... in order, independent of the
 * other three, so running the chains one after the other gives the interleaved bits): 4 x 6
 * (or 6 x 4) pairs x 1 chain = 24 zmm registers, 10 loads per 24 fmas. */
#pragma GCC diagnostic push
/* buf is written by phases 0 and 2 before phases 1 and 3 read it; GCC cannot see that through
 * the runtime phase (unrolling the four phases instead made the tile 35 % slower) */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
INL void tile_body(const float *w, int nw, const float *x, size_t ldx, int nx, int n, float *out, size_t ldo) {
    __m512 buf[2 * 24];
#pragma GCC unroll 1
    for (int a = 0; a < 4; a++) tile_phase_body(w, nw, x, ldx, nx, n, 0, a, buf, out, ldo);
}

#define PHASE_NX4(nw_)                                                                        \
    case 1: tile_phase_body(w, nw_, x, ldx, 1, n, 1, a, (__m512 *)buf, out, ldo); break;         \
    case 2: tile_phase_body(w, nw_, x, ldx, 2, n, 1, a, (__m512 *)buf, out, ldo); break;         \
    case 3: tile_phase_body(w, nw_, x, ldx, 3, n, 1, a, (__m512 *)buf, out, ldo); break;         \
    case 4: tile_phase_body(w, nw_, x, ldx, 4, n, 1, a, (__m512 *)buf, out, ldo); break;
#define PHASE_NX6(nw_)                                                                        \
    switch (nx) {                                                                             \
        PHASE_NX4(nw_)                                                                        \
    case 5: tile_phase_body(w, nw_, x, ldx, 5, n, 1, a, (__m512 *)buf, out, ldo); break;         \
    default: tile_phase_body(w, nw_, x, ldx, 6, n, 1, a, (__m512 *)buf, out, ldo); break;        \
    }
void kiln_quant_tile_phase_avx512(const float *w, int nw, const float *x, size_t ldx, int nx, int n, int a, float *buf,
                                  float *out, size_t ldo) {
    switch (nw) {
    case 1: PHASE_NX6(1) break;
    case 2: PHASE_NX6(2) break;
    case 3: PHASE_NX6(3) break;
    case 4: PHASE_NX6(4) break;
    case 5: switch (nx) { PHASE_NX4(5) } break;
    default: switch (nx) { PHASE_NX4(6) } break;
    }
}

#define TILE_NX4(nw_)                                                                         \
    case 1: tile_body(w, nw_, x, ldx, 1, n, out, ldo); break;                                 \
    case 2: tile_body(w, nw_, x, ldx, 2, n, out, ldo); break;                                 \
    case 3: tile_body(w, nw_, x, ldx, 3, n, out, ldo); break;                                 \
    case 4: tile_body(w, nw_, x, ldx, 4, n, out, ldo); break;
#define TILE_NX6(nw_)                                                                         \
    switch (nx) {                                                                             \
        TILE_NX4(nw_)                                                                         \
    case 5: tile_body(w, nw_, x, ldx, 5, n, out, ldo); break;                                 \
    default: tile_body(w, nw_, x, ldx, 6, n, out, ldo); break;                                \
    }
/* nw <= 4 with nx <= 6, or nw 5..6 with nx <= 4 */
void kiln_quant_tile_avx512(const float *w, int nw, const float *x, size_t ldx, int nx, int n, float *out, size_t ldo) {
    switch (nw) {
    case 1: TILE_NX6(1) break;
    case 2: TILE_NX6(2) break;
    case 3: TILE_NX6(3) break;
    case 4: TILE_NX6(4) break;
    case 5: switch (nx) { TILE_NX4(5) } break;
    default: switch (nx) { TILE_NX4(6) } break;
    }
}
#pragma GCC diagnostic pop

kiln_deq_fn kiln_quant_deq_avx512(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return deq_q8_0;
    case KILN_DT_Q4_0: return deq_q4_0;
    case KILN_DT_Q4_1: return deq_q4_1;
    case KILN_DT_Q5_0: return deq_q5_0;
    case KILN_DT_Q5_1: return deq_q5_1;
    default: return NULL;
    }
}

kiln_dot_fn kiln_quant_dot_avx512(kiln_dtype dt) { return lookup_avx512(dt); }
kiln_dotw_fn kiln_quant_dotw_avx512(kiln_dtype dt) { return lookup_w_avx512(dt); }
