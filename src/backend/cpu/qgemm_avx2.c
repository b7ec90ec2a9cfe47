/* qgemm_avx2.c: the W x A8 kernels (qgemm.h, qgemm_tile.inc) with AVX2: 8 output columns per
 * vector, the int32 lanes from pmaddubsw (u8 x s8 pairs to i16) then pmaddwd by ones. No pair
 * sum saturates: nibbles <= 31, and Q8_0 runs as |w| (<= 128) times q with w's sign (|q| <=
 * 127), 2 x 128 x 127 < 32767; the lanes hold the same integers as the VNNI kernels', so the
 * same bits. Compiled with -mavx2 -mfma -mf16c. */
#include "backend/cpu/qgemm_ymm.h"
#define FN(name) name##_avx2
#define Q8_SIGNED 1
#define DP(acc, u, s) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#define DPS(acc, w, s) DP(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(s, w))
#define QG_PACKED /* weights packed once (kiln_qgemm_pack_fn), not transposed per call */
#define PK_ONCE_ROWS 4 /* 16 registers: more rows' tiles spill the 8 weight vectors */
#define STOREI(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define STORE_H16(p, v) _mm_storeu_si128((__m128i *)(void *)(p), kiln_qg_lo16(v))
#define CVTPH_H16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_avx2(kiln_dtype dt) { return lookup_avx2(dt); }
int kiln_qgemm_avx2_packed(kiln_dtype dt, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn) {
    return lookup_packed_avx2(dt, pack, fn);
}

/* kiln_q8act_quantize with 8-lane vectors (4 a block): the same operations element by element
 * (|x| max, x * (127 / amax) + 1.5 * 2^23 - 1.5 * 2^23 in two roundings, truncation of the
 * integral value, the clamp), so the same q, dx, qsum and sdx bits (test_cpu_qgemm). NaNs are
 * skipped by the max as the C loop skips them (maxps returns its second operand). */
void kiln_q8act_quantize_avx2(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1) {
    const int nb = a->nb;
    const __m256 magic = _mm256_set1_ps(12582912.0f), absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-127), perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * ldx;
        int8_t *q = a->q + (size_t)r * a->n;
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + 32 * b;
            __m256 v[4], m = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                v[k] = _mm256_loadu_ps(xb + 8 * k);
                m = _mm256_max_ps(_mm256_and_ps(v[k], absm), m);
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float amax = _mm_cvtss_f32(m4), d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
            const __m256 idv = _mm256_set1_ps(id);
            __m256i c[4], s = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                __m256 t = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v[k], idv), magic), magic);
                c[k] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvttps_epi32(t), hi), lo);
                s = _mm256_add_epi32(s, c[k]);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
            _mm256_storeu_si256((__m256i *)(void *)(q + 32 * b), _mm256_permutevar8x32_epi32(p, perm));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            const int sum = _mm_cvtsi128_si32(s4);
            a->dx[(size_t)r * nb + b] = d;
            a->qsum[(size_t)r * nb + b] = sum;
            a->sdx[(size_t)r * nb + b] = d * (float)sum;
        }
    }
}
