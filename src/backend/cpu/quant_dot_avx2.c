/* quant_dot_avx2.c: AVX2 + FMA quantized dot kernels (8 f32 lanes); the kernels themselves are
 * in quant_dot_simd.inc, shared with the AVX-512 file. Compiled with -mavx2 -mfma -mf16c. */
#include <immintrin.h>
#include "backend/cpu/quant_impl.h"

typedef __m256 VF;
typedef __m256i VI;
#define L 8
#define FN(name) name##_avx2
#define VZERO() _mm256_setzero_ps()
#define VSET1(f) _mm256_set1_ps(f)
#define VLOAD(p) _mm256_loadu_ps(p)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VFMSUB(a, b, c) _mm256_fmsub_ps(a, b, c)
#define VCVT(i) _mm256_cvtepi32_ps(i)
#define ILOAD_U8(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p)))
#define ILOAD_I8(p) _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p)))
#define ISET1(k) _mm256_set1_epi32(k)
#define IAND(a, b) _mm256_and_si256(a, b)
#define IOR(a, b) _mm256_or_si256(a, b)
#define ISUB(a, b) _mm256_sub_epi32(a, b)
#define ISRLI(a, k) _mm256_srli_epi32(a, k)
#define ISLLI(a, k) _mm256_slli_epi32(a, k)
#define ISRLV(a, b) _mm256_srlv_epi32(a, b)
#define IIOTA() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
/* d = {d x 8}, m = {m x 8} from a block's two leading f16 (Q4_1 / Q5_1): one 4-byte load, one
 * conversion (lanes d, m, 0, 0), then each spread: 5 uops against 10 for two f16 loads,
 * conversions and broadcasts; the same f32 values */
#define VDM_SPLAT(b, d, m)                                                                    \
    do {                                                                                      \
        const __m128 dm_ = _mm_cvtph_ps(_mm_loadu_si32(b));                                   \
        (d) = _mm256_broadcastss_ps(dm_);                                                     \
        (m) = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(dm_), _mm256_set1_epi32(1));    \
    } while (0)
#define IBITS(v, s, mask) _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_set1_epi32(s)), _mm256_set1_epi32(mask))

/* horizontal sum in a fixed order: (lo128 + hi128), then pairs */
static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define VREDUCE(v) hsum_avx2(v)

#include "backend/cpu/quant_dot_simd.inc"

kiln_dot_fn kiln_quant_dot_avx2(kiln_dtype dt) { return lookup_avx2(dt); }
kiln_dotw_fn kiln_quant_dotw_avx2(kiln_dtype dt) { return lookup_w_avx2(dt); }
