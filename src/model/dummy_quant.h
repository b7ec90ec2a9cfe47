/* dummy_quant.h: the bytes of quantized dummy weights (--load-format dummy --dummy-quant T).
 *
 * A quantized dummy tensor is a pure function of (key, byte index): every byte is uniform
 * random, kiln_mix64(key + byte_index) >> 56, except the f16 scale fields of each block, which
 * get fixed values so that the dequantized weights have the dense dummy's magnitude (standard
 * deviation within a factor sqrt(2) of 1/sqrt(3 cols), the std of u / sqrt(cols), u uniform in
 * [-1, 1)) and a zero mean:
 *   d = 2^-e, e the integer for which 4^e is nearest (in log scale) to 3 cols S^2, S the
 *   standard deviation of the block's integer factor for d (all quant bytes uniform):
 *     Q8_0 d*q, q in [-128, 127]: S^2 = 5461          Q4_0 / Q4_1 d*(q-8):  21
 *     Q5_0 / Q5_1 d*(q-16): 85                         Q4_K d*sc*q - dmin*mn: 66727
 *     Q5_K: 277659                                     Q6_K d*sc*(q-32), sc int8: 1868689
 *   Q4_1 / Q5_1: m = -8d / -16d (the nibble's mean is then -d/2);
 *   Q4_K / Q5_K: dmin = 7.5 d / 15.5 d (E[sc q] = E[(dmin/d) mn] with sc, mn uniform 6-bit).
 * Positions: Q8_0, Q4_0, Q5_0: d at bytes 0-1; Q4_1, Q5_1: d at 0, m at 2; Q4_K, Q5_K: d at 0,
 * dmin at 2; Q6_K: d at 208. Integer operations only, so host C and CUDA device code (KILN_HD)
 * give the same bits. A byte index is into the whole tensor (rows are whole blocks, so blocks
 * never straddle rows); cols (the row length) only sets the scale.
 */
#ifndef KILN_MODEL_DUMMY_QUANT_H
#define KILN_MODEL_DUMMY_QUANT_H
#include <stdint.h>
#include "format/dtype.h"
#include "util/dummy_hash.h"
#include "util/hostdev.h"

/* f16 bits of m * 2^-e (m < 2048, e >= 0), exact where f16 can hold it (subnormals truncate) */
static inline KILN_HD uint16_t kiln_dummy_f16(uint32_t m, int e) {
    if (m == 0) return 0;
    int p = 0;
    while ((m >> (p + 1)) != 0) p++; /* floor(log2 m) */
    int E = p - e + 15;
    if (E >= 31) return 0x7bff;
    if (E >= 1) return (uint16_t)((uint32_t)E << 10 | ((m << (10 - p)) & 0x3ff));
    int sh = 24 - e; /* value / 2^-24 = m * 2^(24 - e) */
    if (sh >= 0) return (uint16_t)(m << sh);
    return -sh >= 32 ? 0 : (uint16_t)(m >> -sh);
}

/* the exponent e of d = 2^-e for a block type and row length (see above) */
static inline KILN_HD int kiln_dummy_qexp(kiln_dtype dt, int64_t cols) {
    uint64_t s2;
    switch (dt) {
    case KILN_DT_Q8_0: s2 = 5461; break;
    case KILN_DT_Q4_0: case KILN_DT_Q4_1: s2 = 21; break;
    case KILN_DT_Q5_0: case KILN_DT_Q5_1: s2 = 85; break;
    case KILN_DT_Q4_K: s2 = 66727; break;
    case KILN_DT_Q5_K: s2 = 277659; break;
    default: s2 = 1868689; break; /* Q6_K */
    }
    uint64_t v = 3 * (uint64_t)(cols > 0 ? cols : 1) * s2;
    int e = 0;
    while (e < 31 && (1ULL << (2 * e + 1)) < v) e++; /* smallest e with 2 * 4^e >= v */
    return e;
}

static inline KILN_HD uint8_t kiln_dummy_qbyte(uint64_t key, kiln_dtype dt, int64_t byte_index, int64_t cols) {
    int bb, d_off = 0, m_off = -1;
    switch (dt) {
    case KILN_DT_Q8_0: bb = 34; break;
    case KILN_DT_Q4_0: bb = 18; break;
    case KILN_DT_Q4_1: bb = 20; m_off = 2; break;
    case KILN_DT_Q5_0: bb = 22; break;
    case KILN_DT_Q5_1: bb = 24; m_off = 2; break;
    case KILN_DT_Q4_K: bb = 144; m_off = 2; break;
    case KILN_DT_Q5_K: bb = 176; m_off = 2; break;
    case KILN_DT_Q6_K: bb = 210; d_off = 208; break;
    default: return (uint8_t)(kiln_mix64(key + (uint64_t)byte_index) >> 56);
    }
    int o = (int)(byte_index % bb);
    if (o == d_off || o == d_off + 1 || (m_off >= 0 && (o == m_off || o == m_off + 1))) {
        int e = kiln_dummy_qexp(dt, cols);
        uint16_t h;
        if (o == d_off || o == d_off + 1) h = kiln_dummy_f16(1, e);
        else if (dt == KILN_DT_Q4_1) h = (uint16_t)(0x8000 | kiln_dummy_f16(8, e));
        else if (dt == KILN_DT_Q5_1) h = (uint16_t)(0x8000 | kiln_dummy_f16(16, e));
        else if (dt == KILN_DT_Q4_K) h = kiln_dummy_f16(15, e + 1); /* 7.5 d */
        else h = kiln_dummy_f16(31, e + 1);                        /* Q5_K: 15.5 d */
        int lo = o == d_off || (m_off >= 0 && o == m_off);
        return (uint8_t)(lo ? h & 0xff : h >> 8);
    }
    return (uint8_t)(kiln_mix64(key + (uint64_t)byte_index) >> 56);
}

#endif
