/* kiln-layer: backend (links only this layer and those below it) */
/* test_cpu_kernels.c: every ISA's CPU kernels against the scalar ones, no model needed (this
 * is the test scripts/test_arm.sh runs for the NEON level under qemu-aarch64):
 *   - dense dot kernels (f32, f16, bf16, E4M3 weight rows) through kiln_cpu_matmul (2 threads)
 *     for every row count 1..64 (rows longer than 320: 1..9, 13, 16, 17, 31, 33, 63, 64) and
 *     odd lengths n = 1 .. 4099: each output within 1e-5 of sum |w x| of the scalar kernel's,
 *     and every row bit-identical to the same row computed alone (batch invariance: a row's
 *     kernel does not depend on the row count);
 *   - the quantized dot kernels (Q8_0 .. Q6_K) the same way, odd block counts;
 *   - the attention run kernels (kiln_cpu_attn_lookup) at head_dims 4 .. 128, odd ones
 *     included: qk within 1e-6 of sum |k q| of float64 and 2e-6 of the scalar kernel, its bits
 *     the same whatever run / head grouping computes a score; pv the bits of the axpy kernel
 *     and within f32 rounding of the scalar pv; pvg per head the bits of pv (1..9 heads);
 *   - the attention softmax within 1e-6 of float64 (odd lengths, -inf scores);
 *   - the dotw kernels and the prefill panel tile give the bits of the dot kernels;
 *   - kiln_cpu_silu_mul_row and the split RoPE.
 * Random inputs, fixed seeds. */
#include <math.h>
#include <stdint.h>
#include "backend/cpu/kernels.h"
#include "format/quant.h"
#include "test.h"
#include "util/alloc.h"
#include "util/fp16.h"
#include "util/fp8.h"
#include "util/threads.h"

enum { MAXR = 64, NCOL = 7 };

/* every row count at short rows; at long ones a spread of counts (qemu runs this too) */
static int row_count_used(int R, int n) {
    if (n <= 320) return 1;
    return R <= 9 || R == 13 || R == 16 || R == 17 || R == 31 || R == 33 || R == 63 || R == 64;
}

/* y = x W^T through kiln_cpu_matmul on every ISA but scalar, against the scalar kernel per
 * element: within 1e-5 * sum |w x|, and each of R rows bit-identical to the row alone.
 * t: the weight [NCOL][n], wf: its values in f32 [NCOL][n], x: [MAXR][n]; panel: per-thread
 * scratch (FP8, the prefill panel path). Returns the number of failures. */
static int check_matmul_isas(const kiln_tensor *t, const float *wf, const float *x, kiln_pool *pool, float *panel,
                             size_t panel_floats) {
    const int n = (int)t->shape[1];
    const size_t row_bytes = kiln_dtype_row_bytes(t->dtype, n);
    const char *what = kiln_dtype_name(t->dtype);
    static float ref[MAXR * NCOL], alone[MAXR * NCOL], y[MAXR * NCOL];
    static double mag[MAXR * NCOL];
    kiln_dot_fn sdot = kiln_cpu_dot_lookup(t->dtype, KILN_ISA_SCALAR);
    for (int r = 0; r < MAXR; r++)
        for (int o = 0; o < NCOL; o++) {
            sdot((const uint8_t *)t->data + (size_t)o * row_bytes, x + (size_t)r * n, (size_t)n, 1, n, &ref[r * NCOL + o], 1);
            double m = 0;
            for (int i = 0; i < n; i++) m += fabs((double)wf[(size_t)o * n + i] * x[(size_t)r * n + i]);
            mag[r * NCOL + o] = m;
        }
    int fails = 0;
    /* each ISA twice: the default panel threshold, and panels from 2 rows (the same bits) */
    for (int pass = 0; pass < 2 * KILN_ISA_COUNT; pass++) {
        int isa = pass / 2;
        if (isa == 0 || !kiln_isa_supported((kiln_isa)isa)) continue;
        kiln_cpu_ctx c = {.isa = (kiln_isa)isa, .pool = pool, .panel = panel, .panel_floats = panel_floats,
                          .panel_min_rows = pass % 2 ? 2 : 0};
        kiln_error err = {0};
        int bad_acc = 0, bad_bits = 0, rc = 0;
        double worst = 0;
        for (int r = 0; r < MAXR && rc == 0; r++) rc = kiln_cpu_matmul(&c, alone + r * NCOL, x + (size_t)r * n, 1, t, &err);
        for (int R = 1; R <= MAXR && rc == 0; R++) {
            if (!row_count_used(R, n)) continue;
            for (int i = 0; i < R * NCOL; i++) y[i] = NAN;
            rc = kiln_cpu_matmul(&c, y, x, R, t, &err);
            for (int i = 0; i < R * NCOL && rc == 0; i++) {
                double e = fabs((double)y[i] - ref[i]) / (mag[i] + 1e-30);
                if (!(e <= 1e-5)) bad_acc++;
                if (e > worst) worst = e;
                bad_bits += memcmp(&y[i], &alone[i], sizeof(float)) != 0;
            }
        }
        KT_CHECK(rc == 0, "%s %s n=%d panels from %d: matmul failed: %s", kiln_isa_name((kiln_isa)isa), what, n,
                 c.panel_min_rows, err.msg);
        KT_CHECK(bad_acc == 0, "%s %s n=%d panels from %d: %d outputs off the scalar kernel's (worst %.3g of sum |w x|)",
                 kiln_isa_name((kiln_isa)isa), what, n, c.panel_min_rows, bad_acc, worst);
        KT_CHECK(bad_bits == 0, "%s %s n=%d panels from %d: %d outputs differ from their row computed alone",
                 kiln_isa_name((kiln_isa)isa), what, n, c.panel_min_rows, bad_bits);
        fails += bad_acc + bad_bits + (rc != 0);
    }
    return fails;
}

/* f32, f16, bf16 and E4M3 weight rows of odd lengths */
static void test_dense(kiln_pool *pool, float *panel, size_t panel_floats) {
    static const int ns[] = {1, 3, 4, 5, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 257, 1000, 4099};
    static const kiln_dtype dts[] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16, KILN_DT_F8_E4M3};
    enum { NMAX = 4099 };
    unsigned long long seed = 21;
    float *x = malloc(sizeof(float) * MAXR * NMAX), *wf = malloc(sizeof(float) * NCOL * NMAX);
    void *w = malloc(sizeof(float) * NCOL * NMAX);
    int fails = 0, runs = 0;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        int n = ns[ni];
        for (int i = 0; i < MAXR * n; i++) x[i] = kt_randf(&seed);
        for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
            kiln_dtype dt = dts[di];
            for (int i = 0; i < NCOL * n; i++) {
                float v = kt_randf(&seed);
                if (dt == KILN_DT_F32) {
                    ((float *)w)[i] = wf[i] = v;
                } else if (dt == KILN_DT_F16) {
                    uint16_t h = kiln_f32_to_f16(v);
                    ((uint16_t *)w)[i] = h;
                    wf[i] = kiln_f16_to_f32(h);
                } else if (dt == KILN_DT_BF16) {
                    uint16_t h = kiln_f32_to_bf16(v);
                    ((uint16_t *)w)[i] = h;
                    wf[i] = kiln_bf16_to_f32(h);
                } else { /* every finite code, subnormals included (0x7f / 0xff are NaN) */
                    uint8_t b = (uint8_t)kt_rand_u64(&seed);
                    if ((b & 0x7f) == 0x7f) b ^= 1;
                    ((uint8_t *)w)[i] = b;
                    wf[i] = kiln_e4m3_to_f32(b);
                }
            }
            /* E4M3: weight-only FP8 with a tensor scale of 1, y = the kernel's dot x 1 */
            static const float one = 1.0f;
            kiln_tensor t = {.dtype = dt, .ndim = 2, .shape = {NCOL, n}, .data = w,
                             .nbytes = kiln_dtype_row_bytes(dt, n) * NCOL};
            if (dt == KILN_DT_F8_E4M3) t.quant = (kiln_quant){.kind = KILN_SCALE_TENSOR, .scale = &one};
            snprintf(t.name, sizeof t.name, "w_%s_%d", kiln_dtype_name(dt), n);
            fails += check_matmul_isas(&t, wf, x, pool, panel, panel_floats);
            runs++;
        }
    }
    printf("dense dot: %d (dtype, n) cases, %d failures\n", runs, fails);
    free(x);
    free(wf);
    free(w);
}

/* random quant blocks with sane f16 scales: d (and m / dmin) at the block start ~ +-0.008
 * (Q6_K's d at byte 208), the low bytes random */
static void rand_quant(kiln_dtype dt, unsigned char *w, size_t bytes, unsigned long long *seed) {
    int bb = kiln_dtype_block_bytes(dt);
    for (size_t i = 0; i < bytes; i++) w[i] = (unsigned char)kt_rand_u64(seed);
    for (size_t blk = 0; blk < bytes / (size_t)bb; blk++) {
        unsigned char *p = w + blk * (size_t)bb + (dt == KILN_DT_Q6_K ? 208 : 0);
        p[1] = 0x20;
        if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) p[3] = 0xa0;
    }
}

/* the quantized dot kernels of every type through kiln_cpu_matmul, odd block counts */
static void test_quant(kiln_pool *pool, float *panel, size_t panel_floats) {
    static const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0,
                                       KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    static const int ns32[] = {32, 96, 160, 1184}, nsk[] = {256, 768};
    enum { NMAX = 1184 };
    unsigned long long seed = 31;
    float *x = malloc(sizeof(float) * MAXR * NMAX), *wf = malloc(sizeof(float) * NCOL * NMAX);
    unsigned char *w = malloc((size_t)NCOL * NMAX * 2);
    int fails = 0, runs = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        kiln_dtype dt = types[ti];
        int k = kiln_dtype_block_elems(dt) == 256;
        for (int ni = 0; ni < (k ? 2 : 4); ni++) {
            int n = k ? nsk[ni] : ns32[ni];
            size_t rb = kiln_dtype_row_bytes(dt, n);
            for (int i = 0; i < MAXR * n; i++) x[i] = kt_randf(&seed);
            rand_quant(dt, w, rb * NCOL, &seed);
            for (int o = 0; o < NCOL; o++) kiln_dequant_row(dt, w + (size_t)o * rb, n, wf + (size_t)o * n);
            kiln_tensor t = {.dtype = dt, .ndim = 2, .shape = {NCOL, n}, .data = w, .nbytes = rb * NCOL};
            snprintf(t.name, sizeof t.name, "w_%s_%d", kiln_dtype_name(dt), n);
            fails += check_matmul_isas(&t, wf, x, pool, panel, panel_floats);
            runs++;
        }
    }
    printf("quant dot: %d (type, n) cases, %d failures\n", runs, fails);
    free(x);
    free(wf);
    free(w);
}
/* The attention run kernels, for runs of 0..40 keys (the 16-key blocks of the AVX-512 path,
 * the 8-key ones of AVX2 and NEON, and their tails), 1..4 heads and head_dims 4, 5, 17, 64 (the
 * x86 fast path), 80 and 128 (NEON's tree path: multiples of 4; the others its dot kernel):
 *   - qk: every score within 1e-6 * sum_d |k_d q_d| of the float64 dot product (an f32 sum of 4
 *     to 128 products) and within 2e-6 of the scalar kernel's, and its bits the same whatever
 *     run it is computed in (alone, in a run starting at any key, split anywhere) and whatever
 *     heads share the call (G = 1 per head): the per-score invariance that I5 needs;
 *   - pv: the bits of nv axpy calls, within 1e-6 of sum |terms| of the scalar pv's (which
 *     rounds the product and the sum apart); pvg (1..9 heads): per head the bits of pv. */
static void test_attn_kernels(void) {
    enum { NK = 40, HD = 128 };
    static float k[NK * HD], q[4 * HD], s1[4 * NK], s2[4 * NK], o1[HD], o2[HD], p[NK], og1[9 * HD], og2[9 * HD];
    static float ss[4 * NK], os[HD];
    kiln_attn_kernels sk; /* the scalar kernels: the reference of the others */
    kiln_cpu_attn_lookup(KILN_ISA_SCALAR, &sk);
    int pvg_checked = 0;
    unsigned long long seed = 99;
    for (int i = 0; i < NK * HD; i++) k[i] = kt_randf(&seed);
    for (int i = 0; i < 4 * HD; i++) q[i] = kt_randf(&seed);
    for (int i = 0; i < NK; i++) p[i] = 0.5f * (kt_randf(&seed) + 1.0f);
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) continue;
        kiln_attn_kernels ak;
        KT_CHECK(kiln_cpu_attn_lookup((kiln_isa)isa, &ak) == 0, "attention kernels for %s",
                 kiln_isa_name((kiln_isa)isa));
        kiln_attn_qk_fn qk = ak.qk;
        kiln_attn_pv_fn pv = ak.pv;
        kiln_axpy_fn axpy = kiln_cpu_axpy_lookup((kiln_isa)isa);
        int bad_bits = 0, bad_pv = 0, bad_acc = 0, bad_sc = 0;
        double worst = 0, worst_sc = 0;
        const int hds[] = {4, 5, 8, 17, 64, 80, 128};
        for (int h = 0; h < 7; h++) {
            int hd = hds[h];
            for (int nk = 0; nk <= NK; nk++) {
                for (int G = 1; G <= 4; G++) {
                    memset(s1, 0, sizeof s1);
                    qk(k, nk, q, G, hd, s1, NK);
                    sk.qk(k, nk, q, G, hd, ss, NK);
                    for (int i = 0; i < G; i++)
                        for (int j = 0; j < nk; j++) {
                            double ref = 0, mag = 0;
                            for (int d = 0; d < hd; d++) {
                                double t = (double)k[(size_t)j * hd + d] * q[(size_t)i * hd + d];
                                ref += t;
                                mag += fabs(t);
                            }
                            double e = fabs(s1[i * NK + j] - ref) / mag;
                            if (e > worst) worst = e;
                            bad_acc += e > 1e-6;
                            e = fabs(s1[i * NK + j] - ss[i * NK + j]) / mag;
                            if (e > worst_sc) worst_sc = e;
                            bad_sc += e > 2e-6;
                        }
                    /* the same scores: one key at a time, and per head */
                    memset(s2, 0, sizeof s2);
                    for (int j = 0; j < nk; j++) qk(k + (size_t)j * hd, 1, q, G, hd, s2 + j, NK);
                    bad_bits += memcmp(s1, s2, sizeof s1) != 0;
                    memset(s2, 0, sizeof s2);
                    for (int i = 0; i < G; i++) qk(k, nk, q + (size_t)i * hd, 1, hd, s2 + i * NK, NK);
                    bad_bits += memcmp(s1, s2, sizeof s1) != 0;
                    /* split at c: the second run starts off any block boundary */
                    int c = (nk * 7) / 11;
                    memset(s2, 0, sizeof s2);
                    qk(k, c, q, G, hd, s2, NK);
                    qk(k + (size_t)c * hd, nk - c, q, G, hd, s2 + c, NK);
                    bad_bits += memcmp(s1, s2, sizeof s1) != 0;
                }
                for (int d = 0; d < hd; d++) o1[d] = o2[d] = q[d];
                pv(o1, p, k, nk, hd);
                for (int j = 0; j < nk; j++) axpy(o2, k + (size_t)j * hd, p[j], hd);
                bad_pv += memcmp(o1, o2, sizeof(float) * hd) != 0;
                for (int d = 0; d < hd; d++) os[d] = q[d];
                sk.pv(os, p, k, nk, hd);
                for (int d = 0; d < hd; d++) {
                    double mag = fabs(q[d]);
                    for (int j = 0; j < nk; j++) mag += fabs((double)p[j] * k[(size_t)j * hd + d]);
                    bad_sc += fabs((double)o1[d] - os[d]) > 1e-6 * mag;
                }
                if (!ak.pvg) continue;
                /* G heads at once: head i = pv over its own probabilities (p shifted by i) */
                for (int G = 1; G <= 9; G++) {
                    for (int d = 0; d < G * hd; d++) og1[d] = og2[d] = q[d % (4 * HD)];
                    ak.pvg(og1, (size_t)hd, p, 1, G, k, nk - (nk > G ? G : nk), hd);
                    for (int i = 0; i < G; i++) pv(og2 + (size_t)i * hd, p + i, k, nk - (nk > G ? G : nk), hd);
                    bad_pv += memcmp(og1, og2, sizeof(float) * G * hd) != 0;
                    pvg_checked++;
                }
            }
        }
        KT_CHECK(bad_acc == 0, "%s: %d qk scores off float64 (worst %.3g of sum |k q|)", kiln_isa_name((kiln_isa)isa),
                 bad_acc, worst);
        KT_CHECK(bad_bits == 0, "%s: %d qk runs depend on the run / head grouping", kiln_isa_name((kiln_isa)isa),
                 bad_bits);
        KT_CHECK(bad_pv == 0, "%s: %d pv runs differ from the axpy kernel", kiln_isa_name((kiln_isa)isa), bad_pv);
        KT_CHECK(bad_sc == 0, "%s: %d qk / pv results off the scalar kernels' (qk worst %.3g of sum |k q|)",
                 kiln_isa_name((kiln_isa)isa), bad_sc, worst_sc);
        printf("%-6s attention qk: max err %.2e of sum |k q| vs float64, %.2e vs scalar\n", kiln_isa_name((kiln_isa)isa),
               worst, worst_sc);
    }
    if (kiln_isa_supported(KILN_ISA_AVX512)) KT_CHECK(pvg_checked > 0, "AVX-512: pvg not checked");
    if (kiln_isa_supported(KILN_ISA_NEON)) KT_CHECK(pvg_checked > 0, "NEON: pvg not checked");
}

/* widen / narrow (16-bit KV pools): every ISA gives the scalar conversions' bits, f16 and bf16,
 * on values across every range (f16 subnormals, overflow to inf, exact ties, zeros, inf), odd
 * lengths; widen is exact */
static void test_attn_widen_narrow(void) {
    enum { N = 1037 };
    static float x[N], w[N];
    static uint16_t h[N], hs[N];
    unsigned long long seed = 5;
    for (int i = 0; i < N; i++) {
        float mag = powf(2.0f, (float)((int)(kt_rand_u64(&seed) % 60) - 30)); /* 2^-30 .. 2^29 */
        x[i] = kt_randf(&seed) * mag;
    }
    x[0] = 0.0f, x[1] = -0.0f, x[2] = INFINITY, x[3] = -INFINITY, x[4] = 65520.0f, x[5] = 65519.0f;
    x[6] = 1.0f + 1.0f / 2048.0f; /* a tie in f16 (to even: 1.0) */
    x[7] = 1.0f + 3.0f / 2048.0f; /* a tie (to even: 1 + 2/1024) */
    x[8] = 5.9604645e-08f;        /* the least f16 subnormal */
    x[9] = 2.9802322e-08f;        /* half of it: a tie to 0 */
    kiln_attn_kernels sk;
    kiln_cpu_attn_lookup(KILN_ISA_SCALAR, &sk);
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        kiln_attn_kernels ak;
        if (!kiln_isa_supported((kiln_isa)isa) || kiln_cpu_attn_lookup((kiln_isa)isa, &ak)) continue;
        int bad = 0;
        for (int bf = 0; bf < 2; bf++)
            for (int n = 1; n <= N; n += (n < 40 ? 1 : 97)) {
                ak.narrow(x, h, n, bf);
                for (int i = 0; i < n; i++) hs[i] = bf ? kiln_f32_to_bf16(x[i]) : kiln_f32_to_f16(x[i]);
                bad += memcmp(h, hs, sizeof(uint16_t) * (size_t)n) != 0;
                ak.widen(h, w, n, bf);
                for (int i = 0; i < n; i++) {
                    float r = bf ? kiln_bf16_to_f32(hs[i]) : kiln_f16_to_f32(hs[i]);
                    bad += memcmp(&w[i], &r, sizeof r) != 0;
                }
            }
        KT_CHECK(bad == 0, "%s: %d widen / narrow results differ from the scalar conversions", kiln_isa_name((kiln_isa)isa),
                 bad);
    }
}

/* The attention softmax of each ISA against float64: every element within 1e-6 relative (the
 * AVX-512 vector exp is about 1 ulp), a -inf score gives exactly 0, and the result depends on
 * nothing but the row. */
static void test_attn_softmax(void) {
    enum { NMAX = 3000 };
    static float x[NMAX], y[NMAX];
    static double ref[NMAX];
    const int ns[] = {1, 2, 3, 4, 5, 7, 15, 16, 17, 33, 100, 1000, NMAX};
    unsigned long long seed = 3;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) continue;
        kiln_attn_kernels ak;
        if (kiln_cpu_attn_lookup((kiln_isa)isa, &ak)) { KT_CHECK(0, "attention kernels"); continue; }
        double worst = 0;
        int bad_inf = 0;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int n = ns[k];
            float scale = 0.125f;
            for (int i = 0; i < n; i++) x[i] = kt_randf(&seed) * (k % 2 ? 300.0f : 40.0f); /* wide: many underflow */
            if (n > 4) x[n / 3] = -INFINITY;
            /* the f32 rounding of s - max is the kernels' input, not their error: same in ref */
            float mx = -INFINITY;
            double sum = 0;
            for (int i = 0; i < n; i++) mx = x[i] * scale > mx ? x[i] * scale : mx;
            for (int i = 0; i < n; i++) sum += exp((double)(x[i] * scale - mx));
            for (int i = 0; i < n; i++) ref[i] = exp((double)(x[i] * scale - mx)) / sum;
            memcpy(y, x, sizeof(float) * n);
            ak.softmax(y, n, scale);
            for (int i = 0; i < n; i++) {
                double e = fabs(y[i] - ref[i]) / (ref[i] > 1e-30 ? ref[i] : 1e-30);
                if (ref[i] > 1e-30 && e > worst) worst = e; /* subnormal outputs: absolute only */
                if (ref[i] <= 1e-30) KT_CHECK(fabs(y[i]) <= 1e-30, "tiny prob %g vs %g", y[i], ref[i]);
            }
            if (n > 4) bad_inf += y[n / 3] != 0.0f;
        }
        KT_CHECK(worst <= 1e-6, "%s softmax: max relative error %.3g", kiln_isa_name((kiln_isa)isa), worst);
        KT_CHECK(bad_inf == 0, "%s softmax: -inf score not 0", kiln_isa_name((kiln_isa)isa));
        printf("%-6s attention softmax: max rel err %.2e vs float64\n", kiln_isa_name((kiln_isa)isa), worst);
    }
}

/* The dotw kernels (consecutive weight rows, one x row) against the dot kernel with nr = 1,
 * and the dot kernel with every nr up to kiln_cpu_dot_max_rows against nr = 1, bit for bit,
 * for every quant type on every ISA; random blocks whose f16 scales are set to sane values. */
static void test_dotw(void) {
    const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0, KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    enum { ROWS = 9, NIN = 1536 };
    unsigned long long seed = 11;
    float *x = malloc(sizeof(float) * NIN), a[ROWS], b[ROWS], *xs = malloc(sizeof(float) * 16 * NIN);
    for (int i = 0; i < NIN; i++) x[i] = kt_randf(&seed);
    for (int i = 0; i < 16 * NIN; i++) xs[i] = kt_randf(&seed);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        kiln_dtype dt = types[ti];
        int bb = kiln_dtype_block_bytes(dt);
        size_t rb = kiln_dtype_row_bytes(dt, NIN);
        unsigned char *w = malloc(rb * ROWS);
        for (size_t i = 0; i < rb * ROWS; i++) w[i] = (unsigned char)kt_rand_u64(&seed);
        /* f16 scales: d (and m / dmin) at the block start, Q6_K's d at byte 208 */
        for (size_t blk = 0; blk < rb * ROWS / (size_t)bb; blk++) {
            unsigned char *p = w + blk * (size_t)bb + (dt == KILN_DT_Q6_K ? 208 : 0);
            p[0] = (unsigned char)kt_rand_u64(&seed);
            p[1] = 0x20; /* ~0.008, the low byte random */
            if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) {
                p[2] = (unsigned char)kt_rand_u64(&seed);
                p[3] = 0xa0; /* ~-0.008 */
            }
        }
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            if (!kiln_isa_supported((kiln_isa)isa)) continue;
            kiln_dotw_fn fw = kiln_cpu_dotw_lookup_quant(dt, (kiln_isa)isa);
            kiln_dot_fn f = kiln_cpu_dot_lookup_quant(dt, (kiln_isa)isa);
            if (!fw || !f) continue;
            int bad = 0;
            for (int nw = 1; nw <= ROWS; nw++) {
                fw(w, rb, nw, x, NIN, a);
                for (int r = 0; r < nw; r++) f(w + (size_t)r * rb, x, NIN, 1, NIN, &b[r], 1);
                bad += memcmp(a, b, sizeof(float) * nw) != 0;
            }
            KT_CHECK(bad == 0, "%s %s: dotw differs from dot in %d cases", kiln_dtype_name(dt),
                     kiln_isa_name((kiln_isa)isa), bad);
            /* every nr up to the kernel's maximum: row r's bits as with nr = 1 */
            int mr = kiln_cpu_dot_max_rows(dt, (kiln_isa)isa);
            bad = 0;
            for (int nr = 1; nr <= mr; nr++) {
                float o[16], o1;
                f(w, xs, NIN, nr, NIN, o, 1);
                for (int r = 0; r < nr; r++) {
                    f(w, xs + (size_t)r * NIN, NIN, 1, NIN, &o1, 1);
                    bad += memcmp(&o1, &o[r], sizeof o1) != 0;
                }
            }
            KT_CHECK(mr >= 4 && mr <= 16 && bad == 0, "%s %s: %d results depend on nr (max %d)", kiln_dtype_name(dt),
                     kiln_isa_name((kiln_isa)isa), bad, mr);
        }
        free(w);
    }
    free(x);
    free(xs);
}

/* The prefill pair (deq + f32 tile) against the dot kernel with nr = 1, bit for bit, for every
 * tile shape, row lengths whose vector count is 0 or 2 mod 4 (the dot kernel's tail), every
 * quant type and ISA that has the pair; random blocks with sane f16 scales. */
static void test_panel_tile(void) {
    const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0, KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    enum { ROWS = 6, XR = 6, NMAX = 1536 };
    const int ns[] = {32, 64, 96, 256, 576, 1024, 1536};
    unsigned long long seed = 13;
    float *xs = malloc(sizeof(float) * XR * NMAX), *wf = malloc(sizeof(float) * ROWS * NMAX);
    for (int i = 0; i < XR * NMAX; i++) xs[i] = kt_randf(&seed);
    int checked = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        kiln_dtype dt = types[ti];
        int bb = kiln_dtype_block_bytes(dt);
        size_t rb = kiln_dtype_row_bytes(dt, NMAX);
        unsigned char *w = malloc(rb * ROWS);
        for (size_t i = 0; i < rb * ROWS; i++) w[i] = (unsigned char)kt_rand_u64(&seed);
        for (size_t blk = 0; blk < rb * ROWS / (size_t)bb; blk++) {
            unsigned char *p = w + blk * (size_t)bb + (dt == KILN_DT_Q6_K ? 208 : 0);
            p[1] = 0x20;
            if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) p[3] = 0xa0;
        }
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            if (!kiln_isa_supported((kiln_isa)isa)) continue;
            kiln_tile_fn tile;
            kiln_tile_phase_fn phase;
            kiln_deq_fn deq = kiln_cpu_deq_lookup_quant(dt, (kiln_isa)isa, &tile, &phase);
            kiln_dot_fn f = kiln_cpu_dot_lookup_quant(dt, (kiln_isa)isa);
            if (!deq) continue;
            KT_CHECK(tile && phase && f, "%s %s: deq without tile or dot", kiln_dtype_name(dt),
                     kiln_isa_name((kiln_isa)isa));
            if (!tile || !phase || !f) continue;
            int bad = 0;
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                int n = ns[ni];
                size_t rbn = kiln_dtype_row_bytes(dt, n);
                if (rbn == 0) continue; /* not a whole number of blocks */
                /* rows of n elements: the first rbn bytes of each stored row */
                for (int k = 0; k < ROWS; k++) deq(w + (size_t)k * rb, rb, 1, n, 0, wf + (size_t)k * n);
                float ref[ROWS][XR];
                for (int k = 0; k < ROWS; k++)
                    for (int r = 0; r < XR; r++) f(w + (size_t)k * rb, xs + (size_t)r * n, n, 1, n, &ref[k][r], 1);
                for (int nw = 1; nw <= 6; nw++)
                    for (int nx = 1; nx <= 6; nx++) {
                        if (!((nw <= 4 && nx <= 6) || nx <= 4)) continue;
                        float o[XR * ROWS];
                        memset(o, 0xff, sizeof o);
                        tile(wf, nw, xs, n, nx, n, o, ROWS);
                        for (int k = 0; k < nw; k++)
                            for (int r = 0; r < nx; r++) bad += memcmp(&o[r * ROWS + k], &ref[k][r], sizeof(float)) != 0;
                        checked++;
                        if (n % 64) continue;
                        /* phase by phase over phase-major rows */
                        float *wp = kiln_malloc_aligned(sizeof(float) * ROWS * n);
                        float *xp = kiln_malloc_aligned(sizeof(float) * XR * n);
                        float *buf = kiln_malloc_aligned(sizeof(float) * 2 * 36 * 16);
                        deq(w, rb, nw, n, 1, wp); /* rows rb bytes apart, first n elements */
                        for (int r = 0; r < nx; r++)
                            for (int q = 0; q < n / 16; q++)
                                memcpy(xp + (size_t)r * n + (q % 4) * (n / 4) + 16 * (q / 4), xs + (size_t)r * n + 16 * q,
                                       16 * sizeof(float));
                        memset(o, 0xff, sizeof o);
                        for (int a = 0; a < 4; a++) phase(wp, nw, xp, n, nx, n, a, buf, o, ROWS);
                        for (int k = 0; k < nw; k++)
                            for (int r = 0; r < nx; r++) bad += memcmp(&o[r * ROWS + k], &ref[k][r], sizeof(float)) != 0;
                        kiln_free_aligned(wp);
                        kiln_free_aligned(xp);
                        kiln_free_aligned(buf);
                    }
                /* several rows in one deq call: the same values */
                float *wf2 = malloc(sizeof(float) * ROWS * n);
                deq(w, rb, ROWS, n, 0, wf2);
                bad += memcmp(wf, wf2, sizeof(float) * ROWS * n) != 0;
                free(wf2);
            }
            KT_CHECK(bad == 0, "%s %s: %d panel-tile results differ from the dot kernel", kiln_dtype_name(dt),
                     kiln_isa_name((kiln_isa)isa), bad);
        }
        free(w);
    }
    if (kiln_isa_supported(KILN_ISA_AVX512)) KT_CHECK(checked > 0, "AVX-512: no panel tile checked");
    else fprintf(stderr, "note: no AVX-512 here: the panel tile is not exercised\n");
    free(xs);
    free(wf);
}

/* kiln_cpu_silu_mul_row on every ISA: within 1e-6 relative (plus 1e-30 absolute) of float64
 * silu(g) * u over g in [-120, 120] (overflow of e^-g included) and u = +-1, and each
 * element's bits the same computed alone (n = 1) as inside a row (lane position, tail). */
static void test_silu(void) {
    enum { NS = 2401 };
    static float g[NS], u[NS], o[NS], o1[NS];
    for (int i = 0; i < NS; i++) {
        g[i] = -120.0f + 0.1f * (float)i + 0.013f;
        u[i] = i % 2 ? -1.0f : 1.0f;
    }
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) continue;
        kiln_cpu_silu_mul_row((kiln_isa)isa, o, g, u, NS);
        double worst = 0;
        int bad = 0;
        for (int i = 0; i < NS; i++) {
            double gd = g[i], ref = gd / (1.0 + exp(-gd)) * u[i];
            double e = fabs(o[i] - ref) / (fabs(ref) + 1e-30);
            if (e > worst) worst = e;
            kiln_cpu_silu_mul_row((kiln_isa)isa, o1 + i, g + i, u + i, 1);
            bad += memcmp(&o1[i], &o[i], sizeof(float)) != 0;
        }
        KT_CHECK(worst <= 1e-6, "%s silu: rel err %.3g", kiln_isa_name((kiln_isa)isa), worst);
        KT_CHECK(bad == 0, "%s silu: %d elements depend on their position", kiln_isa_name((kiln_isa)isa), bad);
        fprintf(stderr, "%s silu*u: max rel err %.3g vs float64\n", kiln_isa_name((kiln_isa)isa), worst);
    }
}

/* kiln_cpu_rope_angles + kiln_cpu_rope_apply (the backend's per-step RoPE) against
 * kiln_cpu_rope, bit for bit, both styles, 1 and 2 threads. */
static void test_rope_split(void) {
    enum { R = 19, H = 3, HD = 64 };
    static float a[R * H * HD], b[R * H * HD];
    static double cs[R * HD / 2], sn[R * HD / 2];
    int32_t pos[R];
    unsigned long long seed = 5;
    for (int r = 0; r < R; r++) pos[r] = (int32_t)(kt_rand_u64(&seed) % 40000);
    kiln_error err = {0};
    for (int th = 1; th <= 2; th++) {
        kiln_cpu_ctx c = {.isa = kiln_isa_best()};
        KT_CHECK(kiln_pool_create(&c.pool, th, &err) == 0, "pool");
        for (int st = 0; st < 2; st++) {
            kiln_rope_style style = st ? KILN_ROPE_INTERLEAVED : KILN_ROPE_HALF;
            for (int i = 0; i < R * H * HD; i++) a[i] = b[i] = kt_randf(&seed);
            kiln_cpu_rope(a, pos, R, H, HD, 10000.0, style);
            kiln_cpu_rope_angles(cs, sn, pos, R, HD, 10000.0);
            kiln_cpu_rope_apply(&c, b, cs, sn, R, H, HD, style);
            KT_CHECK(memcmp(a, b, sizeof a) == 0, "rope apply (style %d, %d threads) differs from kiln_cpu_rope", st, th);
        }
        kiln_pool_destroy(c.pool);
    }
}

int main(void) {
    kiln_error err = {0};
    kiln_pool *pool = NULL;
    KT_CHECK(kiln_pool_create(&pool, 2, &err) == 0, "pool: %s", err.msg);
    if (!pool) return kt_done();
    /* per-thread scratch: the FP8 path's and the prefill panel path's (quant types with a
     * deq / tile pair, >= 32 rows) */
    const size_t panel_floats = 128u * 1024u;
    float *panel = kiln_malloc_aligned(sizeof(float) * panel_floats * (size_t)kiln_pool_size(pool));
    printf("ISAs here:");
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++)
        if (kiln_isa_supported((kiln_isa)isa)) printf(" %s", kiln_isa_name((kiln_isa)isa));
    printf("\n");
    test_dense(pool, panel, panel_floats);
    test_quant(pool, panel, panel_floats);
    test_attn_kernels();
    test_attn_widen_narrow();
    test_attn_softmax();
    test_dotw();
    test_panel_tile();
    test_silu();
    test_rope_split();
    kiln_free_aligned(panel);
    kiln_pool_destroy(pool);
    return kt_done();
}
