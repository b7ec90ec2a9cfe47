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
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_avx2(kiln_dtype dt) { return lookup_avx2(dt); }
