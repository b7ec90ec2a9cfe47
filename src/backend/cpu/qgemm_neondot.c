/* qgemm_neondot.c: the W x A8 kernels (qgemm.h, qgemm_tile.inc) with NEON's dot-product
 * extension (sdot, ARMv8.2-A dotprod; ARMv8.4-A and later, Apple M, Graviton 2+, Ampere):
 * 4 output columns per vector, one sdot per 4-byte group. Compiled with
 * -march=armv8.2-a+dotprod; used only where HWCAP_ASIMDDP says the CPU has it. */
#include "backend/cpu/qgemm_neon.h"
#define FN(name) name##_neondot
#define DP(acc, u, s) vdotq_s32(acc, vreinterpretq_s8_s32(u), vreinterpretq_s8_s32(s))
#define DPS(acc, u, s) DP(acc, u, s)
/* 4 groups: sdot by element (the activation word taken from the vector register, no dup) */
static inline int32x4_t kiln_qg_rowdot4(int32x4_t is, const int32x4_t *w, const int8_t *q) {
    const int8x16_t x = vld1q_s8(q);
    is = vdotq_laneq_s32(is, vreinterpretq_s8_s32(w[0]), x, 0);
    is = vdotq_laneq_s32(is, vreinterpretq_s8_s32(w[1]), x, 1);
    is = vdotq_laneq_s32(is, vreinterpretq_s8_s32(w[2]), x, 2);
    return vdotq_laneq_s32(is, vreinterpretq_s8_s32(w[3]), x, 3);
}
#define ROWDOT4(is, w, q) kiln_qg_rowdot4(is, w, q)
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_neondot(kiln_dtype dt) { return lookup_neondot(dt); }
