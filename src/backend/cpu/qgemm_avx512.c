/* qgemm_avx512.c: the W x A8 kernels (qgemm.h, qgemm_tile.inc) with AVX-512 VNNI: 16 output
 * columns per vector, vpdpbusd. Compiled with the AVX-512 flags plus -mavx512vnni; used only
 * where CPUID reports it. */
#include "backend/cpu/qgemm_zmm.h"
#define FN(name) name##_avx512
#define Q8_SIGNED 0
#define QG_KOUTER /* 32 registers: 8 weights, 8 sums, 8 accumulators */
#define DP(acc, u, s) _mm512_dpbusd_epi32(acc, u, s)
#define DPS(acc, u, s) DP(acc, u, s)
#define QG_PACKED /* weights packed once (kiln_qgemm_pack_fn), not transposed per call */
#define STOREI(p, v) _mm512_storeu_si512((void *)(p), v)
#define STORE_H16(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), _mm512_cvtepi32_epi16(v))
#define CVTPH_H16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_avx512(kiln_dtype dt) { return lookup_avx512(dt); }
int kiln_qgemm_avx512_packed(kiln_dtype dt, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn) {
    return lookup_packed_avx512(dt, pack, fn);
}

/* kiln_q8act_quantize with 16-lane vectors (2 a block): the AVX2 one's operations (qgemm_avx2.c),
 * the same bits as the C function. */
void kiln_q8act_quantize_avx512(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1) {
    const int nb = a->nb;
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512i hi = _mm512_set1_epi32(127), lo = _mm512_set1_epi32(-127);
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * ldx;
        int8_t *q = a->q + (size_t)r * a->n;
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + 32 * b;
            const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
            const __m512 m = _mm512_max_ps(_mm512_abs_ps(v1), _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps()));
            const float amax = _mm512_reduce_max_ps(m), d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
            const __m512 idv = _mm512_set1_ps(id);
            const __m512 t0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v0, idv), magic), magic);
            const __m512 t1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v1, idv), magic), magic);
            const __m512i c0 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(t0), hi), lo);
            const __m512i c1 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(t1), hi), lo);
            _mm_storeu_si128((__m128i *)(void *)(q + 32 * b), _mm512_cvtepi32_epi8(c0));
            _mm_storeu_si128((__m128i *)(void *)(q + 32 * b + 16), _mm512_cvtepi32_epi8(c1));
            const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(c0, c1));
            a->dx[(size_t)r * nb + b] = d;
            a->qsum[(size_t)r * nb + b] = sum;
            a->sdx[(size_t)r * nb + b] = d * (float)sum;
        }
    }
}
