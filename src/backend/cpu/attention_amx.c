/* attention_amx.c: the items of cpu.attn "bf16" on AMX-BF16 tiles: consecutive query rows of
 * one sequence (blocks of up to q_block rows), one KV head with all its query heads; the
 * sequence's keys and values are converted once for all the blocks of the item (attention.c
 * makes the items). Compiled with -mamx-tile -mamx-bf16 -mavx512bf16; used only where CPUID
 * reports AMX-BF16 and AVX512-BF16 and Linux grants the tile state (kiln_cpu_has_amx_bf16).
 *
 * Why: the f32 kernels run at the FMA ports' rate (bench_cpu_attention 4000 512: 161-173
 * GFLOP/s on a 2-core Sapphire Rapids VM, 2026-12-07), and at that context attention is most
 * of a long prompt's prefill. A
 * bf16 tile product does 16 x 16 x 32 multiply-adds an instruction.
 *
 * Numerics (what "bf16" means): q, k, v rounded to bfloat16 (nearest even), the scores'
 * dot products accumulated in f32 by the tiles, the f32 softmax of the ISA (the same kernel and
 * bits as the f32 path, on these scores), the probabilities rounded to bfloat16, P.V
 * accumulated in f32 by the tiles over groups of 32 positions aligned to multiples of 32, in
 * position order. A row's result depends on nothing but its q and its sequence's K/V:
 * positions outside its [lo, pos] enter as zero probabilities (k rows past the span as zero
 * rows), the groups are fixed by absolute position, and each tile row is computed from its own
 * A row: so the same bits whatever the block, the head grouping, the thread or the batch
 * (tests/c/test_cpu_attention.c checks that, and the values against a float64 reference).
 *
 * Shapes, per block (M = nr * G rows m = r * G + i, padded to Mp = 16k; hd a multiple of 32):
 *   Qb [Mp][hd] bf16            A of S = Q K^T, row-major (a tile: 16 rows x 32 columns)
 *   Kt [keys / 16][hd / 32][16][16][2]  B of S: per 16 keys, K^T in pairs (row p: (k_j[2p],
 *                               k_j[2p+1]) for j < 16), a 16 x 16 dword transpose of the keys'
 *                               bf16 rows; kept over the item's blocks
 *   S  [Mp][keys] f32           in the scores scratch (row m at scores + m * max_model_len)
 *   Pb [16][span] bf16          A of O = P V: probabilities of 16 rows, zero outside [lo, n)
 *                               (padding rows: whatever the scratch holds, their C rows unread)
 *   Vt [keys / 32][hd / 16][16][16][2]  B of O: per 32 keys and 16 columns, rows p =
 *                               (v_{2p}[d], v_{2p+1}[d]) for 16 d; kept over the item's blocks
 *   O  C tiles 0..3 (16 rows x 16 columns each, 64 columns a pass), then att.
 * Tiles: every one 16 rows x 64 bytes; 0..3 C, 4 A, 5..7 B. */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "backend/cpu/attention.h"

#define KG 32 /* positions a P.V product step (16 pairs) and the groups' alignment */
#ifndef KPF
#define KPF 32 /* keys ahead that the K conversion prefetches (the V one twice that) */
#endif

typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }

/* the span of positions a scratch holds: [aligned lo, aligned hi) of any item */
static size_t span_max(int max_model_len) { return ((size_t)max_model_len + 2 * KG) / KG * KG; }

size_t kiln_cpu_attn_amx_bytes(int G, int q_block, int head_dim, int max_model_len) {
    size_t mp = ((size_t)(q_block > 0 ? q_block : 1) * G + 15) / 16 * 16, L = span_max(max_model_len), hd = (size_t)head_dim;
    /* Qb, Kt, Vt, Pb, Ct, the rows buffer, and 64 to align the start */
    return al64(mp * hd * 2) + 2 * al64(L * hd * 2) + al64(16 * L * 2) + al64(4 * 256 * 4) + al64(2 * hd * 4) + 64;
}

/* row j (position) of K (kv 0) or V (1) of KV head kvh as f32: in place for an f32 pool, else
 * decoded into buf */
static inline __attribute__((always_inline)) const float *kv_row(const kiln_cpu_attn_args *a, const int32_t *bt, int kv, int kvh, int j, float *buf) {
    const kiln_kv_layout *L = a->layout;
    int64_t o = kiln_kv_offset(L, a->layer, bt[j / L->block_size], kv, kvh, j % L->block_size);
    if (a->kv8) {
        const float *lut = a->kv8_lut + 256 * kv;
        for (int i = 0; i < a->head_dim; i++) buf[i] = lut[a->kv8[o + i]];
        return buf;
    }
    if (a->kv16) {
        a->k.widen(a->kv16 + o, buf, a->head_dim, L->dtype == KILN_KV_BF16);
        return buf;
    }
    return a->kv + o;
}

/* row j of K (kv 0) or V (1) in place in a bf16 pool, else NULL */
static inline const uint16_t *bf16_row(const kiln_cpu_attn_args *a, const int32_t *bt, int kv, int kvh, int j) {
    const kiln_kv_layout *L = a->layout;
    if (!a->kv16 || L->dtype != KILN_KV_BF16) return NULL;
    return a->kv16 + kiln_kv_offset(L, a->layer, bt[j / L->block_size], kv, kvh, j % L->block_size);
}

/* ask for row j's cache lines ahead of use (the pool's blocks are scattered: the hardware
 * prefetcher stops at their ends; without this the rows' loads were ~40 % of the item's time) */
static inline void kv_prefetch(const kiln_cpu_attn_args *a, const int32_t *bt, int kv, int kvh, int j) {
    const kiln_kv_layout *L = a->layout;
    int64_t o = kiln_kv_offset(L, a->layer, bt[j / L->block_size], kv, kvh, j % L->block_size);
    const char *p = a->kv8    ? (const char *)(a->kv8 + o)
                    : a->kv16 ? (const char *)(a->kv16 + o)
                              : (const char *)(a->kv + o);
    size_t n = (size_t)a->head_dim * (a->kv8 ? 1 : a->kv16 ? 2 : 4);
    for (size_t i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 3);
}

/* dst[0 .. n) = bf16(src) (n a multiple of 32), or zeros for src NULL */
static void to_bf16(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i += 32) {
        __m512i v = src ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i))
                        : _mm512_setzero_si512();
        _mm512_storeu_si512((void *)(dst + i), v);
    }
}

/* r[0..15] (16 x 16 dwords) -> its transpose */
static inline void tr16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[4a + c], 128-bit lane L: rows 4a .. 4a+3 at column 4L + c */
    for (int a = 0; a < 4; a++) {
        u[4 * a + 0] = _mm512_unpacklo_epi64(t[4 * a], t[4 * a + 2]);
        u[4 * a + 1] = _mm512_unpackhi_epi64(t[4 * a], t[4 * a + 2]);
        u[4 * a + 2] = _mm512_unpacklo_epi64(t[4 * a + 1], t[4 * a + 3]);
        u[4 * a + 3] = _mm512_unpackhi_epi64(t[4 * a + 1], t[4 * a + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44), w1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
    }
}

#define TDP(c, a, b) _tile_dpbf16ps(c, a, b)

/* K^T of the 16 keys j0 .. j0+15 (zero rows outside [klo, khi)) into kt: [hd / 32][16][32] bf16 */
static void k_group(const kiln_cpu_attn_args *a, const int32_t *bt, int kvh, int j0, int klo, int khi, uint16_t *kt,
                    float *rowbuf) {
    const int hd = a->head_dim;
    for (int j = j0 + KPF; KPF > 0 && j < j0 + KPF + 16 && j < khi; j++)
        if (j >= klo) kv_prefetch(a, bt, 0, kvh, j);
    __m512i kr[16][8]; /* the 16 keys' bf16 rows as dwords, hd / 32 vectors (hd <= 256) */
    for (int j = 0; j < 16; j++) {
        int jj = j0 + j;
        const uint16_t *k16 = jj >= klo && jj < khi ? bf16_row(a, bt, 0, kvh, jj) : NULL;
        if (k16) { /* a bf16 pool: the row as it is (the bits of widening and rounding it) */
            for (int t = 0; t < hd / 32; t++) kr[j][t] = _mm512_loadu_si512((const void *)(k16 + 32 * t));
            continue;
        }
        const float *k = jj >= klo && jj < khi ? kv_row(a, bt, 0, kvh, jj, rowbuf) : NULL;
        for (int t = 0; t < hd / 32; t++)
            kr[j][t] = k ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(k + 32 * t + 16), _mm512_loadu_ps(k + 32 * t))
                         : _mm512_setzero_si512();
    }
    for (int t = 0; t < hd / 32; t++) {
        __m512i r[16];
        for (int j = 0; j < 16; j++) r[j] = kr[j][t];
        tr16(r);
        for (int p = 0; p < 16; p++) _mm512_store_si512((void *)(kt + (size_t)t * 512 + p * 32), r[p]);
    }
}

/* V of the 32 positions g .. g+31 in pairs (zero rows outside [klo, khi)) into vt:
 * [hd / 16][16][32] bf16 */
static void v_group(const kiln_cpu_attn_args *a, const int32_t *bt, int kvh, int g, int klo, int khi, uint16_t *vt,
                    float *rowbuf) {
    const int hd = a->head_dim;
    const __m512i ilv = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                         5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int p = 0; p < 16; p++) {
        for (int j = g + 2 * KPF + 2 * p; KPF > 0 && j < g + 2 * KPF + 2 * p + 2 && j < khi; j++)
            if (j >= klo) kv_prefetch(a, bt, 1, kvh, j);
        int ja = g + 2 * p, jb = ja + 1;
        if (a->kv16 && a->layout->dtype == KILN_KV_BF16) { /* a bf16 pool: the rows as they are, interleaved */
            const uint16_t *ha = ja >= klo && ja < khi ? bf16_row(a, bt, 1, kvh, ja) : NULL;
            const uint16_t *hb = jb >= klo && jb < khi ? bf16_row(a, bt, 1, kvh, jb) : NULL;
            for (int d = 0; d < hd; d += 16) {
                __m256i xa = ha ? _mm256_loadu_si256((const void *)(ha + d)) : _mm256_setzero_si256();
                __m256i xb = hb ? _mm256_loadu_si256((const void *)(hb + d)) : _mm256_setzero_si256();
                __m512i x = _mm512_permutexvar_epi16(ilv, _mm512_inserti64x4(_mm512_castsi256_si512(xa), xb, 1));
                _mm512_store_si512((void *)(vt + ((size_t)(d / 16) * 16 + p) * 32), x);
            }
            continue;
        }
        const float *va = ja >= klo && ja < khi ? kv_row(a, bt, 1, kvh, ja, rowbuf) : NULL;
        const float *vb = jb >= klo && jb < khi ? kv_row(a, bt, 1, kvh, jb, rowbuf + hd) : NULL;
        for (int d = 0; d < hd; d += 16) {
            __m512 xa = va ? _mm512_loadu_ps(va + d) : _mm512_setzero_ps();
            __m512 xb = vb ? _mm512_loadu_ps(vb + d) : _mm512_setzero_ps();
            __m512i x = _mm512_permutexvar_epi16(ilv, (__m512i)_mm512_cvtne2ps_pbh(xb, xa));
            _mm512_store_si512((void *)(vt + ((size_t)(d / 16) * 16 + p) * 32), x);
        }
    }
}

void kiln_cpu_attn_amx_rows(const kiln_cpu_attn_args *a, int seq, int t0, int t1, int qb, int kvh, float *scores,
                            void *scratch) {
    const int hd = a->head_dim, G = a->n_heads / a->n_kv_heads;
    const size_t stride = (size_t)a->max_model_len, rstride = (size_t)a->n_heads * hd;
    const int32_t *bt = a->block_table + (size_t)seq * a->max_blocks_per_seq;
    const float scale = 1.0f / sqrtf((float)hd);
    const int srows = a->q_block * G; /* the rows of the scores scratch */
    /* the scratch (kiln_cpu_attn_amx_bytes) */
    uint8_t *s8 = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    const size_t L_max = span_max(a->max_model_len), Mp_max = ((size_t)a->q_block * G + 15) / 16 * 16;
    uint16_t *Qb = (uint16_t *)s8;
    s8 += al64(Mp_max * hd * 2);
    uint16_t *Kt = (uint16_t *)s8; /* K^T of positions base .. kT, 16 a group */
    s8 += al64(L_max * hd * 2);
    uint16_t *Vt = (uint16_t *)s8; /* V of positions base .. vT, 32 a group */
    s8 += al64(L_max * hd * 2);
    uint16_t *Pb = (uint16_t *)s8;
    s8 += al64(16 * L_max * 2);
    float *Ct = (float *)s8;
    s8 += al64(4 * 256 * 4);
    float *rowbuf = (float *)s8; /* [2][hd] */
    /* the range's keys start at its first row's lo (the smallest); the groups converted for a
     * block are kept for the later ones, the partial last group redone */
    int klo, n0;
    kiln_cpu_attn_row_range(a, a->positions[t0], &klo, &n0);
    const int base = klo / KG * KG;
    int kT = base, vT = base; /* groups below are final (their positions all < the khi they were made with) */

    amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);

    for (int r0 = t0; r0 < t1; r0 += qb) {
        const int nr = t1 - r0 < qb ? t1 - r0 : qb, M = nr * G, Mp = (M + 15) / 16 * 16;
        int lo_r[KILN_CPU_ATTN_Q_BLOCK], n_r[KILN_CPU_ATTN_Q_BLOCK];
        int jlo = a->max_model_len, jhi = 0;
        for (int r = 0; r < nr; r++) {
            kiln_cpu_attn_row_range(a, a->positions[r0 + r], &lo_r[r], &n_r[r]);
            if (lo_r[r] < jlo) jlo = lo_r[r];
            if (n_r[r] > jhi) jhi = n_r[r];
        }
        const int jA = jlo / KG * KG, jE = (jhi + KG - 1) / KG * KG, span = jE - jA;
        /* K^T and V up to this block's last position: the partial group at the end redone */
        for (int j0 = kT; j0 < jhi; j0 += 16) k_group(a, bt, kvh, j0, klo, jhi, Kt + (size_t)(j0 - base) * hd, rowbuf);
        kT = jhi / 16 * 16;
        for (int g = vT; g < jE; g += KG) v_group(a, bt, kvh, g, klo, jhi, Vt + (size_t)(g - base) * hd, rowbuf);
        vT = jhi / KG * KG;
        for (int m = 0; m < Mp; m++) {
            const float *q = m < M ? a->q + (size_t)(r0 + m / G) * rstride + (size_t)(kvh * G + m % G) * hd : NULL;
            to_bf16(Qb + (size_t)m * hd, q, hd);
        }
        /* S = Q K^T, 16 keys at a time: C straight into the scores rows where the tile fits
         * them (16 rows of the scratch, 16 positions of a row), else through Ct */
        for (int j0 = jA; j0 < jhi; j0 += 16) {
            const uint16_t *kt = Kt + (size_t)(j0 - base) * hd;
            int nv = jhi - j0 < 16 ? jhi - j0 : 16;
            for (int mc = 0; mc < Mp; mc += 16) {
                _tile_zero(0);
                for (int t = 0; t < hd / 32; t++) {
                    _tile_loadd(4, Qb + (size_t)mc * hd + 32 * t, hd * 2);
                    _tile_loadd(5, kt + (size_t)t * 512, 64);
                    TDP(0, 4, 5);
                }
                if (mc + 16 <= srows && (size_t)j0 + 16 <= stride) {
                    _tile_stored(0, scores + (size_t)mc * stride + j0, stride * 4);
                } else {
                    _tile_stored(0, Ct, 64);
                    for (int m = mc; m < mc + 16 && m < M; m++)
                        memcpy(scores + (size_t)m * stride + j0, Ct + (m - mc) * 16, (size_t)nv * 4);
                }
            }
        }
        for (int m = 0; m < M; m++) {
            int r = m / G;
            a->k.softmax(scores + (size_t)m * stride + lo_r[r], n_r[r] - lo_r[r], scale);
        }
        /* O = P V per 16 rows: P rounded (zero outside each row's range), then 64 columns a pass */
        for (int mc = 0; mc < Mp; mc += 16) {
            for (int m = mc; m < mc + 16 && m < M; m++) { /* rows past M: left as they are (Pb above) */
                uint16_t *pr = Pb + (size_t)(m - mc) * span;
                int lo = lo_r[m / G], n = n_r[m / G];
                const float *sr = scores + (size_t)m * stride;
                for (int j = jA; j < jE; j += 32) {
                    int a0 = lo - j, b0 = n - j; /* lanes l of j + l inside [lo, n): a0 <= l < b0 */
                    uint32_t mk = 0;
                    if (b0 > 0 && a0 < 32) {
                        int l0 = a0 > 0 ? a0 : 0, l1 = b0 < 32 ? b0 : 32;
                        mk = l1 - l0 >= 32 ? 0xffffffffu : ((1u << (l1 - l0)) - 1u) << l0;
                    }
                    __m512 x0 = _mm512_maskz_loadu_ps((__mmask16)(mk & 0xffff), sr + j);
                    __m512 x1 = _mm512_maskz_loadu_ps((__mmask16)(mk >> 16), sr + j + 16);
                    _mm512_storeu_si512((void *)(pr + (j - jA)), (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
                }
            }
            for (int d0 = 0; d0 < hd; d0 += 64) {
                int nd = (hd - d0) / 16 < 4 ? (hd - d0) / 16 : 4;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int g = jA; g < jE; g += KG) {
                    _tile_loadd(4, Pb + (g - jA), (size_t)span * 2);
                    const uint16_t *vg = Vt + (size_t)(g - base) * hd + (size_t)(d0 / 16) * 512;
                    _tile_loadd(5, vg, 64);
                    TDP(0, 4, 5);
                    if (nd > 1) { _tile_loadd(6, vg + 512, 64); TDP(1, 4, 6); }
                    if (nd > 2) { _tile_loadd(7, vg + 1024, 64); TDP(2, 4, 7); }
                    if (nd > 3) { _tile_loadd(5, vg + 1536, 64); TDP(3, 4, 5); }
                }
                _tile_stored(0, Ct, 64);
                _tile_stored(1, Ct + 256, 64);
                _tile_stored(2, Ct + 512, 64);
                _tile_stored(3, Ct + 768, 64);
                for (int m = mc; m < mc + 16 && m < M; m++) {
                    float *att = a->att + (size_t)(r0 + m / G) * rstride + (size_t)(kvh * G + m % G) * hd + d0;
                    for (int u = 0; u < nd; u++) memcpy(att + 16 * u, Ct + u * 256 + (m - mc) * 16, 64);
                }
            }
        }
    }
    _tile_release();
}
