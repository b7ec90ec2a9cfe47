/* qgemm_neon.c: the W x A8 kernels (qgemm.h, qgemm_tile.inc) with plain NEON (ARMv8-A, no
 * dot-product extension): 4 output columns per vector; a lane's 4-byte dot product is smull /
 * smull2 (s8 x s8 -> s16), addp (pairs: |w q| pair sums <= 2 x 128 x 127 < 32767) and sadalp
 * into the int32 lane: the same integers as sdot, so the same bits. Used where the CPU lacks
 * the extension (HWCAP_ASIMDDP). */
#include "backend/cpu/qgemm_neon.h"
#define FN(name) name##_neon
static inline int32x4_t kiln_qg_neon_dp(int32x4_t acc, int32x4_t w, int32x4_t x) {
    int8x16_t a = vreinterpretq_s8_s32(w), b = vreinterpretq_s8_s32(x);
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b)), hi = vmull_high_s8(a, b);
    return vpadalq_s16(acc, vpaddq_s16(lo, hi));
}
#define DP(acc, u, s) kiln_qg_neon_dp(acc, u, s)
#define DPS(acc, u, s) DP(acc, u, s)
/* 4 groups against one 16-byte activation load (the broadcast from the vector register) */
static inline int32x4_t kiln_qg_neon_rowdot4(int32x4_t is, const int32x4_t *w, const int8_t *q) {
    const int32x4_t x = vreinterpretq_s32_s8(vld1q_s8(q));
    is = kiln_qg_neon_dp(is, w[0], vdupq_laneq_s32(x, 0));
    is = kiln_qg_neon_dp(is, w[1], vdupq_laneq_s32(x, 1));
    is = kiln_qg_neon_dp(is, w[2], vdupq_laneq_s32(x, 2));
    return kiln_qg_neon_dp(is, w[3], vdupq_laneq_s32(x, 3));
}
#define ROWDOT4(is, w, q) kiln_qg_neon_rowdot4(is, w, q)
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_neon(kiln_dtype dt) { return lookup_neon(dt); }
