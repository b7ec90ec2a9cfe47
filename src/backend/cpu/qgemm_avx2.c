/* qgemm_avx2.c: the W x A8 kernels (qgemm.h) with AVX2: the int32 lanes from pmaddubsw (u8 x
 * s8 pairs to i16: |u| <= 31 or 128 for the Q8_0 sign trick, |q| <= 127, so a pair sum stays
 * below 32767, no saturation) then pmaddwd by ones. Compiled with -mavx2 -mfma -mf16c. */
#define FN(name) name##_avx2
#define DOT_U8S8(u, q) _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1))
#include "backend/cpu/qgemm_ymm.inc"

kiln_qgemm_fn kiln_qgemm_avx2(kiln_dtype dt) { return lookup_avx2(dt); }
