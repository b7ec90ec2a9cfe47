/* dot_avx2.c: AVX2 + FMA + F16C dot-product kernels (compiled with -mavx2 -mfma -mf16c).
 *
 * One weight row W[n] against nr <= 4 f32 rows. Per row: 4 accumulators of 8 lanes (32
 * partial sums, element i -> acc[(i / 8) % 4] lane i % 8) updated with FMA; weights are
 * converted in registers (bf16: zero-extend to 32 bits and shift into the high half; f16:
 * vcvtph2ps), each converted vector is used for all nr rows, so the row is read once.
 * The tail (n % 32 elements) is converted exactly into a zero-padded 32-float buffer (the x
 * rows too) and run as one more step: 0 * 0 added to a partial sum changes nothing.
 * Reduction: (a0 + a1) + (a2 + a3), high 128 + low 128, then a fixed shuffle tree.
 * The arithmetic of a row is the same whatever nr is (the compiler may spill accumulators
 * at nr = 4; that moves data, never changes an operation).
 * Also the AVX2 attention kernels (kernels.h): qk by 8-key trees, pv, a vector-exp softmax. */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "backend/cpu/dot_internal.h"
#include "util/fp16.h"
#include "util/fp8.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* full unrolling keeps the accumulator arrays in registers (-O2 alone leaves them on the stack) */
#define KILN_UNROLL _Pragma("GCC unroll 16")

static ALWAYS_INLINE __m256 load8(const void *w, kiln_dtype dt, int i) {
    switch (dt) {
    case KILN_DT_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case KILN_DT_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    case KILN_DT_F8_E4M3: { /* e4m3 -> the f16 with the same bits moved (exact) -> f32, x 2^8 */
        __m128i v = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)((const uint8_t *)w + i)));
        __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0x7f)), 7),
                                 _mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0x80)), 8));
        return _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
    }
    default: return _mm256_loadu_ps((const float *)w + i);
    }
}

static ALWAYS_INLINE float hsum(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

static ALWAYS_INLINE void step32(__m256 acc[][4], const void *w, kiln_dtype dt, int wi,
                                 const float *x, size_t ldx, int xi, const int nr) {
    KILN_UNROLL
    for (int k = 0; k < 4; k++) {
        __m256 wk = load8(w, dt, wi + 8 * k);
        KILN_UNROLL
        for (int r = 0; r < nr; r++)
            acc[r][k] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(x + (size_t)r * ldx + xi + 8 * k), acc[r][k]);
    }
}

static ALWAYS_INLINE void dot_body(const void *w, kiln_dtype dt, const float *x, size_t ldx,
                                   const int nr, int n, float *out, size_t ldo) {
    __m256 acc[KILN_DOT_MAX_NR][4];
    KILN_UNROLL
    for (int r = 0; r < nr; r++)
        KILN_UNROLL
        for (int k = 0; k < 4; k++) acc[r][k] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) step32(acc, w, dt, i, x, ldx, i, nr);
    if (i < n) {
        float wt[32], xt[KILN_DOT_MAX_NR][32];
        kiln_dot_tail_stage(w, dt, i, n - i, x, ldx, nr, wt, &xt[0][0], 32);
        step32(acc, wt, KILN_DT_F32, 0, &xt[0][0], 32, 0, nr);
    }
    KILN_UNROLL
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = hsum(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

#include "backend/cpu/dot_rows.inc"


void kiln_cpu_axpy_avx2(float *restrict o, const float *restrict v, float a, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(v + i), _mm256_loadu_ps(o + i)));
    for (; i < n; i++) o[i] = fmaf(a, v[i], o[i]);
}

/* The 8 keys' scores of a block from S[u] (key u's 8 partial sums): lane u of the result is the
 * halving tree l + l+4, l + l+2, l + l+1 on key u's own lanes only. Each level: in every
 * 2h-lane segment, V[l] + V[l + h] then W[l - h] + W[l] (the same pairs; add is commutative). */
static ALWAYS_INLINE __m256 qk_tree8(const __m256 S[8]) {
    __m256 P[4], R[2];
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) /* [V_lo W_hi] + [V_hi W_lo] */
        P[m] = _mm256_add_ps(_mm256_blend_ps(S[2 * m], S[2 * m + 1], 0xf0),
                             _mm256_permute2f128_ps(S[2 * m], S[2 * m + 1], 0x21));
#pragma GCC unroll 2
    for (int m = 0; m < 2; m++) /* per 128: [V0 V1 W2 W3] + [V2 V3 W0 W1] */
        R[m] = _mm256_add_ps(_mm256_blend_ps(P[2 * m], P[2 * m + 1], 0xcc),
                             _mm256_shuffle_ps(P[2 * m], P[2 * m + 1], _MM_SHUFFLE(1, 0, 3, 2)));
    /* per 128: [V0 V2 W1 W3] + [V1 V3 W0 W2]; then lane u of the result takes key u */
    __m256 F = _mm256_add_ps(_mm256_shuffle_ps(R[0], R[1], _MM_SHUFFLE(3, 1, 2, 0)),
                             _mm256_shuffle_ps(R[0], R[1], _MM_SHUFFLE(2, 0, 3, 1)));
    return _mm256_permutevar8x32_ps(F, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The lanes of a head's last 8-float chunk that lie inside it (m lanes, 1..8) */
static ALWAYS_INLINE __m256i tail_mask8(int m) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
/* chunk c of nc of a head row: the last one masked (lanes past the head read as 0) unless it
 * is whole (full: a masked load costs 2 uops or more) */
static ALWAYS_INLINE __m256 ld_chunk(const float *x, int c, int nc, int full, __m256i mt) {
    return c + 1 < nc || full ? _mm256_loadu_ps(x + 8 * c) : _mm256_maskload_ps(x + 8 * c, mt);
}

/* chunk c of a key / value row at element off of k: f32 as ld_chunk, or (dt f16 / bf16, only
 * with whole chunks: hd % 8 == 0) 8 halves widened in registers (exact: the same bits) */
static ALWAYS_INLINE __m256 ld_chunk_dt(const void *k, kiln_dtype dt, int off, int c, int nc, int full, __m256i mt) {
    if (dt == KILN_DT_F32) return ld_chunk((const float *)k + off, c, nc, full, mt);
    return load8(k, dt, off + 8 * c);
}
/* key u's 8 partial sums against one query (qv: its nc vectors): lane l is the fma chain over
 * k[8c + l] q[8c + l], c = 0..nc-1 in order (the first a multiply) */
static ALWAYS_INLINE __m256 qk_partial8(const void *k, kiln_dtype dt, int off, const __m256 *qv, int nc, int full,
                                        __m256i mt) {
    __m256 a = _mm256_mul_ps(ld_chunk_dt(k, dt, off, 0, nc, full, mt), qv[0]);
#pragma GCC unroll 32
    for (int c = 1; c < nc; c++) a = _mm256_fmadd_ps(ld_chunk_dt(k, dt, off, c, nc, full, mt), qv[c], a);
    return a;
}

/* One query's scores over a run of keys: qk_partial8 then qk_tree8, 8 keys per tree (a tail
 * runs the same tree with zero vectors: a score's bits do not depend on its run); nc <= 32. */
static ALWAYS_INLINE void qk_query8(const void *k, kiln_dtype dt, int nk, const float *qi, int hd, int nc, int full,
                                    __m256i mt, float *si) {
    __m256 qv[32];
#pragma GCC unroll 32
    for (int c = 0; c < nc; c++) qv[c] = ld_chunk(qi, c, nc, full, mt);
    int j = 0;
    for (; j + 8 <= nk; j += 8) {
        __m256 S[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) S[u] = qk_partial8(k, dt, (j + u) * hd, qv, nc, full, mt);
        _mm256_storeu_ps(si + j, qk_tree8(S));
    }
    if (j < nk) {
        __m256 S[8];
        float t[8];
        for (int u = 0; u < 8; u++) S[u] = j + u < nk ? qk_partial8(k, dt, (j + u) * hd, qv, nc, full, mt) : _mm256_setzero_ps();
        _mm256_storeu_ps(t, qk_tree8(S));
        memcpy(si + j, t, sizeof(float) * (size_t)(nk - j));
    }
}

/* Attention over a run of keys / values (see kernels.h). qk at any head_dim up to 256 by
 * qk_query8 (a tiny model's 8 as well as 64 and 128); larger: the dot kernel per score. */
void kiln_cpu_attn_qk_avx2(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    int nc = (hd + 7) / 8;
    if (nc > 32) {
        for (int j = 0; j < nk; j++) dot_f32(k + (size_t)j * hd, q, (size_t)hd, G, hd, s + j, lds);
        return;
    }
    __m256i mt = tail_mask8(hd - 8 * (nc - 1));
    for (int i = 0; i < G; i++) {
        const float *qi = q + (size_t)i * hd;
        float *si = s + (size_t)i * lds;
        switch (hd) { /* constant nc: the chains unrolled, q in registers */
        case 64: qk_query8(k, KILN_DT_F32, nk, qi, 64, 8, 1, mt, si); break;
        case 128: qk_query8(k, KILN_DT_F32, nk, qi, 128, 16, 1, mt, si); break;
        default: qk_query8(k, KILN_DT_F32, nk, qi, hd, nc, hd % 8 == 0, mt, si);
        }
    }
}
/* pv's whole 64-lane spans of the head (8 registers, plain loads, unrolled) over f32 or 16-bit
 * (dt) values widened in registers: o[d] = fma(p[j], v_j[d], o[d]) for j in order. Returns
 * where the spans stop (the last < 64 lanes are the caller's). */
static ALWAYS_INLINE int pv_whole_spans(float *o, const float *p, const void *v, kiln_dtype dt, int nv, int hd) {
    int d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m256 acc[8];
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) acc[c] = _mm256_loadu_ps(o + d + 8 * c);
        for (int j = 0; j < nv; j++) {
            __m256 a = _mm256_set1_ps(p[j]);
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) acc[c] = _mm256_fmadd_ps(a, load8(v, dt, j * hd + d + 8 * c), acc[c]);
        }
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) _mm256_storeu_ps(o + d + 8 * c, acc[c]);
    }
    return d;
}

/* pv: o[d] = fma(p[j], v_j[d], o[d]) for j in order (the bits of nv kiln_cpu_axpy_avx2 calls);
 * o stays in registers over the run, 64 lanes (8 vectors) at a time, the last one masked. */
void kiln_cpu_attn_pv_avx2(float *o, const float *p, const float *v, int nv, int hd) {
    int d = pv_whole_spans(o, p, v, KILN_DT_F32, nv, hd);
    if (d < hd) { /* the last < 64 lanes: nr vectors, the last one masked unless whole */
        int nr = (hd - d + 7) / 8, full = (hd - d) % 8 == 0;
        __m256i mt = tail_mask8(hd - d - 8 * (nr - 1));
        __m256 acc[8];
        for (int c = 0; c < nr; c++) acc[c] = ld_chunk(o + d, c, nr, full, mt);
        for (int j = 0; j < nv; j++) {
            __m256 a = _mm256_set1_ps(p[j]);
            for (int c = 0; c < nr; c++) acc[c] = _mm256_fmadd_ps(a, ld_chunk(v + (size_t)j * hd + d, c, nr, full, mt), acc[c]);
        }
        for (int c = 0; c < nr; c++) {
            if (c + 1 < nr || full) _mm256_storeu_ps(o + d + 8 * c, acc[c]);
            else _mm256_maskstore_ps(o + d + 8 * c, mt, acc[c]);
        }
    }
}

static void attn_widen_avx2(const uint16_t *src, float *dst, int n, int bf16) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src, bf16 ? KILN_DT_BF16 : KILN_DT_F16, i));
    for (; i < n; i++) dst[i] = kiln_half_to_f32(src[i], bf16);
}

/* f16: vcvtps2ph, round to nearest even (the scalar's rounding, subnormals and overflow
 * included); bf16: the scalar conversion (a few integer operations) */
static void attn_narrow_avx2(const float *src, uint16_t *dst, int n, int bf16) {
    int i = 0;
    if (!bf16)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = kiln_f32_to_half(src[i], bf16);
}

/* qk over f16 / bf16 keys (kernels.h qk16): at head sizes of whole 8-lane chunks the keys are
 * widened in registers (qk_query8's arithmetic: the bits of widening first); other sizes widen
 * one key at a time into a buffer and run the f32 kernel on it (a score's bits do not depend on
 * its run). */
static void attn_qk16_avx2(const uint16_t *k, int bf16, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    if (hd % 8) { /* (hd <= 256: kernels.h) */
        float kf[256];
        for (int j = 0; j < nk; j++) {
            attn_widen_avx2(k + (size_t)j * hd, kf, hd, bf16);
            kiln_cpu_attn_qk_avx2(kf, 1, q, G, hd, s + j, lds);
        }
        return;
    }
    __m256i mt = tail_mask8(8);
    for (int i = 0; i < G; i++) {
        const float *qi = q + (size_t)i * hd;
        float *si = s + (size_t)i * lds;
        if (!bf16) {
            if (hd == 64) qk_query8(k, KILN_DT_F16, nk, qi, 64, 8, 1, mt, si);
            else qk_query8(k, KILN_DT_F16, nk, qi, hd, hd / 8, 1, mt, si);
        } else {
            if (hd == 64) qk_query8(k, KILN_DT_BF16, nk, qi, 64, 8, 1, mt, si);
            else qk_query8(k, KILN_DT_BF16, nk, qi, hd, hd / 8, 1, mt, si);
        }
    }
}

/* pv over f16 / bf16 values for one head: kiln_cpu_attn_pv_avx2's arithmetic with the values
 * widened in registers (whole 64-lane spans), the rest one value row at a time through a
 * buffer (pv's bits do not depend on how the run is cut) */
static ALWAYS_INLINE void pv16_head(float *o, const float *p, const uint16_t *v, kiln_dtype dt, int nv, int hd) {
    int d = pv_whole_spans(o, p, v, dt, nv, hd);
    if (d < hd) {
        float vf[64];
        for (int j = 0; j < nv; j++) {
            attn_widen_avx2(v + (size_t)j * hd + d, vf, hd - d, dt == KILN_DT_BF16);
            kiln_cpu_attn_pv_avx2(o + d, p + j, vf, 1, hd - d);
        }
    }
}
static void attn_pvg16_avx2(float *o, size_t ldo, const float *p, size_t ldp, int G, const uint16_t *v, int bf16, int nv,
                            int hd) {
    for (int i = 0; i < G; i++) {
        if (bf16) pv16_head(o + (size_t)i * ldo, p + (size_t)i * ldp, v, KILN_DT_BF16, nv, hd);
        else pv16_head(o + (size_t)i * ldo, p + (size_t)i * ldp, v, KILN_DT_F16, nv, hd);
    }
}

/* e^x for x <= 0: x = n ln2 + r (ln2 in two parts), e^r by the degree-7 Taylor polynomial,
 * times 2^n built in the exponent field; x < -87 (n < -126 would be subnormal) gives 0, which
 * is below 2e-38 of the result (softmax: the max's term is 1). About 1 ulp. */
static ALWAYS_INLINE __m256 exp_neg8(__m256 x) {
    __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ); /* also drops -inf, NaN */
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

/* x[j] = softmax(scale * x)[j], j < n: scaled scores and their max, e^(s - max) (exp_neg8),
 * their sum in 8 lanes (element j -> lane j % 8; the tail padded with e^-inf = 0) folded by
 * hsum, then one multiply by 1 / sum. Fixed order for a given n. */
void kiln_cpu_attn_softmax_avx2(float *x, int n, float scale) {
    __m256 vs = _mm256_set1_ps(scale), vmx = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) { /* max is exact: any order gives the same value */
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), vs);
        _mm256_storeu_ps(x + j, v);
        vmx = _mm256_max_ps(vmx, v);
    }
    float mx = -INFINITY, lanes[8];
    for (; j < n; j++) {
        x[j] *= scale;
        if (x[j] > mx) mx = x[j];
    }
    _mm256_storeu_ps(lanes, vmx);
    for (int u = 0; u < 8; u++) mx = lanes[u] > mx ? lanes[u] : mx;
    __m256 m = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
    j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(x + j), m));
        _mm256_storeu_ps(x + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (j < n) {
        float t[8];
        for (int u = 0; u < 8; u++) t[u] = j + u < n ? x[j + u] : -INFINITY;
        __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(t), m));
        _mm256_storeu_ps(t, e);
        memcpy(x + j, t, sizeof(float) * (size_t)(n - j));
        sum = _mm256_add_ps(sum, e);
    }
    const __m256 z = _mm256_setzero_ps();
    float inv = 1.0f / hsum(sum, z, z, z);
    __m256 vinv = _mm256_set1_ps(inv);
    for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), vinv));
    for (; j < n; j++) x[j] *= inv;
}

/* The AVX2 kernels (dot_internal.h); dot.c's kiln_cpu_kernels_for picks this table. */
const kiln_cpu_kernels kiln_cpu_kernels_avx2 = {
    .isa = KILN_ISA_AVX2,
    .dot = {[KILN_DT_F32] = dot_f32, [KILN_DT_F16] = dot_f16, [KILN_DT_BF16] = dot_bf16, [KILN_DT_F8_E4M3] = dot_f8},
    .quant_dot = kiln_quant_dot_avx2,
    .quant_dotw = kiln_quant_dotw_avx2,
    .axpy = kiln_cpu_axpy_avx2,
    .attn = {kiln_cpu_attn_qk_avx2, kiln_cpu_attn_pv_avx2, kiln_cpu_attn_softmax_avx2, NULL, attn_widen_avx2, attn_narrow_avx2,
             attn_qk16_avx2, attn_pvg16_avx2},
    /* no quant prefill pair, no vector SwiGLU: NULL (the scalar expression) */
};
