/* qgemm_amx.c: the W x A8 kernels (qgemm.h) with AMX-INT8 tiles for blocks of 16 activation
 * rows, the AVX-512 VNNI kernel (qgemm_tile.inc) for the rows left over. Compiled with the
 * AVX-512 VNNI flags plus -mamx-tile -mamx-int8; used only where CPUID reports AMX-INT8 and
 * the kernel grants the process the tile state (kiln_cpu_has_amx).
 *
 * Why: the VNNI kernel issues one vpdpbusd per 4 activation bytes of a row, with one broadcast
 * load each; on the 2-core Sapphire Rapids VM it ran at ~0.8 vpdpbusd a cycle (2 is the peak),
 * 170-188 GMAC/s a core at 512 rows. A tile product does 16 rows x 16 columns x 32 bytes in one
 * instruction, so what is left is the per-block scaling that qgemm.h prescribes (exact int32
 * block sums, then f32 fmas in block order), the same lane-wise operations as the VNNI kernel
 * and therefore the same bits. Measured there (1536 x 576, Q4_1, one thread): 250-300 GMAC/s
 * at 64-512 rows, ~100 cycles a block: the tile operations alone take ~58 (the block scale
 * of 32 elements halves what a 16 x 16 x 64 product could do, and C goes through memory: no
 * tile-to-register move before AMX-AVX512), and the scaling's ~50 vector operations do not
 * overlap them; a ring of 4-16 C buffers, scaling 2-12 blocks behind the product, one C tile
 * or two: all within the noise (docs/perf-notes.md).
 *
 * Per 16-row tile and column group (16 columns, the transposed weights W of the VNNI kernel's
 * step 1, whose layout is already AMX's B layout: per block 8 rows of 64 bytes, row k = the 4
 * bytes 4k .. 4k + 3 of each column):
 *   A = q[r .. r + 15][32 b .. 32 b + 31]  (tile 16 x 32 bytes, stride n: no copy)
 *   C = A (s8) . B (u8)                     (tdpbsud: 16 x 16 exact int32 block sums)
 *   C -> memory, then per row i, lane-wise: acc_i = fma((float)(C_i - off * qsum), dw * dx, acc_i)
 * with two C tiles alternating (the product of a block is issued two blocks ahead of its scaling);
 * the offsets' fmas (Q4_1 / Q5_1 / Q4_K / Q5_K) in their own pass, as the VNNI kernel does.
 * Tiles: 0, 1 = C (16 x 64 bytes), 2, 4 = A (16 x 32), 3, 5 = B (8 x 64). */
#include "backend/cpu/qgemm_zmm.h"
#define FN(name) name##_amx
#define Q8_SIGNED 0
#define QG_KOUTER
#define QG_NO_WRAPPERS
#define DP(acc, u, s) _mm512_dpbusd_epi32(acc, u, s)
#define DPS(acc, u, s) DP(acc, u, s)
#define QG_TILE16 amx_tile16
struct kiln_q8act;
static inline __attribute__((always_inline)) void amx_tile16(int T, const __m512i *W, const __m512 *DW, const __m512 *MW,
                                                             const struct kiln_q8act *a, int r, float *y, size_t ldy,
                                                             int ncg);
#include "backend/cpu/qgemm_tile.inc"

/* the scaling of one block's C (16 rows of 16 int32 at c) into acc; dx, qs: the block's 16
 * row scales and sums (tile-major) */
INL void amx_scale(int T, const int32_t *c, VF dw, const float *dx, const int32_t *qs, VF *acc) {
    const int sh = off_shift_amx(T);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        VI is = _mm512_load_si512((const void *)(c + 16 * i));
        if (sh) is = SUB32(is, SET1_32(qs[i] * (1 << sh)));
        acc[i] = FMAF(CVT(is), MULF(dw, SET1F(dx[i])), acc[i]);
    }
}

INL void amx_tile16(int T, const VI *W, const VF *DW, const VF *MW, const kiln_q8act *a, int r, float *y, size_t ldy,
                    int ncg) {
    const int nb = a->nb, has_m = T == T_Q4_1 || T == T_Q5_1 || T == T_Q4_K || T == T_Q5_K;
    const int8_t *q = a->q + (size_t)r * a->n;
    const long ldq = a->n;
    const size_t t0 = (size_t)(r / 16) * nb * 16; /* this tile's tile-major scales */
    const float *tdx = a->tdx + t0, *tsdx = a->tsdx + t0;
    const int32_t *tqs = a->tqsum + t0;
    int32_t c[4][256] __attribute__((aligned(64))); /* C(b) in c[b % 4] */
    VF acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) acc[i] = ZEROF();
    /* C(b) in tile b % 2 (its A, B in tiles 2, 3 or 4, 5); its store is issued a block after
     * its product, its scaling two blocks after that product (a tile store waits for the
     * product, loads of what it stored wait for the store) */
#define AMX_ISSUE(t, ta, tb, bi)                                                                      \
    do {                                                                                             \
        _tile_loadd(ta, q + 32 * (size_t)(bi), ldq);                                                 \
        _tile_loadd(tb, W + 8 * (size_t)(bi), 64);                                                   \
        _tile_zero(t);                                                                               \
        _tile_dpbsud(t, ta, tb);                                                                     \
    } while (0)
#define AMX_SCALE(bi) amx_scale(T, c[(bi) % 4], DW[bi], tdx + 16 * (size_t)(bi), tqs + 16 * (size_t)(bi), acc)
    AMX_ISSUE(0, 2, 3, 0);
    if (nb > 1) AMX_ISSUE(1, 4, 5, 1);
    for (int b = 0; b < nb; b += 2) {
        _tile_stored(0, c[b % 4], 64);
        if (b + 2 < nb) AMX_ISSUE(0, 2, 3, b + 2);
        if (b >= 2) AMX_SCALE(b - 2);
        if (b + 1 >= nb) break;
        _tile_stored(1, c[(b + 1) % 4], 64);
        if (b + 3 < nb) AMX_ISSUE(1, 4, 5, b + 3);
        if (b >= 2) AMX_SCALE(b - 1);
    }
    for (int b = nb >= 2 ? nb - 2 : 0; b < nb; b++) AMX_SCALE(b); /* the last two */
#undef AMX_ISSUE
#undef AMX_SCALE
    float out[16][16] __attribute__((aligned(64)));
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) STOREF(out[i], acc[i]);
    if (has_m) {
        VF macc[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) macc[i] = ZEROF();
        for (int b = 0; b < nb; b++) {
            const VF mw = MW[b];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) macc[i] = FMAF(mw, SET1F(tsdx[16 * (size_t)b + i]), macc[i]);
        }
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) STOREF(out[i], ADDF(LOADF(out[i]), macc[i]));
    }
    /* lane p holds column col(p) = 4 (p % 4) + p / 4, a 4 x 4 transpose: its own inverse */
    const VI perm = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __mmask16 m = (__mmask16)((1u << ncg) - 1u);
    for (int i = 0; i < 16; i++) _mm512_mask_storeu_ps(y + (size_t)i * ldy, m, _mm512_permutexvar_ps(perm, LOADF(out[i])));
}

/* the tile shapes above, loaded per call (a thread's tile configuration is its own) */
typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

INL void amx_body(int T, int bb, const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1, float *y,
                  size_t ldy, void *scratch) {
    if (r1 - r0 < 16 || r0 % 16 || T == T_Q6_K) { /* no full tile: the VNNI kernel alone, no tile state */
        qgemm_body_amx(T, bb, w, ldw, nc, a, r0, r1, y, ldy, scratch);
        return;
    }
    amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 2; t++) {
        cfg.rows[t] = 16, cfg.colsb[t] = 64;                 /* C */
        cfg.rows[2 + 2 * t] = 16, cfg.colsb[2 + 2 * t] = 32; /* A */
        cfg.rows[3 + 2 * t] = 8, cfg.colsb[3 + 2 * t] = 64;  /* B */
    }
    _tile_loadconfig(&cfg);
    qgemm_body_amx(T, bb, w, ldw, nc, a, r0, r1, y, ldy, scratch);
    _tile_release();
}

#define DEF_AMX(name, T, bb)                                                                                     \
    static void name(const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1, float *y, size_t ldy, \
                     void *scratch) {                                                                            \
        amx_body(T, bb, w, ldw, nc, a, r0, r1, y, ldy, scratch);                                                 \
    }
DEF_AMX(amx_q8_0, T_Q8_0, 34)
DEF_AMX(amx_q4_0, T_Q4_0, 18)
DEF_AMX(amx_q4_1, T_Q4_1, 20)
DEF_AMX(amx_q5_0, T_Q5_0, 22)
DEF_AMX(amx_q5_1, T_Q5_1, 24)
DEF_AMX(amx_q4_k, T_Q4_K, 144)
DEF_AMX(amx_q5_k, T_Q5_K, 176)
DEF_AMX(amx_q6_k, T_Q6_K, 210)

kiln_qgemm_fn kiln_qgemm_amx(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return amx_q8_0;
    case KILN_DT_Q4_0: return amx_q4_0;
    case KILN_DT_Q4_1: return amx_q4_1;
    case KILN_DT_Q5_0: return amx_q5_0;
    case KILN_DT_Q5_1: return amx_q5_1;
    case KILN_DT_Q4_K: return amx_q4_k;
    case KILN_DT_Q5_K: return amx_q5_k;
    case KILN_DT_Q6_K: return amx_q6_k;
    default: return NULL;
    }
}
