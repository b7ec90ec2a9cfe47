/* philox.h: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
 * one definition for the engine's sampler (engine/sampler.c) and the CUDA sampler
 * (backend/cuda/sample.cu, where nvcc compiles it as host + device code), so both draw the same
 * bits for (seed, position). Integer arithmetic only. */
#ifndef KILN_PHILOX_H
#define KILN_PHILOX_H
#include <stdint.h>
#include "util/hostdev.h"

/* Philox4x32-10 of (counter, key): the 64-bit counter fills words 0-1 (words 2-3 are 0). */
static inline KILN_HD void kiln_philox4x32(uint64_t counter, uint64_t key, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* the 53 bits behind the uniform of (seed, position): u = bits * 2^-53 in [0, 1) */
static inline KILN_HD uint64_t kiln_philox_bits53(uint64_t seed, uint64_t position) {
    uint32_t r[4];
    kiln_philox4x32(position, seed, r);
    return (((uint64_t)r[0] << 21) ^ (uint64_t)r[1]) & ((1ull << 53) - 1);
}

#endif
