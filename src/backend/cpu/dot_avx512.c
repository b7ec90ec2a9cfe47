/* dot_avx512.c: AVX-512 (F, BW, VL, DQ) dot-product kernels.
 *
 * One weight row W[n] against nr <= 4 f32 rows. Per row: 4 accumulators of 16 lanes (64
 * partial sums, element i -> acc[(i / 16) % 4] lane i % 16) updated with FMA; weights are
 * converted in registers (bf16: zero-extend and shift into the high half; f16: vcvtph2ps),
 * each converted vector serves all nr rows (16 accumulators fit the 32 zmm registers).
 * The tail (n % 64) runs as up to 4 more 16-lane chunks with zeroing masked loads.
 * Reduction: (a0 + a1) + (a2 + a3), high 256 + low 256, high 128 + low 128, then a fixed
 * shuffle tree. The arithmetic of a row is the same whatever nr is. */
#include <immintrin.h>
#include "backend/cpu/dot_internal.h"
#include "util/fp16.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* full unrolling keeps the accumulator arrays in registers (-O2 alone leaves them on the stack) */
#define KILN_UNROLL _Pragma("GCC unroll 16")

/* 16 e4m3 codes (zero-extended to 16 bits) -> f32: the f16 with the same exponent and mantissa
 * bits moved up (exact, subnormals included) times 2^8 */
static ALWAYS_INLINE __m512 f8_16(__m256i v) {
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x7f)), 7),
                                _mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x80)), 8));
    return _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
}

static ALWAYS_INLINE __m512 load16(const void *w, kiln_dtype dt, int i) {
    switch (dt) {
    case KILN_DT_BF16: {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case KILN_DT_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    case KILN_DT_F8_E4M3: return f8_16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)((const uint8_t *)w + i))));
    default: return _mm512_loadu_ps((const float *)w + i);
    }
}

static ALWAYS_INLINE __m512 load16_mask(const void *w, kiln_dtype dt, int i, __mmask16 m) {
    switch (dt) {
    case KILN_DT_BF16: {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case KILN_DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
    case KILN_DT_F8_E4M3: return f8_16(_mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, (const uint8_t *)w + i)));
    default: return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    }
}

static ALWAYS_INLINE float hsum(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

static ALWAYS_INLINE void dot_body(const void *w, kiln_dtype dt, const float *x, size_t ldx,
                                   const int nr, int n, float *out, size_t ldo) {
    __m512 acc[KILN_DOT_MAX_NR][4];
    KILN_UNROLL
    for (int r = 0; r < nr; r++)
        KILN_UNROLL
        for (int k = 0; k < 4; k++) acc[r][k] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        KILN_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512 wk = load16(w, dt, i + 16 * k);
            KILN_UNROLL
            for (int r = 0; r < nr; r++)
                acc[r][k] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(x + (size_t)r * ldx + i + 16 * k), acc[r][k]);
        }
    }
    for (int k = 0; k < 4 && i < n; k++, i += 16) {
        int m = n - i < 16 ? n - i : 16;
        __mmask16 mk = (__mmask16)((1u << m) - 1u);
        __m512 wk = load16_mask(w, dt, i, mk);
        KILN_UNROLL
        for (int r = 0; r < nr; r++)
            acc[r][k] = _mm512_fmadd_ps(wk, _mm512_maskz_loadu_ps(mk, x + (size_t)r * ldx + i), acc[r][k]);
    }
    KILN_UNROLL
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = hsum(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

#include "backend/cpu/dot_rows.inc"


void kiln_cpu_axpy_avx512(float *restrict o, const float *restrict v, float a, int n) {
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(o + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(v + i), _mm512_loadu_ps(o + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(o + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, v + i), _mm512_maskz_loadu_ps(m, o + i)));
    }
}

/* One step of qk_tree: V and W each hold 16 / (2h) groups of 2h partial sums; the result holds
 * twice the groups, each half as wide: in every 2h-lane segment, the first h lanes are
 * V[l] + V[l + h] and the last h are W[l - h] + W[l] (the same pairs for both: an add is
 * commutative). One two-source permute, one blend and one add. */
static ALWAYS_INLINE __m512 tree_step(__m512 V, __m512 W, __m512i idx, __mmask16 second) {
    return _mm512_add_ps(_mm512_mask_blend_ps(second, V, W), _mm512_permutex2var_ps(V, idx, W));
}

/* The 16 keys' scores of a block from S[u] (key u's 16 partial sums): lane u of the result is
 * ((S_l + S_l+8) + (S_l+4 + S_l+12)) + ... : the halving tree l + l+8, l + l+4, l + l+2,
 * l + l+1 on each key's own lanes (no lane of another key, so each score's bits depend only on
 * its key and query). */
static ALWAYS_INLINE __m512 qk_tree_p(const __m512 P[8]) {
    /* idx per level h: lane l of a 2h-segment takes V[l + h] (first half) or W[l - h] (second) */
    const __m512i i4 = _mm512_setr_epi32(4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 24, 25, 26, 27);
    const __m512i i2 = _mm512_setr_epi32(2, 3, 16, 17, 6, 7, 20, 21, 10, 11, 24, 25, 14, 15, 28, 29);
    const __m512i i1 = _mm512_setr_epi32(1, 16, 3, 18, 5, 20, 7, 22, 9, 24, 11, 26, 13, 28, 15, 30);
    __m512 R[4], T[2];
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) R[m] = tree_step(P[2 * m], P[2 * m + 1], i4, 0xf0f0);
#pragma GCC unroll 2
    for (int m = 0; m < 2; m++) T[m] = tree_step(R[2 * m], R[2 * m + 1], i2, 0xcccc);
    __m512 F = tree_step(T[0], T[1], i1, 0xaaaa);
    /* F lane l holds key perm[l]: P[m] = keys 2m (lanes 0-7), 2m+1 (8-15); each level
     * interleaves, so lane l = 8 b0 + 4 b1 + 2 b2 + b3 holds key 8 b3 + 4 b2 + 2 b1 + b0 */
    const __m512i rev = _mm512_setr_epi32(0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
    return _mm512_permutexvar_ps(rev, F);
}
/* the tree's first level: keys 2m and 2m + 1 into one vector */
static ALWAYS_INLINE __m512 qk_tree_pair(__m512 S0, __m512 S1) {
    const __m512i i8 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
    return tree_step(S0, S1, i8, 0xff00);
}
static ALWAYS_INLINE __m512 qk_tree(const __m512 S[16]) {
    __m512 P[8];
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++) P[m] = qk_tree_pair(S[2 * m], S[2 * m + 1]);
    return qk_tree_p(P);
}

/* Keys / values of the pool are f32, or f16 / bf16 (dt) widened in registers (exact, so the
 * same bits either way): element i of a run at x is load16(x, dt, i). Chunk c of nr 16-lane
 * chunks of a head row starting at element off: the last one masked by mt (lanes past the head
 * read as 0) unless it is whole (a masked load is 2 uops, one on an FMA port). */
static ALWAYS_INLINE __m512 ld_chunk(const void *x, kiln_dtype dt, int off, int c, int nr, __mmask16 mt) {
    return c + 1 < nr || mt == 0xffff ? load16(x, dt, off + 16 * c) : load16_mask(x, dt, off + 16 * c, mt);
}
/* element i of a run of dt elements */
static ALWAYS_INLINE const void *elem_at(const void *x, kiln_dtype dt, size_t i) {
    return (const char *)x + i * (dt == KILN_DT_F32 ? 4 : 2);
}

/* key u's 16 partial sums against one query (qv: its nc vectors, the last masked to the head
 * by mt): lane l is the fma chain over k[16c + l] q[16c + l], c = 0..nc-1 in order (the first a
 * multiply; lanes past the head read as 0 and add 0). The key starts at element kj of k. */
static ALWAYS_INLINE __m512 qk_partial(const void *k, kiln_dtype dt, int kj, const __m512 *qv, int nc, __mmask16 mt) {
    __m512 a = _mm512_mul_ps(ld_chunk(k, dt, kj, 0, nc, mt), qv[0]);
#pragma GCC unroll 16
    for (int c = 1; c < nc; c++) a = _mm512_fmadd_ps(ld_chunk(k, dt, kj, c, nc, mt), qv[c], a);
    return a;
}

/* One query's scores over a run of keys, 16 keys per qk_tree (a tail of fewer keys runs the same
 * tree with zero vectors for the missing keys and a masked store, so a score's bits do not
 * depend on where its run starts or ends, let alone on the batch). nc = ceil(hd / 16) <= 16;
 * inlined with a constant nc for the common head sizes. */
static ALWAYS_INLINE void qk_query(const void *k, kiln_dtype dt, int nk, const float *qi, int hd, int nc, __mmask16 mt,
                                   float *si) {
    __m512 qv[16] = {0}; /* (only qv[0 .. nc) is read; the zeros quiet -Wmaybe-uninitialized) */
#pragma GCC unroll 16
    for (int c = 0; c < nc; c++) qv[c] = ld_chunk(qi, KILN_DT_F32, 0, c, nc, mt);
    int j = 0;
    for (; j + 16 <= nk; j += 16) {
        __m512 S[16];
#pragma GCC unroll 16
        for (int u = 0; u < 16; u++) S[u] = qk_partial(k, dt, (j + u) * hd, qv, nc, mt);
        _mm512_storeu_ps(si + j, qk_tree(S));
    }
    if (j < nk) {
        __m512 S[16];
        for (int u = 0; u < 16; u++)
            S[u] = j + u < nk ? qk_partial(k, dt, (j + u) * hd, qv, nc, mt) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(si + j, (__mmask16)((1u << (nk - j)) - 1u), qk_tree(S));
    }
}

/* qk_partial for two queries (qa, qb) at once: each key chunk is loaded (widened) once for both;
 * each query's chain is qk_partial's, so the same bits. */
static ALWAYS_INLINE void qk_partial2(const void *k, kiln_dtype dt, int kj, const __m512 *qa, const __m512 *qb, int nc,
                                      __mmask16 mt, __m512 *a, __m512 *b) {
    __m512 kc = ld_chunk(k, dt, kj, 0, nc, mt);
    __m512 x = _mm512_mul_ps(kc, qa[0]), y = _mm512_mul_ps(kc, qb[0]);
#pragma GCC unroll 16
    for (int c = 1; c < nc; c++) {
        kc = ld_chunk(k, dt, kj, c, nc, mt);
        x = _mm512_fmadd_ps(kc, qa[c], x);
        y = _mm512_fmadd_ps(kc, qb[c], y);
    }
    *a = x;
    *b = y;
}

/* qk_query for two queries over the same keys (two heads of a GQA group): per key the chunks are
 * read once for both, which makes the loop FMA-bound instead of load-bound (one load per FMA in
 * qk_query); keys in pairs, each pair folded into the tree's first level at once so that ~8 + 8
 * vectors stay live. Per score the bits of qk_query. */
static ALWAYS_INLINE void qk_query2(const void *k, kiln_dtype dt, int nk, const float *qa, const float *qb, int hd, int nc,
                                    __mmask16 mt, float *sa, float *sb) {
    __m512 qva[16] = {0}, qvb[16] = {0};
#pragma GCC unroll 16
    for (int c = 0; c < nc; c++) {
        qva[c] = ld_chunk(qa, KILN_DT_F32, 0, c, nc, mt);
        qvb[c] = ld_chunk(qb, KILN_DT_F32, 0, c, nc, mt);
    }
    for (int j = 0; j < nk; j += 16) {
        int n = nk - j < 16 ? nk - j : 16;
        __m512 PA[8], PB[8];
#pragma GCC unroll 8
        for (int m = 0; m < 8; m++) {
            __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
            if (2 * m < n) qk_partial2(k, dt, (j + 2 * m) * hd, qva, qvb, nc, mt, &a0, &b0);
            if (2 * m + 1 < n) qk_partial2(k, dt, (j + 2 * m + 1) * hd, qva, qvb, nc, mt, &a1, &b1);
            PA[m] = qk_tree_pair(a0, a1);
            PB[m] = qk_tree_pair(b0, b1);
        }
        __mmask16 st = (__mmask16)(n == 16 ? 0xffffu : (1u << n) - 1u);
        _mm512_mask_storeu_ps(sa + j, st, qk_tree_p(PA));
        _mm512_mask_storeu_ps(sb + j, st, qk_tree_p(PB));
    }
}

/* qk over a run of f32 or 16-bit (dt) keys; dt a constant where inlined */
static ALWAYS_INLINE void qk_any(const void *k, kiln_dtype dt, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    int nc = (hd + 15) / 16;
    if (nc > 16) {
        for (int j = 0; j < nk; j++) dot_rows(elem_at(k, dt, (size_t)j * hd), dt, q, (size_t)hd, G, hd, s + j, lds);
        return;
    }
    __mmask16 mt = (__mmask16)(hd % 16 ? (1u << (hd % 16)) - 1u : 0xffffu);
    int i = 0;
    for (; i + 2 <= G; i += 2) { /* two heads a pass: the keys read once for both */
        const float *qa = q + (size_t)i * hd, *qb = qa + hd;
        float *sa = s + (size_t)i * lds, *sb = sa + lds;
        switch (hd) {
        case 64: qk_query2(k, dt, nk, qa, qb, 64, 4, 0xffff, sa, sb); break;
        case 128: qk_query2(k, dt, nk, qa, qb, 128, 8, 0xffff, sa, sb); break;
        default: qk_query2(k, dt, nk, qa, qb, hd, nc, mt, sa, sb);
        }
    }
    for (; i < G; i++) {
        const float *qi = q + (size_t)i * hd;
        float *si = s + (size_t)i * lds;
        switch (hd) { /* constant nc: the chains unrolled, q in registers */
        case 64: qk_query(k, dt, nk, qi, 64, 4, 0xffff, si); break;
        case 128: qk_query(k, dt, nk, qi, 128, 8, 0xffff, si); break;
        default: qk_query(k, dt, nk, qi, hd, nc, mt, si);
        }
    }
}

/* Attention scores over a run of keys: s[i * lds + j] = k_j . q_i for j < nk, i < G: per score
 * qk_partial then qk_tree, at any head_dim up to 256 (a tiny model's 8 as well as 64 and 128);
 * larger ones: the f32 dot kernel per score (dot_internal.h's order). */
void kiln_cpu_attn_qk_avx512(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    qk_any(k, KILN_DT_F32, nk, q, G, hd, s, lds);
}
/* the same over f16 / bf16 keys, widened in registers: the bits of widening them first */
static void attn_qk16_avx512(const uint16_t *k, int bf16, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    if (bf16) qk_any(k, KILN_DT_BF16, nk, q, G, hd, s, lds);
    else qk_any(k, KILN_DT_F16, nk, q, G, hd, s, lds);
}

/* G <= 4 heads sharing a run of values, over one span of <= 64 lanes of the head (nr vectors):
 * o_i[d] = fma(p_i[j], v_j[d], o_i[d]) for j in order (o_i = o + i * ldo, p_i = p + i * ldp,
 * v_j = v + j * ldv). The G nr outputs stay in registers over the run: G nr independent fma
 * chains (pv is latency-bound) and each value row loaded once for all heads. Inlined with
 * constant G and nr, so everything is unrolled. */
static ALWAYS_INLINE void pv_span(float *o, size_t ldo, const float *p, size_t ldp, int G, const void *v, kiln_dtype dt,
                                  int ldv, int nv, int nr, __mmask16 mt) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < G; i++)
#pragma GCC unroll 4
        for (int c = 0; c < nr; c++) acc[i][c] = ld_chunk(o + (size_t)i * ldo, KILN_DT_F32, 0, c, nr, mt);
    for (int j = 0; j < nv; j++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int c = 0; c < nr; c++) {
            vv[c] = ld_chunk(v, dt, j * ldv, c, nr, mt);
            /* in a register: gcc would otherwise fold the load into each head's fma (G loads a
             * chunk instead of one: the loop then waits on loads, not on the fma ports) */
            __asm__("" : "+v"(vv[c]));
        }
#pragma GCC unroll 4
        for (int i = 0; i < G; i++) {
            __m512 a = _mm512_set1_ps(p[(size_t)i * ldp + j]);
#pragma GCC unroll 4
            for (int c = 0; c < nr; c++) acc[i][c] = _mm512_fmadd_ps(a, vv[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < G; i++)
#pragma GCC unroll 4
        for (int c = 0; c < nr; c++) {
            if (c + 1 < nr || mt == 0xffff) _mm512_storeu_ps(o + (size_t)i * ldo + 16 * c, acc[i][c]);
            else _mm512_mask_storeu_ps(o + (size_t)i * ldo + 16 * c, mt, acc[i][c]);
        }
}

#define PV_SPAN_G(G_)                                                                                              \
    switch (nr) {                                                                                                  \
    case 1: pv_span(o, ldo, p, ldp, G_, v, dt, ldv, nv, 1, mt); break;                                                 \
    case 2: pv_span(o, ldo, p, ldp, G_, v, dt, ldv, nv, 2, mt); break;                                                 \
    case 3: pv_span(o, ldo, p, ldp, G_, v, dt, ldv, nv, 3, mt); break;                                                 \
    default:                                                                                                       \
        if (mt == 0xffff) pv_span(o, ldo, p, ldp, G_, v, dt, ldv, nv, 4, 0xffff); /* whole: plain loads */          \
        else pv_span(o, ldo, p, ldp, G_, v, dt, ldv, nv, 4, mt);                                                       \
        break;                                                                                                     \
    }
/* pv_span with G and nr made constants */
static ALWAYS_INLINE void pv_span_any(float *o, size_t ldo, const float *p, size_t ldp, int G, const void *v, kiln_dtype dt,
                                      int ldv, int nv, int nr, __mmask16 mt) {
    switch (G) {
    case 1: PV_SPAN_G(1) break;
    case 2: PV_SPAN_G(2) break;
    case 3: PV_SPAN_G(3) break;
    default: PV_SPAN_G(4) break;
    }
}
#undef PV_SPAN_G

/* pvg over f32 or 16-bit (dt) values; dt a constant where inlined */
static ALWAYS_INLINE void pvg_any(float *o, size_t ldo, const float *p, size_t ldp, int G, const void *v, kiln_dtype dt,
                                  int nv, int hd) {
    if (hd == 64 && G <= 4) { /* the common shape without the loops (a run is only ~16 keys) */
        switch (G) {
        case 1: pv_span(o, ldo, p, ldp, 1, v, dt, 64, nv, 4, 0xffff); return;
        case 2: pv_span(o, ldo, p, ldp, 2, v, dt, 64, nv, 4, 0xffff); return;
        case 3: pv_span(o, ldo, p, ldp, 3, v, dt, 64, nv, 4, 0xffff); return;
        default: pv_span(o, ldo, p, ldp, 4, v, dt, 64, nv, 4, 0xffff); return;
        }
    }
    for (int i = 0; i < G; i += 4)
        for (int d = 0; d < hd; d += 64) {
            int nr = hd - d >= 64 ? 4 : (hd - d + 15) / 16;
            __mmask16 mt = (__mmask16)((hd - d) % 16 && hd - d < 64 ? (1u << ((hd - d) % 16)) - 1u : 0xffffu);
            pv_span_any(o + (size_t)i * ldo + d, ldo, p + (size_t)i * ldp, ldp, G - i < 4 ? G - i : 4, elem_at(v, dt, (size_t)d),
                        dt, hd, nv, nr, mt);
        }
}

/* G heads sharing a run of values, v rows contiguous [nv][hd]: per head the bits of nv
 * kiln_cpu_axpy_avx512 calls (one fma per element and key, keys in order), 4 heads and 64
 * lanes of the head at a time. */
void kiln_cpu_attn_pvg_avx512(float *o, size_t ldo, const float *p, size_t ldp, int G, const float *v, int nv,
                              int hd) {
    pvg_any(o, ldo, p, ldp, G, v, KILN_DT_F32, nv, hd);
}
/* the same over f16 / bf16 values, widened in registers: the bits of widening them first */
static void attn_pvg16_avx512(float *o, size_t ldo, const float *p, size_t ldp, int G, const uint16_t *v, int bf16,
                              int nv, int hd) {
    if (bf16) pvg_any(o, ldo, p, ldp, G, v, KILN_DT_BF16, nv, hd);
    else pvg_any(o, ldo, p, ldp, G, v, KILN_DT_F16, nv, hd);
}

/* one head: o[d] = fma(p[j], v_j[d], o[d]) for j = 0..nv-1 in order */
void kiln_cpu_attn_pv_avx512(float *o, const float *p, const float *v, int nv, int hd) {
    pvg_any(o, 0, p, 0, 1, v, KILN_DT_F32, nv, hd);
}

static void attn_widen_avx512(const uint16_t *src, float *dst, int n, int bf16) {
    kiln_dtype dt = bf16 ? KILN_DT_BF16 : KILN_DT_F16;
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load16(src, dt, i));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, load16_mask(src, dt, i, m));
    }
}

/* f16: vcvtps2ph, round to nearest even (the scalar's rounding, subnormals and overflow
 * included); bf16: the scalar conversion (a few integer operations) */
static void attn_narrow_avx512(const float *src, uint16_t *dst, int n, int bf16) {
    int i = 0;
    if (!bf16)
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = kiln_f32_to_half(src[i], bf16);
}

/* e^x for x <= 0 (lanes below -104 give 0): x = n ln2 + r, |r| <= ln2 / 2 (ln2 split in two
 * so n ln2 is exact), e^r by its degree-7 Taylor polynomial (truncation < 6e-9 relative),
 * times 2^n by vscalefps (which rounds a subnormal result once). About 1 ulp. */
static ALWAYS_INLINE __m512 exp_core(__m512 x) { /* x already clamped to [-104, 89] */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
static ALWAYS_INLINE __m512 exp_neg(__m512 x) {
    return exp_core(_mm512_max_ps(x, _mm512_set1_ps(-104.0f))); /* also maps -inf to e^-104 = 0 */
}

/* x[j] = softmax(scale * x)[j], j < n: scaled scores and their max, e^(s - max) (exp_neg),
 * their sum in 16 lanes (element j -> lane j % 16, masked zeros past n) folded by hsum, then
 * one multiply by 1 / sum. Fixed order for a given n. */
void kiln_cpu_attn_softmax_avx512(float *x, int n, float scale) {
    __m512 vs = _mm512_set1_ps(scale), mx = _mm512_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + j), vs);
        _mm512_storeu_ps(x + j, v);
        mx = _mm512_max_ps(mx, v);
    }
    __mmask16 tail = (__mmask16)((1u << (n - j)) - 1u);
    if (j < n) {
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + j), vs);
        _mm512_mask_storeu_ps(x + j, tail, v);
        mx = _mm512_mask_max_ps(mx, tail, mx, v);
    }
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(x + j), m));
        _mm512_storeu_ps(x + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (j < n) {
        __m512 e = _mm512_maskz_mov_ps(tail, exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + j), m)));
        _mm512_mask_storeu_ps(x + j, tail, e);
        sum = _mm512_add_ps(sum, e);
    }
    const __m512 z = _mm512_setzero_ps();
    __m512 inv = _mm512_set1_ps(1.0f / hsum(sum, z, z, z));
    for (j = 0; j + 16 <= n; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), inv));
    if (j < n) _mm512_mask_storeu_ps(x + j, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + j), inv));
}

/* out[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u (kiln_cpu_silu_mul's expression) for i < n,
 * 16 at a time, the tail by masked lanes (every element the same function, wherever it sits).
 * e^x: exp_neg's reduction and polynomial over x clamped to [-104, 89] (about 1 ulp; above 89
 * 2^n overflows to inf, as expf does past 88.7, and g / inf is -0). out may alias g. */
static ALWAYS_INLINE __m512 silu_mul16(__m512 g, __m512 u) {
    __m512 x = _mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), g), _mm512_set1_ps(89.0f));
    __m512 e = exp_core(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

void kiln_cpu_silu_mul_avx512(float *out, const float *g, const float *u, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, silu_mul16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, m, silu_mul16(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

/* The AVX-512 kernels (dot_internal.h); dot.c's kiln_cpu_kernels_for picks this table. */
const kiln_cpu_kernels kiln_cpu_kernels_avx512 = {
    .isa = KILN_ISA_AVX512,
    .dot = {[KILN_DT_F32] = dot_f32, [KILN_DT_F16] = dot_f16, [KILN_DT_BF16] = dot_bf16, [KILN_DT_F8_E4M3] = dot_f8},
    .quant_dot = kiln_quant_dot_avx512,
    .quant_dotw = kiln_quant_dotw_avx512,
    .quant_deq = kiln_quant_deq_avx512,
    .tile = kiln_quant_tile_avx512,
    .tile_phase = kiln_quant_tile_phase_avx512,
    .axpy = kiln_cpu_axpy_avx512,
    .attn = {kiln_cpu_attn_qk_avx512, kiln_cpu_attn_pv_avx512, kiln_cpu_attn_softmax_avx512, kiln_cpu_attn_pvg_avx512,
             attn_widen_avx512, attn_narrow_avx512, attn_qk16_avx512, attn_pvg16_avx512},
    .silu_mul = kiln_cpu_silu_mul_avx512,
};
