/* kiln-layer: backend (links only this layer and those below it) */
/* test_cpu_qgemm.c: the W x A8 kernels (backend/cpu/qgemm.h), no model needed:
 *   - activation quantization: q, dx, qsum, sdx as the formula (round half to even, |q| <= 127),
 *     and every ISA's vector form of it the C function's bits;
 *   - every kernel (scalar; AVX2 pmaddubsw; AVX-VNNI; AVX-512 VNNI; AMX-INT8 tiles for 16-row
 *     blocks; NEON; NEON sdot, each where the CPU has it: a missing one is named on stdout)
 *     and every type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; Q4_K, Q5_K, Q6_K) against a float64
 *     product of the dequantized weights and the dequantized activations, within 2e-6 of
 *     sum |w x|, for 1..64 rows, 1..16 columns, n = 32 .. 1568 (odd block counts; K-quants
 *     n = 256 .. 2304, odd super-block counts);
 *   - every SIMD kernel gives the scalar kernel's bits (qgemm.h: one arithmetic for all);
 *   - a row's bits do not depend on which rows share the call (r0, r1 = the row alone vs
 *     all rows) nor on the column count of the call;
 *   - the packed kernels (AVX-512 VNNI, AVX-VNNI, AVX2; Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1: weights packed once):
 *     the scalar kernel's bits, whole groups and column ranges, rows together and alone;
 *   - kiln_q8act_tile: the tile-major copies of dx, sdx, qsum;
 *   - kiln_cpu_matmul with act_q8 (1..3 threads, 1..37 and 300 rows, with and without AMX where the
 *     CPU has it, and on packed weights (qpack.h) where the ISA has that kernel): the scalar kernel's bits, and
 *     kiln_cpu_matmul_multi / _swiglu the bits of separate products (+ kiln_cpu_silu_mul_row). */
#include <stdint.h>
#include "backend/cpu/qgemm.h"
#include "backend/cpu/qpack.h"
#include "format/quant.h"
#include "test.h"
#include "util/alloc.h"
#include "util/threads.h"

enum { MAXR = 64, MAXN = 2304 };

static int blk_bytes(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return 34;
    case KILN_DT_Q4_0: return 18;
    case KILN_DT_Q4_1: return 20;
    case KILN_DT_Q5_0: return 22;
    case KILN_DT_Q4_K: return 144;
    case KILN_DT_Q5_K: return 176;
    case KILN_DT_Q6_K: return 210;
    default: return 24;
    }
}

static int is_k(kiln_dtype dt) { return dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K || dt == KILN_DT_Q6_K; }

/* random blocks with sane f16 scales (d in [2^-8, 2^-5), m in +-2^-4) */
static void rand_weights(kiln_dtype dt, uint8_t *w, size_t bytes, int nblocks, unsigned long long *s) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)kt_rand_u64(s);
    int bb = blk_bytes(dt);
    for (int b = 0; b < nblocks; b++) {
        uint8_t *p = w + (size_t)b * bb;
        uint16_t d = (uint16_t)(0x1C00 + (kt_rand_u64(s) & 0x3FF) + (kt_rand_u64(s) % 3) * 0x400); /* 2^-8 .. 2^-5 */
        if (is_k(dt)) d = (uint16_t)(d - 0x1800); /* K: times 6-bit (8-bit) sub-block scales, 2^-14 .. 2^-11 */
        memcpy(p + (dt == KILN_DT_Q6_K ? 208 : 0), &d, 2);
        if (dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) {
            uint16_t m = (uint16_t)(0x0400 + (kt_rand_u64(s) & 0x3FF) + (kt_rand_u64(s) % 3) * 0x400);
            memcpy(p + 2, &m, 2);
        }
        if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1) {
            uint16_t m = (uint16_t)(0x2C00 + (kt_rand_u64(s) & 0x3FF)) | (uint16_t)((kt_rand_u64(s) & 1) << 15);
            memcpy(p + 2, &m, 2);
        }
    }
}

/* kiln_q8act_tile: row r's block b at [r / 16][b][r % 16], rows in two calls */
static void check_tile(void) {
    enum { R = 37, N = 96 };
    unsigned long long s = 5;
    float *x = kiln_malloc_aligned(sizeof(float) * R * N);
    for (int i = 0; i < R * N; i++) x[i] = kt_randf(&s);
    void *m = kiln_malloc_aligned(kiln_q8act_bytes(R, N));
    kiln_q8act a;
    kiln_q8act_init(&a, m, R, N);
    kiln_q8act_quantize(&a, x, N, 0, R);
    kiln_q8act_tile(&a, 0, 20);
    kiln_q8act_tile(&a, 20, R);
    int bad = 0;
    for (int r = 0; r < R; r++)
        for (int b = 0; b < a.nb; b++) {
            size_t t = ((size_t)(r / 16) * a.nb + b) * 16 + r % 16, o = (size_t)r * a.nb + b;
            bad += a.tdx[t] != a.dx[o] || a.tsdx[t] != a.sdx[o] || a.tqsum[t] != a.qsum[o];
        }
    KT_CHECK(bad == 0, "kiln_q8act_tile: %d of %d blocks misplaced", bad, R * a.nb);
    kiln_free_aligned(x);
    kiln_free_aligned(m);
}

static void check_act(void) {
    unsigned long long s = 7;
    int n = 96;
    float x[96];
    for (int i = 0; i < n; i++) x[i] = kt_randf(&s) * (i < 32 ? 3.0f : i < 64 ? 0.001f : 0.0f);
    x[5] = 3.5f; /* the block's amax: q = 127 */
    void *mem = kiln_malloc_aligned(kiln_q8act_bytes(1, n));
    kiln_q8act a;
    kiln_q8act_init(&a, mem, 1, n);
    kiln_q8act_quantize(&a, x, (size_t)n, 0, 1);
    int bad = 0;
    for (int b = 0; b < 3; b++) {
        float amax = 0;
        int sum = 0;
        for (int i = 0; i < 32; i++) amax = fabsf(x[32 * b + i]) > amax ? fabsf(x[32 * b + i]) : amax;
        bad += a.dx[b] != amax / 127.0f;
        for (int i = 0; i < 32; i++) {
            int want = amax > 0 ? (int)nearbyintf(x[32 * b + i] * (127.0f / amax)) : 0;
            bad += a.q[32 * b + i] != want;
            sum += want;
        }
        bad += a.qsum[b] != sum;
        bad += a.sdx[b] != a.dx[b] * (float)sum;
    }
    bad += a.q[5] != 127;
    KT_CHECK(bad == 0, "activation quantization: %d wrong values", bad);
    kiln_free_aligned(mem);
}

/* every ISA's kiln_cpu_q8act_quantize_lookup against the C function, bit for bit: 1..64 rows
 * of n = 32 .. 1568, blocks of zeros, of tiny and of large values, half-way ties */
static void check_act_isa(void) {
    enum { R = 64, N = 1568 };
    unsigned long long s = 31;
    float *x = kiln_malloc_aligned(sizeof(float) * R * N);
    for (int i = 0; i < R * N; i++) {
        int blk = i / 32;
        float sc = blk % 7 == 0 ? 0.0f : blk % 7 == 1 ? 1e-30f : blk % 7 == 2 ? 3e4f : 1.0f;
        x[i] = kt_randf(&s) * sc;
        if (blk % 7 == 3) x[i] = (float)((int)(kt_rand_u64(&s) % 255) - 127) * 0.5f; /* ties at amax 63.5 */
    }
    x[3 * 32 + 1] = 63.5f;
    void *m0 = kiln_malloc_aligned(kiln_q8act_bytes(R, N)), *m1 = kiln_malloc_aligned(kiln_q8act_bytes(R, N));
    const int ns[] = {32, 96, 576, 1536, 1568}, rs[] = {1, 2, 5, 16, 64};
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) continue;
        kiln_q8act_quantize_fn f = kiln_cpu_q8act_quantize_lookup((kiln_isa)isa);
        int bad = 0;
        for (int ni = 0; ni < 5; ni++)
            for (int ri = 0; ri < 5; ri++) {
                int n = ns[ni], r = rs[ri];
                kiln_q8act a, b;
                kiln_q8act_init(&a, m0, r, n);
                kiln_q8act_init(&b, m1, r, n);
                memset(m1, 0x5A, kiln_q8act_bytes(r, n));
                kiln_q8act_quantize(&a, x, N, 0, r);
                f(&b, x, N, 0, r);
                bad += memcmp(a.q, b.q, (size_t)r * n) != 0;
                bad += memcmp(a.dx, b.dx, sizeof(float) * r * a.nb) != 0;
                bad += memcmp(a.sdx, b.sdx, sizeof(float) * r * a.nb) != 0;
                bad += memcmp(a.qsum, b.qsum, sizeof(int32_t) * r * a.nb) != 0;
            }
        KT_CHECK(bad == 0, "activation quantization on %s: %d arrays differ from the C function's bits",
                 kiln_isa_name((kiln_isa)isa), bad);
    }
    kiln_free_aligned(x);
    kiln_free_aligned(m0);
    kiln_free_aligned(m1);
}

typedef struct kern {
    const char *name;
    kiln_qgemm_fn (*table)(kiln_dtype);
} kern;

/* kiln_cpu_matmul* with act_q8 against the scalar kernel: dt [n_out][NI], n_out not a
 * multiple of 16 (the tasks' last columns) */
static void check_matmul(kiln_dtype dt, int NI, int R, int rstep) {
    enum { NO = 200 };
    const int bb = blk_bytes(dt), be = is_k(dt) ? 256 : 32;
    unsigned long long s = 99;
    size_t ldw = (size_t)(NI / be) * bb;
    uint8_t *w[2] = {kiln_malloc_aligned(NO * ldw), kiln_malloc_aligned(NO * ldw)};
    for (int k = 0; k < 2; k++) rand_weights(dt, w[k], NO * ldw, NO * (NI / be), &s);
    kiln_tensor t[2];
    for (int k = 0; k < 2; k++) {
        t[k] = (kiln_tensor){.dtype = dt, .ndim = 2, .shape = {NO, NI}, .data = w[k], .nbytes = NO * ldw};
        snprintf(t[k].name, sizeof t[k].name, "w%d", k);
    }
    float *x = kiln_malloc_aligned(sizeof(float) * R * NI), *ref = kiln_malloc_aligned(sizeof(float) * 2 * R * NO);
    float *y = kiln_malloc_aligned(sizeof(float) * 2 * R * NO), *u = kiln_malloc_aligned(sizeof(float) * R * NO);
    for (int i = 0; i < R * NI; i++) x[i] = kt_randf(&s);
    void *am = kiln_malloc_aligned(kiln_q8act_bytes(R, NI)), *scr = kiln_malloc_aligned(kiln_qgemm_scratch_bytes(NI));
    kiln_q8act a;
    kiln_q8act_init(&a, am, R, NI);
    kiln_q8act_quantize(&a, x, NI, 0, R);
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < NO; c += 16)
            kiln_qgemm_scalar(dt)(w[k] + c * ldw, ldw, NO - c < 16 ? NO - c : 16, &a, 0, R,
                                           ref + (size_t)k * R * NO + c, NO, scr);
    kiln_qgemm_pack_fn pk;
    kiln_qgemm_packed_fn pf;
    const int can_pack = kiln_cpu_qgemm_lookup_packed(dt, kiln_isa_best(), &pk, &pf, NULL);
    for (int th = 1; th <= 12; th++) { /* 4..6: the same on AMX; 7..9: on the weights packed once; 10..12: both */
        kiln_error err = {0};
        kiln_pool *pool = NULL;
        const int amx = (th > 3 && th <= 6) || th > 9, packed = th > 6, nth = (th - 1) % 3 + 1;
        if ((amx && !kiln_cpu_has_amx()) || (packed && !can_pack)) continue;
        if (kiln_pool_create(&pool, nth, &err)) { KT_CHECK(0, "pool: %s", err.msg); continue; }
        kiln_cpu_ctx ctx = {.isa = amx ? KILN_ISA_AVX512 : kiln_isa_best(), .pool = pool, .panel_floats = 128u * 1024u,
                            .xperm_floats = (size_t)R * NI, .act_q8 = 1, .amx = amx};
        kiln_cpu_packs *packs = NULL;
        if (packed) {
            int added[2] = {0, 0};
            KT_CHECK(kiln_cpu_packs_create(&packs, ctx.isa, &err) == 0 &&
                         kiln_cpu_packs_add(packs, &t[0], pool, &added[0], &err) == 0 &&
                         kiln_cpu_packs_add(packs, &t[1], pool, &added[1], &err) == 0 && added[0] && added[1],
                     "%s: packing: %s", kiln_dtype_name(dt), err.msg);
            ctx.packs = packs;
        }
        ctx.panel = kiln_malloc_aligned(sizeof(float) * ctx.panel_floats * (size_t)nth);
        ctx.xperm = kiln_malloc_aligned(sizeof(float) * ctx.xperm_floats);
        int bad = 0, badm = 0, bads = 0;
        for (int nr = 1; nr <= R; nr += rstep) {
            const kiln_tensor *tw[2] = {&t[0], &t[1]};
            float *ys[2] = {y, y + (size_t)R * NO};
            KT_CHECK(kiln_cpu_matmul(&ctx, y, x, nr, &t[0], &err) == 0, "matmul: %s", err.msg);
            bad += memcmp(y, ref, sizeof(float) * (size_t)nr * NO) != 0;
            KT_CHECK(kiln_cpu_matmul_multi(&ctx, 2, ys, x, nr, tw, &err) == 0, "multi: %s", err.msg);
            badm += memcmp(ys[0], ref, sizeof(float) * (size_t)nr * NO) != 0;
            badm += memcmp(ys[1], ref + (size_t)R * NO, sizeof(float) * (size_t)nr * NO) != 0;
            KT_CHECK(kiln_cpu_matmul_swiglu(&ctx, y, u, x, nr, &t[0], &t[1], &err) == 0, "swiglu: %s", err.msg);
            for (int r = 0; r < nr; r++) {
                float want[NO];
                kiln_cpu_silu_mul_row(ctx.isa, want, ref + (size_t)r * NO, ref + (size_t)R * NO + (size_t)r * NO, NO);
                bads += memcmp(y + (size_t)r * NO, want, sizeof want) != 0;
            }
        }
        KT_CHECK(bad == 0 && badm == 0 && bads == 0,
                 "%s, %d threads%s: matmul %d, multi %d, swiglu %d products differ from the scalar kernel's bits",
                 kiln_dtype_name(dt), nth, amx && packed ? " (amx, packed)" : amx ? " (amx)" : packed ? " (packed)" : "",
                 bad, badm, bads);
        kiln_cpu_packs_destroy(packs);
        kiln_free_aligned(ctx.panel);
        kiln_free_aligned(ctx.xperm);
        kiln_pool_destroy(pool);
    }
    kiln_free_aligned(w[0]);
    kiln_free_aligned(w[1]);
    kiln_free_aligned(x);
    kiln_free_aligned(ref);
    kiln_free_aligned(y);
    kiln_free_aligned(u);
    kiln_free_aligned(am);
    kiln_free_aligned(scr);
}

int main(void) {
    check_act();
    check_act_isa();
    check_tile();
    check_matmul(KILN_DT_Q4_1, 96, 37, 6);
    check_matmul(KILN_DT_Q4_K, 512, 37, 6);
    check_matmul(KILN_DT_Q5_K, 512, 37, 6);
    check_matmul(KILN_DT_Q6_K, 256, 37, 6);
    check_matmul(KILN_DT_Q4_1, 64, 300, 299); /* rows in several chunks (64, or 256 on AMX) */
    kern ks[5] = {{"scalar", kiln_qgemm_scalar}};
    int nk = 1;
#ifdef KILN_X86
    if (kiln_isa_supported(KILN_ISA_AVX2)) ks[nk++] = (kern){"avx2", kiln_qgemm_avx2};
    if (kiln_isa_supported(KILN_ISA_AVX2) && kiln_cpu_has_avxvnni()) ks[nk++] = (kern){"avxvnni", kiln_qgemm_avxvnni};
    if (kiln_isa_supported(KILN_ISA_AVX512) && kiln_cpu_has_avx512vnni()) ks[nk++] = (kern){"avx512vnni", kiln_qgemm_avx512};
    if (kiln_cpu_has_amx()) ks[nk++] = (kern){"amx", kiln_qgemm_amx};
    else printf("amx: not on this CPU / OS, its kernel is not tested here\n");
#endif
#ifdef KILN_ARM64
    ks[nk++] = (kern){"neon", kiln_qgemm_neon};
    if (kiln_cpu_has_dotprod()) ks[nk++] = (kern){"neondot", kiln_qgemm_neondot};
#endif
    printf("kernels:");
    for (int k = 0; k < nk; k++) printf(" %s", ks[k].name);
    printf("\n");
    const kiln_dtype dts[8] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0,
                               KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    const int ns[6] = {32, 64, 96, 576, 1536, 1568}, ns_k[6] = {256, 512, 768, 1280, 1536, 2304};
    unsigned long long s = 12345;
    float *x = kiln_malloc_aligned(sizeof(float) * MAXR * MAXN);
    float *wf = kiln_malloc_aligned(sizeof(float) * 16 * MAXN);
    uint8_t *w = kiln_malloc_aligned((size_t)16 * MAXN * 2);
    void *am = kiln_malloc_aligned(kiln_q8act_bytes(MAXR, MAXN));
    void *scratch = kiln_malloc_aligned(kiln_qgemm_scratch_bytes(MAXN));
    float *y = kiln_malloc_aligned(sizeof(float) * MAXR * 16), *y1 = kiln_malloc_aligned(sizeof(float) * 16);
    float *ys = kiln_malloc_aligned(sizeof(float) * MAXR * 16); /* the scalar kernel's */
    uint8_t *wp = kiln_malloc_aligned((size_t)16 * MAXN * 2 + 64); /* a packed group */
    int n_packed[3] = {0, 0, 0};
    const char *pnames[3] = {"avx512vnni", "avxvnni", "avx2"};
    for (int t = 0; t < 8; t++) {
        kiln_dtype dt = dts[t];
        for (int ni = 0; ni < 6; ni++) {
            int n = is_k(dt) ? ns_k[ni] : ns[ni], nb = n / 32, nbw = is_k(dt) ? n / 256 : nb;
            size_t ldw = (size_t)nbw * blk_bytes(dt);
            for (int i = 0; i < MAXR * n; i++) x[i] = kt_randf(&s) * ((i / 32) % 5 == 0 ? 20.0f : 1.0f);
            rand_weights(dt, w, 16 * ldw, 16 * nbw, &s);
            for (int c = 0; c < 16; c++) kiln_dequant_row(dt, w + c * ldw, n, wf + (size_t)c * n);
            int rows_list[] = {1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 33, 64};
            for (int ri = 0; ri < (int)(sizeof rows_list / sizeof rows_list[0]); ri++) {
                int R = rows_list[ri];
                if (n > (is_k(dt) ? 512 : 96) && R != 1 && R != 5 && R != 64) continue; /* the long rows: fewer counts */
                kiln_q8act a;
                kiln_q8act_init(&a, am, R, n);
                kiln_q8act_quantize(&a, x, (size_t)n, 0, R);
                kiln_q8act_tile(&a, 0, R);
                kiln_q8act_sums16(&a, 0, R); /* the packed Q6_K kernel's */
                const int ncs[] = {1, 3, 4, 5, 8, 13, 16};
                for (int ci = 0; ci < 7; ci++) {
                    int nc = ncs[ci];
                    if (n > (is_k(dt) ? 512 : 96) && nc != 13 && nc != 16) continue;
                    for (int k = 0; k < nk; k++) {
                        kiln_qgemm_fn f = ks[k].table(dt);
                        KT_CHECK(f != NULL, "%s: no kernel for %s", ks[k].name, kiln_dtype_name(dt));
                        if (!f) continue;
                        f(w, ldw, nc, &a, 0, R, y, 16, scratch);
                        if (k == 0) memcpy(ys, y, sizeof(float) * (size_t)R * 16);
                        double worst = 0;
                        int alone_bad = 0, vs_scalar = 0;
                        for (int r = 0; r < R; r++)
                            for (int c = 0; c < nc; c++) {
                                double ref = 0, mag = 0;
                                for (int i = 0; i < n; i++) {
                                    double xa = (double)a.dx[(size_t)r * nb + i / 32] * a.q[(size_t)r * n + i];
                                    ref += (double)wf[(size_t)c * n + i] * xa;
                                    mag += fabs((double)wf[(size_t)c * n + i] * xa);
                                }
                                double e = fabs(y[r * 16 + c] - ref) / (mag + 1e-30);
                                worst = e > worst ? e : worst;
                                vs_scalar += memcmp(&y[r * 16 + c], &ys[r * 16 + c], 4) != 0;
                            }
                        KT_CHECK(worst <= 2e-6, "%s %s n=%d rows=%d cols=%d: error %.3g of sum |w x|", ks[k].name,
                                 kiln_dtype_name(dt), n, R, nc, worst);
                        KT_CHECK(vs_scalar == 0, "%s %s n=%d rows=%d cols=%d: %d outputs differ from scalar's bits",
                                 ks[k].name, kiln_dtype_name(dt), n, R, nc, vs_scalar);
                        /* each row alone (r0 = r, r1 = r + 1) with 16 columns: the same bits */
                        for (int r = 0; r < R; r++) {
                            f(w, ldw, 16, &a, r, r + 1, y1, 16, scratch);
                            for (int c = 0; c < nc; c++) alone_bad += memcmp(&y1[c], &y[r * 16 + c], 4) != 0;
                        }
                        KT_CHECK(alone_bad == 0, "%s %s n=%d rows=%d cols=%d: %d outputs differ computed alone",
                                 ks[k].name, kiln_dtype_name(dt), n, R, nc, alone_bad);
                    }
                    /* the packed kernel (avx512 VNNI): the group packed once, then the scalar
                     * kernel's bits for all rows, for the columns [lo, nc) (lo 0 and 1), and
                     * each row alone */
                    kiln_qgemm_pack_fn pk;
                    kiln_qgemm_packed_fn pf;
                    for (int pi = 0; pi < 3; pi++) { /* AVX-512 VNNI, AVX-VNNI, AVX2 pmaddubsw */
                    int have = 0;
#ifdef KILN_X86
                    if (pi == 0) have = kiln_isa_supported(KILN_ISA_AVX512) && kiln_cpu_has_avx512vnni() &&
                                        kiln_qgemm_avx512_packed(dt, &pk, &pf);
                    if (pi == 1) have = kiln_isa_supported(KILN_ISA_AVX2) && kiln_cpu_has_avxvnni() &&
                                        kiln_qgemm_avxvnni_packed(dt, &pk, &pf);
                    if (pi == 2) have = kiln_isa_supported(KILN_ISA_AVX2) && kiln_qgemm_avx2_packed(dt, &pk, &pf);
#endif
                    if (have) {
                        size_t pbytes = kiln_qgemm_packed_bytes(dt, n);
                        KT_CHECK(pbytes == 16 * ldw, "packed %s n=%d: %zu bytes, the rows hold %zu", kiln_dtype_name(dt),
                                 n, pbytes, 16 * ldw);
                        memset(wp, 0xA5, pbytes + 64);
                        pk(w, ldw, nc, n, wp);
                        KT_CHECK(wp[pbytes] == 0xA5, "packed %s n=%d: wrote past its %zu bytes", kiln_dtype_name(dt), n,
                                 pbytes);
                        for (int lo = 0; lo < (nc > 1 ? 2 : 1); lo++) {
                            int bad = 0, alone_bad = 0;
                            pf(wp, lo, nc, &a, 0, R, y, 16, scratch);
                            for (int r = 0; r < R; r++)
                                for (int c = lo; c < nc; c++) bad += memcmp(&y[r * 16 + c - lo], &ys[r * 16 + c], 4) != 0;
                            for (int r = 0; r < R; r++) {
                                pf(wp, lo, nc, &a, r, r + 1, y1, 16, scratch);
                                for (int c = lo; c < nc; c++) alone_bad += memcmp(&y1[c - lo], &ys[r * 16 + c], 4) != 0;
                            }
                            KT_CHECK(bad == 0 && alone_bad == 0,
                                     "packed (%s) %s n=%d rows=%d cols [%d, %d): %d outputs differ from scalar's "
                                     "bits, %d alone", pnames[pi], kiln_dtype_name(dt), n, R, lo, nc, bad,
                                     alone_bad);
                        }
                        n_packed[pi]++;
                    }
                    }
                }
            }
        }
    }
    kiln_free_aligned(x);
    kiln_free_aligned(wf);
    kiln_free_aligned(w);
    kiln_free_aligned(am);
    kiln_free_aligned(scratch);
    kiln_free_aligned(y);
    kiln_free_aligned(y1);
    kiln_free_aligned(ys);
    kiln_free_aligned(wp);
    for (int pi = 0; pi < 3; pi++)
        if (n_packed[pi]) printf("packed kernel %s: %d shapes checked\n", pnames[pi], n_packed[pi]);
        else printf("packed kernel %s: not on this CPU, not tested here\n", pnames[pi]);
    return kt_done();
}
