/* qgemm_neondot.c: the W x A8 kernels (qgemm.h, qgemm_tile.inc) with NEON's dot-product
 * extension (sdot, ARMv8.2-A dotprod; ARMv8.4-A and later, Apple M, Graviton 2+, Ampere):
 * 4 output columns per vector, one sdot per 4-byte group. Compiled with
 * -march=armv8.2-a+dotprod; used only where HWCAP_ASIMDDP says the CPU has it. */
#include "backend/cpu/qgemm_neon.h"
#define FN(name) name##_neondot
#define DP(acc, u, s) vdotq_s32(acc, vreinterpretq_s8_s32(u), vreinterpretq_s8_s32(s))
#define DPS(acc, u, s) DP(acc, u, s)
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_neondot(kiln_dtype dt) { return lookup_neondot(dt); }
