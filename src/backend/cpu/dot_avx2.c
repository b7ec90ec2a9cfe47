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
 * at nr = 4; that moves data, never changes an operation). */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "backend/cpu/dot_internal.h"
#include "util/fp16.h"

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
        int m = n - i;
        memset(wt, 0, sizeof wt);
        memset(xt, 0, sizeof xt);
        if (dt == KILN_DT_F32) {
            memcpy(wt, (const float *)w + i, (size_t)m * 4);
        } else {
            const uint16_t *h = (const uint16_t *)w + i;
            for (int j = 0; j < m; j++) wt[j] = dt == KILN_DT_BF16 ? kiln_bf16_to_f32(h[j]) : kiln_f16_to_f32(h[j]);
        }
        KILN_UNROLL
        for (int r = 0; r < nr; r++) memcpy(xt[r], x + (size_t)r * ldx + i, (size_t)m * 4);
        step32(acc, wt, KILN_DT_F32, 0, &xt[0][0], 32, 0, nr);
    }
    KILN_UNROLL
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = hsum(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

static ALWAYS_INLINE void dot_rows(const void *w, kiln_dtype dt, const float *x, size_t ldx, int nr,
                                   int n, float *out, size_t ldo) {
    for (int r0 = 0; r0 < nr; r0 += KILN_DOT_MAX_NR) {
        const float *xr = x + (size_t)r0 * ldx;
        float *o = out + (size_t)r0 * ldo;
        switch (nr - r0 < KILN_DOT_MAX_NR ? nr - r0 : KILN_DOT_MAX_NR) {
        case 1: dot_body(w, dt, xr, ldx, 1, n, o, ldo); break;
        case 2: dot_body(w, dt, xr, ldx, 2, n, o, ldo); break;
        case 3: dot_body(w, dt, xr, ldx, 3, n, o, ldo); break;
        default: dot_body(w, dt, xr, ldx, 4, n, o, ldo); break;
        }
    }
}

static void dot_f32_avx2(const void *w, const float *x, size_t ldx, int nr, int n, float *out, size_t ldo) {
    dot_rows(w, KILN_DT_F32, x, ldx, nr, n, out, ldo);
}
static void dot_f16_avx2(const void *w, const float *x, size_t ldx, int nr, int n, float *out, size_t ldo) {
    dot_rows(w, KILN_DT_F16, x, ldx, nr, n, out, ldo);
}
static void dot_bf16_avx2(const void *w, const float *x, size_t ldx, int nr, int n, float *out, size_t ldo) {
    dot_rows(w, KILN_DT_BF16, x, ldx, nr, n, out, ldo);
}

kiln_dot_fn kiln_cpu_dot_avx2(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_F32: return dot_f32_avx2;
    case KILN_DT_F16: return dot_f16_avx2;
    case KILN_DT_BF16: return dot_bf16_avx2;
    default: return NULL;
    }
}

void kiln_cpu_axpy_avx2(float *restrict o, const float *restrict v, float a, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(v + i), _mm256_loadu_ps(o + i)));
    for (; i < n; i++) o[i] = fmaf(a, v[i], o[i]);
}

/* Attention over a run of keys / values (see kernels.h): the dot and axpy kernels above. */
void kiln_cpu_attn_qk_avx2(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    for (int j = 0; j < nk; j++) dot_f32_avx2(k + (size_t)j * hd, q, (size_t)hd, G, hd, s + j, lds);
}
void kiln_cpu_attn_pv_avx2(float *o, const float *p, const float *v, int nv, int hd) {
    for (int j = 0; j < nv; j++) kiln_cpu_axpy_avx2(o, v + (size_t)j * hd, p[j], hd);
}
