/* dummy_hash.h: the counter-based hash behind --load-format dummy (kiln_dummy_value in
 * model/dummy.c, and its device twin in backend/cuda/dummy_fill.cu, where nvcc compiles this as
 * host + device code). Integer arithmetic and one exact double product only, so host and device
 * give the same bits. */
#ifndef KILN_DUMMY_HASH_H
#define KILN_DUMMY_HASH_H
#include <stdint.h>
#include "util/hostdev.h"

static inline KILN_HD uint64_t kiln_mix64(uint64_t x) { /* splitmix64's finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* the key of tensor t (its index in the model) under seed */
static inline KILN_HD uint64_t kiln_dummy_key(uint64_t seed, int t) {
    return kiln_mix64(seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1)));
}

/* element i's uniform in [-1, 1): 24 bits of the hash, exact in double and in float */
static inline KILN_HD float kiln_dummy_u(uint64_t key, int64_t i) {
    uint64_t x = kiln_mix64(key + (uint64_t)i);
    return (float)((double)(x >> 40) * (1.0 / 8388608.0) - 1.0);
}

#endif
